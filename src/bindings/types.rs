//! `Delivery` and `DeadLetter`, the objects checkout and the dead-letter
//! calls return. Fields are turned into Python objects lazily, on access,
//! except the payload, which is almost always read.

use crate::error::fmt_id;
use crate::types::{DeadLetter, Delivered, Meta};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// A message checked out under a lease.
#[pyclass(frozen, name = "Delivery", module = "ringq")]
pub struct PyDelivery {
    pub id: u64,
    /// The instance id of the queue it came from (0: a dead letter's copy).
    pub queue: u64,
    topic: String,
    payload: Py<PyBytes>,
    attempt: u32,
    version: u32,
    enqueued_at: u64,
    pub lease_token: u64,
    lease_deadline: u64,
    meta: Option<Box<Meta>>,
}

impl PyDelivery {
    pub fn from_delivered(py: Python<'_>, d: Delivered, queue: u64) -> Self {
        PyDelivery {
            id: d.id,
            queue,
            topic: d.topic,
            payload: PyBytes::new(py, &d.payload).unbind(),
            attempt: d.attempt,
            version: d.version,
            enqueued_at: d.enqueued_at,
            lease_token: d.lease_token,
            lease_deadline: d.lease_deadline,
            meta: d.meta,
        }
    }
}

fn headers_dict<'py>(py: Python<'py>, meta: Option<&Meta>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if let Some(m) = meta {
        for (k, v) in &m.headers {
            d.set_item(k, v)?;
        }
    }
    Ok(d)
}

#[pymethods]
impl PyDelivery {
    #[getter]
    fn id(&self) -> String {
        fmt_id(self.id)
    }
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }
    #[getter]
    fn payload(&self, py: Python<'_>) -> Py<PyBytes> {
        self.payload.clone_ref(py)
    }
    #[getter]
    fn attempt(&self) -> u32 {
        self.attempt
    }
    #[getter]
    fn version(&self) -> u32 {
        self.version
    }
    #[getter]
    fn dedup_key(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.dedup_key.as_deref())
    }
    #[getter]
    fn correlation_id(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.correlation_id.as_deref())
    }
    #[getter]
    fn causation_id(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.causation_id.as_deref())
    }
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        headers_dict(py, self.meta.as_deref())
    }
    #[getter]
    fn enqueued_at(&self) -> f64 {
        secs(self.enqueued_at)
    }
    #[getter]
    fn lease_deadline(&self) -> f64 {
        secs(self.lease_deadline)
    }
    #[getter]
    fn lease_token(&self) -> u64 {
        self.lease_token
    }
    /// The instance id of the queue this delivery came from.
    #[getter]
    fn queue_id(&self) -> String {
        fmt_id(self.queue)
    }
    fn __repr__(&self) -> String {
        format!(
            "Delivery(id={:?}, topic={:?}, attempt={}, version={}, dedup_key={})",
            fmt_id(self.id),
            self.topic,
            self.attempt,
            self.version,
            self.dedup_key().map_or("None".to_string(), |k| format!("{k:?}"))
        )
    }
}

/// A message that left the queue for the dead-letter ring, and why.
#[pyclass(frozen, name = "DeadLetter", module = "ringq")]
pub struct PyDeadLetter {
    dl: DeadLetter,
}

impl PyDeadLetter {
    pub fn new(dl: DeadLetter) -> Self {
        PyDeadLetter { dl }
    }
}

#[pymethods]
impl PyDeadLetter {
    #[getter]
    fn id(&self) -> String {
        fmt_id(self.dl.message.id)
    }
    #[getter]
    fn topic(&self) -> &str {
        &self.dl.topic
    }
    /// The message as it was when it died (no lease).
    #[getter]
    fn message(&self, py: Python<'_>) -> PyDelivery {
        let m = &self.dl.message;
        PyDelivery {
            id: m.id,
            queue: 0,
            topic: self.dl.topic.clone(),
            payload: PyBytes::new(py, &m.payload).unbind(),
            attempt: m.attempt,
            version: m.version,
            enqueued_at: m.enqueued_at,
            lease_token: 0,
            lease_deadline: 0,
            meta: m.meta.clone(),
        }
    }
    #[getter]
    fn reason(&self) -> &str {
        &self.dl.reason
    }
    #[getter]
    fn error_type(&self) -> Option<&str> {
        self.dl.failure.error_type.as_deref()
    }
    #[getter]
    fn error_message(&self) -> Option<&str> {
        self.dl.failure.error_message.as_deref()
    }
    #[getter]
    fn traceback(&self) -> Option<&str> {
        self.dl.failure.traceback.as_deref()
    }
    #[getter]
    fn handler(&self) -> Option<&str> {
        self.dl.failure.handler.as_deref()
    }
    #[getter]
    fn attempts(&self) -> u32 {
        self.dl.message.attempt
    }
    #[getter]
    fn first_failed_at(&self) -> Option<f64> {
        self.dl.message.meta.as_ref().and_then(|m| m.first_failed_at).map(secs)
    }
    #[getter]
    fn dead_lettered_at(&self) -> f64 {
        secs(self.dl.dead_lettered_at)
    }
    fn __repr__(&self) -> String {
        format!(
            "DeadLetter(id={:?}, topic={:?}, reason={:?}, attempts={})",
            fmt_id(self.dl.message.id),
            self.dl.topic,
            self.dl.reason,
            self.dl.message.attempt,
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDelivery>()?;
    m.add_class::<PyDeadLetter>()?;
    Ok(())
}

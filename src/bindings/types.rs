//! The values that cross the backend seam (`ringq.backend`): `Delivery` and
//! `DeadLetter` (what checkout and the dead-letter calls return) and
//! `OutgoingMessage` (an encoded message to publish). All three can be made
//! from Python too, so every backend returns the same types. Fields become
//! Python objects lazily, on access, except the payload, which is almost
//! always read.

use super::args;
use super::convert::{headers_vec, parse_id};
use crate::error::fmt_id;
use crate::types::{DeadLetter, Delivered, Failure, Message, Meta, MsgState};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::sync::Arc;
use std::time::Duration;

fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

fn micros(name: &str, s: f64) -> PyResult<u64> {
    if !(s.is_finite() && s >= 0.0) {
        return Err(pyo3::exceptions::PyValueError::new_err(format!("{name}={s} (must be epoch seconds >= 0)")));
    }
    Ok((s * 1e6) as u64)
}

/// `meta`, boxed, or `None` when every field is empty.
fn boxed(meta: Meta) -> Option<Arc<Meta>> {
    (meta != Meta::default()).then(|| Arc::new(meta))
}

/// A `priority=` argument: `None` or 0..=9.
pub(crate) fn priority_arg(v: Option<&Bound<'_, PyAny>>) -> PyResult<u8> {
    Ok(args::opt_int("priority", v, 0, crate::types::MAX_PRIORITY as i64)?.unwrap_or(0) as u8)
}

/// A message checked out under a lease.
///
/// No field may hold a Python object the garbage collector tracks (the
/// payload made here is exact `bytes`), and the class takes no `dict`,
/// `weakref` or `subclass` option: [`delivery_list`] takes deliveries off
/// the collector because none can be part of a reference cycle.
#[pyclass(frozen, name = "Delivery", module = "ringq")]
pub struct PyDelivery {
    pub id: u64,
    /// The instance id of the queue it came from (0: a dead letter's copy).
    pub queue: u64,
    topic: Arc<str>,
    payload: Py<PyBytes>,
    attempt: u32,
    version: u32,
    enqueued_at: u64,
    pub lease_token: u64,
    lease_deadline: u64,
    meta: Option<Arc<Meta>>,
}

/// The deliveries `got` from the queue `queue` as a Python list.
///
/// Each `Delivery` is taken off the cyclic garbage collector's lists (PyO3
/// gives every class a GC header and tracks its objects): a `Delivery`
/// refers to no Python object but its payload `bytes`, it has no
/// `__dict__`, no weak references and no subclasses, so it can never be
/// part of a reference cycle. Tracked, the deliveries a consumer keeps made
/// each collection walk all of them: 100,000 deliveries checked out 256 at
/// a time and kept cost about twice as much with the collector on as off.
pub fn delivery_list(py: Python<'_>, got: Vec<Delivered>, queue: u64) -> PyResult<Bound<'_, PyList>> {
    let mut objects = Vec::with_capacity(got.len());
    for d in got {
        let obj = Bound::new(py, PyDelivery::from_delivered(py, d, queue))?;
        untrack(&obj);
        objects.push(obj);
    }
    PyList::new(py, objects)
}

/// Takes a delivery whose payload is exact `bytes` off the collector.
fn untrack(obj: &Bound<'_, PyDelivery>) {
    // SAFETY: `obj` is a live object of a GC type (PyO3 sets
    // Py_TPFLAGS_HAVE_GC for every class); untracking an object that can
    // hold no cycle only keeps the collector from visiting it (its
    // deallocation untracks it again, a no-op for an untracked object).
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) };
}

/// `delivery_list` for the deliveries a backend written in Python made with
/// the `Delivery` constructor: each one whose payload is exact `bytes` is
/// taken off the collector (a `bytes` subclass may carry a `__dict__`, so
/// such a delivery could be part of a cycle: it stays tracked), anything
/// else is left as it is.
#[pyfunction]
fn untrack_deliveries(items: &Bound<'_, PyList>) {
    for item in items.iter() {
        if let Ok(d) = item.cast_exact::<PyDelivery>()
            && d.get().payload.bind(item.py()).is_exact_instance_of::<PyBytes>()
        {
            untrack(d);
        }
    }
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
    /// A delivery made by a backend written in Python (ids, lease tokens and
    /// queue ids are 16 hex digits / 64-bit ints on every backend).
    #[new]
    #[pyo3(signature = (id, topic, payload, *, attempt=1, version=1, dedup_key=None, headers=None,
        correlation_id=None, causation_id=None, enqueued_at=0.0, lease_deadline=0.0, lease_token=0, queue_id=None,
        priority=None, ordering_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        id: &str,
        topic: String,
        payload: Py<PyBytes>,
        attempt: u32,
        version: u32,
        dedup_key: Option<String>,
        headers: Option<&Bound<'_, PyDict>>,
        correlation_id: Option<String>,
        causation_id: Option<String>,
        enqueued_at: f64,
        lease_deadline: f64,
        lease_token: u64,
        queue_id: Option<&str>,
        priority: Option<&Bound<'_, PyAny>>,
        ordering_key: Option<String>,
    ) -> PyResult<Self> {
        let meta = Meta {
            dedup_key,
            headers: headers_vec(headers)?,
            correlation_id,
            causation_id,
            priority: priority_arg(priority)?,
            ordering_key,
            ..Default::default()
        };
        Ok(PyDelivery {
            id: parse_id(id)?,
            queue: queue_id.map(parse_id).transpose()?.unwrap_or(0),
            topic: topic.into(),
            payload,
            attempt,
            version,
            enqueued_at: micros("enqueued_at", enqueued_at)?,
            lease_token,
            lease_deadline: micros("lease_deadline", lease_deadline)?,
            meta: boxed(meta),
        })
    }

    #[getter]
    fn id(&self) -> String {
        fmt_id(self.id)
    }
    /// 0..=9 (higher is delivered first within a topic).
    #[getter]
    fn priority(&self) -> u8 {
        self.meta.as_ref().map_or(0, |m| m.priority)
    }
    /// The message's ordering key: no other message of the key is in
    /// flight while this delivery is.
    #[getter]
    fn ordering_key(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.ordering_key.as_deref())
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
    /// `None` for an empty one too: the engine stores an empty id as none
    /// (`build_meta`), and a message written before it did reads the same.
    #[getter]
    fn correlation_id(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.correlation_id.as_deref()).filter(|s| !s.is_empty())
    }
    #[getter]
    fn causation_id(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.causation_id.as_deref()).filter(|s| !s.is_empty())
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
    /// A dead letter made by a backend written in Python, around `message`
    /// (a `Delivery`: its lease fields are ignored).
    #[new]
    #[pyo3(signature = (message, reason, *, error_type=None, error_message=None, traceback=None, handler=None,
        first_failed_at=None, dead_lettered_at=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        message: &Bound<'_, PyDelivery>,
        reason: String,
        error_type: Option<String>,
        error_message: Option<String>,
        traceback: Option<String>,
        handler: Option<String>,
        first_failed_at: Option<f64>,
        dead_lettered_at: f64,
    ) -> PyResult<Self> {
        let d = message.get();
        let mut meta = d.meta.clone();
        if let Some(t) = first_failed_at {
            Arc::make_mut(meta.get_or_insert_with(Default::default)).first_failed_at =
                Some(micros("first_failed_at", t)?);
        }
        let msg = Message {
            id: d.id,
            topic: 0,
            state: MsgState::Ready,
            superseded: false,
            attempt: d.attempt,
            version: d.version,
            enqueued_at: d.enqueued_at,
            visible_at: 0,
            lease_token: 0,
            lease_deadline: 0,
            ticket: 0,
            line: crate::types::NO_LINE,
            payload: d.payload.as_bytes(py).into(),
            meta,
        };
        Ok(PyDeadLetter {
            dl: DeadLetter {
                message: msg,
                topic: d.topic.to_string(),
                reason,
                failure: Failure { error_type, error_message, traceback, handler },
                dead_lettered_at: micros("dead_lettered_at", dead_lettered_at)?,
            },
        })
    }

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
            topic: self.dl.topic.as_str().into(),
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

/// A message to publish, already encoded: what `Queue.publish_many` and a
/// handler's staged `ctx.publish` hand a backend.
#[pyclass(frozen, name = "OutgoingMessage", module = "ringq")]
pub struct PyOutgoing {
    pub topic: String,
    pub payload: Py<PyBytes>,
    pub dedup_key: Option<String>,
    pub delay: Option<Duration>,
    pub headers: Vec<(String, String)>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub priority: u8,
    pub ordering_key: Option<String>,
    pub dedup_window: Option<Duration>,
}

#[pymethods]
impl PyOutgoing {
    #[new]
    #[pyo3(signature = (topic, payload, *, dedup_key=None, delay=None, headers=None, correlation_id=None,
        causation_id=None, priority=None, ordering_key=None, dedup_window=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        topic: String,
        payload: Py<PyBytes>,
        dedup_key: Option<String>,
        delay: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyDict>>,
        correlation_id: Option<String>,
        causation_id: Option<String>,
        priority: Option<&Bound<'_, PyAny>>,
        ordering_key: Option<String>,
        dedup_window: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(PyOutgoing {
            topic,
            payload,
            dedup_key,
            delay: args::opt_seconds("delay", delay, false)?,
            headers: headers_vec(headers)?,
            correlation_id,
            causation_id,
            priority: priority_arg(priority)?,
            ordering_key,
            dedup_window: args::opt_seconds("dedup_window", dedup_window, true)?,
        })
    }
    #[getter]
    fn priority(&self) -> u8 {
        self.priority
    }
    #[getter]
    fn ordering_key(&self) -> Option<&str> {
        self.ordering_key.as_deref()
    }
    #[getter]
    fn dedup_window(&self) -> Option<f64> {
        self.dedup_window.map(|d| d.as_secs_f64())
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
    fn dedup_key(&self) -> Option<&str> {
        self.dedup_key.as_deref()
    }
    #[getter]
    fn delay(&self) -> Option<f64> {
        self.delay.map(|d| d.as_secs_f64())
    }
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.headers {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
    #[getter]
    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
    #[getter]
    fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }
    fn __repr__(&self) -> String {
        format!("OutgoingMessage(topic={:?}, dedup_key={:?})", self.topic, self.dedup_key)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDelivery>()?;
    m.add_class::<PyDeadLetter>()?;
    m.add_class::<PyOutgoing>()?;
    m.add_function(wrap_pyfunction!(untrack_deliveries, m)?)?;
    Ok(())
}

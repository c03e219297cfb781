//! `ringq._core.Engine`: argument conversion and GIL handling around
//! `crate::Engine`. See `python/ringq/_core.pyi` for the Python signatures.
//!
//! `publish`, `publish_payloads`, `checkout`, `ack` and `extend` have the
//! signatures and semantics of `ringq.Queue`'s methods of the same names
//! (`publish_payloads` is `Queue.publish_many`): a `Queue` binds them to its
//! instances, so a call goes from Python straight to Rust with no Python frame
//! in between. What only Python can do — encoding objects — is a callable set
//! once with `_set_encoder`; `bytes` never reach it.

use super::errors::{config_err, to_py};
use super::types::{PyDeadLetter, PyDelivery};
use crate::engine::{Engine, Publish, PublishOpts, Stat};
use crate::error::Error;
use crate::storage::FaultPoint;
use crate::types::{Durability, Failure, NewMessage, OnDuplicate, Options, Wait};
use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::sync::Arc;
use std::time::Duration;

/// The topic of payloads published without one (`ringq.codecs.DEFAULT_TOPIC`).
const DEFAULT_TOPIC: &str = "default";

#[pyclass(frozen, name = "Engine", module = "ringq._core")]
pub struct PyEngine {
    engine: Engine,
    /// The lease of a `checkout` that does not give one.
    lease: Duration,
    /// How non-`bytes` payloads become bytes (`None`: they are refused).
    encoder: Mutex<Option<Arc<Encoder>>>,
}

/// The Python callables set with `Engine._set_encoder`.
struct Encoder {
    /// `encode(obj) -> (default_topic, payload_bytes, type_tag | None)`.
    encode: Py<PyAny>,
    /// `encode_item(obj, topic | None) -> PublishItem` for the non-`bytes`
    /// items of `publish_payloads`; without it they go through `encode`.
    encode_item: Option<Py<PyAny>>,
    /// The header that carries a type tag (`ringq.codecs.TYPE_HEADER`).
    type_header: String,
}

/// A payload encoded by `Encoder::encode`; the Python objects keep the
/// borrowed topic and bytes alive.
struct Encoded<'py> {
    topic: Bound<'py, PyString>,
    data: Bound<'py, PyBytes>,
    tag: Option<String>,
}

impl Encoder {
    fn encode<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Encoded<'py>> {
        let bad = || PyTypeError::new_err("the encoder must return (topic: str, payload: bytes, type_tag: str | None)");
        let out = self.encode.bind(obj.py()).call1((obj,))?;
        let t = out.cast_into::<PyTuple>().map_err(|_| bad())?;
        if t.len() != 3 {
            return Err(bad());
        }
        Ok(Encoded {
            topic: t.get_item(0)?.cast_into::<PyString>().map_err(|_| bad())?,
            data: t.get_item(1)?.cast_into::<PyBytes>().map_err(|_| bad())?,
            tag: t.get_item(2)?.extract().map_err(|_| bad())?,
        })
    }
}

/// Sets `name: value` in `headers`, replacing an entry of that name.
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    match headers.iter_mut().find(|(k, _)| k == name) {
        Some(h) => h.1 = value,
        None => headers.push((name.to_owned(), value)),
    }
}

/// One item of `publish_payloads`: `bytes` as given, anything else encoded.
enum Item<'py> {
    Raw(Bound<'py, PyBytes>),
    Encoded(NewMessage),
}

fn secs(name: &str, v: f64) -> PyResult<Duration> {
    if !v.is_finite() || v < 0.0 {
        return Err(config_err(format!("{name}={v} (must be a finite number >= 0)")));
    }
    Ok(Duration::from_secs_f64(v))
}

fn opt_delay(delay: Option<f64>) -> PyResult<Option<Duration>> {
    match delay {
        None => Ok(None),
        Some(d) if d.is_finite() && d >= 0.0 => Ok(Some(Duration::from_secs_f64(d))),
        Some(d) => Err(PyValueError::new_err(format!("delay={d} (must be a finite number of seconds >= 0)"))),
    }
}

fn parse_id(id: &str) -> PyResult<u64> {
    if id.len() == 16
        && let Ok(v) = u64::from_str_radix(id, 16)
    {
        return Ok(v);
    }
    Err(to_py(Error::NotFound(format!("{id:?} (ids are 16 hex digits)"))))
}

fn headers_vec(h: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let Some(h) = h else { return Ok(Vec::new()) };
    h.iter().map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<String>()?))).collect()
}

/// Items of `publish_many` / staged publishes:
/// `(topic, payload, dedup_key, delay, headers, correlation_id, causation_id)`.
fn new_messages(items: &Bound<'_, PyAny>) -> PyResult<Vec<NewMessage>> {
    let mut out = Vec::new();
    for item in items.try_iter()? {
        out.push(new_message(&item?)?);
    }
    Ok(out)
}

fn new_message(item: &Bound<'_, PyAny>) -> PyResult<NewMessage> {
    let t = item.cast::<PyTuple>().map_err(|_| PyValueError::new_err("publish items must be 7-tuples"))?;
    if t.len() != 7 {
        return Err(PyValueError::new_err(format!("publish items must be 7-tuples, got {}", t.len())));
    }
    let headers: Option<Bound<'_, PyDict>> = t.get_item(4)?.extract()?;
    Ok(NewMessage {
        topic: t.get_item(0)?.extract()?,
        payload: t.get_item(1)?.extract::<Vec<u8>>()?,
        dedup_key: t.get_item(2)?.extract()?,
        delay: opt_delay(t.get_item(3)?.extract()?)?,
        headers: headers_vec(headers.as_ref())?,
        correlation_id: t.get_item(5)?.extract()?,
        causation_id: t.get_item(6)?.extract()?,
    })
}

/// The (id, token) pairs of one delivery or a list of them.
fn leases(deliveries: &Bound<'_, PyAny>) -> PyResult<Vec<(u64, u64)>> {
    if let Ok(d) = deliveries.cast::<PyDelivery>() {
        let d = d.get();
        return Ok(vec![(d.id, d.lease_token)]);
    }
    let lease = |item: &Bound<'_, PyAny>| -> PyResult<(u64, u64)> {
        let d = item.cast::<PyDelivery>().map_err(|_| PyValueError::new_err("ack() takes Delivery objects"))?;
        let d = d.get();
        Ok((d.id, d.lease_token))
    };
    if let Ok(list) = deliveries.cast::<PyList>() {
        return list.iter().map(|item| lease(&item)).collect();
    }
    deliveries.try_iter()?.map(|item| lease(&item?)).collect()
}

fn lease_of(d: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    let d = d.cast::<PyDelivery>().map_err(|_| PyValueError::new_err("expected a Delivery"))?;
    let d = d.get();
    Ok((d.id, d.lease_token))
}

fn id_str(py: Python<'_>, id: u64) -> Bound<'_, PyString> {
    let hex = crate::error::hex_id(id);
    PyString::new(py, std::str::from_utf8(&hex).expect("hex is ASCII"))
}

fn id_list<'py>(py: Python<'py>, ids: &[u64]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, ids.iter().map(|id| id_str(py, *id)))
}

impl PyEngine {
    /// Runs `f` without waiting first (GIL held); if it reports `Full` and
    /// the caller may block, runs it again with the GIL released.
    fn with_room<T: Send>(
        &self,
        py: Python<'_>,
        block: bool,
        timeout: Option<f64>,
        f: impl Fn(Wait) -> crate::Result<T> + Send + Sync,
    ) -> PyResult<T> {
        match f(Wait::No) {
            Err(Error::Full { .. }) if block && timeout != Some(0.0) => {
                let wait = Wait::from_timeout(timeout);
                py.detach(|| f(wait)).map_err(to_py)
            }
            r => r.map_err(to_py),
        }
    }

    fn encoder(&self) -> Option<Arc<Encoder>> {
        self.encoder.lock().clone()
    }

    fn no_encoder(what: &str, obj: &Bound<'_, PyAny>) -> PyErr {
        let ty = obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("{what} takes bytes, not {ty}: this engine has no encoder (ringq.Queue sets one)"))
    }

    fn durable(&self, py: Python<'_>, lsn: Option<u64>) -> PyResult<()> {
        if lsn.is_some() && self.engine.durability() == Durability::Always {
            py.detach(|| self.engine.wait_durable(lsn)).map_err(to_py)?;
        }
        Ok(())
    }
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (path, *, capacity=100_000, durability="batch", fsync_interval=0.05, max_attempts=5,
        segment_size=16*1024*1024, snapshot_every=1_000_000, snapshot_interval=300.0,
        max_payload=1024*1024, max_key=1024, max_headers=64*1024, dlq_capacity=10_000, lease=30.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        capacity: i64,
        durability: &str,
        fsync_interval: f64,
        max_attempts: i64,
        segment_size: i64,
        snapshot_every: i64,
        snapshot_interval: f64,
        max_payload: i64,
        max_key: i64,
        max_headers: i64,
        dlq_capacity: i64,
        lease: f64,
    ) -> PyResult<Self> {
        let mut bad = Vec::new();
        let mut nonneg = |name: &str, v: i64| -> u64 {
            if v < 0 {
                bad.push(format!("{name}={v} (must be >= 0)"));
                0
            } else {
                v as u64
            }
        };
        let capacity = nonneg("capacity", capacity) as usize;
        let max_attempts = nonneg("max_attempts", max_attempts).min(u32::MAX as u64) as u32;
        let segment_size = nonneg("segment_size", segment_size) as usize;
        let snapshot_every = nonneg("snapshot_every", snapshot_every);
        let max_payload = nonneg("max_payload", max_payload) as usize;
        let max_key = nonneg("max_key", max_key) as usize;
        let max_headers = nonneg("max_headers", max_headers) as usize;
        let dlq_capacity = nonneg("dlq_capacity", dlq_capacity) as usize;
        let durability =
            Durability::parse(durability).map_err(|e| bad.push(e.to_string().replace("invalid option: ", ""))).ok();
        let fsync_interval = secs("fsync_interval", fsync_interval)
            .map_err(|_| bad.push(format!("fsync_interval={fsync_interval} (must be >= 0)")))
            .ok();
        let snapshot_interval = secs("snapshot_interval", snapshot_interval)
            .map_err(|_| bad.push(format!("snapshot_interval={snapshot_interval} (must be > 0)")))
            .ok();
        if !(lease.is_finite() && lease > 0.0) {
            bad.push(format!("lease={lease} (must be a finite number of seconds > 0)"));
        }
        if !bad.is_empty() {
            return Err(config_err(bad.join("; ")));
        }
        let opts = Options {
            capacity,
            durability: durability.expect("checked"),
            fsync_interval: fsync_interval.expect("checked"),
            max_attempts,
            segment_size,
            snapshot_every,
            snapshot_interval: snapshot_interval.expect("checked"),
            max_payload,
            max_key,
            max_headers,
            dlq_capacity,
        };
        let engine = py.detach(|| Engine::open(&path, opts)).map_err(to_py)?;
        Ok(PyEngine { engine, lease: Duration::from_secs_f64(lease), encoder: Mutex::new(None) })
    }

    #[getter]
    fn path(&self) -> String {
        self.engine.path().display().to_string()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.engine.is_closed()
    }

    #[getter]
    fn durability(&self) -> &'static str {
        self.engine.durability().as_str()
    }

    /// Publish one message and return its id (`ringq.Queue.publish`).
    ///
    /// `bytes` are stored as given, on `topic` or "default". Any other payload
    /// goes through the encoder (`_set_encoder`), which gives the bytes, the
    /// default topic and a type tag, stored in the type-tag header. A full
    /// queue blocks (`timeout` bounds the wait) or, with `block=False`, raises
    /// `QueueFull`.
    #[pyo3(signature = (payload, topic=None, *, dedup_key=None, delay=None, headers=None, correlation_id=None,
        causation_id=None, on_duplicate="replace", expected_version=None, block=true, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        topic: Option<&str>,
        dedup_key: Option<&str>,
        delay: Option<f64>,
        headers: Option<&Bound<'py, PyDict>>,
        correlation_id: Option<&str>,
        causation_id: Option<&str>,
        on_duplicate: &str,
        expected_version: Option<u32>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyString>> {
        let encoded;
        let (topic, payload, tag) = if let Ok(b) = payload.cast::<PyBytes>() {
            (topic.unwrap_or(DEFAULT_TOPIC), b.as_bytes(), None)
        } else {
            let enc = self.encoder().ok_or_else(|| Self::no_encoder("publish()", payload))?;
            encoded = enc.encode(payload)?;
            let topic = match topic {
                Some(t) => t,
                None => encoded.topic.to_str()?,
            };
            let tag = encoded.tag.map(|t| (enc, t));
            (topic, encoded.data.as_bytes(), tag)
        };
        let mut headers = headers_vec(headers)?;
        if let Some((enc, tag)) = tag {
            set_header(&mut headers, &enc.type_header, tag);
        }
        let p = Publish {
            topic,
            payload,
            dedup_key,
            delay: opt_delay(delay)?,
            headers: &headers,
            correlation_id,
            causation_id,
        };
        let opts = PublishOpts { on_duplicate: OnDuplicate::parse(on_duplicate).map_err(to_py)?, expected_version };
        let (id, lsn) = self.with_room(py, block, timeout, |w| self.engine.publish(p, opts, w))?;
        self.durable(py, lsn)?;
        Ok(id_str(py, id))
    }

    /// Publish several messages atomically (all or none); returns the ids in
    /// item order (`ringq.Queue.publish_many`).
    ///
    /// `bytes` items go to `topic` (or "default") as given; other items go
    /// through the encoder's `encode_item(obj, topic)` (`ringq.Message` items
    /// carry their own options there).
    #[pyo3(signature = (payloads, topic=None, *, block=true, timeout=None))]
    fn publish_payloads<'py>(
        &self,
        py: Python<'py>,
        payloads: &Bound<'py, PyAny>,
        topic: Option<&str>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = payloads.cast::<PyList>().ok();
        let mut encoder: Option<Arc<Encoder>> = None;
        let mut held: Vec<Item<'py>> = Vec::with_capacity(list.map_or(0, |l| l.len()));
        let mut add = |obj: Bound<'py, PyAny>| -> PyResult<()> {
            let obj = match obj.cast_into::<PyBytes>() {
                Ok(b) => {
                    held.push(Item::Raw(b));
                    return Ok(());
                }
                Err(e) => e.into_inner(),
            };
            if encoder.is_none() {
                encoder = Some(self.encoder().ok_or_else(|| Self::no_encoder("publish_many()", &obj))?);
            }
            let enc = encoder.as_ref().expect("set above");
            let msg = match &enc.encode_item {
                Some(f) => new_message(&f.bind(py).call1((&obj, topic))?)?,
                None => {
                    let e = enc.encode(&obj)?;
                    let mut headers = Vec::new();
                    if let Some(tag) = e.tag {
                        headers.push((enc.type_header.clone(), tag));
                    }
                    NewMessage {
                        topic: match topic {
                            Some(t) => t.to_owned(),
                            None => e.topic.to_str()?.to_owned(),
                        },
                        payload: e.data.as_bytes().to_vec(),
                        headers,
                        ..Default::default()
                    }
                }
            };
            held.push(Item::Encoded(msg));
            Ok(())
        };
        if let Some(list) = list {
            for item in list.iter() {
                add(item)?;
            }
        } else {
            for item in payloads.try_iter()? {
                add(item?)?;
            }
        }
        let default_topic = topic.unwrap_or(DEFAULT_TOPIC);
        let items: Vec<Publish<'_>> = held
            .iter()
            .map(|it| match it {
                Item::Raw(b) => Publish { topic: default_topic, payload: b.as_bytes(), ..Default::default() },
                Item::Encoded(m) => Publish::from_new(m),
            })
            .collect();
        let (ids, lsn) =
            self.with_room(py, block, timeout, |w| self.engine.publish_many(&items, PublishOpts::default(), w))?;
        self.durable(py, lsn)?;
        id_list(py, &ids)
    }

    /// Many payloads to one topic: the fast batch path.
    #[pyo3(signature = (topic, payloads, block=true, timeout=None))]
    fn publish_batch<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        payloads: &Bound<'py, PyList>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut held = Vec::with_capacity(payloads.len());
        for item in payloads.iter() {
            held.push(item.cast_into::<PyBytes>().map_err(|_| PyValueError::new_err("publish_batch takes bytes"))?);
        }
        let items: Vec<Publish<'_>> =
            held.iter().map(|b| Publish { topic, payload: b.as_bytes(), ..Default::default() }).collect();
        let (ids, lsn) =
            self.with_room(py, block, timeout, |w| self.engine.publish_many(&items, PublishOpts::default(), w))?;
        self.durable(py, lsn)?;
        id_list(py, &ids)
    }

    #[pyo3(signature = (items, block=true, timeout=None))]
    fn publish_many<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let msgs = new_messages(items)?;
        let items: Vec<Publish<'_>> = msgs.iter().map(Publish::from_new).collect();
        let (ids, lsn) =
            self.with_room(py, block, timeout, |w| self.engine.publish_many(&items, PublishOpts::default(), w))?;
        self.durable(py, lsn)?;
        id_list(py, &ids)
    }

    /// Take up to `max_messages` ready messages of `topic` under a lease
    /// (`ringq.Queue.checkout`).
    ///
    /// Waits for the first message up to `timeout` seconds (`None`: no limit,
    /// `0`: never wait) and returns `[]` if none came. `lease` defaults to the
    /// engine's `lease`.
    #[pyo3(signature = (topic="default", max_messages=1, lease=None, timeout=None))]
    fn checkout(
        &self,
        py: Python<'_>,
        topic: &str,
        max_messages: usize,
        lease: Option<f64>,
        timeout: Option<f64>,
    ) -> PyResult<Vec<PyDelivery>> {
        let lease = match lease {
            None => self.lease,
            Some(l) if l.is_finite() && l > 0.0 => Duration::from_secs_f64(l),
            Some(l) => return Err(PyValueError::new_err(format!("lease={l} (must be > 0 seconds)"))),
        };
        let mut got = self.engine.checkout(topic, max_messages, lease, Wait::No).map_err(to_py)?;
        if got.is_empty() && !matches!(timeout, Some(t) if t <= 0.0) {
            let wait = Wait::from_timeout(timeout);
            got = py.detach(|| self.engine.checkout(topic, max_messages, lease, wait)).map_err(to_py)?;
        }
        Ok(got.into_iter().map(|d| PyDelivery::from_delivered(py, d)).collect())
    }

    /// Remove delivered messages for good (`ringq.Queue.ack`): a `Delivery`
    /// or any iterable of them. With several, the valid ones are acked and
    /// `LeaseLost` lists the stale ones. `publish` (7-tuples) is committed in
    /// the same journal record (a handler's chained publishes).
    #[pyo3(signature = (deliveries, publish=None))]
    fn ack(&self, py: Python<'_>, deliveries: &Bound<'_, PyAny>, publish: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let leases = leases(deliveries)?;
        let msgs = match publish {
            Some(p) => new_messages(p)?,
            None => Vec::new(),
        };
        let items: Vec<Publish<'_>> = msgs.iter().map(Publish::from_new).collect();
        let out = self.engine.ack(&leases, &items, Wait::No).map_err(to_py)?;
        self.durable(py, out.lsn)?;
        if !out.lost.is_empty() {
            return Err(to_py(Error::LeaseLost { ids: out.lost }));
        }
        Ok(())
    }

    #[pyo3(signature = (delivery, delay=None, error_type=None, error_message=None, traceback=None, handler=None,
        dead_letter_reason=None))]
    #[allow(clippy::too_many_arguments)]
    fn nack(
        &self,
        py: Python<'_>,
        delivery: &Bound<'_, PyAny>,
        delay: Option<f64>,
        error_type: Option<String>,
        error_message: Option<String>,
        traceback: Option<String>,
        handler: Option<String>,
        dead_letter_reason: Option<&str>,
    ) -> PyResult<()> {
        let (id, token) = lease_of(delivery)?;
        let failure = Failure { error_type, error_message, traceback, handler };
        let lsn = self.engine.nack(id, token, opt_delay(delay)?, failure, dead_letter_reason).map_err(to_py)?;
        self.durable(py, lsn)
    }

    /// Push the lease deadline `seconds` from now; returns it (epoch seconds).
    fn extend(&self, delivery: &Bound<'_, PyAny>, seconds: f64) -> PyResult<f64> {
        let (id, token) = lease_of(delivery)?;
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(PyValueError::new_err(format!("seconds={seconds} (must be > 0)")));
        }
        let d = self.engine.extend(id, token, Duration::from_secs_f64(seconds)).map_err(to_py)?;
        Ok(d as f64 / 1e6)
    }

    /// Makes checkouts now waiting on `topic` return at once.
    fn interrupt(&self, topic: &str) -> PyResult<()> {
        self.engine.interrupt(topic).map_err(to_py)
    }

    /// Per-topic `max_attempts` and handler name (in memory; `None`s clear).
    #[pyo3(signature = (topic, max_attempts=None, handler=None))]
    fn set_topic_policy(&self, topic: &str, max_attempts: Option<u32>, handler: Option<String>) -> PyResult<()> {
        self.engine.set_topic_policy(topic, crate::TopicPolicy { max_attempts, handler }).map_err(to_py)
    }

    fn is_superseded(&self, delivery: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.engine.is_superseded(lease_of(delivery)?.0).map_err(to_py)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.engine.stats().map_err(to_py)? {
            match v {
                Stat::Int(i) => d.set_item(k, i)?,
                Stat::Float(f) => d.set_item(k, f)?,
                Stat::Text(s) => d.set_item(k, s)?,
                Stat::None => d.set_item(k, py.None())?,
            }
        }
        Ok(d)
    }

    /// `{"fsync": {...}, "snapshot": {...}}`, each with `buckets` (upper
    /// bounds in seconds), `counts` (per bucket, one more than `buckets`:
    /// the last is above every bound) and `sum` (seconds).
    fn histograms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, h) in self.engine.histograms() {
            let e = PyDict::new(py);
            e.set_item("buckets", PyTuple::new(py, crate::histogram::BOUNDS_SECONDS)?)?;
            e.set_item("counts", h.counts)?;
            e.set_item("sum", h.sum_seconds)?;
            d.set_item(name, e)?;
        }
        Ok(d)
    }

    fn topic_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, [r, f, dl]) in self.engine.topic_stats().map_err(to_py)? {
            let t = PyDict::new(py);
            t.set_item("ready", r)?;
            t.set_item("in_flight", f)?;
            t.set_item("delayed", dl)?;
            d.set_item(name, t)?;
        }
        Ok(d)
    }

    fn snapshot(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.engine.snapshot()).map_err(to_py)
    }

    #[pyo3(signature = (topic=None, reason=None, limit=None))]
    fn dlq_list(&self, topic: Option<&str>, reason: Option<&str>, limit: Option<usize>) -> PyResult<Vec<PyDeadLetter>> {
        Ok(self.engine.dlq_list(topic, reason, limit).map_err(to_py)?.into_iter().map(PyDeadLetter::new).collect())
    }

    fn dlq_get(&self, id: &str) -> PyResult<PyDeadLetter> {
        self.engine.dlq_get(parse_id(id)?).map(PyDeadLetter::new).map_err(to_py)
    }

    #[pyo3(signature = (ids=None))]
    fn dlq_replay(&self, py: Python<'_>, ids: Option<Vec<String>>) -> PyResult<usize> {
        let ids = ids.map(|v| v.iter().map(|s| parse_id(s)).collect::<PyResult<Vec<u64>>>()).transpose()?;
        let (n, lsn) = self.engine.dlq_replay(ids.as_deref()).map_err(to_py)?;
        self.durable(py, lsn)?;
        Ok(n)
    }

    #[pyo3(signature = (ids=None))]
    fn dlq_purge(&self, py: Python<'_>, ids: Option<Vec<String>>) -> PyResult<usize> {
        let ids = ids.map(|v| v.iter().map(|s| parse_id(s)).collect::<PyResult<Vec<u64>>>()).transpose()?;
        let (n, lsn) = self.engine.dlq_purge(ids.as_deref()).map_err(to_py)?;
        self.durable(py, lsn)?;
        Ok(n)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.engine.close()).map_err(to_py)
    }

    /// How `publish`/`publish_payloads` turn non-`bytes` payloads into bytes:
    /// `encode(obj) -> (default_topic, payload, type_tag | None)`, and for
    /// `publish_payloads` items `encode_item(obj, topic | None) -> PublishItem`
    /// (default: `encode`). A type tag goes in the header `type_header`.
    /// `None` removes the encoder (non-`bytes` payloads raise `TypeError`).
    #[pyo3(signature = (encode, encode_item=None, *, type_header="ringq-type"))]
    fn _set_encoder(
        &self,
        py: Python<'_>,
        encode: Option<Py<PyAny>>,
        encode_item: Option<Py<PyAny>>,
        type_header: &str,
    ) -> PyResult<()> {
        for f in [&encode, &encode_item].into_iter().flatten() {
            if !f.bind(py).is_callable() {
                return Err(PyTypeError::new_err("_set_encoder() takes callables"));
            }
        }
        let new = encode.map(|encode| Arc::new(Encoder { encode, encode_item, type_header: type_header.to_owned() }));
        // Drop the old encoder after unlocking: dropping Python objects can run Python code.
        let old = std::mem::replace(&mut *self.encoder.lock(), new);
        drop(old);
        Ok(())
    }

    /// The default lease of `checkout`, in seconds.
    #[getter]
    fn lease(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Test hook: fail the next `count` calls at `kind` ("segment_create",
    /// "sync", "snapshot_write") with `errno`; -1 until cleared with 0.
    fn _inject_fault(&self, kind: &str, errno: i32, count: i64) -> PyResult<()> {
        let point = FaultPoint::parse(kind).ok_or_else(|| {
            PyValueError::new_err(format!("fault kind {kind:?}: expected segment_create, sync or snapshot_write"))
        })?;
        self.engine.inject_fault(point, errno, count);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine({:?}, durability={:?})",
            self.engine.path().display().to_string(),
            self.engine.durability().as_str()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()
}

//! `ringq._core.Engine`, the in-process backend (`ringq.backend.Backend`):
//! argument conversion and GIL handling around `crate::Engine`. See
//! `python/ringq/_core.pyi` for the Python signatures. It takes and returns
//! bytes and the seam's types (`OutgoingMessage`, `Delivery`, `DeadLetter`);
//! encoding objects is the SDK's job, done before the call, and nothing here
//! calls back into Python. `publish` takes its options positionally too, so
//! the SDK's call (one per message) needs no keyword matching.

use super::args::{self, Kind};
use super::convert::{headers_vec, id_list, id_str, lease_of, leases, parse_id};
use super::errors::{config_err, to_py};
use super::types::{PyDeadLetter, PyOutgoing};
use crate::clock::Clock;
use crate::engine::{Checkout, Engine, Publish, PublishOpts, Stat};
use crate::error::Error;
use crate::shared::SharedQueue;
use crate::shared::client::Client;
use crate::storage::FaultPoint;
use crate::store::Store;
use crate::types::{Durability, Failure, MAX_CAPACITY, OnDuplicate, Options, Wait};
use pyo3::exceptions::PyTypeError;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple};
use std::time::Duration;

/// The topic of payloads published without one (`ringq.codecs.DEFAULT_TOPIC`).
const DEFAULT_TOPIC: &str = "default";
/// The most messages one checkout may ask for.
const MAX_CHECKOUT: i64 = 1_000_000;
/// The lease of a `checkout` that gives none, unless the constructor's
/// `lease` says otherwise.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[pyclass(frozen, name = "Engine", module = "ringq._core")]
pub struct PyEngine {
    core: std::sync::Arc<Core>,
    /// The lease of a `checkout` that does not give one.
    lease: Duration,
    /// Set on the handle `_deferred` makes for an event loop: no call waits.
    deferred: Option<Deferred>,
}

/// A handle for a caller that must not block (`ringq.AsyncQueue`): calls
/// that would wait (for room, for a message, for an fsync) return or fail
/// at once; the caller waits in its event loop for `wake` (`engine::wake`)
/// and polls. The LSN a call would have waited for is kept for `_take_lsn`.
struct Deferred {
    wake: std::sync::Arc<crate::engine::wake::AsyncWake>,
    lsn: std::sync::atomic::AtomicU64,
    /// The event loop's thread (`_bind_loop_thread`; 0: none yet): a call
    /// from it that would wait for the engine's lock (or a heal) raises
    /// `ringq.errors.WouldBlock` instead, and the caller runs it elsewhere.
    loop_thread: std::sync::atomic::AtomicU64,
}

/// A number for the calling thread (never 0).
fn thread_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.with(|t| *t)
}

/// The queue behind an `Engine` object.
enum Core {
    /// The engine, in this process only.
    Local(Engine),
    /// A directory shared by processes: owned here, or reached as a client.
    Shared(Box<SharedQueue>),
    /// A shared queue's client for an event loop (`_deferred` on a client):
    /// every call is submitted and answered later (`shared::loop_conn`).
    Loop(Box<Client>),
}

impl PyEngine {
    fn store(&self) -> &dyn Store {
        match &*self.core {
            Core::Local(e) => e,
            Core::Shared(s) => &**s,
            Core::Loop(c) => &**c,
        }
    }

    /// The client of a `_deferred` handle on a shared queue's client.
    fn loop_client(&self) -> PyResult<&Client> {
        match &*self.core {
            Core::Loop(c) => Ok(c),
            _ => Err(PyValueError::new_err("not a handle for an event loop on a shared queue's client")),
        }
    }

    /// Runs `f` on the engine in this process (test hooks).
    fn with_engine(&self, mut f: impl FnMut(&Engine)) -> PyResult<()> {
        if self.store().with_engine(&mut f) {
            Ok(())
        } else {
            Err(PyValueError::new_err("this test hook needs the queue's owner, not a client"))
        }
    }

    /// Runs an engine call: first with the GIL held, giving up unchanged if
    /// it would wait for the engine's lock or a heal (`blocking::try_first`),
    /// then again with the GIL released; a client's calls (which wait for the
    /// owner) and a pending heal release it at once. A snapshot, a slow disk
    /// or another process's request never stalls this process's threads.
    fn run<T: Send>(&self, py: Python<'_>, f: impl Fn() -> crate::Result<T> + Send + Sync) -> PyResult<T> {
        let on_loop = self.on_loop();
        if self.store().would_wait() {
            if on_loop {
                return Err(to_py(Error::WouldBlock));
            }
            return py.detach(f).map_err(to_py);
        }
        match crate::blocking::try_first(&f) {
            Err(Error::WouldBlock) if on_loop => Err(Error::WouldBlock),
            Err(Error::WouldBlock) => py.detach(f),
            r => r,
        }
        .map_err(to_py)
    }

    /// Whether this is a deferred handle called from its event loop's thread.
    fn on_loop(&self) -> bool {
        self.deferred.as_ref().is_some_and(|d| {
            let t = d.loop_thread.load(std::sync::atomic::Ordering::Relaxed);
            t != 0 && t == thread_token()
        })
    }

    /// Runs `f` without waiting first; if it reports `Full` and the caller
    /// may block, runs it again with the GIL released.
    fn with_room<T: Send>(
        &self,
        py: Python<'_>,
        block: bool,
        wait: Wait,
        f: impl Fn(Wait) -> crate::Result<T> + Send + Sync,
    ) -> PyResult<T> {
        if self.store().submits() {
            // The owner waits (for room, up to the timeout); the answer says.
            return f(if block { wait } else { Wait::No }).map_err(to_py);
        }
        let on_loop = self.on_loop();
        let first = if self.store().would_wait() {
            if on_loop { Err(Error::WouldBlock) } else { py.detach(|| f(Wait::No)) }
        } else {
            match crate::blocking::try_first(|| f(Wait::No)) {
                Err(Error::WouldBlock) if on_loop => Err(Error::WouldBlock),
                Err(Error::WouldBlock) => py.detach(|| f(Wait::No)),
                r => r,
            }
        };
        match first {
            Err(Error::Full { .. }) if block && !matches!(wait, Wait::No) && self.deferred.is_none() => {
                py.detach(|| f(wait)).map_err(to_py)
            }
            r => r.map_err(to_py),
        }
    }

    /// `publish_many` of `batch`: its ids, as a list of `str`.
    fn publish_batch<'py>(
        &self,
        py: Python<'py>,
        batch: &[Publish<'_>],
        block: bool,
        wait: Wait,
    ) -> PyResult<Bound<'py, PyList>> {
        let (ids, lsn) =
            self.with_room(py, block, wait, |w| self.store().publish_many(batch, PublishOpts::default(), w))?;
        self.durable(py, lsn)?;
        id_list(py, &ids)
    }

    fn deferred_part(&self) -> PyResult<&Deferred> {
        self.deferred.as_ref().ok_or_else(|| PyValueError::new_err("not a handle made by Engine._deferred()"))
    }

    /// One publish, waiting for room as `block`/`wait` say and for
    /// durability as the queue's mode says; the id.
    fn publish_one<'py>(
        &self,
        py: Python<'py>,
        p: Publish<'_>,
        opts: PublishOpts,
        block: bool,
        wait: Wait,
    ) -> PyResult<Bound<'py, PyString>> {
        let (id, lsn) = self.with_room(py, block, wait, |w| self.store().publish(p, opts, w))?;
        self.durable(py, lsn)?;
        Ok(id_str(py, id))
    }

    fn durable(&self, py: Python<'_>, lsn: Option<u64>) -> PyResult<()> {
        if let (Some(d), Some(lsn)) = (&self.deferred, lsn) {
            d.lsn.fetch_max(lsn, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        if lsn.is_some() && self.store().durability() == Durability::Always {
            py.detach(|| self.store().wait_durable(lsn)).map_err(to_py)?;
        }
        Ok(())
    }

    fn queue(&self) -> u64 {
        self.store().instance_id()
    }
}

/// `stats()` as a dict.
pub(super) fn stats_dict(py: Python<'_>, stats: crate::store::Stats) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in stats {
        match v {
            Stat::Int(i) => d.set_item(k, i)?,
            Stat::Float(f) => d.set_item(k, f)?,
            Stat::Text(s) => d.set_item(k, s)?,
            Stat::None => d.set_item(k, py.None())?,
        }
    }
    Ok(d)
}

/// `histograms()` as a dict.
pub(super) fn histograms_dict(py: Python<'_>, hs: crate::store::Histograms) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, h) in hs {
        let e = PyDict::new(py);
        e.set_item("buckets", PyTuple::new(py, crate::histogram::BOUNDS_SECONDS)?)?;
        e.set_item("counts", h.counts)?;
        e.set_item("sum", h.sum_seconds)?;
        d.set_item(name, e)?;
    }
    Ok(d)
}

/// `topic_stats()` as a dict.
pub(super) fn topic_stats_dict(py: Python<'_>, all: Vec<crate::engine::TopicStat>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for ts in all {
        let t = PyDict::new(py);
        t.set_item("ready", ts.ready)?;
        t.set_item("in_flight", ts.in_flight)?;
        t.set_item("delayed", ts.delayed)?;
        t.set_item("dead_lettered", ts.dead_lettered)?;
        d.set_item(ts.name, t)?;
    }
    Ok(d)
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn not_bytes(what: &str, v: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!("Engine.{what} takes bytes, not {} (ringq.Queue encodes objects)", type_name(v)))
}

/// The topic of a plain call to `publish_fast`/`publish_many_fast`: none
/// (the default topic) or an exact `str`; `None` for anything else, which
/// the fallback handles (and refuses as `publish` would).
fn plain_topic<'a>(topic: Option<&'a Bound<'_, PyAny>>) -> PyResult<Option<&'a str>> {
    match topic {
        None => Ok(Some(DEFAULT_TOPIC)),
        Some(t) => t.cast_exact::<PyString>().ok().map(|s| s.to_str()).transpose(),
    }
}

/// The items of `list`, held, if every one is exact `bytes` (`None` at
/// the first that is not).
fn exact_bytes<'py>(list: &Bound<'py, PyList>) -> Option<Vec<Bound<'py, PyBytes>>> {
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        out.push(item.cast_into_exact::<PyBytes>().ok()?);
    }
    Some(out)
}

/// An item of `publish_many` or of an ack's `publish=`.
enum Item<'py> {
    Raw(Bound<'py, PyBytes>),
    Message(Bound<'py, PyOutgoing>),
}

impl Item<'_> {
    fn publish<'a>(&'a self, py: Python<'_>, topic: &'a str) -> Publish<'a> {
        match self {
            Item::Raw(b) => Publish { topic, payload: b.as_bytes(), ..Default::default() },
            Item::Message(m) => {
                let m = m.get();
                Publish {
                    topic: &m.topic,
                    payload: m.payload.as_bytes(py),
                    dedup_key: m.dedup_key.as_deref(),
                    delay: m.delay,
                    headers: &m.headers,
                    correlation_id: m.correlation_id.as_deref(),
                    causation_id: m.causation_id.as_deref(),
                    priority: m.priority,
                    ordering_key: m.ordering_key.as_deref(),
                    dedup_window: m.dedup_window,
                }
            }
        }
    }
}

/// The items of `publish_many` (or of an ack's `publish=`): `bytes` or
/// `OutgoingMessage`.
fn outgoing_items<'py>(items: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<Item<'py>>> {
    let one = |obj: Bound<'py, PyAny>| -> PyResult<Item<'py>> {
        let obj = match obj.cast_into::<PyBytes>() {
            Ok(b) => return Ok(Item::Raw(b)),
            Err(e) => e.into_inner(),
        };
        obj.cast_into::<PyOutgoing>().map(Item::Message).map_err(|e| {
            let ty = type_name(&e.into_inner());
            PyTypeError::new_err(format!("{what} takes bytes or OutgoingMessage items, not {ty}"))
        })
    };
    match items.cast::<PyList>() {
        Ok(list) => list.iter().map(one).collect(),
        Err(_) => items.try_iter()?.map(|i| one(i?)).collect(),
    }
}

fn block_flag(v: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    v.map_or(Ok(true), |v| args::flag("block", v))
}

#[pymethods]
impl PyEngine {
    /// Options left out (or `None`) take the engine's defaults (`Options::default`,
    /// `DEFAULT_LEASE`; `_default_options` gives them). The SDK's table of options
    /// (`ringq.config.QUEUE_OPTIONS`) is compared with this signature, those
    /// defaults and the ranges checked here by `tests/test_options_table.py`.
    /// `shared=True`: the directory is shared by processes (the first owns
    /// it and serves a socket in it; later ones are its clients).
    /// `recycle_segments=False`: journal segments a snapshot covers are
    /// deleted instead of being reused as spares (`Options::recycle_segments`).
    /// `_manual_clock=True` (for tests) gives the engine a clock that stands
    /// at the wall clock's time of opening until `_advance_clock` moves it.
    #[new]
    #[pyo3(signature = (path, *, capacity=None, durability="batch", fsync_interval=None, max_attempts=None,
        segment_size=None, snapshot_every=None, snapshot_interval=None, max_payload=None, max_key=None,
        max_headers=None, dlq_capacity=None, lease=None, shared=false, recycle_segments=true, _manual_clock=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        capacity: Option<&Bound<'_, PyAny>>,
        durability: &str,
        fsync_interval: Option<&Bound<'_, PyAny>>,
        max_attempts: Option<&Bound<'_, PyAny>>,
        segment_size: Option<&Bound<'_, PyAny>>,
        snapshot_every: Option<&Bound<'_, PyAny>>,
        snapshot_interval: Option<&Bound<'_, PyAny>>,
        max_payload: Option<&Bound<'_, PyAny>>,
        max_key: Option<&Bound<'_, PyAny>>,
        max_headers: Option<&Bound<'_, PyAny>>,
        dlq_capacity: Option<&Bound<'_, PyAny>>,
        lease: Option<&Bound<'_, PyAny>>,
        shared: bool,
        recycle_segments: bool,
        _manual_clock: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        // Every bad option is reported at once (one ConfigError).
        let mut bad: Vec<String> = Vec::new();
        let mut type_err: Option<PyErr> = None;
        let mut take = |r: PyResult<()>| {
            if let Err(e) = r {
                if e.is_instance_of::<PyTypeError>(py) {
                    type_err.get_or_insert(e);
                } else {
                    bad.push(e.value(py).to_string().replace("invalid option: ", ""));
                }
            }
        };
        let mut o = Options::default();
        let int = |name: &str, v: Option<&Bound<'_, PyAny>>, lo: i64, hi: i64, slot: &mut i64| -> PyResult<()> {
            if let Some(v) = v.filter(|v| !v.is_none()) {
                *slot = args::int(Kind::Option, name, v, lo, hi)?;
            }
            Ok(())
        };
        let secs = |name: &str, v: Option<&Bound<'_, PyAny>>, positive: bool, slot: &mut Duration| -> PyResult<()> {
            if let Some(v) = v.filter(|v| !v.is_none()) {
                *slot = args::seconds(Kind::Option, name, v, positive)?;
            }
            Ok(())
        };
        let (mut cap, mut attempts, mut seg, mut every) =
            (o.capacity as i64, o.max_attempts as i64, o.segment_size as i64, o.snapshot_every as i64);
        let (mut payload, mut key, mut hdrs, mut dlq) =
            (o.max_payload as i64, o.max_key as i64, o.max_headers as i64, o.dlq_capacity as i64);
        let mut lease_d = DEFAULT_LEASE;
        take(int("capacity", capacity, 1, MAX_CAPACITY as i64, &mut cap));
        take(int("max_attempts", max_attempts, 1, u32::MAX as i64, &mut attempts));
        take(int("segment_size", segment_size, 64 * 1024, (1 << 31) - 1, &mut seg));
        take(int("snapshot_every", snapshot_every, 1, i64::MAX, &mut every));
        take(int("max_payload", max_payload, 1, 64 * 1024 * 1024, &mut payload));
        take(int("max_key", max_key, 1, 64 * 1024, &mut key));
        take(int("max_headers", max_headers, 0, 16 * 1024 * 1024, &mut hdrs));
        take(int("dlq_capacity", dlq_capacity, 1, i64::MAX, &mut dlq));
        take(secs("fsync_interval", fsync_interval, false, &mut o.fsync_interval));
        take(secs("snapshot_interval", snapshot_interval, true, &mut o.snapshot_interval));
        take(secs("lease", lease, true, &mut lease_d));
        if let Some(v) = _manual_clock.filter(|v| !v.is_none())
            && args::flag("_manual_clock", v)?
        {
            o.clock = Clock::manual();
        }
        if let Some(e) = type_err {
            return Err(e);
        }
        match Durability::parse(durability) {
            Ok(d) => o.durability = d,
            Err(e) => bad.push(e.to_string().replace("invalid option: ", "")),
        }
        (o.capacity, o.max_attempts, o.segment_size, o.snapshot_every) =
            (cap as usize, attempts as u32, seg as usize, every as u64);
        (o.max_payload, o.max_key, o.max_headers, o.dlq_capacity) =
            (payload as usize, key as usize, hdrs as usize, dlq as usize);
        o.recycle_segments = recycle_segments;
        if bad.is_empty()
            && let Err(e) = o.validate()
        {
            bad.push(e.to_string().replace("invalid option: ", ""));
        }
        if !bad.is_empty() {
            return Err(config_err(bad.join("; ")));
        }
        let core = if shared {
            Core::Shared(Box::new(py.detach(|| SharedQueue::open(&path, o)).map_err(to_py)?))
        } else {
            Core::Local(py.detach(|| Engine::open(&path, o)).map_err(to_py)?)
        };
        Ok(PyEngine { core: std::sync::Arc::new(core), lease: lease_d, deferred: None })
    }

    #[getter]
    fn path(&self) -> String {
        self.store().path().display().to_string()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.store().is_closed()
    }

    /// True in a `fork()` child: the queue belongs to the parent.
    #[getter]
    fn forked(&self) -> bool {
        self.store().is_forked()
    }

    /// Raises `QueueForked` in a `fork()` child (for calls that do not
    /// reach the engine otherwise, like starting handlers).
    fn check_not_forked(&self) -> PyResult<()> {
        self.store().check_not_forked().map_err(to_py)
    }

    /// `"local"` (this process only), `"owner"` (shared, served from this
    /// process) or `"client"` (shared, served by another process).
    #[getter]
    fn role(&self) -> &'static str {
        match &*self.core {
            Core::Local(_) => "local",
            Core::Shared(s) => s.role(),
            Core::Loop(_) => "client",
        }
    }

    /// Where a shared queue's owner listens (`None` unless this process owns it).
    #[getter]
    fn address(&self) -> Option<String> {
        match &*self.core {
            Core::Local(_) | Core::Loop(_) => None,
            Core::Shared(s) => s.address(),
        }
    }

    /// The queue directory's identity (16 hex digits).
    #[getter]
    fn instance_id(&self) -> String {
        crate::error::fmt_id(self.store().instance_id())
    }

    #[getter]
    fn durability(&self) -> &'static str {
        self.store().durability().as_str()
    }

    /// Publish one message (already encoded) and return its id; see
    /// `ringq.Queue.publish`. A full queue blocks (`timeout` bounds the wait)
    /// or, with `block=False`, raises `QueueFull`.
    #[pyo3(signature = (payload, topic=None, dedup_key=None, delay=None, headers=None, correlation_id=None,
        causation_id=None, on_duplicate="replace", expected_version=None, block=None, timeout=None, *, priority=None,
        ordering_key=None, dedup_window=None),
        text_signature = "($self, payload, topic=None, dedup_key=None, delay=None, headers=None, \
        correlation_id=None, causation_id=None, on_duplicate='replace', expected_version=None, block=True, timeout=None, \
        *, priority=None, ordering_key=None, dedup_window=None)")]
    #[allow(clippy::too_many_arguments)]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        topic: Option<&str>,
        dedup_key: Option<&str>,
        delay: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyDict>>,
        correlation_id: Option<&str>,
        causation_id: Option<&str>,
        on_duplicate: &str,
        expected_version: Option<&Bound<'py, PyAny>>,
        block: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        ordering_key: Option<&str>,
        dedup_window: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyString>> {
        let payload = payload.cast::<PyBytes>().map_err(|_| not_bytes("publish", payload))?;
        let delay = args::opt_seconds("delay", delay, false)?;
        let expected_version =
            args::opt_int("expected_version", expected_version, 0, u32::MAX as i64)?.map(|v| v as u32);
        let block = block_flag(block)?;
        let wait = args::timeout(timeout)?;
        let headers = headers_vec(headers)?;
        let p = Publish {
            topic: topic.unwrap_or(DEFAULT_TOPIC),
            payload: payload.as_bytes(),
            dedup_key,
            delay,
            headers: &headers,
            correlation_id,
            causation_id,
            priority: super::types::priority_arg(priority)?,
            ordering_key,
            dedup_window: args::opt_seconds("dedup_window", dedup_window, true)?,
        };
        let opts = PublishOpts { on_duplicate: OnDuplicate::parse(on_duplicate).map_err(to_py)?, expected_version };
        self.publish_one(py, p, opts, block, wait)
    }

    /// A handle on the same queue for an event loop (`ringq.AsyncQueue`):
    /// its calls never wait (a full queue raises `QueueFull`, a checkout
    /// returns what is ready, an fsync is not waited for: `_take_lsn` gives
    /// the LSN to poll with `_poll_durable`), and its eventfd (`_async_fd`)
    /// becomes readable when something it armed (`_async_arm`,
    /// `_arm_topic`) happened. Only where the engine runs in this process
    /// (not a shared queue's client). `_async_detach` ends it.
    fn _deferred(&self, py: Python<'_>) -> PyResult<PyEngine> {
        if let Core::Shared(s) = &*self.core
            && s.role() == "client"
        {
            let (dir, instance) = (s.path().to_owned(), s.instance_id());
            let client = py.detach(|| Client::for_loop(&dir, instance)).map_err(to_py)?;
            return Ok(PyEngine {
                core: std::sync::Arc::new(Core::Loop(Box::new(client))),
                lease: self.lease,
                deferred: None,
            });
        }
        let wake = crate::engine::wake::AsyncWake::new()
            .map_err(|e| to_py(Error::storage("creating an eventfd", self.store().path(), e)))?;
        let w = wake.clone();
        self.with_engine(move |e| e.register_wake(w.clone()))?;
        Ok(PyEngine {
            core: self.core.clone(),
            lease: self.lease,
            deferred: Some(Deferred {
                wake,
                lsn: std::sync::atomic::AtomicU64::new(0),
                loop_thread: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// `"engine"` (the engine runs here: `_async_fd` signals) or
    /// `"socket"` (a shared queue's client: calls raise
    /// `ringq.errors.Submitted` and `_loop_pump` gives their answers).
    fn _async_kind(&self) -> &'static str {
        match &*self.core {
            Core::Loop(_) => "socket",
            _ => "engine",
        }
    }

    /// The socket of a `"socket"` handle (`None`: not connected; calls
    /// raise `WouldBlock` until `_loop_reconnect`).
    fn _loop_fd(&self) -> PyResult<Option<i32>> {
        Ok(self.loop_client()?.loop_fd())
    }

    /// Writes the requests submitted; true if some are left for when the
    /// socket is writable.
    fn _loop_flush(&self) -> PyResult<bool> {
        Ok(self.loop_client()?.loop_flush())
    }

    /// The answers that came: `(request id, ok, value)`, the value as the
    /// blocking call would have returned it or the exception it would have
    /// raised. A broken connection answers every request in flight with
    /// `OwnerGone`.
    fn _loop_pump(&self, py: Python<'_>) -> PyResult<Vec<(u64, bool, Py<PyAny>)>> {
        let answers = self.loop_client()?.loop_pump();
        let queue = self.queue();
        let mut out = Vec::with_capacity(answers.len());
        for (id, op, result) in answers {
            let v = result.map(|body| super::loop_answers::value(py, op, &body, queue));
            out.push(match v {
                Ok(Ok(v)) => (id, true, v),
                Ok(Err(e)) => (id, false, e.into_value(py).into_any()),
                Err(e) => (id, false, to_py(e).into_value(py).into_any()),
            });
        }
        Ok(out)
    }

    /// Withdraws request `id` if it still waits at the owner.
    fn _loop_cancel(&self, id: u64) -> PyResult<()> {
        self.loop_client()?.loop_cancel(id);
        Ok(())
    }

    /// Connects a `"socket"` handle again after its connection broke
    /// (blocking: run it in a worker thread).
    fn _loop_reconnect(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.loop_client()?;
        py.detach(|| c.loop_reconnect()).map_err(to_py)
    }

    /// Makes the calling thread this handle's event loop thread: its calls
    /// that would wait for the engine raise `ringq.errors.WouldBlock`.
    fn _bind_loop_thread(&self) -> PyResult<()> {
        self.deferred_part()?.loop_thread.store(thread_token(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The eventfd of a `_deferred` handle.
    fn _async_fd(&self) -> PyResult<i32> {
        Ok(self.deferred_part()?.wake.fd())
    }

    /// Asks for a signal of `kinds` (bits: 1 ready, 2 room, 4 durable).
    fn _async_arm(&self, kinds: u32) -> PyResult<()> {
        self.deferred_part()?.wake.arm(kinds);
        Ok(())
    }

    /// What was signalled since the last call (bits; 8: closed); empties the eventfd.
    fn _async_take(&self) -> PyResult<u32> {
        Ok(self.deferred_part()?.wake.take())
    }

    /// The next message that becomes ready on `topic` signals "ready".
    fn _arm_topic(&self, py: Python<'_>, topic: &str) -> PyResult<()> {
        self.deferred_part()?;
        self.run(py, || {
            let mut out = Ok(());
            if !self.store().with_engine(&mut |e| out = e.arm_topic(topic)) {
                return Err(Error::Closed);
            }
            out
        })
    }

    /// The highest LSN the calls since the last `_take_lsn` would have
    /// waited for (`None`: nothing to wait for), and forgets it.
    fn _take_lsn(&self) -> PyResult<Option<u64>> {
        let lsn = self.deferred_part()?.lsn.swap(0, std::sync::atomic::Ordering::Relaxed);
        Ok((lsn != 0).then_some(lsn))
    }

    /// `(durable, asked_at, durable_lsn)`: whether `lsn` is on disk; if not, the fsync
    /// was asked for (the first time, `asked_at=None`): poll again with the
    /// returned `asked_at` after a "durable" signal. A failed fsync raises
    /// `StorageError`, as a waiting call would.
    /// The third value is how far the journal is on disk now (an LSN).
    #[pyo3(signature = (lsn, asked_at=None))]
    fn _poll_durable(&self, lsn: u64, asked_at: Option<u64>) -> PyResult<(bool, u64, u64)> {
        self.deferred_part()?;
        let mut out = Ok((true, 0, 0));
        self.with_engine(|e| out = e.poll_durable(lsn, asked_at).map(|(done, asked)| (done, asked, e.durable_lsn())))?;
        out.map_err(to_py)
    }

    /// Stops the signals of a `_deferred` handle (the queue stays open).
    fn _async_detach(&self) -> PyResult<()> {
        if let Core::Loop(c) = &*self.core {
            c.close();
            return Ok(());
        }
        let wake = self.deferred_part()?.wake.clone();
        self.with_engine(|e| e.unregister_wake(&wake))
    }

    /// The `publish` and `publish_many` to bind in place of a queue's own
    /// (`ringq.backends.fast_publish`), which are given as the methods that
    /// take every call these do not (see [`FastPublish`]).
    fn _fast_publishers<'py>(
        slf: &Bound<'py, Self>,
        publish: Py<PyAny>,
        publish_many: Py<PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let fast =
            Bound::new(slf.py(), FastPublish { engine: slf.clone().unbind(), fallbacks: [publish, publish_many] })?;
        Ok((fast.getattr("publish")?, fast.getattr("publish_many")?))
    }

    /// Publish several messages atomically (all or none); returns the ids in
    /// item order. Items are `bytes` (to `topic`) or `OutgoingMessage`.
    #[pyo3(signature = (payloads, topic=None, *, block=None, timeout=None),
        text_signature = "($self, payloads, topic=None, *, block=True, timeout=None)")]
    fn publish_many<'py>(
        &self,
        py: Python<'py>,
        payloads: &Bound<'py, PyAny>,
        topic: Option<&str>,
        block: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let block = block_flag(block)?;
        let wait = args::timeout(timeout)?;
        let held = outgoing_items(payloads, "publish_many")?;
        let topic = topic.unwrap_or(DEFAULT_TOPIC);
        let batch: Vec<Publish<'_>> = held.iter().map(|it| it.publish(py, topic)).collect();
        self.publish_batch(py, &batch, block, wait)
    }

    /// Take up to `max_messages` ready messages of `topic` under a lease
    /// (`ringq.Queue.checkout`).
    ///
    /// Waits for the first message up to `timeout` seconds (`None`: no limit,
    /// `0`: never wait) and returns `[]` if none came. `lease` defaults to the
    /// engine's `lease`.
    #[pyo3(signature = (topic="default", max_messages=None, lease=None, timeout=None, *, share=None, since=None),
        text_signature = "($self, topic='default', max_messages=1, lease=None, timeout=None, *, share=1, since=None)")]
    #[allow(clippy::too_many_arguments)]
    fn checkout<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        max_messages: Option<&Bound<'_, PyAny>>,
        lease: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        share: Option<&Bound<'_, PyAny>>,
        since: Option<u64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let max = match max_messages.filter(|v| !v.is_none()) {
            Some(v) => args::int(Kind::Arg, "max_messages", v, 1, MAX_CHECKOUT)? as usize,
            None => 1,
        };
        let lease = args::opt_seconds("lease", lease, true)?.unwrap_or(self.lease);
        let wait = args::timeout(timeout)?;
        let share = match share.filter(|v| !v.is_none()) {
            Some(v) => args::int(Kind::Arg, "share", v, 1, 1 << 20)? as usize,
            None => 1,
        };
        let first_wait = if self.store().submits() { wait } else { Wait::No };
        let mut c = Checkout { max, lease, wait: first_wait, share, since };
        let mut got = self.run(py, || self.store().checkout_with(topic, c))?;
        if got.is_empty() && !matches!(wait, Wait::No) && self.deferred.is_none() {
            c.wait = wait;
            got = py.detach(|| self.store().checkout_with(topic, c)).map_err(to_py)?;
        }
        super::types::delivery_list(py, got, self.queue())
    }

    /// The topic's interrupt count: pass it as `checkout(since=...)` so an
    /// `interrupt` that comes before the checkout starts waiting still stops it.
    fn interrupts(&self, py: Python<'_>, topic: &str) -> PyResult<u64> {
        self.run(py, || self.store().interrupts(topic))
    }

    /// Remove delivered messages for good (`ringq.Queue.ack`): a `Delivery`
    /// or any iterable of them. With several, the valid ones are acked and
    /// `LeaseLost` lists the stale ones. `publish` (7-tuples) is committed in
    /// the same journal record (a handler's chained publishes).
    #[pyo3(signature = (deliveries, publish=None))]
    fn ack(&self, py: Python<'_>, deliveries: &Bound<'_, PyAny>, publish: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let leases = leases(deliveries, self.queue(), "ack")?;
        let held = match publish {
            Some(p) => outgoing_items(p, "ack(publish=)")?,
            None => Vec::new(),
        };
        let items: Vec<Publish<'_>> = held.iter().map(|it| it.publish(py, DEFAULT_TOPIC)).collect();
        let out = self.run(py, || self.store().ack(&leases, &items, Wait::No))?;
        self.durable(py, out.lsn)?;
        if !out.lost.is_empty() {
            return Err(to_py(Error::LeaseLost { ids: out.lost }));
        }
        Ok(())
    }

    /// Give deliveries back unstarted: each goes to the front of its topic,
    /// its delivery not counted (`attempt` as before). Stale leases raise
    /// `LeaseLost` (the valid ones are released).
    fn release(&self, py: Python<'_>, deliveries: &Bound<'_, PyAny>) -> PyResult<()> {
        let leases = leases(deliveries, self.queue(), "release")?;
        let out = self.run(py, || self.store().release(&leases))?;
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
        delay: Option<&Bound<'_, PyAny>>,
        error_type: Option<String>,
        error_message: Option<String>,
        traceback: Option<String>,
        handler: Option<String>,
        dead_letter_reason: Option<&str>,
    ) -> PyResult<()> {
        let (id, token) = lease_of(delivery, self.queue())?;
        let delay = args::opt_seconds("delay", delay, false)?;
        let failure = Failure { error_type, error_message, traceback, handler };
        let lsn = self.run(py, || self.store().nack(id, token, delay, failure.clone(), dead_letter_reason))?;
        self.durable(py, lsn)
    }

    /// Push the lease deadline `seconds` from now; returns it (epoch seconds).
    fn extend(&self, py: Python<'_>, delivery: &Bound<'_, PyAny>, seconds: &Bound<'_, PyAny>) -> PyResult<f64> {
        let (id, token) = lease_of(delivery, self.queue())?;
        let by = args::seconds(Kind::Arg, "seconds", seconds, true)?;
        let d = self.run(py, || self.store().extend(id, token, by))?;
        Ok(d as f64 / 1e6)
    }

    /// Makes checkouts now waiting on `topic` return at once (and those
    /// that pass an older `since`).
    fn interrupt(&self, py: Python<'_>, topic: &str) -> PyResult<()> {
        self.run(py, || self.store().interrupt(topic))
    }

    /// Per-topic `max_attempts` and handler name (`None`s clear), kept in
    /// the directory's `POLICIES`: a change is written and fsynced, so the
    /// call runs with the GIL released (`q.start()` makes one per handler).
    #[pyo3(signature = (topic, max_attempts=None, handler=None))]
    fn set_topic_policy(
        &self,
        py: Python<'_>,
        topic: &str,
        max_attempts: Option<&Bound<'_, PyAny>>,
        handler: Option<String>,
    ) -> PyResult<()> {
        let max_attempts = args::opt_int("max_attempts", max_attempts, 1, u32::MAX as i64)?.map(|v| v as u32);
        let policy = crate::TopicPolicy { max_attempts, handler };
        py.detach(|| self.store().set_topic_policy(topic, policy)).map_err(to_py)
    }

    fn is_superseded(&self, py: Python<'_>, delivery: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = lease_of(delivery, self.queue())?.0;
        self.run(py, || self.store().is_superseded(id))
    }

    /// Removes message `id` for good (see `Engine::cancel`); returns what
    /// it was: `"cancelled"` (ready or delayed), `"cancelled_in_flight"`, or
    /// `"not_found"`. Waits for the record as `durability` says.
    fn cancel(&self, py: Python<'_>, id: &str) -> PyResult<&'static str> {
        let id = parse_id(id)?;
        let (was, lsn) = self.run(py, || self.store().cancel(id))?;
        self.durable(py, lsn)?;
        Ok(match was {
            crate::CANCEL_WAITING => "cancelled",
            crate::CANCEL_IN_FLIGHT => "cancelled_in_flight",
            _ => "not_found",
        })
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, self.run(py, || self.store().stats())?)
    }

    /// `{"fsync": {...}, "snapshot": {...}}`, each with `buckets` (upper
    /// bounds in seconds), `counts` (per bucket, one more than `buckets`:
    /// the last is above every bound) and `sum` (seconds).
    fn histograms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        histograms_dict(py, self.run(py, || self.store().histograms())?)
    }

    fn topic_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        topic_stats_dict(py, self.run(py, || self.store().topic_stats())?)
    }

    fn snapshot(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.store().snapshot()).map_err(to_py)
    }

    #[pyo3(signature = (topic=None, reason=None, limit=None))]
    fn dlq_list(
        &self,
        py: Python<'_>,
        topic: Option<&str>,
        reason: Option<&str>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<PyDeadLetter>> {
        let limit = args::opt_int("limit", limit, 0, i64::MAX)?.map(|v| v as usize);
        let found = self.run(py, || self.store().dlq_list(topic, reason, limit))?;
        Ok(found.into_iter().map(PyDeadLetter::new).collect())
    }

    fn dlq_get(&self, py: Python<'_>, id: &str) -> PyResult<PyDeadLetter> {
        let id = parse_id(id)?;
        self.run(py, || self.store().dlq_get(id)).map(PyDeadLetter::new)
    }

    #[pyo3(signature = (ids=None))]
    fn dlq_replay(&self, py: Python<'_>, ids: Option<Vec<String>>) -> PyResult<usize> {
        let ids = ids.map(|v| v.iter().map(|s| parse_id(s)).collect::<PyResult<Vec<u64>>>()).transpose()?;
        let (n, lsn) = self.run(py, || self.store().dlq_replay(ids.as_deref()))?;
        self.durable(py, lsn)?;
        Ok(n)
    }

    #[pyo3(signature = (ids=None))]
    fn dlq_purge(&self, py: Python<'_>, ids: Option<Vec<String>>) -> PyResult<usize> {
        let ids = ids.map(|v| v.iter().map(|s| parse_id(s)).collect::<PyResult<Vec<u64>>>()).transpose()?;
        let (n, lsn) = self.run(py, || self.store().dlq_purge(ids.as_deref()))?;
        self.durable(py, lsn)?;
        Ok(n)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.store().close()).map_err(to_py)
    }

    /// The default lease of `checkout`, in seconds.
    #[getter]
    fn lease(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Test hook (an engine opened with `_manual_clock=True`): move the clock
    /// `seconds` forward and, before returning, expire the leases and release
    /// the delays that fell due meanwhile, in time order, as the timer thread
    /// would have. Returns the clock's new time (epoch seconds). `ValueError`
    /// with the system clock.
    fn _advance_clock(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<f64> {
        let by = args::seconds(Kind::Arg, "seconds", seconds, false)?;
        // To the nearest microsecond (the clock's unit), so that steps like
        // 4.999 + 0.001 add up to exactly 5 seconds.
        let by = Duration::from_micros((by.as_secs_f64() * 1e6).round() as u64);
        let mut now = Ok(0);
        py.detach(|| self.with_engine(|e| now = e.advance_clock(by)))?;
        Ok(now.map_err(to_py)? as f64 / 1e6)
    }

    /// Test hook: hold the engine's lock for `seconds` (GIL released).
    fn _hold_lock(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = args::seconds(Kind::Arg, "seconds", seconds, false)?;
        py.detach(|| self.with_engine(|e| e.hold_lock_for(d)))
    }

    /// Test hook: fail the next `count` calls at `kind` ("segment_create",
    /// "sync", "snapshot_write", "journal_write", "policies_write") with
    /// `errno`; -1 until cleared with 0.
    fn _inject_fault(&self, kind: &str, errno: i32, count: i64) -> PyResult<()> {
        let point = FaultPoint::parse(kind).ok_or_else(|| {
            PyValueError::new_err(format!(
                "fault kind {kind:?}: expected segment_create, sync, snapshot_write, journal_write or policies_write"
            ))
        })?;
        self.with_engine(|e| e.inject_fault(point, errno, count))
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine({:?}, durability={:?})",
            self.store().path().display().to_string(),
            self.store().durability().as_str()
        )
    }
}

/// What the constructor's options left out (or `None`) are: `Options::default()`
/// and the default lease, by option name. `tests/test_options_table.py`
/// compares them with the SDK's table of options (`ringq.config.QUEUE_OPTIONS`).
#[pyfunction]
fn _default_options(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let o = Options::default();
    let d = PyDict::new(py);
    d.set_item("capacity", o.capacity)?;
    d.set_item("durability", o.durability.as_str())?;
    d.set_item("fsync_interval", o.fsync_interval.as_secs_f64())?;
    d.set_item("max_attempts", o.max_attempts)?;
    d.set_item("lease", DEFAULT_LEASE.as_secs_f64())?;
    d.set_item("segment_size", o.segment_size)?;
    d.set_item("snapshot_every", o.snapshot_every)?;
    d.set_item("snapshot_interval", o.snapshot_interval.as_secs_f64())?;
    d.set_item("max_payload", o.max_payload)?;
    d.set_item("max_key", o.max_key)?;
    d.set_item("max_headers", o.max_headers)?;
    d.set_item("dlq_capacity", o.dlq_capacity)?;
    d.set_item("recycle_segments", o.recycle_segments)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_function(wrap_pyfunction!(_default_options, m)?)
}

/// `publish` and `publish_many` of a `ringq.Queue` on an engine, bound in
/// place of the queue's own (`Engine._fast_publishers`,
/// `ringq.backends.fast_publish`): a plain call skips the queue's Python
/// frame, about a quarter of its cost. A class of its own, named `Queue`,
/// so that an argument error names what the caller called (`Queue.publish()
/// got an unexpected keyword argument 'x'`), as the queue's own method
/// would, not an engine method.
#[pyclass(frozen, name = "Queue", module = "ringq._core")]
pub struct FastPublish {
    engine: Py<PyEngine>,
    /// The queue's own `publish` and `publish_many` (bound weakly by the
    /// queue): every call not taken here.
    fallbacks: [Py<PyAny>; 2],
}

#[pymethods]
impl FastPublish {
    /// Publish one message and return its id (`help(ringq.Queue.publish)`
    /// gives the options).
    //
    // A plain call (`bytes`, a `str` topic or none, no options) is
    // published here without a Python frame; any other call goes unchanged
    // to the queue's own `publish`, which encodes objects and merges
    // options. A plain call is exactly what that would send to the engine,
    // so results and errors are the same.
    #[pyo3(signature = (payload, topic=None, *, dedup_key=None, delay=None, headers=None, correlation_id=None,
        causation_id=None, on_duplicate=None, expected_version=None, block=None, timeout=None, priority=None,
        ordering_key=None, dedup_window=None),
        text_signature = "($self, payload, topic=None, **options)")]
    #[allow(clippy::too_many_arguments)]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        topic: Option<&Bound<'py, PyAny>>,
        dedup_key: Option<&Bound<'py, PyAny>>,
        delay: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyAny>>,
        correlation_id: Option<&Bound<'py, PyAny>>,
        causation_id: Option<&Bound<'py, PyAny>>,
        on_duplicate: Option<&Bound<'py, PyAny>>,
        expected_version: Option<&Bound<'py, PyAny>>,
        block: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        ordering_key: Option<&Bound<'py, PyAny>>,
        dedup_window: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Keyword parameters rather than **options: a call that names
        // `topic` then needs no dict (a quarter of the call's cost; a
        // `**rest` for unknown keywords would cost another dict per call;
        // PyO3 names this class and method in its error: `Queue.publish()`).
        let options = [
            ("dedup_key", dedup_key),
            ("delay", delay),
            ("headers", headers),
            ("correlation_id", correlation_id),
            ("causation_id", causation_id),
            ("on_duplicate", on_duplicate),
            ("expected_version", expected_version),
            ("block", block),
            ("timeout", timeout),
            ("priority", priority),
            ("ordering_key", ordering_key),
            ("dedup_window", dedup_window),
        ];
        // `priority` (an int) and `ordering_key` (a str) are taken here too;
        // anything else (another type: the fallback's error) goes there.
        let plain_int =
            |v: Option<&Bound<'py, PyAny>>| v.is_none_or(|v| v.is_none() || v.is_exact_instance_of::<PyInt>());
        let plain_str =
            |v: Option<&Bound<'py, PyAny>>| v.is_none_or(|v| v.is_none() || v.is_exact_instance_of::<PyString>());
        if options[..options.len() - 3].iter().all(|(_, v)| v.is_none())
            && dedup_window.is_none()
            && plain_int(priority)
            && plain_str(ordering_key)
            && let Ok(bytes) = payload.cast_exact::<PyBytes>()
            && let Some(topic) = plain_topic(topic)?
        {
            let key = ordering_key.filter(|k| !k.is_none()).map(|k| k.cast::<PyString>()).transpose()?;
            let p = Publish {
                topic,
                payload: bytes.as_bytes(),
                priority: super::types::priority_arg(priority)?,
                ordering_key: key.as_ref().map(|k| k.to_str()).transpose()?,
                ..Default::default()
            };
            return Ok(self.engine.get().publish_one(py, p, PublishOpts::default(), true, Wait::Forever)?.into_any());
        }
        let fallback = &self.fallbacks[0];
        let kwargs = PyDict::new(py);
        for (name, v) in options {
            if let Some(v) = v {
                kwargs.set_item(name, v)?;
            }
        }
        fallback.bind(py).call((payload, topic), Some(&kwargs))
    }

    /// Publish several messages atomically and return their ids
    /// (`help(ringq.Queue.publish_many)` gives the options).
    //
    // A list of `bytes` is published here, anything else (objects to
    // encode, `Message`s, an iterator) goes to the queue's own
    // `publish_many`.
    #[pyo3(signature = (payloads, topic=None, *, block=None, timeout=None, **unknown),
        text_signature = "($self, payloads, topic=None, *, block=True, timeout=None)")]
    fn publish_many<'py>(
        &self,
        py: Python<'py>,
        payloads: &Bound<'py, PyAny>,
        topic: Option<&Bound<'py, PyAny>>,
        block: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
        unknown: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let (Some(t), Ok(list)) = (plain_topic(topic)?, payloads.cast_exact::<PyList>())
            && unknown.is_none_or(|u| u.is_empty())
            && let Some(items) = exact_bytes(list)
        {
            // One pass over the list: the items are held (the GIL may be
            // released while the engine waits, and the list changed meanwhile).
            let block = block_flag(block)?;
            let wait = args::timeout(timeout)?;
            let payloads: Vec<&[u8]> = items.iter().map(|b| b.as_bytes()).collect();
            let e = self.engine.get();
            let (ids, lsn) = e.with_room(py, block, wait, |w| e.store().publish_payloads(t, &payloads, w))?;
            e.durable(py, lsn)?;
            return Ok(id_list(py, &ids)?.into_any());
        }
        if let Some((name, _)) = unknown.and_then(|u| u.iter().next()) {
            // What the queue's method would raise, naming what was called.
            return Err(PyTypeError::new_err(format!(
                "Queue.publish_many() got an unexpected keyword argument '{name}'"
            )));
        }
        let kwargs = PyDict::new(py);
        for (name, v) in [("block", block), ("timeout", timeout)] {
            if let Some(v) = v {
                kwargs.set_item(name, v)?;
            }
        }
        self.fallbacks[1].bind(py).call((payloads, topic), Some(&kwargs))
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.engine)?;
        for f in &self.fallbacks {
            visit.call(f)?;
        }
        Ok(())
    }
}

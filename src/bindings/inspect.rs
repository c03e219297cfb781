//! `ringq._core.inspect / peek / dead_letters(path, ...)`: read-only views
//! of a queue directory (no lock taken, nothing changed).

use super::errors::to_py;
use super::types::PyDeadLetter;
use crate::types::MsgState;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::path::PathBuf;

/// Reads a queue directory without taking its lock or changing it; returns
/// a dict. Raises `CorruptionError` (with path and offset) on damage.
#[pyfunction]
fn inspect(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let i = py.detach(|| crate::inspect::inspect(&path)).map_err(to_py)?;
    let d = PyDict::new(py);
    let s = |p: &std::path::Path| p.display().to_string();
    d.set_item("path", s(&i.path))?;
    d.set_item("owner_pid", i.owner_pid)?;
    d.set_item("epoch", i.epoch)?;
    d.set_item("instance_id", crate::error::fmt_id(i.instance_id))?;
    d.set_item("dropped_records", i.dropped_records)?;
    d.set_item("slot_limit", i.slot_limit)?;
    d.set_item("snapshot_path", i.snapshot_path.as_deref().map(s))?;
    d.set_item("snapshot_lsn", i.snapshot_lsn)?;
    d.set_item("last_lsn", i.last_lsn)?;
    d.set_item("records_replayed", i.records_replayed)?;
    d.set_item("segments", i.segments.iter().map(|p| s(p)).collect::<Vec<_>>())?;
    d.set_item("torn_tail_bytes", i.torn_tail_bytes)?;
    d.set_item("torn_tail_at", i.torn_tail_at.as_ref().map(|(p, o)| (s(p), *o)))?;
    let topics = PyList::empty(py);
    let (mut ready, mut in_flight, mut delayed) = (0, 0, 0);
    for t in &i.topics {
        let td = PyDict::new(py);
        td.set_item("name", &t.name)?;
        td.set_item("ready", t.ready)?;
        td.set_item("in_flight", t.in_flight)?;
        td.set_item("delayed", t.delayed)?;
        topics.append(td)?;
        (ready, in_flight, delayed) = (ready + t.ready, in_flight + t.in_flight, delayed + t.delayed);
    }
    d.set_item("topics", topics)?;
    d.set_item("ready", ready)?;
    d.set_item("in_flight", in_flight)?;
    d.set_item("delayed", delayed)?;
    d.set_item("dead", i.dead)?;
    d.set_item("dedup_keys", i.dedup_keys)?;
    d.set_item("seconds", i.seconds)?;
    Ok(d)
}

/// Up to `limit` messages of `topic` (ready in delivery order, then delayed
/// and in flight), read-only, as dicts.
#[pyfunction]
#[pyo3(signature = (path, topic, limit=10))]
fn peek<'py>(py: Python<'py>, path: PathBuf, topic: &str, limit: usize) -> PyResult<Bound<'py, PyList>> {
    let msgs = py.detach(|| crate::inspect::peek(&path, topic, limit)).map_err(to_py)?;
    let out = PyList::empty(py);
    for m in msgs {
        let d = PyDict::new(py);
        d.set_item("id", crate::error::fmt_id(m.id))?;
        d.set_item("topic", topic)?;
        let state = match m.state {
            MsgState::Ready => "ready",
            MsgState::Delayed => "delayed",
            MsgState::InFlight => "in_flight",
        };
        d.set_item("state", state)?;
        d.set_item("attempt", m.attempt)?;
        d.set_item("version", m.version)?;
        d.set_item("dedup_key", m.dedup_key())?;
        d.set_item("priority", m.priority())?;
        d.set_item("ordering_key", m.ordering_key())?;
        d.set_item("enqueued_at", m.enqueued_at as f64 / 1e6)?;
        d.set_item("payload", PyBytes::new(py, &m.payload))?;
        out.append(d)?;
    }
    Ok(out)
}

/// Up to `limit` dead letters, oldest first, read-only.
#[pyfunction]
#[pyo3(signature = (path, limit=None))]
fn dead_letters(py: Python<'_>, path: PathBuf, limit: Option<usize>) -> PyResult<Vec<PyDeadLetter>> {
    let dls = py.detach(|| crate::inspect::dead_letters(&path, limit.unwrap_or(usize::MAX))).map_err(to_py)?;
    Ok(dls.into_iter().map(PyDeadLetter::new).collect())
}

/// Repairs `path` (see `ringq::repair`): `{"changes": [...], "last_lsn",
/// "instance_id"}`. Takes the directory's lock (`QueueLocked` if owned).
#[pyfunction]
fn repair(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let r = py.detach(|| crate::repair::repair(&path)).map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("changes", r.changes)?;
    d.set_item("last_lsn", r.last_lsn)?;
    d.set_item("instance_id", crate::error::fmt_id(r.instance_id))?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(peek, m)?)?;
    m.add_function(wrap_pyfunction!(dead_letters, m)?)?;
    m.add_function(wrap_pyfunction!(repair, m)?)
}

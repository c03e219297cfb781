//! The exception hierarchy (rooted at `ringq.RingqError`) and the one
//! conversion from `crate::Error` to `PyErr`. Classes with two bases
//! (`LimitExceeded` is also a `ValueError`, `StorageError` an `OSError`) are
//! made with `type(...)`, which `create_exception!` cannot do.

use crate::error::{Error, fmt_id};
use pyo3::exceptions::{PyException, PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

struct Classes {
    base: Py<PyType>,
    locked: Py<PyType>,
    full: Py<PyType>,
    closed: Py<PyType>,
    forked: Py<PyType>,
    lease_lost: Py<PyType>,
    foreign: Py<PyType>,
    version_conflict: Py<PyType>,
    limit: Py<PyType>,
    config: Py<PyType>,
    corruption: Py<PyType>,
    storage: Py<PyType>,
    not_found: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn make<'py>(py: Python<'py>, name: &str, bases: &[&Bound<'py, PyType>], doc: &str) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "ringq")?;
    ns.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let t = py.import("builtins")?.getattr("type")?.call1((name, bases, ns))?;
    Ok(t.cast_into::<PyType>()?.unbind())
}

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let exc = py.get_type::<PyException>();
        let base = make(py, "RingqError", &[&exc], "Root of every error ringq raises.")?;
        let b = base.bind(py).clone();
        let val = py.get_type::<PyValueError>();
        let os = py.get_type::<PyOSError>();
        let key = py.get_type::<PyKeyError>();
        let closed = make(py, "QueueClosed", &[&b], "The queue was closed.")?;
        let lease_lost = make(py, "LeaseLost", &[&b], "A stale lease token: the message expired (see .ids).")?;
        Ok::<_, PyErr>(Classes {
            locked: make(py, "QueueLocked", &[&b], "Another process owns the queue directory (see .pid).")?,
            full: make(py, "QueueFull", &[&b], "The queue holds `capacity` messages.")?,
            forked: make(
                py,
                "QueueForked",
                &[closed.bind(py)],
                "A queue opened before fork() used in the child: open it in the child instead (.pid: the opener).",
            )?,
            foreign: make(
                py,
                "ForeignDelivery",
                &[lease_lost.bind(py)],
                "A delivery of another queue (or of an earlier queue at this path): nothing was changed.",
            )?,
            closed,
            lease_lost,
            version_conflict: make(
                py,
                "VersionConflict",
                &[&b],
                "expected_version did not match (.expected, .actual).",
            )?,
            limit: make(py, "LimitExceeded", &[&b, &val], "A payload, key, topic or headers over its limit.")?,
            config: make(py, "ConfigError", &[&b, &val], "An option has an invalid value.")?,
            corruption: make(py, "CorruptionError", &[&b], "A damaged file (see .path and .offset).")?,
            storage: make(py, "StorageError", &[&b, &os], "A write, fsync or file creation failed.")?,
            not_found: make(py, "NotFound", &[&b, &key], "No message or dead letter with that id.")?,
            base,
        })
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let c = classes(m.py())?;
    for t in [
        &c.base,
        &c.locked,
        &c.full,
        &c.closed,
        &c.forked,
        &c.lease_lost,
        &c.foreign,
        &c.version_conflict,
        &c.limit,
        &c.config,
        &c.corruption,
        &c.storage,
        &c.not_found,
    ] {
        let t = t.bind(m.py());
        m.add(t.name()?, t)?;
    }
    Ok(())
}

/// Builds the exception instance with its attributes.
fn build(py: Python<'_>, e: Error) -> PyResult<PyErr> {
    let c = classes(py)?;
    let msg = e.to_string();
    let inst = match e {
        Error::Locked { path, pid } => {
            let x = c.locked.bind(py).call1((msg,))?;
            x.setattr("pid", pid)?;
            x.setattr("path", path.display().to_string())?;
            x
        }
        Error::Full { .. } => c.full.bind(py).call1((msg,))?,
        Error::Closed => c.closed.bind(py).call1((msg,))?,
        Error::Forked { pid, .. } => {
            let x = c.forked.bind(py).call1((msg,))?;
            x.setattr("pid", pid)?;
            x
        }
        Error::Foreign { id, .. } => {
            let x = c.foreign.bind(py).call1((msg,))?;
            x.setattr("ids", vec![fmt_id(id)])?;
            x
        }
        Error::LeaseLost { ids } => {
            let x = c.lease_lost.bind(py).call1((msg,))?;
            x.setattr("ids", ids.iter().map(|i| fmt_id(*i)).collect::<Vec<_>>())?;
            x
        }
        Error::VersionConflict { expected, actual, .. } => {
            let x = c.version_conflict.bind(py).call1((msg,))?;
            x.setattr("expected", expected)?;
            x.setattr("actual", actual)?;
            x
        }
        Error::Limit { .. } => c.limit.bind(py).call1((msg,))?,
        Error::Config(_) => c.config.bind(py).call1((msg,))?,
        Error::Invalid(_) => return Ok(PyValueError::new_err(msg)),
        Error::Corruption { path, offset, .. } => {
            let x = c.corruption.bind(py).call1((msg,))?;
            x.setattr("path", path.display().to_string())?;
            x.setattr("offset", offset)?;
            x
        }
        Error::Storage { ref source, ref path, .. } => {
            let errno = source.raw_os_error().unwrap_or(libc::EIO);
            let x = c.storage.bind(py).call1((errno, msg.clone()))?;
            x.setattr("filename", path.display().to_string())?;
            x
        }
        Error::NotFound(_) => c.not_found.bind(py).call1((msg,))?,
    };
    Ok(PyErr::from_value(inst))
}

/// The one conversion from engine errors to Python exceptions.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| build(py, e).unwrap_or_else(|err| err))
}

pub fn config_err(msg: String) -> PyErr {
    to_py(Error::Config(msg))
}

//! The one conversion from `crate::Error` to `PyErr`. The exception classes
//! are Python's (`ringq.errors`, shared by every backend); this module
//! raises them with their attributes (`.pid`, `.ids`, `.path`, ...).

use crate::error::{Error, fmt_id};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

struct Classes {
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
    owner_gone: Py<PyType>,
    would_block: Py<PyType>,
    submitted: Py<PyType>,
    base: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// The classes of `ringq.errors` (imported once, on the first error).
fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let m = py.import("ringq.errors")?;
        let get = |name: &str| -> PyResult<Py<PyType>> { Ok(m.getattr(name)?.cast_into::<PyType>()?.unbind()) };
        Ok::<_, PyErr>(Classes {
            locked: get("QueueLocked")?,
            full: get("QueueFull")?,
            closed: get("QueueClosed")?,
            forked: get("QueueForked")?,
            lease_lost: get("LeaseLost")?,
            foreign: get("ForeignDelivery")?,
            version_conflict: get("VersionConflict")?,
            limit: get("LimitExceeded")?,
            config: get("ConfigError")?,
            corruption: get("CorruptionError")?,
            storage: get("StorageError")?,
            not_found: get("NotFound")?,
            owner_gone: get("OwnerGone")?,
            would_block: get("WouldBlock")?,
            submitted: get("Submitted")?,
            base: get("RingqError")?,
        })
    })
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
        Error::Full { capacity, need, .. } => {
            let x = c.full.bind(py).call1((msg,))?;
            x.setattr("capacity", capacity)?;
            x.setattr("need", need)?;
            x
        }
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
        Error::OwnerGone(_) => c.owner_gone.bind(py).call1((msg,))?,
        Error::WouldBlock => c.would_block.bind(py).call1((msg,))?,
        Error::Submitted(id) => c.submitted.bind(py).call1((id,))?,
        Error::Protocol(_) => c.base.bind(py).call1((msg,))?,
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

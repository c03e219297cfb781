//! Python values to engine values and back: leases of deliveries (checked
//! to belong to this queue), ids, headers.

use super::errors::to_py;
use super::types::PyDelivery;
use crate::error::Error;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

pub fn parse_id(id: &str) -> PyResult<u64> {
    if id.len() == 16
        && let Ok(v) = u64::from_str_radix(id, 16)
    {
        return Ok(v);
    }
    Err(to_py(Error::NotFound(format!("{id:?} (ids are 16 hex digits)"))))
}

pub fn headers_vec(h: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let Some(h) = h else { return Ok(Vec::new()) };
    h.iter().map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<String>()?))).collect()
}

/// The (id, token) of a delivery of the queue with instance id `queue`;
/// a delivery of another queue (or of an earlier queue at this path) is
/// refused before anything changes.
fn lease(d: &PyDelivery, queue: u64) -> PyResult<(u64, u64)> {
    if d.queue != queue {
        return Err(to_py(Error::Foreign { id: d.id, delivery_queue: d.queue, this_queue: queue }));
    }
    Ok((d.id, d.lease_token))
}

/// The (id, token) pairs of one delivery or an iterable of them.
pub fn leases(deliveries: &Bound<'_, PyAny>, queue: u64, what: &str) -> PyResult<Vec<(u64, u64)>> {
    if let Ok(d) = deliveries.cast::<PyDelivery>() {
        return Ok(vec![lease(d.get(), queue)?]);
    }
    let one = |item: &Bound<'_, PyAny>| -> PyResult<(u64, u64)> {
        let d =
            item.cast::<PyDelivery>().map_err(|_| PyValueError::new_err(format!("{what}() takes Delivery objects")))?;
        lease(d.get(), queue)
    };
    if let Ok(list) = deliveries.cast::<PyList>() {
        return list.iter().map(|item| one(&item)).collect();
    }
    deliveries.try_iter()?.map(|item| one(&item?)).collect()
}

pub fn lease_of(d: &Bound<'_, PyAny>, queue: u64) -> PyResult<(u64, u64)> {
    let d = d.cast::<PyDelivery>().map_err(|_| PyValueError::new_err("expected a Delivery"))?;
    lease(d.get(), queue)
}

pub fn id_str(py: Python<'_>, id: u64) -> Bound<'_, PyString> {
    PyString::new(py, crate::error::hex_id(id).as_str())
}

pub fn id_list<'py>(py: Python<'py>, ids: &[u64]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, ids.iter().map(|id| id_str(py, *id)))
}

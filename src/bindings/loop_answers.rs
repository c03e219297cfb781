//! The answers of a shared queue's owner to a client for an event loop
//! (`Engine._loop_pump`), as the blocking calls would have returned them:
//! each request's body is read by its operation.

use super::convert::{id_list, id_str};
use super::errors::to_py;
use super::pyengine::{histograms_dict, stats_dict, topic_stats_dict};
use super::types::PyDeadLetter;
use crate::error::Error;
use crate::shared::client::parse;
use crate::shared::wire::{self, op};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// The value of answer `body` to a request of operation `code` on the
/// queue `queue`, or the exception its call raises (`LeaseLost` for an ack
/// or release with stale leases).
pub fn value(py: Python<'_>, code: u8, body: &[u8], queue: u64) -> PyResult<Py<PyAny>> {
    let none = || Ok(py.None());
    let r = |e: Error| to_py(e);
    match code {
        op::PUBLISH => Ok(id_str(py, parse(body, |r| r.u64()).map_err(r)?).into_any().unbind()),
        op::PUBLISH_MANY => Ok(id_list(py, &parse(body, wire::get_ids).map_err(r)?)?.into_any().unbind()),
        op::CHECKOUT => {
            let got = parse(body, wire::get_deliveries).map_err(r)?;
            Ok(super::types::delivery_list(py, got, queue)?.into_any().unbind())
        }
        op::ACK | op::RELEASE => {
            let lost = parse(body, wire::get_ids).map_err(r)?;
            if lost.is_empty() { none() } else { Err(to_py(Error::LeaseLost { ids: lost })) }
        }
        op::NACK | op::INTERRUPT | op::SET_TOPIC_POLICY | op::CANCEL => none(),
        op::EXTEND => {
            let micros = parse(body, |r| r.u64()).map_err(r)?;
            Ok((micros as f64 / 1e6).into_pyobject(py)?.into_any().unbind())
        }
        op::INTERRUPTS | op::SNAPSHOT => {
            Ok(parse(body, |r| r.u64()).map_err(r)?.into_pyobject(py)?.into_any().unbind())
        }
        op::DLQ_REPLAY | op::DLQ_PURGE => {
            Ok((parse(body, |r| r.u64()).map_err(r)? as usize).into_pyobject(py)?.into_any().unbind())
        }
        op::IS_SUPERSEDED => {
            let flag = parse(body, wire::get_flag).map_err(r)?;
            Ok(flag.into_pyobject(py)?.to_owned().into_any().unbind())
        }
        op::STATS => {
            let mut stats = parse(body, wire::get_stats).map_err(r)?;
            stats.retain(|(k, _)| k != "shared_role" && k != "shared_clients");
            stats.push(("shared_role".into(), crate::engine::Stat::Text("client".into())));
            Ok(stats_dict(py, stats)?.into_any().unbind())
        }
        op::HISTOGRAMS => Ok(histograms_dict(py, parse(body, wire::get_histograms).map_err(r)?)?.into_any().unbind()),
        op::TOPIC_STATS => {
            Ok(topic_stats_dict(py, parse(body, wire::get_topic_stats).map_err(r)?)?.into_any().unbind())
        }
        op::DLQ_LIST => {
            let list = PyList::empty(py);
            for d in parse(body, wire::get_dead_letters).map_err(r)? {
                list.append(Py::new(py, PyDeadLetter::new(d))?)?;
            }
            Ok(list.into_any().unbind())
        }
        op::DLQ_GET => Ok(Py::new(py, PyDeadLetter::new(parse(body, wire::get_dead_letter).map_err(r)?))?.into_any()),
        other => Err(to_py(Error::Protocol(format!("an answer to unknown request code {other}")))),
    }
}

//! Every number a Python caller hands the engine is checked here, once, with
//! one message shape, before anything else happens:
//!
//! - a value out of range: `ValueError` (`ConfigError` for queue options)
//!   `"{name}={value!r} (must be {range})"`, the shape `ringq.config` uses
//!   for options from mappings, the environment and TOML;
//! - a value of the wrong type (a `bool` where a number goes, a `str`, ...):
//!   `TypeError` `"{name} must be {range}, not {type}"`.
//!
//! NaN, infinities, negative, huge and fractional counts all end here, so
//! nothing reaches the engine that could make it panic or wait forever by
//! accident.

use super::errors::config_err;
use crate::types::Wait;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt};
use std::time::{Duration, Instant};

/// The longest duration accepted anywhere: 365 days (`ringq.retry.MAX_SECONDS`).
pub const MAX_SECONDS: f64 = 31_536_000.0;
const SECONDS_RANGE: &str = "a number of seconds in 0..=31536000";
const POSITIVE_RANGE: &str = "a number of seconds > 0 and <= 31536000";

/// Which exception a bad value raises.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An argument of a call: `ValueError`.
    Arg,
    /// A queue option: `ConfigError` (also a `ValueError`).
    Option,
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn repr(v: &Bound<'_, PyAny>) -> String {
    v.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string())
}

fn out_of_range(kind: Kind, name: &str, v: &Bound<'_, PyAny>, range: &str) -> PyErr {
    let msg = format!("{name}={} (must be {range})", repr(v));
    match kind {
        Kind::Arg => PyValueError::new_err(msg),
        Kind::Option => config_err(msg),
    }
}

fn wrong_type(name: &str, v: &Bound<'_, PyAny>, range: &str) -> PyErr {
    PyTypeError::new_err(format!("{name} must be {range}, not {}", type_name(v)))
}

/// A number (int or float, not bool) as f64.
fn number(name: &str, v: &Bound<'_, PyAny>, range: &str) -> PyResult<f64> {
    if v.is_instance_of::<PyBool>() || !(v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>()) {
        return Err(wrong_type(name, v, range));
    }
    // A huge int becomes a huge float (or inf): the range check catches it.
    Ok(v.extract::<f64>().unwrap_or(f64::INFINITY))
}

/// A duration in `0..=MAX_SECONDS` (`positive`: above 0).
pub fn seconds(kind: Kind, name: &str, v: &Bound<'_, PyAny>, positive: bool) -> PyResult<Duration> {
    checked_seconds(kind, name, v, positive, "")
}

fn checked_seconds(kind: Kind, name: &str, v: &Bound<'_, PyAny>, positive: bool, or: &str) -> PyResult<Duration> {
    let range = format!("{or}{}", if positive { POSITIVE_RANGE } else { SECONDS_RANGE });
    let s = number(name, v, &range)?;
    let ok = s.is_finite() && s <= MAX_SECONDS && if positive { s > 0.0 } else { s >= 0.0 };
    if !ok {
        return Err(out_of_range(kind, name, v, &range));
    }
    Ok(Duration::from_secs_f64(s))
}

/// `None` or a duration (see [`seconds`]).
pub fn opt_seconds(name: &str, v: Option<&Bound<'_, PyAny>>, positive: bool) -> PyResult<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => checked_seconds(Kind::Arg, name, v, positive, "None or ").map(Some),
    }
}

/// A `timeout` argument: `None` waits as long as it takes, 0 never waits.
pub fn timeout(v: Option<&Bound<'_, PyAny>>) -> PyResult<Wait> {
    Ok(match opt_seconds("timeout", v, false)? {
        None => Wait::Forever,
        Some(d) if d.is_zero() => Wait::No,
        Some(d) => Instant::now().checked_add(d).map_or(Wait::Forever, Wait::Until),
    })
}

/// An int (not bool, not float) in `lo..=hi`.
pub fn int(kind: Kind, name: &str, v: &Bound<'_, PyAny>, lo: i64, hi: i64) -> PyResult<i64> {
    checked_int(kind, name, v, lo, hi, "")
}

fn checked_int(kind: Kind, name: &str, v: &Bound<'_, PyAny>, lo: i64, hi: i64, or: &str) -> PyResult<i64> {
    // Spelled out only for an error: a valid argument costs no allocation.
    let range = || if hi == i64::MAX { format!("{or}an int >= {lo}") } else { format!("{or}an int in {lo}..={hi}") };
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(wrong_type(name, v, &range()));
    }
    match v.extract::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(out_of_range(kind, name, v, &range())),
    }
}

/// `None` or an int in `lo..=hi`.
pub fn opt_int(name: &str, v: Option<&Bound<'_, PyAny>>, lo: i64, hi: i64) -> PyResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => checked_int(Kind::Arg, name, v, lo, hi, "None or ").map(Some),
    }
}

/// A `bool` (not an int or anything truthy: `block=0` is a mistake).
pub fn flag(name: &str, v: &Bound<'_, PyAny>) -> PyResult<bool> {
    if !v.is_instance_of::<PyBool>() {
        return Err(wrong_type(name, v, "True or False"));
    }
    v.is_truthy()
}

//! The Python module `ringq._core`. The only place PyO3 is used: the engine
//! knows nothing of Python. Calls that cannot block run with the GIL held;
//! a call that must wait (for a message, for room, for fsync) first tries
//! without waiting and only then releases the GIL (`Python::detach`); a
//! call that finds the engine's lock taken gives up at once, unchanged, and
//! runs again without the GIL (`crate::blocking`).

mod args;
mod convert;
mod errors;
mod inspect;
mod loop_answers;
mod pyengine;
mod types;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FORMAT_VERSION", crate::journal::FORMAT_VERSION)?;
    types::register(m)?;
    pyengine::register(m)?;
    inspect::register(m)?;
    Ok(())
}

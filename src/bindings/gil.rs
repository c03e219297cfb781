//! The blocking hook ([`crate::blocking`]) for Python: a thread that holds
//! the GIL lets it go while it waits for the engine's lock.

use pyo3::ffi;

/// Gives the GIL back to the thread that released it, even if the wait
/// unwinds.
struct Reacquire(*mut ffi::PyThreadState);

impl Drop for Reacquire {
    fn drop(&mut self) {
        // SAFETY: `self.0` is what `PyEval_SaveThread` returned on this
        // thread, which has not taken the GIL back since.
        unsafe { ffi::PyEval_RestoreThread(self.0) };
    }
}

fn release_gil_while(f: &mut dyn FnMut()) {
    // SAFETY: `PyGILState_Check` only reads this thread's state. When it
    // says this thread holds the GIL, `PyEval_SaveThread` releases it and
    // `Reacquire` restores it; `f` (the engine waiting for its lock) touches
    // no Python object meanwhile.
    unsafe {
        if ffi::Py_IsInitialized() == 0 || ffi::PyGILState_Check() == 0 {
            return f();
        }
        let _back = Reacquire(ffi::PyEval_SaveThread());
        f();
    }
}

pub fn install() {
    crate::blocking::set_hook(release_gil_while);
}

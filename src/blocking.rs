//! What a caller does while it waits for the engine's lock.
//!
//! The Python bindings run short engine calls without releasing the GIL
//! (releasing and taking it back costs more than most calls). If the
//! engine's lock turns out to be held (by a snapshot, a page fault on the
//! journal's mapping, another thread's call), waiting for it with the GIL
//! held would stall every Python thread of the process for as long: an
//! event loop, a web server's health check. So the engine takes its lock
//! with [`wait`]: a lock free now is taken at once; otherwise the hook the
//! bindings installed releases the GIL around the wait.

use std::sync::OnceLock;

/// Runs the closure it is given (which blocks) the way the embedding wants:
/// the bindings release the GIL around it if this thread holds it.
pub type Hook = fn(&mut dyn FnMut());

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs `hook` for every later wait (the first hook installed stays).
pub fn set_hook(hook: Hook) {
    let _ = HOOK.set(hook);
}

/// Runs `f`, which may block, through the installed hook.
pub fn wait<T>(f: impl FnOnce() -> T) -> T {
    let Some(hook) = HOOK.get() else { return f() };
    let mut f = Some(f);
    let mut out = None;
    hook(&mut || {
        if let Some(f) = f.take() {
            out = Some(f());
        }
    });
    out.expect("the blocking hook runs the call it is given")
}

/// Takes `m`: at once if it is free, else waiting through the hook.
pub fn lock<T>(m: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    match m.try_lock() {
        Some(g) => g,
        None => wait(|| m.lock()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static WAITS: AtomicUsize = AtomicUsize::new(0);

    fn counting(f: &mut dyn FnMut()) {
        WAITS.fetch_add(1, Ordering::SeqCst);
        f();
    }

    #[test]
    fn a_free_lock_is_taken_at_once_and_a_held_one_through_the_hook() {
        set_hook(counting);
        let m = std::sync::Arc::new(parking_lot::Mutex::new(0));
        let before = WAITS.load(Ordering::SeqCst);
        *lock(&m) += 1;
        // Other tests of this binary may wait meanwhile: only "no fewer" holds.
        let g = m.lock();
        let m2 = std::sync::Arc::clone(&m);
        let t = std::thread::spawn(move || *lock(&m2) += 1);
        // The spawned call is in the hook (its try_lock failed) before the
        // lock is let go.
        while WAITS.load(Ordering::SeqCst) == before {
            std::thread::yield_now();
        }
        drop(g);
        t.join().unwrap();
        assert_eq!(*m.lock(), 2);
    }
}

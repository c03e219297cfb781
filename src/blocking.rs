//! Calls that must not wait for the engine while they hold something.
//!
//! The Python bindings run short engine calls without releasing the GIL
//! (releasing and taking it back costs more than most calls). If such a
//! call waited for the engine's lock (held by a snapshot, another call's
//! journal roll, a page fault on the journal's mapping, another thread or
//! another process's request), every Python thread of the process would
//! stall with it: an event loop, a web server's health check. So the
//! bindings run it under [`try_first`]: the call's first take of the
//! engine's lock ([`lock`]) waits only briefly, and a lock that stays taken (or a
//! failed fsync the call would first heal) ends the call with
//! [`Error::WouldBlock`] before it changed anything. The bindings then run
//! it again with the GIL released. Everyone else (Rust callers, the owner's
//! socket threads, the engine's own threads, the second try) simply waits.
//! A call that rolls the journal itself (its record does not fit the active
//! segment and no spare is ready) still does that work with the GIL held.
//!
//! The rule this rests on: an engine call changes nothing before its first
//! take of the lock (`engine::try_first_tests` checks every call the
//! bindings make).

use crate::error::{Error, Result};
use parking_lot::{Mutex, MutexGuard};
use std::cell::Cell;

thread_local! {
    /// Inside `try_first`, before the call's first take of the lock.
    static TRYING: Cell<bool> = const { Cell::new(false) };
}

/// Puts `TRYING` back as it was when the call ends, even by unwinding.
struct Done(bool);

impl Drop for Done {
    fn drop(&mut self) {
        TRYING.with(|t| t.set(self.0));
    }
}

/// Runs `f` (an engine call) so that it gives up with `WouldBlock`, having
/// changed nothing, instead of waiting for the engine's lock.
pub fn try_first<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _done = Done(TRYING.with(|t| t.replace(true)));
    f()
}

/// How long the first take under [`try_first`] waits for the lock: about
/// what another thread's short call holds it (a checkout or an ack of a few
/// hundred messages), a thousandth of the interpreter's switch interval. A
/// caller that waited this long keeps the GIL and goes on; giving it up
/// instead would hand the interpreter to whichever thread waits for it (a
/// consumer woken by this very publish) at every collision: in a producer
/// and consumer pair, several times more switches and batches a third the
/// size (paired: 7% less throughput).
const BRIEF: std::time::Duration = std::time::Duration::from_micros(20);

/// Takes `m`, the engine's lock: waits for it, except as the first take of
/// a call under [`try_first`], which waits only [`BRIEF`]ly. A call takes the
/// lock before it changes anything, so giving up there leaves everything as
/// it was.
pub fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    if TRYING.with(|t| t.replace(false)) {
        return m.try_lock_for(BRIEF).ok_or(Error::WouldBlock);
    }
    Ok(m.lock())
}

/// Whether this thread is inside [`try_first`] and has not taken the lock yet.
pub fn trying() -> bool {
    TRYING.with(|t| t.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_take_under_try_first_gives_up() {
        let m = std::sync::Arc::new(Mutex::new(0));
        // Free: taken at once, and later takes of the same call wait as usual.
        let got = try_first(|| {
            *lock(&m)? += 1;
            assert!(!trying());
            *lock(&m)? += 1;
            Ok(())
        });
        assert!(got.is_ok());
        // Held elsewhere: gives up, changing nothing.
        let held = m.lock();
        assert!(matches!(try_first(|| lock(&m).map(|_| ())), Err(Error::WouldBlock)));
        drop(held);
        assert!(!trying(), "cleared after the call");
        assert_eq!(*lock(&m).unwrap(), 2);
    }
}

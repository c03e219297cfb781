//! Wake-ups for callers that must not block: an asyncio event loop
//! (`ringq.AsyncQueue`). Such a caller makes every call without waiting
//! (a checkout that finds nothing, a publish that finds the queue full,
//! a write not yet on disk) and then waits in its loop for this engine to
//! say something changed, through an eventfd the loop watches.
//!
//! The protocol, race-free because arming comes before the last try:
//! 1. the caller arms what it waits for ([`AsyncWake::arm`]; for a topic,
//!    also [`super::Engine::arm_topic`], under the engine's lock);
//! 2. it tries once more (the change may have come before it armed);
//! 3. only then does it wait for the eventfd.
//!
//! The engine signals a kind ([`READY`], [`ROOM`], [`DURABLE`], [`CLOSED`])
//! wherever its own threads' condvars are notified for it; a signal writes
//! the eventfd only if that kind is armed, and disarms it, so an idle
//! caller costs the engine one atomic load per event. Wake-ups may be
//! spurious (the caller tries again and re-arms); none is lost.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// A message became ready on an armed topic.
pub const READY: u32 = 1;
/// Capacity was freed.
pub const ROOM: u32 = 2;
/// The journal was made durable further (an fsync round ended, or failed).
pub const DURABLE: u32 = 4;
/// The queue was closed.
pub const CLOSED: u32 = 8;
const ALL: u32 = READY | ROOM | DURABLE | CLOSED;

/// One caller's eventfd and what it is waiting for.
pub struct AsyncWake {
    fd: OwnedFd,
    armed: AtomicU32,
    pending: AtomicU32,
}

impl AsyncWake {
    pub fn new() -> std::io::Result<Arc<AsyncWake>> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(AsyncWake { fd, armed: AtomicU32::new(0), pending: AtomicU32::new(0) }))
    }

    /// The eventfd: readable once a signal came.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Asks for a signal of `kinds` (bits).
    pub fn arm(&self, kinds: u32) {
        self.armed.fetch_or(kinds & ALL, Ordering::SeqCst);
    }

    /// What was signalled since the last call (bits), emptying the eventfd.
    pub fn take(&self) -> u32 {
        let mut buf = 0u64;
        // SAFETY: reads 8 bytes into `buf`; EAGAIN (nothing signalled) is fine.
        let _ = unsafe { libc::read(self.fd(), (&raw mut buf).cast(), 8) };
        self.pending.swap(0, Ordering::SeqCst)
    }

    /// Signals `kind` if it is armed (and disarms it).
    pub fn signal(&self, kind: u32) {
        if self.armed.load(Ordering::SeqCst) & kind == 0 {
            return;
        }
        if self.armed.fetch_and(!kind, Ordering::SeqCst) & kind == 0 {
            return;
        }
        self.pending.fetch_or(kind, Ordering::SeqCst);
        let one = 1u64;
        // SAFETY: writes 8 bytes; a full counter (EAGAIN) still leaves the fd readable.
        let _ = unsafe { libc::write(self.fd(), (&raw const one).cast(), 8) };
    }
}

impl AsyncWake {
    /// The queue closed: signalled whatever is armed.
    fn closed(&self) {
        self.pending.fetch_or(CLOSED, Ordering::SeqCst);
        let one = 1u64;
        // SAFETY: as in `signal`.
        let _ = unsafe { libc::write(self.fd(), (&raw const one).cast(), 8) };
    }
}

/// The wakes registered with an engine.
#[derive(Default)]
pub(crate) struct Wakes {
    any: AtomicBool,
    list: parking_lot::RwLock<Vec<Arc<AsyncWake>>>,
}

impl Wakes {
    pub fn register(&self, w: Arc<AsyncWake>) {
        let mut list = self.list.write();
        list.push(w);
        self.any.store(true, Ordering::SeqCst);
    }

    pub fn unregister(&self, w: &Arc<AsyncWake>) {
        let mut list = self.list.write();
        list.retain(|x| !Arc::ptr_eq(x, w));
        self.any.store(!list.is_empty(), Ordering::SeqCst);
    }

    /// The queue closed: every registered wake is signalled.
    pub fn closed(&self) {
        for w in self.list.read().iter() {
            w.closed();
        }
    }

    /// Signals `kind` to every registered wake that armed it.
    pub fn signal(&self, kind: u32) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        for w in self.list.read().iter() {
            w.signal(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(w: &AsyncWake) -> bool {
        let mut p = libc::pollfd { fd: w.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn only_armed_kinds_are_signalled_once_each() {
        let w = AsyncWake::new().unwrap();
        w.signal(READY);
        assert!(!readable(&w), "not armed: no signal");
        w.arm(READY | DURABLE);
        w.signal(ROOM);
        assert!(!readable(&w));
        w.signal(READY);
        w.signal(READY);
        assert!(readable(&w));
        assert_eq!(w.take(), READY);
        assert!(!readable(&w));
        w.signal(READY);
        assert!(!readable(&w), "disarmed by the first signal");
        w.signal(DURABLE);
        assert_eq!(w.take(), DURABLE);
        assert_eq!(w.take(), 0);
    }

    #[test]
    fn registered_wakes_all_get_the_signal() {
        let wakes = Wakes::default();
        let (a, b) = (AsyncWake::new().unwrap(), AsyncWake::new().unwrap());
        wakes.register(a.clone());
        wakes.register(b.clone());
        a.arm(ROOM);
        b.arm(ROOM);
        wakes.signal(ROOM);
        assert_eq!((a.take(), b.take()), (ROOM, ROOM));
        wakes.unregister(&a);
        a.arm(ROOM);
        b.arm(ROOM);
        wakes.signal(ROOM);
        assert_eq!((a.take(), b.take()), (0, ROOM));
    }
}

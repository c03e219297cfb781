//! What a `fork()` child inherits, and how it is kept from using it.
//!
//! A child of a process that opened a queue has a copy of the engine (its
//! memory, the mapped journal, the lock's file descriptor) but none of its
//! threads. Writing through that copy would hand out ids the parent hands
//! out too and corrupt the parent's journal; holding the lock's descriptor
//! would keep the directory locked after the parent died. So:
//! - a `pthread_atfork` child handler bumps [`generation`]; every engine
//!   call compares it with the generation the engine was opened in and
//!   fails with `Error::Forked` (the child must open the queue itself,
//!   after the fork);
//! - the same handler points every registered lock descriptor at
//!   `/dev/null` (`dup2`), dropping the child's reference to the lock
//!   without touching the parent's (`flock` locks belong to the open file
//!   description, which `LOCK_UN` in the child would release for both);
//! - and so every registered socket of a shared queue's owner (its
//!   listener and its clients' connections, [`ChildDrops`]): a child that
//!   kept them would keep the owner's clients connected to nobody after the
//!   owner died (no hang-up reaches them) and take their new connections
//!   into a backlog nobody accepts;
//! - and every socket of a shared queue's client (its connections to the
//!   owner): a child that kept them would keep a client that died
//!   connected, and the owner would keep its leases (and hand it messages
//!   a blocking checkout was waiting for) until the child exits.
//!
//! The handler only does async-signal-safe things (atomics, `open`, `dup2`,
//! `fcntl`, `close`), as a child of a threaded parent must.

use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
/// Lock descriptors of the queues open in this process (-1: free slot).
/// More open queues than slots still work; their children keep a reference
/// to the lock (as every child did before this existed).
const SLOTS: usize = 1024;
static LOCK_FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    // SAFETY: async-signal-safe calls on descriptors this process owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return;
        }
        for slot in &LOCK_FDS {
            let fd = slot.load(Ordering::SeqCst);
            if fd >= 0 && libc::dup2(null, fd) == fd {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        libc::close(null);
    }
}

/// Installs the child handler (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: registering a handler with no preconditions.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

/// How many forks this process is away from the one that started it (0 in
/// the original process; every child counts one more than its parent).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// Registers a lock descriptor; returns its slot (`None`: no room left).
pub(crate) fn register_lock_fd(fd: i32) -> Option<usize> {
    install();
    LOCK_FDS.iter().position(|s| s.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

/// Must run before `fd` is closed: a registered number a later open
/// reused would be pointed at `/dev/null` in the next child.
pub(crate) fn unregister_lock_fd(slot: Option<usize>, fd: i32) {
    if let Some(i) = slot {
        let _ = LOCK_FDS[i].compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A descriptor a `fork()` child drops (points at `/dev/null`) while this
/// lives. Declare it so that it is dropped *before* the descriptor is
/// closed (a struct field before the file's, a local after it).
pub(crate) struct ChildDrops {
    fd: i32,
    slot: Option<usize>,
}

impl ChildDrops {
    pub(crate) fn new(fd: &impl std::os::unix::io::AsRawFd) -> ChildDrops {
        let fd = fd.as_raw_fd();
        ChildDrops { fd, slot: register_lock_fd(fd) }
    }
}

impl Drop for ChildDrops {
    fn drop(&mut self) {
        unregister_lock_fd(self.slot, self.fd);
    }
}

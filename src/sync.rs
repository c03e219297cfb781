//! Group commit: writers append records, then (with `durability="always"`)
//! wait until a flusher thread has fsynced past their LSN. One fsync serves
//! every writer that appended before it started, so N concurrent writers
//! share fsyncs instead of queueing for one each.
//!
//! Invariants (checked by `tests/loom_sync.rs` under `--cfg loom`):
//! - `durable` only grows, and only to a `written` value read *before* the
//!   fsync that covers it started (so everything counted durable was written
//!   before its fsync);
//! - a waiter returns `Ok` only when `durable >= lsn`, and `Err` only for a
//!   failed fsync round that started after the waiter asked and covered `lsn`;
//! - no wake-up is lost: a waiter always registers its request under the
//!   same lock the flusher checks before sleeping.

use crate::loom::{Condvar, Mutex, lock, wait};
use crate::types::Lsn;

/// A failed fsync round.
#[derive(Debug, Clone)]
pub struct SyncFailure {
    pub round: u64,
    pub target: Lsn,
    pub errno: Option<i32>,
    pub message: String,
}

struct State<F> {
    written: Lsn,
    durable: Lsn,
    requested: Lsn,
    /// Completed fsync rounds (success or failure).
    round: u64,
    last_failure: Option<SyncFailure>,
    shutdown: bool,
    /// What the flusher syncs (the active segment's file).
    target: Option<F>,
    fsyncs: u64,
}

/// Shared between writers and the flusher. `F` is the handle to sync.
pub struct SyncPoint<F> {
    st: Mutex<State<F>>,
    work: Condvar,
    done: Condvar,
}

/// What the flusher should do next.
pub enum Job<F> {
    Sync { upto: Lsn, target: F },
    Stop,
}

impl<F: Clone> SyncPoint<F> {
    pub fn new(durable: Lsn, target: Option<F>) -> Self {
        SyncPoint {
            st: Mutex::new(State {
                written: durable,
                durable,
                requested: durable,
                round: 0,
                last_failure: None,
                shutdown: false,
                target,
                fsyncs: 0,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        }
    }

    /// Records that everything up to `lsn` has reached the OS.
    pub fn written(&self, lsn: Lsn) {
        let mut st = lock(&self.st);
        if lsn > st.written {
            st.written = lsn;
        }
    }

    /// Everything up to `lsn` was made durable by someone else (a segment
    /// roll fsyncs the old segment itself); `target` is the new file to sync.
    pub fn synced_externally(&self, lsn: Lsn, target: Option<F>) {
        let mut st = lock(&self.st);
        if lsn > st.durable {
            st.durable = lsn;
        }
        if target.is_some() {
            st.target = target;
        }
        st.fsyncs += 1;
        drop(st);
        self.done.notify_all();
    }

    /// Asks for an fsync covering `lsn` and waits for it.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), SyncFailure> {
        let mut st = lock(&self.st);
        if st.durable >= lsn {
            return Ok(());
        }
        let asked_at = st.round;
        if lsn > st.requested {
            st.requested = lsn;
        }
        self.work.notify_one();
        loop {
            if st.durable >= lsn {
                return Ok(());
            }
            if let Some(f) = &st.last_failure
                && f.round > asked_at
                && f.target >= lsn
            {
                return Err(f.clone());
            }
            if st.shutdown {
                return Err(SyncFailure {
                    round: st.round,
                    target: lsn,
                    errno: None,
                    message: "the queue was closed before the fsync".into(),
                });
            }
            st = wait(&self.done, st);
        }
    }

    /// Asks for an fsync without waiting (batch mode's timer and `close`).
    pub fn request(&self) {
        let mut st = lock(&self.st);
        st.requested = st.written;
        drop(st);
        self.work.notify_one();
    }

    /// The flusher's wait: returns when there is something to sync, or when
    /// `interval` passed with unsynced writes (batch mode), or on shutdown.
    pub fn next_job(&self, interval: Option<std::time::Duration>) -> Job<F> {
        let mut st = lock(&self.st);
        loop {
            let pending = st.written > st.durable;
            if st.requested > st.durable && pending {
                break;
            }
            if st.shutdown {
                return Job::Stop;
            }
            if st.requested > st.durable && !pending {
                // Asked for, but nothing unsynced: satisfied already.
                st.requested = st.durable;
                self.done.notify_all();
            }
            st = match interval {
                #[cfg(not(loom))]
                Some(d) => {
                    let timed_out = self.work.wait_for(&mut st, d).timed_out();
                    if timed_out && st.written > st.durable {
                        break;
                    }
                    st
                }
                _ => wait(&self.work, st),
            };
        }
        let target = st.target.clone();
        let upto = st.written;
        match target {
            Some(target) => Job::Sync { upto, target },
            None => Job::Stop,
        }
    }

    /// Reports the outcome of the fsync that `next_job` asked for.
    pub fn complete(&self, upto: Lsn, result: Result<(), (Option<i32>, String)>) {
        let mut st = lock(&self.st);
        st.round += 1;
        st.fsyncs += 1;
        match result {
            Ok(()) => {
                if upto > st.durable {
                    st.durable = upto;
                }
            }
            Err((errno, message)) => {
                st.last_failure = Some(SyncFailure { round: st.round, target: upto, errno, message });
                // Do not spin on a failing disk: the next round needs a new request.
                st.requested = st.durable;
            }
        }
        drop(st);
        self.done.notify_all();
    }

    pub fn shutdown(&self) {
        let mut st = lock(&self.st);
        st.shutdown = true;
        drop(st);
        self.work.notify_all();
        self.done.notify_all();
    }

    pub fn durable(&self) -> Lsn {
        lock(&self.st).durable
    }

    pub fn fsyncs(&self) -> u64 {
        lock(&self.st).fsyncs
    }
}

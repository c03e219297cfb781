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
//!   same lock the flusher checks before sleeping;
//! - `written` is an atomic (a commit records its LSN without the lock): a
//!   writer stores it before it takes the lock to ask for an fsync, so a
//!   flusher that sees the request under the lock sees the write too.
//!
//! The flusher syncs the segments the writer rolled away from (oldest
//! first) before the active one, so "durable up to N" means every segment
//! holding a record up to N was synced. `journal_durable` is that watermark
//! for the journal alone (a snapshot makes records durable too, but not the
//! journal's copy of them): records carry it as their durable gap.

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
    durable: Lsn,
    requested: Lsn,
    /// Completed fsync rounds (success or failure).
    round: u64,
    last_failure: Option<SyncFailure>,
    shutdown: bool,
    /// What the flusher syncs (the active segment's file).
    target: Option<F>,
    /// Segments rolled away from, not yet synced, oldest first.
    retiring: Vec<F>,
    /// How many of `retiring` the job under way covers.
    job_retiring: usize,
    fsyncs: u64,
    /// Waiters that asked since the flusher took its last job, and how many
    /// the last job served: the flusher gathers about that many again.
    arrivals: usize,
    last_batch: usize,
}

impl<F> State<F> {
    /// For a writer that asked for `lsn` in round `asked_at` and finds it
    /// not durable yet: the failed fsync round that covered it since, or
    /// the shutdown that means none will.
    fn failed_since(&self, lsn: Lsn, asked_at: u64) -> Result<(), SyncFailure> {
        if let Some(f) = &self.last_failure
            && f.round > asked_at
            && f.target >= lsn
        {
            return Err(f.clone());
        }
        if self.shutdown {
            return Err(SyncFailure {
                round: self.round,
                target: lsn,
                errno: None,
                message: "the queue was closed before the fsync".into(),
            });
        }
        Ok(())
    }
}

/// Shared between writers and the flusher. `F` is the handle to sync.
pub struct SyncPoint<F> {
    st: Mutex<State<F>>,
    /// Everything up to here has reached the OS (`written`): read by the
    /// flusher under `st`, stored without it.
    written: crate::loom::AtomicU64,
    work: Condvar,
    done: Condvar,
    /// How long the flusher may wait for as many writers as its last round
    /// served before starting an fsync (0: never wait). See `set_gather`.
    gather: std::sync::atomic::AtomicU64,
    /// Everything up to here was in a journal segment when it was synced.
    journal_durable: std::sync::atomic::AtomicU64,
    /// Called each time waiters are woken (see `set_notify`).
    notify: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// What [`SyncPoint::poll_durable`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Durable {
    /// Durable.
    Yes,
    /// Not yet: an fsync covering it was asked for in the round given
    /// (pass it to the next poll).
    Pending { asked_at: u64 },
}

/// What the flusher should do next.
pub enum Job<F> {
    /// Sync `targets` in order (segments rolled away from, then the active one).
    Sync {
        upto: Lsn,
        targets: Vec<F>,
    },
    Stop,
}

impl<F: Clone> SyncPoint<F> {
    pub fn new(durable: Lsn, target: Option<F>) -> Self {
        SyncPoint {
            st: Mutex::new(State {
                durable,
                requested: durable,
                round: 0,
                last_failure: None,
                shutdown: false,
                target,
                retiring: Vec::new(),
                job_retiring: 0,
                fsyncs: 0,
                arrivals: 0,
                last_batch: 0,
            }),
            written: crate::loom::AtomicU64::new(durable),
            work: Condvar::new(),
            done: Condvar::new(),
            gather: std::sync::atomic::AtomicU64::new(0),
            journal_durable: std::sync::atomic::AtomicU64::new(durable),
            notify: std::sync::OnceLock::new(),
        }
    }

    /// `f` runs (without the lock) each time waiters are woken: an fsync
    /// round ended or failed, records were made durable otherwise, shutdown.
    /// For callers that poll instead of waiting (`poll_durable`). Once.
    pub fn set_notify(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.notify.set(f);
    }

    fn wake_waiters(&self) {
        self.done.notify_all();
        if let Some(f) = self.notify.get() {
            f();
        }
    }

    /// `wait_durable` without waiting: asks for an fsync covering `lsn`
    /// the first time (`asked_at: None`), then reports the same outcomes as
    /// `wait_durable` would have when polled again after a wake-up
    /// (`set_notify`), with the round the first poll returned.
    pub fn poll_durable(&self, lsn: Lsn, asked_at: Option<u64>) -> Result<Durable, SyncFailure> {
        let mut st = lock(&self.st);
        if st.durable >= lsn {
            return Ok(Durable::Yes);
        }
        let asked_at = match asked_at {
            Some(r) => r,
            None => {
                if lsn > st.requested {
                    st.requested = lsn;
                }
                st.arrivals += 1;
                self.work.notify_one();
                st.round
            }
        };
        st.failed_since(lsn, asked_at)?;
        Ok(Durable::Pending { asked_at })
    }

    /// Everything up to the returned LSN reached the disk through the
    /// journal's own fsyncs (no lock: read by every append).
    pub fn journal_durable(&self) -> Lsn {
        self.journal_durable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The writer moved to a new segment: `old` must be synced (before
    /// `new`) by the next job.
    pub fn roll(&self, new: F, old: F) {
        let mut st = lock(&self.st);
        st.retiring.push(old);
        st.target = Some(new);
    }

    /// Lets the flusher wait up to `d` for as many writers as its previous
    /// fsync served before starting the next (a commit delay that adapts:
    /// one writer never waits; N concurrent writers, whose wake-ups are
    /// staggered by scheduling and the GIL, share one fsync instead of
    /// splitting into several). Not modelled under loom.
    pub fn set_gather(&self, d: std::time::Duration) {
        self.gather.store(d.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records that everything up to `lsn` has reached the OS.
    pub fn written(&self, lsn: Lsn) {
        // No lock: one per commit otherwise. Release: a flusher that reads
        // it (Acquire) after the request this writer makes next sees it.
        self.written.fetch_max(lsn, std::sync::atomic::Ordering::Release);
    }

    fn written_now(&self) -> Lsn {
        self.written.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Everything up to `lsn` was made durable by someone else: a snapshot
    /// (`journal: false`), or the writer syncing the journal itself.
    pub fn synced_externally(&self, lsn: Lsn, journal: bool) {
        let mut st = lock(&self.st);
        if lsn > st.durable {
            st.durable = lsn;
        }
        if journal {
            self.journal_durable.fetch_max(lsn, std::sync::atomic::Ordering::AcqRel);
        }
        st.fsyncs += 1;
        drop(st);
        self.wake_waiters();
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
        st.arrivals += 1;
        self.work.notify_one();
        loop {
            if st.durable >= lsn {
                return Ok(());
            }
            st.failed_since(lsn, asked_at)?;
            if lsn > st.requested {
                // A failed round that stopped short of `lsn` (it started
                // before this record was written) dropped the request: ask
                // again, or no round would ever come for it.
                st.requested = lsn;
                self.work.notify_one();
            }
            st = wait(&self.done, st);
        }
    }

    /// Asks for an fsync without waiting (batch mode's timer and `close`).
    pub fn request(&self) {
        let mut st = lock(&self.st);
        st.requested = self.written_now();
        drop(st);
        self.work.notify_one();
    }

    /// The flusher's wait: returns when there is something to sync, or when
    /// `interval` passed with unsynced writes (batch mode), or on shutdown.
    pub fn next_job(&self, interval: Option<std::time::Duration>) -> Job<F> {
        let mut st = lock(&self.st);
        loop {
            let pending = self.written_now() > st.durable;
            if st.requested > st.durable && pending {
                break;
            }
            if st.shutdown {
                return Job::Stop;
            }
            if st.requested > st.durable && !pending {
                // Asked for, but nothing unsynced: satisfied already.
                st.requested = st.durable;
                self.wake_waiters();
            }
            st = match interval {
                #[cfg(not(loom))]
                Some(d) => {
                    let timed_out = self.work.wait_for(&mut st, d).timed_out();
                    if timed_out && self.written_now() > st.durable {
                        break;
                    }
                    st
                }
                _ => wait(&self.work, st),
            };
        }
        #[cfg_attr(loom, allow(unused_mut))]
        let mut gathered = true;
        #[cfg(not(loom))]
        {
            let gather = self.gather.load(std::sync::atomic::Ordering::Relaxed);
            if gather > 0 && st.arrivals < st.last_batch {
                let until = std::time::Instant::now() + std::time::Duration::from_micros(gather);
                while st.arrivals < st.last_batch && !st.shutdown {
                    if self.work.wait_until(&mut st, until).timed_out() {
                        gathered = st.arrivals >= st.last_batch;
                        break;
                    }
                }
            }
        }
        // A round that timed out lowers the expectation by one only: one
        // writer descheduled for a while must not collapse the batching.
        st.last_batch = if gathered { st.arrivals } else { st.arrivals.max(st.last_batch - 1) };
        st.arrivals = 0;
        let Some(active) = st.target.clone() else { return Job::Stop };
        let mut targets = st.retiring.clone();
        st.job_retiring = targets.len();
        targets.push(active);
        Job::Sync { upto: self.written_now(), targets }
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
                let n = st.job_retiring;
                st.retiring.drain(..n);
                self.journal_durable.fetch_max(upto, std::sync::atomic::Ordering::AcqRel);
            }
            Err((errno, message)) => {
                st.last_failure = Some(SyncFailure { round: st.round, target: upto, errno, message });
                // The segments stay in `retiring` for the next round.
                // Do not spin on a failing disk: the next round needs a new request.
                st.requested = st.durable;
            }
        }
        drop(st);
        self.wake_waiters();
    }

    pub fn shutdown(&self) {
        let mut st = lock(&self.st);
        st.shutdown = true;
        drop(st);
        self.work.notify_all();
        self.wake_waiters();
    }

    /// Takes the files not known to be synced (at close, after the flusher
    /// stopped): the caller syncs them; none is held here any longer (a
    /// deleted segment's space is freed once its last handle goes).
    pub fn take_files(&self) -> Vec<F> {
        let mut st = lock(&self.st);
        let mut files = std::mem::take(&mut st.retiring);
        files.extend(st.target.take());
        files
    }

    /// The writer moved to a new segment that nothing needs to fsync
    /// (`durability="os"`): only the target changes.
    pub fn switch(&self, new: F) {
        lock(&self.st).target = Some(new);
    }

    pub fn durable(&self) -> Lsn {
        lock(&self.st).durable
    }

    pub fn fsyncs(&self) -> u64 {
        lock(&self.st).fsyncs
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A flusher thread that "fsyncs" instantly, counting rounds.
    fn flusher(sp: Arc<SyncPoint<u8>>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            while let Job::Sync { upto, .. } = sp.next_job(None) {
                sp.complete(upto, Ok(()));
            }
        })
    }

    #[test]
    fn a_lone_writer_never_waits_for_the_gather() {
        let sp = Arc::new(SyncPoint::new(0, Some(0u8)));
        sp.set_gather(Duration::from_secs(2));
        let f = flusher(sp.clone());
        let t0 = Instant::now();
        for lsn in 1..=20 {
            sp.written(lsn);
            sp.wait_durable(lsn).unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
        sp.shutdown();
        f.join().unwrap();
    }

    #[test]
    fn staggered_writers_share_one_fsync_with_a_gather() {
        let sp = Arc::new(SyncPoint::new(0, Some(0u8)));
        sp.set_gather(Duration::from_secs(2));
        // Round 1: four writers ask before the flusher runs: one fsync
        // serves them, and the flusher learns to expect four.
        let writers: Vec<_> = (1..=4u64)
            .map(|lsn| {
                let sp = sp.clone();
                std::thread::spawn(move || {
                    sp.written(lsn);
                    sp.wait_durable(lsn).unwrap();
                    // Round 2: they come back 30 ms apart (as woken threads
                    // queue for the GIL), each with a new record.
                    std::thread::sleep(Duration::from_millis(30 * lsn));
                    sp.written(4 + lsn);
                    sp.wait_durable(4 + lsn).unwrap();
                })
            })
            .collect();
        // All four have asked (a sleep here was too short for a loaded
        // machine now and then: a writer asking after the first round
        // started made three rounds).
        let t0 = std::time::Instant::now();
        while lock(&sp.st).arrivals < 4 {
            assert!(t0.elapsed() < Duration::from_secs(30), "the writers never asked");
            std::thread::sleep(Duration::from_millis(1));
        }
        let f = flusher(sp.clone());
        for w in writers {
            w.join().unwrap();
        }
        let rounds = sp.fsyncs();
        sp.shutdown();
        f.join().unwrap();
        // Without the gather, round 2 would take one fsync per writer (5 in all).
        assert_eq!(rounds, 2, "fsync rounds for 2 rounds of 4 writers");
    }

    #[test]
    fn a_failed_round_that_stopped_short_of_a_record_does_not_strand_its_waiter() {
        let sp = Arc::new(SyncPoint::new(0, Some(0u8)));
        // A round starts for record 1 only ...
        sp.written(1);
        sp.request();
        let Job::Sync { upto, .. } = sp.next_job(None) else { panic!("a job") };
        assert_eq!(upto, 1);
        // ... record 2 is written and waited for meanwhile ...
        sp.written(2);
        let waiter = {
            let sp = sp.clone();
            std::thread::spawn(move || sp.wait_durable(2))
        };
        std::thread::sleep(Duration::from_millis(50));
        // ... and the round fails: it did not cover record 2, whose waiter
        // must get a round of its own (the failure dropped the request).
        sp.complete(upto, Err((Some(5), "EIO".into())));
        let f = flusher(sp.clone());
        let t0 = Instant::now();
        while !waiter.is_finished() {
            assert!(t0.elapsed() < Duration::from_secs(5), "the waiter of record 2 was stranded");
            std::thread::sleep(Duration::from_millis(5));
        }
        waiter.join().unwrap().unwrap();
        sp.shutdown();
        f.join().unwrap();
    }
}

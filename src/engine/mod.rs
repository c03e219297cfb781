//! The engine: one lock over the state and the journal writer, so the order
//! operations are applied in is the order they are journaled in (LSN order),
//! which is what makes replay exact. Calls hold the lock for microseconds;
//! everything slow (fsync, writing snapshot files, waiting) happens outside
//! it, on background threads or in `SyncPoint` waits.
//!
//! Lock order: `inner` → `sync`'s lock. Nothing takes `inner` while holding
//! `sync`'s lock, and no engine code calls back into Python.

mod background;
#[cfg(test)]
mod model_tests;
mod ops;
mod publish;

pub use ops::{AckOutcome, Stat};
pub use publish::{Publish, PublishOpts};

use crate::error::{Error, Result};
use crate::histogram::Histogram;
use crate::journal::Journal;
use crate::lock::{self, DirLock};
use crate::record::Op;
use crate::recovery::{self, RecoveryReport};
use crate::snapshot;
use crate::state::State;
use crate::storage::{self, FaultPoint, Faults};
use crate::sync::SyncPoint;
use crate::types::{Durability, Failure, Lsn, Micros, MsgState, Options, now_micros};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters since this engine opened the directory.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub published: u64,
    pub replaced: u64,
    pub kept: u64,
    pub superseded: u64,
    pub superseded_dropped: u64,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub expired: u64,
    pub dead_lettered: u64,
    pub dlq_replayed: u64,
    pub dlq_purged: u64,
    pub snapshots: u64,
}

/// How long the flusher waits for as many writers as its last fsync served
/// (`SyncPoint::set_gather`); about one fdatasync on an SSD.
const GROUP_COMMIT_GATHER: Duration = Duration::from_micros(250);

pub(crate) struct Inner {
    pub state: State,
    pub journal: Journal,
    pub epoch: u64,
    pub token_seq: u64,
    pub counters: Counters,
    pub report: RecoveryReport,
    /// When the timer thread will next wake up (u64::MAX: not scheduled).
    pub timer_next: Micros,
    pub snapshot_lsn: Lsn,
    pub snapshot_at: Instant,
    pub records_since_snapshot: u64,
    pub snapshot_wanted: bool,
    /// Set when an fsync failed: what was written since may not be on disk.
    /// Cleared by a successful snapshot (which persists the whole state).
    pub degraded: Option<String>,
    /// Why the last background snapshot failed (the journal still holds
    /// everything; snapshots are retried on the next trigger).
    pub snapshot_error: Option<String>,
    pub closed: bool,
    pub lock: Option<DirLock>,
    /// Per-topic overrides set by the SDK's handlers (not persisted).
    pub policies: std::collections::HashMap<u32, TopicPolicy>,
}

/// What a topic's handler asks of the engine; see `Engine::set_topic_policy`.
#[derive(Clone, Debug, Default)]
pub struct TopicPolicy {
    /// Deliveries before a failed or expired message is dead-lettered.
    pub max_attempts: Option<u32>,
    /// Recorded on dead letters of this topic that the engine makes.
    pub handler: Option<String>,
}

impl Inner {
    /// `max_attempts` for a message of `topic`.
    pub(crate) fn max_attempts(&self, topic: u32, default: u32) -> u32 {
        self.policies.get(&topic).and_then(|p| p.max_attempts).unwrap_or(default)
    }

    /// The handler name to record on a dead letter of `topic`.
    pub(crate) fn handler(&self, topic: u32) -> Option<String> {
        self.policies.get(&topic).and_then(|p| p.handler.clone())
    }

    /// What a lease expiry (or a restart with the message in flight) does to `id`.
    pub(crate) fn expiry_op(&self, default_max: u32, id: u64, now: Micros, why: &str) -> Op {
        let m = self.state.slab.get(id).expect("leased message exists");
        let max = self.max_attempts(m.topic, default_max);
        expiry_op(m.superseded, m.attempt, max, self.handler(m.topic), id, now, why)
    }
}

pub(crate) struct Shared {
    pub path: PathBuf,
    pub opts: Options,
    pub inner: Mutex<Inner>,
    pub not_full: Condvar,
    pub timer_cv: Condvar,
    pub snap_cv: Condvar,
    pub sync: SyncPoint<Arc<File>>,
    pub faults: Arc<Faults>,
    pub snapshot_lock: Mutex<()>,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    pub closed: AtomicBool,
    /// Journal fsyncs by the flusher (group commits and batch rounds).
    pub fsync_latency: Histogram,
    /// Whole snapshots: encode, write, fsync, rename.
    pub snapshot_duration: Histogram,
}

/// A durable queue in one directory. Closing (or dropping) it takes a final
/// snapshot and releases the directory.
pub struct Engine {
    sh: Arc<Shared>,
}

impl Engine {
    /// Opens (creating if needed) the queue at `path`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        opts.validate()?;
        let path = path.as_ref().to_owned();
        lock::ensure_dir(&path)?;
        let dir_lock = DirLock::acquire(&path)?;
        let manifest = lock::check_manifest(&path)?;
        let faults = Arc::new(Faults::default());
        let bound = manifest.slot_bound(opts.capacity);
        let loaded = recovery::load(&path, opts.dlq_capacity, bound, true, &faults)?;
        // Only once the directory reads cleanly does this open count.
        let slots = opts.capacity.max(loaded.state.slab.slot_count());
        let epoch = lock::bump_epoch(&path, manifest, slots)?;
        let next_lsn = loaded.report.last_lsn + 1;
        let journal = Journal::create(&path, faults.clone(), opts.segment_size, next_lsn, loaded.segments)?;
        let sync = SyncPoint::new(next_lsn - 1, Some(journal.active_file()));
        if opts.durability == Durability::Always {
            // About one fsync's time: concurrent writers share fsyncs.
            sync.set_gather(GROUP_COMMIT_GATHER);
        }
        let snapshot_lsn = loaded.report.snapshot_lsn;
        let inner = Inner {
            state: loaded.state,
            journal,
            epoch,
            token_seq: 0,
            counters: Counters::default(),
            report: loaded.report,
            timer_next: u64::MAX,
            snapshot_lsn,
            snapshot_at: Instant::now(),
            records_since_snapshot: 0,
            snapshot_wanted: false,
            degraded: None,
            snapshot_error: None,
            closed: false,
            lock: Some(dir_lock),
            policies: std::collections::HashMap::new(),
        };
        let sh = Arc::new(Shared {
            path,
            opts,
            inner: Mutex::new(inner),
            not_full: Condvar::new(),
            timer_cv: Condvar::new(),
            snap_cv: Condvar::new(),
            sync,
            faults,
            snapshot_lock: Mutex::new(()),
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            fsync_latency: Histogram::default(),
            snapshot_duration: Histogram::default(),
        });
        let engine = Engine { sh };
        engine.finish_recovery()?;
        background::start(&engine.sh);
        Ok(engine)
    }

    /// Messages in flight when the previous owner stopped come back (or go
    /// to the dead-letter ring if out of attempts); due delays become ready.
    fn finish_recovery(&self) -> Result<()> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        let now = now_micros();
        let mut in_flight: Vec<u64> =
            g.state.slab.iter().filter(|m| m.state == MsgState::InFlight).map(|m| m.id).collect();
        in_flight.sort_unstable();
        let ops: Vec<Op> = in_flight
            .into_iter()
            .map(|id| g.expiry_op(sh.opts.max_attempts, id, now, "the queue was reopened"))
            .collect();
        if !ops.is_empty() {
            sh.commit(&mut g, ops)?;
        }
        g.state.release_due(now);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.sh.path
    }

    pub fn options(&self) -> &Options {
        &self.sh.opts
    }

    pub fn durability(&self) -> Durability {
        self.sh.opts.durability
    }

    pub fn is_closed(&self) -> bool {
        self.sh.closed.load(Ordering::Acquire)
    }

    /// With `durability="always"`, waits until `lsn` is on disk (group
    /// commit). Other modes return at once.
    pub fn wait_durable(&self, lsn: Option<Lsn>) -> Result<()> {
        let Some(lsn) = lsn else { return Ok(()) };
        if self.sh.opts.durability != Durability::Always {
            return Ok(());
        }
        self.sh.sync.wait_durable(lsn).map_err(|f| {
            let e = std::io::Error::from_raw_os_error(f.errno.unwrap_or(libc::EIO));
            let mut g = self.sh.inner.lock();
            if g.degraded.is_none() {
                g.degraded = Some(f.message.clone());
            }
            Error::storage(format!("fsync of the journal (record {lsn} may not be on disk)"), &self.sh.path, e)
        })
    }

    /// Writes a snapshot now; returns its LSN.
    pub fn snapshot(&self) -> Result<Lsn> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.sh.snapshot()
    }

    /// Takes a final snapshot, stops the background threads and releases the
    /// directory. Idempotent.
    pub fn close(&self) -> Result<()> {
        let sh = &self.sh;
        if sh.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let mut g = sh.inner.lock();
            g.closed = true;
            for t in &g.state.topics {
                t.cv.notify_all();
            }
        }
        sh.not_full.notify_all();
        let snap = sh.snapshot();
        sh.sync.request();
        sh.sync.shutdown();
        sh.timer_cv.notify_all();
        sh.snap_cv.notify_all();
        let threads = std::mem::take(&mut *sh.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        let mut g = sh.inner.lock();
        // Whatever the snapshot did not cover is in the journal: make it
        // durable; an active segment with no record after the snapshot goes,
        // so the next open has nothing to scan.
        let _ = storage::sync_file(&sh.faults, &g.journal.active_file());
        if snap.is_ok() {
            g.journal.discard_if_empty();
        }
        g.lock = None;
        snap.map(|_| ())
    }

    /// Test hook: make the next `count` calls at `point` fail with `errno`
    /// (`count = -1`: until cleared with `count = 0`).
    pub fn inject_fault(&self, point: FaultPoint, errno: i32, count: i64) {
        self.sh.faults.set(point, errno, count);
    }

    /// What recovery found when this engine opened the directory.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.sh.inner.lock().report.clone()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// What a lease expiry (or a restart with the message in flight) does.
pub(crate) fn expiry_op(
    superseded: bool,
    attempt: u32,
    max_attempts: u32,
    handler: Option<String>,
    id: u64,
    now: Micros,
    why: &str,
) -> Op {
    if superseded {
        Op::Drop { id }
    } else if attempt >= max_attempts {
        Op::DeadLetter {
            id,
            reason: "lease_expired".into(),
            failure: Failure {
                error_type: Some("LeaseExpired".into()),
                error_message: Some(format!("lease expired on delivery {attempt} of {max_attempts} ({why})")),
                traceback: None,
                handler,
            },
            at: now,
        }
    } else {
        Op::Requeue { id, visible_at: 0, failed_at: now }
    }
}

impl Shared {
    /// Journals `ops` as one record and applies them. On error nothing changed.
    pub(crate) fn commit(&self, g: &mut Inner, ops: Vec<Op>) -> Result<Lsn> {
        let lsn = g.journal.append(&ops, &self.sync)?;
        for op in ops {
            if let Err(e) = g.state.apply(op) {
                panic!("ringq internal error: a live operation did not apply: {e}");
            }
        }
        self.sync.written(lsn);
        g.records_since_snapshot += 1;
        if g.records_since_snapshot >= self.opts.snapshot_every && !g.snapshot_wanted {
            g.snapshot_wanted = true;
            self.snap_cv.notify_one();
        }
        Ok(lsn)
    }

    /// Refuses to change anything while an fsync failure is unresolved,
    /// unless a snapshot (which persists the whole state) succeeds now.
    pub(crate) fn ensure_healthy(&self, g: &mut MutexGuard<'_, Inner>) -> Result<()> {
        if g.closed {
            return Err(Error::Closed);
        }
        if g.degraded.is_none() {
            return Ok(());
        }
        self.snapshot_locked(g).map(|_| ())
    }

    /// The lock, for calls that only read: refused once closed.
    pub(crate) fn open_inner(&self) -> Result<MutexGuard<'_, Inner>> {
        let g = self.inner.lock();
        if g.closed { Err(Error::Closed) } else { Ok(g) }
    }

    pub(crate) fn next_token(&self, g: &mut Inner) -> u64 {
        g.token_seq += 1;
        (g.epoch << 40) | (g.token_seq & ((1 << 40) - 1))
    }

    /// Encodes a snapshot under the lock (rolling the journal so older
    /// segments can go), writes it outside the lock, then deletes what it
    /// covers.
    pub(crate) fn snapshot(&self) -> Result<Lsn> {
        let _one = self.snapshot_lock.lock();
        let started = Instant::now();
        let (image, lsn) = {
            let mut g = self.inner.lock();
            match self.prepare_snapshot(&mut g)? {
                Some(x) => x,
                None => return Ok(g.snapshot_lsn),
            }
        };
        let written = storage::write_atomic(Some(&self.faults), &self.path, &snapshot::snapshot_name(lsn), &image);
        let mut g = self.inner.lock();
        written.map_err(|e| Error::storage("writing snapshot", self.path.join(snapshot::snapshot_name(lsn)), e))?;
        self.finish_snapshot(&mut g, lsn);
        self.snapshot_duration.observe(started.elapsed());
        Ok(lsn)
    }

    /// The same, holding the lock throughout (used to heal after an fsync
    /// failure, when nothing may change until the state is on disk).
    fn snapshot_locked(&self, g: &mut Inner) -> Result<Lsn> {
        let started = Instant::now();
        let Some((image, lsn)) = self.prepare_snapshot(g)? else {
            return Ok(g.snapshot_lsn);
        };
        storage::write_atomic(Some(&self.faults), &self.path, &snapshot::snapshot_name(lsn), &image)
            .map_err(|e| Error::storage("writing snapshot", self.path.join(snapshot::snapshot_name(lsn)), e))?;
        self.finish_snapshot(g, lsn);
        self.snapshot_duration.observe(started.elapsed());
        Ok(lsn)
    }

    fn prepare_snapshot(&self, g: &mut Inner) -> Result<Option<(Vec<u8>, Lsn)>> {
        let lsn = g.journal.next_lsn() - 1;
        if lsn == g.snapshot_lsn && g.degraded.is_none() && g.report.snapshot_path.is_some() {
            g.snapshot_wanted = false;
            return Ok(None);
        }
        if g.journal.active_used() > crate::journal::SEGMENT_HEADER_LEN {
            g.journal.roll(0, &self.sync)?;
        }
        let image = snapshot::encode(&g.state, lsn);
        g.records_since_snapshot = 0;
        g.snapshot_wanted = false;
        Ok(Some((image, lsn)))
    }

    fn finish_snapshot(&self, g: &mut Inner, lsn: Lsn) {
        g.journal.delete_through(lsn);
        if let Ok((snaps, _)) = recovery::list_files(&self.path) {
            for (l, p) in snaps {
                if l < lsn {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        g.snapshot_lsn = lsn.max(g.snapshot_lsn);
        g.snapshot_at = Instant::now();
        g.report.snapshot_path = Some(self.path.join(snapshot::snapshot_name(lsn)));
        g.counters.snapshots += 1;
        g.degraded = None;
        g.snapshot_error = None;
        self.sync.synced_externally(lsn, None);
    }

    /// Wakes up to `n` checkout waiters of `topic`.
    pub(crate) fn wake_topic(&self, g: &Inner, topic: u32, n: usize) {
        let t = &g.state.topics[topic as usize];
        if t.waiters == 0 {
            return;
        }
        if n >= t.waiters {
            t.cv.notify_all();
        } else {
            for _ in 0..n {
                t.cv.notify_one();
            }
        }
    }

    /// Makes the timer thread re-plan if `at` is earlier than its wake-up.
    pub(crate) fn wake_timer_for(&self, g: &mut Inner, at: Micros) {
        if at < g.timer_next {
            g.timer_next = at;
            self.timer_cv.notify_one();
        }
    }
}

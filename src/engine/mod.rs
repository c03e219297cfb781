//! The engine: one lock over the state and the journal writer, so the order
//! operations are applied in is the order they are journaled in (LSN order),
//! which is what makes replay exact. Calls hold the lock for microseconds;
//! everything slow (fsync, creating segments, writing snapshot files,
//! waiting) happens outside it, on background threads or in `SyncPoint`
//! waits.
//!
//! Lock order: `snapshot_lock` → `inner` → `sync`'s lock → `spares`' lock.
//! No engine code calls back into Python.
//!
//! A `fork()` child inherits a copy of an open engine but none of its
//! threads: every call there fails with `Error::Forked` (see `fork`), and
//! closing or dropping it touches nothing the parent owns.

mod background;
mod dead;
mod due;
#[cfg(test)]
mod feature_tests;
#[cfg(test)]
mod model_tests;
mod ops;
mod publish;
mod snapshots;
mod stats;
#[cfg(test)]
mod try_first_tests;
pub mod wake;

pub use ops::{AckOutcome, CANCEL_IN_FLIGHT, CANCEL_NOT_FOUND, CANCEL_WAITING, Checkout, Stat};
pub use publish::{Publish, PublishOpts};
pub use stats::TopicStat;

use crate::clock::EngineClock;
use crate::error::{Error, Result};
use crate::histogram::Histogram;
use crate::journal::Journal;
use crate::journal::marker::{DURABLE_FILE, Marker};
use crate::journal::prepare::Spares;
use crate::lock::{self, DirLock};
use crate::manifest::{self, Manifest};
use crate::record::Op;
use crate::recovery::{self, RecoveryReport};
use crate::state::State;
use crate::storage::{self, FaultPoint, Faults};
use crate::sync::SyncPoint;
use crate::types::{Durability, Failure, Lsn, Micros, MsgState, Options};
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
    pub released: u64,
    pub acked: u64,
    pub nacked: u64,
    pub expired: u64,
    pub dead_lettered: u64,
    pub dlq_replayed: u64,
    pub dlq_purged: u64,
    pub cancelled: u64,
    pub snapshots: u64,
}

/// How long the flusher waits for as many writers as its last fsync served
/// (`SyncPoint::set_gather`); about one fdatasync on an SSD.
const GROUP_COMMIT_GATHER: Duration = Duration::from_micros(250);

pub(crate) struct Inner {
    pub state: State,
    pub journal: Journal,
    /// What the MANIFEST says now (rewritten at open and after snapshots).
    pub manifest: Manifest,
    /// Lease tokens are `salt + n` (never 0): random per open, so a token
    /// of another queue, or of an earlier open of this one, never matches.
    pub token_salt: u64,
    pub token_seq: u64,
    pub counters: Counters,
    /// Dead letters per topic since open (every cause: nack, expiry, reopen).
    pub dead_by_topic: Vec<u64>,
    pub report: RecoveryReport,
    /// When the timer thread will next wake up (u64::MAX: not scheduled).
    pub timer_next: Micros,
    pub snapshot_lsn: Lsn,
    pub snapshot_at: Instant,
    pub records_since_snapshot: u64,
    pub snapshot_wanted: bool,
    /// `journal.rolls()` when `commit` last looked at the journal's size.
    pub rolls_seen: u64,
    /// Bytes of the last snapshot (at open: the one recovery loaded; 0 if none).
    pub snapshot_bytes: u64,
    /// An append found the disk full since the last snapshot: that
    /// snapshot deletes what it covers before releasing the lock, so that
    /// the append retried after it finds the space (see `Shared::snapshot_with`).
    pub disk_full: bool,
    /// Set when an fsync failed: what was written since may not be on disk.
    /// Cleared by a successful snapshot (which persists the whole state).
    pub degraded: Option<String>,
    /// Bumped whenever `degraded` is set, so a snapshot prepared before a
    /// new failure does not clear it.
    pub degraded_gen: u64,
    /// Why the last background snapshot failed (the journal still holds
    /// everything; snapshots are retried on the next trigger).
    pub snapshot_error: Option<String>,
    pub closed: bool,
    pub lock: Option<DirLock>,
    /// Per-topic overrides set by the SDK's handlers (not persisted).
    pub policies: std::collections::HashMap<u32, TopicPolicy>,
}

/// What a topic's handler asks of the engine; see `Engine::set_topic_policy`.
/// Kept in the directory's `POLICIES` file (`crate::policies`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

    /// Counts a dead letter of `topic`.
    pub(crate) fn count_dead(&mut self, topic: u32) {
        let t = topic as usize;
        if self.dead_by_topic.len() <= t {
            self.dead_by_topic.resize(t + 1, 0);
        }
        self.dead_by_topic[t] += 1;
        self.counters.dead_lettered += 1;
    }
}

pub(crate) struct Shared {
    pub path: PathBuf,
    pub opts: Options,
    /// Every time the engine stores or compares is read here (`crate::clock`).
    pub clock: EngineClock,
    pub inner: Mutex<Inner>,
    pub not_full: Condvar,
    pub timer_cv: Condvar,
    pub snap_cv: Condvar,
    pub sync: SyncPoint<Arc<File>>,
    pub faults: Arc<Faults>,
    pub spares: Arc<Spares>,
    /// `DURABLE`, written by the flusher after each journal fsync.
    pub marker: Mutex<Marker>,
    pub snapshot_lock: Mutex<()>,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    pub closed: AtomicBool,
    /// Mirrors `Inner::degraded` for `would_wait` (no lock).
    pub degraded: AtomicBool,
    /// `fork::generation()` when the engine was opened.
    pub fork_generation: u64,
    pub owner_pid: u32,
    pub instance_id: u64,
    /// Journal fsyncs by the flusher (group commits and batch rounds).
    pub fsync_latency: Histogram,
    /// Whole snapshots: encode, write, fsync, rename.
    pub snapshot_duration: Histogram,
    /// Callers that poll instead of waiting (`wake`).
    pub wakes: Arc<wake::Wakes>,
    /// The topic policies as `POLICIES` should hold them; held while the
    /// file is written, so writes go out in the order the policies changed.
    pub policy_file: Mutex<PolicyFile>,
}

/// The `POLICIES` file's contents and whether it is behind.
#[derive(Default)]
pub(crate) struct PolicyFile {
    pub policies: crate::policies::Policies,
    /// Why the last write failed (the file is behind `policies`; retried
    /// at the next change and after each snapshot).
    pub error: Option<String>,
}

/// A durable queue in one directory. Closing (or dropping) it takes a final
/// snapshot and releases the directory.
pub struct Engine {
    sh: Arc<Shared>,
}

/// A snapshot is also taken when the closed journal segments no snapshot
/// covers reach this many bytes, and twice the last snapshot's size: a
/// queue published to in batches writes few records but many bytes, and
/// without it the journal would grow until `snapshot_interval` (at
/// 500 MB/s for 300 s, 150 GB). A snapshot lets those segments go, or be
/// recycled as the next ones (`journal::prepare`).
pub const JOURNAL_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;

/// Whether new journal segments are written with zeros before use
/// (`journal::prepare`). Not with `durability="always"`: each of its calls
/// waits for the disk, and the fill's writes (as much again as the
/// journal's) slowed `always` publishing (docs/benchmarks.md, "Segments
/// written ahead").
fn fill_segments(durability: Durability) -> bool {
    durability != Durability::Always
}

/// Messages loaded at open from which the memory recovery freed is given
/// back at once (`Engine::open`).
const RELEASE_AFTER_LOADING: usize = 1 << 16;

impl Engine {
    /// Opens (creating if needed) the queue at `path`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        opts.validate()?;
        crate::tune_allocator();
        crate::fork::install();
        let path = path.as_ref().to_owned();
        lock::ensure_dir(&path)?;
        let dir_lock = DirLock::acquire(&path)?;
        // A shared owner that died left its socket's address behind: nobody
        // serves it now (whoever serves the directory holds its lock).
        crate::shared::addr::clear(&path);
        let old = match manifest::read(&path)? {
            Some(m) => m,
            None => {
                let files = recovery::list_files(&path)?;
                if files.holds_queue_files() {
                    return Err(missing_manifest(&path, &files));
                }
                // A new queue: the MANIFEST comes first, so that a crash
                // before the first open finishes leaves a queue that opens.
                let fresh = Manifest {
                    version: manifest::MANIFEST_VERSION,
                    instance_id: manifest::random_u64(),
                    slot_limit: Some(u32::try_from(opts.capacity).unwrap_or(u32::MAX)),
                    ..Manifest::default()
                };
                manifest::write(&path, &fresh)?;
                fresh
            }
        };
        let faults = Arc::new(Faults::default());
        let bound = old.slot_bound(opts.capacity);
        let mut loaded = recovery::load(&path, opts.dlq_capacity, bound, opts.capacity, true, &faults, &old)?;
        // The policies of the handlers that last ran: the messages they left
        // in flight are judged by them (`finish_recovery`), as a lease expiry
        // would have judged them then.
        let stored = crate::policies::read(&path)?;
        let policies = stored.iter().map(|(topic, p)| (loaded.state.intern(topic), p.clone())).collect();
        let slots = opts.capacity.max(loaded.state.slab.slot_count());
        let next_lsn = loaded.report.last_lsn + 1;
        let (mut journal, spares) = Journal::open(
            &path,
            faults.clone(),
            opts.segment_size,
            fill_segments(opts.durability),
            next_lsn,
            loaded.journal,
        )?;
        journal.set_sync_old(opts.durability != Durability::Os);
        // Journal::open synced every recovered record.
        let mut marker = Marker::open(&path).map_err(|e| Error::storage("opening", path.join(DURABLE_FILE), e))?;
        marker.record(next_lsn - 1);
        // Only once the directory reads cleanly and the journal continues
        // does this open count.
        let new = Manifest {
            version: manifest::MANIFEST_VERSION,
            epoch: old.epoch + 1,
            slot_limit: Some(old.slot_limit.unwrap_or(0).max(u32::try_from(slots).unwrap_or(u32::MAX))),
            instance_id: if old.instance_id != 0 { old.instance_id } else { manifest::random_u64() },
            journal_anchor: journal.active_seq(),
            snapshot_lsn: loaded.report.snapshot_lsn,
        };
        manifest::write(&path, &new)?;
        let sync = SyncPoint::new(next_lsn - 1, Some(journal.active_file()));
        if opts.durability == Durability::Always {
            // About one fsync's time: concurrent writers share fsyncs.
            sync.set_gather(GROUP_COMMIT_GATHER);
        }
        let snapshot_lsn = loaded.report.snapshot_lsn;
        // The snapshot the queue was opened from counts as the last one.
        let snapshot_bytes =
            loaded.report.snapshot_path.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
        let inner = Inner {
            state: loaded.state,
            journal,
            manifest: new,
            token_salt: manifest::random_u64(),
            token_seq: 0,
            counters: Counters::default(),
            dead_by_topic: Vec::new(),
            report: loaded.report,
            timer_next: u64::MAX,
            snapshot_lsn,
            snapshot_at: Instant::now(),
            records_since_snapshot: 0,
            snapshot_wanted: false,
            rolls_seen: 0,
            snapshot_bytes,
            disk_full: false,
            degraded: None,
            degraded_gen: 0,
            snapshot_error: None,
            closed: false,
            lock: Some(dir_lock),
            policies,
        };
        let sh = Arc::new(Shared {
            path,
            clock: EngineClock::new(opts.clock),
            opts,
            inner: Mutex::new(inner),
            not_full: Condvar::new(),
            timer_cv: Condvar::new(),
            snap_cv: Condvar::new(),
            sync,
            faults,
            spares,
            marker: Mutex::new(marker),
            snapshot_lock: Mutex::new(()),
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            fork_generation: crate::fork::generation(),
            owner_pid: std::process::id(),
            instance_id: new.instance_id,
            fsync_latency: Histogram::default(),
            snapshot_duration: Histogram::default(),
            wakes: Arc::new(wake::Wakes::default()),
            policy_file: Mutex::new(PolicyFile { policies: stored, error: None }),
        });
        let wakes = sh.wakes.clone();
        sh.sync.set_notify(Box::new(move || wakes.signal(wake::DURABLE)));
        let engine = Engine { sh };
        engine.finish_recovery()?;
        // What recovery of a large queue freed goes back to the system
        // now, not after the allocator's purge delay (`tune_allocator`);
        // not for a small one: a forced collection also gives back what
        // the process had kept for reuse (a queue closed just before).
        if engine.sh.inner.lock().state.slab.live() >= RELEASE_AFTER_LOADING {
            crate::release_freed_memory();
        }
        background::start(&engine.sh);
        Ok(engine)
    }

    /// Messages in flight when the previous owner stopped come back (or go
    /// to the dead-letter ring if out of attempts, by their topic's stored
    /// policy); due delays become ready.
    fn finish_recovery(&self) -> Result<()> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        let now = sh.clock.now();
        let mut in_flight: Vec<u64> =
            g.state.slab.iter().filter(|m| m.state == MsgState::InFlight).map(|m| m.id).collect();
        in_flight.sort_unstable();
        let ops: Vec<Op> = in_flight
            .into_iter()
            .map(|id| g.expiry_op(sh.opts.max_attempts, id, now, "the queue was reopened"))
            .collect();
        if !ops.is_empty() {
            let dead: Vec<u32> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::DeadLetter { id, .. } => g.state.slab.get(*id).map(|m| m.topic),
                    _ => None,
                })
                .collect();
            sh.commit(&mut g, ops)?;
            for t in dead {
                g.count_dead(t);
            }
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

    /// This queue directory's identity (random, fixed when it was created).
    pub fn instance_id(&self) -> u64 {
        self.sh.instance_id
    }

    pub fn is_closed(&self) -> bool {
        self.sh.closed.load(Ordering::Acquire)
    }

    /// Whether this is a `fork()` child's copy of an engine its parent opened.
    pub fn is_forked(&self) -> bool {
        crate::fork::generation() != self.sh.fork_generation
    }

    /// `Error::Forked` in a `fork()` child (see [`is_forked`](Self::is_forked)).
    pub fn check_not_forked(&self) -> Result<()> {
        self.sh.check()
    }

    /// Whether a call now would heal a failed fsync first (a snapshot): the
    /// bindings release the GIL for it at once. (A call that finds the
    /// engine's lock taken gives up under [`crate::blocking::try_first`] and
    /// is run again without the GIL.)
    pub fn would_wait(&self) -> bool {
        self.sh.degraded.load(Ordering::Relaxed)
    }

    /// With `durability="always"`, waits until `lsn` is on disk (group
    /// commit). Other modes return at once.
    pub fn wait_durable(&self, lsn: Option<Lsn>) -> Result<()> {
        let Some(lsn) = lsn else { return Ok(()) };
        if self.sh.opts.durability != Durability::Always {
            return Ok(());
        }
        self.sh.sync.wait_durable(lsn).map_err(|f| self.sync_failed(lsn, f))
    }

    /// A failed fsync as the caller waiting for `lsn` sees it (the engine
    /// is marked degraded: the next call heals it first).
    fn sync_failed(&self, lsn: Lsn, f: crate::sync::SyncFailure) -> Error {
        let e = std::io::Error::from_raw_os_error(f.errno.unwrap_or(libc::EIO));
        let mut g = self.sh.inner.lock();
        self.sh.mark_degraded(&mut g, f.message.clone());
        Error::storage(format!("fsync of the journal (record {lsn} may not be on disk)"), &self.sh.path, e)
    }

    /// Registers `w` for this engine's signals (`wake`).
    pub fn register_wake(&self, w: Arc<wake::AsyncWake>) {
        self.sh.wakes.register(w);
    }

    pub fn unregister_wake(&self, w: &Arc<wake::AsyncWake>) {
        self.sh.wakes.unregister(w);
    }

    /// The next message that becomes ready on `topic` signals
    /// [`wake::READY`] to the wakes that armed it.
    pub fn arm_topic(&self, topic: &str) -> Result<()> {
        let mut g = self.sh.open_inner()?;
        let t = g.state.intern(topic);
        g.state.topics[t as usize].async_armed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// [`wait_durable`](Self::wait_durable) without waiting: `true` once
    /// `lsn` is on disk (at once unless `durability="always"`); else asks
    /// for the fsync (the first time, `asked_at: None`) and returns the
    /// round to pass next time, after a [`wake::DURABLE`] signal.
    pub fn poll_durable(&self, lsn: Lsn, asked_at: Option<u64>) -> Result<(bool, u64)> {
        if self.sh.opts.durability != Durability::Always {
            return Ok((true, 0));
        }
        match self.sh.sync.poll_durable(lsn, asked_at) {
            Ok(crate::sync::Durable::Yes) => Ok((true, 0)),
            Ok(crate::sync::Durable::Pending { asked_at }) => Ok((false, asked_at)),
            Err(f) => Err(self.sync_failed(lsn, f)),
        }
    }

    /// Everything up to this LSN is on disk.
    pub fn durable_lsn(&self) -> Lsn {
        self.sh.sync.durable()
    }

    /// Writes a snapshot now; returns its LSN.
    pub fn snapshot(&self) -> Result<Lsn> {
        self.sh.check()?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.sh.snapshot()
    }

    /// Test hook: a snapshot that calls `between` once the state is copied
    /// and the engine's lock released, before the snapshot file and the
    /// MANIFEST are written — where a busy engine goes on appending and may
    /// roll the journal.
    pub fn snapshot_interleaved(&self, between: impl FnOnce()) -> Result<Lsn> {
        self.sh.check()?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.sh.snapshot_with(between)
    }

    /// Takes a final snapshot, stops the background threads and releases the
    /// directory. Idempotent. In a `fork()` child it only marks the copy
    /// closed: the files, threads and lock are the parent's.
    pub fn close(&self) -> Result<()> {
        let sh = &self.sh;
        if sh.closed.swap(true, Ordering::AcqRel) || self.is_forked() {
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
        sh.wakes.closed();
        let snap = sh.snapshot();
        // With durability="os" the segments rolled away from were never
        // fsynced. A final snapshot deletes them; when it failed they hold
        // records only the journal has, so they are synced before the
        // flusher's last round (or the sync below) lets `DURABLE` say the
        // journal is on disk up to its last record.
        let unsynced = sh.inner.lock().journal.unsynced_closed();
        let older_synced =
            unsynced.iter().all(|p| File::open(p).and_then(|f| storage::sync_file(&sh.faults, &f)).is_ok());
        if older_synced {
            sh.sync.request();
        }
        sh.sync.shutdown();
        sh.spares.stop();
        sh.timer_cv.notify_all();
        sh.snap_cv.notify_all();
        let threads = std::mem::take(&mut *sh.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        // Whatever the snapshot did not cover is in the journal: make it
        // durable (segments rolled away from first). The active segment
        // stays for the next open to continue in; spares go.
        let files = sh.sync.take_files();
        let synced = older_synced && files.iter().all(|f| storage::sync_file(&sh.faults, f).is_ok());
        let mut g = sh.inner.lock();
        let mut marker = sh.marker.lock();
        if synced {
            marker.record(g.journal.next_lsn() - 1);
        }
        // Hold no file, mapping or lock once closed (a queue object may
        // outlive its close until the garbage collector finds it).
        marker.release();
        g.journal.release();
        sh.spares.discard(&sh.path);
        g.lock = None;
        // The messages too (every call is refused now): their memory, and
        // the snapshot file their payloads may point into; freed outside
        // the lock.
        let state = g.state.take();
        drop((marker, g));
        drop(state);
        snap.map(|_| ())
    }

    /// Test hook: make the next `count` calls at `point` fail with `errno`
    /// (`count = -1`: until cleared with `count = 0`).
    pub fn inject_fault(&self, point: FaultPoint, errno: i32, count: i64) {
        self.sh.faults.set(point, errno, count);
    }

    /// Test hook: holds the engine's lock for `d` (as a slow snapshot or
    /// disk would), to show that callers waiting for it let other threads run.
    pub fn hold_lock_for(&self, d: Duration) {
        let _g = self.sh.inner.lock();
        std::thread::sleep(d);
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

pub(crate) fn missing_manifest(dir: &Path, files: &recovery::Listing) -> Error {
    Error::corruption(
        dir.join(manifest::MANIFEST_FILE),
        0,
        format!(
            "the MANIFEST is missing, but the directory holds {} journal segment(s) and {} snapshot(s): \
             restore the MANIFEST from a backup, or rebuild it with `ringq repair {}` (the queue then \
             gets a new identity: deliveries taken before are refused)",
            files.wal_v1.len() + files.segments.len(),
            files.snapshots.len(),
            dir.display()
        ),
    )
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
    /// An fsync failed: nothing may change until a snapshot persisted the
    /// whole state (`lock_healthy`).
    pub(crate) fn mark_degraded(&self, g: &mut Inner, why: String) {
        if g.degraded.is_none() {
            g.degraded = Some(why);
        }
        g.degraded_gen += 1;
        self.degraded.store(true, Ordering::Release);
    }

    /// Refuses calls on a `fork()` child's copy of the engine.
    pub(crate) fn check(&self) -> Result<()> {
        if crate::fork::generation() != self.fork_generation {
            return Err(Error::Forked { path: self.path.clone(), pid: self.owner_pid });
        }
        Ok(())
    }

    /// `commit` of operations that add messages in `slots` (taken with
    /// `State::alloc_message`): on error the slots are free again.
    pub(crate) fn commit_new(&self, g: &mut Inner, ops: Vec<Op>, slots: Vec<u32>) -> Result<Lsn> {
        self.commit(g, ops).inspect_err(|_| {
            for s in slots {
                g.state.slab.unalloc(s);
            }
        })
    }

    /// Journals `ops` as one record and applies them. On error nothing changed.
    pub(crate) fn commit(&self, g: &mut Inner, mut ops: Vec<Op>) -> Result<Lsn> {
        if g.state.n_windowed > 0 {
            g.state.remember_acked(&mut ops, self.clock.now());
        }
        let Inner { journal, state, .. } = &mut *g;
        let topics = &state.topics;
        let lsn = match journal.append_named(&ops, &|t| topics.get(t as usize).map(|t| &*t.name), &self.sync) {
            Ok(lsn) => lsn,
            Err(e) => {
                if e.errno() == Some(libc::ENOSPC) {
                    // No room for a new segment: a snapshot lets the active
                    // one be started over (or frees older ones).
                    g.disk_full = true;
                    if !g.snapshot_wanted {
                        g.snapshot_wanted = true;
                        self.snap_cv.notify_one();
                    }
                }
                return Err(e);
            }
        };
        for op in ops {
            if let Err(e) = g.state.apply(op) {
                panic!("ringq internal error: a live operation did not apply: {e}");
            }
        }
        self.sync.written(lsn);
        if !g.state.unparked.is_empty() {
            for t in std::mem::take(&mut g.state.unparked) {
                self.wake_topic(g, t, usize::MAX);
            }
        }
        g.records_since_snapshot += 1;
        let mut due = g.records_since_snapshot >= self.opts.snapshot_every;
        if g.journal.rolls() != g.rolls_seen {
            // The journal grew by a segment: snapshot when what no snapshot
            // covers is big, and big next to the last snapshot (a snapshot
            // then costs at most half what the journal wrote since).
            g.rolls_seen = g.journal.rolls();
            let behind = g.journal.closed_bytes();
            due |= behind >= JOURNAL_SNAPSHOT_BYTES && behind >= 2 * g.snapshot_bytes;
        }
        if due && !g.snapshot_wanted {
            g.snapshot_wanted = true;
            self.snap_cv.notify_one();
        }
        Ok(lsn)
    }

    /// The lock, for a call that changes something: refused once closed or
    /// in a forked child; while an fsync failure is unresolved, first heals
    /// it with a snapshot (which persists the whole state) taken without
    /// holding the lock.
    pub(crate) fn lock_healthy(&self) -> Result<MutexGuard<'_, Inner>> {
        self.check()?;
        // Under `blocking::try_first` a heal (a snapshot) is not started
        // either: the caller runs the call again, free to wait.
        let trying = crate::blocking::trying();
        loop {
            let g = crate::blocking::lock(&self.inner)?;
            if g.closed {
                return Err(Error::Closed);
            }
            if g.degraded.is_none() {
                return Ok(g);
            }
            drop(g);
            if trying {
                return Err(Error::WouldBlock);
            }
            self.snapshot()?;
        }
    }

    /// The same check for a call already holding the lock (a blocked call
    /// that woke up): fails rather than heal under the lock.
    pub(crate) fn ensure_healthy(&self, g: &mut MutexGuard<'_, Inner>) -> Result<()> {
        if g.closed {
            return Err(Error::Closed);
        }
        match &g.degraded {
            None => Ok(()),
            Some(why) => Err(Error::storage(
                format!("the journal could not be synced ({why}); retry: the next call heals it with a snapshot"),
                &self.path,
                std::io::Error::from_raw_os_error(libc::EIO),
            )),
        }
    }

    /// Writes `file`'s policies to `POLICIES`; a failure is kept in
    /// `file.error` (cleared by the next write that succeeds).
    pub(crate) fn write_policies(&self, file: &mut PolicyFile) {
        file.error =
            crate::policies::write(&self.path, &file.policies, Some(&self.faults)).err().map(|e| e.to_string());
    }

    /// Retries a failed write of `POLICIES`.
    pub(crate) fn retry_policies(&self) {
        let mut file = self.policy_file.lock();
        if file.error.is_some() {
            self.write_policies(&mut file);
        }
    }

    /// The lock, for calls that only read: refused once closed.
    pub(crate) fn open_inner(&self) -> Result<MutexGuard<'_, Inner>> {
        self.check()?;
        let g = crate::blocking::lock(&self.inner)?;
        if g.closed { Err(Error::Closed) } else { Ok(g) }
    }

    pub(crate) fn next_token(&self, g: &mut Inner) -> u64 {
        loop {
            g.token_seq += 1;
            let t = g.token_salt.wrapping_add(g.token_seq);
            if t != 0 {
                return t;
            }
        }
    }

    /// Wakes up to `n` checkout waiters of `topic`.
    pub(crate) fn wake_topic(&self, g: &Inner, topic: u32, n: usize) {
        let t = &g.state.topics[topic as usize];
        if t.async_armed.load(Ordering::Relaxed) {
            t.async_armed.store(false, Ordering::Relaxed);
            self.wakes.signal(wake::READY);
        }
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

    /// Capacity was freed: wakes publishers waiting for room.
    pub(crate) fn room_freed(&self) {
        self.not_full.notify_all();
        self.wakes.signal(wake::ROOM);
    }

    /// Makes the timer thread re-plan if `at` is earlier than its wake-up.
    pub(crate) fn wake_timer_for(&self, g: &mut Inner, at: Micros) {
        if at < g.timer_next {
            g.timer_next = at;
            self.timer_cv.notify_one();
        }
    }
}

//! The engine's four threads. Each sleeps on a condvar until it has work:
//! - timer: lease expiries and delayed messages falling due (`due`), plus
//!   the time-based snapshot trigger; sleeps until the earliest deadline
//!   (of the engine's clock; the snapshot trigger is on real time);
//! - flusher: fsyncs the journal when a writer waits (`always`) or every
//!   `fsync_interval` while there are unsynced records (`batch`);
//! - snapshotter: writes snapshots when a trigger asks;
//! - preparer: creates the next journal segment before the writer needs it
//!   (`journal::prepare`).

use super::Shared;
use crate::storage;
use crate::sync::Job;
use crate::types::Durability;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) fn start(sh: &Arc<Shared>) {
    let mut threads = sh.threads.lock();
    let s = sh.clone();
    threads.push(spawn("ringq-timer", move || timer_loop(&s)));
    let s = sh.clone();
    threads.push(spawn("ringq-flusher", move || flusher_loop(&s)));
    let s = sh.clone();
    threads.push(spawn("ringq-snapshot", move || snapshot_loop(&s)));
    let s = sh.clone();
    threads.push(spawn("ringq-prepare", move || s.spares.run(&s.path, &s.faults, s.opts.segment_size)));
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new().name(name.into()).spawn(f).expect("spawning an engine thread")
}

fn timer_loop(sh: &Shared) {
    let mut g = sh.inner.lock();
    loop {
        if g.closed {
            return;
        }
        // A failed expiry keeps its leases for a retry a second later and
        // marks the engine degraded (`fire_due` does both): nothing to add.
        let _ = sh.fire_due(&mut g, sh.clock.now());
        // Time-based snapshot trigger.
        let snap_due = g.snapshot_at + sh.opts.snapshot_interval;
        if g.records_since_snapshot > 0 && Instant::now() >= snap_due && !g.snapshot_wanted {
            g.snapshot_wanted = true;
            sh.snap_cv.notify_one();
        }
        let next_timer = [g.state.leases.peek().map(|e| e.0), g.state.delays.peek()].into_iter().flatten().min();
        g.timer_next = next_timer.unwrap_or(u64::MAX);
        // A manual clock does not move by itself: its deadlines are met by
        // `advance_clock`, so only the snapshot trigger times this wait.
        let until_timer = next_timer.and_then(|t| sh.clock.until(t));
        let until_snap = snap_due.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        let sleep = until_timer.map_or(until_snap, |d| d.min(until_snap));
        sh.timer_cv.wait_for(&mut g, sleep);
    }
}

fn flusher_loop(sh: &Shared) {
    let interval = match sh.opts.durability {
        Durability::Batch => Some(sh.opts.fsync_interval),
        Durability::Always | Durability::Os => None,
    };
    loop {
        match sh.sync.next_job(interval) {
            Job::Stop => return,
            Job::Sync { upto, targets } => {
                let started = Instant::now();
                let res = targets.iter().try_for_each(|f| storage::sync_file(&sh.faults, f));
                sh.fsync_latency.observe(started.elapsed());
                let res = res.map_err(|e| {
                    let msg = format!("fsync of the journal failed: {e}");
                    let mut g = sh.inner.lock();
                    sh.mark_degraded(&mut g, msg.clone());
                    (e.raw_os_error(), msg)
                });
                if res.is_ok() {
                    sh.marker.lock().record(upto);
                }
                sh.sync.complete(upto, res);
            }
        }
    }
}

fn snapshot_loop(sh: &Shared) {
    loop {
        {
            let mut g = sh.inner.lock();
            while !g.snapshot_wanted && !g.closed {
                sh.snap_cv.wait(&mut g);
            }
            if g.closed {
                return;
            }
        }
        if let Err(e) = sh.snapshot() {
            // The journal still holds everything: publishing goes on, the
            // snapshot is retried on the next trigger, and stats() says why.
            let mut g = sh.inner.lock();
            g.snapshot_wanted = false;
            g.snapshot_error = Some(e.to_string());
        }
    }
}

//! The engine's four threads. Each sleeps on a condvar until it has work:
//! - timer: lease expiries and delayed messages falling due, plus the
//!   time-based snapshot trigger; sleeps until the earliest deadline;
//! - flusher: fsyncs the journal when a writer waits (`always`) or every
//!   `fsync_interval` while there are unsynced records (`batch`);
//! - snapshotter: writes snapshots when a trigger asks;
//! - preparer: creates the next journal segment before the writer needs it
//!   (`journal::prepare`).

use super::Shared;
use crate::storage;
use crate::sync::Job;
use crate::types::{Durability, now_micros};
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
        let now = now_micros();
        // Leases that ran out: back to ready, dead letter, or dropped.
        let mut ops = Vec::new();
        while let Some(id) = g.state.leases.pop_due(now) {
            ops.push(g.expiry_op(sh.opts.max_attempts, id, now, "no ack in time"));
        }
        if !ops.is_empty() {
            let n = ops.len();
            let kinds: Vec<(u64, bool)> = ops
                .iter()
                .map(|op| match op {
                    crate::record::Op::Requeue { id, .. } => (*id, true),
                    crate::record::Op::DeadLetter { id, .. } | crate::record::Op::Drop { id } => (*id, false),
                    _ => unreachable!(),
                })
                .collect();
            let topics: Vec<(u32, bool)> = kinds
                .iter()
                .map(|(id, _)| g.state.slab.get(*id).map(|m| (m.topic, m.superseded)).expect("exists"))
                .collect();
            match sh.commit(&mut g, ops) {
                Ok(_) => {
                    g.counters.expired += n as u64;
                    for ((_, requeued), (t, superseded)) in kinds.iter().zip(&topics) {
                        if *requeued {
                            sh.wake_topic(&g, *t, 1);
                        } else if *superseded {
                            g.counters.superseded_dropped += 1;
                        } else {
                            g.count_dead(*t);
                        }
                    }
                    sh.not_full.notify_all();
                }
                Err(e) => {
                    // The disk refused the record: keep the leases and retry soon.
                    let retry = now + 1_000_000;
                    for (id, _) in &kinds {
                        let token = g.state.slab.get(*id).map_or(0, |m| m.lease_token);
                        g.state.lease(*id, token, retry);
                    }
                    sh.mark_degraded(&mut g, e.to_string());
                }
            }
        }
        for t in g.state.release_due(now) {
            sh.wake_topic(&g, t, usize::MAX);
        }
        // Time-based snapshot trigger.
        let snap_due = g.snapshot_at + sh.opts.snapshot_interval;
        if g.records_since_snapshot > 0 && Instant::now() >= snap_due && !g.snapshot_wanted {
            g.snapshot_wanted = true;
            sh.snap_cv.notify_one();
        }
        let next_timer = [g.state.leases.peek().map(|e| e.0), g.state.delays.peek()].into_iter().flatten().min();
        g.timer_next = next_timer.unwrap_or(u64::MAX);
        let until_timer = next_timer.map(|t| Duration::from_micros(t.saturating_sub(now_micros())));
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

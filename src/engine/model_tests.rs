//! The engine against a plain model: random publishes (with and without
//! dedup keys, replace and keep, with and without a delay), checkouts (with
//! a fair share and leases of several lengths), acks, releases, nacks (with
//! and without a retry delay), extends, clean reopens and crashes (no close,
//! no snapshot: what SIGKILL leaves), and steps of time on the engine's
//! manual clock. Time moves only in those steps, so the model says exactly
//! which leases run out (attempt + 1 on the next delivery, dead letter after
//! the last attempt, dropped if superseded) and which delays fall due, and
//! in which order they join their topic. After every step the engine's
//! answers, counts and internal invariants must match.

use super::*;
use crate::clock::Clock;
use crate::types::{OnDuplicate, Wait};
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

const MAX_ATTEMPTS: u32 = 3;
const START: Micros = 1_700_000_000_000_000;
const SEC: Micros = 1_000_000;
/// Lease lengths a checkout picks from (seconds).
const LEASES: [u64; 3] = [5, 30, 3600];

#[derive(Debug, Clone)]
enum Step {
    Publish { topic: u8, key: Option<u8>, keep: bool, payload: u8, delay: Option<u8> },
    Batch { topic: u8, n: u8 },
    Checkout { topic: u8, max: u8, share: u8, lease: u8 },
    Ack { pick: u8 },
    Release { pick: u8, n: u8 },
    Nack { pick: u8, delay: Option<u8> },
    Extend { pick: u8, secs: u8 },
    Advance { secs: u8 },
    Reopen,
    Crash,
    Snapshot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..2, proptest::option::of(0u8..3), any::<bool>(), any::<u8>(), proptest::option::weighted(0.25, 1u8..40))
            .prop_map(|(topic, key, keep, payload, delay)| Step::Publish { topic, key, keep, payload, delay }),
        1 => (0u8..2, 1u8..5).prop_map(|(topic, n)| Step::Batch { topic, n }),
        3 => (0u8..2, 1u8..4, 1u8..4, 0u8..3).prop_map(|(topic, max, share, lease)| Step::Checkout { topic, max, share, lease }),
        2 => any::<u8>().prop_map(|pick| Step::Ack { pick }),
        1 => (any::<u8>(), 1u8..4).prop_map(|(pick, n)| Step::Release { pick, n }),
        2 => (any::<u8>(), proptest::option::weighted(0.3, 1u8..20)).prop_map(|(pick, delay)| Step::Nack { pick, delay }),
        1 => (any::<u8>(), 1u8..60).prop_map(|(pick, secs)| Step::Extend { pick, secs }),
        3 => (0u8..45).prop_map(|secs| Step::Advance { secs }),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
        1 => Just(Step::Snapshot),
    ]
}

#[derive(Debug, Clone)]
struct MMsg {
    topic: u8,
    key: Option<u8>,
    payload: Vec<u8>,
    attempt: u32,
    version: u32,
    superseded: bool,
}

/// A delivery not yet acked, nacked, released or expired.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: u64,
    token: u64,
    deadline: Micros,
}

#[derive(Default)]
struct Model {
    /// The clock (microseconds since `START`).
    now: Micros,
    ready: [VecDeque<u64>; 2],
    /// (due, id) of delayed messages.
    delayed: Vec<(Micros, u64)>,
    msgs: HashMap<u64, MMsg>,
    in_flight: Vec<Lease>,
    keys: HashMap<(u8, u8), u64>,
    dead: usize,
    /// (due, id) of delays that fell due since the last snapshot and still
    /// wait in a ready list. A delay falling due is not journaled, so
    /// recovery without a newer snapshot finds them delayed and makes them
    /// ready after everything else (see `recover`): they lose their place
    /// to messages that became ready after them. (A snapshot is skipped
    /// when no record was journaled since the last one, so a delay falling
    /// due alone does not get one either.)
    released: Vec<(Micros, u64)>,
}

impl Model {
    fn remove(&mut self, id: u64) {
        let m = self.msgs.remove(&id).expect("model message");
        if let Some(k) = m.key
            && self.keys.get(&(m.topic, k)) == Some(&id)
        {
            self.keys.remove(&(m.topic, k));
        }
    }

    /// Back to ready (at the end of its topic), or delayed until `due`.
    fn enter(&mut self, id: u64, due: Option<Micros>) {
        match due {
            Some(due) => self.delayed.push((due, id)),
            None => self.ready[self.msgs[&id].topic as usize].push_back(id),
        }
    }

    /// What a failure (nack, expiry, or in flight at a restart) does.
    fn fail(&mut self, id: u64, retry_at: Option<Micros>) {
        let m = &self.msgs[&id];
        if m.superseded {
            self.remove(id);
        } else if m.attempt >= MAX_ATTEMPTS {
            self.dead += 1;
            self.remove(id);
        } else {
            self.enter(id, retry_at);
        }
    }

    fn take_lease(&mut self, pick: u8) -> Option<Lease> {
        if self.in_flight.is_empty() {
            return None;
        }
        Some(self.in_flight.remove(pick as usize % self.in_flight.len()))
    }

    /// What recovery rebuilds from the last snapshot and the journal: their
    /// order, then the messages in flight (back, in id order), then the
    /// delays that fell due since that snapshot (in due order: the journal
    /// never said they had).
    fn recover(&mut self) {
        let released: std::collections::HashSet<u64> = self.released.iter().map(|r| r.1).collect();
        for r in &mut self.ready {
            r.retain(|id| !released.contains(id));
        }
        self.restart();
        self.released.sort_unstable();
        for (_, id) in self.released.clone() {
            self.enter(id, None);
        }
    }

    fn restart(&mut self) {
        let mut ids: Vec<u64> = self.in_flight.drain(..).map(|l| l.id).collect();
        ids.sort_unstable();
        for id in ids {
            self.fail(id, None);
        }
    }

    /// Moves the clock to `to`: at each instant something falls due on the
    /// way, leases that ran out (by deadline, then id) fail, then delays
    /// due (by due time, then id) become ready. Returns the expired leases.
    fn advance(&mut self, to: Micros) -> Vec<Lease> {
        let mut expired = Vec::new();
        loop {
            let next = self.in_flight.iter().map(|l| l.deadline).chain(self.delayed.iter().map(|d| d.0)).min();
            let Some(t) = next.filter(|t| *t <= to) else { break };
            let mut out: Vec<Lease> = self.in_flight.iter().filter(|l| l.deadline <= t).copied().collect();
            out.sort_by_key(|l| (l.deadline, l.id));
            self.in_flight.retain(|l| l.deadline > t);
            for l in &out {
                self.fail(l.id, None);
            }
            expired.extend(out);
            let mut due: Vec<(Micros, u64)> = self.delayed.iter().filter(|d| d.0 <= t).copied().collect();
            due.sort_unstable();
            self.delayed.retain(|d| d.0 > t);
            for (_, id) in &due {
                self.enter(*id, None);
            }
            self.released.extend(due);
        }
        self.now = to;
        expired
    }
}

fn topic_name(t: u8) -> &'static str {
    ["alpha", "beta"][t as usize]
}

fn opts(now: Micros) -> Options {
    Options {
        max_attempts: MAX_ATTEMPTS,
        segment_size: 64 * 1024,
        capacity: 10_000,
        clock: Clock::Manual { start: START + now },
        ..Options::default()
    }
}

fn secs(s: u8) -> Duration {
    Duration::from_secs(s.into())
}

/// Whether a snapshot now would be written: only if a record was journaled
/// since the last one (`Shared::prepare_snapshot`).
fn snapshot_would_write(e: &Engine) -> bool {
    let g = e.sh.inner.lock();
    g.journal.next_lsn() - 1 != g.snapshot_lsn || g.report.snapshot_path.is_none()
}

/// Stops an engine the way SIGKILL would: no snapshot, no final fsync; the
/// journal's pages are already in the page cache.
fn crash(e: Engine) {
    let sh = e.sh.clone();
    sh.closed.store(true, Ordering::Release);
    sh.inner.lock().closed = true;
    sh.sync.shutdown();
    sh.spares.stop();
    sh.timer_cv.notify_all();
    sh.snap_cv.notify_all();
    for t in std::mem::take(&mut *sh.threads.lock()) {
        t.join().unwrap();
    }
    sh.inner.lock().lock = None;
    // The process's memory goes with it: the messages, and the snapshot
    // their payloads may point into (its entry in the payloads' table).
    let mut g = sh.inner.lock();
    let state = g.state.take();
    drop((g, state));
    std::mem::forget(e);
}

fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let mut e = Engine::open(&path, opts(0)).unwrap();
    let mut m = Model::default();
    for s in steps {
        match s {
            Step::Publish { topic, key, keep, payload, delay } => {
                let key_s = key.map(|k| format!("k{k}"));
                let p = Publish {
                    topic: topic_name(topic),
                    payload: &[payload; 3],
                    dedup_key: key_s.as_deref(),
                    delay: delay.map(secs),
                    ..Default::default()
                };
                let due = delay.map(|d| m.now + u64::from(d) * SEC);
                let on_duplicate = if keep { OnDuplicate::Keep } else { OnDuplicate::Replace };
                let (id, _) = e.publish(p, PublishOpts { on_duplicate, expected_version: None }, Wait::No).unwrap();
                let holder = key.and_then(|k| m.keys.get(&(topic, k)).copied());
                match holder {
                    Some(h) if keep => assert_eq!(id, h, "keep returns the live holder"),
                    Some(h) if m.in_flight.iter().any(|l| l.id == h) => {
                        assert_ne!(id, h, "an in-flight holder is superseded by a new message");
                        let old = m.msgs.get_mut(&h).unwrap();
                        old.superseded = true;
                        let version = old.version + 1;
                        m.msgs.insert(
                            id,
                            MMsg { topic, key, payload: vec![payload; 3], attempt: 0, version, superseded: false },
                        );
                        m.enter(id, due);
                        m.keys.insert((topic, key.unwrap()), id);
                    }
                    Some(h) => {
                        // Ready or delayed: replaced in place (position and
                        // due time kept; the new publish's delay is moot).
                        assert_eq!(id, h, "a ready or delayed holder is replaced in place");
                        let old = m.msgs.get_mut(&h).unwrap();
                        old.payload = vec![payload; 3];
                        old.version += 1;
                    }
                    None => {
                        assert!(!m.msgs.contains_key(&id), "new id {id:x} is fresh");
                        m.msgs.insert(
                            id,
                            MMsg { topic, key, payload: vec![payload; 3], attempt: 0, version: 1, superseded: false },
                        );
                        m.enter(id, due);
                        if let Some(k) = key {
                            m.keys.insert((topic, k), id);
                        }
                    }
                }
            }
            Step::Batch { topic, n } => {
                let payloads: Vec<Vec<u8>> = (0..n).map(|i| vec![200 + i; 2]).collect();
                let items: Vec<Publish<'_>> = payloads
                    .iter()
                    .map(|p| Publish { topic: topic_name(topic), payload: p, ..Default::default() })
                    .collect();
                let (ids, _) = e.publish_many(&items, PublishOpts::default(), Wait::No).unwrap();
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "batch ids increase");
                for (id, p) in ids.into_iter().zip(payloads) {
                    m.msgs.insert(id, MMsg { topic, key: None, payload: p, attempt: 0, version: 1, superseded: false });
                    m.ready[topic as usize].push_back(id);
                }
            }
            Step::Checkout { topic, max, share, lease } => {
                let lease = LEASES[lease as usize];
                let c = crate::Checkout {
                    share: share as usize,
                    ..crate::Checkout::new(max as usize, Duration::from_secs(lease), Wait::No)
                };
                let got = e.checkout_with(topic_name(topic), c).unwrap();
                let ready = m.ready[topic as usize].len();
                let take = (max as usize).min(ready.div_ceil(share as usize));
                let want: Vec<u64> = m.ready[topic as usize].iter().take(take).copied().collect();
                assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), want, "FIFO per topic");
                for d in got {
                    m.ready[topic as usize].pop_front();
                    m.released.retain(|r| r.1 != d.id);
                    let mm = m.msgs.get_mut(&d.id).unwrap();
                    mm.attempt += 1;
                    assert_eq!(d.attempt, mm.attempt, "attempt counts deliveries");
                    assert_eq!(&d.payload[..], &mm.payload[..]);
                    assert_eq!(d.version, mm.version);
                    let deadline = m.now + lease * SEC;
                    assert_eq!(d.lease_deadline, START + deadline, "the deadline is the clock's");
                    m.in_flight.push(Lease { id: d.id, token: d.lease_token, deadline });
                }
            }
            Step::Ack { pick } => {
                let Some(l) = m.take_lease(pick) else { continue };
                let out = e.ack(&[(l.id, l.token)], &[], Wait::No).unwrap();
                assert!(out.lost.is_empty());
                m.remove(l.id);
                // A second ack with the same token is stale.
                let again = e.ack(&[(l.id, l.token)], &[], Wait::No).unwrap();
                assert_eq!(again.lost, vec![l.id]);
            }
            Step::Release { pick, n } => {
                let mut picked = Vec::new();
                for k in 0..n {
                    match m.take_lease(pick.wrapping_add(k)) {
                        Some(l) => picked.push((l.id, l.token)),
                        None => break,
                    }
                }
                if picked.is_empty() {
                    continue;
                }
                let out = e.release(&picked).unwrap();
                assert!(out.lost.is_empty());
                // They go first, in the order given; their delivery is undone.
                for (id, _) in picked.iter().rev() {
                    let mm = m.msgs.get_mut(id).unwrap();
                    if mm.superseded {
                        m.remove(*id);
                        continue;
                    }
                    mm.attempt -= 1;
                    m.ready[mm.topic as usize].push_front(*id);
                }
                // Released leases are stale.
                let again = e.release(&picked[..1]).unwrap();
                assert_eq!(again.lost, vec![picked[0].0]);
            }
            Step::Nack { pick, delay } => {
                let Some(l) = m.take_lease(pick) else { continue };
                e.nack(l.id, l.token, delay.map(secs), Failure::default(), None).unwrap();
                m.fail(l.id, delay.map(|d| m.now + u64::from(d) * SEC));
            }
            Step::Extend { pick, secs: by } => {
                let Some(mut l) = m.take_lease(pick) else { continue };
                let deadline = e.extend(l.id, l.token, secs(by)).unwrap();
                l.deadline = m.now + u64::from(by) * SEC;
                assert_eq!(deadline, START + l.deadline, "extend counts from the clock's now");
                m.in_flight.push(l);
            }
            Step::Advance { secs: by } => {
                let to = m.now + u64::from(by) * SEC;
                assert_eq!(e.advance_clock(secs(by)).unwrap(), START + to);
                for l in m.advance(to) {
                    // Expired: every call with its lease is refused.
                    assert!(matches!(e.extend(l.id, l.token, secs(1)), Err(Error::LeaseLost { .. })));
                    assert_eq!(e.ack(&[(l.id, l.token)], &[], Wait::No).unwrap().lost, vec![l.id]);
                }
            }
            Step::Reopen => {
                if snapshot_would_write(&e) {
                    m.released.clear(); // close writes a snapshot
                }
                e.close().unwrap();
                drop(e);
                e = Engine::open(&path, opts(m.now)).unwrap();
                m.recover();
            }
            Step::Crash => {
                crash(e);
                e = Engine::open(&path, opts(m.now)).unwrap();
                m.recover();
            }
            Step::Snapshot => {
                if snapshot_would_write(&e) {
                    m.released.clear();
                }
                e.snapshot().unwrap();
            }
        }
        assert_eq!(e.now(), START + m.now, "only advance_clock moves the clock");
        let g = e.sh.inner.lock();
        g.state.check_invariants();
        let (ready, in_flight, delayed) = g.state.totals();
        assert_eq!(ready, m.ready.iter().map(|r| r.len()).sum::<usize>(), "ready count");
        assert_eq!(in_flight, m.in_flight.len(), "in-flight count");
        assert_eq!(delayed, m.delayed.len(), "delayed count");
        assert_eq!(g.state.dlq.len(), m.dead, "dead letters");
        assert_eq!(g.state.slab.live(), m.msgs.len(), "live messages");
    }
    e.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model_through_publish_checkout_ack_nack_time_reopen_and_crash(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        run(steps);
    }
}

/// A fixed run through the time steps, so they are exercised whatever the
/// random cases draw: a lease running out (attempt + 1), running out on the
/// last attempt (dead letter), a superseded one running out (dropped), a
/// retry delay, a scheduled publish and an extend, across a reopen.
#[test]
fn engine_matches_model_through_expiry_delays_and_supersede() {
    let co = |topic, lease| Step::Checkout { topic, max: 3, share: 1, lease };
    let publish = |key, payload, delay| Step::Publish { topic: 0, key, keep: false, payload, delay };
    run(vec![
        publish(None, 1, None),
        publish(Some(0), 2, None),
        publish(None, 3, Some(10)),
        co(0, 0),
        publish(Some(0), 4, None), // supersedes the in-flight holder of k0
        Step::Extend { pick: 0, secs: 50 },
        Step::Advance { secs: 6 },
        co(0, 1),
        Step::Nack { pick: 0, delay: Some(3) },
        Step::Advance { secs: 4 },
        co(0, 0),
        Step::Advance { secs: 5 },
        co(0, 0),
        Step::Reopen,
        co(0, 0),
        Step::Advance { secs: 5 },
        co(0, 2),
        Step::Advance { secs: 44 },
        Step::Advance { secs: 44 },
    ]);
}

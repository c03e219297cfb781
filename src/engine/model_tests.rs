//! The engine against a plain model: random publishes (with and without
//! dedup keys, replace and keep), checkouts (with a fair share), acks,
//! releases, nacks, clean reopens and crashes (no close, no snapshot: what
//! SIGKILL leaves). After every step
//! the engine's answers, counts and internal invariants must match.

use super::*;
use crate::types::{OnDuplicate, Wait};
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Step {
    Publish { topic: u8, key: Option<u8>, keep: bool, payload: u8 },
    Batch { topic: u8, n: u8 },
    Checkout { topic: u8, max: u8, share: u8 },
    Ack { pick: u8 },
    Release { pick: u8, n: u8 },
    Nack { pick: u8 },
    Reopen,
    Crash,
    Snapshot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..2, proptest::option::of(0u8..3), any::<bool>(), any::<u8>())
            .prop_map(|(topic, key, keep, payload)| Step::Publish { topic, key, keep, payload }),
        1 => (0u8..2, 1u8..5).prop_map(|(topic, n)| Step::Batch { topic, n }),
        3 => (0u8..2, 1u8..4, 1u8..4).prop_map(|(topic, max, share)| Step::Checkout { topic, max, share }),
        2 => any::<u8>().prop_map(|pick| Step::Ack { pick }),
        1 => (any::<u8>(), 1u8..4).prop_map(|(pick, n)| Step::Release { pick, n }),
        2 => any::<u8>().prop_map(|pick| Step::Nack { pick }),
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

#[derive(Default)]
struct Model {
    ready: [VecDeque<u64>; 2],
    msgs: HashMap<u64, MMsg>,
    /// (id, lease token) of deliveries not yet acked or nacked.
    in_flight: Vec<(u64, u64)>,
    keys: HashMap<(u8, u8), u64>,
    dead: usize,
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

    /// What a failure (nack, or in flight at a restart) does.
    fn fail(&mut self, id: u64) {
        let m = &self.msgs[&id];
        if m.superseded {
            self.remove(id);
        } else if m.attempt >= MAX_ATTEMPTS {
            self.dead += 1;
            self.remove(id);
        } else {
            self.ready[m.topic as usize].push_back(id);
        }
    }

    fn restart(&mut self) {
        let mut ids: Vec<u64> = self.in_flight.drain(..).map(|(id, _)| id).collect();
        ids.sort_unstable();
        for id in ids {
            self.fail(id);
        }
    }
}

fn topic_name(t: u8) -> &'static str {
    ["alpha", "beta"][t as usize]
}

fn opts() -> Options {
    Options { max_attempts: MAX_ATTEMPTS, segment_size: 64 * 1024, capacity: 10_000, ..Options::default() }
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
    std::mem::forget(e);
}

fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let mut e = Engine::open(&path, opts()).unwrap();
    let mut m = Model::default();
    for s in steps {
        match s {
            Step::Publish { topic, key, keep, payload } => {
                let key_s = key.map(|k| format!("k{k}"));
                let p = Publish {
                    topic: topic_name(topic),
                    payload: &[payload; 3],
                    dedup_key: key_s.as_deref(),
                    ..Default::default()
                };
                let on_duplicate = if keep { OnDuplicate::Keep } else { OnDuplicate::Replace };
                let (id, _) = e.publish(p, PublishOpts { on_duplicate, expected_version: None }, Wait::No).unwrap();
                let holder = key.and_then(|k| m.keys.get(&(topic, k)).copied());
                match holder {
                    Some(h) if keep => assert_eq!(id, h, "keep returns the live holder"),
                    Some(h) if m.in_flight.iter().any(|(i, _)| *i == h) => {
                        assert_ne!(id, h, "an in-flight holder is superseded by a new message");
                        let old = m.msgs.get_mut(&h).unwrap();
                        old.superseded = true;
                        let version = old.version + 1;
                        m.msgs.insert(
                            id,
                            MMsg { topic, key, payload: vec![payload; 3], attempt: 0, version, superseded: false },
                        );
                        m.ready[topic as usize].push_back(id);
                        m.keys.insert((topic, key.unwrap()), id);
                    }
                    Some(h) => {
                        assert_eq!(id, h, "a ready holder is replaced in place");
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
                        m.ready[topic as usize].push_back(id);
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
            Step::Checkout { topic, max, share } => {
                let c = crate::Checkout {
                    share: share as usize,
                    ..crate::Checkout::new(max as usize, Duration::from_secs(3600), Wait::No)
                };
                let got = e.checkout_with(topic_name(topic), c).unwrap();
                let ready = m.ready[topic as usize].len();
                let take = (max as usize).min(ready.div_ceil(share as usize));
                let want: Vec<u64> = m.ready[topic as usize].iter().take(take).copied().collect();
                assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), want, "FIFO per topic");
                for d in got {
                    m.ready[topic as usize].pop_front();
                    let mm = m.msgs.get_mut(&d.id).unwrap();
                    mm.attempt += 1;
                    assert_eq!(d.attempt, mm.attempt, "attempt counts deliveries");
                    assert_eq!(&d.payload[..], &mm.payload[..]);
                    assert_eq!(d.version, mm.version);
                    m.in_flight.push((d.id, d.lease_token));
                }
            }
            Step::Ack { pick } => {
                if m.in_flight.is_empty() {
                    continue;
                }
                let (id, token) = m.in_flight.remove(pick as usize % m.in_flight.len());
                let out = e.ack(&[(id, token)], &[], Wait::No).unwrap();
                assert!(out.lost.is_empty());
                m.remove(id);
                // A second ack with the same token is stale.
                let again = e.ack(&[(id, token)], &[], Wait::No).unwrap();
                assert_eq!(again.lost, vec![id]);
            }
            Step::Release { pick, n } => {
                if m.in_flight.is_empty() {
                    continue;
                }
                let mut picked = Vec::new();
                for k in 0..n as usize {
                    if m.in_flight.is_empty() {
                        break;
                    }
                    picked.push(m.in_flight.remove((pick as usize + k) % m.in_flight.len()));
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
            Step::Nack { pick } => {
                if m.in_flight.is_empty() {
                    continue;
                }
                let (id, token) = m.in_flight.remove(pick as usize % m.in_flight.len());
                e.nack(id, token, None, Failure::default(), None).unwrap();
                m.fail(id);
            }
            Step::Reopen => {
                e.close().unwrap();
                drop(e);
                e = Engine::open(&path, opts()).unwrap();
                m.restart();
            }
            Step::Crash => {
                crash(e);
                e = Engine::open(&path, opts()).unwrap();
                m.restart();
            }
            Step::Snapshot => {
                e.snapshot().unwrap();
            }
        }
        let g = e.sh.inner.lock();
        g.state.check_invariants();
        let (ready, in_flight, _) = g.state.totals();
        assert_eq!(ready, m.ready.iter().map(|r| r.len()).sum::<usize>(), "ready count");
        assert_eq!(in_flight, m.in_flight.len(), "in-flight count");
        assert_eq!(g.state.dlq.len(), m.dead, "dead letters");
        assert_eq!(g.state.slab.live(), m.msgs.len(), "live messages");
    }
    e.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model_through_publish_checkout_ack_nack_reopen_and_crash(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        run(steps);
    }
}

//! Every call the Python bindings make under `blocking::try_first` gives up
//! with `WouldBlock` having changed nothing (lock held elsewhere, or a failed
//! fsync to heal), never gives up otherwise, and leaves the flag cleared: in
//! one process and as the owner of a shared queue. (The retry then applies
//! the call exactly once.)
use super::*;
use crate::blocking::{try_first, trying};
use crate::engine::{Checkout, Publish, PublishOpts, TopicPolicy};
use crate::shared::SharedQueue;
use crate::store::Store;
use crate::types::{Failure, Options, Wait};
use std::sync::Barrier;

fn fp(e: &Engine) -> String {
    let g = e.sh.inner.lock();
    let topics: Vec<_> = g
        .state
        .topics
        .iter()
        .map(|t| (t.name.to_string(), t.n_ready, t.n_in_flight, t.n_delayed, t.interrupts, t.waiters))
        .collect();
    let msgs: Vec<_> = g
        .state
        .slab
        .iter()
        .map(|m| (m.id, format!("{:?}", m.state), m.lease_token, m.lease_deadline, m.attempt, m.version, m.superseded))
        .collect();
    format!(
        "lsn={} c={:?} topics={:?} msgs={:?} pol={} tok={} tn={} dd={} live={} dlq={} rss={} sw={} deg={:?}/{} durable={}",
        g.journal.next_lsn(),
        g.counters,
        topics,
        msgs,
        g.policies.len(),
        g.token_seq,
        g.timer_next,
        g.state.dedup.len(),
        g.state.slab.live(),
        g.state.dlq.len(),
        g.records_since_snapshot,
        g.snapshot_wanted,
        g.degraded,
        g.degraded_gen,
        e.sh.sync.durable()
    )
}

type Op<'a> = (&'static str, Box<dyn Fn(&dyn Store) -> crate::Result<()> + 'a>);

fn ops<'a>(leases: &'a [(u64, u64)], dead: u64) -> Vec<Op<'a>> {
    let p = || Publish { topic: "a", payload: b"new", dedup_key: Some("k1"), ..Default::default() };
    let f = Failure::default();
    vec![
        ("publish", Box::new(move |s| s.publish(p(), PublishOpts::default(), Wait::No).map(|_| ()))),
        (
            "publish_new_topic",
            Box::new(move |s| {
                s.publish(
                    Publish { topic: "brand_new", payload: b"x", ..Default::default() },
                    PublishOpts::default(),
                    Wait::No,
                )
                .map(|_| ())
            }),
        ),
        ("publish_many", Box::new(move |s| s.publish_many(&[p(), p()], PublishOpts::default(), Wait::No).map(|_| ()))),
        ("publish_payloads", Box::new(|s| s.publish_payloads("a", &[b"p1", b"p2"], Wait::No).map(|_| ()))),
        (
            "checkout",
            Box::new(|s| s.checkout_with("a", Checkout::new(1, Duration::from_secs(30), Wait::No)).map(|_| ())),
        ),
        (
            "checkout_new_topic",
            Box::new(|s| s.checkout_with("zz", Checkout::new(1, Duration::from_secs(30), Wait::No)).map(|_| ())),
        ),
        ("interrupts", Box::new(|s| s.interrupts("new_t1").map(|_| ()))),
        ("interrupt", Box::new(|s| s.interrupt("a"))),
        ("ack", Box::new(move |s| s.ack(&leases[0..1], &[], Wait::No).map(|_| ()))),
        ("ack_publish", Box::new(move |s| s.ack(&leases[1..2], &[p()], Wait::No).map(|_| ()))),
        ("release", Box::new(move |s| s.release(&leases[2..3]).map(|_| ()))),
        ("nack", Box::new(move |s| s.nack(leases[3].0, leases[3].1, None, f.clone(), None).map(|_| ()))),
        ("extend", Box::new(move |s| s.extend(leases[4].0, leases[4].1, Duration::from_secs(99)).map(|_| ()))),
        (
            "set_topic_policy",
            Box::new(|s| s.set_topic_policy("pol_t", TopicPolicy { max_attempts: Some(3), handler: None })),
        ),
        ("is_superseded", Box::new(move |s| s.is_superseded(leases[0].0).map(|_| ()))),
        ("stats", Box::new(|s| s.stats().map(|_| ()))),
        ("histograms", Box::new(|s| s.histograms().map(|_| ()))),
        ("topic_stats", Box::new(|s| s.topic_stats().map(|_| ()))),
        ("dlq_list", Box::new(|s| s.dlq_list(None, None, None).map(|_| ()))),
        ("dlq_get", Box::new(move |s| s.dlq_get(dead).map(|_| ()))),
        ("dlq_replay", Box::new(move |s| s.dlq_replay(Some(&[dead])).map(|_| ()))),
        ("dlq_purge", Box::new(move |s| s.dlq_purge(Some(&[dead])).map(|_| ()))),
    ]
}

fn setup(s: &dyn Store) -> (Vec<(u64, u64)>, u64) {
    for i in 0..8 {
        let k = format!("k{i}");
        s.publish(
            Publish { topic: "a", payload: b"p", dedup_key: Some(&k), ..Default::default() },
            PublishOpts::default(),
            Wait::No,
        )
        .unwrap();
    }
    let ds = s.checkout_with("a", Checkout::new(6, Duration::from_secs(600), Wait::No)).unwrap();
    let leases: Vec<(u64, u64)> = ds.iter().map(|d| (d.id, d.lease_token)).collect();
    s.nack(leases[5].0, leases[5].1, None, Failure::default(), Some("x")).unwrap();
    let dead = s.dlq_list(None, None, None).unwrap()[0].message.id;
    (leases, dead)
}

/// Everything written so far made durable, so the flusher has nothing to
/// do while a call is measured (its batch-mode rounds would move `durable`
/// on their own).
fn settle(e: &Engine) {
    let last = e.sh.inner.lock().journal.next_lsn() - 1;
    if last > 0 {
        e.sh.sync.wait_durable(last).expect("fsync");
    }
}

fn check(store: &dyn Store, e: &Engine, label: &str) {
    let (leases, dead) = setup(store);
    // 1. Lock held elsewhere: every call gives up unchanged.
    for (name, op) in ops(&leases, dead) {
        settle(e);
        let before = fp(e);
        let hold = Barrier::new(2);
        let release = Barrier::new(2);
        let r = std::thread::scope(|sc| {
            sc.spawn(|| {
                let _g = e.sh.inner.lock();
                hold.wait();
                release.wait();
            });
            hold.wait();
            let r = try_first(|| op(store));
            assert!(!trying());
            release.wait();
            r
        });
        let after = fp(e);
        let wb = matches!(r, Err(Error::WouldBlock));
        if wb {
            assert_eq!(before, after, "{label}/{name}: changed state before giving up");
        }
    }
    // 2. Degraded (a failed fsync to heal), lock free.
    for (name, op) in ops(&leases, dead) {
        {
            let mut g = e.sh.inner.lock();
            e.sh.mark_degraded(&mut g, "review".into());
        }
        settle(e);
        let before = fp(e);
        let r = try_first(|| op(store));
        assert!(!trying());
        let after = fp(e);
        let wb = matches!(r, Err(Error::WouldBlock));
        if wb {
            assert_eq!(before, after, "{label}/{name}: changed state before giving up (degraded)");
        }
        // The retry (free to wait) heals and never gives up.
        let r2 = op(store);
        assert!(!matches!(r2, Err(Error::WouldBlock)), "{label}/{name}: WouldBlock outside try_first");
    }
    // 3. Free and healthy: never WouldBlock.
    for (name, op) in ops(&leases, dead) {
        let r = try_first(|| op(store));
        assert!(!trying());
        assert!(!matches!(r, Err(Error::WouldBlock)), "{label}/{name}: WouldBlock with a free lock");
    }
}

#[test]
fn every_bound_call_under_try_first_gives_up_unchanged_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("local"), Options::default()).unwrap();
    check(&e, &e, "local");
    e.close().unwrap();
    let q = SharedQueue::open(tmp.path().join("shared"), Options::default()).unwrap();
    assert_eq!(q.role(), "owner");
    let qs: &dyn Store = &q;
    let mut done = false;
    q.with_engine(&mut |e| {
        check(qs, e, "owner");
        done = true;
    });
    assert!(done);
    q.close().unwrap();
}

//! The engine calls a dispatcher relies on: interrupting blocked checkouts
//! (sticky with `since`), fair-share checkouts, releasing unstarted
//! deliveries, and per-topic policies (max attempts, handler name on dead
//! letters).

use ringq::{Checkout, Clock, Engine, Failure, Options, Publish, PublishOpts, TopicPolicy, Wait};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(60);

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir.join("q"), Options { segment_size: 64 * 1024, max_attempts: 5, ..Options::default() }).unwrap()
}

fn publish(e: &Engine, topic: &str) -> u64 {
    e.publish(Publish { topic, payload: b"x", ..Default::default() }, PublishOpts::default(), Wait::No).unwrap().0
}

#[test]
fn interrupt_wakes_a_blocked_checkout_which_returns_empty_and_later_calls_wait_again() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Arc::new(open(tmp.path()));
    let t0 = Instant::now();
    let waiter = {
        let e = e.clone();
        std::thread::spawn(move || e.checkout("t", 1, LEASE, Wait::Forever).unwrap().len())
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished(), "checkout must block while nothing is ready");
    // The waiter may not be inside checkout yet on a loaded machine: an
    // interrupt only wakes calls already waiting, so repeat until it returns.
    while !waiter.is_finished() {
        e.interrupt("t").unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "interrupt never woke the checkout");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(waiter.join().unwrap(), 0);
    // An interrupt is not sticky: the next checkout waits for its timeout.
    let t0 = Instant::now();
    let got = e.checkout("t", 1, LEASE, Wait::Until(Instant::now() + Duration::from_millis(150))).unwrap();
    assert!(got.is_empty() && t0.elapsed() >= Duration::from_millis(140));
    // Interrupting another topic (even an unknown one) does not wake "t".
    e.interrupt("other").unwrap();
    e.interrupt("never-seen").unwrap();
    publish(&e, "t");
    assert_eq!(e.checkout("t", 1, LEASE, Wait::Forever).unwrap().len(), 1);
}

#[test]
fn an_interrupt_before_the_checkout_starts_waiting_still_stops_it_when_it_passes_since() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open(tmp.path());
    // A worker reads the count, decides to wait... and the interrupt lands
    // before it is inside checkout: with `since` it returns at once.
    let since = e.interrupts("t").unwrap();
    e.interrupt("t").unwrap();
    let t0 = Instant::now();
    let c = Checkout { since: Some(since), ..Checkout::new(1, LEASE, Wait::Forever) };
    assert!(e.checkout_with("t", c).unwrap().is_empty());
    assert!(t0.elapsed() < Duration::from_secs(1), "it must not wait");
    // With the current count it waits (here: for its timeout).
    let now = e.interrupts("t").unwrap();
    assert_eq!(now, since + 1);
    let c = Checkout {
        since: Some(now),
        ..Checkout::new(1, LEASE, Wait::Until(Instant::now() + Duration::from_millis(50)))
    };
    let t0 = Instant::now();
    assert!(e.checkout_with("t", c).unwrap().is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(45));
    // What is ready is still taken.
    publish(&e, "t");
    let c = Checkout { since: Some(since), ..Checkout::new(1, LEASE, Wait::Forever) };
    assert_eq!(e.checkout_with("t", c).unwrap().len(), 1);
}

#[test]
fn a_worker_of_a_pool_takes_its_fair_share_of_what_is_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open(tmp.path());
    for _ in 0..6 {
        publish(&e, "t");
    }
    let take = |share| {
        let c = Checkout { share, ..Checkout::new(16, LEASE, Wait::No) };
        e.checkout_with("t", c).unwrap().len()
    };
    // Three workers, six messages: ceil(6/3), ceil(4/3), ceil(2/3): all
    // three start at once, one message is left for whoever is free first.
    assert_eq!((take(3), take(3), take(3)), (2, 2, 1));
    for _ in 0..4 {
        publish(&e, "t");
    }
    // Five ready: ceil(5/3) = 2, ceil(3/3) = 1, ceil(2/3) = 1; a lone worker takes all.
    assert_eq!((take(3), take(3), take(3), take(1)), (2, 1, 1, 1));
}

#[test]
fn released_deliveries_go_first_with_their_delivery_undone_and_stale_ones_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open(tmp.path());
    let ids: Vec<u64> = (0..4).map(|_| publish(&e, "t")).collect();
    let got = e.checkout("t", 3, LEASE, Wait::No).unwrap();
    assert!(got.iter().all(|d| d.attempt == 1));
    let leases: Vec<(u64, u64)> = got.iter().map(|d| (d.id, d.lease_token)).collect();
    // Give back the 2nd and 3rd (in that order); the 1st was worked on.
    let out = e.release(&leases[1..]).unwrap();
    assert!(out.lost.is_empty());
    let again = e.checkout("t", 4, LEASE, Wait::No).unwrap();
    let order: Vec<(u64, u32)> = again.iter().map(|d| (d.id, d.attempt)).collect();
    assert_eq!(order, vec![(ids[1], 1), (ids[2], 1), (ids[3], 1)], "first, in order, not counted");
    // Their old leases are stale now.
    assert_eq!(e.release(&leases[1..2]).unwrap().lost, vec![ids[1]]);
}

#[test]
fn topic_policy_max_attempts_governs_nack_and_names_the_handler_on_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open(tmp.path());
    e.set_topic_policy("t", TopicPolicy { max_attempts: Some(2), handler: Some("on_t".into()) }).unwrap();
    let id = publish(&e, "t");
    for attempt in 1..=2u32 {
        let d = e.checkout("t", 1, LEASE, Wait::No).unwrap();
        assert_eq!((d[0].id, d[0].attempt), (id, attempt));
        e.nack(id, d[0].lease_token, None, Failure::default(), None).unwrap();
    }
    let dead = e.dlq_list(None, None, None).unwrap();
    assert_eq!(dead.len(), 1, "dead after 2 attempts, not the queue's 5");
    assert_eq!(dead[0].reason, "max_attempts");
    assert_eq!(dead[0].failure.handler.as_deref(), Some("on_t"));
    // Other topics keep the queue's max_attempts; clearing restores it.
    e.set_topic_policy("t", TopicPolicy::default()).unwrap();
    let id = publish(&e, "t");
    for _ in 1..=2 {
        let d = e.checkout("t", 1, LEASE, Wait::No).unwrap();
        e.nack(id, d[0].lease_token, None, Failure::default(), None).unwrap();
    }
    assert_eq!(e.dlq_list(None, None, None).unwrap().len(), 1, "back to 5 attempts");
    assert!(e.set_topic_policy("t", TopicPolicy { max_attempts: Some(0), handler: None }).is_err());
}

#[test]
fn topic_policy_applies_to_lease_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options { segment_size: 64 * 1024, max_attempts: 5, clock: Clock::manual(), ..Options::default() };
    let e = Engine::open(tmp.path().join("q"), opts).unwrap();
    e.set_topic_policy("t", TopicPolicy { max_attempts: Some(1), handler: Some("on_t".into()) }).unwrap();
    publish(&e, "t");
    let d = e.checkout("t", 1, Duration::from_secs(30), Wait::No).unwrap();
    assert_eq!(d.len(), 1);
    e.advance_clock(Duration::from_secs(31)).unwrap();
    let dead = e.dlq_list(None, None, None).unwrap();
    assert_eq!(dead.len(), 1, "the expired lease dead-letters after 1 attempt");
    assert_eq!(dead[0].reason, "lease_expired");
    assert_eq!(dead[0].failure.handler.as_deref(), Some("on_t"));
}

#[test]
fn ack_with_a_chained_publish_of_the_acked_messages_own_dedup_key_publishes_it_anew() {
    // The ack frees the key in the same transaction, so the chained message
    // is a new holder of it: not a supersede of the message being acked.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, Options { segment_size: 64 * 1024, ..Options::default() }).unwrap();
    let p = |payload| Publish { topic: "t", payload, dedup_key: Some("k"), ..Default::default() };
    e.publish(p(b"v1"), PublishOpts::default(), Wait::No).unwrap();
    let d = e.checkout("t", 1, LEASE, Wait::No).unwrap();
    e.ack(&[(d[0].id, d[0].lease_token)], &[p(b"v2")], Wait::No).unwrap();
    let next = e.checkout("t", 1, LEASE, Wait::No).unwrap();
    assert_eq!((&next[0].payload[..], next[0].attempt), (&b"v2"[..], 1));
    e.close().unwrap();
    // And the journal replays.
    let e = Engine::open(&dir, Options { segment_size: 64 * 1024, ..Options::default() }).unwrap();
    let again = e.checkout("t", 1, LEASE, Wait::No).unwrap();
    assert_eq!(&again[0].payload[..], b"v2");
    e.close().unwrap();
}

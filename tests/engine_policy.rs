//! The engine calls a dispatcher relies on: interrupting blocked checkouts
//! and per-topic policies (max attempts, handler name on dead letters).

use ringq::{Engine, Failure, Options, Publish, PublishOpts, TopicPolicy, Wait};
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
    let e = open(tmp.path());
    e.set_topic_policy("t", TopicPolicy { max_attempts: Some(1), handler: Some("on_t".into()) }).unwrap();
    publish(&e, "t");
    let d = e.checkout("t", 1, Duration::from_millis(50), Wait::No).unwrap();
    assert_eq!(d.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let dead = loop {
        let dead = e.dlq_list(None, None, None).unwrap();
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(dead.len(), 1, "the expired lease dead-letters after 1 attempt");
    assert_eq!(dead[0].reason, "lease_expired");
    assert_eq!(dead[0].failure.handler.as_deref(), Some("on_t"));
}

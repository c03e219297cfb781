//! The engine's clock as a parameter: with `Clock::Manual` time stands still
//! until `advance_clock`, which does the timer's work before it returns, so
//! lease expiry and delays are tested without sleeping and with one outcome.

use ringq::{Clock, Engine, Error, Failure, Options, Publish, PublishOpts, Wait};
use std::sync::Arc;
use std::time::Duration;

const START: u64 = 1_700_000_000_000_000;
const SEC: u64 = 1_000_000;

fn opts() -> Options {
    Options { segment_size: 64 * 1024, max_attempts: 3, clock: Clock::Manual { start: START }, ..Options::default() }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn publish(e: &Engine, payload: &[u8], delay: Option<Duration>) -> u64 {
    let p = Publish { topic: "t", payload, delay, ..Default::default() };
    e.publish(p, PublishOpts::default(), Wait::No).unwrap().0
}

fn take(e: &Engine, n: usize, lease: Duration) -> Vec<ringq::Delivered> {
    e.checkout("t", n, lease, Wait::No).unwrap()
}

#[test]
fn advance_clock_is_refused_with_the_system_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), Options { segment_size: 64 * 1024, ..Options::default() }).unwrap();
    let err = e.advance_clock(secs(1)).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("manual clock"), "{err}");
    e.close().unwrap();
}

#[test]
fn every_timestamp_is_the_clocks() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), opts()).unwrap();
    assert_eq!(e.now(), START);
    let id = publish(&e, b"x", None);
    let [d] = take(&e, 1, secs(30)).try_into().unwrap();
    assert_eq!((d.id, d.enqueued_at, d.lease_deadline), (id, START, START + 30 * SEC));
    assert_eq!(e.advance_clock(secs(5)).unwrap(), START + 5 * SEC);
    assert_eq!(e.extend(d.id, d.lease_token, secs(60)).unwrap(), START + 65 * SEC);
    e.nack(d.id, d.lease_token, None, Failure::default(), Some("non_retryable")).unwrap();
    let dead = e.dlq_get(id).unwrap();
    assert_eq!(dead.dead_lettered_at, START + 5 * SEC);
    assert_eq!(dead.message.meta.as_ref().and_then(|m| m.first_failed_at), Some(START + 5 * SEC));
    assert_eq!(e.now(), START + 5 * SEC, "nothing but advance_clock moves it");
    e.close().unwrap();
}

#[test]
fn a_lease_runs_out_at_its_deadline_and_not_a_microsecond_before() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), opts()).unwrap();
    let id = publish(&e, b"x", None);
    let [d] = take(&e, 1, secs(30)).try_into().unwrap();
    e.advance_clock(secs(30) - Duration::from_micros(1)).unwrap();
    assert!(take(&e, 1, secs(30)).is_empty(), "still leased");
    e.extend(d.id, d.lease_token, Duration::from_micros(1)).unwrap();
    e.advance_clock(Duration::from_micros(1)).unwrap();
    // Expired: ready again, the old token stale, the next delivery counted.
    assert_eq!(e.ack(&[(d.id, d.lease_token)], &[], Wait::No).unwrap().lost, vec![id]);
    let [again] = take(&e, 1, secs(30)).try_into().unwrap();
    assert_eq!((again.id, again.attempt), (id, 2));
    assert_eq!(again.meta.as_ref().and_then(|m| m.first_failed_at), Some(START + 30 * SEC));
    e.close().unwrap();
}

#[test]
fn an_expired_lease_on_the_last_attempt_is_dead_lettered_at_its_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), opts()).unwrap();
    let id = publish(&e, b"x", None);
    for attempt in 1..=3 {
        let [d] = take(&e, 1, secs(30)).try_into().unwrap();
        assert_eq!(d.attempt, attempt);
        e.advance_clock(secs(31)).unwrap();
    }
    assert!(take(&e, 1, secs(30)).is_empty());
    let dead = e.dlq_get(id).unwrap();
    assert_eq!(dead.reason, "lease_expired");
    assert_eq!(dead.message.attempt, 3);
    assert_eq!(dead.dead_lettered_at, START + (31 + 31 + 30) * SEC, "at the deadline, not at the end of the advance");
    e.close().unwrap();
}

#[test]
fn a_delay_falls_due_on_the_clock_only() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), opts()).unwrap();
    let id = publish(&e, b"later", Some(secs(10)));
    assert!(take(&e, 1, secs(30)).is_empty());
    e.advance_clock(secs(9)).unwrap();
    assert!(take(&e, 1, secs(30)).is_empty());
    e.advance_clock(secs(1)).unwrap();
    let [d] = take(&e, 1, secs(30)).try_into().unwrap();
    assert_eq!((d.id, d.attempt), (id, 1));
    e.close().unwrap();
}

#[test]
fn what_falls_due_on_the_way_happens_in_time_order() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), opts()).unwrap();
    let leased = publish(&e, b"leased", None);
    let [d] = take(&e, 1, secs(10)).try_into().unwrap();
    let late = publish(&e, b"late", Some(secs(15)));
    let early = publish(&e, b"early", Some(secs(5)));
    // One advance over all three: the order they fell due in, not the order
    // the timer's work happens to look at them.
    e.advance_clock(secs(20)).unwrap();
    let got: Vec<(u64, u32)> = take(&e, 10, secs(30)).iter().map(|d| (d.id, d.attempt)).collect();
    assert_eq!(got, vec![(early, 1), (leased, 2), (late, 1)]);
    assert_eq!(e.ack(&[(d.id, d.lease_token)], &[], Wait::No).unwrap().lost, vec![leased]);
    e.close().unwrap();
}

#[test]
fn leases_running_out_together_come_back_in_publish_order() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), opts()).unwrap();
    let ids: Vec<u64> = (0..20u8).map(|i| publish(&e, &[i], None)).collect();
    assert_eq!(take(&e, 20, secs(30)).len(), 20);
    e.advance_clock(secs(30)).unwrap();
    let again: Vec<u64> = take(&e, 20, secs(30)).iter().map(|d| d.id).collect();
    assert_eq!(again, ids);
    e.close().unwrap();
}

#[test]
fn advancing_wakes_a_checkout_waiting_for_a_delayed_message() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Arc::new(Engine::open(tmp.path().join("q"), opts()).unwrap());
    let id = publish(&e, b"later", Some(secs(5)));
    let waiter = {
        let e = e.clone();
        std::thread::spawn(move || e.checkout("t", 1, secs(30), Wait::Forever).unwrap())
    };
    e.advance_clock(secs(5)).unwrap();
    let got = waiter.join().unwrap();
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
}

#[test]
fn a_reopened_engine_keeps_its_delays_against_the_clock_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, opts()).unwrap();
    let id = publish(&e, b"later", Some(secs(60)));
    e.advance_clock(secs(30)).unwrap();
    let now = e.now();
    e.close().unwrap();
    let e = Engine::open(&dir, Options { clock: Clock::Manual { start: now }, ..opts() }).unwrap();
    assert!(take(&e, 1, secs(30)).is_empty());
    e.advance_clock(secs(30)).unwrap();
    assert_eq!(take(&e, 1, secs(30))[0].id, id);
    e.close().unwrap();
}

#[test]
fn advance_clock_on_a_closed_engine_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path().join("q"), opts()).unwrap();
    e.close().unwrap();
    assert!(matches!(e.advance_clock(secs(1)), Err(Error::Closed)));
}

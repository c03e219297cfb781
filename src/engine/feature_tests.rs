//! Priorities, ordering keys and dedup windows (issue 16): what each promises
//! on the live path, and that a reopen (journal replay, then a snapshot)
//! gives back the same state. The state's invariants (counts, ready lists,
//! ordering-key lines, the windowed count) are rechecked after every step.
use super::*;
use crate::clock::Clock;
use crate::engine::{Publish, PublishOpts};
use crate::types::{Failure, Options, Wait};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn opts() -> Options {
    Options { clock: Clock::Manual { start: 1_700_000_000_000_000 }, segment_size: 64 * 1024, ..Options::default() }
}

fn check(e: &Engine) {
    e.sh.inner.lock().state.check_invariants();
}

fn put(e: &Engine, p: Publish<'_>) -> u64 {
    let id = e.publish(p, PublishOpts::default(), Wait::No).unwrap().0;
    check(e);
    id
}

fn pri(payload: &'static [u8], priority: u8) -> Publish<'static> {
    Publish { topic: "t", payload, priority, ..Default::default() }
}

fn keyed(payload: &'static [u8], key: &'static str) -> Publish<'static> {
    Publish { topic: "t", payload, ordering_key: Some(key), ..Default::default() }
}

/// Payloads of up to `max` deliveries (checked out, not acked).
fn take(e: &Engine, max: usize) -> Vec<(Vec<u8>, u64, u64)> {
    let got = e.checkout("t", max, LEASE, Wait::No).unwrap();
    check(e);
    got.into_iter().map(|d| (d.payload.to_vec(), d.id, d.lease_token)).collect()
}

fn payloads(got: &[(Vec<u8>, u64, u64)]) -> Vec<&[u8]> {
    got.iter().map(|(p, _, _)| &p[..]).collect()
}

fn ack(e: &Engine, d: &(Vec<u8>, u64, u64)) {
    e.ack(&[(d.1, d.2)], &[], Wait::No).unwrap();
    check(e);
}

fn reopen(e: Engine, path: &std::path::Path, snapshot_first: bool) -> Engine {
    if snapshot_first {
        e.snapshot().unwrap();
    }
    e.close().unwrap();
    let e = Engine::open(path, opts()).unwrap();
    check(&e);
    e
}

#[test]
fn higher_priorities_go_first_fifo_within_one_and_survive_reopening() {
    for snapshot_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let e = Engine::open(&path, opts()).unwrap();
        for (p, pr) in [(&b"a0"[..], 0), (b"b5", 5), (b"c9", 9), (b"d5", 5), (b"e0", 0), (b"f9", 9)] {
            put(&e, pri(p, pr));
        }
        let e = reopen(e, &path, snapshot_first);
        let first = take(&e, 3);
        assert_eq!(payloads(&first), vec![&b"c9"[..], b"f9", b"b5"]);
        // Given back unstarted: first again within its priority.
        let (id, token) = (first[2].1, first[2].2);
        e.release(&[(id, token)]).unwrap();
        put(&e, pri(b"g5", 5));
        let e = reopen(e, &path, snapshot_first);
        // c9 and f9 were in flight at the close: ready again, first still.
        let order = vec![&b"c9"[..], b"f9", b"b5", b"d5", b"g5", b"a0", b"e0"];
        assert_eq!(payloads(&take(&e, 10)), order);
        e.close().unwrap();
    }
}

#[test]
fn a_priority_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("q"), opts()).unwrap();
    let err = e.publish(pri(b"x", 10), PublishOpts::default(), Wait::No).unwrap_err();
    assert!(err.to_string().contains("priority=10 (must be 0..=9)"), "{err}");
    let err = e.publish(keyed(b"x", ""), PublishOpts::default(), Wait::No).unwrap_err();
    assert!(err.to_string().contains("ordering_key must not be empty"), "{err}");
    e.close().unwrap();
}

#[test]
fn one_message_per_ordering_key_in_flight_fifo_per_key_others_not_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let e = Engine::open(&path, opts()).unwrap();
    put(&e, keyed(b"k1-a", "k1"));
    put(&e, keyed(b"k1-b", "k1"));
    put(&e, keyed(b"k2-a", "k2"));
    put(&e, Publish { topic: "t", payload: b"plain", ..Default::default() });
    put(&e, keyed(b"k1-c", "k1"));
    assert_eq!(e.sh.inner.lock().state.topics[0].n_ready, 5, "waiting messages count as ready");
    let got = take(&e, 10);
    assert_eq!(payloads(&got), vec![&b"k1-a"[..], b"k2-a", b"plain"]);
    assert!(take(&e, 10).is_empty(), "k1-b waits for k1-a");
    // A retry keeps the key: k1-b still waits while k1-a is delayed.
    e.nack(got[0].1, got[0].2, Some(Duration::from_secs(5)), Failure::default(), None).unwrap();
    check(&e);
    let t = take(&e, 10);
    assert!(t.is_empty(), "k1-b waits behind a retry of k1-a: {:?}", payloads(&t));
    ack(&e, &got[1]);
    ack(&e, &got[2]);
    // Across a reopen (the head delayed, two waiting behind it).
    let e = reopen(e, &path, false);
    assert!(take(&e, 10).is_empty());
    e.advance_clock(Duration::from_secs(5)).unwrap();
    let again = take(&e, 10);
    assert_eq!(payloads(&again), vec![&b"k1-a"[..]]);
    ack(&e, &again[0]);
    let e = reopen(e, &path, true);
    let b = take(&e, 10);
    assert_eq!(payloads(&b), vec![&b"k1-b"[..]], "then the next of k1, alone");
    // A dead letter releases the key too.
    e.nack(b[0].1, b[0].2, None, Failure::default(), Some("non_retryable")).unwrap();
    check(&e);
    let c = take(&e, 10);
    assert_eq!(payloads(&c), vec![&b"k1-c"[..]]);
    ack(&e, &c[0]);
    assert!(e.sh.inner.lock().state.topics[0].keys.is_empty(), "no line left for a key with no message");
    e.close().unwrap();
}

#[test]
fn a_line_freed_and_taken_by_another_key_in_the_same_record_is_not_reused() {
    // The publish of "a" is planned while "a" still has its line (the ack
    // of its last message is in the same record); "b", applied first after
    // the ack, takes that freed line. "a" must get a line of its own.
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("q"), opts()).unwrap();
    put(&e, keyed(b"a-1", "a"));
    let got = take(&e, 1);
    let out = e.ack(&[(got[0].1, got[0].2)], &[keyed(b"b-1", "b"), keyed(b"a-2", "a")], Wait::No).unwrap();
    assert!(out.lost.is_empty());
    check(&e);
    let mut both = payloads(&take(&e, 10)).into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>();
    both.sort();
    assert_eq!(both, vec![b"a-2".to_vec(), b"b-1".to_vec()], "two keys, two heads: neither waits for the other");
    e.close().unwrap();
}

#[test]
fn a_checkout_waiting_for_a_keyed_message_wakes_when_the_head_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let e = std::sync::Arc::new(Engine::open(dir.path().join("q"), opts()).unwrap());
    put(&e, keyed(b"1", "k"));
    put(&e, keyed(b"2", "k"));
    let head = take(&e, 1);
    let waiter = {
        let e = e.clone();
        std::thread::spawn(move || {
            e.checkout("t", 1, LEASE, Wait::Until(std::time::Instant::now() + Duration::from_secs(20))).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    ack(&e, &head[0]);
    let got = waiter.join().unwrap();
    assert_eq!(got.iter().map(|d| d.payload.to_vec()).collect::<Vec<_>>(), vec![b"2".to_vec()]);
}

#[test]
fn cancelling_or_expiring_keyed_messages_keeps_each_key_moving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let e = Engine::open(&path, opts()).unwrap();
    put(&e, keyed(b"1", "k"));
    let two = put(&e, keyed(b"2", "k"));
    put(&e, keyed(b"3", "k"));
    let head = take(&e, 10);
    assert_eq!(payloads(&head), vec![&b"1"[..]]);
    // Cancel the one in the middle: the line closes up behind the head.
    e.cancel(two).unwrap();
    check(&e);
    // The head's lease runs out: it is delivered again, before 3.
    e.advance_clock(LEASE).unwrap();
    check(&e);
    let e = reopen(e, &path, true);
    let again = take(&e, 10);
    assert_eq!(payloads(&again), vec![&b"1"[..]]);
    e.cancel(again[0].1).unwrap();
    check(&e);
    assert_eq!(payloads(&take(&e, 10)), vec![&b"3"[..]], "cancelling the head in flight releases the key");
    e.close().unwrap();
}

#[test]
fn ordering_keys_and_priorities_combine() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("q"), opts()).unwrap();
    put(&e, Publish { priority: 1, ..keyed(b"k-low", "k") });
    put(&e, Publish { priority: 9, ..keyed(b"k-high", "k") });
    put(&e, pri(b"mid", 5));
    let got = take(&e, 10);
    assert_eq!(payloads(&got), vec![&b"mid"[..], b"k-low"], "k-high waits for k-low whatever its priority");
    ack(&e, &got[1]);
    assert_eq!(payloads(&take(&e, 10)), vec![&b"k-high"[..]]);
    e.close().unwrap();
}

#[test]
fn a_replace_keeps_the_place_of_the_message_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("q"), opts()).unwrap();
    put(&e, Publish { dedup_key: Some("d"), ..keyed(b"v1", "k") });
    put(&e, keyed(b"next", "k"));
    // Published again with another ordering key and a priority: replaced in
    // place, still first of k.
    put(&e, Publish { dedup_key: Some("d"), priority: 9, ..keyed(b"v2", "other") });
    let got = take(&e, 10);
    assert_eq!(payloads(&got), vec![&b"v2"[..]]);
    ack(&e, &got[0]);
    assert_eq!(payloads(&take(&e, 10)), vec![&b"next"[..]]);
    e.close().unwrap();
}

fn windowed(payload: &'static [u8], secs: u64) -> Publish<'static> {
    Publish {
        topic: "t",
        payload,
        dedup_key: Some("job-1"),
        dedup_window: Some(Duration::from_secs(secs)),
        ..Default::default()
    }
}

#[test]
fn a_dedup_window_answers_with_the_acked_id_until_it_closes_across_reopens() {
    for snapshot_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let e = Engine::open(&path, opts()).unwrap();
        let id = put(&e, windowed(b"first", 60));
        let got = take(&e, 1);
        ack(&e, &got[0]);
        assert_eq!(put(&e, windowed(b"again", 60)), id, "within the window: the same id");
        assert!(take(&e, 10).is_empty(), "and nothing enqueued");
        let e = reopen(e, &path, snapshot_first);
        e.advance_clock(Duration::from_secs(59)).unwrap();
        assert_eq!(put(&e, windowed(b"again", 60)), id, "the window survives a reopen");
        e.advance_clock(Duration::from_secs(1)).unwrap();
        let new = put(&e, windowed(b"after", 60));
        assert_ne!(new, id, "once the window closed, a new message");
        assert_eq!(payloads(&take(&e, 10)), vec![&b"after"[..]]);
        e.close().unwrap();
    }
}

/// A kept duplicate writes nothing, but is answered with a message whose
/// record may not be on disk yet: its caller gets an LSN to wait on (the
/// last one written), so under `durability="always"` it returns only once
/// the message it was answered with is durable.
#[test]
fn a_kept_duplicate_waits_for_the_record_that_made_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("q"), Options { durability: Durability::Always, ..opts() }).unwrap();
    let first = Publish { topic: "t", payload: b"a", dedup_key: Some("k"), ..Default::default() };
    let (id, lsn) = e.publish(first, PublishOpts::default(), Wait::No).unwrap();
    let lsn = lsn.expect("a new message writes a record");
    let keep = PublishOpts { on_duplicate: crate::types::OnDuplicate::Keep, ..Default::default() };
    let again = Publish { payload: b"b", ..first };
    assert_eq!(e.publish(again, keep, Wait::No).unwrap(), (id, Some(lsn)), "held: the holder's record");
    e.wait_durable(Some(lsn)).unwrap();
    assert_eq!(e.publish(again, keep, Wait::No).unwrap(), (id, Some(lsn)), "no record of its own");
    // Acked inside a dedup window: answered with the acked id, which stands
    // on the ack's record.
    let w = windowed(b"w", 60);
    let (wid, _) = e.publish(w, PublishOpts::default(), Wait::No).unwrap();
    let d = e.checkout("t", 10, LEASE, Wait::No).unwrap().into_iter().find(|d| d.id == wid).unwrap();
    let acked = e.ack(&[(d.id, d.lease_token)], &[], Wait::No).unwrap().lsn.expect("an ack record");
    assert_eq!(e.publish(windowed(b"w2", 60), keep, Wait::No).unwrap(), (wid, Some(acked)), "remembered");
    e.close().unwrap();
}

#[test]
fn expired_dedup_windows_are_dropped_and_not_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let e = Engine::open(&path, opts()).unwrap();
    for i in 0..100u32 {
        let key = format!("k{i}");
        let p = Publish {
            topic: "t",
            payload: b"x",
            dedup_key: Some(&key),
            dedup_window: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        e.publish(p, PublishOpts::default(), Wait::No).unwrap();
        let d = take(&e, 1);
        ack(&e, &d[0]);
    }
    assert_eq!(e.sh.inner.lock().state.remembered.len(), 100);
    e.advance_clock(Duration::from_secs(10)).unwrap();
    // The snapshot leaves them out; the reopened queue starts from it.
    let e = reopen(e, &path, true);
    assert_eq!(e.sh.inner.lock().state.remembered.len(), 0);
    // And a publish prunes what expired on the live path.
    put(&e, windowed(b"y", 1));
    let d = take(&e, 1);
    ack(&e, &d[0]);
    e.advance_clock(Duration::from_secs(2)).unwrap();
    put(&e, Publish { topic: "t", payload: b"z", ..Default::default() });
    assert_eq!(e.sh.inner.lock().state.remembered.len(), 0);
    e.close().unwrap();
}

#[test]
fn a_dedup_window_without_a_key_or_of_zero_is_refused_and_a_dead_letter_leaves_no_window() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("q"), opts()).unwrap();
    let err = e
        .publish(
            Publish { topic: "t", payload: b"x", dedup_window: Some(Duration::from_secs(1)), ..Default::default() },
            PublishOpts::default(),
            Wait::No,
        )
        .unwrap_err();
    assert!(err.to_string().contains("dedup_window needs a dedup_key"), "{err}");
    let err = e.publish(windowed(b"x", 0), PublishOpts::default(), Wait::No).unwrap_err();
    assert!(err.to_string().contains("dedup_window must be > 0"), "{err}");
    let id = put(&e, windowed(b"x", 60));
    let d = take(&e, 1);
    e.nack(d[0].1, d[0].2, None, Failure::default(), Some("non_retryable")).unwrap();
    check(&e);
    assert_ne!(put(&e, windowed(b"x", 60)), id, "only an ack opens the window");
    e.close().unwrap();
}

//! Recovery and storage-fault scenarios on real directories.
//!
//! A copy of a queue directory taken while its engine is still open is what
//! a SIGKILL leaves behind: every appended record is in the page cache (the
//! journal is a shared mapping), nothing was closed or snapshotted.

mod common;

use common::*;
use ringq::journal::SEGMENT_HEADER_LEN;
use ringq::{Durability, Engine, Error, FaultPoint, Options, Publish, PublishOpts, Wait};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[test]
fn torn_tail_at_every_byte_offset_reopens_to_a_valid_prefix() {
    let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 10 + i as usize]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let (tmp, files) = crashed_queue_with(&refs);
    let wal = wal_name(&files);
    let image = files.iter().find(|(n, _)| *n == wal).unwrap().1.clone();
    let mut first_record_start = vec![SEGMENT_HEADER_LEN as u64];
    let ends = record_ends(Path::new(&wal), &image);
    first_record_start.extend(&ends);
    assert_eq!(ends.len(), 5);
    let dir = tmp.path().join("cut");
    for cut in SEGMENT_HEADER_LEN as u64..=*ends.last().unwrap() {
        restore(&edit_wal(&files, &wal, |b| tear_at(b, cut as usize)), &dir);
        let e = Engine::open(&dir, small()).unwrap_or_else(|err| panic!("cut at {cut}: {err}"));
        let whole = ends.iter().filter(|end| **end <= cut).count();
        assert_eq!(drain(&e, "t"), payloads[..whole].to_vec(), "cut at {cut}");
        let report = e.recovery_report();
        let mid_record = cut > SEGMENT_HEADER_LEN as u64 && !first_record_start.contains(&cut);
        assert_eq!(report.torn_bytes() > 0, mid_record, "torn tail reported for cut at {cut}");
        assert_eq!(count(&e, "torn_tails"), u64::from(mid_record), "stats() counts the torn tail, cut at {cut}");
        e.close().unwrap();
        // Reopening the repaired directory again is clean.
        let e = Engine::open(&dir, small()).unwrap();
        assert_eq!(e.recovery_report().torn_bytes(), 0, "repaired at {cut}");
        e.close().unwrap();
    }
}

/// A damaged record that had reached the disk before later records were
/// written (their durable gap says so) is corruption, never a torn tail.
#[test]
fn flipped_byte_mid_journal_fails_naming_file_and_offset() {
    let always = Options { durability: Durability::Always, ..small() };
    let (tmp, files) = crashed_queue_with_opts(&[b"one", b"two", b"three", b"four"], always);
    let wal = wal_name(&files);
    let ends = record_ends(Path::new(&wal), &files.iter().find(|(n, _)| *n == wal).unwrap().1);
    let second = ends[0] as usize;
    let files = edit_wal(&files, &wal, |b| b[second + 24] ^= 0x10);
    let dir = tmp.path().join("flipped");
    restore(&files, &dir);
    match Engine::open(&dir, small()) {
        Err(Error::Corruption { path, offset, .. }) => {
            assert_eq!(path, dir.join(&wal));
            assert_eq!(offset, second as u64);
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a flipped byte before valid records must not open"),
    }
    // Nothing was repaired, rewritten or deleted: the evidence stays on disk.
    assert!(snapshot_files(&dir) == files, "a failed open changed the directory");
}

/// Handler chaining: an ack and the messages the handler published are one
/// journal record, so a crash anywhere inside it commits all or nothing.
#[test]
fn ack_with_chained_publishes_is_all_or_nothing_at_every_torn_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let e = Engine::open(&src, small()).unwrap();
    publish(&e, "orders", b"order-1");
    let d = e.checkout("orders", 1, Duration::from_secs(60), Wait::No).unwrap();
    let chained = [
        Publish { topic: "ship", payload: b"ship-1", causation_id: Some("c"), ..Default::default() },
        Publish { topic: "notify", payload: b"notify-1", causation_id: Some("c"), ..Default::default() },
    ];
    e.ack(&[(d[0].id, d[0].lease_token)], &chained, Wait::No).unwrap();
    settle(&e);
    let files = snapshot_files(&src);
    e.close().unwrap();
    let wal = wal_name(&files);
    let image = files.iter().find(|(n, _)| *n == wal).unwrap().1.clone();
    let ends = record_ends(Path::new(&wal), &image);
    assert_eq!(ends.len(), 3, "publish, checkout, ack+publishes");
    let dir = tmp.path().join("cut");
    for cut in ends[1]..=ends[2] {
        restore(&edit_wal(&files, &wal, |b| tear_at(b, cut as usize)), &dir);
        let e = Engine::open(&dir, small()).unwrap_or_else(|err| panic!("cut at {cut}: {err}"));
        let (orders, ship, notify) = (drain(&e, "orders"), drain(&e, "ship"), drain(&e, "notify"));
        if cut == ends[2] {
            assert!(orders.is_empty(), "acked");
            assert_eq!((ship, notify), (vec![b"ship-1".to_vec()], vec![b"notify-1".to_vec()]));
        } else {
            assert_eq!(orders, vec![b"order-1".to_vec()], "cut at {cut}: not acked, so it comes back");
            assert!(ship.is_empty() && notify.is_empty(), "cut at {cut}: a partial chain was published");
        }
        e.close().unwrap();
    }
}

#[test]
fn an_ack_on_a_full_queue_makes_room_for_its_chained_publishes_live_and_in_replay() {
    // The chained messages take the acked messages' slots: a full queue has
    // no other slot, and the journal must replay what the live path did.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let opts = Options { capacity: 3, ..small() };
    let e = Engine::open(&src, opts.clone()).unwrap();
    for p in [b"a", b"b", b"c"] {
        publish(&e, "t", p);
    }
    let got = e.checkout("t", 2, Duration::from_secs(60), Wait::No).unwrap();
    let leases: Vec<(u64, u64)> = got.iter().map(|d| (d.id, d.lease_token)).collect();
    let next = |payload| Publish { topic: "u", payload, ..Default::default() };
    // Two acked, three chained: one too many, and nothing changes.
    let err = e.ack(&leases, &[next(b"x"), next(b"y"), next(b"z")], Wait::No).unwrap_err();
    assert!(matches!(err, Error::Full { .. }), "{err}");
    assert_eq!(count(&e, "total"), 3);
    e.ack(&leases, &[next(b"x"), next(b"y")], Wait::No).unwrap();
    assert_eq!(count(&e, "total"), 3);
    // The slots stay consistent: a later ack and publish reuse them again.
    let [c] = e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap().try_into().unwrap();
    e.ack(&[(c.id, c.lease_token)], &[next(b"w")], Wait::No).unwrap();
    settle(&e);
    let files = snapshot_files(&src);
    assert_eq!(drain(&e, "u"), vec![b"x".to_vec(), b"y".to_vec(), b"w".to_vec()]);
    e.close().unwrap();
    let dir = tmp.path().join("crashed");
    restore(&files, &dir);
    let e = Engine::open(&dir, opts).unwrap();
    assert_eq!(drain(&e, "u"), vec![b"x".to_vec(), b"y".to_vec(), b"w".to_vec()]);
    assert!(drain(&e, "t").is_empty());
    e.close().unwrap();
}

#[test]
fn zeroed_segment_header_in_front_of_valid_records_is_corruption_not_a_torn_segment() {
    let (tmp, files) = crashed_queue_with(&[b"one", b"two"]);
    let wal = wal_name(&files);
    let files = edit_wal(&files, &wal, |b| b[..SEGMENT_HEADER_LEN].fill(0));
    let dir = tmp.path().join("zeroed");
    restore(&files, &dir);
    match Engine::open(&dir, small()) {
        Err(Error::Corruption { path, offset, detail }) => {
            assert_eq!((path, offset), (dir.join(&wal), 0));
            assert!(detail.contains("zeroed"), "{detail}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("the segment's records were dropped"),
    }
    assert!(snapshot_files(&dir) == files, "a failed open changed the directory");
}

#[test]
fn damaged_snapshot_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    publish(&e, "t", b"x");
    let lsn = e.snapshot().unwrap();
    e.close().unwrap();
    let snap = dir.join(ringq::snapshot::snapshot_name(lsn));
    let mut b = fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 3] ^= 0xff;
    fs::write(&snap, b).unwrap();
    match Engine::open(&dir, small()) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, snap),
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Writes the golden fixture of the current format (run once per format
/// version, then commit it; older fixtures stay, read by their own tests):
/// `RINGQ_WRITE_GOLDEN=1 cargo test --test recovery write_golden_fixture -- --ignored`
///
/// What it holds, at a "crash" (a copy taken while the engine is open): a
/// snapshot, then after it a replace in place, a dead letter, an in-flight
/// message, released deliveries (op 9), and enough records to roll to a
/// second segment (a seal).
#[test]
#[ignore]
fn write_golden_fixture() {
    assert!(std::env::var("RINGQ_WRITE_GOLDEN").is_ok(), "set RINGQ_WRITE_GOLDEN=1");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("q");
    let e = Engine::open(&src, small()).unwrap();
    let headers = vec![("h".to_string(), "v".to_string())];
    let p = |topic, payload, key| Publish { topic, payload, dedup_key: key, ..Default::default() };
    e.publish(p("alpha", b"a1", None), PublishOpts::default(), Wait::No).unwrap();
    e.publish(
        Publish { headers: &headers, correlation_id: Some("corr-1"), ..p("alpha", b"a2", Some("k")) },
        PublishOpts::default(),
        Wait::No,
    )
    .unwrap();
    e.publish_many(&[p("beta", b"b1", None), p("beta", b"b2", None)], PublishOpts::default(), Wait::No).unwrap();
    // Format 4 (meta tag 2, op tag 10, snapshot format 2), in the snapshot
    // and after it: priorities, an ordering key's head in flight with the
    // rest waiting, dedup windows left by acks.
    let keyed = |payload| Publish { topic: "keyed", payload, ordering_key: Some("ok"), ..Default::default() };
    let window = Some(Duration::from_secs(100 * 365 * 86_400));
    let windowed =
        |key| Publish { topic: "win", payload: b"w", dedup_key: Some(key), dedup_window: window, ..Default::default() };
    e.publish(
        Publish { topic: "prio", payload: b"p9", priority: 9, ..Default::default() },
        PublishOpts::default(),
        Wait::No,
    )
    .unwrap();
    e.publish(Publish { topic: "prio", payload: b"p0", ..Default::default() }, PublishOpts::default(), Wait::No)
        .unwrap();
    for payload in [&b"ok-1"[..], b"ok-2"] {
        e.publish(keyed(payload), PublishOpts::default(), Wait::No).unwrap();
    }
    e.checkout("keyed", 10, Duration::from_secs(60), Wait::No).unwrap();
    let ack_windowed = |key| {
        e.publish(windowed(key), PublishOpts::default(), Wait::No).unwrap();
        let d = e.checkout("win", 1, Duration::from_secs(60), Wait::No).unwrap();
        e.ack(&[(d[0].id, d[0].lease_token)], &[], Wait::No).unwrap();
    };
    ack_windowed("w1");
    e.snapshot().unwrap();
    e.publish(
        Publish { topic: "prio", payload: b"p5", priority: 5, ..Default::default() },
        PublishOpts::default(),
        Wait::No,
    )
    .unwrap();
    e.publish(keyed(b"ok-3"), PublishOpts::default(), Wait::No).unwrap();
    ack_windowed("w2");
    // After the snapshot: replace in place, a dead letter, an in-flight message.
    e.publish(p("alpha", b"a2-v2", Some("k")), PublishOpts::default(), Wait::No).unwrap();
    let d = e.checkout("beta", 1, Duration::from_secs(60), Wait::No).unwrap();
    let failure = ringq::Failure {
        error_type: Some("ValueError".into()),
        error_message: Some("bad".into()),
        ..Default::default()
    };
    e.nack(d[0].id, d[0].lease_token, None, failure, Some("non_retryable")).unwrap();
    e.checkout("alpha", 1, Duration::from_secs(60), Wait::No).unwrap();
    // Released unstarted: back first, not counted.
    let filler = [0x5a_u8; 200];
    for _ in 0..3 {
        publish(&e, "gamma", &filler);
    }
    let g = e.checkout("gamma", 3, Duration::from_secs(60), Wait::No).unwrap();
    let leases: Vec<_> = g.iter().map(|d| (d.id, d.lease_token)).collect();
    e.ack(&leases[..1], &[], Wait::No).unwrap();
    e.release(&leases[1..]).unwrap();
    // Queue format 5 (op tags 11 and 12): a checkout of five in order and an
    // ack of three of them are written with their ids as runs; two stay in
    // flight at the "crash". Their slots are new ones, in order (the pad
    // takes every slot freed so far), so their ids make one run.
    for _ in 0..32 {
        publish(&e, "pad", b"p");
    }
    for i in 0..5u8 {
        publish(&e, "eps", &[b'e', b'0' + i]);
    }
    let eps = e.checkout("eps", 5, Duration::from_secs(60), Wait::No).unwrap();
    let leases: Vec<_> = eps.iter().map(|d| (d.id, d.lease_token)).collect();
    e.ack(&leases[..3], &[], Wait::No).unwrap();
    // Enough records to roll once (the first segment ends in a seal).
    for i in 0..300u32 {
        let d = publish(&e, "delta", &[&i.to_le_bytes()[..], &filler].concat());
        let got = e.checkout("delta", 1, Duration::from_secs(60), Wait::No).unwrap();
        assert_eq!(got[0].id, d);
        e.ack(&[(got[0].id, got[0].lease_token)], &[], Wait::No).unwrap();
    }
    publish(&e, "delta", b"last");
    settle(&e);
    // Let the flusher sync it all (so DURABLE has a value).
    while stat(&e, "durable_lsn") < stat(&e, "lsn") {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The segments in use, the snapshot, MANIFEST and DURABLE: not the spare.
    let files: Vec<_> = snapshot_files(&src)
        .into_iter()
        .filter(|(n, b)| {
            !n.ends_with(".log")
                || ringq::journal::read_segment_header(Path::new(n), b).unwrap().is_some_and(|h| h.first_lsn != 0)
        })
        .collect();
    restore(&files, &fixture_dir("golden-v5"));
    e.close().unwrap();
}

/// The first operation tag of each transaction record in the segments of
/// `dir`'s files.
fn record_tags(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tags = Vec::new();
    for (name, data) in files.iter().filter(|(n, _)| n.ends_with(".log")) {
        let path = Path::new(name);
        let Some(header) = ringq::journal::read_segment_header(path, data).unwrap() else { continue };
        if header.first_lsn == 0 {
            continue;
        }
        ringq::journal::scan_segment(path, data, &header, 0, |_, _, body| {
            tags.push(body[4]);
            Ok(())
        })
        .unwrap();
    }
    tags
}

#[test]
fn golden_fixture_of_format_v5_is_read() {
    let files = snapshot_files(&fixture_dir("golden-v5"));
    let tags = record_tags(&files);
    assert!(tags.contains(&11) && tags.contains(&12), "the fixture holds runs (tags 11 and 12): {tags:?}");
    assert!(tags.contains(&3) && tags.contains(&4), "and plain checkouts and acks (tags 3 and 4)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    restore(&files, &dir);
    assert_eq!(ringq::manifest::read(&dir).unwrap().unwrap().version, 5);
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(e.recovery_report().torn_bytes(), 0);
    // The two of the five checked out and not acked come back, attempt kept.
    let eps = e.checkout("eps", 10, Duration::from_secs(60), Wait::No).unwrap();
    let got: Vec<(&[u8], u32)> = eps.iter().map(|d| (&d.payload[..], d.attempt)).collect();
    assert_eq!(got, vec![(&b"e3"[..], 2), (&b"e4"[..], 2)]);
    assert_eq!(drain(&e, "pad").len(), 32);
    // What format 4 held reads as in the format-3 fixture.
    let alpha = e.checkout("alpha", 10, Duration::from_secs(60), Wait::No).unwrap();
    let got: Vec<(&[u8], u32, u32)> = alpha.iter().map(|d| (&d.payload[..], d.attempt, d.version)).collect();
    assert_eq!(got, vec![(&b"a2-v2"[..], 1, 2), (&b"a1"[..], 2, 1)]);
    assert_eq!(drain(&e, "beta"), vec![b"b2".to_vec()]);
    assert_eq!(e.dlq_list(None, None, None).unwrap().len(), 1);
    let gamma = e.checkout("gamma", 10, Duration::from_secs(60), Wait::No).unwrap();
    assert_eq!(gamma.iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(drain(&e, "delta"), vec![b"last".to_vec()]);
    assert_eq!(drain(&e, "prio"), vec![b"p9".to_vec(), b"p5".to_vec(), b"p0".to_vec()]);
    e.close().unwrap();
}

#[test]
fn golden_fixture_of_format_v3_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    restore(&snapshot_files(&fixture_dir("golden-v3")), &dir);
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(e.recovery_report().torn_bytes(), 0);
    // Everything format 3 held reads as before.
    let alpha = e.checkout("alpha", 10, Duration::from_secs(60), Wait::No).unwrap();
    let got: Vec<(&[u8], u32, u32)> = alpha.iter().map(|d| (&d.payload[..], d.attempt, d.version)).collect();
    assert_eq!(got, vec![(&b"a2-v2"[..], 1, 2), (&b"a1"[..], 2, 1)]);
    assert_eq!(drain(&e, "beta"), vec![b"b2".to_vec()]);
    assert_eq!(e.dlq_list(None, None, None).unwrap().len(), 1);
    assert_eq!(drain(&e, "delta"), vec![b"last".to_vec()]);
    // Priorities: from the snapshot and from the journal after it.
    assert_eq!(drain(&e, "prio"), vec![b"p9".to_vec(), b"p5".to_vec(), b"p0".to_vec()]);
    // The ordering key: its head was in flight; the others still wait.
    for expected in [&b"ok-1"[..], b"ok-2", b"ok-3"] {
        let d = e.checkout("keyed", 10, Duration::from_secs(60), Wait::No).unwrap();
        assert_eq!(d.iter().map(|d| &d.payload[..]).collect::<Vec<_>>(), vec![expected]);
        assert_eq!(d[0].meta.as_ref().unwrap().ordering_key.as_deref(), Some("ok"));
        e.ack(&[(d[0].id, d[0].lease_token)], &[], Wait::No).unwrap();
    }
    // The dedup windows (one in the snapshot, one in the journal) still answer.
    for key in ["w1", "w2"] {
        let p = Publish { topic: "win", payload: b"again", dedup_key: Some(key), ..Default::default() };
        e.publish(p, PublishOpts::default(), Wait::No).unwrap();
    }
    assert!(drain(&e, "win").is_empty(), "both keys answered with their acked message");
    e.close().unwrap();
    assert_eq!(ringq::manifest::read(&dir).unwrap().unwrap().version, ringq::manifest::MANIFEST_VERSION);
}

#[test]
fn golden_fixture_of_format_v2_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    restore(&snapshot_files(&fixture_dir("golden-v2")), &dir);
    assert_eq!(
        fs::read_dir(&dir)
            .unwrap()
            .filter(|f| f.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
            .count(),
        2,
        "two segments: the first one sealed"
    );
    let e = Engine::open(&dir, small()).unwrap();
    let alpha = e.checkout("alpha", 10, Duration::from_secs(60), Wait::No).unwrap();
    let got: Vec<(&[u8], u32, u32)> = alpha.iter().map(|d| (&d.payload[..], d.attempt, d.version)).collect();
    assert_eq!(got, vec![(&b"a2-v2"[..], 1, 2), (&b"a1"[..], 2, 1)]);
    assert_eq!(drain(&e, "beta"), vec![b"b2".to_vec()]);
    let dead = e.dlq_list(None, None, None).unwrap();
    assert_eq!((dead.len(), dead[0].reason.as_str()), (1, "non_retryable"));
    // The two released ones come back first, in order, at attempt 1.
    let gamma = e.checkout("gamma", 10, Duration::from_secs(60), Wait::No).unwrap();
    assert_eq!(gamma.iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(drain(&e, "delta"), vec![b"last".to_vec()], "300 acked, one left");
    assert_eq!(e.recovery_report().torn_bytes(), 0);
    e.close().unwrap();
    let m = ringq::manifest::read(&dir).unwrap().unwrap();
    assert_eq!(m.version, ringq::manifest::MANIFEST_VERSION);
}

#[test]
fn golden_fixture_of_format_v1_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    restore(&snapshot_files(&fixture_dir("golden-v1")), &dir);
    let e = Engine::open(&dir, small()).unwrap();
    // a1 was in flight at the "crash": it comes back (at the back), attempt kept.
    let alpha = e.checkout("alpha", 10, Duration::from_secs(60), Wait::No).unwrap();
    let got: Vec<(&[u8], u32, u32)> = alpha.iter().map(|d| (&d.payload[..], d.attempt, d.version)).collect();
    assert_eq!(got, vec![(&b"a2-v2"[..], 1, 2), (&b"a1"[..], 2, 1)]);
    let meta = alpha[0].meta.as_ref().unwrap();
    assert_eq!(meta.dedup_key.as_deref(), Some("k"));
    assert_eq!(meta.correlation_id, None, "the replace carried no correlation id");
    assert_eq!(drain(&e, "beta"), vec![b"b2".to_vec()]);
    let dead = e.dlq_list(None, None, None).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].topic, "beta");
    assert_eq!(dead[0].reason, "non_retryable");
    assert_eq!(dead[0].message.payload.as_ref(), b"b1");
    assert_eq!(dead[0].failure.error_type.as_deref(), Some("ValueError"));
    e.close().unwrap();
    // The format-1 manifest (no slot limit) was rewritten as format 2.
    let m = ringq::manifest::read(&dir).unwrap().unwrap();
    assert_eq!(m.slot_limit, Some(small().capacity as u32));
    assert_eq!(m.version, ringq::manifest::MANIFEST_VERSION);
    assert_ne!(m.instance_id, 0, "an identity was given on upgrade");
}

/// The fuzzer's find: a valid 116-byte snapshot whose one message names slot
/// 2^24-1 made recovery allocate 1.4 GiB of empty slots. The manifest now
/// bounds slots by the largest capacity the queue ever had.
#[test]
fn snapshot_naming_a_slot_beyond_any_capacity_is_corruption_not_a_huge_allocation() {
    let forged = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/snapshot/slab-resize-1.4GiB.bin");
    let data = fs::read(&forged).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let opts = Options { capacity: 1000, ..small() };
    Engine::open(&dir, opts.clone()).unwrap().close().unwrap();
    for f in fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|x| x == "snap" || x == "wal" || x == "log") {
            fs::remove_file(p).unwrap();
        }
    }
    let snap = dir.join(ringq::snapshot::snapshot_name(1));
    fs::write(&snap, &data).unwrap();
    match Engine::open(&dir, opts.clone()) {
        Err(Error::Corruption { path, detail, .. }) => {
            assert_eq!(path, snap);
            assert!(detail.contains("slot 16777215") && detail.contains("1000 slots"), "{detail}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    assert_eq!(fs::read(&snap).unwrap(), data, "the file is left as it was");
    assert!(ringq::snapshot::verify(&snap, &data, 1000).is_err());
}

#[test]
fn lowering_capacity_keeps_messages_in_high_slots_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, Options { capacity: 500, ..small() }).unwrap();
    for i in 0..400u32 {
        publish(&e, "t", &i.to_le_bytes());
    }
    // Keep only the newest message (its slot is 399).
    let ds = e.checkout("t", 399, Duration::from_secs(60), Wait::No).unwrap();
    let acks: Vec<_> = ds.iter().map(|d| (d.id, d.lease_token)).collect();
    e.ack(&acks, &[], Wait::No).unwrap();
    e.close().unwrap();
    let e = Engine::open(&dir, Options { capacity: 10, ..small() }).unwrap();
    assert_eq!(drain(&e, "t"), vec![399u32.to_le_bytes().to_vec()]);
    e.close().unwrap();
    assert_eq!(ringq::manifest::read(&dir).unwrap().unwrap().slot_limit, Some(500));
}

#[test]
fn long_run_disk_use_stays_bounded_by_live_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let opts = Options { segment_size: 64 * 1024, snapshot_every: 500, ..Options::default() };
    let e = Engine::open(&dir, opts).unwrap();
    let payload = [7u8; 100];
    let (mut first_half, mut second_half) = (Vec::new(), Vec::new());
    const ROUNDS: u32 = 60_000;
    for round in 0..ROUNDS {
        publish(&e, "t", &payload);
        let d = e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap();
        e.ack(&[(d[0].id, d[0].lease_token)], &[], Wait::No).unwrap();
        if round % 500 == 0 {
            // The snapshotter runs on its own thread: a busy machine can
            // hold it back for a while (these 60k rounds take about a
            // quarter of a second), and what it has not covered yet stays
            // on disk. Each sample waits until it is at most four
            // snapshots behind (the segments a snapshot covers are deleted
            // just after it: a few more), so that what is measured is what
            // the queue keeps, not how late that thread is.
            let t0 = Instant::now();
            while stat(&e, "lsn") > stat(&e, "snapshot_lsn") + 4 * 500 {
                assert!(t0.elapsed() < Duration::from_secs(30), "the snapshotter never caught up");
                std::thread::sleep(Duration::from_millis(1));
            }
            let size = dir_size(&dir);
            if round < ROUNDS / 2 { first_half.push(size) } else { second_half.push(size) }
        }
    }
    // 60k messages went through (~14 MB of records) and none is live: the
    // directory holds a few segments and a small snapshot, however long it
    // runs.
    let (first, second) = (*first_half.iter().max().unwrap(), *second_half.iter().max().unwrap());
    assert!(second < 4 * 1024 * 1024, "directory grew to {second} bytes");
    assert!(second <= 2 * first + 1024 * 1024, "grows with history: {first} then {second}");
    e.close().unwrap();
    assert!(dir_size(&dir) < 256 * 1024);
}

/// A full disk while segments are made: the prepared spare is used, making
/// the next one fails in the background (reported in `stats()`), and the
/// append that needs it fails with ENOSPC naming the file, changing nothing.
/// Once space is back, the next call goes on.
#[test]
fn injected_enospc_on_segment_create_changes_nothing_and_queue_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    settle(&e);
    e.inject_fault(FaultPoint::SegmentCreate, libc_enospc(), -1);
    let payload = vec![1u8; 1000];
    let mut ok = 0;
    let err = loop {
        match e.publish(
            Publish { topic: "t", payload: &payload, ..Default::default() },
            PublishOpts::default(),
            Wait::No,
        ) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 400, "the segments must fill up");
    };
    assert!(ok > 64, "the prepared spare was used first ({ok} publishes)");
    assert_eq!(err.errno(), Some(libc_enospc()), "{err}");
    assert_eq!(count(&e, "total"), ok, "the failed publish changed nothing");
    assert!(err.to_string().contains(".log"), "the error names the file: {err}");
    // The preparer's own attempt is reported too (it runs on its thread).
    let prepare_error = || {
        let stats = e.stats().unwrap();
        stats.into_iter().find(|(k, _)| *k == "journal_prepare_error").unwrap().1
    };
    let t0 = std::time::Instant::now();
    while prepare_error() == ringq::Stat::None && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(prepare_error(), ringq::Stat::Text(t) if t.contains("No space")), "{:?}", prepare_error());
    e.inject_fault(FaultPoint::SegmentCreate, 0, 0);
    publish(&e, "t", &payload);
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(count(&e, "ready"), ok + 1);
    e.close().unwrap();
}

#[test]
fn injected_eio_on_fsync_fails_the_call_then_heals_by_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let opts = Options { durability: Durability::Always, ..small() };
    let e = Engine::open(&dir, opts.clone()).unwrap();
    publish(&e, "t", b"before");
    e.inject_fault(FaultPoint::Sync, 5, 1);
    let (_, lsn) = e
        .publish(Publish { topic: "t", payload: b"during", ..Default::default() }, PublishOpts::default(), Wait::No)
        .unwrap();
    let err = e.wait_durable(lsn).unwrap_err();
    assert_eq!(err.errno(), Some(5), "{err}");
    // The fault is gone: the next call heals (a snapshot persists everything) and goes on.
    let (_, lsn) = e
        .publish(Publish { topic: "t", payload: b"after", ..Default::default() }, PublishOpts::default(), Wait::No)
        .unwrap();
    e.wait_durable(lsn).unwrap();
    e.close().unwrap();
    let e = Engine::open(&dir, opts).unwrap();
    assert_eq!(drain(&e, "t"), vec![b"before".to_vec(), b"during".to_vec(), b"after".to_vec()]);
    e.close().unwrap();
}

#[test]
fn injected_enospc_on_snapshot_write_keeps_the_queue_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    publish(&e, "t", b"1");
    e.inject_fault(FaultPoint::SnapshotWrite, libc_enospc(), -1);
    let err = e.snapshot().unwrap_err();
    assert_eq!(err.errno(), Some(libc_enospc()));
    publish(&e, "t", b"2");
    e.inject_fault(FaultPoint::SnapshotWrite, 0, 0);
    e.snapshot().unwrap();
    // No snapshot temporary is left (`segment.tmp` is the preparer's spare
    // being filled, which it may be doing right now).
    let left = |f: fs::DirEntry| f.file_name().to_string_lossy().into_owned();
    let names: Vec<String> = fs::read_dir(&dir).unwrap().map(|f| left(f.unwrap())).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp") && n != ringq::journal::prepare::FILL_NAME), "{names:?}");
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(drain(&e, "t"), vec![b"1".to_vec(), b"2".to_vec()]);
    e.close().unwrap();
}

#[test]
fn second_open_in_the_same_process_is_locked_with_our_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    match Engine::open(&dir, small()) {
        Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    e.close().unwrap();
    Engine::open(&dir, small()).unwrap().close().unwrap();
}

#[test]
fn inspect_reads_an_owned_queue_without_taking_or_changing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    publish(&e, "a", b"1");
    publish(&e, "a", b"2");
    publish(&e, "b", b"3");
    e.checkout("a", 1, Duration::from_secs(60), Wait::No).unwrap();
    settle(&e);
    let before = snapshot_files(&dir);
    let seen = ringq::inspect::inspect(&dir).unwrap();
    assert!(snapshot_files(&dir) == before, "inspect changed the directory");
    assert_eq!(seen.owner_pid, Some(std::process::id()));
    let counts: Vec<(String, u64, u64)> = seen.topics.iter().map(|t| (t.name.clone(), t.ready, t.in_flight)).collect();
    assert_eq!(counts, vec![("a".into(), 1, 1), ("b".into(), 1, 0)]);
    assert_eq!((seen.last_lsn, seen.records_replayed, seen.torn_tail_bytes), (4, 4, 0));
    // peek: ready ones in delivery order, then the in-flight one.
    let msgs = ringq::inspect::peek(&dir, "a", 10).unwrap();
    let got: Vec<(Vec<u8>, ringq::MsgState)> = msgs.iter().map(|m| (m.payload.to_vec(), m.state)).collect();
    assert_eq!(got, vec![(b"2".to_vec(), ringq::MsgState::Ready), (b"1".to_vec(), ringq::MsgState::InFlight)]);
    assert_eq!(ringq::inspect::peek(&dir, "a", 1).unwrap().len(), 1);
    assert!(ringq::inspect::peek(&dir, "nope", 10).unwrap().is_empty());
    assert!(ringq::inspect::dead_letters(&dir, 10).unwrap().is_empty());
    // The owner carries on undisturbed.
    assert_eq!(drain(&e, "b"), vec![b"3".to_vec()]);
    e.close().unwrap();
    assert_eq!(ringq::inspect::inspect(&dir).unwrap().owner_pid, None);
}

#[test]
fn inspect_of_a_damaged_journal_names_file_and_offset_and_changes_nothing() {
    let always = Options { durability: Durability::Always, ..small() };
    let (tmp, files) = crashed_queue_with_opts(&[b"one", b"two", b"three"], always);
    let wal = wal_name(&files);
    let ends = record_ends(Path::new(&wal), &files.iter().find(|(n, _)| *n == wal).unwrap().1);
    let first = ends[0] as usize;
    let files = edit_wal(&files, &wal, |b| b[first - 1] ^= 0x01);
    let dir = tmp.path().join("damaged");
    restore(&files, &dir);
    match ringq::inspect::inspect(&dir) {
        Err(Error::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (dir.join(&wal), SEGMENT_HEADER_LEN as u64));
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    assert!(snapshot_files(&dir) == files);
    assert!(ringq::inspect::inspect(&tmp.path().join("missing")).is_err());
    assert!(ringq::inspect::inspect(tmp.path()).is_err(), "a directory without a MANIFEST");
}

/// Whether this process maps `path` (a removed file is listed as
/// "<path> (deleted)").
fn maps_file(path: &Path) -> bool {
    fs::read_to_string("/proc/self/maps").unwrap().contains(path.to_str().unwrap())
}

/// A queue in `tmp` holding `payloads` on topic "t", closed (so all of
/// them are in its snapshot) and opened again: the directory, the engine
/// and the snapshot it was opened from.
fn reopened_with(tmp: &Path, payloads: &[Vec<u8>]) -> (PathBuf, Engine, PathBuf) {
    let dir = tmp.join("q");
    let e = Engine::open(&dir, small()).unwrap();
    for p in payloads {
        publish(&e, "t", p);
    }
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    let snap = e.recovery_report().snapshot_path.clone().expect("opened from the close's snapshot");
    assert!(maps_file(&snap));
    (dir, e, snap)
}

fn numbered(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("message {i}").into_bytes()).collect()
}

/// A reopened queue leaves its snapshot's payloads in the mapped file (no
/// heap copies). They read back whole, also after a newer snapshot removed
/// the file; once at most a quarter of them are left, a snapshot copies
/// those into the heap and the removed file is unmapped (its disk space
/// returns) when the last delivery pointing into it is dropped.
#[test]
fn a_reopened_queue_reads_payloads_from_its_snapshot_and_lets_it_go_once_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..400u32).map(|i| format!("payload {i:>5}/").repeat(8).into_bytes()).collect();
    let (_, e, snap) = reopened_with(tmp.path(), &payloads);
    let lease = Duration::from_secs(60);
    let take = |n: usize| {
        let got = e.checkout("t", n, lease, Wait::No).unwrap();
        e.ack(&got.iter().map(|d| (d.id, d.lease_token)).collect::<Vec<_>>(), &[], Wait::No).unwrap();
        got
    };
    let first = take(200);
    assert!(first.iter().all(|d| d.payload.is_mapped()));
    let got: Vec<Vec<u8>> = first.iter().map(|d| d.payload.to_vec()).collect();
    assert_eq!(got, payloads[..200]);
    drop(first);
    // Half are left: a newer snapshot removes the file, the rest still
    // point into it.
    publish(&e, "t", b"after the reopen");
    e.snapshot().unwrap();
    assert!(!snap.exists() && maps_file(&snap));
    // A fifth left: the next snapshot copies them out; a delivery taken
    // before keeps the file mapped until it is dropped.
    let second = take(120);
    let kept = second.last().unwrap().payload.clone();
    assert!(kept.is_mapped());
    drop(second);
    publish(&e, "t", b"and another");
    e.snapshot().unwrap();
    assert!(maps_file(&snap), "a delivery still points into it");
    let rest = e.checkout("t", 1000, lease, Wait::No).unwrap();
    assert!(rest.iter().all(|d| !d.payload.is_mapped()));
    let got: Vec<Vec<u8>> = rest.iter().map(|d| d.payload.to_vec()).collect();
    let mut want = payloads[320..].to_vec();
    want.extend([b"after the reopen".to_vec(), b"and another".to_vec()]);
    assert_eq!(got, want);
    assert_eq!(&kept[..], &payloads[319][..]);
    drop(kept);
    assert!(!maps_file(&snap), "unmapped with its last payload");
    e.close().unwrap();
}

/// Draining a reopened queue lets its snapshot go: the checkout after the
/// last of its payloads was acked unmaps the file, without a snapshot.
#[test]
fn draining_a_reopened_queue_unmaps_its_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, e, snap) = reopened_with(tmp.path(), &numbered(50));
    let lease = Duration::from_secs(60);
    let got = e.checkout("t", 100, lease, Wait::No).unwrap();
    assert_eq!(got.len(), 50);
    e.ack(&got.iter().map(|d| (d.id, d.lease_token)).collect::<Vec<_>>(), &[], Wait::No).unwrap();
    assert!(maps_file(&snap), "the deliveries still point into it");
    drop(got);
    assert!(maps_file(&snap), "the queue still holds it");
    assert!(e.checkout("t", 100, lease, Wait::No).unwrap().is_empty());
    assert!(!maps_file(&snap));
    e.close().unwrap();
}

/// `close()` lets the snapshot go with the messages, though the engine
/// object lives on; `peek` and `dead_letters` results hold no file.
#[test]
fn close_and_inspect_results_hold_no_snapshot_mapped() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, e, _) = reopened_with(tmp.path(), &numbered(20));
    let d = e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap();
    e.nack(d[0].id, d[0].lease_token, None, Default::default(), Some("non_retryable")).unwrap();
    drop(d);
    e.close().unwrap();
    let (_, e, snap) = reopened_with(tmp.path(), &[]);
    e.close().unwrap();
    assert!(!maps_file(&snap), "closed, with 19 messages ready and a dead letter");
    let peeked = ringq::inspect::peek(&dir, "t", 5).unwrap();
    assert_eq!(peeked[0].payload.to_vec(), b"message 1");
    assert!(peeked.iter().all(|m| !m.payload.is_mapped()));
    let dead = ringq::inspect::dead_letters(&dir, 5).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.payload.to_vec(), b"message 0");
    assert!(!dead[0].message.payload.is_mapped());
    assert!(!maps_file(&snap));
    drop(e);
}

/// The segment the journal is being written to: the highest-numbered one
/// whose header has a first LSN.
fn active_segment(files: &[(String, Vec<u8>)]) -> (String, ringq::journal::SegmentHeader) {
    files
        .iter()
        .rev()
        .filter(|(n, _)| n.ends_with(".log"))
        .find_map(|(n, b)| {
            let h = ringq::journal::read_segment_header(Path::new(n), b).unwrap()?;
            (h.first_lsn != 0).then(|| (n.clone(), h))
        })
        .expect("an active segment")
}

/// Issue 15: a recycled segment holding old records past the end of the
/// log is never read as live. Records of one size, so that the old records
/// in a recycled file line up exactly with where the next live ones go.
#[test]
fn a_recycled_segment_holding_old_records_past_the_end_of_the_log_is_never_read_as_live() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let opts = Options { snapshot_every: 1 << 40, ..small() };
    let e = Engine::open(&dir, opts.clone()).unwrap();
    let payload = |i: usize| format!("{i:08}").repeat(50).into_bytes();
    let mut published = Vec::new();
    // Snapshots cover the closed segments, which become the next spares:
    // go on until the journal writes in one whose old records reach past
    // its end.
    let (name, header, files, end) = loop {
        assert!(published.len() < 20_000, "the journal never wrote into a recycled segment");
        for _ in 0..150 {
            let p = payload(published.len());
            publish(&e, "t", &p);
            published.push(p);
        }
        e.snapshot().unwrap();
        settle(&e);
        let files = snapshot_files(&dir);
        let (name, header) = active_segment(&files);
        let data = &files.iter().find(|(n, _)| *n == name).unwrap().1;
        let end = *record_ends(Path::new(&name), data).last().unwrap() as usize;
        // Its old records are format 2's (the file's first use), valid
        // anywhere but in this segment.
        if header.is_recycled() && ringq::journal::scan::holds_record_after(data, end, 0, None) {
            break (name, header, files, end);
        }
    };
    assert_eq!(header.version, ringq::journal::FORMAT_RECYCLED);
    e.close().unwrap();
    // The spares made of covered segments hold their old records too:
    // they are all in the snapshot, so recovery keeps such a spare as it is.
    let recycled_spares = files
        .iter()
        .filter(|(n, b)| {
            n.ends_with(".log")
                && ringq::journal::read_segment_header(Path::new(n), b)
                    .unwrap()
                    .is_some_and(|h| h.is_unused() && h.is_recycled())
                && b[SEGMENT_HEADER_LEN + ringq::journal::RECORD_HEADER_LEN..].iter().any(|x| *x != 0)
        })
        .count();
    assert!(recycled_spares >= 1, "no recycled spare in the copy");
    let check = |what: &str, files: &[(String, Vec<u8>)], torn: Option<(u64, u64)>| {
        let crashed = tmp.path().join(what);
        restore(files, &crashed);
        let r = Engine::open(&crashed, opts.clone()).unwrap_or_else(|err| panic!("{what}: {err}"));
        let report = r.recovery_report();
        let tails: Vec<(u64, u64)> = report.torn.iter().map(|t| (t.offset, t.bytes)).collect();
        assert_eq!(tails, torn.into_iter().collect::<Vec<_>>(), "{what}");
        assert_eq!(report.dropped_records, 0, "{what}");
        assert_eq!(report.dropped_segments, Vec::<PathBuf>::new(), "{what}: no spare is reset");
        assert_eq!(drain(&r, "t"), published, "{what}: exactly the messages published, in order");
        r.close().unwrap();
    };
    // What a kill leaves: the log ends at the writer's zeros.
    check("killed", &files, None);
    // A power cut that lost the page with those zeros, keeping the old
    // record under them: a whole, valid record of the file's earlier use
    // where the next record would be. It ends the log (a torn tail of one
    // record header, zeroed by the open), and is not replayed.
    let data = &files.iter().find(|(n, _)| *n == name).unwrap().1;
    let len = record_ends(Path::new(&name), data).windows(2).last().map(|w| (w[1] - w[0]) as usize).unwrap();
    assert!(
        ringq::journal::scan::holds_record_after(&data[end + len..end + 2 * len], 0, 0, None),
        "an old record follows"
    );
    let stale = edit_wal(&files, &name, |b| {
        let old = b[end + len..end + 2 * len].to_vec();
        b[end..end + len].copy_from_slice(&old);
    });
    check("power cut", &stale, Some((end as u64, ringq::journal::RECORD_HEADER_LEN as u64)));
}

/// Batches write few records but many bytes: with `snapshot_every` and
/// `snapshot_interval` far away, the journal's size alone triggers
/// snapshots (once what no snapshot covers reaches
/// `JOURNAL_SNAPSHOT_BYTES` and twice the last snapshot), so the directory
/// stays bounded by live data, not by what was published.
#[test]
fn a_journal_growing_by_batches_is_snapshotted_by_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let opts = Options {
        segment_size: 4 * 1024 * 1024,
        snapshot_every: 1 << 40,
        snapshot_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    let e = Engine::open(&dir, opts).unwrap();
    let payload = vec![7u8; 4000];
    let batch: Vec<Publish<'_>> =
        (0..256).map(|_| Publish { topic: "t", payload: &payload, ..Default::default() }).collect();
    let limit = ringq::engine::JOURNAL_SNAPSHOT_BYTES;
    // About 4 × the threshold, drained as it goes: a record per batch.
    let rounds = (4 * limit / (256 * 4000)) as usize;
    let mut largest = 0;
    for _ in 0..rounds {
        e.publish_many(&batch, PublishOpts::default(), Wait::No).unwrap();
        let got = e.checkout("t", 256, Duration::from_secs(60), Wait::No).unwrap();
        let acks: Vec<_> = got.iter().map(|d| (d.id, d.lease_token)).collect();
        e.ack(&acks, &[], Wait::No).unwrap();
        largest = largest.max(dir_size(&dir));
    }
    assert!(stat(&e, "snapshots") >= 2, "{} snapshots", stat(&e, "snapshots"));
    // Without the trigger it would hold the whole 4 × threshold of records.
    assert!(largest < 3 * limit, "the directory reached {largest} bytes");
    e.close().unwrap();
}

/// The messages in flight when the process stopped are judged at the next
/// open by their topic's stored policy (`POLICIES`), as a lease expiry would
/// have judged them: set before any handler starts again, the queue's
/// `max_attempts` (5 here) used to dead-letter a message its handler
/// allowed 10 attempts on its 5th, and gave one allowed 2 a 3rd delivery.
/// A copy of the directory taken while the engine is open is a SIGKILL's.
#[test]
fn messages_in_flight_at_a_crash_are_judged_by_their_topics_stored_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(e.options().max_attempts, 5);
    let policy =
        |max: u32, handler: &str| ringq::TopicPolicy { max_attempts: Some(max), handler: Some(handler.into()) };
    e.set_topic_policy("patient", policy(10, "on_patient")).unwrap();
    e.set_topic_policy("strict", policy(2, "on_strict")).unwrap();
    let lease = Duration::from_secs(600);
    let mut in_flight = Vec::new();
    for (topic, failures) in [("patient", 4), ("strict", 1)] {
        e.publish(Publish { topic, payload: topic.as_bytes(), ..Default::default() }, PublishOpts::default(), Wait::No)
            .unwrap();
        for _ in 0..failures {
            let [d] = <[_; 1]>::try_from(e.checkout(topic, 1, lease, Wait::No).unwrap()).unwrap();
            e.nack(d.id, d.lease_token, None, Default::default(), None).unwrap();
        }
        let [d] = <[_; 1]>::try_from(e.checkout(topic, 1, lease, Wait::No).unwrap()).unwrap();
        in_flight.push(d.attempt);
    }
    assert_eq!(in_flight, [5, 2]);
    let crashed = tmp.path().join("crashed");
    restore(&snapshot_files(&dir), &crashed);
    e.close().unwrap();

    let e = Engine::open(&crashed, small()).unwrap();
    let [d] = <[_; 1]>::try_from(e.checkout("patient", 1, lease, Wait::No).unwrap()).unwrap();
    assert_eq!(d.attempt, 6, "5 of 10 attempts used: delivered again");
    assert!(e.checkout("strict", 1, lease, Wait::No).unwrap().is_empty());
    let dead = e.dlq_list(None, None, None).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].topic.as_str(), dead[0].reason.as_str()), ("strict", "lease_expired"));
    assert_eq!(dead[0].failure.handler.as_deref(), Some("on_strict"));
    e.close().unwrap();
}

/// A policy cleared is gone from the file too; the file is rewritten only
/// when a policy changes; a damaged one stops the open with an error naming
/// it, and `repair` removes it (the queue's `max_attempts` applies until
/// the handlers start again).
#[test]
fn stored_policies_are_cleared_with_their_topic_and_a_damaged_file_is_refused_then_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let file = dir.join(ringq::policies::POLICIES_FILE);
    let e = Engine::open(&dir, small()).unwrap();
    assert!(!file.exists(), "no policy, no file");
    let p = ringq::TopicPolicy { max_attempts: Some(3), handler: None };
    e.set_topic_policy("a", p.clone()).unwrap();
    e.set_topic_policy("b", p.clone()).unwrap();
    // Each write is a new file renamed over the old one: a new inode.
    let inode = || std::os::unix::fs::MetadataExt::ino(&fs::metadata(&file).unwrap());
    let written = inode();
    e.set_topic_policy("a", p.clone()).unwrap();
    assert_eq!(inode(), written, "unchanged: not rewritten");
    e.set_topic_policy("a", ringq::TopicPolicy::default()).unwrap();
    assert_eq!(ringq::policies::read(&dir).unwrap().keys().collect::<Vec<_>>(), ["b"]);
    assert!(matches!(e.stats().unwrap().iter().find(|(k, _)| *k == "policies_error"), Some((_, ringq::Stat::None))));
    e.close().unwrap();

    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&file, &bytes).unwrap();
    match Engine::open(&dir, small()) {
        Err(Error::Corruption { path, detail, .. }) => {
            assert_eq!(path, file);
            assert!(detail.contains("ringq repair"), "{detail}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(matches!(ringq::inspect::inspect(&dir), Err(Error::Corruption { .. })), "verify reports it too");
    let report = ringq::repair::repair(&dir).unwrap();
    assert!(report.changes.iter().any(|c| c.contains("POLICIES") && c.ends_with("removed")), "{:?}", report.changes);
    assert!(!file.exists());
    Engine::open(&dir, small()).unwrap().close().unwrap();
}

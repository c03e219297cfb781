//! What happens to a queue directory that was damaged or ran out of space:
//! a lost or shortened segment, a lost MANIFEST, a lost snapshot, damage in
//! files a snapshot already covers, records bigger than a segment, a disk
//! that cannot hold a new segment. Each is either opened with what it holds
//! or refused naming the file, and `inspect` (what `ringq verify` runs) says
//! the same as `Engine::open`; `repair` accepts a loss explicitly.

mod common;

use common::*;
use ringq::journal::SEGMENT_HEADER_LEN;
use ringq::{Durability, Engine, Error, FaultPoint, Options, Publish, PublishOpts, Wait};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Open and read-only inspection fail alike, naming a file that contains `needle`.
fn refused_naming(dir: &Path, needle: &str) -> String {
    let open = match Engine::open(dir, small()) {
        Err(Error::Corruption { path, detail, .. }) => (path, detail),
        Err(e) => panic!("expected corruption on open, got {e}"),
        Ok(_) => panic!("the damaged directory opened"),
    };
    assert!(open.0.to_string_lossy().contains(needle), "open names {:?}, wanted {needle}", open.0);
    match ringq::inspect::inspect(dir) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, open.0, "verify and open agree"),
        Err(e) => panic!("expected corruption from inspect, got {e}"),
        Ok(_) => panic!("inspect read the damaged directory as sound"),
    }
    open.1
}

fn segments_in_use(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log")
                && ringq::journal::read_segment_header(p, &fs::read(p).unwrap())
                    .unwrap()
                    .is_some_and(|h| h.first_lsn != 0)
        })
        .collect();
    v.sort();
    v
}

fn ids(e: &Engine, topic: &str) -> usize {
    drain(e, topic).len()
}

#[test]
fn deleting_the_newest_segment_of_a_closed_queue_is_refused_and_repair_accepts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    for i in 0..200u32 {
        publish(&e, "t", &i.to_le_bytes());
    }
    let d = e.checkout("t", 50, Duration::from_secs(60), Wait::No).unwrap();
    let leases: Vec<_> = d.iter().map(|d| (d.id, d.lease_token)).collect();
    e.ack(&leases, &[], Wait::No).unwrap();
    e.close().unwrap();
    let [newest] = &segments_in_use(&dir)[..] else { panic!("one segment in use") };
    fs::remove_file(newest).unwrap();
    let detail = refused_naming(&dir, &newest.file_name().unwrap().to_string_lossy());
    assert!(detail.contains("missing"), "{detail}");
    // The loss accepted explicitly: the closing snapshot held everything.
    let report = ringq::repair::repair(&dir).unwrap();
    assert!(report.changes.iter().any(|c| c.contains("missing")), "{:?}", report.changes);
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(ids(&e, "t"), 150, "the acked 50 stay acked, the rest is there");
    e.close().unwrap();
}

#[test]
fn deleting_the_newest_of_several_segments_after_a_crash_is_refused() {
    // 64 KiB segments and ~100-byte records: the journal rolls several times.
    let payloads: Vec<Vec<u8>> = (0..2000u32).map(|i| [i.to_le_bytes().to_vec(), vec![7; 96]].concat()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let (tmp, files) = crashed_queue_with(&refs);
    let dir = tmp.path().join("crashed");
    restore(&files, &dir);
    let used = segments_in_use(&dir);
    assert!(used.len() >= 3, "the journal rolled: {used:?}");
    let newest = used.last().unwrap().clone();
    fs::remove_file(&newest).unwrap();
    let detail = refused_naming(&dir, &newest.file_name().unwrap().to_string_lossy());
    assert!(detail.contains("seal") || detail.contains("MANIFEST"), "{detail}");
}

#[test]
fn a_newest_segment_cut_short_is_refused_not_read_as_a_small_torn_tail() {
    let payloads: Vec<Vec<u8>> = (0..300u32).map(|i| vec![i as u8; 100]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let (tmp, files) = crashed_queue_with(&refs);
    let wal = wal_name(&files);
    let ends = record_ends(Path::new(&wal), &files.iter().find(|(n, _)| *n == wal).unwrap().1);
    let cut = 16 * 1024;
    let dir = tmp.path().join("cut");
    restore(&edit_wal(&files, &wal, |b| b.truncate(cut)), &dir);
    let detail = refused_naming(&dir, &wal);
    assert!(detail.contains("cut short"), "{detail}");
    let report = ringq::repair::repair(&dir).unwrap();
    assert!(report.changes.iter().any(|c| c.contains("cut short")), "{:?}", report.changes);
    let e = Engine::open(&dir, small()).unwrap();
    let whole = ends.iter().filter(|end| **end <= cut as u64).count();
    assert!(whole > 50 && whole < 300);
    assert_eq!(ids(&e, "t"), whole, "the records before the cut are kept");
    e.close().unwrap();
}

#[test]
fn fsynced_records_that_are_gone_are_refused_even_when_every_file_is_there() {
    // The journal was fsynced (always) up to the end; zeroing its last records
    // makes it end early: a power cut cannot do that to fsynced data.
    let always = Options { durability: Durability::Always, ..small() };
    let (tmp, files) = crashed_queue_with_opts(&[b"one", b"two", b"three"], always);
    let wal = wal_name(&files);
    let ends = record_ends(Path::new(&wal), &files.iter().find(|(n, _)| *n == wal).unwrap().1);
    let dir = tmp.path().join("zeroed");
    restore(&edit_wal(&files, &wal, |b| tear_at(b, ends[0] as usize)), &dir);
    let detail = refused_naming(&dir, &wal);
    assert!(detail.contains("fsynced up to"), "{detail}");
}

#[test]
fn a_lost_manifest_is_refused_and_repair_rebuilds_it_with_a_new_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    let before = e.instance_id();
    publish(&e, "t", b"kept");
    e.close().unwrap();
    fs::remove_file(dir.join("MANIFEST")).unwrap();
    let detail = refused_naming(&dir, "MANIFEST");
    assert!(detail.contains("ringq repair"), "the error says what to do: {detail}");
    let report = ringq::repair::repair(&dir).unwrap();
    assert!(report.changes.iter().any(|c| c.contains("MANIFEST was missing")), "{:?}", report.changes);
    assert_ne!(report.instance_id, before, "a rebuilt MANIFEST is a new identity");
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(e.instance_id(), report.instance_id);
    assert_eq!(drain(&e, "t"), vec![b"kept".to_vec()]);
    e.close().unwrap();
    // Nothing left to repair.
    assert!(ringq::repair::repair(&dir).unwrap().changes.is_empty());
}

#[test]
fn a_lost_newest_snapshot_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    publish(&e, "t", b"x");
    let lsn = e.snapshot().unwrap();
    e.close().unwrap();
    let snaps: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    assert!(!snaps.is_empty());
    for s in snaps {
        fs::remove_file(s).unwrap();
    }
    let detail = refused_naming(&dir, ".snap");
    assert!(detail.contains("snapshot is missing") && lsn > 0, "{detail}");
}

#[test]
fn damage_in_a_segment_the_snapshot_covers_does_not_block_opening() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let e = Engine::open(&src, small()).unwrap();
    for i in 0..2000u32 {
        publish(&e, "t", &[i.to_le_bytes().to_vec(), vec![1; 96]].concat());
    }
    settle(&e);
    // A crash image with every segment, then a snapshot covering them
    // (which the live engine takes, deleting its covered segments).
    let mut files = snapshot_files(&src);
    e.snapshot().unwrap();
    for (name, bytes) in snapshot_files(&src) {
        if name.ends_with(".snap") || name == "MANIFEST" {
            files.retain(|(n, _)| *n != name);
            files.push((name, bytes));
        }
    }
    e.close().unwrap();
    let dir = tmp.path().join("q");
    restore(&files, &dir);
    let used = segments_in_use(&dir);
    assert!(used.len() >= 3);
    // Flip a header bit and a record bit in the oldest (covered) segment.
    let oldest = used[0].file_name().unwrap().to_string_lossy().to_string();
    restore(
        &edit_wal(&files, &oldest, |b| {
            b[20] ^= 1;
            b[SEGMENT_HEADER_LEN + 30] ^= 1;
        }),
        &dir,
    );
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(ids(&e, "t"), 2000);
    e.close().unwrap();
    // The same segment cut below its header: what it held is in the
    // snapshot, so the segments after it say nothing against removing it.
    restore(&edit_wal(&files, &oldest, |b| b.truncate(0)), &dir);
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(e.recovery_report().torn_segments, vec![dir.join(&oldest)]);
    assert_eq!(ids(&e, "t"), 2000);
    e.close().unwrap();
}

#[test]
fn a_snapshot_cut_short_or_emptied_is_refused_naming_it() {
    // Recovery maps the snapshot: a file shorter than its header says (or
    // empty) is a corruption error naming it, never a crash or a mapping error.
    for keep in [0usize, 10, 100, 1000] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let e = Engine::open(&dir, small()).unwrap();
        for i in 0..100u32 {
            publish(&e, "t", &[i.to_le_bytes().to_vec(), vec![7; 60]].concat());
        }
        let lsn = e.snapshot().unwrap();
        e.close().unwrap();
        let snap = dir.join(ringq::snapshot::snapshot_name(lsn));
        let b = fs::read(&snap).unwrap();
        assert!(b.len() > keep);
        fs::write(&snap, &b[..keep]).unwrap();
        let detail = refused_naming(&dir, ".snap");
        assert!(!detail.is_empty(), "cut to {keep} bytes");
    }
}

#[test]
fn segment_and_snapshot_format_version_0_is_refused() {
    let (tmp, files) = crashed_queue_with(&[b"a", b"b"]);
    let wal = wal_name(&files);
    let dir = tmp.path().join("v0");
    restore(&edit_wal(&files, &wal, |b| b[8..12].copy_from_slice(&0u32.to_le_bytes())), &dir);
    let detail = refused_naming(&dir, &wal);
    assert!(detail.contains("version 0"), "{detail}");

    let dir = tmp.path().join("snap0");
    let e = Engine::open(&dir, small()).unwrap();
    publish(&e, "t", b"x");
    let lsn = e.snapshot().unwrap();
    e.close().unwrap();
    let snap = dir.join(ringq::snapshot::snapshot_name(lsn));
    let mut b = fs::read(&snap).unwrap();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    fs::write(&snap, &b).unwrap();
    let detail = refused_naming(&dir, ".snap");
    assert!(detail.contains("format 0"), "{detail}");
}

#[test]
fn dead_letters_over_a_smaller_dlq_capacity_are_evicted_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, Options { dlq_capacity: 10, ..small() }).unwrap();
    for i in 0..8u8 {
        publish(&e, "t", &[i]);
        let d = e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap();
        e.nack(d[0].id, d[0].lease_token, None, Default::default(), Some("non_retryable")).unwrap();
    }
    e.close().unwrap();
    let e = Engine::open(&dir, Options { dlq_capacity: 3, ..small() }).unwrap();
    let dead = e.dlq_list(None, None, None).unwrap();
    assert_eq!(dead.iter().map(|d| d.message.payload[0]).collect::<Vec<_>>(), vec![5, 6, 7], "the newest stay");
    assert_eq!(count(&e, "dlq_evicted"), 5, "evictions are counted");
    e.close().unwrap();
}

#[test]
fn a_record_bigger_than_a_segment_works_fresh_after_reopen_and_after_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let big = vec![9u8; 100 * 1024];
    let e = Engine::open(&dir, small()).unwrap();
    publish(&e, "t", &big);
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    publish(&e, "t", &big);
    e.snapshot().unwrap();
    publish(&e, "t", &big);
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(drain(&e, "t"), vec![big.clone(), big.clone(), big]);
    e.close().unwrap();
}

#[test]
fn snapshot_close_and_reopen_need_no_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    settle(&e);
    // From now on no segment can be made (as on a full disk).
    e.inject_fault(FaultPoint::SegmentCreate, libc_enospc(), -1);
    publish(&e, "t", b"a");
    e.snapshot().unwrap();
    publish(&e, "t", b"b");
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(drain(&e, "t"), vec![b"a".to_vec(), b"b".to_vec()]);
    e.close().unwrap();
}

#[test]
fn a_full_disk_rewinds_an_active_segment_a_snapshot_covers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    settle(&e);
    e.inject_fault(FaultPoint::SegmentCreate, libc_enospc(), -1);
    let payload = [3u8; 200];
    let mut failures = 0;
    // Runs `call`; on ENOSPC takes a snapshot and tries once more.
    let mut retry = |call: &dyn Fn() -> ringq::Result<()>| {
        if let Err(err) = call() {
            assert_eq!(err.errno(), Some(libc_enospc()), "{err}");
            failures += 1;
            e.snapshot().unwrap();
            call().unwrap();
        }
    };
    // Nothing stays live; far more records than two segments hold. Each
    // time the active segment fills, the roll finds no room for a new one;
    // once a snapshot covers the journal the segment is started over in
    // place and work goes on.
    for _ in 0..3000 {
        retry(&|| {
            e.publish(Publish { topic: "t", payload: &payload, ..Default::default() }, PublishOpts::default(), Wait::No)
                .map(|_| ())
        });
        let d = e.checkout("t", 1, Duration::from_secs(60), Wait::No);
        let d = match d {
            Ok(d) => d,
            Err(err) => {
                assert_eq!(err.errno(), Some(libc_enospc()), "{err}");
                e.snapshot().unwrap();
                e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap()
            }
        };
        retry(&|| e.ack(&[(d[0].id, d[0].lease_token)], &[], Wait::No).map(|_| ()));
    }
    assert!((1..=30).contains(&failures), "{failures} ENOSPC errors");
    publish(&e, "t", b"last");
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(drain(&e, "t"), vec![b"last".to_vec()]);
    e.close().unwrap();
}

/// A rewind whose write or fsync fails may have left the new header in the
/// file: a record appended after the old ones (a smaller one still fits)
/// would then not be read back. So no more appends until the queue is
/// reopened, and the reopened queue has every message.
#[test]
fn a_rewind_that_fails_stops_appends_until_the_queue_is_reopened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    settle(&e);
    e.inject_fault(FaultPoint::SegmentCreate, libc_enospc(), -1);
    let publish_one = |payload: &[u8]| {
        e.publish(Publish { topic: "t", payload, ..Default::default() }, PublishOpts::default(), Wait::No)
    };
    // Records of 1 KiB until the active segment is full and no other can
    // be made; a smaller one would still fit after them.
    let big = [3u8; 1024];
    let mut published = 0;
    let err = loop {
        match publish_one(&big) {
            Ok(_) => published += 1,
            Err(err) => break err,
        }
        assert!(published < 10_000, "the disk never filled");
    };
    assert_eq!(err.errno(), Some(libc_enospc()), "{err}");
    e.snapshot().unwrap();
    // The retry rewinds; its fsync fails.
    e.inject_fault(FaultPoint::Sync, libc::EIO, 1);
    let err = publish_one(&big).unwrap_err();
    assert!(err.to_string().contains("rewinding journal segment"), "{err}");
    for payload in [&big[..], b"small"] {
        let err = publish_one(payload).unwrap_err();
        assert!(err.to_string().contains("reopen the queue"), "{err}");
    }
    drop(e);
    let e = Engine::open(&dir, small()).unwrap();
    let got = drain(&e, "t");
    assert_eq!(got.len(), published);
    assert!(got.iter().all(|p| p[..] == big[..]));
    publish(&e, "t", b"after");
    e.close().unwrap();
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(drain(&e, "t").len(), published + 1);
    e.close().unwrap();
}

#[test]
fn lease_tokens_of_different_queues_and_opens_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let token = |name: &str| {
        let e = Engine::open(tmp.path().join(name), small()).unwrap();
        publish(&e, "t", b"x");
        let d = e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap();
        e.close().unwrap();
        (d[0].id, d[0].lease_token)
    };
    let (a_id, a) = token("a");
    let (b_id, b) = token("b");
    let (_, a_again) = token("a");
    assert_eq!(a_id, b_id, "ids start alike in every queue");
    assert!(a != b && a != a_again, "tokens never do: {a:x} {b:x} {a_again:x}");
}

/// The name of the prepared (unused) segment in a directory image.
fn spare_name(files: &[(String, Vec<u8>)]) -> String {
    files
        .iter()
        .find(|(n, b)| {
            n.ends_with(".log")
                && ringq::journal::read_segment_header(Path::new(n), b).unwrap().is_some_and(|h| h.first_lsn == 0)
        })
        .expect("a spare segment")
        .0
        .clone()
}

#[test]
fn a_roll_while_a_snapshot_is_written_keeps_the_segment_its_manifest_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    // The covered segment is deleted, not recycled (renamed), at the end.
    let e = Engine::open(&dir, Options { recycle_segments: false, ..small() }).unwrap();
    settle(&e);
    // 4,000-byte payloads make 4,077-byte records: 16 fill segment 1 so
    // that the 17th does not fit (48 + 16 × 4,077 + 4,077 + 28 > 65,536).
    let payload = [5u8; 4000];
    for _ in 0..16 {
        publish(&e, "t", &payload);
    }
    assert_eq!(stat(&e, "journal_segments"), 1);
    // The snapshot takes LSN 16 and anchors segment 1; before it is
    // written, record 17 rolls the journal: segment 1 is closed with its
    // last record at exactly the snapshot's LSN.
    let lsn = e
        .snapshot_interleaved(|| {
            publish(&e, "t", &payload);
            assert_eq!(stat(&e, "journal_segments"), 2, "the journal rolled during the snapshot");
        })
        .unwrap();
    assert_eq!(lsn, 16);
    let anchor = ringq::manifest::read(&dir).unwrap().unwrap().journal_anchor;
    let anchored = dir.join(ringq::journal::segment_name(anchor));
    assert!(anchored.exists(), "the MANIFEST names {}, which the snapshot deleted", anchored.display());
    // What a crash leaves now opens, with every message.
    settle(&e);
    let files = snapshot_files(&dir);
    let crashed = tmp.path().join("crashed");
    restore(&files, &crashed);
    let reopened = Engine::open(&crashed, small()).unwrap();
    assert_eq!(ids(&reopened, "t"), 17);
    reopened.close().unwrap();
    // The next snapshot anchors the newer segment and deletes the old one.
    publish(&e, "t", b"x");
    e.snapshot().unwrap();
    assert!(!anchored.exists(), "a covered segment no MANIFEST names is deleted");
    assert_eq!(stat(&e, "journal_segments"), 1);
    e.close().unwrap();
}

#[test]
fn an_interrupted_segment_creation_is_still_cleaned_up() {
    let (tmp, files) = crashed_queue_with(&[b"a", b"b", b"c"]);
    let spare = spare_name(&files);
    // What prepare::create can leave: the file created but empty, or
    // preallocated (zeros) before its header was written.
    let empty = |b: &mut Vec<u8>| b.clear();
    let no_header = |b: &mut Vec<u8>| b.fill(0);
    for (what, edit) in [("empty", &empty as &dyn Fn(&mut Vec<u8>)), ("no-header", &no_header)] {
        let dir = tmp.path().join(what);
        restore(&edit_wal(&files, &spare, edit), &dir);
        let e = Engine::open(&dir, small()).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(e.recovery_report().torn_segments, vec![dir.join(&spare)], "{what}");
        assert_eq!(ids(&e, "t"), 3, "{what}");
        e.close().unwrap();
    }
}

#[test]
fn a_segment_fill_interrupted_by_a_crash_is_removed_and_read_as_nothing() {
    let (tmp, files) = crashed_queue_with(&[b"a", b"b", b"c"]);
    let dir = tmp.path().join("q");
    restore(&files, &dir);
    // What a kill while the preparer wrote zeros leaves: the file under its
    // temporary name, any length, no header yet.
    let fill = dir.join(ringq::journal::prepare::FILL_NAME);
    fs::write(&fill, vec![0u8; 3 * 4096]).unwrap();
    assert!(ringq::inspect::inspect(&dir).unwrap().records_replayed > 0, "inspect ignores it");
    let e = Engine::open(&dir, small()).unwrap();
    assert!(!fill.exists(), "recovery removes it");
    assert_eq!(ids(&e, "t"), 3);
    e.close().unwrap();
}

#[test]
fn a_used_segment_cut_below_its_header_is_refused_and_repair_accepts_the_loss() {
    // durability="os": no flusher round, so `DURABLE` does not see the loss.
    let os = Options { durability: Durability::Os, ..small() };
    let (tmp, files) = crashed_queue_with_opts(&[b"one", b"two", b"three"], os);
    let wal = wal_name(&files);
    for cut in [0usize, 20] {
        let dir = tmp.path().join(format!("cut-{cut}"));
        restore(&edit_wal(&files, &wal, |b| b.truncate(cut)), &dir);
        let detail = refused_naming(&dir, &wal);
        assert!(detail.contains("MANIFEST") && detail.contains("ringq repair"), "cut at {cut}: {detail}");
        let report = ringq::repair::repair(&dir).unwrap();
        assert!(report.changes.iter().any(|c| c.contains(&wal) && c.contains("lost")), "{:?}", report.changes);
        let e = Engine::open(&dir, small()).unwrap();
        assert_eq!(ids(&e, "t"), 0, "cut at {cut}: the three records are gone, and the queue says so");
        e.close().unwrap();
        assert!(ringq::repair::repair(&dir).unwrap().changes.is_empty(), "cut at {cut}: nothing left to repair");
    }
}

#[test]
fn a_newest_segment_a_seal_names_cut_below_its_header_is_refused() {
    let payloads: Vec<Vec<u8>> = (0..2000u32).map(|i| [i.to_le_bytes().to_vec(), vec![7; 96]].concat()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let (tmp, files) = crashed_queue_with(&refs);
    let dir = tmp.path().join("crashed");
    restore(&files, &dir);
    let used = segments_in_use(&dir);
    assert!(used.len() >= 3, "the journal rolled: {used:?}");
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().to_string();
    let newest = name(used.last().unwrap());
    restore(&edit_wal(&files, &newest, |b| b.truncate(0)), &dir);
    let detail = refused_naming(&dir, &newest);
    assert!(detail.contains("seal"), "{detail}");
    // One before it: the segment after it is in use.
    let middle = name(&used[used.len() - 2]);
    restore(&edit_wal(&files, &middle, |b| b.truncate(0)), &dir);
    let detail = refused_naming(&dir, &middle);
    assert!(detail.contains(&format!("{newest} after it is in use")), "{detail}");
}

#[test]
fn a_segment_under_another_number_is_refused_naming_both_numbers() {
    let (tmp, files) = crashed_queue_with(&[b"a"]);
    let wal = wal_name(&files);
    assert_eq!(wal, ringq::journal::segment_name(1));
    let renamed = ringq::journal::segment_name(7);
    let moved: Files =
        files.iter().map(|(n, b)| (if *n == wal { renamed.clone() } else { n.clone() }, b.clone())).collect();
    let dir = tmp.path().join("renamed");
    restore(&moved, &dir);
    let detail = refused_naming(&dir, &renamed);
    assert!(detail.contains("header names segment 1, the file name says 7"), "{detail}");
}

#[test]
fn a_durable_marker_cut_short_says_the_same_at_every_open() {
    // The fuzzer's find (`fuzz/regressions/durable_marker/short-slot0-resurrected.bin`):
    // 28 bytes, a whole slot 0 saying LSN 1000 without its 4 zero bytes.
    // It read as 0, so the open went through; its first write to DURABLE
    // (at offset 32) zero-filled bytes 28..32, slot 0 said 1000 again, and
    // the next open of the unchanged directory was refused. Now the slot
    // counts from the start (its checked bytes are all there), like a whole
    // file saying 1000: every open refuses it, and repair accepts the loss.
    const SHORT: [u8; 28] = [
        0x52, 0x49, 0x4e, 0x47, 0x51, 0x44, 0x55, 0x52, 0xe8, 0x03, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x17,
        0x03, 0xef, 0xa0,
    ];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    for p in [b"one", b"two", b"six"] {
        publish(&e, "t", p);
    }
    e.close().unwrap();
    fs::write(dir.join("DURABLE"), SHORT).unwrap();
    for _ in 0..2 {
        let detail = refused_naming(&dir, ".log");
        assert!(detail.contains("records 4..=1000 are missing"), "{detail}");
        assert_eq!(fs::read(dir.join("DURABLE")).unwrap(), SHORT, "a refused open changed DURABLE");
    }
    let report = ringq::repair::repair(&dir).unwrap();
    assert!(report.changes.iter().any(|c| c.contains("fsynced up to 1000")), "{:?}", report.changes);
    for _ in 0..2 {
        let e = Engine::open(&dir, small()).unwrap();
        assert_eq!(ids(&e, "t"), 3);
        e.close().unwrap();
    }
}

/// A topic policy set on a full disk applies at once (the handler starts
/// and its attempts count against it); `stats()` says the file is behind,
/// and the next snapshot writes it, so a crash after that is judged by it.
#[test]
fn a_policy_set_on_a_full_disk_applies_and_is_written_by_the_next_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let e = Engine::open(&dir, small()).unwrap();
    e.inject_fault(FaultPoint::PoliciesWrite, libc_enospc(), -1);
    let policy = ringq::TopicPolicy { max_attempts: Some(1), handler: Some("h".into()) };
    e.set_topic_policy("t", policy.clone()).unwrap();
    let error = |e: &Engine| match e.stats().unwrap().into_iter().find(|(k, _)| *k == "policies_error") {
        Some((_, ringq::Stat::Text(t))) => Some(t),
        Some((_, ringq::Stat::None)) => None,
        other => panic!("{other:?}"),
    };
    let why = error(&e).expect("the failed write is reported");
    assert!(why.contains("POLICIES") && why.contains("No space left"), "{why}");
    assert!(!dir.join(ringq::policies::POLICIES_FILE).exists());
    publish(&e, "t", b"a");
    let [d] = <[_; 1]>::try_from(e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap()).unwrap();
    e.nack(d.id, d.lease_token, None, Default::default(), None).unwrap();
    assert_eq!(stat(&e, "dead"), 1, "one attempt allowed: the policy applies");
    e.snapshot().unwrap();
    assert!(error(&e).is_some(), "still full: still behind");
    e.inject_fault(FaultPoint::PoliciesWrite, 0, 0);
    e.snapshot().unwrap();
    assert_eq!(error(&e), None);
    assert_eq!(ringq::policies::read(&dir).unwrap().get("t"), Some(&policy));
    e.close().unwrap();
}

/// `repair` of a directory that holds no queue is refused and leaves it as
/// it was: no `LOCK` file made in it (it took the lock first).
#[test]
fn repair_of_a_directory_without_a_queue_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("notes.txt"), b"not a queue").unwrap();
    match ringq::repair::repair(tmp.path()) {
        Err(Error::Invalid(why)) => assert!(why.contains("holds no ringq queue"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["notes.txt"]);
}

/// Every file of `dir` but the lock, with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "LOCK"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

/// Sets the 32-bit format after the 8-byte magic of `path` to `version`,
/// and the CRC32C over `[0, crc_at)` at `crc_at` to match, as a newer
/// ringq would write it.
fn rewrite_format(path: &Path, version: u32, crc_at: Option<usize>) {
    let mut data = fs::read(path).unwrap();
    data[8..12].copy_from_slice(&version.to_le_bytes());
    if let Some(at) = crc_at {
        let crc = crc32c::crc32c(&data[..at]);
        data[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
    fs::write(path, data).unwrap();
}

/// `repair` from a build older than the queue's files refuses before it
/// changes anything: read as damage, the MANIFEST would be rebuilt in the
/// older format (so builds that cannot read the queue would open it) and
/// the POLICIES deleted. A MANIFEST that is damaged, not newer (its CRC
/// fails), is still rebuilt.
#[test]
fn repair_refuses_files_of_a_newer_format_and_changes_nothing() {
    let make = || {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let e = Engine::open(&dir, small()).unwrap();
        publish(&e, "t", b"kept");
        e.set_topic_policy("t", ringq::TopicPolicy { max_attempts: Some(3), handler: None }).unwrap();
        e.snapshot().unwrap();
        e.close().unwrap();
        (tmp, dir)
    };
    type Newer = fn(&Path) -> (PathBuf, u32, Option<usize>);
    let cases: [(&str, Newer); 3] = [
        ("MANIFEST", |d| {
            let p = d.join("MANIFEST");
            let at = fs::metadata(&p).unwrap().len() as usize - 4;
            (p, ringq::manifest::MANIFEST_VERSION + 1, Some(at))
        }),
        ("POLICIES", |d| {
            let p = d.join("POLICIES");
            let at = fs::metadata(&p).unwrap().len() as usize - 4;
            (p, 2, Some(at))
        }),
        ("snapshot", |d| {
            let p = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "snap"))
                .unwrap();
            (p, ringq::snapshot::SNAPSHOT_VERSION + 1, Some(36))
        }),
    ];
    for (what, newer) in cases {
        let (_tmp, dir) = make();
        let (path, version, crc_at) = newer(&dir);
        rewrite_format(&path, version, crc_at);
        let before = contents(&dir);
        let err = ringq::repair::repair(&dir).expect_err(what).to_string();
        assert!(
            err.contains("newer ringq")
                && err.contains("nothing was changed")
                && err.contains(&format!("format {version}")),
            "{what}: {err}"
        );
        assert_eq!(contents(&dir), before, "{what}: repair changed the directory");
    }
    // Nothing but a newer MANIFEST: said as such, not "holds no ringq queue".
    let (_tmp, dir) = make();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "MANIFEST") {
            fs::remove_file(path).unwrap();
        }
    }
    let manifest = dir.join("MANIFEST");
    let at = fs::metadata(&manifest).unwrap().len() as usize - 4;
    rewrite_format(&manifest, ringq::manifest::MANIFEST_VERSION + 1, Some(at));
    let err = ringq::repair::repair(&dir).expect_err("a lone newer MANIFEST").to_string();
    assert!(err.contains("newer ringq") && err.contains("MANIFEST"), "{err}");
    // Damaged, not newer: the format says 6 but the CRC does not hold.
    let (_tmp, dir) = make();
    rewrite_format(&dir.join("MANIFEST"), ringq::manifest::MANIFEST_VERSION + 1, None);
    let report = ringq::repair::repair(&dir).unwrap();
    assert!(report.changes.iter().any(|c| c.contains("MANIFEST was unreadable")), "{:?}", report.changes);
    let e = Engine::open(&dir, small()).unwrap();
    assert_eq!(drain(&e, "t"), vec![b"kept".to_vec()]);
    e.close().unwrap();
}

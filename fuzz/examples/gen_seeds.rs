//! Writes a small seed corpus for the fuzz targets, using ringq's own
//! encoders, a real engine (journal segments, snapshots, MANIFEST, DURABLE)
//! and the golden fixtures in `tests/fixtures/` (read only):
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//!
//! Output: fuzz/seeds/{decode_txn,scan_segment,snapshot,manifest,
//! durable_marker}/*.bin (each directory is replaced).
//! Not a fuzz target: it is an example so `cargo fuzz` never builds it.
//!
//! A `scan_segment` seed is a control byte, (mode 3 only) 8 bytes of first
//! LSN, then what follows the segment header; see
//! `fuzz_targets/scan_segment.rs`. Journal seeds are format 2 unless their
//! name starts with `v1_`.

use ringq::journal::marker::DURABLE_FILE;
use ringq::journal::{
    GAP_UNKNOWN, RECORD_HEADER_LEN, SegmentHeader, encode_record, encode_record_v1, encode_record_with_gap,
    encode_seal, read_segment_header, scan_segment,
};
use ringq::manifest::{MANIFEST_FILE, Manifest};
use ringq::record::{Op, encode_txn};
use ringq::snapshot::snapshot_name;
use ringq::types::{Durability, Failure, Message, Meta, MsgState, Options, SLOT_BITS, Wait};
use ringq::{Engine, Publish, PublishOpts};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TARGETS: [&str; 5] = ["decode_txn", "scan_segment", "snapshot", "manifest", "durable_marker"];

fn id(seq: u64, slot: u64) -> u64 {
    (seq << SLOT_BITS) | slot
}

fn msg(seq: u64, slot: u64, state: MsgState, meta: Option<Arc<Meta>>) -> Message {
    Message {
        id: id(seq, slot),
        topic: 0,
        state,
        superseded: false,
        attempt: 1,
        version: 2,
        enqueued_at: 1_700_000_000_000_000,
        visible_at: if state == MsgState::Delayed { 1_700_000_001_000_000 } else { 0 },
        lease_token: 0,
        lease_deadline: 0,
        ticket: 0,
        line: ringq::NO_LINE,
        payload: b"hello".to_vec().into(),
        meta,
    }
}

fn meta() -> Option<Arc<Meta>> {
    Some(Arc::new(Meta {
        dedup_key: Some("k1".into()),
        headers: vec![("h".into(), "v".into()), ("trace".into(), "abc".into())],
        correlation_id: Some("corr".into()),
        causation_id: None,
        first_failed_at: Some(42),
        priority: 7,
        ordering_key: Some("customer-42".into()),
        dedup_window: Some(60_000_000),
    }))
}

/// One transaction per operation kind, plus an empty and a mixed one.
fn txns() -> Vec<(&'static str, Vec<Op>)> {
    let failure = Failure {
        error_type: Some("ValueError".into()),
        error_message: Some("boom".into()),
        traceback: None,
        handler: Some("h".into()),
    };
    let enqueue = Op::Enqueue { topic: "orders".into(), msg: msg(1, 0, MsgState::Ready, None), supersedes: None };
    let enqueue_meta =
        Op::Enqueue { topic: "orders".into(), msg: msg(2, 1, MsgState::Delayed, meta()), supersedes: Some(id(1, 0)) };
    vec![
        ("empty", vec![]),
        ("enqueue", vec![enqueue.clone()]),
        ("enqueue_meta", vec![enqueue_meta.clone()]),
        ("replace", vec![Op::Replace { id: id(1, 0), version: 3, payload: b"new".to_vec().into(), meta: meta() }]),
        ("checkout", vec![Op::Checkout { ids: vec![id(1, 0), id(2, 1)] }]),
        ("ack", vec![Op::Ack { ids: vec![id(1, 0)] }]),
        // Ids in checkout order: written as runs (tags 11 and 12).
        ("checkout_runs", vec![Op::Checkout { ids: (0..8u64).map(|i| id(10 + i, i)).collect() }]),
        ("ack_runs", vec![Op::Ack { ids: (0..8u64).map(|i| id(20 + i, 7 - i)).chain([id(3, 2)]).collect() }]),
        ("requeue", vec![Op::Requeue { id: id(1, 0), visible_at: 0, failed_at: 7 }]),
        ("dead_letter", vec![Op::DeadLetter { id: id(1, 0), reason: "max_attempts".into(), failure, at: 9 }]),
        ("drop", vec![Op::Drop { id: id(2, 1) }]),
        ("dlq_remove", vec![Op::DlqRemove { ids: vec![id(1, 0), id(3, 2)] }]),
        ("release", vec![Op::Release { ids: vec![id(2, 1), id(1, 0)] }]),
        ("remember", vec![Op::Remember { topic: "t".into(), key: "job-1".into(), id: id(2, 1), until: 99 }]),
        (
            "mixed",
            vec![
                Op::Ack { ids: vec![id(1, 0)] },
                enqueue,
                enqueue_meta,
                Op::Checkout { ids: vec![id(1, 0)] },
                Op::Release { ids: vec![id(1, 0)] },
            ],
        ),
    ]
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(format!("{name}.bin")), data).unwrap();
}

/// Drops the trailing zeros of a preallocated segment, keeping a few.
fn trim_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let last = v.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    v.truncate((last + 20).min(v.len()));
    v
}

/// A `scan_segment` seed: control byte (format, first-LSN mode, marker
/// offset `k` < 32), the first LSN if it needs mode 3, then `body`.
fn seg_seed(v1: bool, first: u64, k: u8, body: &[u8]) -> Vec<u8> {
    assert!(k < 32);
    let low = u8::from(v1) | (k << 3);
    let mut out = match first {
        1 => vec![low],
        f if f == 1 << 40 => vec![low | (2 << 1)],
        f => {
            let mut v = vec![low | (3 << 1)];
            v.extend_from_slice(&f.to_le_bytes());
            v
        }
    };
    out.extend_from_slice(body);
    out
}

fn drop_op(lsn: u64) -> Vec<Op> {
    vec![Op::Drop { id: lsn * 100 }]
}

/// Hand-made journal bodies (after the header), formats 2 and 1.
fn journal_seeds(out: &Path, txns: &[(&'static str, Vec<Op>)]) {
    let dir = out.join("scan_segment");
    // Format 2: every operation kind (gaps 0), then a seal to segment 2.
    let recs: Vec<Vec<u8>> = txns.iter().enumerate().map(|(i, (_, ops))| encode_record(i as u64 + 1, ops)).collect();
    let n = recs.len() as u64;
    let mut all = recs.concat();
    all.extend_from_slice(&encode_seal(n + 1, 2));
    all.extend_from_slice(&[0u8; 24]);
    write(&dir, "all_kinds_sealed", &seg_seed(false, 1, 0, &all));
    // Records written between fsyncs (growing gaps), then zeros.
    let gaps = [0u32, 1, 2, 0, 1, GAP_UNKNOWN, 0];
    let mut g = Vec::new();
    for (i, gap) in gaps.iter().enumerate() {
        let lsn = i as u64 + 1;
        g.extend_from_slice(&encode_record_with_gap(lsn, &drop_op(lsn), *gap));
    }
    g.extend_from_slice(&[0u8; 40]);
    write(&dir, "gaps", &seg_seed(false, 1, 0, &g));
    // A torn tail: two records and half of the third.
    let mut two = [recs[0].clone(), recs[1].clone()].concat();
    two.extend_from_slice(&recs[2][..recs[2].len() / 2]);
    write(&dir, "torn_tail", &seg_seed(false, 1, 0, &two));
    // Record 2 damaged; record 3 was written after 2 reached the disk (gap
    // 1 -> proves 2): corruption.
    let r1 = encode_record(1, &drop_op(1));
    let mut r2 = encode_record_with_gap(2, &drop_op(2), 1);
    r2[25] ^= 1;
    let r3 = encode_record_with_gap(3, &drop_op(3), 1);
    let mut c = [r1.clone(), r2.clone(), r3].concat();
    c.extend_from_slice(&[0u8; 20]);
    write(&dir, "corrupt_middle", &seg_seed(false, 1, 0, &c));
    // A power-cut hole: record 2's page lost (zeros), record 3 (gap 2) was
    // never fsynced either: a torn tail dropping it ...
    let r3u = encode_record_with_gap(3, &drop_op(3), 2);
    let mut hole = [r1.clone(), vec![0u8; r2.len()], r3u.clone()].concat();
    hole.extend_from_slice(&[0u8; 20]);
    write(&dir, "power_cut_hole", &seg_seed(false, 1, 0, &hole));
    // ... unless the DURABLE marker says 2 was on disk (markers 0, 1+3, MAX).
    let mut below = [r1.clone(), r2, r3u].concat();
    below.extend_from_slice(&[0u8; 20]);
    write(&dir, "damage_below_marker", &seg_seed(false, 1, 3, &below));
    // A seal with the wrong LSN (corruption) and one in the middle of zeros.
    let mut bad_seal = [r1.clone(), encode_seal(5, 9).to_vec()].concat();
    bad_seal.extend_from_slice(&[0u8; 20]);
    write(&dir, "seal_wrong_lsn", &seg_seed(false, 1, 0, &bad_seal));
    // LSNs far from 1 (the header's first LSN is 2^40).
    let big = 1u64 << 40;
    let mut far: Vec<u8> = (0..3).flat_map(|i| encode_record_with_gap(big + i, &drop_op(i), i as u32)).collect();
    far.extend_from_slice(&encode_seal(big + 3, 77));
    write(&dir, "far_lsns_sealed", &seg_seed(false, big, 0, &far));
    write(&dir, "empty", &seg_seed(false, 1, 0, &[]));

    // Format 1: no seal, no gap; any valid record after damage is corruption.
    let v1: Vec<Vec<u8>> = txns
        .iter()
        .filter(|(name, _)| *name != "release" && *name != "mixed")
        .enumerate()
        .map(|(i, (_, ops))| encode_record_v1(i as u64 + 1, ops))
        .collect();
    let mut all1 = v1.concat();
    all1.extend_from_slice(&[0u8; 24]);
    write(&dir, "v1_all_kinds", &seg_seed(true, 1, 0, &all1));
    let mut torn1 = [v1[0].clone(), v1[1].clone()].concat();
    torn1.extend_from_slice(&v1[2][..v1[2].len() / 2]);
    write(&dir, "v1_torn_tail", &seg_seed(true, 1, 0, &torn1));
    let mut gap1 = [v1[0].clone(), v1[2].clone()].concat();
    gap1[v1[0].len() + 25] ^= 1;
    gap1.extend_from_slice(&encode_record_v1(3, &drop_op(3)));
    write(&dir, "v1_corrupt_middle", &seg_seed(true, 1, 0, &gap1));
}

/// The golden format-1 segment (tests/fixtures/golden-v1), if present.
fn golden_seeds(out: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    if let Ok(rd) = fs::read_dir(fixtures.join("golden-v1")) {
        for e in rd {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "wal") {
                let data = fs::read(&p).unwrap();
                let h = read_segment_header(&p, &data).unwrap().unwrap();
                let body = trim_zeros(data[h.header_len()..].to_vec());
                write(&out.join("scan_segment"), "v1_golden", &seg_seed(true, h.first_lsn, 0, &body));
            }
        }
    }
    for (set, name) in [("golden-v1", "golden_v1"), ("golden-v2", "golden_v2")] {
        if let Ok(m) = fs::read(fixtures.join(set).join(MANIFEST_FILE)) {
            write(&out.join("manifest"), name, &m);
        }
        if let Ok(d) = fs::read(fixtures.join(set).join(DURABLE_FILE)) {
            write(&out.join("durable_marker"), name, &d);
        }
    }
}

/// The used format-2 segments of a queue directory: (header, file).
fn used_segments(dir: &Path) -> Vec<(SegmentHeader, Vec<u8>)> {
    let mut segs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    segs.into_iter()
        .filter_map(|p| {
            let data = fs::read(&p).unwrap();
            let h = read_segment_header(&p, &data).ok()??;
            (!h.is_unused()).then_some((h, data))
        })
        .collect()
}

/// A journal seed from a real segment: `from` is where the kept records
/// start (the header's end for all of them) and `first` their first LSN.
fn real_seed(data: &[u8], from: usize, first: u64) -> Vec<u8> {
    seg_seed(false, first, 0, &trim_zeros(data[from..].to_vec()))
}

fn engine_seeds(out: &Path) {
    let dir: PathBuf = std::env::temp_dir().join(format!("ringq-fuzz-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    // Records published with `Wait::No` and an fsync waited for now and
    // then: their durable gaps say how much was not yet on disk.
    let opts = Options {
        durability: Durability::Always,
        capacity: 256,
        max_payload: 4096,
        max_key: 64,
        max_headers: 4096,
        segment_size: 64 * 1024,
        dlq_capacity: 8,
        ..Options::default()
    };
    let q = Engine::open(&dir, opts).unwrap();
    let none = PublishOpts::default();
    let headers = vec![("content-type".to_string(), "text/plain".to_string())];
    for i in 0..4u8 {
        let payload = [b'a' + i; 5];
        let p = Publish { topic: "orders", payload: &payload, ..Default::default() };
        let (_, lsn) = q.publish(p, none, Wait::No).unwrap();
        if i == 1 {
            q.wait_durable(lsn).unwrap();
        }
    }
    let p = Publish {
        topic: "orders",
        payload: b"keyed",
        dedup_key: Some("order-7"),
        headers: &headers,
        correlation_id: Some("c-1"),
        ..Default::default()
    };
    q.publish(p, none, Wait::No).unwrap();
    let p = Publish { topic: "mail", payload: b"later", delay: Some(Duration::from_secs(3600)), ..Default::default() };
    q.publish(p, none, Wait::No).unwrap();
    let got = q.checkout("orders", 4, Duration::from_secs(60), Wait::No).unwrap();
    q.ack(&[(got[0].id, got[0].lease_token)], &[], Wait::No).unwrap();
    let failure = Failure { error_message: Some("bad input".into()), ..Default::default() };
    q.nack(got[1].id, got[1].lease_token, None, failure, Some("poison")).unwrap();
    q.nack(got[2].id, got[2].lease_token, None, Failure::default(), None).unwrap();
    // Op 9: given back unstarted.
    let rel = q.release(&[(got[3].id, got[3].lease_token)]).unwrap();
    assert!(rel.lsn.is_some());
    let again = q.checkout("orders", 1, Duration::from_secs(60), Wait::No).unwrap();
    assert!(!again.is_empty());

    // The journal so far: one used segment.
    let segs = used_segments(&dir);
    let (h, data) = &segs[0];
    write(&out.join("scan_segment"), "engine_journal", &real_seed(data, h.header_len(), h.first_lsn));

    // A snapshot with ready, delayed, in-flight messages and a dead letter.
    let lsn = q.snapshot().unwrap();
    let snap = fs::read(dir.join(snapshot_name(lsn))).unwrap();
    write(&out.join("snapshot"), "engine_busy", &snap);

    // Fill the segment until the writer seals it and rolls to the next.
    let filler = [b'f'; 1000];
    for i in 0..80 {
        let p = Publish { topic: "bulk", payload: &filler, ..Default::default() };
        let (_, lsn) = q.publish(p, none, Wait::No).unwrap();
        if i % 10 == 7 {
            q.wait_durable(lsn).unwrap();
        }
    }
    let segs = used_segments(&dir);
    assert!(segs.len() >= 2, "the journal did not roll");
    let (h, data) = &segs[0];
    let mut recs = Vec::new();
    let s = scan_segment(Path::new("seed.log"), data, h, 0, |lsn, off, _| {
        recs.push((lsn, off as usize));
        Ok(())
    })
    .unwrap();
    assert!(s.sealed.is_some(), "the first segment is not sealed");
    // Its last two records and the seal (a whole segment is too long a seed).
    let (lsn, off) = recs[recs.len() - 2];
    write(&out.join("scan_segment"), "engine_sealed_tail", &real_seed(data, off, lsn));
    // The start of the next segment: its first three records, then zeros.
    let (h2, data2) = &segs[1];
    let mut ends = Vec::new();
    scan_segment(Path::new("seed.log"), data2, h2, 0, |_, off, body| {
        ends.push(off as usize + RECORD_HEADER_LEN + body.len());
        Ok(())
    })
    .unwrap();
    let mut head = data2[..ends[2]].to_vec();
    head.extend_from_slice(&[0u8; 20]);
    write(&out.join("scan_segment"), "engine_next_segment", &real_seed(&head, h2.header_len(), h2.first_lsn));

    write(&out.join("manifest"), "engine_open", &fs::read(dir.join(MANIFEST_FILE)).unwrap());
    write(&out.join("durable_marker"), "engine_open", &fs::read(dir.join(DURABLE_FILE)).unwrap());
    q.close().unwrap();
    drop(q);
    write(&out.join("manifest"), "engine_closed", &fs::read(dir.join(MANIFEST_FILE)).unwrap());
    write(&out.join("durable_marker"), "engine_closed", &fs::read(dir.join(DURABLE_FILE)).unwrap());
    let _ = fs::remove_dir_all(&dir);

    // An empty queue's snapshot.
    let q = Engine::open(&dir, Options { durability: Durability::Os, ..Options::default() }).unwrap();
    q.close().unwrap();
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snap") {
            write(&out.join("snapshot"), "engine_empty", &fs::read(&p).unwrap());
        }
    }
    drop(q);
    let _ = fs::remove_dir_all(&dir);
}

fn manifest_seeds(out: &Path) {
    let dir = out.join("manifest");
    let tmp: PathBuf = std::env::temp_dir().join(format!("ringq-fuzz-manifest-seed-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let m = Manifest {
        version: ringq::manifest::MANIFEST_VERSION,
        epoch: 7,
        slot_limit: Some(100_000),
        instance_id: 0x0123_4567_89ab_cdef,
        journal_anchor: 2,
        snapshot_lsn: 41,
    };
    ringq::manifest::write(&tmp, &m).unwrap();
    let current = fs::read(tmp.join(MANIFEST_FILE)).unwrap();
    let _ = fs::remove_dir_all(&tmp);
    write(&dir, "current", &current);
    // Format 3: the same layout (`write` takes only the current format).
    let mut v3 = current;
    v3[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c::crc32c(&v3[..48]);
    v3[48..52].copy_from_slice(&crc.to_le_bytes());
    write(&dir, "v3", &v3);
    // Formats 2 and 1 (this version never writes them): magic, version,
    // epoch, [slot limit,] CRC32C.
    for (name, version, slot_limit) in [("v2", 2u32, Some(64u32)), ("v1", 1, None)] {
        let mut b = b"RINGQMAN".to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        if let Some(l) = slot_limit {
            b.extend_from_slice(&l.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        write(&dir, name, &b);
    }
    // A format-3 manifest with instance id 0 (refused) and a bad CRC.
    let mut zero = v3.clone();
    zero[24..32].fill(0);
    let crc = crc32c::crc32c(&zero[..48]);
    zero[48..52].copy_from_slice(&crc.to_le_bytes());
    write(&dir, "v3_instance_0", &zero);
    let mut bad = v3;
    bad[30] ^= 4;
    write(&dir, "v3_bad_crc", &bad);
}

fn durable_seeds(out: &Path) {
    let dir = out.join("durable_marker");
    let slot = |lsn: u64, counter: u64| {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(b"RINGQDUR");
        b[8..16].copy_from_slice(&lsn.to_le_bytes());
        b[16..24].copy_from_slice(&counter.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    };
    write(&dir, "two_slots", &[slot(9, 2), slot(5, 1)].concat());
    write(&dir, "one_slot", &slot(3, 0));
    let mut torn = [slot(9, 2), slot(5, 1)].concat();
    torn[8] ^= 1;
    write(&dir, "torn_newest", &torn);
    write(&dir, "empty", &[]);
}

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for sub in TARGETS {
        let _ = fs::remove_dir_all(out.join(sub));
    }
    let txns = txns();
    for (name, ops) in &txns {
        let mut buf = Vec::new();
        encode_txn(ops, &mut buf);
        write(&out.join("decode_txn"), name, &buf);
    }
    journal_seeds(&out, &txns);
    golden_seeds(&out);
    engine_seeds(&out);
    manifest_seeds(&out);
    durable_seeds(&out);
    for sub in TARGETS {
        let n = fs::read_dir(out.join(sub)).unwrap().count();
        println!("{sub}: {n} seeds");
    }
}

//! Writes a small seed corpus for the fuzz targets, using ringq's own
//! encoders and a real engine (for journal segments and snapshot files):
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//!
//! Output: fuzz/seeds/{decode_txn,scan_segment,snapshot}/*.bin (overwritten).
//! Not a fuzz target: it is an example so `cargo fuzz` never builds it.

use ringq::journal::{SEGMENT_HEADER_LEN, encode_record, segment_name};
use ringq::record::{Op, encode_txn};
use ringq::snapshot::snapshot_name;
use ringq::types::{Durability, Failure, Message, Meta, MsgState, Options, SLOT_BITS, Wait};
use ringq::{Engine, Publish, PublishOpts};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn id(seq: u64, slot: u64) -> u64 {
    (seq << SLOT_BITS) | slot
}

fn msg(seq: u64, slot: u64, state: MsgState, meta: Option<Box<Meta>>) -> Message {
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
        payload: b"hello".to_vec().into(),
        meta,
    }
}

fn meta() -> Option<Box<Meta>> {
    Some(Box::new(Meta {
        dedup_key: Some("k1".into()),
        headers: vec![("h".into(), "v".into()), ("trace".into(), "abc".into())],
        correlation_id: Some("corr".into()),
        causation_id: None,
        first_failed_at: Some(42),
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
    let enqueue = Op::Enqueue {
        topic: "orders".into(),
        msg: msg(1, 0, MsgState::Ready, None),
        supersedes: None,
    };
    let enqueue_meta = Op::Enqueue {
        topic: "orders".into(),
        msg: msg(2, 1, MsgState::Delayed, meta()),
        supersedes: Some(id(1, 0)),
    };
    vec![
        ("empty", vec![]),
        ("enqueue", vec![enqueue.clone()]),
        ("enqueue_meta", vec![enqueue_meta.clone()]),
        (
            "replace",
            vec![Op::Replace {
                id: id(1, 0),
                version: 3,
                payload: b"new".to_vec().into(),
                meta: meta(),
            }],
        ),
        ("checkout", vec![Op::Checkout { ids: vec![id(1, 0), id(2, 1)] }]),
        ("ack", vec![Op::Ack { ids: vec![id(1, 0)] }]),
        (
            "requeue",
            vec![Op::Requeue { id: id(1, 0), visible_at: 0, failed_at: 7 }],
        ),
        (
            "dead_letter",
            vec![Op::DeadLetter {
                id: id(1, 0),
                reason: "max_attempts".into(),
                failure,
                at: 9,
            }],
        ),
        ("drop", vec![Op::Drop { id: id(2, 1) }]),
        ("dlq_remove", vec![Op::DlqRemove { ids: vec![id(1, 0), id(3, 2)] }]),
        (
            "mixed",
            vec![
                Op::Ack { ids: vec![id(1, 0)] },
                enqueue,
                enqueue_meta,
                Op::Checkout { ids: vec![id(1, 0)] },
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

fn engine_seeds(out: &Path) {
    let dir: PathBuf = std::env::temp_dir().join(format!("ringq-fuzz-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let opts = Options {
        durability: Durability::Os,
        capacity: 64,
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
    for i in 0..3u8 {
        let payload = [b'a' + i; 5];
        let p = Publish { topic: "orders", payload: &payload, ..Default::default() };
        q.publish(p, none, Wait::No).unwrap();
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
    let p = Publish {
        topic: "mail",
        payload: b"later",
        delay: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    q.publish(p, none, Wait::No).unwrap();
    let got = q.checkout("orders", 3, Duration::from_secs(60), Wait::No).unwrap();
    q.ack(&[(got[0].id, got[0].lease_token)], &[], Wait::No).unwrap();
    let failure = Failure { error_message: Some("bad input".into()), ..Default::default() };
    q.nack(got[1].id, got[1].lease_token, None, failure, Some("poison")).unwrap();
    q.nack(got[2].id, got[2].lease_token, None, Failure::default(), None).unwrap();
    let again = q.checkout("orders", 1, Duration::from_secs(60), Wait::No).unwrap();
    assert!(!again.is_empty());

    // The journal so far: the first segment starts at LSN 1, which is what
    // the scan_segment target's header says.
    let wal = fs::read(dir.join(segment_name(1))).unwrap();
    write(
        &out.join("scan_segment"),
        "engine_journal",
        &trim_zeros(wal[SEGMENT_HEADER_LEN..].to_vec()),
    );

    // A snapshot with ready, delayed, in-flight messages and a dead letter.
    let lsn = q.snapshot().unwrap();
    let snap = fs::read(dir.join(snapshot_name(lsn))).unwrap();
    write(&out.join("snapshot"), "engine_busy", &snap);
    q.close().unwrap();
    drop(q);
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

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for sub in ["decode_txn", "scan_segment", "snapshot"] {
        let _ = fs::remove_dir_all(out.join(sub));
    }
    let txns = txns();
    for (name, ops) in &txns {
        let mut buf = Vec::new();
        encode_txn(ops, &mut buf);
        write(&out.join("decode_txn"), name, &buf);
    }
    // Segments (after the header): records 1..=n, then zeros or a torn tail.
    let recs: Vec<Vec<u8>> = txns
        .iter()
        .enumerate()
        .map(|(i, (_, ops))| encode_record(i as u64 + 1, ops))
        .collect();
    let mut all = recs.concat();
    all.extend_from_slice(&[0u8; 24]);
    write(&out.join("scan_segment"), "all_kinds", &all);
    let mut two = [recs[0].clone(), recs[1].clone()].concat();
    two.extend_from_slice(&recs[2][..recs[2].len() / 2]);
    write(&out.join("scan_segment"), "torn_tail", &two);
    let mut gap = [recs[0].clone(), recs[2].clone()].concat();
    gap[recs[0].len() + 25] ^= 1;
    write(&out.join("scan_segment"), "corrupt_middle", &gap);
    write(&out.join("scan_segment"), "empty", &[]);
    engine_seeds(&out);
    for sub in ["decode_txn", "scan_segment", "snapshot"] {
        let n = fs::read_dir(out.join(sub)).unwrap().count();
        println!("{sub}: {n} seeds");
    }
}

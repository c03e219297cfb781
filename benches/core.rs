//! `cargo bench --bench core`: the engine's hot paths next to their baselines.
//!
//! One criterion group, `core`:
//! - `engine_cycle/*`: publish → checkout → ack of a 100-byte message through
//!   the [`Engine`] (durability `os` and `batch`), next to a
//!   `crossbeam_queue::ArrayQueue` push/pop of a 100-byte `Vec` (the cost of
//!   an in-memory queue with no journal, no leases, no acks). The `*_x256`
//!   variants do the same 256 messages at a time (`publish_many`, `checkout`
//!   of 256, one `ack` of 256); their throughput is per message.
//! - `journal_append/*`: appending publish records (100-byte payloads) to the
//!   journal through the engine's publish path (and, for reference, straight
//!   through [`Journal::append`], with the journal's preparer thread running
//!   as in the engine), next to a plain sequential write of the
//!   same bytes to a file (through a 64 KiB `BufWriter`, and as direct 64 KiB
//!   `write_all`s, and those plus an fdatasync every 16 MiB as the journal
//!   does when it rolls a segment). Throughput is in bytes of journal record,
//!   so the ratio to the plain write is the journal's efficiency (target
//!   ≥ 0.7×). `journal_append/floor_x256` is the least any journal must do
//!   for a batch of 256: encode the messages, CRC32C the record and copy it
//!   into memory already faulted in; `publish_many` of 256 should be within
//!   4× of it (issue #15).
//!
//! Every engine and file lives in a fresh temporary directory. The publish
//! benches drain the queue between chunks, untimed, so capacity never runs
//! out however many iterations criterion asks for.
//!
//! After criterion's own report, a summary prints each benchmark's mean
//! (over every timed iteration, warm-up included) and the ratios the targets
//! are about.

use criterion::{Criterion, Throughput, criterion_group};
use crossbeam_queue::ArrayQueue;
use ringq::journal::{Journal, RECORD_HEADER_LEN, RECORD_TXN, encode_record, frame};
use ringq::record::Op;
use ringq::storage::Faults;
use ringq::sync::SyncPoint;
use ringq::{Durability, Engine, Message, MsgState, Options, Publish, PublishOpts, Wait};
use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "t";
const PAYLOAD_LEN: usize = 100;
const BATCH: usize = 256;
const LEASE: Duration = Duration::from_secs(30);
/// Messages published between two (untimed) drains; below the default capacity.
const CHUNK: u64 = 50_000;
const SEGMENT_SIZE: usize = 16 * 1024 * 1024;
const WRITE_BLOCK: usize = 64 * 1024;

/// Per benchmark: total timed duration and elements (or bytes) processed.
static TALLY: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Records `d` for `iters` iterations of `per_iter` units each, and returns it.
fn tally(name: &'static str, per_iter: u64, iters: u64, d: Duration) -> Duration {
    let mut t = TALLY.lock().unwrap();
    let e = t.entry(name).or_default();
    e.0 += d;
    e.1 += per_iter * iters;
    d
}

fn payload() -> Vec<u8> {
    (0..PAYLOAD_LEN).map(|i| (i % 251) as u8).collect()
}

fn open(dir: &Path, durability: Durability) -> Engine {
    let opts = Options { durability, ..Options::default() };
    Engine::open(dir.join("q"), opts).expect("open engine")
}

fn one(payload: &[u8]) -> Publish<'_> {
    Publish { topic: TOPIC, payload, ..Default::default() }
}

/// Checks out and acks everything ready (untimed housekeeping).
fn drain(q: &Engine) {
    loop {
        // Modest batches: `ack` checks each id against the ones before it.
        let got = q.checkout(TOPIC, 512, LEASE, Wait::No).expect("checkout");
        if got.is_empty() {
            return;
        }
        let leases: Vec<(u64, u64)> = got.iter().map(|d| (d.id, d.lease_token)).collect();
        let out = q.ack(&leases, &[], Wait::No).expect("ack");
        assert!(out.lost.is_empty());
    }
}

/// The record the engine journals for one publish of `payload` (same size
/// as every such record: the encoding is fixed-width).
fn enqueue_op(payload: &[u8]) -> Op {
    Op::Enqueue {
        topic: TOPIC.into(),
        msg: Message {
            id: 1,
            topic: 0,
            state: MsgState::Ready,
            superseded: false,
            attempt: 0,
            version: 1,
            enqueued_at: 1_700_000_000_000_000,
            visible_at: 0,
            lease_token: 0,
            lease_deadline: 0,
            ticket: 0,
            line: ringq::NO_LINE,
            payload: payload.into(),
            meta: None,
        },
        supersedes: None,
    }
}

// ---------------------------------------------------------------------------
// engine_cycle

fn engine_cycle_single(c: &mut Criterion) {
    let payload = payload();
    let mut g = c.benchmark_group("core");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .throughput(Throughput::Elements(1));

    for (name, durability) in
        [("engine_cycle/ringq_os", Durability::Os), ("engine_cycle/ringq_batch", Durability::Batch)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = open(dir.path(), durability);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    q.publish(one(&payload), PublishOpts::default(), Wait::No).expect("publish");
                    let got = q.checkout(TOPIC, 1, LEASE, Wait::No).expect("checkout");
                    assert_eq!(got.len(), 1);
                    let d = &got[0];
                    q.ack(&[(d.id, d.lease_token)], &[], Wait::No).expect("ack");
                    black_box(got);
                }
                tally(name, 1, iters, start.elapsed())
            })
        });
        q.close().expect("close");
    }

    let aq: ArrayQueue<Vec<u8>> = ArrayQueue::new(1024);
    g.bench_function("engine_cycle/arrayqueue", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                aq.push(payload.to_vec()).expect("room");
                black_box(aq.pop().expect("item"));
            }
            tally("engine_cycle/arrayqueue", 1, iters, start.elapsed())
        })
    });
    g.finish();
}

fn engine_cycle_batched(c: &mut Criterion) {
    let payload = payload();
    let mut g = c.benchmark_group("core");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .throughput(Throughput::Elements(BATCH as u64));

    for (name, durability) in
        [("engine_cycle/ringq_os_x256", Durability::Os), ("engine_cycle/ringq_batch_x256", Durability::Batch)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = open(dir.path(), durability);
        let items: Vec<Publish<'_>> = (0..BATCH).map(|_| one(&payload)).collect();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut leases = Vec::with_capacity(BATCH);
                let start = Instant::now();
                for _ in 0..iters {
                    q.publish_many(&items, PublishOpts::default(), Wait::No).expect("publish_many");
                    let got = q.checkout(TOPIC, BATCH, LEASE, Wait::No).expect("checkout");
                    assert_eq!(got.len(), BATCH);
                    leases.clear();
                    leases.extend(got.iter().map(|d| (d.id, d.lease_token)));
                    q.ack(&leases, &[], Wait::No).expect("ack");
                    black_box(got);
                }
                tally(name, BATCH as u64, iters, start.elapsed())
            })
        });
        q.close().expect("close");
    }

    let aq: ArrayQueue<Vec<u8>> = ArrayQueue::new(1024);
    g.bench_function("engine_cycle/arrayqueue_x256", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..BATCH {
                    aq.push(payload.to_vec()).expect("room");
                }
                for _ in 0..BATCH {
                    black_box(aq.pop().expect("item"));
                }
            }
            tally("engine_cycle/arrayqueue_x256", BATCH as u64, iters, start.elapsed())
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// journal_append

fn journal_append(c: &mut Criterion) {
    let payload = payload();
    let op = enqueue_op(&payload);
    let record = encode_record(1, std::slice::from_ref(&op));
    let record_len = record.len() as u64;
    let batch_ops: Vec<Op> = (0..BATCH).map(|_| enqueue_op(&payload)).collect();
    let batch_record_len = encode_record(1, &batch_ops).len() as u64;
    drop(batch_ops);

    let mut g = c.benchmark_group("core");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);

    // One publish (one record) per iteration, through the engine.
    g.throughput(Throughput::Bytes(record_len));
    for (name, durability) in
        [("journal_append/ringq_publish_os", Durability::Os), ("journal_append/ringq_publish_batch", Durability::Batch)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = open(dir.path(), durability);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(q.publish(one(&payload), PublishOpts::default(), Wait::No).expect("publish"));
                    }
                    timed += start.elapsed();
                    drain(&q);
                    left -= n;
                }
                tally(name, record_len, iters, timed)
            })
        });
        q.close().expect("close");
    }

    // 256 publishes in one record per iteration (publish_many).
    g.throughput(Throughput::Bytes(batch_record_len));
    {
        let name = "journal_append/ringq_publish_many_x256_os";
        let dir = tempfile::tempdir().expect("tempdir");
        let q = open(dir.path(), Durability::Os);
        let items: Vec<Publish<'_>> = (0..BATCH).map(|_| one(&payload)).collect();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                let per_chunk = CHUNK / BATCH as u64;
                while left > 0 {
                    let n = left.min(per_chunk);
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(q.publish_many(&items, PublishOpts::default(), Wait::No).expect("publish_many"));
                    }
                    timed += start.elapsed();
                    drain(&q);
                    left -= n;
                }
                tally(name, batch_record_len, iters, timed)
            })
        });
        q.close().expect("close");
    }

    // The journal alone: the same record, appended straight to a Journal.
    g.throughput(Throughput::Bytes(record_len));
    {
        let name = "journal_append/journal_raw";
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, spares) =
            Journal::open(dir.path(), Arc::new(Faults::default()), SEGMENT_SIZE, true, 1, Default::default())
                .expect("journal");
        // The engine runs a preparer thread beside its journal: segments
        // are written ahead (without it each roll would make an unfilled
        // one, whose pages the writer's stores convert one by one).
        let preparer = {
            let (spares, path) = (spares.clone(), dir.path().to_owned());
            std::thread::spawn(move || spares.run(&path, &Faults::default(), SEGMENT_SIZE))
        };
        let sync: SyncPoint<Arc<File>> = SyncPoint::new(0, Some(j.active_file()));
        let ops = std::slice::from_ref(&op);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(j.append(ops, &sync).expect("append"));
                    }
                    timed += start.elapsed();
                    // Keep disk use bounded, as snapshots do for the engine
                    // (whose MANIFEST then anchors the active segment).
                    let covered = j.take_covered(j.next_lsn() - 1, j.active_seq());
                    ringq::journal::remove_covered(dir.path(), &spares, covered, true);
                    left -= n;
                }
                tally(name, record_len, iters, timed)
            })
        });
        spares.stop();
        preparer.join().expect("the preparer thread");
    }

    // The floor of a batch: encode 256 messages into a reused buffer, CRC32C
    // the record, copy it into a buffer whose pages are already faulted in.
    g.throughput(Throughput::Bytes(batch_record_len));
    {
        let name = "journal_append/floor_x256";
        let ops: Vec<Op> = (0..BATCH).map(|_| enqueue_op(&payload)).collect();
        let mut dest = vec![1u8; SEGMENT_SIZE];
        let mut scratch: Vec<u8> = Vec::with_capacity(batch_record_len as usize);
        let mut pos = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    scratch.clear();
                    scratch.resize(RECORD_HEADER_LEN, 0);
                    ringq::record::encode_txn(black_box(&ops), &mut scratch);
                    frame(&mut scratch, 1, RECORD_TXN, 0);
                    if pos + scratch.len() > dest.len() {
                        pos = 0;
                    }
                    dest[pos..pos + scratch.len()].copy_from_slice(&scratch);
                    pos += scratch.len();
                }
                black_box(&dest);
                tally(name, batch_record_len, iters, start.elapsed())
            })
        });
    }
    g.throughput(Throughput::Bytes(record_len));

    // Baseline 1: the same record bytes, one write_all each, through a 64 KiB BufWriter.
    {
        let name = "journal_append/write_bufwriter";
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = File::create(dir.path().join("plain.log")).expect("file");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let start = Instant::now();
                    {
                        let mut w = BufWriter::with_capacity(WRITE_BLOCK, &mut f);
                        for _ in 0..n {
                            w.write_all(black_box(&record)).expect("write");
                        }
                        w.flush().expect("flush");
                    }
                    timed += start.elapsed();
                    f.set_len(0).expect("truncate");
                    f.seek(SeekFrom::Start(0)).expect("seek");
                    left -= n;
                }
                tally(name, record_len, iters, timed)
            })
        });
    }

    // Baseline 2: direct 64 KiB writes of back-to-back records.
    g.throughput(Throughput::Bytes(WRITE_BLOCK as u64));
    {
        let name = "journal_append/write_64k";
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = File::create(dir.path().join("plain.log")).expect("file");
        let block: Vec<u8> = record.iter().copied().cycle().take(WRITE_BLOCK).collect();
        let per_chunk = (CHUNK * record_len).div_ceil(WRITE_BLOCK as u64);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(per_chunk);
                    let start = Instant::now();
                    for _ in 0..n {
                        f.write_all(black_box(&block)).expect("write");
                    }
                    timed += start.elapsed();
                    f.set_len(0).expect("truncate");
                    f.seek(SeekFrom::Start(0)).expect("seek");
                    left -= n;
                }
                tally(name, WRITE_BLOCK as u64, iters, timed)
            })
        });
    }

    // Baseline 3: as baseline 2, plus an fdatasync every 16 MiB — the
    // journal's cadence (it fsyncs each segment as it rolls to the next),
    // so the ratio to this isolates encoding and the mmap from the fsyncs.
    {
        let name = "journal_append/write_64k_fsync16m";
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = File::create(dir.path().join("plain.log")).expect("file");
        let block: Vec<u8> = record.iter().copied().cycle().take(WRITE_BLOCK).collect();
        let per_file = (SEGMENT_SIZE / WRITE_BLOCK) as u64;
        let mut in_file = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(per_file - in_file);
                    let start = Instant::now();
                    for _ in 0..n {
                        f.write_all(black_box(&block)).expect("write");
                    }
                    in_file += n;
                    if in_file == per_file {
                        f.sync_data().expect("fdatasync");
                    }
                    timed += start.elapsed();
                    if in_file == per_file {
                        f.set_len(0).expect("truncate");
                        f.seek(SeekFrom::Start(0)).expect("seek");
                        in_file = 0;
                    }
                    left -= n;
                }
                tally(name, WRITE_BLOCK as u64, iters, timed)
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// summary

/// Units per second of `name` (elements or bytes, as tallied).
fn rate(t: &BTreeMap<&'static str, (Duration, u64)>, name: &str) -> Option<f64> {
    let (d, n) = t.get(name)?;
    (d.as_secs_f64() > 0.0).then(|| *n as f64 / d.as_secs_f64())
}

fn summary() {
    let t = TALLY.lock().unwrap();
    if t.is_empty() {
        return;
    }
    println!("\nringq core summary (mean over all timed iterations, warm-up included):");
    for name in t.keys() {
        let r = rate(&t, name).unwrap_or(0.0);
        if name.starts_with("journal_append") {
            println!("  {name:<45} {:>10.1} MiB/s", r / (1024.0 * 1024.0));
        } else {
            println!("  {name:<45} {:>10.3} M msg/s  ({:.0} ns/msg)", r / 1e6, 1e9 / r);
        }
    }
    let ratios = [
        ("engine_cycle/ringq_os", "engine_cycle/arrayqueue", None),
        ("engine_cycle/ringq_batch", "engine_cycle/arrayqueue", None),
        ("engine_cycle/ringq_batch_x256", "engine_cycle/arrayqueue_x256", None),
        ("journal_append/ringq_publish_os", "journal_append/write_bufwriter", Some(0.7)),
        ("journal_append/ringq_publish_os", "journal_append/write_64k", Some(0.7)),
        ("journal_append/ringq_publish_batch", "journal_append/write_bufwriter", Some(0.7)),
        ("journal_append/ringq_publish_many_x256_os", "journal_append/write_64k", Some(0.7)),
        ("journal_append/journal_raw", "journal_append/write_64k", Some(0.7)),
        // Within 4× of the floor: at least a quarter of its throughput.
        ("journal_append/ringq_publish_many_x256_os", "journal_append/floor_x256", Some(0.25)),
        ("journal_append/ringq_publish_os", "journal_append/write_64k_fsync16m", Some(0.7)),
        ("journal_append/journal_raw", "journal_append/write_64k_fsync16m", Some(0.7)),
    ];
    println!("ratios (throughput a / throughput b):");
    for (a, b, target) in ratios {
        let (Some(ra), Some(rb)) = (rate(&t, a), rate(&t, b)) else {
            continue;
        };
        let ratio = ra / rb;
        let verdict = match target {
            Some(min) if ratio >= min => format!("  target >= {min}x: met"),
            Some(min) => format!("  target >= {min}x: NOT met"),
            None => String::new(),
        };
        println!("  {a} / {b} = {ratio:.3}x{verdict}");
    }
}

criterion_group!(benches, engine_cycle_single, engine_cycle_batched, journal_append);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `--test` runs each benchmark once and `--list` runs none: no figures.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        summary();
    }
}

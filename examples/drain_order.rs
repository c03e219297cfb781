//! What delivery order costs the engine, without Python in the way.
//!
//! `cargo run --release --example drain_order -- <plain|prio|key> [reps] [os|batch]`
//!
//! Each repetition publishes 100,000 100-byte messages one call at a time
//! into a fresh queue (`priority=i % 10` for `prio`, `ordering_key=k{i % 10000}`
//! for `key`), waits until they are durable, then drains them with
//! `checkout(256)` + `ack`. It prints the median and every repetition's
//! nanoseconds per message for both phases. `python -m ringq.bench --only
//! priorities,ordering_keys` measures the same through the Python API; this
//! one isolates the engine (it is how the allocator choice in
//! docs/benchmarks.md was measured).

use ringq::{Durability, Engine, Options, Publish, PublishOpts, Wait};
use std::time::{Duration, Instant};

const N: usize = 100_000;
const KEYS: usize = 10_000;

fn median(mut v: Vec<u128>) -> (u128, Vec<u128>) {
    v.sort_unstable();
    (v[v.len() / 2], v)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("plain", String::as_str);
    if !matches!(mode, "plain" | "prio" | "key") {
        eprintln!("usage: drain_order <plain|prio|key> [reps] [os|batch]");
        std::process::exit(2);
    }
    let reps: usize = args.get(2).map_or(5, |r| r.parse().expect("reps is a number"));
    let durability = match args.get(3).map_or("os", String::as_str) {
        "batch" => Durability::Batch,
        _ => Durability::Os,
    };
    let payload: Vec<u8> = (0..100).map(|i| i as u8).collect();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let (mut publish, mut drain) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = Options { durability, capacity: N, ..Options::default() };
        let q = Engine::open(dir.path().join("q"), opts).expect("open");
        let t = Instant::now();
        let mut last = None;
        for i in 0..N {
            let mut p = Publish { topic: "t", payload: &payload, ..Default::default() };
            match mode {
                "prio" => p.priority = (i % 10) as u8,
                "key" => p.ordering_key = Some(&keys[i % KEYS]),
                _ => {}
            }
            last = q.publish(p, PublishOpts::default(), Wait::No).expect("publish").1;
        }
        publish.push(t.elapsed().as_nanos() / N as u128);
        q.wait_durable(last).expect("durable");
        let t = Instant::now();
        let mut got = 0;
        loop {
            let ds = q.checkout("t", 256, Duration::from_secs(30), Wait::No).expect("checkout");
            if ds.is_empty() {
                break;
            }
            got += ds.len();
            let leases: Vec<(u64, u64)> = ds.iter().map(|d| (d.id, d.lease_token)).collect();
            q.ack(&leases, &[], Wait::No).expect("ack");
        }
        drain.push(t.elapsed().as_nanos() / N as u128);
        assert_eq!(got, N, "every message delivered once");
        q.close().expect("close");
    }
    let (p, ps) = median(publish);
    let (d, ds) = median(drain);
    println!("{mode}: publish {p} ns/msg {ps:?}, drain {d} ns/msg {ds:?}");
}

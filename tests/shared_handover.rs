//! A client whose callers read their own answers must never leave a caller
//! asleep with nobody reading: found in review (a hand-over to a caller
//! blocked writing a large request, while the owner was blocked writing
//! answers to this client).

use ringq::{Checkout, Options, Publish, PublishOpts, SharedQueue, Store, Wait};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn round() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = Arc::new(SharedQueue::open(&path, Options::default()).unwrap());
    let client = Arc::new(SharedQueue::open(&path, Options::default()).unwrap());
    assert_eq!(client.role(), "client");
    let payload = vec![7u8; 60_000];
    for _ in 0..8 {
        owner
            .publish(Publish { topic: "t", payload: &payload, ..Default::default() }, PublishOpts::default(), Wait::No)
            .unwrap();
    }
    client.stats().unwrap(); // connected, idle
    let o = Arc::clone(&owner);
    let holder = std::thread::spawn(move || {
        o.with_engine(&mut |e| e.hold_lock_for(Duration::from_millis(300)));
    });
    std::thread::sleep(Duration::from_millis(50));
    let (ca, cb, cx) = (Arc::clone(&client), Arc::clone(&client), Arc::clone(&client));
    let ta = std::thread::spawn(move || {
        ca.stats().unwrap();
    });
    std::thread::sleep(Duration::from_millis(30));
    let tb = std::thread::spawn(move || {
        cb.checkout_with("t", Checkout::new(8, Duration::from_secs(60), Wait::No)).unwrap();
    });
    std::thread::sleep(Duration::from_millis(30));
    let tx = std::thread::spawn(move || {
        let ids: Vec<u64> = (1u64 << 40..(1u64 << 40) + 1_000_000).collect(); // an 8 MB request
        cx.dlq_purge(Some(&ids)).unwrap();
    });
    holder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(ta.is_finished() && tb.is_finished() && tx.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = ta.is_finished() && tb.is_finished() && tx.is_finished();
    if !ok {
        eprintln!("stuck: A done {} B done {} X done {}", ta.is_finished(), tb.is_finished(), tx.is_finished());
        client.close().unwrap(); // unsticks them (they fail)
    }
    let _ = (ta.join(), tb.join(), tx.join());
    ok
}

#[test]
fn a_hand_over_never_goes_to_a_caller_blocked_writing() {
    let rounds = 6;
    let stuck = (0..rounds).filter(|_| !round()).count();
    eprintln!("{stuck} of {rounds} rounds deadlocked");
    assert_eq!(stuck, 0);
}

#[test]
fn client_close_while_a_caller_leads_in_a_long_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let _owner = SharedQueue::open(&path, Options::default()).unwrap();
    let client = Arc::new(SharedQueue::open(&path, Options::default()).unwrap());
    let mut ts = Vec::new();
    for i in 0..16 {
        let c = Arc::clone(&client);
        ts.push(std::thread::spawn(move || {
            if i == 0 {
                let r = c.checkout_with(
                    "x",
                    Checkout::new(1, Duration::from_secs(60), Wait::Until(Instant::now() + Duration::from_secs(30))),
                );
                return format!("{:?}", r.map(|v| v.len()));
            }
            let mut n = 0;
            loop {
                match c.interrupts("p") {
                    Ok(_) => n += 1,
                    Err(e) => return format!("{n} then {e:?}"),
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    client.close().unwrap();
    for t in ts {
        let r = t.join().unwrap();
        assert!(r.contains("Closed") || r.contains("OwnerGone"), "{r}");
    }
    eprintln!("all returned {:?} after close", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(2));
}

//! A shared queue's socket, from Rust: an owner and clients in one process
//! (each client is its own connection, as another process's would be), and
//! raw sockets sending what no client would.

use ringq::shared::addr;
use ringq::{Checkout, Durability, Error, Options, Publish, PublishOpts, SharedQueue, Store, Wait};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn open(dir: &std::path::Path) -> SharedQueue {
    SharedQueue::open(dir, Options::default()).expect("opens")
}

fn publish(q: &dyn Store, topic: &str, payload: &[u8]) -> u64 {
    q.publish(Publish { topic, payload, ..Default::default() }, PublishOpts::default(), Wait::No).expect("publish").0
}

fn checkout(q: &dyn Store, topic: &str, max: usize, wait: Wait) -> Vec<ringq::Delivered> {
    q.checkout_with(topic, Checkout::new(max, Duration::from_secs(60), wait)).expect("checkout")
}

fn raw(dir: &std::path::Path) -> std::os::unix::net::UnixStream {
    addr::read(dir).expect("address recorded").connect().expect("connects")
}

/// Reads one answer frame: (request id, code, body).
fn answer(s: &mut std::os::unix::net::UnixStream) -> Option<(u64, u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut f = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut f).ok()?;
    Some((u64::from_le_bytes(f[..8].try_into().unwrap()), f[8], f[9..].to_vec()))
}

fn frame(id: u64, code: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((9 + body.len()) as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&id.to_le_bytes());
    f.push(code);
    f.extend_from_slice(body);
    f
}

/// A hello in the protocol version this build speaks (`wire::VERSION`).
fn hello() -> Vec<u8> {
    let mut b = b"RINGQSHR".to_vec();
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&std::process::id().to_le_bytes());
    frame(1, 1, &b)
}

#[test]
fn roles_and_a_round_trip_between_owner_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    let client = open(&path);
    assert_eq!((owner.role(), client.role()), ("owner", "client"));
    assert_eq!(owner.instance_id(), client.instance_id());
    let id = publish(&client, "t", b"hello");
    let got = checkout(&owner, "t", 10, Wait::No);
    assert_eq!((got[0].id, &*got[0].payload), (id, b"hello".as_slice()));
    owner.ack(&[(got[0].id, got[0].lease_token)], &[], Wait::No).unwrap();
    // A stale ack through the client: LeaseLost, as from the owner.
    let out = client.ack(&[(got[0].id, got[0].lease_token)], &[], Wait::No).unwrap();
    assert_eq!(out.lost, vec![id]);
    client.close().unwrap();
    owner.close().unwrap();
}

#[test]
fn a_waiting_checkout_does_not_hold_up_the_requests_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    let client = Arc::new(open(&path));
    let c2 = Arc::clone(&client);
    let waiter =
        std::thread::spawn(move || checkout(&*c2, "late", 1, Wait::Until(Instant::now() + Duration::from_secs(20))));
    std::thread::sleep(Duration::from_millis(100));
    // Same connection, while the checkout above waits on the owner.
    let t0 = Instant::now();
    publish(&*client, "other", b"x");
    assert!(t0.elapsed() < Duration::from_secs(2), "answered while the checkout waits");
    publish(&owner, "late", b"now");
    let got = waiter.join().unwrap();
    assert_eq!(&*got[0].payload, b"now");
}

#[test]
fn a_dropped_client_gives_its_leases_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    for i in 0..5u8 {
        publish(&owner, "t", &[i]);
    }
    let client = open(&path);
    assert_eq!(checkout(&client, "t", 3, Wait::No).len(), 3);
    client.close().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = checkout(&owner, "t", 10, Wait::No);
        if ready.len() == 5 {
            let mut attempts: Vec<u32> = ready.iter().map(|d| d.attempt).collect();
            attempts.sort();
            assert_eq!(attempts, vec![1, 1, 2, 2, 2]);
            break;
        }
        owner.release(&ready.iter().map(|d| (d.id, d.lease_token)).collect::<Vec<_>>()).unwrap();
        assert!(Instant::now() < deadline, "leases still held");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_refused_ack_leaves_the_lease_to_be_given_back_when_the_client_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    publish(&owner, "t", b"m");
    let client = open(&path);
    let got = checkout(&client, "t", 1, Wait::No);
    assert_eq!(got.len(), 1);
    let leases = [(got[0].id, got[0].lease_token)];
    // A follow-up over the payload limit: the whole ack is refused.
    let big = vec![0u8; 2 << 20];
    let follow = Publish { topic: "t", payload: &big, ..Default::default() };
    assert!(matches!(client.ack(&leases, &[follow], Wait::No), Err(ringq::Error::Limit { .. })));
    client.close().unwrap();
    // The message comes back at once, not after its lease.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = checkout(&owner, "t", 1, Wait::No);
        if let [d] = &again[..] {
            assert_eq!((d.id, d.attempt), (got[0].id, 2));
            break;
        }
        assert!(Instant::now() < deadline, "the refused ack's lease is still held");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn many_threads_share_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    let client = Arc::new(open(&path));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = Arc::clone(&client);
            std::thread::spawn(move || (0..500).map(|i| publish(&*c, "t", format!("{t}-{i}").as_bytes())).count())
        })
        .collect();
    let n: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(n, 4000);
    assert_eq!(checkout(&owner, "t", 10_000, Wait::No).len(), 4000);
}

#[test]
fn durability_always_answers_after_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let opts = Options { durability: Durability::Always, ..Options::default() };
    let owner = SharedQueue::open(&path, opts.clone()).unwrap();
    let client = SharedQueue::open(&path, opts).unwrap();
    assert_eq!(client.durability(), Durability::Always);
    let id = publish(&client, "t", b"durable");
    let stats = owner.stats().unwrap();
    let get = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // The publish's record is on disk: the last durable LSN covers it.
    match (get("durable_lsn"), get("lsn")) {
        (Some(ringq::Stat::Int(d)), Some(ringq::Stat::Int(l))) => assert!(d >= l, "durable {d} < last {l}"),
        other => panic!("stats lack durable_lsn/lsn: {other:?}"),
    }
    assert_eq!(checkout(&owner, "t", 1, Wait::No)[0].id, id);
}

#[test]
fn garbage_on_the_socket_costs_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    // Not a hello.
    let mut s = raw(&path);
    s.write_all(&frame(7, 2, b"nonsense")).unwrap();
    let (id, code, _) = answer(&mut s).expect("an error answer");
    assert_eq!((id, code), (7, 1));
    assert!(answer(&mut s).is_none(), "then the owner hangs up");
    // A wrong protocol version.
    let mut s = raw(&path);
    let mut b = b"RINGQSHR".to_vec();
    b.extend_from_slice(&99u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    s.write_all(&frame(1, 1, &b)).unwrap();
    let (_, code, body) = answer(&mut s).unwrap();
    assert_eq!(code, 1);
    assert!(String::from_utf8_lossy(&body).contains("protocol version"));
    // A hostile length, a truncated request, an unknown code.
    let mut s = raw(&path);
    s.write_all(&hello()).unwrap();
    assert_eq!(answer(&mut s).unwrap().1, 0);
    s.write_all(&frame(2, 99, b"")).unwrap();
    let (id, code, body) = answer(&mut s).unwrap();
    assert_eq!((id, code), (2, 1));
    assert!(String::from_utf8_lossy(&body).contains("unknown request code 99"));
    s.write_all(&frame(3, 2, &[1, 2, 3])).unwrap();
    let (id, code, body) = answer(&mut s).unwrap();
    assert_eq!((id, code), (3, 1));
    assert!(String::from_utf8_lossy(&body).contains("malformed request"));
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(answer(&mut s).is_none(), "a frame over the limit ends the connection");
    // The owner serves on.
    let client = open(&path);
    publish(&client, "t", b"still fine");
    assert_eq!(checkout(&owner, "t", 1, Wait::No).len(), 1);
}

/// Resident memory of this process, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_huge_frame_length_costs_no_memory_until_its_bytes_come() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    let before = rss_bytes();
    // Before the hello, and after it (the hello's own limit is small).
    let mut early = raw(&path);
    early.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    early.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    let t = std::time::Instant::now();
    assert!(answer(&mut early).is_none(), "a hello that long ends the connection");
    assert!(t.elapsed() < std::time::Duration::from_secs(4), "at once");
    let mut late = raw(&path);
    late.write_all(&hello()).unwrap();
    assert_eq!(answer(&mut late).unwrap().1, 0);
    late.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    late.write_all(&[7u8; 100]).unwrap();
    // The owner is reading the rest of that frame now; it must not have
    // made room for all of it (it used to: 1 GiB per connection).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 512 << 20, "the owner's memory grew by {grown} bytes");
    drop(late);
    let client = open(&path);
    publish(&client, "t", b"still fine");
    assert_eq!(checkout(&owner, "t", 1, Wait::No).len(), 1);
}

#[test]
fn a_connection_refused_at_once_is_always_closed() {
    // Its thread ended before the accept loop had registered its handle,
    // which then stayed open for good: the peer waited for the hang-up
    // forever (seen once in CI under load). Many tries, each bounded.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let _owner = open(&path);
    for i in 0..300u64 {
        let mut s = raw(&path);
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(&frame(i, 2, b"not a hello")).unwrap();
        let (_, code, _) = answer(&mut s).expect("an error answer");
        assert_eq!(code, 1);
        let mut rest = Vec::new();
        match std::io::Read::read_to_end(&mut s, &mut rest) {
            Ok(_) => assert!(rest.is_empty()),
            Err(e) => panic!("try {i}: the owner did not hang up within 10 s: {e}"),
        }
    }
}

#[test]
fn the_owners_close_fails_waiting_calls_and_the_client_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let owner = open(&path);
    publish(&owner, "t", b"kept");
    let client = Arc::new(open(&path));
    let c2 = Arc::clone(&client);
    let waiter = std::thread::spawn(move || {
        c2.checkout_with(
            "none",
            Checkout::new(1, Duration::from_secs(5), Wait::Until(Instant::now() + Duration::from_secs(30))),
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    owner.close().unwrap();
    match waiter.join().unwrap() {
        Err(Error::OwnerGone(msg)) => assert!(msg.contains("whether the call took effect is unknown"), "{msg}"),
        other => panic!("expected OwnerGone, got {other:?}"),
    }
    assert!(addr::read(&path).is_none(), "the closed owner removed its address");
    // Nobody owns the directory now: the next call takes it over.
    let got = checkout(&*client, "t", 1, Wait::No);
    assert_eq!(client.role(), "owner");
    assert_eq!(&*got[0].payload, b"kept");
}

/// A client keeps what the owner said when it last connected: taking the
/// queue over after an owner that was restarted with `"always"`, it goes
/// on with `"always"`, not with the first owner's `"batch"` (its own
/// callers, and clients that connect to it, would be answered before
/// the fsync).
#[test]
fn a_take_over_uses_the_options_of_the_owner_last_connected_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let batch = Options { durability: Durability::Batch, ..Options::default() };
    let first = SharedQueue::open(&path, batch.clone()).unwrap();
    let client = open(&path);
    assert_eq!((client.role(), client.durability()), ("client", Durability::Batch));
    first.close().unwrap();
    let always = Options { durability: Durability::Always, ..Options::default() };
    let second = SharedQueue::open(&path, always).unwrap();
    assert_eq!(second.role(), "owner");
    publish(&client, "t", b"through the second owner");
    assert_eq!(client.durability(), Durability::Always, "the second owner's welcome");
    second.close().unwrap();
    let got = checkout(&client, "t", 1, Wait::No);
    assert_eq!(client.role(), "owner");
    assert_eq!(&*got[0].payload, b"through the second owner");
    assert_eq!(client.durability(), Durability::Always, "taken over as the last owner served it");
    let mut engine_durability = None;
    assert!(client.with_engine(&mut |e| engine_durability = Some(e.durability())));
    assert_eq!(engine_durability, Some(Durability::Always));
    client.close().unwrap();
}

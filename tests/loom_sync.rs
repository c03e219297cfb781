//! Model-checks the group-commit protocol (`ringq::sync::SyncPoint`) with
//! loom: every interleaving of two writers and the flusher. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom_sync`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use ringq::sync::{Job, SyncPoint};

/// Writers append (LSN 1 and 2) and wait for durability; the flusher syncs
/// what was written when it started. A waiter may only return once an fsync
/// that started after its write has completed, and nobody hangs.
#[test]
fn group_commit_never_acks_an_unsynced_write_and_never_loses_a_wakeup() {
    // Three threads: bound preemptions (loom's usual setting) to keep the
    // search to a couple of minutes; bugs need few preemptions to show.
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let sp = Arc::new(SyncPoint::<u8>::new(0, Some(0)));
        // The highest LSN whose write happened before an fsync began.
        let synced_upto = Arc::new(AtomicU64::new(0));
        let written = Arc::new(loom::sync::Mutex::new(0u64));

        let flusher = {
            let sp = sp.clone();
            let synced_upto = synced_upto.clone();
            thread::spawn(move || {
                loop {
                    match sp.next_job(None) {
                        Job::Stop => return,
                        Job::Sync { upto, .. } => {
                            // The "fsync" covers everything written up to `upto`.
                            synced_upto.fetch_max(upto, Ordering::SeqCst);
                            sp.complete(upto, Ok(()));
                        }
                    }
                }
            })
        };

        let writers: Vec<_> = (0..2)
            .map(|_| {
                let sp = sp.clone();
                let synced_upto = synced_upto.clone();
                let written = written.clone();
                thread::spawn(move || {
                    let lsn = {
                        // Appends are serialised by the engine's lock.
                        let mut w = written.lock().unwrap();
                        *w += 1;
                        sp.written(*w);
                        *w
                    };
                    sp.wait_durable(lsn).expect("no failure injected");
                    assert!(synced_upto.load(Ordering::SeqCst) >= lsn, "acked before its fsync");
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(sp.durable(), 2);
        sp.shutdown();
        flusher.join().unwrap();
    });
}

/// A failed fsync is reported to the waiter whose write it covered.
#[test]
fn group_commit_reports_a_failed_fsync_to_its_waiter() {
    loom::model(|| {
        let sp = Arc::new(SyncPoint::<u8>::new(0, Some(0)));
        let flusher = {
            let sp = sp.clone();
            thread::spawn(move || {
                if let Job::Sync { upto, .. } = sp.next_job(None) {
                    sp.complete(upto, Err((Some(5), "EIO".into())));
                }
            })
        };
        sp.written(1);
        let r = sp.wait_durable(1);
        assert!(r.is_err(), "the only fsync failed, so the write is not durable");
        assert_eq!(sp.durable(), 0);
        sp.shutdown();
        flusher.join().unwrap();
    });
}

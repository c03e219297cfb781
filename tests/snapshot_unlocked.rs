//! What a snapshot does after releasing the engine's lock: deleting the
//! journal segments and the older snapshots it covers (an unlink waits for
//! the disk: tens of milliseconds per snapshot on a filesystem mounted
//! with `discard`, which every publish used to wait for) — except after an
//! append found the disk full, when the deletion stays under the lock so
//! that the call retried after it finds the space.
//!
//! Its own test binary: it installs the process-wide storage observer (the
//! tests take turns: `SERIAL`).

mod common;

use common::*;
use ringq::storage::{self, Observer};
use ringq::{Engine, FaultPoint, Options, Publish, PublishOpts, Wait};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// When a snapshot removes its first covered journal segment, publishes
/// from another thread and notes whether that publish finished within
/// `wait` while the removal waited. Only removals by a thread taking a
/// snapshot count: the test's own, or the engine's snapshot thread, which
/// an append refused for want of space wakes and which may come first (the
/// preparer thread may remove a stale spare: that does not count).
struct PublishWhileRemoving {
    engine: Mutex<Option<(Arc<Engine>, ThreadId)>>,
    wait: Duration,
    /// (segment being removed, whether the publish finished meanwhile).
    seen: Mutex<Option<(PathBuf, bool)>>,
}

impl Observer for PublishWhileRemoving {
    fn file_synced(&self, _: &File) {}
    fn dir_synced(&self, _: &Path) {}
    fn removing(&self, path: &Path) {
        if path.extension().is_none_or(|x| x != "log") || self.seen.lock().unwrap().is_some() {
            return;
        }
        let Some((e, test_thread)) = self.engine.lock().unwrap().clone() else { return };
        let me = std::thread::current();
        if me.id() != test_thread && me.name() != Some("ringq-snapshot") {
            return;
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(publish(&e, "t", b"during the removal"));
        });
        let finished = rx.recv_timeout(self.wait).is_ok();
        *self.seen.lock().unwrap() = Some((path.to_owned(), finished));
    }
}

/// A queue of several 64 KiB segments (100 messages of 4 KiB: 15 fit in
/// one), with the observer installed; `full_disk` first makes an append
/// fail with ENOSPC (no segment can be made), then gives the space back.
/// Returns (whether the publish during the removal finished within `wait`,
/// the segment removed); checks that nothing was lost.
fn snapshot_with_a_publish_during_its_removal(full_disk: bool, wait: Duration) -> (bool, PathBuf) {
    let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let observer = Arc::new(PublishWhileRemoving { engine: Mutex::new(None), wait, seen: Mutex::new(None) });
    storage::set_observer(Some(observer.clone() as Arc<dyn Observer>));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let opts = Options { snapshot_every: 1 << 40, ..small() };
    let e = Arc::new(Engine::open(&dir, opts.clone()).unwrap());
    let payload = vec![7u8; 4096];
    for _ in 0..100 {
        publish(&e, "t", &payload);
    }
    assert!(count(&e, "journal_segments") >= 3, "the journal rolled");
    let mut published: u64 = 100;
    *observer.engine.lock().unwrap() = Some((e.clone(), std::thread::current().id()));
    if full_disk {
        e.inject_fault(FaultPoint::SegmentCreate, libc_enospc(), -1);
        let err = loop {
            let p = Publish { topic: "t", payload: &payload, ..Default::default() };
            match e.publish(p, PublishOpts::default(), Wait::No) {
                Ok(_) => published += 1,
                Err(err) => break err,
            }
            assert!(published < 400, "the segments must fill up");
        };
        assert_eq!(err.errno(), Some(libc_enospc()), "{err}");
        e.inject_fault(FaultPoint::SegmentCreate, 0, 0);
    }
    // Also waits for a snapshot the full disk started to finish.
    e.snapshot().unwrap();
    *observer.engine.lock().unwrap() = None;
    let (path, finished) = observer.seen.lock().unwrap().clone().expect("the snapshot removed a covered segment");
    storage::set_observer(None);
    assert!(!path.exists(), "the covered segment is gone once snapshot() returns");
    // Nothing was lost: those published and the one during the removal
    // (which went on once the lock was free), also after a reopen.
    let t0 = std::time::Instant::now();
    while count(&e, "ready") < published + 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the publish during the removal never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
    e.close().unwrap();
    drop(e);
    let e = Engine::open(&dir, opts).unwrap();
    let got = drain(&e, "t");
    assert_eq!(got.len() as u64, published + 1);
    assert_eq!(got[published as usize], b"during the removal");
    e.close().unwrap();
    (finished, path)
}

#[test]
fn publishes_go_on_while_a_snapshot_deletes_the_segments_it_covers() {
    // Generous: a publish that does not wait takes microseconds.
    let (finished, path) = snapshot_with_a_publish_during_its_removal(false, Duration::from_secs(5));
    assert!(finished, "a publish waited for the snapshot's removal of {}", path.display());
}

#[test]
fn after_the_disk_was_full_a_snapshot_deletes_what_it_covers_under_the_lock() {
    // The lock is held: the publish cannot finish however long it waits.
    let (finished, path) = snapshot_with_a_publish_during_its_removal(true, Duration::from_millis(300));
    assert!(!finished, "a publish went on while the snapshot removed {} after a full disk", path.display());
}

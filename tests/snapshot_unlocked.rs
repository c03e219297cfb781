//! What a snapshot does after releasing the engine's lock: deleting the
//! journal segments and the older snapshots it covers (an unlink waits for
//! the disk: tens of milliseconds per snapshot on a filesystem mounted
//! with `discard`, which every publish used to wait for).
//!
//! Its own test binary: it installs the process-wide storage observer.

mod common;

use common::*;
use ringq::storage::{self, Observer};
use ringq::{Engine, Options};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When the snapshot removes its first covered journal segment, publishes
/// from another thread and notes whether that publish finished while the
/// removal waited.
#[derive(Default)]
struct PublishWhileRemoving {
    engine: Mutex<Option<Arc<Engine>>>,
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
        let Some(e) = self.engine.lock().unwrap().clone() else { return };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(publish(&e, "t", b"during the removal"));
        });
        // Generous: a publish that does not wait takes microseconds.
        let finished = rx.recv_timeout(Duration::from_secs(5)).is_ok();
        *self.seen.lock().unwrap() = Some((path.to_owned(), finished));
    }
}

#[test]
fn publishes_go_on_while_a_snapshot_deletes_the_segments_it_covers() {
    let observer = Arc::new(PublishWhileRemoving::default());
    storage::set_observer(Some(observer.clone() as Arc<dyn Observer>));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let opts = Options { snapshot_every: 1 << 40, ..small() };
    let e = Arc::new(Engine::open(&dir, opts.clone()).unwrap());
    // 4 KiB payloads: a 64 KiB segment holds 15, so 100 fill several.
    let payload = vec![7u8; 4096];
    for _ in 0..100 {
        publish(&e, "t", &payload);
    }
    assert!(count(&e, "journal_segments") >= 3, "the journal rolled");
    *observer.engine.lock().unwrap() = Some(e.clone());
    e.snapshot().unwrap();
    *observer.engine.lock().unwrap() = None;
    let (path, finished) = observer.seen.lock().unwrap().clone().expect("the snapshot removed a covered segment");
    storage::set_observer(None);
    assert!(finished, "a publish waited for the snapshot's removal of {}", path.display());
    assert!(!path.exists(), "the covered segment is gone once snapshot() returns");
    assert_eq!(count(&e, "journal_segments"), 1, "only the active segment is left");
    // Nothing was lost: the 100 and the one published during the removal,
    // also after a reopen.
    assert_eq!(count(&e, "ready"), 101);
    e.close().unwrap();
    drop(e);
    let e = Engine::open(&dir, opts).unwrap();
    let got = drain(&e, "t");
    assert_eq!(got.len(), 101);
    assert_eq!(got[100], b"during the removal");
    e.close().unwrap();
}

//! Snapshots from the engine's side: the state is copied under the lock
//! (payloads shared, not copied; the journal is *not* rolled: a snapshot
//! needs no new segment, only room for its own file), encoded, written and
//! fsynced outside it, then the MANIFEST is
//! rewritten (the newest snapshot's LSN, the segment the journal continues
//! in) and only then are the segments and snapshots it covers deleted,
//! after the lock is released (an unlink waits for the disk).

use super::{Inner, Shared};
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::snapshot;
use crate::storage;
use crate::types::Lsn;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A snapshot taken under the lock, to be encoded and written outside it.
struct Prepared {
    image: snapshot::Image,
    lsn: Lsn,
    manifest: Manifest,
    degraded_gen: u64,
    /// The snapshot the queue was opened from, if payloads still point
    /// into it: its pages are dropped again once the image is encoded.
    mapped: Option<crate::payload::MappedFile>,
}

impl Shared {
    /// Writes a snapshot (unless nothing changed since the last one) and
    /// returns the LSN it covers. One at a time (`snapshot_lock`). Then
    /// retries a failed write of `POLICIES`.
    pub(crate) fn snapshot(&self) -> Result<Lsn> {
        let done = self.snapshot_with(|| {});
        self.retry_policies();
        done
    }

    /// `snapshot`, calling `between` once the state is copied and the lock
    /// is released, before anything is written: where the engine goes on
    /// appending (and may roll the journal). A test hook.
    pub(crate) fn snapshot_with(&self, between: impl FnOnce()) -> Result<Lsn> {
        let _one = self.snapshot_lock.lock();
        let started = Instant::now();
        // Room for the image, made before the lock is taken to fill it (see
        // `snapshot::message_room`), with some to spare for messages
        // published meanwhile.
        let live = {
            let g = self.inner.lock();
            if self.unchanged(&g) { 0 } else { g.state.slab.live() }
        };
        let room = if live == 0 { Vec::new() } else { snapshot::message_room(live + live / 8 + 64) };
        let p = {
            let mut g = self.inner.lock();
            match self.prepare_snapshot(&mut g, room) {
                Some(p) => p,
                None => return Ok(g.snapshot_lsn),
            }
        };
        between();
        let name = snapshot::snapshot_name(p.lsn);
        let bytes = snapshot::encode(&p.image, p.lsn);
        drop(p.image);
        // Encoding read every payload, those still in the snapshot the
        // queue was opened from too: drop those pages from the process
        // again (they stay in the page cache).
        if let Some(file) = p.mapped {
            file.release_pages(0, usize::MAX);
        }
        storage::write_atomic(Some(&self.faults), &self.path, &name, &bytes)
            .map_err(|e| Error::storage("writing snapshot", self.path.join(&name), e))?;
        let size = bytes.len() as u64;
        drop(bytes);
        // The MANIFEST first: once it names this snapshot, the files it
        // covers may go.
        manifest::write(&self.path, &p.manifest)?;
        let mut g = self.inner.lock();
        g.snapshot_bytes = size;
        let covered = self.finish_snapshot(&mut g, p.lsn, p.manifest, p.degraded_gen);
        // The snapshot the queue was opened from is removed now: when few
        // of its payloads are left, copy them into the heap (outside the
        // lock: their pages may have to be read in) and let it go.
        let sparse = g.state.sparse_mapped();
        if std::mem::take(&mut g.disk_full) {
            // An append failed for want of space: delete under the lock, as
            // a call waiting for it then finds the space freed (outside it,
            // that call could come in between and fail again).
            self.remove_covered(p.lsn, covered, false);
            drop(g);
        } else {
            drop(g);
            // Not the final snapshot of `close`: spares are deleted then.
            let recycle = self.opts.recycle_segments && !self.closed.load(Ordering::Acquire);
            self.remove_covered(p.lsn, covered, recycle);
        }
        if let Some(mapped) = sparse {
            let copies = mapped.into_iter().map(|(id, was)| {
                let heap = was.to_heap();
                (id, was, heap)
            });
            let old = self.inner.lock().state.swap_in_heap(copies.collect());
            drop(old);
        }
        self.snapshot_duration.observe(started.elapsed());
        Ok(p.lsn)
    }

    /// Whether a snapshot now would write what the last one did (nothing
    /// changed, not degraded, and its file is known).
    fn unchanged(&self, g: &Inner) -> bool {
        g.journal.next_lsn() - 1 == g.snapshot_lsn && g.degraded.is_none() && g.report.snapshot_path.is_some()
    }

    fn prepare_snapshot(&self, g: &mut Inner, room: Vec<crate::types::Message>) -> Option<Prepared> {
        let lsn = g.journal.next_lsn() - 1;
        if self.unchanged(g) {
            g.snapshot_wanted = false;
            return None;
        }
        let image = snapshot::collect(&g.state, self.clock.now(), room);
        g.records_since_snapshot = 0;
        g.snapshot_wanted = false;
        let manifest = Manifest { journal_anchor: g.journal.active_seq(), snapshot_lsn: lsn, ..g.manifest };
        let mapped = g.state.mapped.as_ref().map(|m| m.file.clone());
        Some(Prepared { image, lsn, manifest, degraded_gen: g.degraded_gen, mapped })
    }

    /// Under the lock, once the MANIFEST names the snapshot at `lsn`:
    /// records it, and returns the journal segments it covers, for
    /// [`Shared::remove_covered`] to delete after the lock is released.
    fn finish_snapshot(&self, g: &mut Inner, lsn: Lsn, manifest: Manifest, degraded_gen: u64) -> Vec<PathBuf> {
        g.manifest = manifest;
        let covered = g.journal.take_covered(lsn, manifest.journal_anchor);
        g.snapshot_lsn = lsn.max(g.snapshot_lsn);
        g.snapshot_at = Instant::now();
        g.report.snapshot_path = Some(self.path.join(snapshot::snapshot_name(lsn)));
        g.counters.snapshots += 1;
        if g.degraded_gen == degraded_gen {
            g.degraded = None;
            self.degraded.store(false, Ordering::Release);
        }
        g.snapshot_error = None;
        self.sync.synced_externally(lsn, false);
        covered
    }

    /// Deletes what the snapshot at `lsn` covers, outside the lock (file
    /// deletions wait for the disk: see `journal::remove_covered`): the
    /// journal segments `finish_snapshot` gave up, and older snapshots.
    /// `snapshot_lock` is held, so no other snapshot is written meanwhile.
    /// With `recycle`, the preparer may keep some segments to make spares
    /// of (`journal::remove_covered`).
    fn remove_covered(&self, lsn: Lsn, segments: Vec<PathBuf>, recycle: bool) {
        crate::journal::remove_covered(&self.path, &self.spares, segments, recycle);
        if let Ok(files) = crate::recovery::list_files(&self.path) {
            for (l, p) in files.snapshots {
                if l < lsn {
                    let _ = storage::remove_file(&p);
                }
            }
        }
    }
}

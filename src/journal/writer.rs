//! The journal writer, owned by the engine and used under its lock.
//!
//! `append` frames a transaction into the active segment (a copy into its
//! mapping, or one `pwrite` for a large record: `WRITE_MIN`). When a
//! record does not fit (a seal's room is always kept free), `roll` writes a
//! seal naming the next segment, takes a prepared segment (or creates one),
//! writes its header, and hands the old segment to the flusher, which
//! fsyncs old segments before the active one: a record counts as durable
//! only once every segment up to it was synced.
//!
//! Segments are deleted once a snapshot covers every record in them and
//! the MANIFEST written after it names a later segment (it names the one
//! the journal was in when the snapshot took its state: a roll meanwhile
//! leaves that one to the next snapshot); the active segment is never
//! deleted (a snapshot does not roll the journal, so it needs no new
//! segment and no free space beyond its own file). With
//! `durability="os"` rolled-away segments are not fsynced; `close` syncs
//! the ones still on disk before `DURABLE` vouches for them. When
//! the disk is full and every record of the active segment is covered by a
//! snapshot, a roll rewinds the active segment in place instead.

use super::prepare::{self, Prepared, Spares};
use super::{
    FORMAT_RECYCLED, GAP_UNKNOWN, PAGE, RECORD_HEADER_LEN, RECORD_TXN, SEAL_LEN, SEGMENT_HEADER_LEN, WRITE_MIN,
    encode_seal_in, frame_in, page_round, segment_header_as, segment_name,
};
use crate::error::{Error, Result};
use crate::record::{Op, TopicNames, encode_txn_named};
use crate::storage::{self, FaultPoint, Faults};
use crate::sync::SyncPoint;
use crate::types::Lsn;
use memmap2::MmapMut;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Active {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    map: MmapMut,
    pos: usize,
    first_lsn: Lsn,
    /// The segment's format: 3 (recycled) means the bytes past `pos` may
    /// be stale records, so every append also writes the zeros that end
    /// the log after its record.
    version: u32,
    /// The mapping's pages below this offset are let go of (see `let_go`).
    let_go: usize,
}

/// A segment before the active one, still on disk.
#[derive(Debug, Clone)]
pub struct Closed {
    pub path: PathBuf,
    /// Format 2 only.
    pub seq: Option<u64>,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub len: u64,
    /// Rolled away from without an fsync (`durability="os"`): `close`
    /// syncs it if it is still there.
    pub unsynced: bool,
}

/// A segment recovery found in use, in journal order.
#[derive(Debug, Clone)]
pub struct UsedSegment {
    pub path: PathBuf,
    pub version: u32,
    /// Format 2 only.
    pub seq: Option<u64>,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    /// Just past the last valid record.
    pub end: u64,
    pub sealed: bool,
    /// The segment a seal names, where the journal goes on (when sealed).
    pub next_seq: Option<u64>,
    pub len: u64,
}

/// What recovery hands the writer.
#[derive(Debug, Default)]
pub struct Recovered {
    pub used: Vec<UsedSegment>,
    /// Prepared, unused format-2 segments (sequence, path).
    pub spares: Vec<(u64, PathBuf)>,
    /// Above every sequence number on disk.
    pub next_seq: u64,
    /// The segment the MANIFEST anchors (0: none). Found unused (a power
    /// cut lost its header), it is not deleted by the open that finds it:
    /// the MANIFEST still names it until the open writes a new one, and a
    /// kill in between would leave a queue that refuses to open.
    pub anchor: u64,
}

pub struct Journal {
    dir: PathBuf,
    faults: Arc<Faults>,
    segment_size: usize,
    /// `None` once released (the engine closed): no file or mapping is
    /// held then, so a deleted segment's space is freed at once.
    active_slot: Option<Active>,
    closed: Vec<Closed>,
    next_lsn: Lsn,
    /// Everything up to here is in a snapshot (the active segment may be
    /// rewound when the disk is full and all of it is covered).
    covered: Lsn,
    spares: Arc<Spares>,
    scratch: Vec<u8>,
    /// A record write failed and its bytes could not be zeroed again
    /// (errno): appends are refused until the queue is reopened, whose
    /// recovery reads the leftover as a torn tail and removes it.
    stuck: Option<i32>,
    /// Whether segments rolled away from are fsynced (not with
    /// `durability="os"`, where the OS decides: they are let go at once).
    sync_old: bool,
    /// Rolls since the open.
    rolls: u64,
}

impl Journal {
    /// Continues the journal recovery found: in its newest segment if that
    /// reaches the end of the log and is format 2 or 3 and unsealed, else in a
    /// fresh segment starting at `next_lsn`. The segment written last
    /// before is fsynced first, so every recovered record is on disk before
    /// a new record claims it is.
    /// `fill`: new segments are written with zeros before use (see
    /// `prepare`; the engine passes false for `durability="always"`).
    pub fn open(
        dir: &Path,
        faults: Arc<Faults>,
        segment_size: usize,
        fill: bool,
        next_lsn: Lsn,
        recovered: Recovered,
    ) -> Result<(Journal, Arc<Spares>)> {
        let mut ready = Vec::new();
        let anchor = recovered.anchor;
        // A seal in the segment read last names the one the journal goes on
        // in (found unused: a power cut lost its header). The journal must
        // go on there, or in a segment numbered above it: a spare numbered
        // below (made while the roll that wrote the seal created the named
        // one itself, and not yet deleted) would make the next open find
        // the sealed segment followed by a segment other than the one its
        // seal names.
        let named = recovered.used.last().and_then(|s| s.next_seq);
        for (seq, path) in recovered.spares {
            if named.is_some_and(|n| seq < n) {
                if seq != anchor {
                    let _ = storage::remove_file(&path);
                }
                continue;
            }
            // Keep one spare; more are left over from a larger segment size or
            // an interrupted close. A kill may have cut its preparation short
            // before its fsyncs (while another thread's directory fsync made
            // its name durable): its size, header and name are made durable
            // before the journal may roll into it, or a power cut could leave
            // a seal naming an empty file.
            if ready.is_empty()
                && let Ok((file, map)) = prepare::open(&path)
                && map.len() >= page_round(segment_size)
                && end_log_after_header(&file, &map).is_ok()
                && storage::sync_file(&faults, &file).is_ok()
                && storage::sync_dir(dir).is_ok()
            {
                // Format 2, or 3 if recycled (recovery read the header).
                let version = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
                ready.push(Prepared { seq, path, file, map, version });
            } else if seq != anchor {
                let _ = storage::remove_file(&path);
            }
        }
        let spares = Arc::new(Spares::new(recovered.next_seq.max(1), ready, fill));
        let mut used = recovered.used;
        if let Some(seq) = used.last().and_then(|s| s.seq) {
            spares.used(seq, dir);
        }
        // A process killed before its flusher ran left dirty pages in any
        // of them: everything recovery read must be on disk before a new
        // record (its durable gap, the DURABLE marker) says it is.
        for s in &used {
            let f = File::open(&s.path).map_err(|e| Error::storage("opening journal segment", &s.path, e))?;
            storage::sync_file(&faults, &f).map_err(|e| Error::storage("fsync of journal segment", &s.path, e))?;
        }
        let reuse = used.last().is_some_and(|s| {
            s.version >= 2 && !s.sealed && s.last_lsn + 1 == next_lsn && (s.end as usize) + SEAL_LEN < s.len as usize
        });
        let active = if reuse {
            let s = used.pop().expect("checked");
            let (file, map) =
                prepare::open(&s.path).map_err(|e| Error::storage("opening journal segment", &s.path, e))?;
            Active {
                seq: s.seq.expect("format 2"),
                path: s.path,
                file: Arc::new(file),
                map,
                pos: s.end as usize,
                first_lsn: s.first_lsn,
                version: s.version,
                let_go: 0,
            }
        } else {
            let p = match spares.take(0) {
                Some(p) => p,
                None => {
                    // Filled now if at all: opening is not the hot path.
                    prepare::create_spare(dir, &faults, segment_size, fill, &|| spares.alloc_seq(), &|| false)
                        .map_err(|e| Error::storage("creating journal segment", dir.join(prepare::FILL_NAME), e))?
                }
            };
            spares.used(p.seq, dir);
            let active = start(p, next_lsn);
            let header = segment_header_as(active.version, next_lsn, active.seq, active.map.len() as u64);
            active
                .file
                .write_all_at(&header, 0)
                .and_then(|()| storage::sync_file(&faults, &active.file))
                .map_err(|e| Error::storage("writing segment header", &active.path, e))?;
            active
        };
        let closed = used
            .into_iter()
            .map(|s| Closed {
                path: s.path,
                seq: s.seq,
                first_lsn: s.first_lsn,
                last_lsn: s.last_lsn,
                len: s.len,
                unsynced: false,
            })
            .collect();
        let journal = Journal {
            dir: dir.to_owned(),
            faults,
            segment_size,
            active_slot: Some(active),
            closed,
            next_lsn,
            covered: 0,
            spares: spares.clone(),
            scratch: Vec::with_capacity(4096),
            stuck: None,
            sync_old: true,
            rolls: 0,
        };
        Ok((journal, spares))
    }

    fn active(&self) -> &Active {
        self.active_slot.as_ref().expect("the journal is in use")
    }

    fn active_mut(&mut self) -> &mut Active {
        self.active_slot.as_mut().expect("the journal is in use")
    }

    /// Lets go of the active segment's file and mapping (at close; the
    /// journal is not written to again).
    pub fn release(&mut self) {
        self.active_slot = None;
    }

    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// With `false`, segments rolled away from are not fsynced (`durability="os"`).
    pub fn set_sync_old(&mut self, sync_old: bool) {
        self.sync_old = sync_old;
    }

    pub fn active_file(&self) -> Arc<File> {
        self.active().file.clone()
    }

    /// The active segment's sequence number (what the MANIFEST anchors).
    pub fn active_seq(&self) -> u64 {
        self.active_slot.as_ref().map_or(0, |a| a.seq)
    }

    /// Writes one transaction record. On error the record is not in the
    /// log and its LSN was not used, so the caller's state must not change
    /// either (a roll may have happened first: the next record goes to the
    /// new segment with the same LSN).
    pub fn append(&mut self, ops: &[Op], sync: &SyncPoint<Arc<File>>) -> Result<Lsn> {
        self.append_named(ops, &|_| None, sync)
    }

    /// [`append`](Self::append) of operations that may name interned
    /// topics by index (`TopicRef::Id`), whose names `names` gives.
    pub fn append_named(&mut self, ops: &[Op], names: TopicNames<'_>, sync: &SyncPoint<Arc<File>>) -> Result<Lsn> {
        if let Some(errno) = self.stuck {
            let path = self.active().path.clone();
            return Err(Error::storage(
                "writing journal record (an earlier write failed and could not be undone: reopen the queue)",
                path,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        if self.next_lsn == Lsn::MAX {
            // Readers refuse a record with LSN u64::MAX (nothing could follow
            // it). Only a journal recovered from forged LSNs gets here.
            return Err(Error::Invalid(format!(
                "this journal has used every LSN up to {}; move its messages to a new queue directory",
                Lsn::MAX - 1
            )));
        }
        self.scratch.clear();
        self.scratch.resize(RECORD_HEADER_LEN, 0);
        encode_txn_named(ops, names, &mut self.scratch);
        let need = self.scratch.len();
        if need - RECORD_HEADER_LEN > (u32::MAX as usize) - SEGMENT_HEADER_LEN - SEAL_LEN {
            return Err(Error::Limit { what: "journal record (batch)", size: need, limit: u32::MAX as usize });
        }
        if self.active().pos + need + SEAL_LEN > self.active().map.len() {
            self.roll(need, sync)?;
        }
        let lsn = self.next_lsn;
        let gap = lsn.saturating_sub(sync.journal_durable()).min(GAP_UNKNOWN as u64) as u32;
        // A recycled segment's records are bound to it (`frame_in`).
        let seed = self.active_slot.as_ref().and_then(|a| (a.version == FORMAT_RECYCLED).then_some(a.seq));
        frame_in(&mut self.scratch, lsn, RECORD_TXN, gap, seed);
        let a = self.active_slot.as_mut().expect("the journal is in use");
        let pos = a.pos;
        // A recycled segment holds stale bytes past the end: the 20 after
        // the record are written as zeros with it (they end the log; the
        // room kept for the seal covers them). Into the mapping, before
        // the record, so a kill in between leaves the log ending as it did.
        let trailer = if a.version == FORMAT_RECYCLED { RECORD_HEADER_LEN } else { 0 };
        if need >= WRITE_MIN {
            self.scratch.resize(need + trailer, 0);
            if let Err(e) = write_record(&self.faults, &a.file, &self.scratch, pos as u64) {
                // Past `pos` the segment must hold zeros (they end the
                // log): put them back over whatever part of the record
                // reached the file, with `pwrite` too (a store into the
                // mapping could fault with SIGBUS where the write failed).
                // If that fails as well, no more appends: the leftover is
                // a torn tail, which the next open's recovery removes.
                let zeros = vec![0u8; need + trailer];
                if self
                    .faults
                    .check(FaultPoint::JournalWrite)
                    .and_then(|()| a.file.write_all_at(&zeros, pos as u64))
                    .is_err()
                {
                    self.stuck = Some(e.raw_os_error().unwrap_or(libc::EIO));
                }
                return Err(Error::storage("writing journal record", &a.path, e));
            }
        } else {
            a.map[pos + need..pos + need + trailer].fill(0);
            a.map[pos..pos + need].copy_from_slice(&self.scratch);
        }
        a.pos += need;
        let_go(a);
        self.next_lsn += 1;
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::with_capacity(4096);
        }
        Ok(lsn)
    }

    /// Seals the active segment and continues in a prepared one big enough
    /// for a record of `need` bytes. On error nothing changed.
    fn roll(&mut self, need: usize, sync: &SyncPoint<Arc<File>>) -> Result<()> {
        let min_size = page_round(SEGMENT_HEADER_LEN + need + SEAL_LEN);
        let new = match self.spares.take(min_size) {
            Some(p) => p,
            None => {
                let size = self.segment_size.max(min_size);
                let seq = self.spares.alloc_seq();
                match prepare::create(&self.dir, &self.faults, seq, size) {
                    Ok(p) => p,
                    // The space may be held by the spare being prepared.
                    Err(e)
                        if e.raw_os_error() == Some(libc::ENOSPC)
                            && let Some(p) = self.spares.take_after_preparation(min_size) =>
                    {
                        p
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && self.can_rewind(min_size) => {
                        return self.rewind(sync);
                    }
                    Err(e) => {
                        return Err(Error::storage("creating journal segment", self.dir.join(segment_name(seq)), e));
                    }
                }
            }
        };
        // The new header first, with one `pwrite` (no disk wait): a kill
        // cannot cut it short as it could a copy into the mapping, whose
        // half-written header a recycled file's old records would make
        // read as damage. Then the seal, through the old mapping.
        let header = segment_header_as(new.version, self.next_lsn, new.seq, new.map.len() as u64);
        if let Err(e) = new.file.write_all_at(&header, 0) {
            let path = new.path.clone();
            drop(new);
            let _ = storage::remove_file(&path);
            return Err(Error::storage("writing segment header", path, e));
        }
        self.spares.used(new.seq, &self.dir);
        let next_lsn = self.next_lsn;
        let a = self.active_mut();
        let seal = encode_seal_in(next_lsn, new.seq, (a.version == FORMAT_RECYCLED).then_some(a.seq));
        let pos = a.pos;
        a.map[pos..pos + SEAL_LEN].copy_from_slice(&seal);
        let next = start(new, self.next_lsn);
        let old = self.active_slot.replace(next).expect("the journal is in use");
        self.closed.push(Closed {
            path: old.path,
            seq: Some(old.seq),
            first_lsn: old.first_lsn,
            last_lsn: self.next_lsn - 1,
            len: old.map.len() as u64,
            unsynced: !self.sync_old,
        });
        if self.sync_old {
            sync.roll(self.active_file(), old.file);
        } else {
            sync.switch(self.active_file());
        }
        self.spares.retire(old.map);
        self.spares.kick();
        self.rolls += 1;
        Ok(())
    }

    /// Whether the active segment holds nothing a snapshot does not cover
    /// and is big enough for the record.
    fn can_rewind(&self, min_size: usize) -> bool {
        self.next_lsn - 1 <= self.covered && self.active().map.len() >= min_size
    }

    /// Starts the active segment over at the next LSN (the disk is full and
    /// all its records are in a snapshot), the way a covered segment is
    /// recycled: one write of its first 68 bytes (a format-3 header whose
    /// first LSN is the next one, then the 20 zeros that end the log) and
    /// an fsync. The old records stay, as stale ones (below the first LSN;
    /// recovery never reads them as the log's), and the appends that follow
    /// keep 20 zeros after each record. A power cut leaves the old header
    /// or the new one (one sector). Zeroing the old records first, as this
    /// did, could not be made safe: a cut before that fsync kept some
    /// zeroed pages and some old, fsynced records after them, which
    /// recovery took for corruption (`tests/crash_consistency.rs`, (i)).
    /// If the write or its fsync fails, the journal takes no more appends
    /// until the queue is reopened.
    fn rewind(&mut self, sync: &SyncPoint<Arc<File>>) -> Result<()> {
        let faults = self.faults.clone();
        let next_lsn = self.next_lsn;
        let a = self.active_mut();
        let path = a.path.clone();
        let mut head = [0u8; SEGMENT_HEADER_LEN + RECORD_HEADER_LEN];
        head[..SEGMENT_HEADER_LEN].copy_from_slice(&segment_header_as(
            FORMAT_RECYCLED,
            next_lsn,
            a.seq,
            a.map.len() as u64,
        ));
        if let Err(e) = a.file.write_all_at(&head, 0).and_then(|()| storage::sync_file(&faults, &a.file)) {
            // The new header may be in the file: a record appended after the
            // old ones (a smaller one fits) would not be read back. No more
            // appends; the next open reads whichever header the file has.
            self.stuck = Some(e.raw_os_error().unwrap_or(libc::EIO));
            return Err(Error::storage("rewinding journal segment", &path, e));
        }
        a.pos = SEGMENT_HEADER_LEN;
        a.let_go = 0;
        a.first_lsn = next_lsn;
        a.version = FORMAT_RECYCLED;
        sync.synced_externally(next_lsn - 1, true);
        Ok(())
    }

    /// Everything up to `lsn` is in a durable snapshot, and the MANIFEST
    /// naming it says the journal continues in segment `anchor`: the
    /// segments wholly at or before `lsn` are no longer the journal's,
    /// except the anchor and any after it (the journal may have rolled
    /// since the snapshot took its state, closing the anchor with its last
    /// record at `lsn`; a crash must find the segment the MANIFEST names).
    /// Returns their paths, for [`remove_covered`] to delete once the
    /// engine's lock is released.
    pub fn take_covered(&mut self, lsn: Lsn, anchor: u64) -> Vec<PathBuf> {
        self.covered = self.covered.max(lsn);
        let mut gone = Vec::new();
        self.closed.retain(|c| {
            let anchored = anchor != 0 && c.seq.is_some_and(|s| s >= anchor);
            if c.last_lsn <= lsn && !anchored {
                gone.push(c.path.clone());
                false
            } else {
                true
            }
        });
        gone
    }

    /// The segments rolled away from without an fsync (`durability="os"`)
    /// that are still on disk, oldest first: `close` syncs them before
    /// `DURABLE` may say their records are on disk.
    pub fn unsynced_closed(&self) -> Vec<PathBuf> {
        self.closed.iter().filter(|c| c.unsynced).map(|c| c.path.clone()).collect()
    }

    /// Bytes of journal on disk (preallocated sizes, spares included) and
    /// the number of segments holding records.
    pub fn disk_usage(&self) -> (u64, usize) {
        let closed: u64 = self.closed.iter().map(|c| c.len).sum();
        let (spare, _) = self.spares.bytes();
        let active = self.active_slot.as_ref().map_or(0, |a| a.map.len() as u64);
        (closed + active + spare, self.closed.len() + 1)
    }

    /// How many times the journal rolled since it was opened.
    pub fn rolls(&self) -> u64 {
        self.rolls
    }

    /// Bytes of the segments before the active one still on disk: what no
    /// snapshot covers yet (and the anchor a snapshot may have kept).
    pub fn closed_bytes(&self) -> u64 {
        self.closed.iter().map(|c| c.len).sum()
    }

    /// Bytes of records in the active segment.
    pub fn active_used(&self) -> usize {
        self.active_slot.as_ref().map_or(0, |a| a.pos)
    }
}

/// Deletes the segments [`Journal::take_covered`] gave up, outside the
/// engine's lock: unlinking a segment frees its blocks, which on a
/// filesystem mounted with `discard` (as here) waits for the device, and
/// the directory is fsynced after; together about 50 ms per snapshot
/// measured here, which every publish waited for while this ran under the
/// lock. A crash in between leaves covered segments: recovery does not
/// read them, and the next snapshot deletes them. The preparer is kicked
/// after (a full disk may have room for a spare now).
///
/// With `recycle`, up to [`prepare::RECYCLE_KEEP`] of them are handed to
/// the preparer ([`Spares::offer`]) to become spares instead of being
/// deleted (not after a full disk: then the space is what the caller
/// needs back at once).
pub fn remove_covered(dir: &Path, spares: &Spares, paths: Vec<PathBuf>, recycle: bool) {
    if paths.is_empty() {
        return;
    }
    let mut removed = false;
    // The newest first: it is the likeliest to be in the page cache still.
    for path in paths.iter().rev() {
        if !(recycle && spares.offer(path)) {
            let _ = storage::remove_file(path);
            removed = true;
        }
    }
    if removed {
        let _ = storage::sync_dir(dir);
    }
    spares.kick();
}

/// `pwrite` of a whole record at `offset` (see `WRITE_MIN`). An injected
/// fault (`FaultPoint::JournalWrite`) strikes after half of the record was
/// written, as a short write that then failed would.
fn write_record(faults: &Faults, file: &File, record: &[u8], offset: u64) -> std::io::Result<()> {
    if let Err(e) = faults.check(FaultPoint::JournalWrite) {
        file.write_all_at(&record[..record.len() / 2], offset)?;
        return Err(e);
    }
    file.write_all_at(record, offset)
}

/// A recycled spare recovery kept may hold records a roll wrote into it
/// before a crash took its header (all covered by the snapshot, so kept):
/// the 20 bytes after the header are made zeros again, so that its log
/// ends there until its first record (synced with the spare after).
fn end_log_after_header(file: &File, map: &MmapMut) -> std::io::Result<()> {
    let first = SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + RECORD_HEADER_LEN;
    if map[first.clone()].iter().all(|b| *b == 0) {
        return Ok(());
    }
    file.write_all_at(&[0u8; RECORD_HEADER_LEN], first.start as u64)
}

fn start(p: Prepared, first_lsn: Lsn) -> Active {
    let version = p.version;
    Active {
        seq: p.seq,
        path: p.path,
        file: Arc::new(p.file),
        map: p.map,
        pos: SEGMENT_HEADER_LEN,
        first_lsn,
        version,
        let_go: 0,
    }
}

/// How many bytes of written pages the writer lets go of at a time.
const LET_GO: usize = 256 * 1024;

/// Lets go of the mapping's pages the writer has moved past, `LET_GO`
/// bytes at a time (`MADV_DONTNEED`: the page table entries go; the pages
/// stay in the page cache, dirty until written back). A page still mapped
/// writable when the flusher's fsync writes it back is write-protected
/// again (`page_mkclean`), one TLB shootdown per page for every CPU the
/// process runs on: in a VM an interrupt each, thousands per fsync of a
/// busy journal. Let go of first, the fsync finds them unmapped; one
/// shootdown per `LET_GO` bytes instead.
fn let_go(a: &mut Active) {
    let done = a.pos / PAGE * PAGE;
    if done >= a.let_go + LET_GO {
        // SAFETY: a shared file mapping: `MADV_DONTNEED` drops only the
        // page table entries (dirty pages keep their data in the page
        // cache, and a later access maps them in again); nothing else
        // holds a reference into this range.
        let r = unsafe { a.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a.let_go, done - a.let_go) };
        // Only a cost if it fails (the pages stay mapped): never an error.
        debug_assert!(r.is_ok(), "madvise(MADV_DONTNEED) of the journal's mapping: {r:?}");
        a.let_go = done;
    }
}

/// Overwrites a torn tail (and whatever was dropped with it) with zeros and
/// fsyncs, so the segment reads cleanly from now on.
pub fn zero_torn_tail(faults: &Faults, torn: &super::TornTail) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .map_err(|e| Error::storage("opening torn segment", &torn.path, e))?;
    prepare::zero_range(faults, &file, torn.offset, torn.offset + torn.bytes)
        .map_err(|e| Error::storage("zeroing torn tail", &torn.path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_refuses_lsn_u64_max_which_readers_refuse() {
        // A journal recovered up to LSN u64::MAX - 1 (only forged files
        // get there): the next record would carry an LSN no reader accepts,
        // and `next_lsn + 1` would overflow. Refused, nothing written.
        let dir = tempfile::tempdir().unwrap();
        let recovered = Recovered { next_seq: 1, ..Default::default() };
        let (mut j, _spares) =
            Journal::open(dir.path(), Arc::new(Faults::default()), 1 << 16, true, Lsn::MAX - 1, recovered).unwrap();
        let sync = SyncPoint::new(Lsn::MAX - 2, Some(j.active_file()));
        assert_eq!(j.append(&[Op::Drop { id: 1 << 24 }], &sync).unwrap(), Lsn::MAX - 1);
        let pos = j.active().pos;
        let err = j.append(&[Op::Drop { id: 1 << 24 }], &sync).unwrap_err();
        assert!(matches!(&err, Error::Invalid(m) if m.contains("used every LSN")), "{err}");
        assert_eq!((j.next_lsn(), j.active().pos), (Lsn::MAX, pos), "a refused append changed the journal");
    }

    /// `n` ops: a record of about `9 * n` bytes.
    fn drops(n: u64) -> Vec<Op> {
        (0..n).map(|i| Op::Drop { id: (1 << 24) + i }).collect()
    }

    fn scan_active(j: &Journal) -> (Vec<(Lsn, usize)>, super::super::SegmentScan) {
        let path = j.active().path.clone();
        let data = super::super::map_for_read(&path).unwrap().unwrap();
        let header = super::super::read_segment_header(&path, &data).unwrap().unwrap();
        let mut records = Vec::new();
        let scan = super::super::scan_segment(&path, &data, &header, 0, |lsn, _, body| {
            records.push((lsn, body.len()));
            Ok(())
        })
        .unwrap();
        (records, scan)
    }

    /// A new journal in a temporary directory, with its fault injector and
    /// a sync point (the directory and the spares live as long as it).
    struct Fixture {
        _dir: tempfile::TempDir,
        faults: Arc<Faults>,
        j: Journal,
        sync: SyncPoint<Arc<File>>,
        _spares: Arc<Spares>,
    }

    fn fresh_journal() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let recovered = Recovered { next_seq: 1, ..Default::default() };
        let (j, spares) = Journal::open(dir.path(), faults.clone(), 1 << 20, false, 1, recovered).unwrap();
        let sync = SyncPoint::new(0, Some(j.active_file()));
        Fixture { _dir: dir, faults, j, sync, _spares: spares }
    }

    #[test]
    fn small_records_go_through_the_mapping_and_large_ones_through_pwrite_in_one_log() {
        // Every field bound: `..` would drop the directory at once.
        let Fixture { _dir, faults: _, mut j, sync, _spares } = fresh_journal();
        let sizes = [1, 400, 2, 1000, 1, 1, 300];
        for n in sizes {
            j.append(&drops(n), &sync).unwrap();
        }
        let (records, scan) = scan_active(&j);
        assert_eq!(records.len(), sizes.len());
        assert!(records.iter().any(|r| r.1 + RECORD_HEADER_LEN >= WRITE_MIN), "no record took pwrite");
        assert!(records.iter().any(|r| r.1 + RECORD_HEADER_LEN < WRITE_MIN), "no record took the mapping");
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=sizes.len() as Lsn).collect::<Vec<_>>());
        assert!(scan.torn.is_none());
        assert_eq!(scan.end as usize, j.active().pos);
    }

    #[test]
    fn pages_the_writer_moved_past_are_let_go_and_their_records_stay() {
        let Fixture { _dir, faults: _, mut j, sync, _spares } = fresh_journal();
        // Records through the mapping (under `WRITE_MIN`), about 900 bytes
        // each, until more than two chunks are behind the writer.
        let mut n = 0;
        while j.active().pos < 2 * LET_GO + PAGE {
            j.append(&drops(100), &sync).unwrap();
            n += 1;
        }
        let a = j.active();
        assert!(a.let_go >= 2 * LET_GO && a.let_go % PAGE == 0 && a.let_go <= a.pos, "let go up to {}", a.let_go);
        // What was let go is in the file (read through another mapping),
        // and the writer goes on where it was.
        j.append(&drops(1), &sync).unwrap();
        let (records, scan) = scan_active(&j);
        assert_eq!(records.len(), n + 1);
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=(n + 1) as Lsn).collect::<Vec<_>>());
        assert!(scan.torn.is_none());
        assert_eq!(scan.end as usize, j.active().pos);
    }

    #[test]
    fn a_failed_pwrite_leaves_zeros_past_the_end_and_the_next_append_reuses_its_lsn() {
        let Fixture { _dir, faults, mut j, sync, _spares } = fresh_journal();
        j.append(&drops(1), &sync).unwrap();
        let pos = j.active().pos;
        faults.set(FaultPoint::JournalWrite, libc::EIO, 1);
        let err = j.append(&drops(500), &sync).unwrap_err();
        assert!(matches!(&err, Error::Storage { source, .. } if source.raw_os_error() == Some(libc::EIO)), "{err}");
        assert_eq!((j.next_lsn(), j.active().pos), (2, pos), "a failed append changed the journal");
        let path = j.active().path.clone();
        let data = std::fs::read(&path).unwrap();
        assert!(data[pos..].iter().all(|b| *b == 0), "the half-written record was left past the end of the log");
        // A small record (through the mapping) where the failed one began.
        assert_eq!(j.append(&drops(100), &sync).unwrap(), 2);
        let (records, scan) = scan_active(&j);
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
        assert!(records[1].1 + RECORD_HEADER_LEN < WRITE_MIN, "the second record did not take the mapping");
        assert!(scan.torn.is_none(), "{:?}", scan.torn);
        assert_eq!(scan.end as usize, j.active().pos);
    }

    /// A journal whose active segment is a recycled one (format 3): the
    /// records of the file's earlier use are still in it past the end of
    /// its log.
    fn recycled_journal() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let size = 1 << 16;
        let recovered = Recovered { next_seq: 1, ..Default::default() };
        let (mut old, spares) = Journal::open(dir.path(), faults.clone(), size, false, 1, recovered).unwrap();
        let sync = SyncPoint::new(0, Some(old.active_file()));
        for _ in 0..20 {
            old.append(&drops(300), &sync).unwrap();
        }
        let from = old.active().path.clone();
        drop((old, spares, sync));
        let p = prepare::recycle_spare(dir.path(), &faults, &from, size, &|| 2).unwrap();
        let recovered = Recovered { next_seq: 3, spares: vec![(2, p.path.clone())], ..Default::default() };
        drop(p);
        let (j, spares) = Journal::open(dir.path(), faults.clone(), size, false, 1000, recovered).unwrap();
        assert_eq!((j.active().version, j.active().seq), (FORMAT_RECYCLED, 2));
        let sync = SyncPoint::new(999, Some(j.active_file()));
        Fixture { _dir: dir, faults, j, sync, _spares: spares }
    }

    /// The segment read last is sealed, naming segment 7, which a power cut
    /// left unused; spare 6, made meanwhile, is there too. The journal goes
    /// on in 7 (in 6, the next open would find 5 followed by 6 while its
    /// seal names 7, and refuse the queue), and 6 is deleted.
    #[test]
    fn the_journal_goes_on_in_the_segment_the_last_seal_names_not_a_spare_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let spare = |seq: u64| {
            let p = prepare::create_spare(dir.path(), &faults, 1 << 16, false, &|| seq, &|| false).unwrap();
            p.path.clone()
        };
        let (six, seven) = (spare(6), spare(7));
        let sealed = dir.path().join(segment_name(5));
        std::fs::write(&sealed, b"a used segment").unwrap();
        let used = vec![UsedSegment {
            path: sealed,
            version: 2,
            seq: Some(5),
            first_lsn: 1,
            last_lsn: 99,
            end: 14,
            sealed: true,
            next_seq: Some(7),
            len: 14,
        }];
        let recovered =
            Recovered { used, spares: vec![(6, six.clone()), (7, seven.clone())], next_seq: 8, ..Default::default() };
        let (j, _spares) = Journal::open(dir.path(), faults.clone(), 1 << 16, false, 100, recovered).unwrap();
        assert_eq!(j.active().seq, 7, "the journal goes on in the segment the seal names");
        assert!(!six.exists(), "the spare below it is deleted");
        assert!(seven.exists());
    }

    /// An open with a larger segment size deletes spares too small for it,
    /// but not the one the MANIFEST anchors (found unused: a power cut took
    /// its header): the MANIFEST names it until the open writes a new one.
    #[test]
    fn a_spare_too_small_is_deleted_unless_the_manifest_anchors_it() {
        for anchor in [0, 2] {
            let dir = tempfile::tempdir().unwrap();
            let faults = Arc::new(Faults::default());
            let small = prepare::create_spare(dir.path(), &faults, 1 << 16, false, &|| 2, &|| false).unwrap();
            let path = small.path.clone();
            drop(small);
            let recovered = Recovered { next_seq: 3, spares: vec![(2, path.clone())], anchor, ..Default::default() };
            let (j, _spares) = Journal::open(dir.path(), faults, 1 << 20, false, 1, recovered).unwrap();
            assert_eq!(j.active().seq, 3, "anchor {anchor}: the small spare is not used");
            assert_eq!(path.exists(), anchor == 2, "anchor {anchor}");
        }
    }

    #[test]
    fn appends_into_a_recycled_segment_keep_zeros_after_the_last_record() {
        let Fixture { _dir, faults: _, mut j, sync, _spares } = recycled_journal();
        for (i, n) in [300, 1, 300, 2].into_iter().enumerate() {
            assert_eq!(j.append(&drops(n), &sync).unwrap(), 1000 + i as Lsn);
            let pos = j.active().pos;
            assert!(j.active().map[pos..pos + RECORD_HEADER_LEN].iter().all(|b| *b == 0));
            let (records, scan) = scan_active(&j);
            assert_eq!(records.len(), i + 1);
            assert!(scan.torn.is_none(), "{:?}", scan.torn);
            assert_eq!(scan.end as usize, pos);
        }
    }

    #[test]
    fn a_failed_pwrite_that_cannot_be_undone_stops_appends_and_reads_as_a_torn_tail() {
        let Fixture { _dir, faults, mut j, sync, _spares } = fresh_journal();
        // The record's write and the zeros after it both fail; small
        // records never reach the fault point (they take the mapping).
        faults.set(FaultPoint::JournalWrite, libc::ENOSPC, 2);
        assert_eq!(j.append(&drops(1), &sync).unwrap(), 1);
        let pos = j.active().pos;
        assert!(j.append(&drops(500), &sync).is_err());
        for ops in [drops(1), drops(500)] {
            let err = j.append(&ops, &sync).unwrap_err();
            assert!(err.to_string().contains("reopen the queue"), "{err}");
        }
        assert_eq!((j.next_lsn(), j.active().pos), (2, pos));
        let (records, scan) = scan_active(&j);
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [1]);
        assert_eq!(scan.torn.as_ref().map(|t| t.offset), Some(pos as u64), "the half record is a torn tail");
    }
}

//! The write-ahead journal: a sequence of segment files, each preallocated
//! and written through a shared memory mapping. A record is in the OS page
//! cache the moment `append` returns — no syscall on the hot path — so a
//! process killed with SIGKILL loses nothing that was appended; fsync (by the
//! flusher, see `sync`) is what protects against power loss.
//!
//! Layout (`docs/format.md` has every byte):
//! - segment header, 32 bytes: magic `RINGQWAL`, format version (u32),
//!   header length (u32), first LSN (u64), reserved (u32), CRC32C of the
//!   preceding 28 bytes (u32);
//! - records, back to back: length of body (u32), CRC32C (u32) of
//!   everything in the record but itself, LSN (u64), kind (u8), 3 zero
//!   bytes, body (`record` module);
//! - then zeros (the preallocated rest): an all-zero header ends the log.
//!
//! Reading tells a torn tail (a bad record with nothing valid after it: a
//! write cut short) from corruption (a bad record followed by valid ones),
//! which is an error naming the file and offset — never a silent loss.

use crate::error::{Error, Result};
use crate::record::{Op, encode_txn};
use crate::storage::{self, Faults};
use crate::sync::SyncPoint;
use crate::types::Lsn;
use memmap2::{Mmap, MmapMut};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SEGMENT_MAGIC: &[u8; 8] = b"RINGQWAL";
pub const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 20;
pub const RECORD_TXN: u8 = 1;

pub fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.wal")
}

pub fn segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Frames `body` as a record in place: `buf` holds RECORD_HEADER_LEN
/// reserved bytes followed by the body.
fn frame(buf: &mut [u8], lsn: Lsn) {
    let len = (buf.len() - RECORD_HEADER_LEN) as u32;
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[8..16].copy_from_slice(&lsn.to_le_bytes());
    buf[16] = RECORD_TXN;
    buf[17..20].fill(0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), &buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A complete record (header + body) ready to append, for tests and tools.
pub fn encode_record(lsn: Lsn, ops: &[Op]) -> Vec<u8> {
    let mut buf = vec![0u8; RECORD_HEADER_LEN];
    encode_txn(ops, &mut buf);
    frame(&mut buf, lsn);
    buf
}

struct Active {
    path: PathBuf,
    file: Arc<File>,
    map: MmapMut,
    pos: usize,
}

/// A segment before the active one, still on disk.
struct Closed {
    first_lsn: Lsn,
    path: PathBuf,
    len: u64,
}

/// The journal writer. Owned by the engine and used under its lock.
pub struct Journal {
    dir: PathBuf,
    faults: Arc<Faults>,
    segment_size: usize,
    active: Active,
    active_first_lsn: Lsn,
    closed: Vec<Closed>,
    next_lsn: Lsn,
    scratch: Vec<u8>,
}

fn map_segment(file: &File) -> std::io::Result<MmapMut> {
    // SAFETY: the file is ours (the directory lock keeps other writers out)
    // and is never truncated while mapped.
    unsafe { MmapMut::map_mut(file) }
}

impl Journal {
    /// Starts a new active segment at `next_lsn`. `existing` are segments
    /// already on disk (first LSN, path), oldest first.
    pub fn create(
        dir: &Path,
        faults: Arc<Faults>,
        segment_size: usize,
        next_lsn: Lsn,
        existing: Vec<(Lsn, PathBuf)>,
    ) -> Result<Journal> {
        let active = Self::new_segment(dir, &faults, segment_size, next_lsn)?;
        storage::sync_dir(dir).map_err(|e| Error::storage("fsync of the queue directory", dir, e))?;
        let closed = existing
            .into_iter()
            .map(|(first_lsn, path)| {
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Closed { first_lsn, path, len }
            })
            .collect();
        Ok(Journal {
            dir: dir.to_owned(),
            faults,
            segment_size,
            active,
            active_first_lsn: next_lsn,
            closed,
            next_lsn,
            scratch: Vec::with_capacity(4096),
        })
    }

    fn new_segment(dir: &Path, faults: &Faults, size: usize, first_lsn: Lsn) -> Result<Active> {
        let path = dir.join(segment_name(first_lsn));
        let file = storage::create_segment(faults, &path, size, &segment_header(first_lsn))
            .map_err(|e| Error::storage("creating journal segment", &path, e))?;
        let map = map_segment(&file).map_err(|e| Error::storage("mapping journal segment", &path, e))?;
        Ok(Active { path, file: Arc::new(file), map, pos: SEGMENT_HEADER_LEN })
    }

    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    pub fn active_file(&self) -> Arc<File> {
        self.active.file.clone()
    }

    /// Writes one transaction record. On error nothing was written and the
    /// LSN was not used, so the caller's state must not change either.
    pub fn append(&mut self, ops: &[Op], sync: &SyncPoint<Arc<File>>) -> Result<Lsn> {
        self.scratch.clear();
        self.scratch.resize(RECORD_HEADER_LEN, 0);
        encode_txn(ops, &mut self.scratch);
        let need = self.scratch.len();
        if need - RECORD_HEADER_LEN > u32::MAX as usize {
            return Err(Error::Limit { what: "journal record (batch)", size: need, limit: u32::MAX as usize });
        }
        if self.active.pos + need > self.active.map.len() {
            self.roll(need + SEGMENT_HEADER_LEN, sync)?;
        }
        let lsn = self.next_lsn;
        frame(&mut self.scratch, lsn);
        let pos = self.active.pos;
        self.active.map[pos..pos + need].copy_from_slice(&self.scratch);
        self.active.pos += need;
        self.next_lsn += 1;
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::with_capacity(4096);
        }
        Ok(lsn)
    }

    /// Closes the active segment (fsyncing it, so segments reach the disk in
    /// order) and starts a new one at the next LSN, at least `min_size` big.
    /// On error the active segment stays as it was.
    pub fn roll(&mut self, min_size: usize, sync: &SyncPoint<Arc<File>>) -> Result<()> {
        let size = self.segment_size.max(min_size);
        let new = Self::new_segment(&self.dir, &self.faults, size, self.next_lsn)?;
        let synced = storage::sync_file(&self.faults, &self.active.file);
        if let Err(e) = synced {
            let _ = fs::remove_file(&new.path);
            return Err(Error::storage("fsync of journal segment", &self.active.path, e));
        }
        let _ = storage::sync_dir(&self.dir);
        let old = std::mem::replace(&mut self.active, new);
        let len = old.map.len() as u64;
        self.closed.push(Closed { first_lsn: self.active_first_lsn, path: old.path, len });
        self.active_first_lsn = self.next_lsn;
        sync.synced_externally(self.next_lsn - 1, Some(self.active.file.clone()));
        Ok(())
    }

    /// Deletes segments whose records all have LSN <= `lsn` (covered by a
    /// durable snapshot).
    pub fn delete_through(&mut self, lsn: Lsn) {
        let mut keep = Vec::new();
        let firsts: Vec<Lsn> = self.closed.iter().map(|c| c.first_lsn).chain([self.active_first_lsn]).collect();
        for (i, c) in std::mem::take(&mut self.closed).into_iter().enumerate() {
            let last = firsts[i + 1] - 1;
            if last <= lsn {
                let _ = fs::remove_file(&c.path);
            } else {
                keep.push(c);
            }
        }
        self.closed = keep;
        let _ = storage::sync_dir(&self.dir);
    }

    /// Deletes the active segment if it holds no record (at close, after a
    /// snapshot covered everything). The journal must not be appended to after.
    pub fn discard_if_empty(&mut self) {
        if self.active.pos == SEGMENT_HEADER_LEN {
            let _ = fs::remove_file(&self.active.path);
            let _ = storage::sync_dir(&self.dir);
        }
    }

    /// Bytes of journal on disk (preallocated size) and number of segments.
    pub fn disk_usage(&self) -> (u64, usize) {
        let closed: u64 = self.closed.iter().map(|c| c.len).sum();
        (closed + self.active.map.len() as u64, self.closed.len() + 1)
    }

    /// Bytes of records in the active segment.
    pub fn active_used(&self) -> usize {
        self.active.pos
    }
}

/// A bad record at the end of a segment with nothing valid after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

/// What scanning one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    pub first_lsn: Lsn,
    /// LSN of the last valid record (first_lsn - 1 if none).
    pub last_lsn: Lsn,
    /// Offset just past the last valid record.
    pub end: u64,
    pub records: u64,
    pub torn: Option<TornTail>,
}

/// Validates a segment header; `Ok(None)` means the header itself is torn
/// (short or zero) — possible only for the newest segment.
pub fn read_segment_header(path: &Path, data: &[u8]) -> Result<Option<Lsn>> {
    if data.len() < SEGMENT_HEADER_LEN {
        return Ok(None);
    }
    if data[..SEGMENT_HEADER_LEN].iter().all(|b| *b == 0) {
        // The header is fsynced before any record goes in, so a zeroed
        // header in front of valid records is damage, not a torn creation.
        if valid_record_after(data, SEGMENT_HEADER_LEN, 0) {
            return Err(Error::corruption(path, 0, "segment header is zeroed but valid records follow it"));
        }
        return Ok(None);
    }
    let h = &data[..SEGMENT_HEADER_LEN];
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(Error::corruption(path, 0, "not a ringq journal segment (bad magic)"));
    }
    let crc = u32::from_le_bytes(h[28..32].try_into().expect("4"));
    if crc32c::crc32c(&h[0..28]) != crc {
        if valid_record_after(data, SEGMENT_HEADER_LEN, 0) {
            return Err(Error::corruption(path, 0, "segment header fails its CRC check but holds valid records"));
        }
        return Ok(None);
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4"));
    if version > FORMAT_VERSION {
        return Err(Error::corruption(
            path,
            8,
            format!("format version {version} is newer than this ringq reads ({FORMAT_VERSION}); upgrade ringq"),
        ));
    }
    Ok(Some(u64::from_le_bytes(h[16..24].try_into().expect("8"))))
}

/// Checks the record at `off`: `Some((lsn, body range end))` if it is whole
/// and its CRC matches.
fn valid_record_at(data: &[u8], off: usize) -> Option<(Lsn, usize)> {
    let h = data.get(off..off + RECORD_HEADER_LEN)?;
    let len = u32::from_le_bytes(h[0..4].try_into().ok()?) as usize;
    let end = off.checked_add(RECORD_HEADER_LEN)?.checked_add(len)?;
    if end > data.len() || h[16] != RECORD_TXN || h[17..20] != [0, 0, 0] {
        return None;
    }
    let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let got = crc32c::crc32c_append(crc32c::crc32c(&h[0..4]), &data[off + 8..end]);
    (got == crc).then(|| (u64::from_le_bytes(h[8..16].try_into().expect("8")), end))
}

/// Is there any valid record in `data[from..]` with an LSN after `after`?
fn valid_record_after(data: &[u8], from: usize, after: Lsn) -> bool {
    let mut off = from;
    while off + RECORD_HEADER_LEN <= data.len() {
        // Cheap filter first: a plausible LSN, then the CRC.
        let lsn = u64::from_le_bytes(data[off + 8..off + 16].try_into().expect("8"));
        if lsn > after && lsn - after < (1 << 32) && valid_record_at(data, off).is_some() {
            return true;
        }
        off += 1;
    }
    false
}

/// Reads every record of one segment in order, calling `each(lsn, body)`.
/// `expect_first` is the LSN the first record must carry.
pub fn scan_segment(
    path: &Path,
    data: &[u8],
    expect_first: Lsn,
    mut each: impl FnMut(Lsn, u64, &[u8]) -> Result<()>,
) -> Result<SegmentScan> {
    let mut off = SEGMENT_HEADER_LEN;
    let mut next = expect_first;
    let mut records = 0;
    loop {
        if off + RECORD_HEADER_LEN > data.len() || data[off..off + RECORD_HEADER_LEN].iter().all(|b| *b == 0) {
            // End of data. Anything non-zero after here is a torn write.
            let rest = &data[off.min(data.len())..];
            let torn = rest.iter().rposition(|b| *b != 0).map(|last| TornTail {
                path: path.to_owned(),
                offset: off as u64,
                bytes: last as u64 + 1,
            });
            if torn.is_some() && valid_record_after(data, off + 1, next.saturating_sub(1)) {
                return Err(Error::corruption(path, off as u64, "zeroed record followed by valid records"));
            }
            return Ok(SegmentScan { first_lsn: expect_first, last_lsn: next - 1, end: off as u64, records, torn });
        }
        match valid_record_at(data, off) {
            Some((lsn, end)) if lsn == next => {
                each(lsn, off as u64, &data[off + RECORD_HEADER_LEN..end])?;
                records += 1;
                next += 1;
                off = end;
            }
            Some((lsn, _)) => {
                return Err(Error::corruption(
                    path,
                    off as u64,
                    format!("record has LSN {lsn}, expected {next} (records missing or out of order)"),
                ));
            }
            None => {
                if valid_record_after(data, off + 1, next.saturating_sub(1)) {
                    return Err(Error::corruption(
                        path,
                        off as u64,
                        "record fails its CRC check and valid records follow it",
                    ));
                }
                let last_nonzero = data[off..].iter().rposition(|b| *b != 0).unwrap_or(0);
                return Ok(SegmentScan {
                    first_lsn: expect_first,
                    last_lsn: next - 1,
                    end: off as u64,
                    records,
                    torn: Some(TornTail { path: path.to_owned(), offset: off as u64, bytes: last_nonzero as u64 + 1 }),
                });
            }
        }
    }
}

/// Maps a segment read-only for scanning.
pub fn map_for_read(path: &Path) -> Result<Option<Mmap>> {
    let file = File::open(path).map_err(|e| Error::storage("opening journal segment", path, e))?;
    let len = file.metadata().map_err(|e| Error::storage("stat of journal segment", path, e))?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: read-only view; ringq never truncates a segment that another
    // handle may be reading.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::storage("mapping journal segment", path, e))?;
    Ok(Some(map))
}

/// Overwrites a torn tail with zeros (and fsyncs), so the segment reads
/// cleanly from now on, even once newer segments follow it.
pub fn zero_torn_tail(faults: &Faults, torn: &TornTail) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .map_err(|e| Error::storage("opening torn segment", &torn.path, e))?;
    let zeros = vec![0u8; torn.bytes as usize];
    file.write_all_at(&zeros, torn.offset).map_err(|e| Error::storage("zeroing torn tail", &torn.path, e))?;
    storage::sync_file(faults, &file).map_err(|e| Error::storage("fsync of repaired segment", &torn.path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(records: &[Vec<u8>]) -> Vec<u8> {
        let mut data = segment_header(1).to_vec();
        for r in records {
            data.extend_from_slice(r);
        }
        data.resize(data.len() + 256, 0);
        data
    }

    fn rec(lsn: Lsn) -> Vec<u8> {
        encode_record(lsn, &[Op::Drop { id: lsn * 100 }])
    }

    #[test]
    fn journal_record_crc_detects_every_single_byte_flip() {
        let r = rec(1);
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x40;
            let data = segment_with(&[bad]);
            let scan = scan_segment(Path::new("x"), &data, 1, |_, _, _| Ok(())).unwrap();
            assert_eq!(scan.records, 0, "flip at byte {i} was accepted");
            assert!(scan.torn.is_some());
        }
    }

    #[test]
    fn journal_flipped_byte_before_valid_records_names_file_and_offset() {
        let (a, mut b, c) = (rec(1), rec(2), rec(3));
        b[RECORD_HEADER_LEN + 2] ^= 1;
        let data = segment_with(&[a.clone(), b, c]);
        let err = scan_segment(Path::new("seg.wal"), &data, 1, |_, _, _| Ok(())).unwrap_err();
        match err {
            Error::Corruption { path, offset, .. } => {
                assert_eq!(path, Path::new("seg.wal"));
                assert_eq!(offset as usize, SEGMENT_HEADER_LEN + a.len());
            }
            e => panic!("expected corruption, got {e}"),
        }
    }

    #[test]
    fn journal_truncation_at_every_offset_reads_a_valid_prefix() {
        let recs: Vec<Vec<u8>> = (1..=4).map(rec).collect();
        let full = segment_with(&recs);
        let ends: Vec<usize> = recs
            .iter()
            .scan(SEGMENT_HEADER_LEN, |acc, r| {
                *acc += r.len();
                Some(*acc)
            })
            .collect();
        for cut in SEGMENT_HEADER_LEN..=ends[3] {
            let data = &full[..cut];
            let mut seen = Vec::new();
            let scan = scan_segment(Path::new("x"), data, 1, |lsn, _, _| {
                seen.push(lsn);
                Ok(())
            })
            .unwrap();
            let whole = ends.iter().filter(|e| **e <= cut).count() as u64;
            assert_eq!(scan.records, whole, "cut at {cut}");
            assert_eq!(seen, (1..=whole).collect::<Vec<_>>());
            assert_eq!(scan.torn.is_some(), !ends.contains(&cut) && cut != SEGMENT_HEADER_LEN);
        }
    }

    #[test]
    fn journal_lsn_gap_is_corruption() {
        let data = segment_with(&[rec(1), rec(3)]);
        assert!(matches!(scan_segment(Path::new("x"), &data, 1, |_, _, _| Ok(())), Err(Error::Corruption { .. })));
    }
}

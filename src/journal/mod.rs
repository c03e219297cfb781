//! The write-ahead journal: a chain of segment files, each preallocated.
//! A record is in the OS page cache the moment `append` returns, so a
//! process killed with SIGKILL loses nothing that was appended; fsync (by
//! the flusher, see `sync`) is what protects against power loss. Records
//! under [`WRITE_MIN`] bytes (single messages) are copied into a shared
//! memory mapping of the segment, with no syscall; larger ones (batches,
//! acks of many deliveries) go through one `pwrite`, which keeps their pages
//! out of the process's page tables unless a small record shares one (see
//! `WRITE_MIN`).
//!
//! One file per role (as fjall splits its journal): this module holds the
//! byte layout; [`scan`] reads segments and tells a torn tail from
//! corruption; [`writer`] appends, seals and rolls; [`prepare`] creates
//! segments ahead of the writer, off its lock.
//!
//! Layout (`docs/format.md` has every byte). Format 2, written now:
//! - a segment is `{seq:020}.log`, named by a sequence number, not by its
//!   first LSN: segments are created (preallocated, header fsynced, name
//!   fsynced) *before* the writer needs them, when the first LSN is not
//!   known yet. Its 48-byte header holds magic `RINGQWAL`, format version,
//!   header length, first LSN (0: prepared, not yet used), the sequence
//!   number, the size it was created with, and a CRC32C;
//! - records, back to back: length of body (u32), CRC32C (u32) of everything
//!   in the record but itself, LSN (u64), kind (u8), and the *durable gap*
//!   (u24): how many records before this one were not yet known to be on
//!   disk (fsynced) when it was written. Recovery uses it to tell damage
//!   that a power cut can cause (a hole in unsynced pages, which the kernel
//!   writes back in any order) from damage to data that was on disk;
//! - a segment that the writer left ends in a *seal* record (kind 2) naming
//!   the next segment, so a missing newest segment is noticed;
//! - then zeros (the preallocated rest): an all-zero record header ends the log.
//!
//! Format 3 is a *recycled* segment (`prepare::recycle_spare`): a covered
//! segment's file given a new number and header instead of being deleted,
//! so that the writer never meets unwritten extents and nothing has to
//! write zeros over 16 MiB ahead of it. Past the end of its log it holds
//! what the file held before: records of earlier segments, every one with
//! an LSN below the new first LSN. Its own records are bound to it (their
//! CRC covers its sequence number, [`frame_in`]), so none of those checks
//! out there. The writer keeps the 20 bytes after its last record zero, so
//! the log still ends at an all-zero record header; the reader takes a
//! record with an LSN below the first for the end of the log too, and
//! when a tail is torn, zeros only as far as this segment's own records
//! reach (`scan`).
//!
//! Format 1 (`{first_lsn:020}.wal`, 32-byte header, no seal, no gap) is still
//! read; such segments are deleted once a snapshot covers them.

pub mod marker;
pub mod prepare;
pub mod scan;
pub mod writer;

pub use scan::{Seal, SegmentHeader, SegmentScan, TornTail, map_for_read, read_segment_header, scan_segment};
pub use writer::{Journal, remove_covered};

use crate::record::{Op, encode_txn};
use crate::types::Lsn;

pub const SEGMENT_MAGIC: &[u8; 8] = b"RINGQWAL";
/// The segment format this version writes into a new file.
pub const FORMAT_VERSION: u32 = 2;
/// The format of a *recycled* segment: a file that held an earlier segment
/// (covered by a snapshot) and was given a new number and header instead of
/// being deleted. Same layout as format 2, but the bytes past the end of
/// the log may be records of the file's earlier uses, each with an LSN
/// below the segment's first LSN: the reader takes those for the end of
/// the log, never for records (see `scan`).
pub const FORMAT_RECYCLED: u32 = 3;
/// The newest segment format this version reads.
pub const FORMAT_NEWEST: u32 = FORMAT_RECYCLED;
pub const SEGMENT_HEADER_LEN_V1: usize = 32;
pub const SEGMENT_HEADER_LEN: usize = 48;
pub const RECORD_HEADER_LEN: usize = 20;
pub const RECORD_TXN: u8 = 1;
pub const RECORD_SEAL: u8 = 2;
/// Bytes a seal record takes (header + the next segment's sequence number).
pub const SEAL_LEN: usize = RECORD_HEADER_LEN + 8;
/// The durable gap saturates here: "not known" (no fsync for a long while,
/// or `durability="os"`).
pub const GAP_UNKNOWN: u32 = 0x00FF_FFFF;
/// Segment sizes are whole pages.
pub const PAGE: usize = 4096;
/// Records of at least this many bytes are written with `pwrite` instead
/// of a copy into the mapping. A store into the mapping needs no syscall,
/// but each page it touches first faults into the page tables, and every
/// fsync then write-protects each dirty mapped page again (`page_mkclean`),
/// which flushes it from the TLB of every CPU running the process: one
/// inter-processor interrupt per page, slow in a VM. A page written only by
/// `pwrite` is not mapped in, so it costs neither. Measured on the 2-core
/// VM (`docs/benchmarks.md`, "Journal writes"): with batches of 1,000
/// messages `durability="always"` went from 0.94–1.00M to 1.18–1.27M msg/s;
/// a single message's record (~150 bytes) stays a plain copy, cheaper than
/// a syscall.
pub const WRITE_MIN: usize = 2048;

/// `{seq:020}.log`, the name of a format-2 segment.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

/// `{first_lsn:020}.wal`, the name of a format-1 segment.
pub fn segment_name_v1(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.wal")
}

/// The 48-byte header of a format-2 segment.
pub fn segment_header(first_lsn: Lsn, seq: u64, size: u64) -> [u8; SEGMENT_HEADER_LEN] {
    segment_header_as(FORMAT_VERSION, first_lsn, seq, size)
}

/// The 48-byte header of a segment of format `version` (2, or 3 for a
/// recycled one: the layout is the same).
pub fn segment_header_as(version: u32, first_lsn: Lsn, seq: u64, size: u64) -> [u8; SEGMENT_HEADER_LEN] {
    debug_assert!(version == FORMAT_VERSION || version == FORMAT_RECYCLED);
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    h[24..32].copy_from_slice(&seq.to_le_bytes());
    h[32..40].copy_from_slice(&size.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..44]);
    h[44..48].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The 32-byte header of a format-1 segment (tests and tools: this version
/// never writes one).
pub fn segment_header_v1(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_LEN_V1] {
    let mut h = [0u8; SEGMENT_HEADER_LEN_V1];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN_V1 as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Frames the body in `buf[RECORD_HEADER_LEN..]` as a record in place
/// (public for the criterion floor benchmark).
pub fn frame(buf: &mut [u8], lsn: Lsn, kind: u8, gap: u32) {
    frame_in(buf, lsn, kind, gap, None);
}

/// [`frame`] for a segment whose records are bound to it: in a recycled
/// segment (format 3) `seed` is its sequence number, and the CRC covers
/// it (as 8 little-endian bytes) in front of the record's bytes, so a
/// record of another segment, an earlier use of the file or one found in
/// a message's payload, never checks out there. `None`: formats 1 and 2.
pub fn frame_in(buf: &mut [u8], lsn: Lsn, kind: u8, gap: u32, seed: Option<u64>) {
    let len = (buf.len() - RECORD_HEADER_LEN) as u32;
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[8..16].copy_from_slice(&lsn.to_le_bytes());
    buf[16] = kind;
    buf[17..20].copy_from_slice(&gap.min(GAP_UNKNOWN).to_le_bytes()[..3]);
    let crc = record_crc(seed, &buf[0..4], &buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A record's CRC: of `seed` (if any, 8 bytes little-endian), its length
/// field, and everything after its CRC field.
pub(crate) fn record_crc(seed: Option<u64>, len: &[u8], rest: &[u8]) -> u32 {
    let start = match seed {
        Some(s) => crc32c::crc32c_append(crc32c::crc32c(&s.to_le_bytes()), len),
        None => crc32c::crc32c(len),
    };
    crc32c::crc32c_append(start, rest)
}

/// A complete transaction record (header + body), for tests and tools; its
/// durable gap is 0 (everything before it was on disk).
pub fn encode_record(lsn: Lsn, ops: &[Op]) -> Vec<u8> {
    encode_record_with_gap(lsn, ops, 0)
}

/// The same with a given durable gap.
pub fn encode_record_with_gap(lsn: Lsn, ops: &[Op], gap: u32) -> Vec<u8> {
    let mut buf = vec![0u8; RECORD_HEADER_LEN];
    encode_txn(ops, &mut buf);
    frame(&mut buf, lsn, RECORD_TXN, gap);
    buf
}

/// A format-1 transaction record (its padding bytes are zero).
pub fn encode_record_v1(lsn: Lsn, ops: &[Op]) -> Vec<u8> {
    encode_record_with_gap(lsn, ops, 0)
}

/// A seal record: the journal continues at `next_lsn` in segment `next_seq`.
pub fn encode_seal(next_lsn: Lsn, next_seq: u64) -> [u8; SEAL_LEN] {
    encode_seal_in(next_lsn, next_seq, None)
}

/// [`encode_seal`] bound to a recycled segment (see [`frame_in`]).
pub fn encode_seal_in(next_lsn: Lsn, next_seq: u64, seed: Option<u64>) -> [u8; SEAL_LEN] {
    let mut buf = [0u8; SEAL_LEN];
    buf[RECORD_HEADER_LEN..].copy_from_slice(&next_seq.to_le_bytes());
    frame_in(&mut buf, next_lsn, RECORD_SEAL, 0, seed);
    buf
}

/// A transaction record bound to a recycled segment numbered `seq` (tests
/// and tools).
pub fn encode_record_in(lsn: Lsn, ops: &[Op], gap: u32, seq: u64) -> Vec<u8> {
    let mut buf = vec![0u8; RECORD_HEADER_LEN];
    encode_txn(ops, &mut buf);
    frame_in(&mut buf, lsn, RECORD_TXN, gap, Some(seq));
    buf
}

/// Rounds a segment size up to whole pages.
pub(crate) fn page_round(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

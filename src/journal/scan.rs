//! Reading segments: the header, then every record in order.
//!
//! The reader has to tell three things apart when a record does not check
//! out (bad CRC, bad framing, or zeros where a record should be):
//! - **the end of the log**: zeros and nothing valid after them;
//! - **a torn or lost tail**: what a crash or a power cut can leave. A
//!   process crash only ever cuts the last record short. A power cut can
//!   lose any page written since the last fsync — the kernel writes dirty
//!   pages back in any order — so a hole can sit in front of records that
//!   did reach the disk. Those records were never fsynced either (an fsync
//!   covers everything before it), so they are dropped with the hole and
//!   counted in `TornTail::dropped_records`. A format-2 record says how far
//!   the fsynced part of the log reached when it was written (its *durable
//!   gap*), which is what makes this decidable;
//! - **corruption**: a bad record that was already on disk when a later
//!   valid record was written (that record's durable gap proves it), or any
//!   bad record followed by valid ones in format 1, which has no gap. That
//!   is an error naming the file and offset — never a silent loss.
//!
//! A recycled segment (format 3) adds a fourth: **stale records** of the
//! file's earlier uses past the end of its log. Its own records are bound
//! to it (their CRC covers its sequence number, `frame_in`), so a stale
//! record, or one that a stale payload contains, does not check out there;
//! and each stale record has an LSN below the segment's first LSN (the
//! file was covered by a snapshot before it was recycled, and LSNs only
//! grow), a second guard: it ends the log like zeros do, and the searches
//! for records after a hole never take it for one. Because the rest of such a file is not zeros, its end is where
//! the writer's 20 trailing zero bytes are (it keeps them after its last
//! record); anything else there is a torn tail, and what repair zeros is
//! the tail's own bytes: the record header at the tear and every record of
//! this segment found after it.

use super::{
    GAP_UNKNOWN, RECORD_HEADER_LEN, RECORD_SEAL, RECORD_TXN, SEGMENT_HEADER_LEN, SEGMENT_HEADER_LEN_V1, SEGMENT_MAGIC,
};
use crate::error::{Error, Result};
use crate::types::Lsn;
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A segment header, either format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u32,
    /// 0 in a format-2 segment that was prepared but never used.
    pub first_lsn: Lsn,
    /// Format 2: the sequence number (also the file name).
    pub seq: Option<u64>,
    /// Format 2: the size the file was created with.
    pub size: Option<u64>,
}

impl SegmentHeader {
    /// Where the first record starts.
    pub fn header_len(&self) -> usize {
        if self.version == 1 { SEGMENT_HEADER_LEN_V1 } else { SEGMENT_HEADER_LEN }
    }
    /// A prepared segment the writer has not started yet.
    pub fn is_unused(&self) -> bool {
        self.version >= 2 && self.first_lsn == 0
    }
    /// A recycled segment (format 3): past the end of its log it may hold
    /// stale records of the file's earlier uses.
    pub fn is_recycled(&self) -> bool {
        self.version == super::FORMAT_RECYCLED
    }
    /// What its records' CRCs are seeded with: the sequence number in a
    /// recycled segment (see `frame_in`), nothing otherwise.
    pub fn crc_seed(&self) -> Option<u64> {
        if self.is_recycled() { self.seq } else { None }
    }
}

/// A bad record at the end of the log with nothing provably durable after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    /// From `offset` to the last non-zero byte of the segment; in a
    /// recycled one (format 3), whose rest is not zeros, to the end of the
    /// last record of its own found after `offset`, and at least a record
    /// header (20 bytes).
    pub bytes: u64,
    /// Whole, valid records after the damage, dropped with it: a power cut
    /// lost a page in front of them, and none of them had been fsynced.
    pub dropped_records: u64,
}

/// The record that ends a segment the writer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// The first LSN of the next segment.
    pub next_lsn: Lsn,
    /// The next segment's sequence number.
    pub next_seq: u64,
    pub offset: u64,
}

/// What scanning one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    pub first_lsn: Lsn,
    /// LSN of the last valid record (first_lsn - 1 if none).
    pub last_lsn: Lsn,
    /// Offset just past the last valid record (or the seal).
    pub end: u64,
    pub records: u64,
    pub torn: Option<TornTail>,
    pub sealed: Option<Seal>,
    /// The highest LSN that this segment's records prove was fsynced before
    /// they were written (format 2; 0 when none proves anything).
    pub proven_durable: Lsn,
}

fn u32_at(h: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(h[o..o + 4].try_into().expect("4"))
}
fn u64_at(h: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(h[o..o + 8].try_into().expect("8"))
}

/// Validates a segment header; `Ok(None)` means the header itself is torn
/// (short, zero, or failing its CRC with no valid record after it): a crash
/// while the segment was being created.
pub fn read_segment_header(path: &Path, data: &[u8]) -> Result<Option<SegmentHeader>> {
    if data.len() < SEGMENT_HEADER_LEN_V1 {
        return Ok(None);
    }
    let torn_or_damaged = |what: &str| -> Result<Option<SegmentHeader>> {
        // Headers are fsynced before any record goes in, so a bad header in
        // front of valid records is damage, not a torn creation.
        if valid_record_after(data, SEGMENT_HEADER_LEN_V1, 0) {
            return Err(Error::corruption(path, 0, format!("segment header {what} but valid records follow it")));
        }
        Ok(None)
    };
    if data[..SEGMENT_HEADER_LEN_V1].iter().all(|b| *b == 0) {
        return torn_or_damaged("is zeroed");
    }
    if &data[0..8] != SEGMENT_MAGIC {
        return Err(Error::corruption(path, 0, "not a ringq journal segment (bad magic)"));
    }
    let version = u32_at(data, 8);
    let (hlen, crc_at) = match version {
        1 => (SEGMENT_HEADER_LEN_V1, 28),
        2 | 3 if data.len() >= SEGMENT_HEADER_LEN => (SEGMENT_HEADER_LEN, 44),
        2 | 3 => return Ok(None),
        0 => {
            return Err(Error::corruption(path, 8, "segment format version 0 (no ringq writes it): damaged header"));
        }
        v => {
            // A newer format would have been refused by the MANIFEST
            // version check already; say what it looks like.
            return Err(Error::corruption(
                path,
                8,
                format!(
                    "segment format version {v} is newer than this ringq reads ({}), or the header is damaged",
                    super::FORMAT_NEWEST
                ),
            ));
        }
    };
    if crc32c::crc32c(&data[0..crc_at]) != u32_at(data, crc_at) {
        return torn_or_damaged("fails its CRC check");
    }
    if u32_at(data, 12) as usize != hlen {
        return Err(Error::corruption(
            path,
            12,
            format!("header length {} does not match format {version} ({hlen})", u32_at(data, 12)),
        ));
    }
    let first_lsn = u64_at(data, 16);
    if version == 1 && first_lsn == 0 {
        // LSNs start at 1, and the format-1 writer named each segment after
        // the LSN of its first record (format 2 writes 0 only in a prepared,
        // unused segment).
        return Err(Error::corruption(
            path,
            16,
            "format-1 segment header says first LSN 0 (no ringq writes it): damaged",
        ));
    }
    Ok(Some(if version == 1 {
        SegmentHeader { version, first_lsn, seq: None, size: None }
    } else {
        SegmentHeader { version, first_lsn, seq: Some(u64_at(data, 24)), size: Some(u64_at(data, 32)) }
    }))
}

/// A record that checks out: its LSN, kind, durable gap and where it ends.
#[derive(Debug, Clone, Copy)]
struct Valid {
    lsn: Lsn,
    kind: u8,
    gap: u32,
    end: usize,
}

/// Checks the record at `off`: whole, CRC matching, a known kind, (in
/// format 1) zero padding, (in format 2) a durable gap the writer could
/// have written: at most the record's LSN (`L − J` with `0 ≤ J < L`), or
/// "unknown", and (a transaction) an LSN below `u64::MAX`, which the writer
/// never uses (no LSN could follow it). A CRC-valid record claiming more is
/// damage or forgery, and is treated like any other invalid record (never
/// replayed, never proof).
fn valid_record_at(data: &[u8], off: usize, version: u32, seed: Option<u64>) -> Option<Valid> {
    let h = data.get(off..off.checked_add(RECORD_HEADER_LEN)?)?;
    let len = u32_at(h, 0) as usize;
    let end = off.checked_add(RECORD_HEADER_LEN)?.checked_add(len)?;
    if end > data.len() {
        return None;
    }
    let kind = h[16];
    let gap = u32::from_le_bytes([h[17], h[18], h[19], 0]);
    let lsn = u64_at(h, 8);
    let known = match version {
        1 => kind == RECORD_TXN && gap == 0,
        _ => {
            (kind == RECORD_TXN && (gap == GAP_UNKNOWN || u64::from(gap) <= lsn))
                || (kind == RECORD_SEAL && len == 8 && gap == 0)
        }
    } && !(kind == RECORD_TXN && lsn == Lsn::MAX);
    if !known {
        return None;
    }
    let crc = u32_at(h, 4);
    let got = super::record_crc(seed, &h[0..4], &data[off + 8..end]);
    (got == crc).then_some(Valid { lsn, kind, gap, end })
}

/// The next valid record at or after `from` with an LSN after `after` (a
/// byte-by-byte search: cheap LSN filter first, then the CRC).
fn next_valid(data: &[u8], from: usize, after: Lsn, version: u32, seed: Option<u64>) -> Option<(usize, Valid)> {
    let mut off = from;
    while off + RECORD_HEADER_LEN <= data.len() {
        let lsn = u64_at(data, off + 8);
        if lsn > after
            && lsn - after < (1 << 32)
            && let Some(v) = valid_record_at(data, off, version, seed)
        {
            return Some((off, v));
        }
        off += 1;
    }
    None
}

/// Is there a valid record (format-2 rules, CRC seeded with `seed`) in
/// `data[from..]` with an LSN after `lsn` (and below `lsn + 2³²`)?
/// Recovery asks this of an unused recycled segment with its own sequence
/// number as the seed: a record found was written into it by a roll whose
/// new header did not reach the disk (its stale records are bound to other
/// numbers, and all covered by the snapshot anyway).
pub fn holds_record_after(data: &[u8], from: usize, lsn: Lsn, seed: Option<u64>) -> bool {
    next_valid(data, from, lsn, 2, seed).is_some()
}

/// Is there any valid record in `data[from..]` with an LSN after `after`
/// (either format)?
fn valid_record_after(data: &[u8], from: usize, after: Lsn) -> bool {
    next_valid(data, from, after, 2, None).is_some() || next_valid(data, from, after, 1, None).is_some()
}

/// The LSN up to which a format-2 record says the journal was on disk when
/// it was written (`None` if its gap exceeds its LSN: `valid_record_at`
/// refuses such a record, so this is only a second guard).
fn durable_before(v: &Valid) -> Option<Lsn> {
    v.lsn.checked_sub(u64::from(v.gap))
}

/// What the valid records after a hole say about it.
struct AfterHole {
    /// Valid transaction records found after the hole.
    records: u64,
    /// Where the last valid record found after the hole ends (0: none).
    last_end: usize,
    /// The first of them whose durable gap proves the hole was on disk.
    proof: Option<(usize, Lsn)>,
}

/// Walks the valid records after a hole at LSN `missing` (byte search,
/// then from record to record). `on_disk`: the journal was fsynced at least
/// this far (the `DURABLE` marker).
fn after_hole(data: &[u8], from: usize, missing: Lsn, header: &SegmentHeader, on_disk: Lsn) -> AfterHole {
    let version = header.version;
    let mut out = AfterHole { records: 0, last_end: 0, proof: None };
    let mut off = from;
    while let Some((at, v)) = next_valid(data, off, missing.saturating_sub(1), version, header.crc_seed()) {
        if v.kind == RECORD_TXN {
            out.records += 1;
            let proves = version >= 2 && v.gap < GAP_UNKNOWN && durable_before(&v).is_some_and(|d| d >= missing);
            if version == 1 || proves || missing <= on_disk {
                out.proof.get_or_insert((at, v.lsn));
            }
        }
        out.last_end = v.end;
        off = v.end;
    }
    out
}

/// Reads every record of one segment in order, calling `each(lsn, offset,
/// body)` for each transaction. `header` is the segment's (see
/// `read_segment_header`); its first LSN is the one the first record must
/// carry; a header with first LSN 0 (a prepared segment, never used; no
/// record has LSN 0) is refused. `on_disk`: the journal is known to have
/// been fsynced up to this LSN (`marker::read`; 0 if unknown), so damage at
/// or below it is corruption.
pub fn scan_segment(
    path: &Path,
    data: &[u8],
    header: &SegmentHeader,
    on_disk: Lsn,
    mut each: impl FnMut(Lsn, u64, &[u8]) -> Result<()>,
) -> Result<SegmentScan> {
    let version = header.version;
    let first = header.first_lsn;
    if first == 0 {
        return Err(Error::corruption(path, 16, "segment header says first LSN 0: no record has LSN 0"));
    }
    let mut off = header.header_len();
    let mut next = first;
    let mut records = 0;
    let mut proven_durable: Lsn = 0;
    // `next` never drops below `first` (>= 1), so `next - 1` cannot wrap.
    let scan = |next: Lsn, off: usize, records: u64, proven: Lsn, torn, sealed| SegmentScan {
        first_lsn: first,
        last_lsn: next - 1,
        end: off as u64,
        records,
        torn,
        sealed,
        proven_durable: proven,
    };
    loop {
        let at_end = off + RECORD_HEADER_LEN > data.len() || data[off..off + RECORD_HEADER_LEN].iter().all(|b| *b == 0);
        let valid = if at_end { None } else { valid_record_at(data, off, version, header.crc_seed()) };
        // In a recycled segment, a record of the file's earlier use (its LSN
        // is below every LSN of this one) is not part of this log.
        let valid = valid.filter(|v| !(header.is_recycled() && v.lsn < first));
        match valid {
            Some(v) if v.lsn == next && v.kind == RECORD_TXN => {
                each(v.lsn, off as u64, &data[off + RECORD_HEADER_LEN..v.end])?;
                if version >= 2
                    && v.gap < GAP_UNKNOWN
                    && let Some(d) = durable_before(&v)
                {
                    proven_durable = proven_durable.max(d);
                }
                records += 1;
                // `valid_record_at` refuses LSN `u64::MAX`: a second guard.
                next = v.lsn.checked_add(1).ok_or_else(|| {
                    Error::corruption(path, off as u64, "record has LSN u64::MAX: no LSN can follow it")
                })?;
                off = v.end;
            }
            Some(v) if v.lsn == next && v.kind == RECORD_SEAL => {
                let next_seq = u64_at(data, off + RECORD_HEADER_LEN);
                let seal = Seal { next_lsn: v.lsn, next_seq, offset: off as u64 };
                return Ok(scan(next, v.end, records, proven_durable, None, Some(seal)));
            }
            Some(v) => {
                return Err(Error::corruption(
                    path,
                    off as u64,
                    format!("record has LSN {}, expected {next} (records missing or out of order)", v.lsn),
                ));
            }
            None => {
                // The end of the log, a torn or lost tail, or corruption.
                let rest = &data[off.min(data.len())..];
                let recycled = header.is_recycled();
                // A recycled segment's rest is not zeros (stale records):
                // its log ends at the writer's trailing zeros instead, and
                // the records of its own after `off` (if any) say how far
                // a torn tail reaches.
                let last_nonzero = if recycled { None } else { rest.iter().rposition(|b| *b != 0) };
                if !recycled && last_nonzero.is_none() {
                    return Ok(scan(next, off, records, proven_durable, None, None));
                }
                let after = after_hole(data, off + 1, next, header, on_disk);
                if recycled && at_end && after.records == 0 {
                    return Ok(scan(next, off, records, proven_durable, None, None));
                }
                if let Some((at, lsn)) = after.proof {
                    let detail = if version == 1 {
                        format!("record {next} is damaged and valid records follow it (record {lsn} at offset {at})")
                    } else if next <= on_disk {
                        format!(
                            "record {next} is damaged, but the journal had been fsynced past it (to {on_disk}) \
                             and record {lsn} at offset {at} follows it"
                        )
                    } else {
                        format!(
                            "record {next} is damaged, but record {lsn} at offset {at} was written after it reached the disk"
                        )
                    };
                    return Err(Error::corruption(path, off as u64, detail));
                }
                let torn = TornTail {
                    path: path.to_owned(),
                    offset: off as u64,
                    bytes: match last_nonzero {
                        Some(last) => last as u64 + 1,
                        None => after.last_end.saturating_sub(off).max(RECORD_HEADER_LEN).min(rest.len()) as u64,
                    },
                    dropped_records: after.records,
                };
                return Ok(scan(next, off, records, proven_durable, Some(torn), None));
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

#[cfg(test)]
mod tests {
    use super::super::RECORD_HEADER_LEN;
    use super::super::{encode_record, encode_record_v1, encode_record_with_gap, encode_seal, segment_header};
    use super::*;
    use crate::record::Op;

    const H: SegmentHeader = SegmentHeader { version: 2, first_lsn: 1, seq: Some(1), size: Some(0) };

    fn segment_with(records: &[Vec<u8>]) -> Vec<u8> {
        let mut data = segment_header(1, 1, 0).to_vec();
        for r in records {
            data.extend_from_slice(r);
        }
        data.resize(data.len() + 256, 0);
        data
    }

    fn rec(lsn: Lsn) -> Vec<u8> {
        encode_record(lsn, &[Op::Drop { id: lsn * 100 }])
    }

    fn scan(data: &[u8]) -> Result<SegmentScan> {
        scan_segment(Path::new("x"), data, &H, 0, |_, _, _| Ok(()))
    }

    #[test]
    fn journal_record_crc_detects_every_single_byte_flip() {
        let r = rec(1);
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x40;
            let data = segment_with(&[bad]);
            let s = scan(&data).unwrap();
            assert_eq!(s.records, 0, "flip at byte {i} was accepted");
            assert!(s.torn.is_some());
        }
    }

    #[test]
    fn journal_flipped_byte_before_records_written_after_it_was_durable_names_file_and_offset() {
        // Record 3 was written when records up to 2 were fsynced (gap 1).
        let (a, mut b, c) = (rec(1), rec(2), encode_record_with_gap(3, &[Op::Drop { id: 3 }], 1));
        b[RECORD_HEADER_LEN + 2] ^= 1;
        let data = segment_with(&[a.clone(), b, c]);
        let err = scan_segment(Path::new("seg.log"), &data, &H, 0, |_, _, _| Ok(())).unwrap_err();
        match err {
            Error::Corruption { path, offset, .. } => {
                assert_eq!(path, Path::new("seg.log"));
                assert_eq!(offset as usize, SEGMENT_HEADER_LEN + a.len());
            }
            e => panic!("expected corruption, got {e}"),
        }
    }

    #[test]
    fn journal_hole_in_front_of_records_that_were_never_fsynced_is_a_torn_tail_that_drops_them() {
        // Records 2 and 3 were written while record 1 was the last one on
        // disk (gaps 1 and 2): a power cut may keep 3's page and lose 2's.
        let a = rec(1);
        let b = encode_record_with_gap(2, &[Op::Drop { id: 2 }], 1);
        let c = encode_record_with_gap(3, &[Op::Drop { id: 3 }], 2);
        let hole = vec![0u8; b.len()];
        let data = segment_with(&[a.clone(), hole, c.clone()]);
        let s = scan(&data).unwrap();
        assert_eq!((s.records, s.last_lsn), (1, 1));
        let t = s.torn.unwrap();
        assert_eq!(t.offset as usize, SEGMENT_HEADER_LEN + a.len());
        assert_eq!(t.dropped_records, 1);
        // The same with a stale (garbage) page instead of zeros.
        let garbage: Vec<u8> = (0..b.len()).map(|i| (i * 7 + 3) as u8).collect();
        let data = segment_with(&[a, garbage, b, c]);
        assert_eq!(scan(&data).unwrap().torn.unwrap().dropped_records, 2);
    }

    #[test]
    fn journal_damage_below_the_durable_marker_is_corruption_even_without_later_proof() {
        // Records 2 and 3 were written before any fsync (gaps 1, 2), then an
        // fsync covered all three: damage to record 2 is corruption.
        let a = rec(1);
        let mut b = encode_record_with_gap(2, &[Op::Drop { id: 2 }], 1);
        let c = encode_record_with_gap(3, &[Op::Drop { id: 3 }], 2);
        b[RECORD_HEADER_LEN] ^= 1;
        let data = segment_with(&[a, b, c]);
        assert!(scan(&data).unwrap().torn.is_some(), "without the marker: a power-cut hole");
        let err = scan_segment(Path::new("x"), &data, &H, 3, |_, _, _| Ok(())).unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err}");
    }

    #[test]
    fn journal_records_with_an_unknown_gap_prove_nothing() {
        let a = rec(1);
        let c = encode_record_with_gap(3, &[Op::Drop { id: 3 }], GAP_UNKNOWN);
        let data = segment_with(&[a, vec![0u8; 30], c]);
        assert!(scan(&data).unwrap().torn.is_some());
    }

    #[test]
    fn journal_record_whose_gap_exceeds_its_lsn_is_invalid_not_proof() {
        // The writer's gap is L - J with J < L, so never above L. A
        // CRC-valid record claiming more is not a record the writer made.
        let forged = |lsn: Lsn, gap: u32| encode_record_with_gap(lsn, &[Op::Drop { id: lsn }], gap);
        // Where the first record should be: a torn tail, nothing replayed.
        let data = segment_with(&[forged(1, 2)]);
        let s = scan(&data).unwrap();
        assert_eq!((s.records, s.proven_durable), (0, 0));
        assert_eq!(s.torn.unwrap().offset as usize, SEGMENT_HEADER_LEN);
        // After a hole: it proves nothing and is not counted as a record.
        let a = rec(1);
        let data = segment_with(&[a.clone(), vec![0u8; 30], forged(3, 9)]);
        let s = scan(&data).unwrap();
        assert_eq!(s.records, 1);
        let t = s.torn.unwrap();
        assert_eq!((t.offset as usize, t.dropped_records), (SEGMENT_HEADER_LEN + a.len(), 0));
        // With DURABLE past the hole neither: no valid record follows it (so
        // the scan ends there, and recovery refuses a journal that ends
        // before DURABLE).
        let err = scan_segment(Path::new("x"), &data, &H, 2, |_, _, _| Ok(()));
        assert!(err.as_ref().is_ok_and(|s| s.torn.is_some()), "{err:?}");
        // A gap equal to the LSN is valid (nothing was on disk before it).
        assert_eq!(scan(&segment_with(&[forged(1, 1), forged(2, 2)])).unwrap().records, 2);
    }

    #[test]
    fn journal_header_with_first_lsn_0_is_refused_not_an_overflow() {
        // Format 1 never wrote first LSN 0 (LSNs start at 1): a CRC-valid
        // one is damage. Scanning it computed `next - 1` (fuzz input
        // `regressions/scan_segment/v1-first-lsn-0.bin`).
        let mut data = super::super::segment_header_v1(0).to_vec();
        data.resize(256, 0);
        match read_segment_header(Path::new("x"), &data) {
            Err(Error::Corruption { offset: 16, detail, .. }) => assert!(detail.contains("first LSN 0"), "{detail}"),
            other => panic!("expected corruption at offset 16, got {other:?}"),
        }
        // `scan_segment` itself refuses such a header (format 1 or a
        // prepared format-2 one), whoever passes it.
        for h in [
            SegmentHeader { version: 1, first_lsn: 0, seq: None, size: None },
            SegmentHeader { version: 2, first_lsn: 0, seq: Some(1), size: Some(0) },
        ] {
            let err = scan_segment(Path::new("x"), &data, &h, 0, |_, _, _| Ok(())).unwrap_err();
            assert!(matches!(err, Error::Corruption { offset: 16, .. }), "{err}");
        }
        // First LSN 1 is fine, as before.
        let mut data = super::super::segment_header_v1(1).to_vec();
        data.resize(256, 0);
        assert_eq!(read_segment_header(Path::new("x"), &data).unwrap().unwrap().first_lsn, 1);
    }

    #[test]
    fn journal_record_with_lsn_u64_max_is_invalid_not_an_overflow() {
        // No LSN can follow u64::MAX, and the writer never uses it: a
        // CRC-valid record carrying it is treated like any other invalid
        // record. Accepting it computed `next + 1` (fuzz input
        // `regressions/scan_segment/lsn-u64-max.bin`).
        let at = |first: Lsn| SegmentHeader { version: 2, first_lsn: first, seq: Some(1), size: Some(0) };
        let image = |first: Lsn, records: &[Vec<u8>]| {
            let mut data = segment_header(first, 1, 0).to_vec();
            for r in records {
                data.extend_from_slice(r);
            }
            data.resize(data.len() + 64, 0);
            data
        };
        let max = Lsn::MAX;
        let rec = |lsn: Lsn| encode_record(lsn, &[Op::Drop { id: 1 << 24 }]);
        // As the first record: a torn tail, nothing replayed.
        let data = image(max, &[rec(max)]);
        for on_disk in [0, max] {
            let s = scan_segment(Path::new("x"), &data, &at(max), on_disk, |_, _, _| Ok(())).unwrap();
            assert_eq!((s.records, s.last_lsn, s.end as usize), (0, max - 1, SEGMENT_HEADER_LEN));
            assert_eq!(s.torn.unwrap().dropped_records, 0);
        }
        // After record u64::MAX - 1: that one is read, the next is not.
        let (a, b) = (rec(max - 1), rec(max));
        let data = image(max - 1, &[a.clone(), b]);
        let s = scan_segment(Path::new("x"), &data, &at(max - 1), 0, |_, _, _| Ok(())).unwrap();
        assert_eq!((s.records, s.last_lsn), (1, max - 1));
        assert_eq!(s.torn.unwrap().offset as usize, SEGMENT_HEADER_LEN + a.len());
        // After a hole: not counted, proves nothing.
        let data = image(max - 1, &[vec![0xAB; 30], encode_record_with_gap(max, &[Op::Drop { id: 1 }], 1)]);
        let s = scan_segment(Path::new("x"), &data, &at(max - 1), 0, |_, _, _| Ok(())).unwrap();
        assert_eq!((s.records, s.torn.unwrap().dropped_records), (0, 0));
        // A seal naming u64::MAX as the next LSN is still valid (it uses no LSN).
        let data = image(max - 1, &[a, encode_seal(max, 2).to_vec()]);
        let s = scan_segment(Path::new("x"), &data, &at(max - 1), 0, |_, _, _| Ok(())).unwrap();
        assert_eq!((s.records, s.sealed.unwrap().next_lsn), (1, max));
        // Format 1 alike.
        let h1 = SegmentHeader { version: 1, first_lsn: max, seq: None, size: None };
        let mut data = super::super::segment_header_v1(max).to_vec();
        data.extend_from_slice(&encode_record_v1(max, &[Op::Drop { id: 1 }]));
        data.resize(data.len() + 64, 0);
        let s = scan_segment(Path::new("x"), &data, &h1, 0, |_, _, _| Ok(())).unwrap();
        assert_eq!((s.records, s.last_lsn), (0, max - 1));
        assert!(s.torn.is_some());
    }

    #[test]
    fn journal_format_1_treats_any_valid_record_after_damage_as_corruption() {
        let h1 = SegmentHeader { version: 1, first_lsn: 1, seq: None, size: None };
        let mut data = super::super::segment_header_v1(1).to_vec();
        data.extend_from_slice(&encode_record_v1(1, &[Op::Drop { id: 1 }]));
        data.extend_from_slice(&[0u8; 40]);
        data.extend_from_slice(&encode_record_v1(3, &[Op::Drop { id: 3 }]));
        data.resize(data.len() + 64, 0);
        let err = scan_segment(Path::new("x"), &data, &h1, 0, |_, _, _| Ok(())).unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err}");
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
            let s = scan_segment(Path::new("x"), data, &H, 0, |lsn, _, _| {
                seen.push(lsn);
                Ok(())
            })
            .unwrap();
            let whole = ends.iter().filter(|e| **e <= cut).count() as u64;
            assert_eq!(s.records, whole, "cut at {cut}");
            assert_eq!(seen, (1..=whole).collect::<Vec<_>>());
            assert_eq!(s.torn.is_some(), !ends.contains(&cut) && cut != SEGMENT_HEADER_LEN);
        }
    }

    #[test]
    fn journal_lsn_gap_is_corruption() {
        let data = segment_with(&[rec(1), rec(3)]);
        assert!(matches!(scan(&data), Err(Error::Corruption { .. })));
    }

    #[test]
    fn journal_seal_ends_the_segment_and_names_the_next() {
        let mut data = segment_with(&[rec(1), rec(2), encode_seal(3, 7).to_vec()]);
        // Whatever follows a seal is never read.
        let n = data.len();
        data[n - 10] = 0xAB;
        let s = scan(&data).unwrap();
        assert_eq!((s.records, s.last_lsn), (2, 2));
        let seal = s.sealed.unwrap();
        assert_eq!((seal.next_lsn, seal.next_seq), (3, 7));
        // A seal with the wrong LSN is corruption.
        let data = segment_with(&[rec(1), encode_seal(5, 7).to_vec()]);
        assert!(matches!(scan(&data), Err(Error::Corruption { .. })));
    }

    /// A recycled segment (format 3, sequence number 2) whose log starts at
    /// LSN 10: `live` after its header, `trailer` zeros, then `stale`
    /// (records of the file's earlier use, LSNs below 10), then zeros.
    fn recycled(live: &[Vec<u8>], trailer: usize, stale: &[Vec<u8>]) -> Vec<u8> {
        let mut data = super::super::segment_header_as(3, 10, 2, 0).to_vec();
        for r in live {
            data.extend_from_slice(r);
        }
        data.resize(data.len() + trailer, 0);
        for r in stale {
            data.extend_from_slice(r);
        }
        data.resize(data.len() + 64, 0);
        data
    }

    /// A record of the recycled segment above (its CRC bound to number 2).
    fn live(lsn: Lsn, gap: u32) -> Vec<u8> {
        super::super::encode_record_in(lsn, &[Op::Drop { id: lsn * 100 }], gap, 2)
    }

    fn scan3(data: &[u8]) -> Result<SegmentScan> {
        let h = read_segment_header(Path::new("x"), data).unwrap().unwrap();
        assert!(h.is_recycled());
        assert_eq!(h.crc_seed(), Some(2));
        scan_segment(Path::new("x"), data, &h, 0, |_, _, _| Ok(()))
    }

    #[test]
    fn a_recycled_segment_ends_at_the_writers_zeros_and_never_reads_the_stale_records_after_them() {
        // Records of one size: the stale ones line up with where the next
        // live ones would go, the case that needs care.
        let lives: Vec<Vec<u8>> = (10..=12).map(|l| live(l, 0)).collect();
        let stale: Vec<Vec<u8>> = (1..=6).map(rec).collect();
        assert_eq!(lives[0].len(), stale[0].len());
        let end = SEGMENT_HEADER_LEN + 3 * lives[0].len();
        // As the writer leaves it: 20 zeros after the last record (over the
        // header of the stale record there), then whole stale records.
        let mut data = recycled(&lives, 0, &stale);
        data[end..end + RECORD_HEADER_LEN].fill(0);
        let mut seen = Vec::new();
        let h = read_segment_header(Path::new("x"), &data).unwrap().unwrap();
        let s = scan_segment(Path::new("x"), &data, &h, 0, |lsn, _, _| {
            seen.push(lsn);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![10, 11, 12], "only this segment's records");
        assert_eq!((s.end as usize, s.torn, s.sealed), (end, None, None), "a clean end, not a torn tail");
        // The zeros lost (a power cut kept the stale page): a whole stale
        // record where record 13 would be ends the log as a torn tail of
        // one record header, which repair zeros; it is not read.
        let data = recycled(&lives, 0, &stale);
        let s = scan3(&data).unwrap();
        assert_eq!((s.records, s.last_lsn), (3, 12));
        let t = s.torn.unwrap();
        assert_eq!((t.offset as usize, t.bytes as usize, t.dropped_records), (end, RECORD_HEADER_LEN, 0));
        // Even a stale record that the file's earlier use bound to it as
        // a recycled segment of another number, with an LSN it expects.
        let other = super::super::encode_record_in(13, &[Op::Drop { id: 1300 }], 0, 1);
        let s = scan3(&recycled(&lives, 0, &[other])).unwrap();
        assert_eq!((s.records, s.torn.unwrap().dropped_records), (3, 0));
        // In a format-2 segment, stale records after the end would be
        // damage (a record out of order): why a recycled file says so.
        let mut v2 = segment_header(10, 2, 0).to_vec();
        for l in 10..=12 {
            v2.extend_from_slice(&rec(l));
        }
        v2.extend_from_slice(&stale[0]);
        v2.resize(v2.len() + 64, 0);
        let h2 = read_segment_header(Path::new("x"), &v2).unwrap().unwrap();
        let err = scan_segment(Path::new("x"), &v2, &h2, 0, |_, _, _| Ok(())).unwrap_err();
        assert!(format!("{err}").contains("record has LSN 1, expected 13"), "{err}");
        // Records not bound to the segment (format 2's, the same bytes) are
        // not its records.
        let s = scan3(&recycled(&[rec(10)], RECORD_HEADER_LEN, &[])).unwrap();
        assert_eq!((s.records, s.torn.unwrap().offset as usize), (0, SEGMENT_HEADER_LEN));
    }

    #[test]
    fn a_recycled_segments_torn_tail_reaches_its_own_records_not_the_stale_ones() {
        let a = live(10, 0);
        let stale: Vec<Vec<u8>> = (1..=6).map(rec).collect();
        // A kill in the middle of record 11: its first bytes, then stale.
        let torn11 = live(11, 0)[..30].to_vec();
        let data = recycled(&[a.clone(), torn11], 0, &stale);
        let t = scan3(&data).unwrap().torn.unwrap();
        assert_eq!((t.offset as usize, t.bytes as usize, t.dropped_records), (48 + a.len(), RECORD_HEADER_LEN, 0));
        // A power cut lost record 11's page (stale bytes there) but kept
        // record 12, written before any fsync covered 11: 12 is dropped,
        // and the tail reaches to its end (repair zeros it: the LSN will be
        // used again), not to the end of the file.
        let b = live(11, 1);
        let c = live(12, 2);
        let mut tail = stale[0][..b.len()].to_vec();
        tail.extend_from_slice(&c);
        tail.resize(tail.len() + RECORD_HEADER_LEN, 0);
        let data = recycled(&[a.clone(), tail], 0, &stale);
        let t = scan3(&data).unwrap().torn.unwrap();
        assert_eq!(t.offset as usize, 48 + a.len());
        assert_eq!((t.bytes as usize, t.dropped_records), (b.len() + c.len(), 1));
        // The same hole with zeros in it (the trailing zeros of an earlier
        // fsync reached the disk, record 11 did not).
        let mut tail = vec![0u8; b.len()];
        tail.extend_from_slice(&c);
        let data = recycled(&[a.clone(), tail], RECORD_HEADER_LEN, &stale);
        let t = scan3(&data).unwrap().torn.unwrap();
        assert_eq!((t.bytes as usize, t.dropped_records), (b.len() + c.len(), 1));
        // Record 12 written after 11 was fsynced (gap 1) proves the hole
        // was on disk: corruption, as in format 2.
        let mut tail = vec![0u8; b.len()];
        tail.extend_from_slice(&live(12, 1));
        let data = recycled(&[a, tail], RECORD_HEADER_LEN, &stale);
        assert!(matches!(scan3(&data), Err(Error::Corruption { .. })));
    }

    #[test]
    fn a_recycled_segments_stale_bytes_never_pass_for_records_after_a_hole() {
        // Stale records are not searched for: a hole in front of them drops
        // nothing and proves nothing, even with DURABLE far past them.
        let a = live(10, 0);
        let stale: Vec<Vec<u8>> = (1..=6).map(|l| encode_record_with_gap(l, &[Op::Drop { id: l }], 1)).collect();
        let data = recycled(&[a.clone(), vec![0xEE; 25]], 0, &stale);
        let h = read_segment_header(Path::new("x"), &data).unwrap().unwrap();
        let s = scan_segment(Path::new("x"), &data, &h, 9, |_, _, _| Ok(())).unwrap();
        let t = s.torn.unwrap();
        assert_eq!((s.records, t.dropped_records, t.bytes as usize), (1, 0, RECORD_HEADER_LEN));
        // Nor is a record framed inside an old message's payload, whatever
        // LSN and durable gap it claims: found after a clean end, it would
        // have refused the queue as corruption.
        let forged = encode_record_with_gap(11 + (1 << 31), &[Op::Drop { id: 1 }], 1);
        let mut payload = vec![0x55u8; 40];
        payload.extend_from_slice(&forged);
        let data = recycled(std::slice::from_ref(&a), RECORD_HEADER_LEN, &[payload]);
        let s = scan3(&data).unwrap();
        assert_eq!((s.records, s.torn), (1, None), "a clean end");
        // The writer never leaves a stale record as the first of a
        // recycled segment (recycling zeros the 20 bytes after the header):
        // if one is there, nothing is read.
        let data = recycled(&[], 0, &stale);
        let s = scan3(&data).unwrap();
        assert_eq!((s.records, s.torn.unwrap().offset as usize), (0, SEGMENT_HEADER_LEN));
        // An unused recycled segment holds a record after LSN 9 only if
        // one bound to it was written into it.
        assert!(!holds_record_after(&data, SEGMENT_HEADER_LEN, 9, Some(2)));
        assert!(holds_record_after(&data, SEGMENT_HEADER_LEN, 5, None), "the stale ones, unbound");
        assert!(!holds_record_after(&data, SEGMENT_HEADER_LEN, 5, Some(2)));
        let data = recycled(&[], 0, &[live(10, 0)]);
        assert!(holds_record_after(&data, SEGMENT_HEADER_LEN, 9, Some(2)));
    }

    #[test]
    fn segment_header_checks_version_length_and_crc() {
        let good = segment_header(5, 9, 65536);
        let mut data = good.to_vec();
        data.resize(4096, 0);
        let h = read_segment_header(Path::new("x"), &data).unwrap().unwrap();
        assert_eq!((h.version, h.first_lsn, h.seq, h.size), (2, 5, Some(9), Some(65536)));
        assert!(!h.is_recycled());
        // Format 3 (recycled) has the same layout.
        let mut v3 = super::super::segment_header_as(3, 5, 9, 65536).to_vec();
        v3.resize(4096, 0);
        let h3 = read_segment_header(Path::new("x"), &v3).unwrap().unwrap();
        assert_eq!((h3.version, h3.first_lsn, h3.seq, h3.size), (3, 5, Some(9), Some(65536)));
        assert!(h3.is_recycled());
        // A newer one is refused, naming what this build reads.
        let mut v4 = data.clone();
        v4[8..12].copy_from_slice(&4u32.to_le_bytes());
        let err = read_segment_header(Path::new("x"), &v4).unwrap_err();
        assert!(format!("{err}").contains("version 4 is newer than this ringq reads (3)"), "{err}");
        // Version 0 is never written: damage.
        let mut v0 = data.clone();
        v0[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(read_segment_header(Path::new("x"), &v0).is_err());
        // A flipped bit with nothing after it: a torn creation.
        let mut torn = data.clone();
        torn[20] ^= 1;
        assert_eq!(read_segment_header(Path::new("x"), &torn).unwrap(), None);
        // ... but with records after it, damage.
        torn[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + rec(5).len()].copy_from_slice(&rec(5));
        assert!(read_segment_header(Path::new("x"), &torn).is_err());
    }
}

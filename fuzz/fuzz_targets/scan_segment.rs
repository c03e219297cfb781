//! `ringq::journal::scan_segment` and `read_segment_header`, journal formats
//! 2, 3 (recycled) and 1.
//!
//! Input: a control byte, then (control mode 3 only) 8 bytes of first LSN,
//! then everything after a segment header:
//!
//! - control bit 0: 0 = format 2 (48-byte `segment_header(first, 1, 0)`),
//!   1 = format 1 (32-byte `segment_header_v1(first)`);
//! - bits 1-2: the header's first LSN: 0/1 = 1, 2 = 2^40, 3 = the next 8
//!   input bytes (little-endian; any value, 0 and `u64::MAX` included);
//! - bits 3-7: `k`; the DURABLE marker values tried are 0, `first + k` and
//!   `u64::MAX`.
//!
//! The header goes through `read_segment_header` (which must give it back
//! exactly; a format-1 header with first LSN 0 must be refused as
//! corruption at offset 16, and `scan_segment` must refuse any header with
//! first LSN 0), then the image goes through `scan_segment` once per marker
//! value; each accepted body goes through `decode_txn`. Checks: nothing
//! panics; the result agrees with the callbacks (LSNs first, first+1, ...,
//! never `u64::MAX`, records back to back from the header on, `records`,
//! `last_lsn`, `end`, `proven_durable` = the highest `lsn - gap` of the
//! accepted format-2 records, none with a gap above its LSN); a torn tail starts at `end`, is non-empty, lies inside the
//! image and ends at its last non-zero byte; a seal (format 2 only) follows
//! the last record, lies inside the image, ends the scan (`end` = just past
//! it) and names `last_lsn + 1` and the sequence number in its body; a clean
//! end is followed by zeros only. Across marker values the same records are
//! accepted and the verdict is monotone: a higher marker may only turn a
//! torn tail into corruption, never anything else.
//!
//! Every format-2 image is also scanned as format 3 (a recycled segment,
//! number 1: the same bytes under a format-3 header, and once repaired with
//! its records' CRCs seeded with the number), whose own checks differ
//! where the rest of the file is not zeros (a clean end is the writer's 20
//! zero bytes, a torn tail reaches its last record or one record header).
//! Both go through every check above, with format 3's own rules for a
//! clean end and a torn tail.
//!
//! Random bytes almost never carry a valid CRC32C, so the image is scanned
//! as is (corruption, torn-tail and resync logic), and once more with its
//! record headers "repaired" by `repair` (see there), so record bodies,
//! seals, durable gaps, holes before valid records and the end-of-log logic
//! are reached. The raw input also goes through `read_segment_header` (and,
//! if that accepts it, `scan_segment`).
//!
//! This target found LSN overflows in `src/journal/scan.rs` (a durable gap
//! above its LSN, a format-1 header with first LSN 0, a record with LSN
//! `u64::MAX`; see `fuzz/README.md` and `docs/format.md`, notes 21 and 24).
//! They are fixed, so nothing here steps around them any more: the inputs
//! in `regressions/scan_segment/` must pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::error::Error;
use ringq::journal::{
    GAP_UNKNOWN, RECORD_HEADER_LEN, RECORD_SEAL, RECORD_TXN, SEAL_LEN, SEGMENT_HEADER_LEN, SegmentHeader, SegmentScan, read_segment_header,
    scan_segment, segment_header, segment_header_as, segment_header_v1,
};
use std::path::Path;

const PATH: &str = "fuzz.log";

/// One accepted record, as the callback saw it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    lsn: u64,
    off: u64,
    len: usize,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn scan_once(image: &[u8], h: &SegmentHeader, on_disk: u64) -> (Vec<Seen>, Option<SegmentScan>) {
    let mut seen = Vec::new();
    let res = scan_segment(Path::new(PATH), image, h, on_disk, |lsn, off, body| {
        let _ = ringq::record::decode_txn(body);
        seen.push(Seen { lsn, off, len: body.len() });
        Ok(())
    });
    (seen, res.ok())
}

/// Everything one scan must satisfy on its own.
fn check_one(image: &[u8], h: &SegmentHeader, seen: &[Seen], res: Option<&SegmentScan>) {
    let hlen = h.header_len() as u64;
    // Where the records seen so far end (the header's end if none).
    let mut rec_end = hlen;
    let mut proven = 0u64;
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(Some(r.lsn), h.first_lsn.checked_add(i as u64), "callback LSNs out of order");
        assert_ne!(r.lsn, u64::MAX, "accepted a record with LSN u64::MAX");
        assert_eq!(r.off, rec_end, "records are not back to back from the header on");
        rec_end = r.off + (RECORD_HEADER_LEN + r.len) as u64;
        assert!(rec_end as usize <= image.len(), "accepted record runs past the image");
        let o = r.off as usize;
        assert_eq!(u64_at(image, o + 8), r.lsn, "callback LSN is not the record's");
        assert_eq!(image[o + 16], RECORD_TXN, "a non-transaction record reached the callback");
        let gap = u32::from_le_bytes([image[o + 17], image[o + 18], image[o + 19], 0]);
        if h.version == 1 {
            assert_eq!(gap, 0, "format-1 record with non-zero padding accepted");
        } else if gap < GAP_UNKNOWN {
            let d = r.lsn.checked_sub(u64::from(gap)).expect("accepted a record whose durable gap exceeds its LSN");
            proven = proven.max(d);
        }
    }
    let Some(s) = res else {
        return;
    };
    assert_eq!(s.first_lsn, h.first_lsn);
    assert_eq!(s.records, seen.len() as u64, "records != callbacks");
    // `scan_segment` refuses first LSN 0, so `first - 1` does not wrap.
    assert_eq!(Some(s.last_lsn), (h.first_lsn - 1).checked_add(s.records), "last_lsn != first_lsn + records - 1");
    assert!(s.end as usize <= image.len(), "end past the image");
    assert_eq!(s.proven_durable, proven, "proven_durable is not the highest lsn - gap");
    assert!(s.torn.is_none() || s.sealed.is_none(), "both torn and sealed");
    match &s.sealed {
        Some(seal) => {
            assert!(h.version >= 2, "a format-1 segment reported a seal");
            assert_eq!(seal.offset, rec_end, "the seal does not follow the last record");
            assert_eq!(seal.offset + SEAL_LEN as u64, s.end, "end is not just past the seal");
            let o = seal.offset as usize;
            assert!(o + SEAL_LEN <= image.len(), "the seal runs past the image");
            assert_eq!(image[o + 16], RECORD_SEAL, "the seal is not a seal record");
            assert_eq!(Some(seal.next_lsn), s.last_lsn.checked_add(1), "seal names the wrong next LSN");
            assert_eq!(seal.next_seq, u64_at(image, o + RECORD_HEADER_LEN), "seal names the wrong segment");
        }
        None => assert_eq!(s.end, rec_end, "end is not just past the last record"),
    }
    match &s.torn {
        Some(t) => {
            assert_eq!(t.offset, s.end, "torn tail does not start at end");
            assert!(t.bytes > 0, "empty torn tail");
            let stop = t.offset.checked_add(t.bytes).expect("torn tail overflows") as usize;
            assert!(stop <= image.len(), "torn tail runs past the image");
            if h.is_recycled() {
                let header = (RECORD_HEADER_LEN as u64).min(image.len() as u64 - t.offset);
                assert!(t.bytes >= header, "a recycled segment's torn tail is shorter than a record header");
            } else {
                assert_ne!(image[stop - 1], 0, "torn tail does not end at a non-zero byte");
                assert!(image[stop..].iter().all(|b| *b == 0), "non-zero bytes after the torn tail");
            }
            assert_eq!(t.path, Path::new(PATH));
        }
        None if s.sealed.is_none() && h.is_recycled() => {
            let rest = &image[s.end as usize..];
            assert!(
                rest.len() < RECORD_HEADER_LEN || rest[..RECORD_HEADER_LEN].iter().all(|b| *b == 0),
                "a recycled segment's clean end is not the writer's zeros"
            );
        }
        None if s.sealed.is_none() => {
            assert!(image[s.end as usize..].iter().all(|b| *b == 0), "a clean end with non-zero bytes after it");
        }
        None => {}
    }
}

fn same(a: &SegmentScan, b: &SegmentScan) -> bool {
    (a.first_lsn, a.last_lsn, a.end, a.records, &a.torn, a.sealed, a.proven_durable)
        == (b.first_lsn, b.last_lsn, b.end, b.records, &b.torn, b.sealed, b.proven_durable)
}

/// Scans with each marker value (ascending) and checks each scan and how
/// they relate.
fn scan(image: &[u8], h: &SegmentHeader, markers: &[u64]) {
    let runs: Vec<_> = markers.iter().map(|m| scan_once(image, h, *m)).collect();
    for (seen, res) in &runs {
        check_one(image, h, seen, res.as_ref());
    }
    for w in runs.windows(2) {
        let ((lo_seen, lo), (hi_seen, hi)) = (&w[0], &w[1]);
        // The marker only matters once the records end: same records.
        assert_eq!(lo_seen, hi_seen, "the DURABLE marker changed which records are accepted");
        match (lo, hi) {
            (Some(a), Some(b)) => assert!(same(a, b), "the DURABLE marker changed the scan: {a:?} vs {b:?}"),
            // More known to be on disk: a torn tail may become corruption.
            (Some(a), None) => assert!(a.torn.is_some(), "the DURABLE marker refused a clean scan: {a:?}"),
            (None, Some(b)) => panic!("a higher DURABLE marker accepted what a lower one refused: {b:?}"),
            (None, None) => {}
        }
    }
}

/// Rewrites the record headers (from the first on, as long as they fit) so
/// that they check out, steered by the fuzzed kind byte `k` of each:
///
/// - an all-zero record header is the end of the log: stop;
/// - `k & 0xC0 == 0x40`: a hole standing for the next LSN, left as fuzzed
///   (`k & 0x20`: zeroed instead, as a page lost in a power cut);
/// - `k & 0xC0 == 0xC0`: the fuzzed LSN is kept (else: the next LSN);
/// - format 2 and `k & 0x3F == 2`: a seal (body length 8, gap 0);
/// - otherwise a transaction: format 2 keeps the fuzzed 3-byte durable gap
///   (one above the LSN makes it invalid), format 1 gets zero padding.
fn repair(image: &mut [u8], hlen: usize, version: u32, first: u64, seed: Option<u64>) {
    let mut off = hlen;
    let mut lsn = first;
    while off + RECORD_HEADER_LEN <= image.len() {
        if image[off..off + RECORD_HEADER_LEN].iter().all(|b| *b == 0) {
            return;
        }
        let k = image[off + 16];
        let seal = version >= 2 && k & 0x3F == RECORD_SEAL;
        if seal {
            image[off..off + 4].copy_from_slice(&8u32.to_le_bytes());
        }
        let len = u32::from_le_bytes(image[off..off + 4].try_into().unwrap()) as usize;
        let Some(end) = (off + RECORD_HEADER_LEN).checked_add(len) else {
            return;
        };
        if end > image.len() {
            return;
        }
        if k & 0xC0 == 0x40 {
            if k & 0x20 != 0 {
                image[off..end].fill(0);
            }
        } else {
            if k & 0xC0 != 0xC0 {
                image[off + 8..off + 16].copy_from_slice(&lsn.to_le_bytes());
            }
            if seal {
                image[off + 16] = RECORD_SEAL;
                image[off + 17..off + 20].fill(0);
            } else {
                image[off + 16] = RECORD_TXN;
                if version == 1 {
                    image[off + 17..off + 20].fill(0);
                }
            }
            // Format 3 binds records to the segment: its number first.
            let start = match seed {
                Some(q) => crc32c::crc32c_append(crc32c::crc32c(&q.to_le_bytes()), &image[off..off + 4]),
                None => crc32c::crc32c(&image[off..off + 4]),
            };
            let crc = crc32c::crc32c_append(start, &image[off + 8..end]);
            image[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        }
        lsn = lsn.wrapping_add(1);
        off = end;
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw input as a whole segment file.
    if let Ok(Some(h)) = read_segment_header(Path::new(PATH), data) {
        assert!((1..=3).contains(&h.version), "accepted header version {}", h.version);
        assert!(h.header_len() <= data.len(), "accepted header longer than the file");
        assert_eq!(h.seq.is_some(), h.version >= 2);
        if !h.is_unused() {
            scan(data, &h, &[0, u64::MAX]);
        }
    }

    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let v1 = ctl & 1 != 0;
    let (first, body) = match (ctl >> 1) & 3 {
        2 => (1u64 << 40, rest),
        3 if rest.len() >= 8 => (u64_at(rest, 0), &rest[8..]),
        3 => return,
        _ => (1, rest),
    };
    let mut image = if v1 { segment_header_v1(first).to_vec() } else { segment_header(first, 1, 0).to_vec() };
    image.extend_from_slice(body);
    let h = match read_segment_header(Path::new(PATH), &image) {
        Ok(Some(h)) => h,
        // No ringq writes a format-1 header with first LSN 0 (LSNs start at 1).
        Err(Error::Corruption { offset: 16, .. }) if v1 && first == 0 => return,
        other => panic!("a valid header was not read back: {other:?}"),
    };
    let want = if v1 {
        SegmentHeader { version: 1, first_lsn: first, seq: None, size: None }
    } else {
        SegmentHeader { version: 2, first_lsn: first, seq: Some(1), size: Some(0) }
    };
    assert_eq!(h, want, "header read back differs");
    if h.is_unused() {
        // A prepared, never-used segment: recovery keeps it as a spare and
        // never scans it; `scan_segment` refuses it (no record has LSN 0).
        let res = scan_segment(Path::new(PATH), &image, &h, 0, |_, _, _| panic!("a record of an unused segment"));
        assert!(matches!(res, Err(Error::Corruption { offset: 16, .. })), "an unused segment was scanned: {res:?}");
        return;
    }
    let markers = [0, first.saturating_add(u64::from(ctl >> 3)), u64::MAX];
    scan(&image, &h, &markers);

    let mut repaired = image.clone();
    repair(&mut repaired, h.header_len(), h.version, first, None);
    if repaired != image {
        scan(&repaired, &h, &markers);
    }
    if v1 {
        return;
    }
    // The same bytes as a recycled segment (format 3, number 1): as they
    // are (records framed for format 2 are not its records), and repaired
    // with records framed for it. (Not compared with format 2: bytes that
    // libFuzzer made a valid record for one format are not one for the
    // other, so the two read different logs.)
    let h3 = SegmentHeader { version: 3, ..h };
    let mut v3 = image.clone();
    v3[..SEGMENT_HEADER_LEN].copy_from_slice(&segment_header_as(3, first, 1, 0));
    assert_eq!(read_segment_header(Path::new(PATH), &v3).ok().flatten(), Some(h3), "format-3 header read back differs");
    scan(&v3, &h3, &markers);
    let mut repaired3 = v3.clone();
    repair(&mut repaired3, h3.header_len(), 3, first, Some(1));
    scan(&repaired3, &h3, &markers);
});

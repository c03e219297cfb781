//! `ringq::journal::scan_segment` and `read_segment_header`.
//!
//! The fuzz input is everything after a valid segment header for first LSN
//! 1; each record body the scan accepts goes through `decode_txn`. Checks:
//! nothing panics, and the scan's result agrees with what it reported to the
//! callback (LSNs 1, 2, ... in order at increasing offsets, `records`,
//! `last_lsn`, `end`, and a torn tail that lies inside the image).
//!
//! Random bytes almost never carry a valid CRC32C, so the input is scanned
//! twice: as is (corruption, torn-tail and resync logic), and once more with
//! every record header that fits "repaired" (kind 1, zero padding, the next
//! LSN, a correct CRC), so record bodies and the end-of-log logic are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::journal::{
    RECORD_HEADER_LEN, RECORD_TXN, SEGMENT_HEADER_LEN, read_segment_header, scan_segment,
    segment_header,
};
use std::path::Path;

fn scan(image: &[u8]) {
    let path = Path::new("fuzz.wal");
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let res = scan_segment(path, image, 1, |lsn, off, body| {
        let _ = ringq::record::decode_txn(body);
        seen.push((lsn, off));
        Ok(())
    });
    for (i, (lsn, off)) in seen.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1, "callback LSNs out of order");
        if i > 0 {
            assert!(*off > seen[i - 1].1, "callback offsets do not increase");
        } else {
            assert_eq!(*off, SEGMENT_HEADER_LEN as u64, "first record offset");
        }
    }
    let Ok(s) = res else {
        return;
    };
    assert_eq!(s.first_lsn, 1);
    assert_eq!(s.records, seen.len() as u64, "records != callbacks");
    assert_eq!(s.last_lsn, s.records, "last_lsn != first_lsn + records - 1");
    assert!(s.end as usize <= image.len(), "end past the image");
    if let Some(t) = &s.torn {
        assert_eq!(t.offset, s.end, "torn tail does not start at end");
        assert!(t.bytes > 0, "empty torn tail");
        assert!(
            t.offset + t.bytes <= image.len() as u64,
            "torn tail runs past the image"
        );
    }
}

/// Rewrites every record header that fits so that it is valid.
fn repair(image: &mut [u8]) {
    let mut off = SEGMENT_HEADER_LEN;
    let mut lsn = 1u64;
    while off + RECORD_HEADER_LEN <= image.len() {
        let len = u32::from_le_bytes(image[off..off + 4].try_into().unwrap()) as usize;
        let Some(end) = (off + RECORD_HEADER_LEN).checked_add(len) else {
            return;
        };
        if end > image.len() {
            return;
        }
        image[off + 8..off + 16].copy_from_slice(&lsn.to_le_bytes());
        image[off + 16] = RECORD_TXN;
        image[off + 17..off + 20].fill(0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&image[off..off + 4]), &image[off + 8..end]);
        image[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        lsn += 1;
        off = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = read_segment_header(Path::new("fuzz.wal"), data);

    let mut image = segment_header(1).to_vec();
    image.extend_from_slice(data);
    scan(&image);

    let mut repaired = image.clone();
    repair(&mut repaired);
    if repaired != image {
        scan(&repaired);
    }
});

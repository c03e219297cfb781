//! `ringq::snapshot::verify` on arbitrary bytes: decodes a snapshot image
//! completely (header, every topic, message and dead letter, rebuilding the
//! queue state from them). Checks: it never panics.
//!
//! Random bytes almost never carry valid CRC32Cs, so the input is verified
//! twice: as is (header checks), and once more with its header repaired
//! (magic, header length, body length = the rest of the input, body CRC,
//! header CRC; version and LSN as fuzzed), so the body decoder is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::snapshot::{SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, verify};
use std::path::Path;

/// Message slots must be below this; the default capacity (100,000).
const SLOT_LIMIT: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.snap");
    let _ = verify(path, data, SLOT_LIMIT);

    if data.len() < SNAPSHOT_HEADER_LEN {
        return;
    }
    let mut fixed = data.to_vec();
    let body_len = (fixed.len() - SNAPSHOT_HEADER_LEN) as u64;
    let body_crc = crc32c::crc32c(&fixed[SNAPSHOT_HEADER_LEN..]);
    let h = &mut fixed[..SNAPSHOT_HEADER_LEN];
    h[0..8].copy_from_slice(SNAPSHOT_MAGIC);
    h[12..16].copy_from_slice(&(SNAPSHOT_HEADER_LEN as u32).to_le_bytes());
    h[24..32].copy_from_slice(&body_len.to_le_bytes());
    h[32..36].copy_from_slice(&body_crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..36]);
    h[36..40].copy_from_slice(&hcrc.to_le_bytes());
    if fixed != data {
        let _ = verify(path, &fixed, SLOT_LIMIT);
    }
});

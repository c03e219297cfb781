//! `DURABLE`: how far the journal is known to be on disk.
//!
//! After every successful journal fsync the flusher writes the LSN it
//! covered here (a plain `pwrite`, no fsync of its own: a SIGKILL keeps it,
//! as the page cache survives; a power cut may lose the newest value, which
//! only makes recovery more lenient, never wrong). Recovery reads it to tell
//! a hole a power cut can leave (only in records *not yet* fsynced) from
//! damage to records that were on disk: a bad record at or below this LSN
//! with valid records after it is corruption. Records' own durable gaps say
//! the same for records written after an fsync; this file covers the records
//! written before it.
//!
//! Layout: two 32-byte slots, written alternately (a torn write spoils at
//! most one): magic `RINGQDUR` (8), LSN (u64), write counter (u64), CRC32C of
//! the preceding 24 bytes (u32), 4 zero bytes. The valid slot with the
//! higher LSN wins; no valid slot reads as 0.
//!
//! The file is read as its first 64 bytes, zero-filled if it is shorter:
//! exactly what a later write past its end leaves in front of that write
//! (a `pwrite` beyond the end of a file fills the gap with zeros). So a file
//! cut short reads the same before and after the writer extends it, and a
//! value `read` ignored never comes back. A slot is checked on its first 28
//! bytes (magic, LSN, counter, CRC); the 4 zero bytes are not.

use crate::storage;
use crate::types::Lsn;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const DURABLE_FILE: &str = "DURABLE";
const MAGIC: &[u8; 8] = b"RINGQDUR";
const SLOT: usize = 32;

fn encode(lsn: Lsn, counter: u64) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[0..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&lsn.to_le_bytes());
    b[16..24].copy_from_slice(&counter.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8; SLOT]) -> Option<(Lsn, u64)> {
    if &b[0..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[24..28].try_into().expect("4"));
    (crc32c::crc32c(&b[0..24]) == crc).then(|| {
        (u64::from_le_bytes(b[8..16].try_into().expect("8")), u64::from_le_bytes(b[16..24].try_into().expect("8")))
    })
}

/// The LSN a file image records: the higher of its valid slots, 0 if none.
/// Only the first 64 bytes count, and missing ones read as zeros (see the
/// module comment).
fn decode_file(data: &[u8]) -> Lsn {
    let mut image = [0u8; 2 * SLOT];
    let n = data.len().min(image.len());
    image[..n].copy_from_slice(&data[..n]);
    let (a, b) = image.split_at(SLOT);
    let slots = [decode(a.try_into().expect("32")), decode(b.try_into().expect("32"))];
    // LSNs only grow: the higher valid one is the newer.
    slots.into_iter().flatten().map(|(lsn, _)| lsn).max().unwrap_or(0)
}

/// The LSN a directory's `DURABLE` file records (0 if none).
pub fn read(dir: &Path) -> Lsn {
    let Ok(data) = std::fs::read(dir.join(DURABLE_FILE)) else { return 0 };
    decode_file(&data)
}

/// The writer side, owned by the flusher.
pub struct Marker {
    /// `None` once released (the engine closed).
    file: Option<File>,
    counter: u64,
    last: Lsn,
}

impl Marker {
    /// Opens (creating, 0600) the directory's `DURABLE` file.
    pub fn open(dir: &Path) -> std::io::Result<Marker> {
        let path = dir.join(DURABLE_FILE);
        let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => storage::create_file(&path)?,
            Err(e) => return Err(e),
        };
        Ok(Marker { file: Some(file), counter: 0, last: read(dir) })
    }

    /// Records that the journal is on disk up to `lsn` (never lowers it).
    pub fn record(&mut self, lsn: Lsn) {
        let Some(file) = &self.file else { return };
        if lsn <= self.last {
            return;
        }
        self.counter += 1;
        let at = (self.counter % 2) * SLOT as u64;
        if file.write_all_at(&encode(lsn, self.counter), at).is_ok() {
            self.last = lsn;
        }
    }

    /// Closes the file (the engine closed).
    pub fn release(&mut self) {
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_keeps_the_newest_valid_slot() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), 0);
        let mut m = Marker::open(dir.path()).unwrap();
        m.record(5);
        m.record(9);
        m.record(7); // never lowered
        assert_eq!(read(dir.path()), 9);
        // A torn newest slot: the other one still says how far it was.
        let path = dir.path().join(DURABLE_FILE);
        let mut data = std::fs::read(&path).unwrap();
        data[8] ^= 1; // slot 0 holds the second write (9)
        std::fs::write(&path, &data).unwrap();
        assert_eq!(read(dir.path()), 5);
    }

    /// Whatever the file holds, the writer's `record(x)` (x above what was
    /// read) reads back x, and the next one x + 1: no value `read` ignored
    /// comes back when the writer extends a short file.
    fn writer_reads_back_what_it_records(data: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DURABLE_FILE);
        std::fs::write(&path, data).unwrap();
        let before = read(dir.path());
        let mut zero_filled = data.to_vec();
        zero_filled.resize(zero_filled.len().max(2 * SLOT), 0);
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(DURABLE_FILE), &zero_filled).unwrap();
        assert_eq!(read(other.path()), before, "{} bytes: zero-filling changes what it says", data.len());
        let mut m = Marker::open(dir.path()).unwrap();
        m.record(before + 5);
        assert_eq!(read(dir.path()), before + 5, "{} bytes: first record", data.len());
        m.record(before + 6);
        assert_eq!(read(dir.path()), before + 6, "{} bytes: second record", data.len());
    }

    #[test]
    fn a_marker_cut_short_reads_the_same_before_and_after_the_writer_extends_it() {
        // The fuzzer's find (`regressions/durable_marker/short-slot0-resurrected.bin`):
        // 28 bytes holding a whole slot 0 (LSN 1000) but not its 4 zero
        // bytes. `read` said 0; the writer's first write (at offset 32)
        // filled bytes 28..32 with zeros and slot 0 said 1000 again, so the
        // next open found "records 4..=1000 missing" where this one had
        // found nothing wrong.
        let slot0 = encode(1000, 2);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DURABLE_FILE), &slot0[..28]).unwrap();
        assert_eq!(read(dir.path()), 1000, "the slot's checked bytes are all there");
        let mut m = Marker::open(dir.path()).unwrap();
        m.record(83); // lower: not written
        assert_eq!(read(dir.path()), 1000);
        m.record(1001);
        assert_eq!(read(dir.path()), 1001);
        // Every cut of a file with two valid slots (the newer in slot 0,
        // whose CRC ends in a zero byte) and of the fuzzer's file: what is
        // read is what zero-filling says, and the writer takes it from there.
        let mut crc_with_zero_byte = (1000..).map(|lsn| encode(lsn, 2)).find(|s| s[27] == 0).unwrap().to_vec();
        let older = u64::from_le_bytes(crc_with_zero_byte[8..16].try_into().unwrap()) - 1;
        crc_with_zero_byte.extend_from_slice(&encode(older, 1));
        let mut fuzzed = slot0[..28].to_vec();
        fuzzed.extend_from_slice(&[0xFF; 40]);
        for full in [crc_with_zero_byte, fuzzed] {
            for len in 0..=full.len() {
                writer_reads_back_what_it_records(&full[..len]);
            }
        }
    }
}

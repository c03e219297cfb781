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

fn decode(b: &[u8]) -> Option<(Lsn, u64)> {
    if b.len() < SLOT || &b[0..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[24..28].try_into().ok()?);
    (crc32c::crc32c(&b[0..24]) == crc).then(|| {
        (u64::from_le_bytes(b[8..16].try_into().expect("8")), u64::from_le_bytes(b[16..24].try_into().expect("8")))
    })
}

/// The LSN a directory's `DURABLE` file records (0 if none).
pub fn read(dir: &Path) -> Lsn {
    let Ok(data) = std::fs::read(dir.join(DURABLE_FILE)) else { return 0 };
    let a = decode(&data[..data.len().min(SLOT)]);
    let b = data.get(SLOT..).and_then(decode);
    // LSNs only grow: the higher valid one is the newer.
    [a, b].into_iter().flatten().map(|(lsn, _)| lsn).max().unwrap_or(0)
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
}

//! The `MANIFEST`: what a queue directory is and what it must hold.
//!
//! - the format version (checked first: a newer layout is refused before
//!   anything else is read);
//! - the epoch, +1 on every open;
//! - the slot limit: the most slots the queue has ever been allowed, so
//!   recovery can refuse a message id naming a slot no live queue could
//!   have used (a damaged or forged file must not make ringq allocate
//!   gigabytes);
//! - the instance id: 64 random bits fixed when the directory is created, so
//!   a delivery (or lease token) of one queue is never taken for one of
//!   another queue, or of an earlier queue at the same path;
//! - the journal anchor (format 2 segment the journal continued in at the
//!   last open or snapshot) and the newest snapshot's LSN: recovery checks
//!   both exist, so a deleted newest segment or snapshot is reported rather
//!   than silently replayed around.
//!
//! Written atomically (temp file, fsync, rename, directory fsync) at every
//! open and after every snapshot; never on the hot path.

use crate::error::{Error, Result};
use crate::storage;
use std::path::Path;

pub const MANIFEST_FILE: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"RINGQMAN";
/// Formats 4 and 5 have format 3's layout. Format 4 marks a queue whose
/// journal and snapshots may hold what format 4 added (meta tag 2,
/// operation tag 10, snapshot format 2), format 5 one whose journal may
/// hold operation tags 11 and 12 (checkout and ack ids as runs), so a build
/// that reads only an older format refuses the directory before it meets
/// them.
pub const MANIFEST_VERSION: u32 = 5;
const V1_LEN: usize = 24;
const V2_LEN: usize = 28;
const V3_LEN: usize = 52;

/// What the `MANIFEST` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    pub epoch: u64,
    /// Slots any message may use; `None` for a format-1 manifest.
    pub slot_limit: Option<u32>,
    /// 0 in manifests older than format 3 (one is made at the next open).
    pub instance_id: u64,
    /// Format-2 segment that must exist (0: none recorded).
    pub journal_anchor: u64,
    /// The newest snapshot must be at least this new (0: none recorded).
    pub snapshot_lsn: u64,
}

impl Manifest {
    /// The bound recovery checks slots against when opening with `capacity`.
    pub fn slot_bound(&self, capacity: usize) -> usize {
        match self.slot_limit {
            Some(l) => (l as usize).max(capacity),
            None => 1 << crate::types::SLOT_BITS,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(V3_LEN);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        data.extend_from_slice(&self.epoch.to_le_bytes());
        data.extend_from_slice(&self.slot_limit.unwrap_or(0).to_le_bytes());
        data.extend_from_slice(&self.instance_id.to_le_bytes());
        data.extend_from_slice(&self.journal_anchor.to_le_bytes());
        data.extend_from_slice(&self.snapshot_lsn.to_le_bytes());
        let crc = crc32c::crc32c(&data);
        data.extend_from_slice(&crc.to_le_bytes());
        data
    }
}

/// Writes `m` as the directory's manifest (format 5), atomically. Only a
/// manifest that `read` gives back as it is can be written: format 5, a slot
/// limit, a non-zero instance id (`read` refuses instance id 0 as damage);
/// anything else (`Manifest::default()`, or an older format as `read`
/// returned it, before `Engine::open` or `repair` upgrades it) is refused
/// with `Error::Invalid` and nothing is written.
pub fn write(dir: &Path, m: &Manifest) -> Result<()> {
    let mut wrong = Vec::new();
    if m.version != MANIFEST_VERSION {
        wrong.push(format!("format {} (only {MANIFEST_VERSION} is written)", m.version));
    }
    if m.slot_limit.is_none() {
        wrong.push("no slot limit".to_owned());
    }
    if m.instance_id == 0 {
        wrong.push("instance id 0".to_owned());
    }
    if !wrong.is_empty() {
        return Err(Error::Invalid(format!(
            "refusing to write a MANIFEST that would not read back as written: {}",
            wrong.join(", ")
        )));
    }
    storage::write_atomic(None, dir, MANIFEST_FILE, &m.encode())
        .map_err(|e| Error::storage("writing the manifest", dir.join(MANIFEST_FILE), e))
}

/// The format of a well-formed MANIFEST newer than this build reads (its
/// magic, and a CRC32C over all but its last 4 bytes in them): written by
/// a newer ringq, not damaged. `None` for anything else, damage included.
pub fn newer_format(dir: &Path) -> Option<u32> {
    let data = std::fs::read(dir.join(MANIFEST_FILE)).ok()?;
    newer_in(&data, MAGIC, MANIFEST_VERSION)
}

/// `data` as a file of ours that is a well-formed format newer than
/// `newest`: `magic`, a format above `newest` after it, and a CRC32C of
/// all but the last 4 bytes in them (the layout of every format so far).
pub(crate) fn newer_in(data: &[u8], magic: &[u8; 8], newest: u32) -> Option<u32> {
    if data.len() < 16 || &data[..8] != magic {
        return None;
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    let (body, crc) = data.split_at(data.len() - 4);
    (version > newest && crc32c::crc32c(body) == u32::from_le_bytes(crc.try_into().expect("4 bytes")))
        .then_some(version)
}

/// Reads the manifest: `None` if there is none.
pub fn read(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::storage("reading the manifest", &path, e)),
    };
    let bad = |off: u64, what: String| Error::corruption(&path, off, what);
    if data.len() < 12 || &data[0..8] != MAGIC {
        return Err(bad(0, "not a ringq manifest".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().expect("8"));
    let version = u32_at(8);
    let want = match version {
        1 => V1_LEN,
        2 => V2_LEN,
        3..=5 => V3_LEN,
        0 => return Err(bad(8, "manifest format 0 (no ringq writes it): damaged".into())),
        v => return Err(bad(8, format!("queue format {v} is newer than this ringq reads; upgrade ringq"))),
    };
    if data.len() != want {
        return Err(bad(0, format!("manifest of format {version} is {} bytes, not {want}", data.len())));
    }
    if crc32c::crc32c(&data[..want - 4]) != u32_at(want - 4) {
        return Err(bad(0, "manifest fails its CRC check".into()));
    }
    let mut m = Manifest { version, epoch: u64_at(12), ..Default::default() };
    if version >= 2 {
        m.slot_limit = Some(u32_at(20));
    }
    if version >= 3 {
        m.instance_id = u64_at(24);
        m.journal_anchor = u64_at(32);
        m.snapshot_lsn = u64_at(40);
        if m.instance_id == 0 {
            return Err(bad(24, "instance id 0 (no ringq writes it): damaged".into()));
        }
    }
    Ok(Some(m))
}

/// 64 random bits, never 0 (instance ids and lease-token salts).
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), 8, 0) };
    let mut v = u64::from_le_bytes(buf);
    if n != 8 {
        // No getrandom (very old kernels): the clock and pid, mixed.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        v = (t as u64) ^ ((std::process::id() as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        v = v.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (v >> 31);
    }
    if v == 0 { 1 } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let m = Manifest {
            version: MANIFEST_VERSION,
            epoch: 7,
            slot_limit: Some(100),
            instance_id: 0xdead_beef,
            journal_anchor: 4,
            snapshot_lsn: 99,
        };
        write(dir.path(), &m).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(m));
        let path = dir.path().join(MANIFEST_FILE);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(dir.path()).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn manifest_write_refuses_what_read_would_not_give_back() {
        // `write` used to write `Manifest::default()` (instance id 0) as a
        // format-3 file that `read` then refused as damaged.
        let dir = tempfile::tempdir().unwrap();
        let good =
            Manifest { version: MANIFEST_VERSION, epoch: 1, slot_limit: Some(8), instance_id: 7, ..Default::default() };
        let cases = [
            (Manifest::default(), "format 0"),
            (Manifest { instance_id: 0, ..good }, "instance id 0"),
            // A format-1 or format-2 manifest as `read` returns it.
            (Manifest { version: 1, slot_limit: None, instance_id: 0, ..good }, "no slot limit, instance id 0"),
            (Manifest { version: 2, instance_id: 0, ..good }, "format 2"),
            (Manifest { version: 3, ..good }, "format 3"),
            (Manifest { version: 4, ..good }, "format 4"),
            (Manifest { slot_limit: None, ..good }, "no slot limit"),
        ];
        for (m, what) in cases {
            match write(dir.path(), &m) {
                Err(Error::Invalid(msg)) => assert!(msg.contains(what), "{m:?}: {msg}"),
                other => panic!("{m:?} was not refused: {other:?}"),
            }
            assert!(!dir.path().join(MANIFEST_FILE).exists(), "{m:?}: something was written");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{m:?}: a temp file was left");
        }
        // What `Engine::open` writes, and an old one once it upgrades it.
        write(dir.path(), &good).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(good));
        let v1 = Manifest { version: 1, epoch: 4, ..Default::default() };
        let upgraded = Manifest { version: MANIFEST_VERSION, slot_limit: Some(0), instance_id: random_u64(), ..v1 };
        write(dir.path(), &upgraded).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(upgraded));
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}

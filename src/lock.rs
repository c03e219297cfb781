//! Ownership of a queue directory: an exclusive `flock` on `LOCK`, holding
//! the owner's pid. The kernel drops the lock when the owner dies, so a dead
//! owner never blocks the next opener. A second opener — another process or
//! another handle in this one — gets `Error::Locked` with the owner's pid.
//!
//! The `MANIFEST` holds the format version, an epoch that grows by one on
//! every open (lease tokens carry it, so they are unique across restarts) and
//! the slot limit: the most slots the queue has ever been allowed, so that
//! recovery can refuse a message id naming a slot no live queue could have
//! used (a damaged or forged file must not make ringq allocate gigabytes).

use crate::error::{Error, Result};
use crate::storage;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const LOCK_FILE: &str = "LOCK";
pub const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_MAGIC: &[u8; 8] = b"RINGQMAN";
pub const MANIFEST_VERSION: u32 = 2;
const MANIFEST_V1_LEN: usize = 24;
const MANIFEST_V2_LEN: usize = 28;

/// What the `MANIFEST` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub epoch: u64,
    /// Slots any message may use; `None` for a format-1 manifest or none.
    pub slot_limit: Option<u32>,
}

impl Manifest {
    /// The bound recovery checks slots against when opening with `capacity`.
    pub fn slot_bound(&self, capacity: usize) -> usize {
        match self.slot_limit {
            Some(l) => (l as usize).max(capacity),
            None => 1 << crate::types::SLOT_BITS,
        }
    }
}

/// Held for as long as the engine owns the directory.
pub struct DirLock {
    _file: File,
}

pub fn read_owner_pid(dir: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(dir.join(LOCK_FILE)).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// The pid of the process holding `dir` now, or `None` if nobody does (a
/// shared lock probe on `LOCK`, released at once; changes nothing).
pub fn locked_by(dir: &Path) -> Option<u32> {
    let file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(std::fs::TryLockError::WouldBlock) => Some(read_owner_pid(dir).unwrap_or(0)),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(storage::FILE_MODE)
            .open(&path)
            .map_err(|e| Error::storage("opening the lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked { path: dir.to_owned(), pid: read_owner_pid(dir) });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::storage("locking", &path, e));
            }
        }
        let written = (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        })();
        written.map_err(|e| Error::storage("writing the owner pid", &path, e))?;
        Ok(DirLock { _file: file })
    }
}

/// Reads and checks the manifest (if any) without changing it.
pub fn check_manifest(dir: &Path) -> Result<Manifest> {
    read_manifest(dir)
}

/// Writes the manifest back with the epoch increased and the slot limit
/// raised to `slots` (if higher), and returns the new epoch.
pub fn bump_epoch(dir: &Path, old: Manifest, slots: usize) -> Result<u64> {
    let path = dir.join(MANIFEST_FILE);
    let epoch = old.epoch + 1;
    let limit = old.slot_limit.unwrap_or(0).max(u32::try_from(slots).unwrap_or(u32::MAX));
    let mut data = Vec::with_capacity(MANIFEST_V2_LEN);
    data.extend_from_slice(MANIFEST_MAGIC);
    data.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
    data.extend_from_slice(&epoch.to_le_bytes());
    data.extend_from_slice(&limit.to_le_bytes());
    let crc = crc32c::crc32c(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    storage::write_atomic(None, dir, MANIFEST_FILE, &data)
        .map_err(|e| Error::storage("writing the manifest", &path, e))?;
    Ok(epoch)
}

/// Reads the manifest; a missing one reads as epoch 0 with no slot limit.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(e) => return Err(Error::storage("reading the manifest", &path, e)),
    };
    let bad = |off: u64, what: String| Error::corruption(&path, off, what);
    if data.len() < 12 || &data[0..8] != MANIFEST_MAGIC {
        return Err(bad(0, "not a ringq manifest".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4"));
    let version = u32_at(8);
    if version > MANIFEST_VERSION {
        return Err(bad(8, format!("queue format {version} is newer than this ringq reads; upgrade ringq")));
    }
    let want = if version == 1 { MANIFEST_V1_LEN } else { MANIFEST_V2_LEN };
    if version == 0 || data.len() != want {
        return Err(bad(0, format!("manifest of format {version} is {} bytes, not {want}", data.len())));
    }
    if crc32c::crc32c(&data[..want - 4]) != u32_at(want - 4) {
        return Err(bad(0, "manifest fails its CRC check".into()));
    }
    let epoch = u64::from_le_bytes(data[12..20].try_into().expect("8"));
    let slot_limit = (version >= 2).then(|| u32_at(20));
    Ok(Manifest { epoch, slot_limit })
}

/// Creates the directory with mode 0700 if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(storage::DIR_MODE)
        .create(dir)
        .map_err(|e| Error::storage("creating the queue directory", dir, e))?;
    Ok(())
}

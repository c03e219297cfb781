//! Ownership of a queue directory: an exclusive `flock` on `LOCK`, holding
//! the owner's pid. The kernel drops the lock when the owner dies, so a dead
//! owner never blocks the next opener. A second opener — another process or
//! another handle in this one — gets `Error::Locked` with the owner's pid.
//!
//! The `MANIFEST` holds the format version and an epoch that grows by one on
//! every open; lease tokens carry it, so they are unique across restarts.

use crate::error::{Error, Result};
use crate::storage;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const LOCK_FILE: &str = "LOCK";
pub const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_MAGIC: &[u8; 8] = b"RINGQMAN";
pub const MANIFEST_VERSION: u32 = 1;

/// Held for as long as the engine owns the directory.
pub struct DirLock {
    _file: File,
}

pub fn read_owner_pid(dir: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(dir.join(LOCK_FILE)).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
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

/// Checks the manifest (if any) without changing it.
pub fn check_manifest(dir: &Path) -> Result<()> {
    read_epoch(dir).map(|_| ())
}

/// Reads the manifest (if any), checks its version, writes it back with the
/// epoch increased, and returns the new epoch.
pub fn bump_epoch(dir: &Path) -> Result<u64> {
    let path = dir.join(MANIFEST_FILE);
    let epoch = read_epoch(dir)? + 1;
    let mut data = Vec::with_capacity(24);
    data.extend_from_slice(MANIFEST_MAGIC);
    data.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
    data.extend_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    storage::write_atomic(None, dir, MANIFEST_FILE, &data)
        .map_err(|e| Error::storage("writing the manifest", &path, e))?;
    Ok(epoch)
}

fn read_epoch(dir: &Path) -> Result<u64> {
    let path = dir.join(MANIFEST_FILE);
    match std::fs::read(&path) {
        Ok(data) => {
            let bad = |what: &str| Error::corruption(&path, 0, what.to_string());
            if data.len() != 24 || &data[0..8] != MANIFEST_MAGIC {
                return Err(bad("not a ringq manifest"));
            }
            if crc32c::crc32c(&data[0..20]) != u32::from_le_bytes(data[20..24].try_into().expect("4")) {
                return Err(bad("manifest fails its CRC check"));
            }
            let version = u32::from_le_bytes(data[8..12].try_into().expect("4"));
            if version > MANIFEST_VERSION {
                return Err(Error::corruption(
                    &path,
                    8,
                    format!("queue format {version} is newer than this ringq reads; upgrade ringq"),
                ));
            }
            Ok(u64::from_le_bytes(data[12..20].try_into().expect("8")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::storage("reading the manifest", &path, e)),
    }
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

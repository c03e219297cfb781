//! Ownership of a queue directory: an exclusive `flock` on `LOCK`, holding
//! the owner's pid. The kernel drops the lock when the owner dies, so a dead
//! owner never blocks the next opener. A second opener — another process or
//! another handle in this one — gets `Error::Locked` with the owner's pid.
//!
//! A `flock` belongs to the open file description, which a `fork()` child
//! shares: a child that outlived its parent would keep the directory locked.
//! So the lock's descriptor is registered with `fork`, which points it at
//! `/dev/null` in every child (the parent's lock stays; the child holds none).

use crate::error::{Error, Result};
use crate::storage;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const LOCK_FILE: &str = "LOCK";
/// Held for as long as the engine owns the directory.
pub struct DirLock {
    file: File,
    /// Where `fork` keeps the descriptor (see the module docs).
    slot: Option<usize>,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        crate::fork::unregister_lock_fd(self.slot, std::os::unix::io::AsRawFd::as_raw_fd(&self.file));
    }
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
        let slot = crate::fork::register_lock_fd(std::os::unix::io::AsRawFd::as_raw_fd(&file));
        Ok(DirLock { file, slot })
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

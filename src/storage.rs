//! Every file-system call that can fail on a full or failing disk goes through
//! here, so tests can inject the faults the machine cannot produce on demand
//! (ENOSPC, EIO) at exactly these points. Outside tests the injector is empty
//! and costs one relaxed atomic load per call.

use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Creating and preallocating a journal segment.
    SegmentCreate = 0,
    /// fsync of the journal.
    Sync = 1,
    /// Writing a snapshot file.
    SnapshotWrite = 2,
}

impl FaultPoint {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "segment_create" => Some(FaultPoint::SegmentCreate),
            "sync" => Some(FaultPoint::Sync),
            "snapshot_write" => Some(FaultPoint::SnapshotWrite),
            _ => None,
        }
    }
}

/// Injected faults: for each point, an errno and how many calls still fail
/// (`-1`: until cleared).
#[derive(Default)]
pub struct Faults {
    armed: AtomicBool,
    table: Mutex<[(i32, i64); 3]>,
}

impl Faults {
    pub fn set(&self, point: FaultPoint, errno: i32, count: i64) {
        let mut t = self.table.lock();
        t[point as usize] = (errno, count);
        self.armed.store(t.iter().any(|(_, c)| *c != 0), Ordering::Release);
    }

    pub fn check(&self, point: FaultPoint) -> io::Result<()> {
        if !self.armed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut t = self.table.lock();
        let (errno, count) = &mut t[point as usize];
        if *count == 0 {
            return Ok(());
        }
        if *count > 0 {
            *count -= 1;
        }
        Err(io::Error::from_raw_os_error(*errno))
    }
}

pub(crate) const FILE_MODE: u32 = 0o600;
pub(crate) const DIR_MODE: u32 = 0o700;

/// Opens a new file with mode 0600 for writing.
pub(crate) fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// Creates `path`, reserves `size` bytes on disk (so writes through a mapping
/// can never hit ENOSPC as a SIGBUS later) and writes `header` at offset 0.
pub(crate) fn create_segment(faults: &Faults, path: &Path, size: usize, header: &[u8]) -> io::Result<File> {
    faults.check(FaultPoint::SegmentCreate)?;
    let file = create_file(path)?;
    let result = (|| {
        // SAFETY: plain syscall on a valid fd; arguments are in range.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        (&file).write_all(header)?;
        file.sync_data()
    })();
    match result {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

/// fdatasync of a journal segment. On Linux this also writes back pages
/// dirtied through a shared mapping of the file.
pub(crate) fn sync_file(faults: &Faults, file: &File) -> io::Result<()> {
    faults.check(FaultPoint::Sync)?;
    file.sync_data()
}

/// fsync of a directory, so a create, rename or unlink inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `data` to `dir/name` atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_atomic(faults: Option<&Faults>, dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.tmp{n}"));
    let result = (|| {
        if let Some(f) = faults {
            f.check(FaultPoint::SnapshotWrite)?;
        }
        let mut file = create_file(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

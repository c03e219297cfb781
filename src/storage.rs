//! Every file-system call that can fail on a full or failing disk goes through
//! here, so tests can inject the faults the machine cannot produce on demand
//! (ENOSPC, EIO) at exactly these points. Outside tests the injector is empty
//! and costs one relaxed atomic load per call.

use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Creating and preallocating a journal segment (prepared ahead, or by a roll).
    SegmentCreate = 0,
    /// fsync of the journal.
    Sync = 1,
    /// Writing a snapshot file.
    SnapshotWrite = 2,
    /// Writing a journal record with `pwrite` (records of at least
    /// `journal::WRITE_MIN` bytes): the injected failure comes after half
    /// the record was written, as a short write that then failed would.
    /// The write of zeros that undoes it checks the same point.
    JournalWrite = 3,
    /// Writing the `POLICIES` file (`set_topic_policy`).
    PoliciesWrite = 4,
}

impl FaultPoint {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "segment_create" => Some(FaultPoint::SegmentCreate),
            "sync" => Some(FaultPoint::Sync),
            "snapshot_write" => Some(FaultPoint::SnapshotWrite),
            "journal_write" => Some(FaultPoint::JournalWrite),
            "policies_write" => Some(FaultPoint::PoliciesWrite),
            _ => None,
        }
    }
}

/// Injected faults: for each point, an errno and how many calls still fail
/// (`-1`: until cleared).
#[derive(Default)]
pub struct Faults {
    armed: AtomicBool,
    table: Mutex<[(i32, i64); 5]>,
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

/// fdatasync of a journal segment. On Linux this also writes back pages
/// dirtied through a shared mapping of the file.
pub(crate) fn sync_file(faults: &Faults, file: &File) -> io::Result<()> {
    faults.check(FaultPoint::Sync)?;
    file.sync_data()?;
    observe(|o| o.file_synced(file));
    Ok(())
}

/// fdatasync of a file the journal is preparing (its own fault point,
/// `SegmentCreate`, is checked by the caller).
pub(crate) fn sync_new_file(file: &File) -> io::Result<()> {
    file.sync_data()?;
    observe(|o| o.file_synced(file));
    Ok(())
}

/// fsync of a directory, so a create, rename or unlink inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    observe(|o| o.dir_synced(dir));
    Ok(())
}

/// Removes a file (not durable until the directory is synced).
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    observe(|o| o.removing(path));
    fs::remove_file(path)
}

/// What reached the disk, as fsync and directory fsync report it: the
/// crash-consistency test (`tests/crash_consistency.rs`) keeps a model of
/// the durable disk with it and "cuts the power" by discarding the rest.
/// Every fsync, directory fsync and removal of the engine goes through this
/// module, so the model sees all of them.
pub trait Observer: Send + Sync {
    /// `file` was fsynced: its content now is durable.
    fn file_synced(&self, file: &File);
    /// `dir` was fsynced: its entries now are durable.
    fn dir_synced(&self, dir: &Path);
    /// `path` is about to be removed.
    fn removing(&self, path: &Path);
}

static OBSERVED: AtomicBool = AtomicBool::new(false);
static OBSERVER: Mutex<Option<std::sync::Arc<dyn Observer>>> = Mutex::new(None);

/// Installs (or with `None` removes) the process-wide observer. A test hook:
/// off, each call costs one relaxed load.
pub fn set_observer(o: Option<std::sync::Arc<dyn Observer>>) {
    let mut g = OBSERVER.lock();
    OBSERVED.store(o.is_some(), Ordering::Release);
    *g = o;
}

fn observe(f: impl FnOnce(&dyn Observer)) {
    if !OBSERVED.load(Ordering::Relaxed) {
        return;
    }
    let o = OBSERVER.lock().clone();
    if let Some(o) = o {
        f(&*o);
    }
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
        observe(|o| o.file_synced(&file));
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = remove_file(&tmp);
    }
    result
}

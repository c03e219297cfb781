//! Segments are made before the writer needs them: a background thread
//! (`engine::background`) creates the next one — file created 0600,
//! preallocated, header written with first LSN 0 ("prepared, unused"),
//! fsynced, its name fsynced into the directory, mapped — and leaves it in
//! [`Spares`]. A roll then only writes a seal and the new header through
//! the mappings: no syscall and no disk wait under the engine's lock.
//!
//! If preparing fails (a full disk), the error is kept for `stats()` and
//! the thread waits to be kicked (after a snapshot freed space, or a roll
//! took the spare) instead of retrying in a loop; a roll that finds no
//! spare creates one itself and fails the append if that fails too.
//!
//! Sequence numbers are used in increasing order, so the order of the file
//! names is the order of the journal: a roll waits for a preparation under
//! way rather than overtake it, and a spare numbered below a segment already
//! used (one made for a record bigger than the spares) is deleted, never used.

use super::{SEGMENT_HEADER_LEN, page_round, segment_header, segment_name};
use crate::storage::{self, FaultPoint, Faults};
use memmap2::MmapMut;
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A segment created ahead of use (header first LSN 0).
pub struct Prepared {
    pub seq: u64,
    pub path: PathBuf,
    pub file: File,
    pub map: MmapMut,
}

impl Prepared {
    pub fn size(&self) -> usize {
        self.map.len()
    }
}

/// Creates segment `seq` of `size` bytes (rounded up to pages), unused.
/// On error nothing is left behind.
pub fn create(dir: &Path, faults: &Faults, seq: u64, size: usize) -> io::Result<Prepared> {
    faults.check(FaultPoint::SegmentCreate)?;
    let size = page_round(size.max(SEGMENT_HEADER_LEN + 64));
    let path = dir.join(segment_name(seq));
    let file = storage::create_file(&path)?;
    let result = (|| {
        // SAFETY: plain syscall on a valid fd; arguments are in range.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        file.write_all_at(&segment_header(0, seq, size as u64), 0)?;
        storage::sync_new_file(&file)?;
        storage::sync_dir(dir)?;
        map(&file)
    })();
    match result {
        Ok(map) => Ok(Prepared { seq, path, file, map }),
        Err(e) => {
            drop(file);
            let _ = storage::remove_file(&path);
            Err(e)
        }
    }
}

/// Opens an existing segment for writing.
pub fn open(path: &Path) -> io::Result<(File, MmapMut)> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let map = map(&file)?;
    Ok((file, map))
}

fn map(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the file is ours (the directory lock keeps other writers out)
    // and is never truncated while mapped.
    unsafe { MmapMut::map_mut(file) }
}

/// Makes a used segment unused again: zeros over `[header, end)` and a
/// header with first LSN 0, each fsynced in that order (so a power cut in
/// between leaves either the old records or zeros, never a header that
/// points at stale records).
pub fn reset(faults: &Faults, path: &Path, seq: u64, end: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    zero_range(faults, &file, SEGMENT_HEADER_LEN as u64, end.min(size))?;
    file.write_all_at(&segment_header(0, seq, size), 0)?;
    storage::sync_file(faults, &file)
}

/// Makes segment `seq` at `path` a valid unused one whatever is left of it
/// (`ringq repair` of a segment in use that lost its header): at least one
/// page, zeros after a header with first LSN 0.
pub fn remake_unused(faults: &Faults, path: &Path, seq: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len() as usize;
    let size = page_round(len.max(SEGMENT_HEADER_LEN + 64)) as u64;
    file.set_len(size)?;
    drop(file);
    reset(faults, path, seq, size)
}

/// Writes zeros over `[from, to)` of `file` and fsyncs it.
pub fn zero_range(faults: &Faults, file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(to.saturating_sub(from) as usize)];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    storage::sync_file(faults, file)
}

/// Prepared segments waiting for the writer, and the preparer's state.
pub struct Spares {
    st: Mutex<SpareState>,
    cv: Condvar,
}

struct SpareState {
    ready: Vec<Prepared>,
    /// The next sequence number to create.
    next_seq: u64,
    /// Spares numbered below this are stale (a later number is in use).
    floor: u64,
    /// The preparer is making one now.
    busy: bool,
    /// How many to keep ready.
    keep: usize,
    /// The last preparation error; cleared by a success.
    error: Option<String>,
    /// After an error, wait for `kick` before trying again.
    blocked: bool,
    stop: bool,
}

impl Spares {
    pub fn new(next_seq: u64, ready: Vec<Prepared>) -> Self {
        Spares {
            st: Mutex::new(SpareState {
                ready,
                next_seq,
                floor: 0,
                busy: false,
                keep: 1,
                error: None,
                blocked: false,
                stop: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// A fresh sequence number (for a segment the writer creates itself).
    pub fn alloc_seq(&self) -> u64 {
        let mut st = self.st.lock();
        st.next_seq += 1;
        st.next_seq - 1
    }

    /// A prepared segment of at least `min_size` bytes, if one is ready or
    /// being made now (then it waits for it: a few milliseconds).
    pub fn take(&self, min_size: usize) -> Option<Prepared> {
        let mut st = self.st.lock();
        while st.busy && !st.ready.iter().any(|p| p.size() >= min_size) {
            self.cv.wait(&mut st);
        }
        let i = st.ready.iter().position(|p| p.size() >= min_size)?;
        let p = st.ready.remove(i);
        st.blocked = false;
        self.cv.notify_all();
        Some(p)
    }

    /// The writer now uses segment `seq`: spares numbered below it are stale.
    pub fn used(&self, seq: u64, dir: &Path) {
        let stale: Vec<Prepared> = {
            let mut st = self.st.lock();
            st.floor = st.floor.max(seq + 1);
            let floor = st.floor;
            let (stale, keep) = std::mem::take(&mut st.ready).into_iter().partition(|p| p.seq < floor);
            st.ready = keep;
            stale
        };
        remove_all(stale, dir);
    }

    /// Try again after an error (space may have been freed).
    pub fn kick(&self) {
        let mut st = self.st.lock();
        st.blocked = false;
        self.cv.notify_all();
    }

    pub fn error(&self) -> Option<String> {
        self.st.lock().error.clone()
    }

    /// Bytes held by prepared segments.
    pub fn bytes(&self) -> (u64, usize) {
        let st = self.st.lock();
        (st.ready.iter().map(|p| p.size() as u64).sum(), st.ready.len())
    }

    pub fn stop(&self) {
        self.st.lock().stop = true;
        self.cv.notify_all();
    }

    /// Deletes the prepared segments (at close: they are made again at the
    /// next open, and a closed queue should not hold spare disk).
    pub fn discard(&self, dir: &Path) {
        let ready = std::mem::take(&mut self.st.lock().ready);
        remove_all(ready, dir);
    }

    /// The preparer thread's loop: keep `keep` segments of `size` ready.
    pub fn run(&self, dir: &Path, faults: &Faults, size: usize) {
        loop {
            let seq = {
                let mut st = self.st.lock();
                while !st.stop && (st.blocked || st.ready.len() >= st.keep) {
                    self.cv.wait(&mut st);
                }
                if st.stop {
                    return;
                }
                st.busy = true;
                st.next_seq += 1;
                st.next_seq - 1
            };
            let made = create(dir, faults, seq, size);
            let mut st = self.st.lock();
            st.busy = false;
            self.cv.notify_all();
            match made {
                Ok(p) if !st.stop && p.seq >= st.floor => {
                    st.ready.push(p);
                    st.error = None;
                }
                Ok(p) => {
                    let stop = st.stop;
                    drop(st);
                    remove_all(vec![p], dir);
                    if stop {
                        return;
                    }
                }
                Err(e) => {
                    st.error = Some(format!("preparing journal segment {}: {e}", segment_name(seq)));
                    st.blocked = true;
                }
            }
        }
    }
}

fn remove_all(segments: Vec<Prepared>, dir: &Path) {
    if segments.is_empty() {
        return;
    }
    for p in segments {
        let path = p.path.clone();
        drop(p);
        let _ = storage::remove_file(&path);
    }
    let _ = storage::sync_dir(dir);
}

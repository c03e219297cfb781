//! Segments are made before the writer needs them: a background thread
//! (`engine::background`) creates the next one — preallocated and written
//! with zeros under a temporary name ([`FILL_NAME`]), fsynced, then given
//! its number: header with first LSN 0 ("prepared, unused"), fsynced,
//! renamed, the directory fsynced, mapped — and leaves it in [`Spares`]. A
//! roll then only writes a seal and the new header through the mappings: no
//! syscall and no disk wait under the engine's lock. The first segment of a
//! new journal is made the same way by `Journal::open`. Under
//! `durability="always"` segments are only preallocated, not filled (the
//! `fill` flag; `engine::fill_segments` says why).
//!
//! Why the zeros, when a preallocated file already reads as zeros: its
//! extents are *unwritten*, so the writer's first store into each page of
//! the mapping faulted the page in as zeros and converted the extent on the
//! spot (ext4: about 4 µs a page, some 100 ns per 100-byte publish).
//! Written and synced ahead, the pages are plain written blocks in the page
//! cache and the writer's faults are minor ones (docs/benchmarks.md,
//! "Segments written ahead"). PostgreSQL zero-fills new WAL segments for
//! the same reason. It doubles what the journal writes to disk, off the hot
//! path. The fill stops early when the queue closes (`Spares::stop`), so
//! closing does not wait for it (at most for one system call under way).
//!
//! A roll that finds no spare ready does not wait for the one being made
//! (tens of milliseconds, under the engine's lock): it makes its own,
//! preallocated but not filled ([`create`]), and the spare being made takes
//! the next number when it is done ([`create_spare`]).
//!
//! If preparing fails (a full disk), the error is kept for `stats()` and
//! the thread waits to be kicked (after a snapshot freed space, or a roll
//! took the spare) instead of retrying in a loop; a roll that finds no
//! spare creates one itself, and if the disk is full waits for the spare
//! being made (its file may hold the space), and fails the append if that
//! brings nothing either.
//!
//! Covered segments are recycled rather than deleted when they fit
//! ([`Spares::offer`], [`recycle_spare`]): renamed to [`FILL_NAME`], given
//! a format-3 header and a number, renamed into place. Their blocks are
//! already written, so the writer's stores into them are plain page-cache
//! writes and nothing writes zeros ahead of it; the records they held stay
//! past the end of the new log, each with an LSN below its first (see
//! `scan`). Measured in `docs/benchmarks.md`, "Recycled segments".
//!
//! Sequence numbers are used in increasing order, so the order of the file
//! names is the order of the journal: a spare takes its number only when it
//! is complete, and one numbered below a segment already used (one made for
//! a record bigger than the spares, or a roll that overtook it between its
//! number and its rename) is deleted, never used.

use super::{
    FORMAT_RECYCLED, FORMAT_VERSION, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, page_round, segment_header,
    segment_header_as, segment_name,
};
use crate::storage::{self, FaultPoint, Faults};
use memmap2::MmapMut;
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A segment created ahead of use (header first LSN 0).
pub struct Prepared {
    pub seq: u64,
    pub path: PathBuf,
    pub file: File,
    pub map: MmapMut,
    /// Its format: [`FORMAT_VERSION`] for a new file, [`FORMAT_RECYCLED`]
    /// for one that held an earlier segment ([`recycle_spare`]).
    pub version: u32,
}

impl Prepared {
    pub fn size(&self) -> usize {
        self.map.len()
    }
}

/// How much of a new segment one write of zeros covers.
const FILL_CHUNK: usize = 1 << 20;

/// The name a segment is filled under before it gets its number (removed
/// by recovery if a crash leaves it).
pub const FILL_NAME: &str = "segment.tmp";

/// Creates segment `seq` of `size` bytes (rounded up to pages), unused,
/// preallocated but not filled, under its own name: what a roll that finds
/// no spare makes under the engine's lock (nothing can use a later number
/// before it is done). On error nothing is left behind.
pub fn create(dir: &Path, faults: &Faults, seq: u64, size: usize) -> io::Result<Prepared> {
    faults.check(FaultPoint::SegmentCreate)?;
    let size = segment_bytes(size);
    let path = dir.join(segment_name(seq));
    let file = storage::create_file(&path)?;
    let result = (|| {
        allocate(&file, size)?;
        file.write_all_at(&segment_header(0, seq, size as u64), 0)?;
        storage::sync_new_file(&file)?;
        storage::sync_dir(dir)?;
        map(&file)
    })();
    match result {
        Ok(map) => Ok(Prepared { seq, path, file, map, version: FORMAT_VERSION }),
        Err(e) => {
            drop(file);
            let _ = storage::remove_file(&path);
            Err(e)
        }
    }
}

/// Creates an unused segment of `size` bytes (rounded up to pages), with
/// `fill` every byte after its header written as zeros and synced (see the
/// module docs). It is made as [`FILL_NAME`] and takes its number from
/// `seq` only when complete, just before its header is written and it is
/// renamed into place: a roll that did not wait for it and made its own
/// segment meanwhile never has an unfinished file numbered below it (which
/// recovery would have to call damage). `stop` is asked between chunks of
/// zeros and before the sync: when it answers true the creation is
/// abandoned with `ErrorKind::Interrupted`. On error nothing is left behind.
pub fn create_spare(
    dir: &Path,
    faults: &Faults,
    size: usize,
    fill: bool,
    seq: &dyn Fn() -> u64,
    stop: &dyn Fn() -> bool,
) -> io::Result<Prepared> {
    faults.check(FaultPoint::SegmentCreate)?;
    let size = segment_bytes(size);
    let tmp = dir.join(FILL_NAME);
    match storage::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = storage::create_file(&tmp)?;
    let mut named: Option<PathBuf> = None;
    let interrupted = || io::Error::new(io::ErrorKind::Interrupted, "the queue is closing");
    let result = (|| {
        allocate(&file, size)?;
        if fill {
            let zeros = vec![0u8; FILL_CHUNK.min(size)];
            let mut at = 0;
            while at < size {
                if stop() {
                    return Err(interrupted());
                }
                let n = (size - at).min(zeros.len());
                file.write_all_at(&zeros[..n], at as u64)?;
                at += n;
            }
            if stop() {
                return Err(interrupted());
            }
            storage::sync_new_file(&file)?;
        }
        let seq = seq();
        file.write_all_at(&segment_header(0, seq, size as u64), 0)?;
        storage::sync_new_file(&file)?;
        let path = dir.join(segment_name(seq));
        std::fs::rename(&tmp, &path)?;
        named = Some(path.clone());
        storage::sync_dir(dir)?;
        Ok((seq, path, map(&file)?))
    })();
    match result {
        Ok((seq, path, map)) => Ok(Prepared { seq, path, file, map, version: FORMAT_VERSION }),
        Err(e) => {
            drop(file);
            let _ = storage::remove_file(named.as_deref().unwrap_or(&tmp));
            Err(e)
        }
    }
}

/// Makes an unused segment out of `from`, a covered segment of exactly
/// `size` bytes that a snapshot no longer needs ([`Spares::offer`]),
/// instead of a new file: its blocks are already written, so the writer
/// never converts an unwritten extent and nothing writes zeros over the
/// file ahead of it. It becomes a format-3 (recycled) segment: the records
/// it held stay past the end of the new log, every one with an LSN below
/// the LSNs it will hold (see `scan`).
///
/// `from` is renamed to [`FILL_NAME`] and the directory fsynced first, so
/// a crash at any later step leaves a file that recovery removes, never
/// the old name with the new header. Then, as [`create_spare`] does, it
/// takes its number from `seq`; its header (format 3, first LSN 0) and 20
/// zero bytes after it (where the writer's first record goes: the log must
/// end there until one is written) are written and fdatasynced; it is
/// renamed to its segment name, the directory fsynced, and mapped. On
/// error nothing is left behind (`from` included: it was going to be
/// deleted anyway).
pub fn recycle_spare(
    dir: &Path,
    faults: &Faults,
    from: &Path,
    size: usize,
    seq: &dyn Fn() -> u64,
) -> io::Result<Prepared> {
    let tmp = dir.join(FILL_NAME);
    let mut at: PathBuf = from.to_owned();
    let result = (|| {
        faults.check(FaultPoint::SegmentCreate)?;
        match storage::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(from, &tmp)?;
        at = tmp.clone();
        storage::sync_dir(dir)?;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&tmp)?;
        let len = file.metadata()?.len();
        if len != size as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a covered segment of {len} bytes cannot be recycled as one of {size}"),
            ));
        }
        let seq = seq();
        let mut head = [0u8; SEGMENT_HEADER_LEN + RECORD_HEADER_LEN];
        head[..SEGMENT_HEADER_LEN].copy_from_slice(&segment_header_as(FORMAT_RECYCLED, 0, seq, size as u64));
        file.write_all_at(&head, 0)?;
        storage::sync_new_file(&file)?;
        let path = dir.join(segment_name(seq));
        std::fs::rename(&tmp, &path)?;
        at = path.clone();
        storage::sync_dir(dir)?;
        let map = map(&file)?;
        Ok(Prepared { seq, path, file, map, version: FORMAT_RECYCLED })
    })();
    if result.is_err() {
        let _ = storage::remove_file(&at);
    }
    result
}

/// The size a segment asked for `size` bytes is made with: whole pages,
/// room for the header and a record at least.
fn segment_bytes(size: usize) -> usize {
    page_round(size.max(SEGMENT_HEADER_LEN + 64))
}

fn allocate(file: &File, size: usize) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd; arguments are in range.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
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
    /// `stop` was called: a fill under way gives up (read without the lock).
    stopping: AtomicBool,
    /// Spares ([`create_spare`]) are written with zeros, or only
    /// preallocated (`durability="always"`).
    fill: bool,
}

struct SpareState {
    ready: Vec<Prepared>,
    /// The next sequence number to create.
    next_seq: u64,
    /// Spares numbered below this are stale (a later number is in use).
    floor: u64,
    /// The preparer is making one now (its file holds disk space).
    busy: bool,
    /// How many to keep ready.
    keep: usize,
    /// The last preparation error; cleared by a success.
    error: Option<String>,
    /// After an error, wait for `kick` before trying again.
    blocked: bool,
    stop: bool,
    /// Mappings of segments the writer rolled away from, for the preparer
    /// thread to unmap (see [`Spares::retire`]).
    retired: Vec<MmapMut>,
    /// A preparer thread is running [`Spares::run`] and will unmap them.
    running: bool,
    /// Covered segments handed over for recycling ([`Spares::offer`]), the
    /// first to be used first.
    recyclable: Vec<PathBuf>,
    /// The size of the segments the preparer makes (0 before it runs).
    size: usize,
}

/// How many spares may be held beyond the one the preparer keeps ready
/// when they are made of covered segments; more covered segments are
/// deleted. A snapshot covers every segment written since the last one, so
/// more spares mean fewer new files between two snapshots, at the cost of
/// disk held (no more than the journal held before the snapshot).
pub const RECYCLE_KEEP: usize = 2;

impl Spares {
    pub fn new(next_seq: u64, ready: Vec<Prepared>, fill: bool) -> Self {
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
                retired: Vec::new(),
                running: false,
                recyclable: Vec::new(),
                size: 0,
            }),
            cv: Condvar::new(),
            stopping: AtomicBool::new(false),
            fill,
        }
    }

    /// A fresh sequence number (for a segment the writer creates itself).
    pub fn alloc_seq(&self) -> u64 {
        let mut st = self.st.lock();
        st.next_seq += 1;
        st.next_seq - 1
    }

    /// A prepared segment of at least `min_size` bytes, if one is ready.
    /// It does not wait for one being filled (tens of milliseconds: the
    /// caller holds the engine's lock); the caller makes its own instead.
    pub fn take(&self, min_size: usize) -> Option<Prepared> {
        let mut st = self.st.lock();
        self.take_locked(&mut st, min_size)
    }

    fn take_locked(&self, st: &mut SpareState, min_size: usize) -> Option<Prepared> {
        let i = st.ready.iter().position(|p| p.size() >= min_size)?;
        let p = st.ready.remove(i);
        st.blocked = false;
        self.cv.notify_all();
        Some(p)
    }

    /// As [`Spares::take`], but first waits for a preparation under way to
    /// finish: for a roll that could not make its own segment because the
    /// disk is full, while the preparer's file holds the space it needs.
    pub fn take_after_preparation(&self, min_size: usize) -> Option<Prepared> {
        let mut st = self.st.lock();
        while st.busy && !st.ready.iter().any(|p| p.size() >= min_size) {
            self.cv.wait(&mut st);
        }
        self.take_locked(&mut st, min_size)
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

    /// Unmaps `map` (a segment the writer rolled away from) on the preparer
    /// thread rather than under the engine's lock: unmapping 16 MiB of
    /// written shared pages takes milliseconds (7–11 ms measured here:
    /// every page's table entry and reverse mapping, then a TLB shootdown),
    /// a stall of every publish waiting for the lock. Without a preparer
    /// thread running (a bare `Journal`, or the queue closing) it is
    /// unmapped at once.
    pub fn retire(&self, map: MmapMut) {
        let mut st = self.st.lock();
        if st.running && !st.stop {
            st.retired.push(map);
            self.cv.notify_all();
        } else {
            drop(st);
            drop(map);
        }
    }

    /// Takes `path`, a segment a snapshot covers, for the preparer to make
    /// its next spare of ([`recycle_spare`]) instead of it being deleted.
    /// Refused (false: the caller deletes it) unless a preparer thread is
    /// running and not stopping, fewer than [`RECYCLE_KEEP`] spares beyond
    /// the one kept ready are held or being made of covered ones, and
    /// it is a format-2 or 3 segment (`.log`) of exactly the preparer's
    /// segment size. Those held stay on disk as covered segments until
    /// then: a crash leaves them to recovery, which does not read them, and
    /// the next snapshot hands them over again.
    pub fn offer(&self, path: &Path) -> bool {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        let mut st = self.st.lock();
        let fits = st.size > 0 && len == st.size as u64 && path.extension().is_some_and(|e| e == "log");
        if !st.running || st.stop || !fits || st.recyclable.len() + st.ready.len() >= st.keep + RECYCLE_KEEP {
            return false;
        }
        st.recyclable.push(path.to_owned());
        self.cv.notify_all();
        true
    }

    fn wants_spare(&self) -> bool {
        let st = self.st.lock();
        st.ready.len() < st.keep
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

    /// Bytes held by prepared segments and by covered ones kept for
    /// recycling, and how many are prepared.
    pub fn bytes(&self) -> (u64, usize) {
        let st = self.st.lock();
        let held = (st.recyclable.len() * st.size) as u64;
        (st.ready.iter().map(|p| p.size() as u64).sum::<u64>() + held, st.ready.len())
    }

    pub fn stop(&self) {
        let mut st = self.st.lock();
        st.stop = true;
        // After `stop`: a preparer that gives up on seeing this finds
        // `stop` set when it reports back, so it returns without an error.
        self.stopping.store(true, Ordering::Relaxed);
        self.cv.notify_all();
    }

    /// Deletes the prepared segments and those kept for recycling (at
    /// close: they are made again at the next open, and a closed queue
    /// should not hold spare disk).
    pub fn discard(&self, dir: &Path) {
        let (ready, recyclable) = {
            let mut st = self.st.lock();
            (std::mem::take(&mut st.ready), std::mem::take(&mut st.recyclable))
        };
        for path in &recyclable {
            let _ = storage::remove_file(path);
        }
        if ready.is_empty() && !recyclable.is_empty() {
            let _ = storage::sync_dir(dir);
        }
        remove_all(ready, dir);
    }

    /// The preparer thread's loop: keep `keep` segments of `size` ready,
    /// and unmap the segments retired by the writer ([`Spares::retire`]).
    pub fn run(&self, dir: &Path, faults: &Faults, size: usize) {
        /// Clears `running` and unmaps what is left when the loop ends,
        /// also by a panic: later rolls then unmap at once.
        struct Running<'a>(&'a Spares);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                let retired = {
                    let mut st = self.0.st.lock();
                    st.running = false;
                    std::mem::take(&mut st.retired)
                };
                drop(retired);
            }
        }
        let spare_size = segment_bytes(size);
        {
            let mut st = self.st.lock();
            st.running = true;
            st.size = spare_size;
        }
        let _running = Running(self);
        self.prepare_loop(dir, faults, spare_size);
    }

    /// `spare_size`: the size of every spare (`segment_bytes`).
    fn prepare_loop(&self, dir: &Path, faults: &Faults, spare_size: usize) {
        loop {
            // Covered segments handed over are made spares at once (their
            // old names gone from the directory), needed yet or not; new
            // files only while fewer than `keep` are ready.
            let from = {
                let mut st = self.st.lock();
                while !st.stop
                    && st.retired.is_empty()
                    && st.recyclable.is_empty()
                    && (st.blocked || st.ready.len() >= st.keep)
                {
                    self.cv.wait(&mut st);
                }
                if st.stop {
                    return;
                }
                let retired = std::mem::take(&mut st.retired);
                if !retired.is_empty() {
                    drop(st);
                    drop(retired);
                    continue;
                }
                st.busy = true;
                // Left in the list until it is done, so that `offer` counts it.
                st.recyclable.first().cloned()
            };
            let seq = || {
                let mut st = self.st.lock();
                st.next_seq += 1;
                st.next_seq - 1
            };
            let new_file =
                || create_spare(dir, faults, spare_size, self.fill, &seq, &|| self.stopping.load(Ordering::Relaxed));
            let made = match &from {
                None => Some(new_file()),
                Some(from) => match recycle_spare(dir, faults, from, spare_size, &seq) {
                    Ok(p) => Some(Ok(p)),
                    // The covered file is gone either way (it was to be
                    // deleted): a new one if a spare is still wanted.
                    Err(_) if self.wants_spare() => Some(new_file()),
                    Err(_) => None,
                },
            };
            let mut st = self.st.lock();
            st.busy = false;
            if let Some(from) = &from {
                st.recyclable.retain(|p| p != from);
            }
            self.cv.notify_all();
            let Some(made) = made else { continue };
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
                // Abandoned because the queue is closing: not an error.
                Err(_) if st.stop => return,
                Err(e) => {
                    st.error = Some(format!("preparing a journal segment ({}): {e}", dir.join(FILL_NAME).display()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// `FS_IOC_FIEMAP`: `_IOWR('f', 11, struct fiemap)` (32-byte header).
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 0x1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    const EXTENTS: usize = 64;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }

    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; EXTENTS],
    }

    /// The file's extents as (offset, length, unwritten), or `None` where
    /// the filesystem has no FIEMAP (tmpfs).
    fn extents(file: &File) -> Option<Vec<(u64, u64, bool)>> {
        let mut m = Fiemap {
            start: 0,
            length: u64::MAX,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: EXTENTS as u32,
            reserved: 0,
            extents: [Extent::default(); EXTENTS],
        };
        // SAFETY: `m` is a `struct fiemap` followed by room for
        // `extent_count` extents, as the ioctl expects.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut m as *mut Fiemap) };
        if rc != 0 {
            return None;
        }
        let n = m.mapped_extents as usize;
        Some(m.extents[..n].iter().map(|e| (e.logical, e.length, e.flags & FIEMAP_EXTENT_UNWRITTEN != 0)).collect())
    }

    /// A preparer thread filling spares of `size` bytes in `dir`, returned
    /// once its first fill has begun (`FILL_NAME` exists; or it is already
    /// done, which the callers' assertions then report).
    fn preparing(dir: &Path, size: usize) -> (std::sync::Arc<Spares>, std::thread::JoinHandle<()>) {
        let spares = std::sync::Arc::new(Spares::new(1, Vec::new(), true));
        let runner = {
            let (spares, path) = (spares.clone(), dir.to_owned());
            std::thread::spawn(move || spares.run(&path, &Faults::default(), size))
        };
        while !dir.join(FILL_NAME).exists() && spares.bytes().1 == 0 {
            std::thread::yield_now();
        }
        (spares, runner)
    }

    #[test]
    fn a_prepared_segment_is_written_zeros_not_unwritten_extents() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * FILL_CHUNK + 4096;
        let p = create_spare(dir.path(), &Faults::default(), size, true, &|| 7, &|| false).unwrap();
        assert_eq!((p.seq, p.size()), (7, size));
        assert_eq!(p.path, dir.path().join(segment_name(7)));
        assert!(!dir.path().join(FILL_NAME).exists(), "renamed into place");
        let bytes = std::fs::read(&p.path).unwrap();
        assert_eq!(bytes.len(), size);
        assert_eq!(&bytes[..SEGMENT_HEADER_LEN], &segment_header(0, 7, size as u64)[..], "an unused segment's header");
        assert!(bytes[SEGMENT_HEADER_LEN..].iter().all(|b| *b == 0), "zeros after the header");
        match extents(&p.file) {
            Some(ext) => {
                assert_eq!(ext.iter().map(|e| e.1).sum::<u64>(), size as u64, "the whole file is allocated: {ext:?}");
                assert!(ext.iter().all(|e| !e.2), "no extent left unwritten for the writer to convert: {ext:?}");
            }
            None => eprintln!("skipped the extent check: this filesystem has no FIEMAP"),
        }
    }

    #[test]
    fn closing_abandons_a_fill_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let asked = Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() > 2
        };
        let numbered = Cell::new(false);
        let seq = || {
            numbered.set(true);
            3
        };
        let err =
            create_spare(dir.path(), &Faults::default(), 8 * FILL_CHUNK, true, &seq, &stop).err().expect("abandoned");
        assert!(!numbered.get(), "an abandoned fill never takes a number");
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert_eq!(asked.get(), 3, "asked before each chunk until it said stop");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the half-filled file is removed");
    }

    #[test]
    fn a_preparer_stopped_in_the_middle_of_a_fill_returns_without_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Big enough that the fill is still going when `stop` comes.
        let (spares, runner) = preparing(dir.path(), 256 * FILL_CHUNK);
        spares.stop();
        runner.join().unwrap();
        assert_eq!(spares.alloc_seq(), 1, "abandoned before it took a number");
        assert_eq!(spares.error(), None, "closing is not a preparation error");
        assert_eq!(spares.bytes(), (0, 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the half-filled spare is removed");
    }

    #[test]
    fn a_fill_takes_its_number_when_done_so_a_roll_that_made_its_own_segment_does_not_strand_it() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::new(1, Vec::new(), true);
        // A roll found nothing ready while the fill ran: it made segment 1
        // itself (unfilled) and uses it.
        let own = create(dir.path(), &Faults::default(), spares.alloc_seq(), 8192).unwrap();
        spares.used(own.seq, dir.path());
        // The fill completes afterwards and is numbered after it.
        let filled =
            create_spare(dir.path(), &Faults::default(), 8192, true, &|| spares.alloc_seq(), &|| false).unwrap();
        assert_eq!((own.seq, filled.seq), (1, 2));
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec![segment_name(1), segment_name(2)]);
    }

    #[test]
    fn a_fill_left_by_a_kill_is_replaced_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILL_NAME), vec![7u8; 5000]).unwrap();
        let p = create_spare(dir.path(), &Faults::default(), 8192, true, &|| 4, &|| false).unwrap();
        assert_eq!(p.seq, 4);
        assert!(!dir.path().join(FILL_NAME).exists());
        let bytes = std::fs::read(&p.path).unwrap();
        assert!(bytes[SEGMENT_HEADER_LEN..].iter().all(|b| *b == 0), "nothing of the old file is left");
    }

    #[test]
    fn a_spare_takes_its_number_only_when_complete_filled_or_not() {
        for fill in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let size = 2 * FILL_CHUNK;
            let at_numbering = || {
                // Everything but the header is done, under the temporary name.
                let tmp = dir.path().join(FILL_NAME);
                assert_eq!(std::fs::metadata(&tmp).unwrap().len(), size as u64, "fill={fill}");
                assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "fill={fill}: no segment name yet");
                9
            };
            let p = create_spare(dir.path(), &Faults::default(), size, fill, &at_numbering, &|| false).unwrap();
            assert_eq!(p.path, dir.path().join(segment_name(9)), "fill={fill}");
            let bytes = std::fs::read(&p.path).unwrap();
            assert_eq!(&bytes[..SEGMENT_HEADER_LEN], &segment_header(0, 9, size as u64)[..], "fill={fill}");
            if let Some(ext) = extents(&p.file) {
                assert_eq!(ext.iter().any(|e| e.2), !fill, "fill={fill}: unwritten extents {ext:?}");
            }
        }
    }

    /// Whether this process maps a file under `dir`.
    fn maps_under(dir: &Path) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|l| l.contains(dir.to_str().unwrap()))
    }

    #[test]
    fn a_retired_mapping_is_unmapped_by_the_preparer_thread_or_at_once_without_one() {
        let (work, old) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let segment = |seq| create(old.path(), &Faults::default(), seq, 8192).unwrap().map;
        let spares = std::sync::Arc::new(Spares::new(1, Vec::new(), true));
        // No preparer thread: unmapped at once.
        spares.retire(segment(1));
        assert!(!maps_under(old.path()), "unmapped by retire itself");
        // A preparer thread is running (marked so before it starts, so that
        // it cannot have unmapped it yet): retire leaves it to the thread.
        spares.st.lock().running = true;
        spares.retire(segment(2));
        assert!(maps_under(old.path()), "left mapped for the preparer thread");
        let runner = {
            let (spares, path) = (spares.clone(), work.path().to_owned());
            std::thread::spawn(move || spares.run(&path, &Faults::default(), 8192))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while maps_under(old.path()) {
            assert!(std::time::Instant::now() < deadline, "the preparer thread never unmapped it");
            std::thread::yield_now();
        }
        // Stopped: unmapped at once again.
        spares.stop();
        runner.join().unwrap();
        assert!(!spares.st.lock().running);
        spares.retire(segment(3));
        assert!(!maps_under(old.path()), "unmapped by retire itself after the thread stopped");
        spares.discard(work.path());
    }

    /// A covered format-2 segment `seq` of `size` bytes full of records.
    fn covered_segment(dir: &Path, seq: u64, size: usize) -> PathBuf {
        let path = dir.join(segment_name(seq));
        let mut data = segment_header(1, seq, size as u64).to_vec();
        let mut lsn = 1;
        while data.len() + 200 < size {
            data.extend_from_slice(&super::super::encode_record(lsn, &[crate::record::Op::Drop { id: lsn }]));
            lsn += 1;
        }
        data.resize(size, 0);
        std::fs::write(&path, &data).unwrap();
        path
    }

    #[test]
    fn a_recycled_spare_is_the_covered_file_under_a_new_number_and_a_format_3_header() {
        let dir = tempfile::tempdir().unwrap();
        let size = 64 * 1024;
        let from = covered_segment(dir.path(), 3, size);
        let before = std::fs::read(&from).unwrap();
        let p = recycle_spare(dir.path(), &Faults::default(), &from, size, &|| 8).unwrap();
        assert_eq!((p.seq, p.size(), p.version), (8, size, FORMAT_RECYCLED));
        assert!(!from.exists() && !dir.path().join(FILL_NAME).exists(), "renamed, not copied");
        let bytes = std::fs::read(&p.path).unwrap();
        assert_eq!(&bytes[..SEGMENT_HEADER_LEN], &segment_header_as(FORMAT_RECYCLED, 0, 8, size as u64)[..]);
        let first = SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + RECORD_HEADER_LEN;
        assert!(bytes[first.clone()].iter().all(|b| *b == 0), "the log ends where the writer will start");
        assert_eq!(&bytes[first.end..], &before[first.end..], "nothing else is written");
        // Its blocks were written before: none for the writer to convert.
        if let Some(ext) = extents(&p.file) {
            assert!(ext.iter().all(|e| !e.2), "{ext:?}");
        }
    }

    #[test]
    fn a_recycling_that_fails_leaves_nothing_and_takes_no_number() {
        let dir = tempfile::tempdir().unwrap();
        let numbered = Cell::new(false);
        let seq = || {
            numbered.set(true);
            5
        };
        // A file of another size (segment_size changed between opens).
        let from = covered_segment(dir.path(), 1, 8192);
        let err = recycle_spare(dir.path(), &Faults::default(), &from, 65536, &seq).err().expect("refused");
        assert!(err.to_string().contains("8192 bytes cannot be recycled as one of 65536"), "{err}");
        // A full or failing disk at the start.
        let faults = Faults::default();
        faults.set(FaultPoint::SegmentCreate, libc::ENOSPC, 1);
        let from = covered_segment(dir.path(), 2, 8192);
        let err = recycle_spare(dir.path(), &faults, &from, 8192, &seq).err().expect("failed");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(!numbered.get());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the covered files were going anyway");
    }

    #[test]
    fn covered_segments_offered_become_spares_at_once_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let size = 64 * 1024;
        let spares = std::sync::Arc::new(Spares::new(10, Vec::new(), true));
        let covered: Vec<PathBuf> = (1..=5).map(|s| covered_segment(dir.path(), s, size)).collect();
        assert!(!spares.offer(&covered[0]), "no preparer thread: refused (deleted by the caller)");
        let runner = {
            let (spares, path) = (spares.clone(), dir.path().to_owned());
            std::thread::spawn(move || spares.run(&path, &Faults::default(), size))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while spares.bytes().1 < 1 {
            assert!(std::time::Instant::now() < deadline, "the preparer made no spare");
            std::thread::yield_now();
        }
        // One spare of a new file is ready; two more may be made of
        // covered segments, and a segment of another size never.
        let other = dir.path().join(segment_name(30));
        std::fs::write(&other, vec![0u8; 8192]).unwrap();
        assert!(!spares.offer(&other));
        let taken: Vec<bool> = covered.iter().map(|p| spares.offer(p)).collect();
        assert_eq!(taken.iter().filter(|t| **t).count(), RECYCLE_KEEP, "{taken:?}");
        while spares.bytes().1 < 1 + RECYCLE_KEEP {
            assert!(std::time::Instant::now() < deadline, "the offered segments were not recycled");
            std::thread::yield_now();
        }
        for (p, t) in covered.iter().zip(&taken) {
            assert_eq!(p.exists(), !t, "{} taken: {t}", p.display());
        }
        let versions: Vec<u32> = spares.st.lock().ready.iter().map(|p| p.version).collect();
        assert_eq!(versions, vec![FORMAT_VERSION, FORMAT_RECYCLED, FORMAT_RECYCLED]);
        spares.stop();
        runner.join().unwrap();
        assert!(!spares.offer(&covered[4]), "stopped: refused");
        spares.discard(dir.path());
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut expected: Vec<String> = covered
            .iter()
            .zip(&taken)
            .filter(|(_, t)| !**t)
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        expected.push(segment_name(30));
        expected.sort();
        assert_eq!(left, expected, "the spares are deleted at close, the refused files left to the caller");
    }

    #[test]
    fn a_roll_that_found_the_disk_full_can_wait_for_the_spare_being_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let (spares, runner) = preparing(dir.path(), 64 * FILL_CHUNK);
        assert!(spares.take(4096).is_none(), "a roll does not wait for a fill");
        let p = spares.take_after_preparation(4096).expect("the spare, once prepared");
        assert_eq!((p.seq, p.size()), (1, 64 * FILL_CHUNK));
        spares.stop();
        runner.join().unwrap();
    }
}

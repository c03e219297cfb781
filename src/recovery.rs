//! Opening a directory: the newest snapshot, then every journal record after
//! its LSN, in order. Recovery never silently skips data:
//! - a torn tail (what a crash or a power cut leaves at the end of the log,
//!   see `journal::scan`) is dropped, reported (with the records dropped
//!   after it) and zeroed on disk;
//! - a damaged record that was on disk before a later one, a gap in LSNs, a
//!   segment cut short (format 2 headers say how big the file was made), a
//!   segment a seal or the MANIFEST names that is not there, a segment in
//!   use that lost its header (below), a snapshot the MANIFEST names that is
//!   not there, or an unreadable snapshot is an error naming the file and
//!   offset.
//!
//! A format-2 segment without a valid header (empty, shorter than the
//! header, or a zeroed or torn header with no valid record after it) is what
//! a crash while `journal::prepare::create` made it leaves (the file created
//! but empty, or preallocated before its header was written), and is removed
//! — unless something says the journal was in use there: the MANIFEST
//! anchors it, a seal names it, or a segment after it is in use (and holds
//! records the snapshot does not cover). A segment is only used once its
//! creation is durable, and only the writer creates a segment under its
//! number (the preparer works under `prepare::FILL_NAME`, removed here, and
//! renames a complete file), so then it is damage.
//!
//! Segments wholly covered by the snapshot are not read at all, so damage
//! in them (even to their headers) does not block opening; they are deleted
//! after the next snapshot.

use crate::error::{Error, Result};
use crate::journal::writer::{Recovered, UsedSegment, zero_torn_tail};
use crate::journal::{self, SegmentHeader, TornTail, prepare};
use crate::manifest::Manifest;
use crate::record::decode_txn;
use crate::snapshot;
use crate::state::State;
use crate::storage::{self, Faults};
use crate::types::Lsn;
use memmap2::Mmap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What recovery found and did.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub snapshot_lsn: Lsn,
    pub snapshot_path: Option<PathBuf>,
    pub records_replayed: u64,
    pub last_lsn: Lsn,
    pub torn: Vec<TornTail>,
    /// Segments whose header was torn (a crash while creating one); removed.
    pub torn_segments: Vec<PathBuf>,
    /// Segments after a torn tail whose records were dropped with it (none
    /// of them had reached the disk through an fsync); made unused again.
    pub dropped_segments: Vec<PathBuf>,
    /// Whole records dropped after a torn tail, in its segment and later ones.
    pub dropped_records: u64,
    pub seconds: f64,
}

impl RecoveryReport {
    pub fn torn_bytes(&self) -> u64 {
        self.torn.iter().map(|t| t.bytes).sum()
    }
}

pub(crate) struct Loaded {
    pub state: State,
    pub report: RecoveryReport,
    pub journal: Recovered,
    /// Segments in use that lost their header (`load_for_repair` only:
    /// `load` refuses them).
    pub lost: Vec<LostSegment>,
}

/// A format-2 segment without a valid header.
#[derive(Debug, Clone)]
pub(crate) struct LostSegment {
    pub seq: u64,
    pub path: PathBuf,
    /// The file's length.
    pub len: u64,
    /// Why it counts as in use (empty while nothing says so).
    pub why: String,
}

impl LostSegment {
    /// What is wrong with the file, for messages.
    pub fn what(&self) -> String {
        match self.len {
            0 => "is empty".to_owned(),
            n if n < journal::SEGMENT_HEADER_LEN as u64 => {
                format!("is {n} bytes, shorter than its {}-byte header", journal::SEGMENT_HEADER_LEN)
            }
            _ => "has no valid header (zeroed or failing its CRC check) and no valid record".to_owned(),
        }
    }

    fn refused(&self, dir: &Path) -> Error {
        Error::corruption(
            &self.path,
            0,
            format!(
                "journal segment {}, but the journal was in use there ({}): the records it held are lost \
                 (an interrupted segment creation never leaves a used segment like this); restore it from \
                 a backup, or accept the loss with `ringq repair {}`",
                self.what(),
                self.why,
                dir.display()
            ),
        )
    }
}

fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// Files named by a number (LSN or sequence), sorted by it.
pub(crate) type NumberedFiles = Vec<(u64, PathBuf)>;

/// The directory's snapshots (by LSN), format-1 segments (by first LSN) and
/// format-2 segments (by sequence number).
pub(crate) struct Listing {
    pub snapshots: NumberedFiles,
    pub wal_v1: NumberedFiles,
    pub segments: NumberedFiles,
}

pub(crate) fn list_files(dir: &Path) -> Result<Listing> {
    let mut l = Listing { snapshots: Vec::new(), wal_v1: Vec::new(), segments: Vec::new() };
    let rd = fs::read_dir(dir).map_err(|e| Error::storage("listing the queue directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::storage("listing the queue directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = parse_name(name, ".snap") {
            l.snapshots.push((n, entry.path()));
        } else if let Some(n) = parse_name(name, ".wal") {
            l.wal_v1.push((n, entry.path()));
        } else if let Some(n) = parse_name(name, ".log") {
            l.segments.push((n, entry.path()));
        }
    }
    l.snapshots.sort();
    l.wal_v1.sort();
    l.segments.sort();
    Ok(l)
}

impl Listing {
    pub fn holds_queue_files(&self) -> bool {
        !(self.snapshots.is_empty() && self.wal_v1.is_empty() && self.segments.is_empty())
    }
}

/// A segment of the journal chain, header read.
struct ChainSegment {
    path: PathBuf,
    /// Format 1: the first LSN from the name (its header is read when scanned).
    name_lsn: Option<Lsn>,
    header: Option<SegmentHeader>,
    /// A format-2 header that does not check out: an error only if the
    /// snapshot does not cover the segment.
    damaged: Option<Error>,
    map: Option<Mmap>,
}

impl ChainSegment {
    /// Its first LSN, if known.
    fn first_lsn(&self) -> Option<Lsn> {
        self.header.map(|h| h.first_lsn).or(self.name_lsn)
    }
}

/// A change recovery makes to the directory, done only once everything
/// read cleanly (a failed open leaves the evidence as it was).
enum Repair {
    Remove(PathBuf),
    /// Make a format-2 segment unused again (zeros up to `end`).
    Reset {
        path: PathBuf,
        seq: u64,
        end: u64,
    },
    ZeroTail(TornTail),
}

/// Loads a directory's state. With `repair`, torn tails are zeroed and
/// leftovers (temp files, torn segment headers, segments dropped after a
/// torn tail, snapshots older than the newest) are removed or reset, once
/// everything read cleanly; without it nothing on disk changes (read-only
/// inspection). `slot_limit` bounds the slot of every message id (see
/// `manifest`). `capacity`: the slots to reserve up front (the engine's
/// capacity; `Slab::reserve`), 0 for none.
#[allow(clippy::too_many_arguments)]
pub(crate) fn load(
    dir: &Path,
    dlq_capacity: usize,
    slot_limit: usize,
    capacity: usize,
    repair: bool,
    faults: &Faults,
    manifest: &Manifest,
) -> Result<Loaded> {
    let on_disk = journal::marker::read(dir);
    load_from(dir, dlq_capacity, slot_limit, capacity, repair, faults, manifest, on_disk, false)
}

/// What `ringq repair` reads: the same without changing anything, without
/// `DURABLE` and without the checks that the MANIFEST's anchor and snapshot
/// exist (it rebuilds them), with unlimited dead letters; segments in use
/// that lost their header are listed in `Loaded::lost` instead of refused
/// (the MANIFEST's anchor still counts as evidence of use).
pub(crate) fn load_for_repair(dir: &Path, slot_limit: usize, manifest: &Manifest) -> Result<Loaded> {
    load_from(dir, usize::MAX, slot_limit, 0, false, &Faults::default(), manifest, 0, true)
}

#[allow(clippy::too_many_arguments)]
fn load_from(
    dir: &Path,
    dlq_capacity: usize,
    slot_limit: usize,
    capacity: usize,
    repair: bool,
    faults: &Faults,
    manifest: &Manifest,
    on_disk: Lsn,
    for_repair: bool,
) -> Result<Loaded> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut repairs: Vec<Repair> = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(|n| {
                n.contains(".snap.tmp")
                    || n.starts_with("MANIFEST.tmp")
                    || n.starts_with("POLICIES.tmp")
                    || n == prepare::FILL_NAME
            }) {
                repairs.push(Repair::Remove(e.path()));
            }
        }
    }
    let files = list_files(dir)?;

    let (mut state, snap_lsn) = match files.snapshots.last() {
        Some((_, path)) => {
            let file = crate::payload::MappedFile::new(snapshot::map(path)?);
            let (mut state, lsn) = snapshot::decode_mapped(path, &file, dlq_capacity, slot_limit, capacity)?;
            let at_load = file.payloads();
            if at_load > 0 {
                state.mapped = Some(crate::state::MappedSnapshot { file, at_load });
            }
            report.snapshot_path = Some(path.clone());
            (state, lsn)
        }
        None => {
            let mut state = State::new(dlq_capacity, slot_limit);
            state.slab.reserve(capacity);
            (state, 0)
        }
    };
    if manifest.snapshot_lsn > snap_lsn && !for_repair {
        let missing = dir.join(snapshot::snapshot_name(manifest.snapshot_lsn));
        return Err(Error::corruption(
            &missing,
            0,
            format!(
                "snapshot is missing: the MANIFEST says a snapshot at LSN {} was written, but the newest here is {}",
                manifest.snapshot_lsn,
                report.snapshot_path.as_ref().map_or("none".to_owned(), |p| p.display().to_string())
            ),
        ));
    }
    report.snapshot_lsn = snap_lsn;
    for (_, p) in &files.snapshots[..files.snapshots.len().saturating_sub(1)] {
        repairs.push(Repair::Remove(p.clone()));
    }

    // Format-2 headers: prepared segments are spares; torn ones (a crash
    // while one was being prepared) go unless the journal was in use there;
    // used ones form the chain.
    let mut out = Recovered { next_seq: 1, anchor: manifest.journal_anchor, ..Default::default() };
    let mut chain: Vec<ChainSegment> = files
        .wal_v1
        .iter()
        .map(|(lsn, path)| ChainSegment {
            path: path.clone(),
            name_lsn: Some(*lsn),
            header: None,
            damaged: None,
            map: None,
        })
        .collect();
    let mut present = Vec::new();
    // Without a valid header.
    let mut torn: Vec<LostSegment> = Vec::new();
    // The chain's format-2 segments: sequence number, first LSN (`None`: the
    // header is damaged).
    let mut used_seqs: Vec<(u64, Option<Lsn>)> = Vec::new();
    for (seq, path) in &files.segments {
        out.next_seq = out.next_seq.max(seq + 1);
        present.push(*seq);
        let map = journal::map_for_read(path)?;
        let header = match &map {
            Some(m) => match journal::read_segment_header(path, m) {
                Ok(h) => h,
                Err(e) => {
                    used_seqs.push((*seq, None));
                    chain.push(ChainSegment {
                        path: path.clone(),
                        name_lsn: None,
                        header: None,
                        damaged: Some(e),
                        map,
                    });
                    continue;
                }
            },
            None => None,
        };
        let Some(h) = header else {
            let len = map.as_ref().map_or(0, |m| m.len() as u64);
            torn.push(LostSegment { seq: *seq, path: path.clone(), len, why: String::new() });
            continue;
        };
        let map = map.expect("a header was read");
        match h.seq {
            Some(s) if h.version >= 2 && s == *seq => {}
            Some(s) => {
                return Err(Error::corruption(path, 24, format!("header names segment {s}, the file name says {seq}")));
            }
            None => {
                return Err(Error::corruption(
                    path,
                    8,
                    format!(
                        "header is format {} (no segment number) in a .log file, whose name says segment {seq}",
                        h.version
                    ),
                ));
            }
        }
        let size = h.size.unwrap_or(0);
        if (map.len() as u64) < size {
            return Err(Error::corruption(
                path,
                map.len() as u64,
                format!(
                    "journal segment is {} bytes but was created with {size}: the file was cut short and \
                     the records after byte {} are lost; restore it from a backup",
                    map.len(),
                    map.len()
                ),
            ));
        }
        if h.is_unused() {
            // A recycled spare holds the records of the file's earlier
            // uses, all covered by the snapshot loaded (it was covered by
            // one that a MANIFEST named before it was recycled): only a
            // record after the snapshot was written into it since.
            let written = if h.is_recycled() {
                journal::scan::holds_record_after(&map, journal::SEGMENT_HEADER_LEN, snap_lsn, h.crc_seed())
            } else {
                map[journal::SEGMENT_HEADER_LEN..].iter().any(|b| *b != 0)
            };
            if written {
                // A header that never reached the disk in front of records
                // that did: nothing in it was fsynced. Start it over.
                report.dropped_segments.push(path.clone());
                repairs.push(Repair::Reset { path: path.clone(), seq: *seq, end: map.len() as u64 });
            }
            out.spares.push((*seq, path.clone()));
            continue;
        }
        used_seqs.push((*seq, Some(h.first_lsn)));
        chain.push(ChainSegment { path: path.clone(), name_lsn: None, header: Some(h), damaged: None, map: Some(map) });
    }
    if manifest.journal_anchor != 0 && !present.contains(&manifest.journal_anchor) && !for_repair {
        let missing = dir.join(journal::segment_name(manifest.journal_anchor));
        return Err(Error::corruption(
            &missing,
            0,
            "journal segment is missing: the MANIFEST says the journal continues in it (deleted?); \
             restore it from a backup",
        ));
    }

    // A segment without a header is an interrupted creation unless the
    // MANIFEST anchors it or a segment after it is in use (a seal naming it
    // is checked in the chain below). A later segment whose records start
    // within the snapshot leaves nothing uncovered before it.
    let mut lost: Vec<LostSegment> = Vec::new();
    let mut interrupted: Vec<LostSegment> = Vec::new();
    for mut t in torn {
        let later = used_seqs.iter().find(|(s, _)| *s > t.seq);
        if t.seq == manifest.journal_anchor {
            t.why = "the MANIFEST says the journal continues in it".to_owned();
        } else if let Some((s, first)) = later
            && first.is_none_or(|f| f > snap_lsn + 1)
        {
            t.why = format!("{} after it is in use", journal::segment_name(*s));
        }
        if t.why.is_empty() {
            interrupted.push(t);
        } else if for_repair {
            lost.push(t);
        } else {
            return Err(t.refused(dir));
        }
    }

    let mut next = snap_lsn + 1;
    // A torn tail, and the LSN that was lost first: every later record is
    // dropped unless it proves that one was on disk (then: corruption).
    let mut tear: Option<(TornTail, Lsn)> = None;
    // The segment read last: its path, where its records end, whether it was sealed.
    let mut prev: Option<(PathBuf, u64, bool)> = None;
    // Where the seal of the segment being read starts, if it is a tear.
    let mut unsealed: Option<u64> = None;
    let n = chain.len();
    for i in 0..n {
        let is_last = i + 1 == n;
        // The first LSN of the next segment whose header is known (LSNs
        // grow along the chain: if it is covered, so is everything before).
        let next_first = chain[i + 1..].iter().find_map(ChainSegment::first_lsn);
        let successor = chain.get(i + 1).and_then(|s| s.header.and_then(|h| h.seq));
        let seg = &mut chain[i];
        // Wholly covered by the snapshot: not read (it goes after the next snapshot).
        if let Some(nf) = next_first
            && nf <= snap_lsn + 1
            && tear.is_none()
        {
            let len = fs::metadata(&seg.path).map_or(0, |m| m.len());
            out.used.push(UsedSegment {
                path: seg.path.clone(),
                version: seg.header.map_or(1, |h| h.version),
                seq: seg.header.and_then(|h| h.seq),
                first_lsn: seg.first_lsn().unwrap_or(0),
                last_lsn: nf - 1,
                end: 0,
                sealed: true,
                next_seq: None,
                len,
            });
            continue;
        }
        if let Some(e) = seg.damaged.take() {
            return Err(e);
        }
        if seg.map.is_none() {
            seg.map = journal::map_for_read(&seg.path)?;
        }
        let path = seg.path.clone();
        let header = match (&seg.header, &seg.map) {
            (Some(h), _) => *h,
            (None, Some(map)) => match journal::read_segment_header(&path, map)? {
                Some(h) => h,
                None if is_last => {
                    report.torn_segments.push(path.clone());
                    repairs.push(Repair::Remove(path.clone()));
                    continue;
                }
                None => {
                    return Err(Error::corruption(&path, 0, "segment header is damaged and newer segments follow"));
                }
            },
            (None, None) if is_last => {
                report.torn_segments.push(path.clone());
                repairs.push(Repair::Remove(path.clone()));
                continue;
            }
            (None, None) => return Err(Error::corruption(&path, 0, "empty journal segment before newer ones")),
        };
        if let Some(name_lsn) = seg.name_lsn
            && header.first_lsn != name_lsn
        {
            return Err(Error::corruption(
                &path,
                16,
                format!("header says first LSN {}, file name says {name_lsn}", header.first_lsn),
            ));
        }
        let map = seg.map.as_ref().expect("mapped above");
        let first = header.first_lsn;
        if first > next
            && tear.is_none()
            && let Some((prev_path, prev_end, false)) = &prev
        {
            // The segment before ends short of this one and without its
            // seal: its unsynced tail (and the seal) was lost in a power
            // cut. That is a tear at its end, unless proven otherwise below.
            let t = TornTail { path: prev_path.clone(), offset: *prev_end, bytes: 0, dropped_records: 0 };
            tear = Some((t, next));
        } else if first > next
            && tear.is_none()
            && prev.is_none()
            && let Some((_, anchor)) =
                out.spares.iter().find(|(s, _)| *s == manifest.journal_anchor && header.seq.is_some_and(|q| q > *s))
        {
            // The first segment read starts after the snapshot, and the
            // segment the snapshot's MANIFEST anchors (the one active when
            // it was taken) is unused on disk: the power cut kept a later
            // roll's header but not the one the writer put on the anchor.
            // Nothing from the anchor on was fsynced (fsyncs cover whole
            // files, in chain order), so that is a tear in front of this
            // segment, unless proven otherwise below.
            let t = TornTail {
                path: anchor.clone(),
                offset: journal::SEGMENT_HEADER_LEN as u64,
                bytes: 0,
                dropped_records: 0,
            };
            tear = Some((t, next));
        }
        if let Some((t, lost)) = &tear {
            // After a torn tail: these records are dropped with it, unless
            // one proves the lost record had reached the disk.
            let scan = journal::scan_segment(&path, map, &header, on_disk, |_, _, _| Ok(()))?;
            let proven = scan.proven_durable.max(on_disk);
            if scan.records > 0 && (header.version < 2 || proven >= *lost) {
                return Err(Error::corruption(
                    &t.path,
                    t.offset,
                    format!(
                        "record {lost} is damaged, and {} holds records written after it reached the disk",
                        path.display()
                    ),
                ));
            }
            report.dropped_records += scan.records;
            report.dropped_segments.push(path.clone());
            match header.seq {
                Some(seq) => {
                    let end = map.len() as u64;
                    repairs.push(Repair::Reset { path: path.clone(), seq, end });
                    out.spares.push((seq, path.clone()));
                }
                None => repairs.push(Repair::Remove(path.clone())),
            }
            continue;
        }
        if first > next {
            return Err(Error::corruption(
                &path,
                16,
                format!("journal resumes at LSN {first} but LSN {next} is missing (segment deleted?)"),
            ));
        }
        let mut replayed = 0;
        let scan = journal::scan_segment(&path, map, &header, on_disk, |lsn, off, body| {
            if lsn < next {
                return Ok(());
            }
            let ops = decode_txn(body)
                .map_err(|e| Error::corruption(&path, off, format!("record {lsn} does not decode: {e}")))?;
            for op in ops {
                state
                    .apply(op)
                    .map_err(|e| Error::corruption(&path, off, format!("record {lsn} does not fit the state: {e}")))?;
            }
            replayed += 1;
            next = lsn + 1;
            Ok(())
        })?;
        report.records_replayed += replayed;
        next = next.max(scan.last_lsn + 1);
        if let Some(seal) = scan.sealed
            && successor != Some(seal.next_seq)
            && !lost.iter().any(|l| l.seq == seal.next_seq)
        {
            if is_last && let Some(i) = interrupted.iter().position(|t| t.seq == seal.next_seq) {
                // The journal continued there: not an interrupted creation.
                let mut t = interrupted.remove(i);
                t.why = format!(
                    "{} ends in a seal saying the journal continues there at LSN {}",
                    path.display(),
                    seal.next_lsn
                );
                if !for_repair {
                    return Err(t.refused(dir));
                }
                lost.push(t);
            } else {
                let named_present = present.contains(&seal.next_seq);
                // A segment below the MANIFEST's anchor may be gone: if a
                // snapshot wrote the MANIFEST, every segment before its
                // anchor was closed when it took its state, so covered and
                // deleted (a power cut can keep any subset of a snapshot's
                // unlinks). If an open wrote it, its anchor's header was
                // durable first, so a later chain segment follows and the
                // LSN check below refuses a gap that held records.
                let deleted_below_anchor = seal.next_seq < manifest.journal_anchor && !named_present;
                let accepted = (is_last && named_present) || deleted_below_anchor;
                // The roll wrote the seal here and the header there, both
                // unsynced, and the power cut kept only the seal: the named
                // segment is unused. Nothing from it on was fsynced (fsyncs
                // cover whole files, in chain order), so the seal is a tear:
                // later segments are dropped unless one proves a record
                // after it reached the disk (then: corruption). No tear can
                // have been found before: segments after one never get here.
                let named_unused = out.spares.iter().any(|(s, _)| *s == seal.next_seq);
                if !accepted && named_unused {
                    let t = TornTail {
                        path: path.clone(),
                        offset: seal.offset,
                        bytes: scan.end - seal.offset,
                        dropped_records: 0,
                    };
                    tear = Some((t, seal.next_lsn));
                    unsealed = Some(seal.offset);
                } else if !accepted {
                    let missing = dir.join(journal::segment_name(seal.next_seq));
                    return Err(Error::corruption(
                        &missing,
                        0,
                        format!(
                            "journal segment is missing: {} ends in a seal saying the journal continues there \
                             at LSN {} (deleted?); restore it from a backup",
                            path.display(),
                            seal.next_lsn
                        ),
                    ));
                }
            }
        }
        if let Some(t) = &scan.torn {
            report.dropped_records += t.dropped_records;
            tear = Some((t.clone(), scan.last_lsn + 1));
        }
        // A seal that is a tear (above) is zeroed: the segment ends before it.
        let (end, sealed) = match unsealed.take() {
            Some(at) => (at, false),
            None => (scan.end, scan.sealed.is_some()),
        };
        prev = (header.version >= 2).then(|| (path.clone(), end, sealed));
        out.used.push(UsedSegment {
            path: path.clone(),
            version: header.version,
            seq: header.seq,
            first_lsn: first,
            last_lsn: scan.last_lsn,
            end,
            sealed,
            next_seq: scan.sealed.as_ref().filter(|_| sealed).map(|seal| seal.next_seq),
            len: map.len() as u64,
        });
    }
    let last_path = chain.last().map(|c| c.path.clone());
    drop(chain);
    if on_disk >= next && on_disk > snap_lsn {
        // Fsynced records are gone: not something a crash or power cut does.
        let path = last_path.unwrap_or_else(|| dir.join(journal::marker::DURABLE_FILE));
        return Err(Error::corruption(
            &path,
            0,
            format!(
                "the journal ends at LSN {}, but it had been fsynced up to LSN {on_disk}: records {}..={on_disk} \
                 are missing (a segment was cut short, deleted or damaged); restore the directory from a backup",
                next - 1,
                next
            ),
        ));
    }
    if let Some((t, _)) = tear {
        repairs.push(Repair::ZeroTail(t.clone()));
        report.torn.push(t);
    }
    for t in interrupted {
        report.torn_segments.push(t.path.clone());
        repairs.push(Repair::Remove(t.path));
    }
    if repair {
        for r in repairs {
            match r {
                Repair::Remove(p) => {
                    let _ = storage::remove_file(&p);
                }
                Repair::Reset { path, seq, end } => prepare::reset(faults, &path, seq, end)
                    .map_err(|e| Error::storage("resetting a journal segment", &path, e))?,
                Repair::ZeroTail(t) => zero_torn_tail(faults, &t)?,
            }
        }
        let _ = storage::sync_dir(dir);
    }
    state.slab.rebuild_free_list();
    state.trim_dlq();
    report.last_lsn = next - 1;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(Loaded { state, report, journal: out, lost })
}

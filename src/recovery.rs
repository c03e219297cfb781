//! Opening a directory: the newest snapshot, then every journal record after
//! its LSN, in order. A torn tail (the newest segment ends in a partial
//! record) is dropped, reported, and zeroed on disk; a damaged record with
//! valid ones after it, a gap in LSNs, or an unreadable snapshot is an error
//! naming the file and offset. Recovery never silently skips data.

use crate::error::{Error, Result};
use crate::journal::{self, TornTail};
use crate::record::decode_txn;
use crate::snapshot;
use crate::state::State;
use crate::types::Lsn;
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
    /// Segments whose header was torn (a crash while creating it); removed.
    pub torn_segments: Vec<PathBuf>,
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
    /// Segments on disk after recovery (first LSN, path), oldest first.
    pub segments: Vec<(Lsn, PathBuf)>,
}

fn parse_name(name: &str, ext: &str) -> Option<Lsn> {
    let stem = name.strip_suffix(ext)?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// Files named by an LSN, sorted by it.
pub(crate) type LsnFiles = Vec<(Lsn, PathBuf)>;

/// Lists `(lsn, path)` of snapshots and segments, each sorted by LSN.
pub(crate) fn list_files(dir: &Path) -> Result<(LsnFiles, LsnFiles)> {
    let mut snaps = Vec::new();
    let mut segs = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| Error::storage("listing the queue directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::storage("listing the queue directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(l) = parse_name(name, ".snap") {
            snaps.push((l, entry.path()));
        } else if let Some(l) = parse_name(name, ".wal") {
            segs.push((l, entry.path()));
        }
    }
    snaps.sort();
    segs.sort();
    Ok((snaps, segs))
}

/// Loads a directory's state. With `repair`, torn tails are zeroed and
/// leftovers (temp files, torn segment headers, segments and snapshots
/// superseded by a newer snapshot) are removed; without it nothing on disk
/// changes (read-only inspection).
/// `slot_limit` bounds the slot of every message id (see `lock::Manifest`).
pub(crate) fn load(
    dir: &Path,
    dlq_capacity: usize,
    slot_limit: usize,
    repair: bool,
    faults: &crate::storage::Faults,
) -> Result<Loaded> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    if repair && let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.contains(".snap.tmp") || n.starts_with("MANIFEST.tmp")) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let (snaps, segs) = list_files(dir)?;

    let (mut state, snap_lsn) = match snaps.last() {
        Some((_, path)) => {
            let data = fs::read(path).map_err(|e| Error::storage("reading snapshot", path, e))?;
            let (state, lsn) = snapshot::decode(path, &data, dlq_capacity, slot_limit)?;
            report.snapshot_path = Some(path.clone());
            (state, lsn)
        }
        None => (State::new(dlq_capacity, slot_limit), 0),
    };
    report.snapshot_lsn = snap_lsn;
    if repair {
        for (_, p) in &snaps[..snaps.len().saturating_sub(1)] {
            let _ = fs::remove_file(p);
        }
    }

    let mut next = snap_lsn + 1;
    let mut kept: Vec<(Lsn, PathBuf)> = Vec::new();
    let mut torn_at: Option<TornTail> = None;
    for (i, (name_lsn, path)) in segs.iter().enumerate() {
        let is_last = i + 1 == segs.len();
        let Some(map) = journal::map_for_read(path)? else {
            if is_last {
                report.torn_segments.push(path.clone());
                if repair {
                    let _ = fs::remove_file(path);
                }
                continue;
            }
            return Err(Error::corruption(path, 0, "empty journal segment before newer ones"));
        };
        let Some(first) = journal::read_segment_header(path, &map)? else {
            if is_last {
                report.torn_segments.push(path.clone());
                if repair {
                    let _ = fs::remove_file(path);
                }
                continue;
            }
            return Err(Error::corruption(path, 0, "segment header is damaged and newer segments follow"));
        };
        if first != *name_lsn {
            return Err(Error::corruption(
                path,
                16,
                format!("header says first LSN {first}, file name says {name_lsn}"),
            ));
        }
        // Wholly covered by the snapshot: skip without reading records.
        if let Some((next_first, _)) = segs.get(i + 1)
            && *next_first <= snap_lsn + 1
        {
            if repair {
                let _ = fs::remove_file(path);
            } else {
                kept.push((first, path.clone()));
            }
            continue;
        }
        if first > next {
            return Err(Error::corruption(
                path,
                16,
                format!("journal resumes at LSN {first} but LSN {next} is missing (segment deleted?)"),
            ));
        }
        let scan = journal::scan_segment(path, &map, first, |lsn, off, body| {
            if lsn < next {
                return Ok(());
            }
            let ops = decode_txn(body)
                .map_err(|e| Error::corruption(path, off, format!("record {lsn} does not decode: {e}")))?;
            for op in ops {
                state
                    .apply(op)
                    .map_err(|e| Error::corruption(path, off, format!("record {lsn} does not fit the state: {e}")))?;
            }
            report.records_replayed += 1;
            next = lsn + 1;
            Ok(())
        })?;
        if scan.last_lsn >= next {
            next = scan.last_lsn + 1;
        }
        if let Some(t) = &torn_at
            && scan.records > 0
        {
            // A damaged end of an older segment with records after it is
            // corruption, not a torn tail.
            return Err(Error::corruption(
                &t.path,
                t.offset,
                "record fails its CRC check and a newer segment holds records",
            ));
        }
        if is_last && scan.records == 0 && first == next {
            // The newest segment holds no record (at most a torn one): the
            // writer starts a fresh segment at this LSN, so this one goes.
            if let Some(t) = scan.torn {
                report.torn.push(t);
            }
            if repair {
                drop(map);
                let _ = fs::remove_file(path);
            } else {
                kept.push((first, path.clone()));
            }
            continue;
        }
        if let Some(t) = scan.torn {
            torn_at = Some(t);
        }
        kept.push((first, path.clone()));
    }
    if let Some(t) = torn_at {
        if repair {
            journal::zero_torn_tail(faults, &t)?;
        }
        report.torn.push(t);
    }
    state.slab.rebuild_free_list();
    report.last_lsn = next - 1;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(Loaded { state, report, segments: kept })
}

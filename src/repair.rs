//! `ringq repair PATH`: an explicit, reported way past damage that recovery
//! refuses to open silently. It never invents data; it accepts a loss that
//! already happened and says what it was:
//!
//! - a journal segment cut short is extended back to its size with zeros
//!   (the records before the cut stay; what was after it is gone);
//! - a segment in use that lost its header (cut below it, emptied or
//!   zeroed) is made an unused segment again (its records are gone);
//! - a lost or outdated `MANIFEST` is rebuilt from the files present (a lost
//!   one gets a new instance id: deliveries taken before are then refused);
//! - a `DURABLE` marker past the end of the journal (fsynced records that
//!   are gone) is lowered to the journal's end.
//!
//! Damage in the middle of the journal (a bad record before records that
//! prove it was on disk) is not repaired: restore from a backup.
//! The directory must not be owned by a running process.

use crate::error::{Error, Result};
use crate::journal::{self, marker, prepare};
use crate::lock::DirLock;
use crate::manifest::{self, Manifest};
use crate::recovery;
use crate::storage::{self, Faults};
use std::fs;
use std::path::Path;

/// What `repair` found and changed.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// One line per change, in the order made.
    pub changes: Vec<String>,
    /// The journal's last LSN after the repair.
    pub last_lsn: u64,
    /// The directory's instance id after the repair.
    pub instance_id: u64,
}

/// Refuses, before anything is changed, a directory holding a file a newer
/// ringq wrote: a MANIFEST, POLICIES or snapshot of a newer format whose
/// CRC holds. Read as damage, the MANIFEST would be rebuilt in this
/// build's format (letting builds that cannot read the queue open it) and
/// the POLICIES removed.
fn refuse_newer_formats(dir: &Path, files: &recovery::Listing) -> Result<()> {
    let found = manifest::newer_format(dir)
        .map(|v| (dir.join(manifest::MANIFEST_FILE), v))
        .or_else(|| crate::policies::newer_format(dir).map(|v| (dir.join(crate::policies::POLICIES_FILE), v)))
        .or_else(|| files.snapshots.iter().find_map(|(_, p)| crate::snapshot::newer_format(p).map(|v| (p.clone(), v))));
    match found {
        Some((path, v)) => Err(Error::Invalid(format!(
            "{}: format {v} was written by a newer ringq than this one; nothing was changed (repair it with that \
             version or a later one)",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Repairs `dir` (see the module docs).
pub fn repair(dir: &Path) -> Result<RepairReport> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", dir.display())));
    }
    // Looked at before the lock is taken: a directory that holds no queue
    // is refused without a LOCK file left in it.
    let no_queue =
        || Error::Invalid(format!("{} holds no ringq queue (no MANIFEST, journal or snapshot)", dir.display()));
    let listed = recovery::list_files(dir)?;
    if !listed.holds_queue_files() && manifest::read(dir).ok().flatten().is_none() {
        // A MANIFEST a newer ringq wrote does not read here: said as such.
        refuse_newer_formats(dir, &listed)?;
        return Err(no_queue());
    }
    let _lock = DirLock::acquire(dir)?;
    let mut report = RepairReport::default();
    let files = recovery::list_files(dir)?;
    if !files.holds_queue_files() && manifest::read(dir).ok().flatten().is_none() {
        return Err(no_queue());
    }
    refuse_newer_formats(dir, &files)?;
    // Topic policies that do not read: removed (each is set again when its
    // handler starts; the queue's max_attempts applies until then).
    if let Err(e @ Error::Corruption { .. }) = crate::policies::read(dir) {
        let path = dir.join(crate::policies::POLICIES_FILE);
        fs::remove_file(&path).map_err(|e| Error::storage("removing", &path, e))?;
        storage::sync_dir(dir).map_err(|e| Error::storage("fsync of", dir, e))?;
        report.changes.push(format!("{e}; removed"));
    }
    // Segments cut short: back to their size (zeros after the cut).
    let mut newest_used: Option<u64> = None;
    for (seq, path) in &files.segments {
        let Some(map) = journal::map_for_read(path)? else { continue };
        let Ok(Some(h)) = journal::read_segment_header(path, &map) else { continue };
        let len = map.len() as u64;
        drop(map);
        if let Some(size) = h.size
            && len < size
        {
            let f = fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::storage("opening", path, e))?;
            f.set_len(size).map_err(|e| Error::storage("extending", path, e))?;
            f.sync_all().map_err(|e| Error::storage("fsync of", path, e))?;
            report.changes.push(format!(
                "{}: was cut short at byte {len} of {size}; extended with zeros (records after byte {len} are lost)",
                path.display()
            ));
        }
        if !h.is_unused() {
            newest_used = Some(*seq);
        }
    }
    let old = match manifest::read(dir) {
        Ok(m) => m,
        Err(e) => {
            report.changes.push(format!("the MANIFEST was unreadable ({e}); rebuilt"));
            None
        }
    };
    let snapshot_lsn = files.snapshots.last().map_or(0, |(l, _)| *l);
    let anchor = newest_used.unwrap_or(0);
    let mut m = old.unwrap_or_default();
    if old.is_none() {
        m.instance_id = manifest::random_u64();
        report.changes.push(format!(
            "the MANIFEST was missing; rebuilt with a new instance id {}",
            crate::error::fmt_id(m.instance_id)
        ));
    } else if m.instance_id == 0 {
        m.instance_id = manifest::random_u64();
    }
    if m.journal_anchor != 0
        && m.journal_anchor != anchor
        && !files.segments.iter().any(|(s, _)| *s == m.journal_anchor)
    {
        report.changes.push(format!(
            "journal segment {} named by the MANIFEST is missing; the journal now continues in {}",
            journal::segment_name(m.journal_anchor),
            if anchor == 0 { "a new segment".to_owned() } else { journal::segment_name(anchor) }
        ));
    }
    if m.snapshot_lsn > snapshot_lsn {
        report.changes.push(format!(
            "snapshot {} named by the MANIFEST is missing; the newest present is used",
            crate::snapshot::snapshot_name(m.snapshot_lsn)
        ));
    }
    // Read everything as recovery would (no slot bound beyond the id space:
    // this is an explicit operator action), without the durable marker; the
    // old anchor only says which headerless segment was in use.
    let bound = m.slot_bound(0);
    let probe = Manifest { snapshot_lsn: 0, ..m };
    m.journal_anchor = anchor;
    m.snapshot_lsn = snapshot_lsn;
    let on_disk = marker::read(dir);
    let loaded = recovery::load_for_repair(dir, bound, &probe)?;
    for l in &loaded.lost {
        prepare::remake_unused(&Faults::default(), &l.path, l.seq)
            .map_err(|e| Error::storage("rewriting the header of", &l.path, e))?;
        report.changes.push(format!(
            "{}: {}, but the journal was in use there ({}); made an unused segment (the records it held are lost)",
            l.path.display(),
            l.what(),
            l.why
        ));
    }
    let last = loaded.report.last_lsn;
    if on_disk > last {
        fs::remove_file(dir.join(marker::DURABLE_FILE))
            .map_err(|e| Error::storage("removing", dir.join(marker::DURABLE_FILE), e))?;
        report.changes.push(format!(
            "the journal ends at LSN {last} but had been fsynced up to {on_disk}: records {}..={on_disk} are lost",
            last + 1
        ));
    }
    let slots = loaded.state.slab.slot_count();
    m.slot_limit = Some(m.slot_limit.unwrap_or(0).max(u32::try_from(slots).unwrap_or(u32::MAX)));
    m.version = manifest::MANIFEST_VERSION;
    if old != Some(m) {
        manifest::write(dir, &m)?;
    }
    report.last_lsn = last;
    report.instance_id = m.instance_id;
    Ok(report)
}

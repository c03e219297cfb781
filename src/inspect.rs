//! Read-only inspection of a queue directory: what `ringq inspect` and
//! `ringq verify` show. It reads the newest snapshot and every journal
//! record (checking each CRC and decoding each operation, exactly as
//! recovery does) without taking the directory lock and without changing a
//! byte, so it works while another process owns the queue. A record being
//! written by that owner at this moment can show up as a torn tail.

use crate::error::Result;
use crate::lock;
use crate::manifest::{self, Manifest};
use crate::recovery;
use crate::storage::Faults;
use crate::types::{DeadLetter, Lsn, Message, MsgState};
use std::path::{Path, PathBuf};

/// Per-topic counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCounts {
    pub name: String,
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// What a queue directory holds, as recovery would see it.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub path: PathBuf,
    /// The pid in `LOCK`, if a process holds the directory now.
    pub owner_pid: Option<u32>,
    pub epoch: u64,
    pub slot_limit: Option<u32>,
    /// The directory's identity (0 before its first open by format 3).
    pub instance_id: u64,
    /// Records a torn tail dropped (a power cut lost pages in front of them).
    pub dropped_records: u64,
    pub snapshot_path: Option<PathBuf>,
    pub snapshot_lsn: Lsn,
    pub last_lsn: Lsn,
    pub records_replayed: u64,
    pub segments: Vec<PathBuf>,
    pub torn_tail_bytes: u64,
    pub torn_tail_at: Option<(PathBuf, u64)>,
    pub topics: Vec<TopicCounts>,
    pub dead: u64,
    pub dedup_keys: u64,
    pub seconds: f64,
}

/// The directory's state as recovery would rebuild it, read-only.
fn load(dir: &Path) -> Result<(Manifest, recovery::Loaded)> {
    let manifest = match dir.is_dir().then(|| manifest::read(dir)).transpose()?.flatten() {
        Some(m) => m,
        None => {
            if dir.is_dir() && recovery::list_files(dir)?.holds_queue_files() {
                // What `Engine::open` says too.
                return Err(crate::engine::missing_manifest(dir, &recovery::list_files(dir)?));
            }
            return Err(crate::Error::Invalid(format!(
                "{} is not a ringq queue directory (no {})",
                dir.display(),
                manifest::MANIFEST_FILE
            )));
        }
    };
    let bound = manifest.slot_bound(0);
    let loaded = recovery::load(dir, usize::MAX, bound, 0, false, &Faults::default(), &manifest)?;
    Ok((manifest, loaded))
}

/// Up to `limit` messages of `topic`: ready ones in delivery order, then
/// the ready ones waiting behind their ordering key, by id, then delayed and
/// in-flight ones by id (read-only, like `inspect`).
pub fn peek(dir: &Path, topic: &str, limit: usize) -> Result<Vec<Message>> {
    let (_, loaded) = load(dir)?;
    let st = &loaded.state;
    let Some(tid) = st.topic_id(topic) else { return Ok(Vec::new()) };
    let t = &st.topics[tid as usize];
    let mut out: Vec<Message> =
        t.ready.live_ids(&st.slab).filter_map(|id| st.slab.get(id)).take(limit).cloned().collect();
    if out.len() < limit && !t.keys.is_empty() {
        let mut waiting: Vec<&Message> = st.slab.iter().filter(|m| m.topic == tid && st.is_parked(m)).collect();
        waiting.sort_by_key(|m| m.id);
        out.extend(waiting.into_iter().take(limit - out.len()).cloned());
    }
    if out.len() < limit {
        let mut rest: Vec<&Message> = st.slab.iter().filter(|m| m.topic == tid && m.state != MsgState::Ready).collect();
        rest.sort_by_key(|m| m.id);
        out.extend(rest.into_iter().take(limit - out.len()).cloned());
    }
    Ok(out.into_iter().map(detached).collect())
}

/// `m` with its payload in the heap: a result that is kept does not keep
/// the snapshot it was read from mapped (see `payload::MappedFile`).
fn detached(mut m: Message) -> Message {
    m.payload = m.payload.to_heap();
    m
}

/// Up to `limit` dead letters, oldest first (read-only, like `inspect`).
pub fn dead_letters(dir: &Path, limit: usize) -> Result<Vec<DeadLetter>> {
    let (_, loaded) = load(dir)?;
    let dead = loaded.state.dlq.iter().take(limit).cloned();
    Ok(dead.map(|d| DeadLetter { message: detached(d.message), ..d }).collect())
}

/// Inspects `dir`; a damaged file is `Error::Corruption` naming file and offset.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    let (manifest, loaded) = load(dir)?;
    // Read as an open reads it: a damaged file is reported here too.
    crate::policies::read(dir)?;
    let st = &loaded.state;
    let r = &loaded.report;
    Ok(Inspection {
        path: dir.to_owned(),
        owner_pid: lock::locked_by(dir),
        epoch: manifest.epoch,
        slot_limit: manifest.slot_limit,
        instance_id: manifest.instance_id,
        dropped_records: r.dropped_records,
        snapshot_path: r.snapshot_path.clone(),
        snapshot_lsn: r.snapshot_lsn,
        last_lsn: r.last_lsn,
        records_replayed: r.records_replayed,
        segments: loaded.journal.used.iter().map(|s| s.path.clone()).collect(),
        torn_tail_bytes: r.torn_bytes(),
        torn_tail_at: r.torn.first().map(|t| (t.path.clone(), t.offset)),
        topics: st
            .topics
            .iter()
            .map(|t| TopicCounts {
                name: t.name.to_string(),
                ready: t.n_ready as u64,
                in_flight: t.n_in_flight as u64,
                delayed: t.n_delayed as u64,
            })
            .collect(),
        dead: st.dlq.len() as u64,
        dedup_keys: st.dedup.len() as u64,
        seconds: r.seconds,
    })
}

//! Snapshots: the whole state at an LSN, written to a temp file, fsynced,
//! renamed, and the directory fsynced (`storage::write_atomic`). After a
//! snapshot is durable, journal segments wholly at or before its LSN are
//! deleted, so disk use follows live data, not history.
//!
//! Layout (`docs/format.md`): a 40-byte header — magic `RINGQSNP`, format
//! version (u32), header length (u32), LSN (u64), body length (u64), body
//! CRC32C (u32), header CRC32C (u32) — then the body: next sequence, topic
//! names, messages (each topic's ready list in order, then the ready ones
//! waiting behind their ordering key, then the delayed and in-flight ones),
//! dead letters, the eviction count and (format 2) the remembered dedup keys.

use crate::codec::{DResult, Reader, Writer};
use crate::error::{Error, Result};
use crate::payload::{MappedFile, Payload};
use crate::record::{decode_failure, decode_message_with, encode_failure, encode_message};
use crate::state::State;
use crate::types::{DeadLetter, Lsn, Message, MsgState};
use std::path::Path;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"RINGQSNP";
/// Format 2 adds the remembered dedup keys after the eviction count.
pub const SNAPSHOT_VERSION: u32 = 2;
pub const SNAPSHOT_HEADER_LEN: usize = 40;

/// The format of a snapshot file newer than this build reads (its header's
/// CRC holds: written by a newer ringq, not damaged), if it is one.
pub fn newer_format(path: &Path) -> Option<u32> {
    use std::io::Read;
    let mut h = [0u8; SNAPSHOT_HEADER_LEN];
    std::fs::File::open(path).ok()?.read_exact(&mut h).ok()?;
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4"));
    let version = u32_at(8);
    (&h[0..8] == SNAPSHOT_MAGIC && crc32c::crc32c(&h[0..36]) == u32_at(36) && version > SNAPSHOT_VERSION)
        .then_some(version)
}

pub fn snapshot_name(lsn: Lsn) -> String {
    format!("{lsn:020}.snap")
}

/// What a snapshot holds, taken from the state under the engine's lock:
/// messages are copied field by field, but their payloads are shared (no
/// bytes copied), so taking it is a fraction of encoding it, which happens
/// after the lock is released.
pub(crate) struct Image {
    next_seq: u64,
    topics: Vec<std::sync::Arc<str>>,
    /// Each topic's ready list in order, then the delayed and in-flight ones.
    messages: Vec<Message>,
    dead: Vec<DeadLetter>,
    dlq_evicted: u64,
    /// Dedup keys of acked messages whose window is still open:
    /// (topic index, key, id, until).
    remembered: Vec<(u32, Box<str>, u64, u64)>,
}

/// Room for an image of `n` messages, made before the engine's lock is
/// taken: the kernel zeroes a fresh allocation's pages at their first
/// write, and an image of 1M messages (80 MB) used to take those faults
/// while every publish waited for the lock. One byte per page is written
/// here to fault them in.
pub(crate) fn message_room(n: usize) -> Vec<Message> {
    use crate::journal::PAGE;
    let mut room: Vec<Message> = Vec::with_capacity(n);
    let spare = room.spare_capacity_mut();
    let bytes = std::mem::size_of_val(spare);
    let base = spare.as_mut_ptr().cast::<u8>();
    for at in (0..bytes).step_by(PAGE) {
        // SAFETY: `at` < `bytes`, inside the allocation's spare capacity,
        // which may hold anything until a message is pushed there.
        unsafe { base.add(at).write_volatile(0) };
    }
    room
}

/// Takes the image of `state` (see [`Image`]) into `room` (empty; see
/// [`message_room`]; it grows if it is too small).
pub(crate) fn collect(state: &State, now: u64, mut messages: Vec<Message>) -> Image {
    messages.clear();
    messages.reserve(state.slab.live());
    for t in &state.topics {
        messages.extend(t.ready.live_ids(&state.slab).map(|id| state.slab.get(id).expect("ready id is live").clone()));
    }
    // Ready messages waiting behind their ordering key's head are on no
    // ready list; on load they wait again (see `State::key_insert`). Then
    // the delayed and in-flight ones. Each pass reads the whole slab, so it
    // is skipped when the counts say it would find nothing.
    if state.topics.iter().any(|t| t.lines.len() > t.free_lines.len()) {
        messages.extend(state.slab.iter().filter(|m| state.is_parked(m)).cloned());
    }
    if state.topics.iter().any(|t| t.n_in_flight + t.n_delayed > 0) {
        messages.extend(state.slab.iter().filter(|m| m.state != MsgState::Ready).cloned());
    }
    Image {
        next_seq: state.next_seq,
        topics: state.topics.iter().map(|t| t.name.clone()).collect(),
        messages,
        dead: state.dlq.iter().cloned().collect(),
        dlq_evicted: state.dlq_evicted,
        remembered: state.remembered.live(now).map(|(t, k, id, until)| (t, k.into(), id, until)).collect(),
    }
}

/// Encodes an image as of `lsn` into a complete snapshot file.
pub(crate) fn encode(image: &Image, lsn: Lsn) -> Vec<u8> {
    let mut buf = vec![0u8; SNAPSHOT_HEADER_LEN];
    // Rough size: payloads plus ~64 bytes of fields per message.
    buf.reserve(image.messages.iter().map(|m| m.payload.len() + 64).sum());
    let mut w = Writer::new(&mut buf);
    w.u64(image.next_seq);
    w.u32(image.topics.len() as u32);
    for t in &image.topics {
        w.str(t);
    }
    w.u32(image.messages.len() as u32);
    for m in &image.messages {
        w.u32(m.topic);
        encode_message(&mut w, m);
    }
    w.u32(image.dead.len() as u32);
    for d in &image.dead {
        w.str(&d.topic);
        w.str(&d.reason);
        encode_failure(&mut w, &d.failure);
        w.u64(d.dead_lettered_at);
        encode_message(&mut w, &d.message);
    }
    w.u64(image.dlq_evicted);
    w.u32(image.remembered.len() as u32);
    for (topic, key, id, until) in &image.remembered {
        w.u32(*topic);
        w.str(key);
        w.u64(*id);
        w.u64(*until);
    }
    let body_len = (buf.len() - SNAPSHOT_HEADER_LEN) as u64;
    let body_crc = crc32c::crc32c(&buf[SNAPSHOT_HEADER_LEN..]);
    let h = &mut buf[..SNAPSHOT_HEADER_LEN];
    h[0..8].copy_from_slice(SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SNAPSHOT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..32].copy_from_slice(&body_len.to_le_bytes());
    h[32..36].copy_from_slice(&body_crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..36]);
    h[36..40].copy_from_slice(&hcrc.to_le_bytes());
    buf
}

/// The snapshot at `path`, mapped read-only for a walk from front to back:
/// no copy of the whole image into a heap buffer. Snapshots are written
/// under another name and renamed into place, and only ever removed whole,
/// so the mapping never sees its file change.
pub(crate) fn map(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::storage("opening snapshot", path, e))?;
    // SAFETY: read-only view of a file nobody writes or truncates (above).
    let map =
        unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|e| Error::storage("mapping snapshot", path, e))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// Decodes the mapped snapshot `file` (see [`decode`]). The messages'
/// payloads point into the file instead of being copied into the heap
/// (`payload::MappedFile`). The pages behind each pass are dropped from the
/// process as it goes: the CRC pass and the decoding pass each keep at most
/// a few MiB of the file mapped in, so opening a queue does not hold its
/// snapshot in memory (RSS). The pages stay in the page cache; the kernel
/// may reclaim them, and a payload read later faults its page back in.
pub(crate) fn decode_mapped(
    path: &Path,
    file: &MappedFile,
    dlq_capacity: usize,
    slot_limit: usize,
    capacity: usize,
) -> Result<(State, Lsn)> {
    let done = std::cell::Cell::new(0usize);
    let page = crate::journal::PAGE;
    let map = file.map();
    let release = |upto: usize| {
        // Called with 0 when a pass starts over at the front.
        if upto < done.get() {
            done.set(0);
            return;
        }
        let end = (upto / page * page).min(map.len());
        if end >= done.get() + RELEASE_EVERY {
            file.release_pages(done.get(), end - done.get());
            done.set(end);
        }
    };
    decode_with(path, map, dlq_capacity, slot_limit, capacity, &release, &|b| file.payload(b))
}

/// How far a pass goes between two releases of the pages behind it.
const RELEASE_EVERY: usize = 4 << 20;

/// Decodes a snapshot file image into a state and its LSN.
pub(crate) fn decode(path: &Path, data: &[u8], dlq_capacity: usize, slot_limit: usize) -> Result<(State, Lsn)> {
    decode_with(path, data, dlq_capacity, slot_limit, 0, &|_| {}, &Payload::new)
}

/// `decode`, telling `release` how far into `data` each pass has read (0
/// when a pass starts).
fn decode_with(
    path: &Path,
    data: &[u8],
    dlq_capacity: usize,
    slot_limit: usize,
    capacity: usize,
    release: &dyn Fn(usize),
    payload: &dyn Fn(&[u8]) -> Payload,
) -> Result<(State, Lsn)> {
    let bad = |off: usize, what: String| Error::corruption(path, off as u64, what);
    if data.len() < SNAPSHOT_HEADER_LEN || &data[0..8] != SNAPSHOT_MAGIC {
        return Err(bad(0, "not a ringq snapshot (bad magic or too short)".into()));
    }
    let h = &data[..SNAPSHOT_HEADER_LEN];
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8"));
    if crc32c::crc32c(&h[0..36]) != u32_at(36) {
        return Err(bad(0, "snapshot header fails its CRC check".into()));
    }
    let version = u32_at(8);
    if version > SNAPSHOT_VERSION {
        return Err(bad(8, format!("snapshot format {version} is newer than this ringq reads; upgrade ringq")));
    }
    if version == 0 {
        return Err(bad(8, "snapshot format 0 (no ringq writes it): damaged header".into()));
    }
    if u32_at(12) as usize != SNAPSHOT_HEADER_LEN {
        return Err(bad(12, format!("header length {} (format {version} has {SNAPSHOT_HEADER_LEN})", u32_at(12))));
    }
    let lsn = u64_at(16);
    if lsn == Lsn::MAX {
        // No record has LSN u64::MAX (nothing could follow it), so no
        // snapshot is as of it; recovery would compute `lsn + 1`.
        return Err(bad(16, "snapshot LSN u64::MAX (no ringq writes it): damaged header".into()));
    }
    let body_len = u64_at(24) as usize;
    let body = data
        .get(SNAPSHOT_HEADER_LEN..SNAPSHOT_HEADER_LEN.saturating_add(body_len))
        .ok_or_else(|| bad(SNAPSHOT_HEADER_LEN, format!("body of {body_len} bytes is cut short")))?;
    if data.len() != SNAPSHOT_HEADER_LEN + body_len {
        return Err(bad(
            SNAPSHOT_HEADER_LEN + body_len,
            format!("{} bytes after the snapshot body", data.len() - SNAPSHOT_HEADER_LEN - body_len),
        ));
    }
    if let Some(name_lsn) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".snap"))
        && let Ok(name_lsn) = name_lsn.parse::<u64>()
        && name_lsn != lsn
    {
        return Err(bad(16, format!("header says LSN {lsn}, file name says {name_lsn}")));
    }
    let mut crc = 0;
    for (i, chunk) in body.chunks(RELEASE_EVERY).enumerate() {
        crc = crc32c::crc32c_append(crc, chunk);
        release(SNAPSHOT_HEADER_LEN + i * RELEASE_EVERY + chunk.len());
    }
    if crc != u32_at(32) {
        return Err(bad(SNAPSHOT_HEADER_LEN, "snapshot body fails its CRC check".into()));
    }
    release(0);
    let mut r = Reader::new(body);
    let state = decode_body(
        &mut r,
        version,
        dlq_capacity,
        slot_limit,
        capacity,
        &|pos| release(SNAPSHOT_HEADER_LEN + pos),
        payload,
    )
    .map_err(|e| bad(SNAPSHOT_HEADER_LEN + r.pos(), format!("undecodable snapshot body: {}", e.0)))?;
    Ok((state, lsn))
}

fn decode_body(
    r: &mut Reader<'_>,
    version: u32,
    dlq_capacity: usize,
    slot_limit: usize,
    capacity: usize,
    release: &dyn Fn(usize),
    payload: &dyn Fn(&[u8]) -> Payload,
) -> DResult<State> {
    use crate::codec::DecodeError;
    let mut state = State::new(dlq_capacity, slot_limit);
    state.next_seq = r.u64()?;
    let nt = r.count(4)?;
    for _ in 0..nt {
        let name = r.str()?;
        state.intern(name);
    }
    let nm = r.count(40)?;
    // Before the first slot is used: the capacity, or as many as there are
    // messages if more (their slots may reach further; then it grows).
    state.slab.reserve(nm.max(capacity));
    if let [t] = &mut state.topics[..] {
        t.ready.reserve(nm);
    }
    for i in 0..nm {
        if i % 4096 == 0 {
            release(r.pos());
        }
        let topic = r.u32()?;
        if topic as usize >= state.topics.len() {
            return Err(DecodeError(format!("message names topic {topic} of {}", state.topics.len())));
        }
        let m = decode_message_with(r, topic, payload)?;
        let op = crate::record::Op::Enqueue { topic: crate::record::TopicRef::Id(topic), msg: m, supersedes: None };
        // An in-flight message goes in as such: apply() refuses in-flight
        // enqueues, so place it ready and check it out without an attempt.
        apply_snapshot_message(&mut state, op).map_err(DecodeError)?;
    }
    let nd = r.count(40)?;
    for _ in 0..nd {
        let topic = r.string()?;
        let reason = r.string()?;
        let failure = decode_failure(r)?;
        let dead_lettered_at = r.u64()?;
        let message = decode_message_with(r, 0, payload)?;
        state.dlq.push(DeadLetter { message, topic, reason, failure, dead_lettered_at }, usize::MAX);
    }
    state.dlq_evicted = r.u64()?;
    if version >= 2 {
        let n = r.count(24)?;
        for _ in 0..n {
            let topic = r.u32()?;
            if topic as usize >= state.topics.len() {
                return Err(DecodeError(format!("remembered key names topic {topic} of {}", state.topics.len())));
            }
            let key = r.str()?;
            let (id, until) = (r.u64()?, r.u64()?);
            state.remembered.set(topic, key, id, until);
        }
    }
    if !r.is_empty() {
        return Err(DecodeError("trailing bytes after the snapshot body".into()));
    }
    Ok(state)
}

fn apply_snapshot_message(state: &mut State, op: crate::record::Op) -> std::result::Result<(), String> {
    let crate::record::Op::Enqueue { topic, mut msg, .. } = op else { unreachable!() };
    let in_flight = msg.state == MsgState::InFlight;
    if in_flight {
        msg.state = MsgState::Ready;
    }
    let (id, attempt) = (msg.id, msg.attempt);
    state.apply(crate::record::Op::Enqueue { topic, msg, supersedes: None })?;
    if in_flight {
        state.apply(crate::record::Op::Checkout { ids: vec![id] })?;
        state.slab.get_mut(id).expect("just added").attempt = attempt;
    }
    Ok(())
}

/// Decodes a snapshot image completely (every message and dead letter) and
/// returns its LSN; for `verify` tools and the fuzzer. Message slots must be
/// below `slot_limit` (`manifest::read(dir)?.map_or(.., |m| m.slot_bound(capacity))`).
pub fn verify(path: &Path, data: &[u8], slot_limit: usize) -> Result<Lsn> {
    decode(path, data, usize::MAX, slot_limit).map(|(_, lsn)| lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_at_lsn_u64_max_is_corruption_not_an_overflow() {
        // No record has LSN u64::MAX, so neither does a snapshot; recovery
        // continued at `snap_lsn + 1`.
        let image = collect(&State::new(10, 100), 0, Vec::new());
        let data = encode(&image, Lsn::MAX);
        match verify(Path::new("x.snap"), &data, 100) {
            Err(Error::Corruption { offset: 16, detail, .. }) => assert!(detail.contains("u64::MAX"), "{detail}"),
            other => panic!("expected corruption at offset 16, got {other:?}"),
        }
        assert_eq!(verify(Path::new("x.snap"), &encode(&image, Lsn::MAX - 1), 100).unwrap(), Lsn::MAX - 1);
    }

    /// A state of ready messages of topic "t" with `payloads`, in slots
    /// 0, 1, ... (below `slot_limit`).
    fn ready_state<'a>(payloads: impl IntoIterator<Item = &'a [u8]>, slot_limit: usize) -> State {
        let mut st = State::new(10, slot_limit);
        for (i, payload) in payloads.into_iter().enumerate() {
            let msg = crate::types::Message {
                id: ((i as u64 + 1) << crate::types::SLOT_BITS) | i as u64,
                topic: 0,
                state: crate::types::MsgState::Ready,
                superseded: false,
                attempt: 0,
                version: 1,
                enqueued_at: 7,
                visible_at: 0,
                lease_token: 0,
                lease_deadline: 0,
                ticket: 0,
                line: crate::types::NO_LINE,
                payload: payload.into(),
                meta: None,
            };
            st.apply(crate::record::Op::Enqueue { topic: "t".into(), msg, supersedes: None }).unwrap();
        }
        st
    }

    /// A snapshot of one topic reserves its ready list for all its messages
    /// at once (growing by doubling left buffers behind: `reopen_1m`'s peak).
    #[test]
    fn one_topics_ready_list_is_reserved_once() {
        let payloads: Vec<[u8; 3]> = (0..5000u32).map(|i| [i as u8; 3]).collect();
        let st = ready_state(payloads.iter().map(|p| &p[..]), 8192);
        let data = encode(&collect(&st, 0, Vec::new()), 5);
        let (loaded, _) = decode(Path::new("x.snap"), &data, 10, 8192).unwrap();
        assert_eq!(loaded.topics.len(), 1);
        let ready = &loaded.topics[0].ready;
        assert!(ready.capacity() >= 5000, "capacity {}", ready.capacity());
        // Doubling from 4 reaches 8192 (and over-reserves by 3192).
        assert!(ready.capacity() < 8192, "capacity {}", ready.capacity());
    }

    /// The room made before the lock holds nothing and has the capacity
    /// asked for; an image taken into it is the same whatever its size
    /// (too small, it grows).
    #[test]
    fn an_image_taken_into_prepared_room_is_the_same_whatever_its_size() {
        let payloads: Vec<[u8; 3]> = (0..50u8).map(|i| [i; 3]).collect();
        let st = ready_state(payloads.iter().map(|p| &p[..]), 64);
        let plain = encode(&collect(&st, 0, Vec::new()), 5);
        for n in [0, 10, 50, 1000, 100_000] {
            let room = message_room(n);
            assert!(room.is_empty() && room.capacity() >= n, "room for {n}");
            assert_eq!(encode(&collect(&st, 0, room), 5), plain, "room for {n}");
        }
    }

    /// A snapshot several release steps long, decoded from its mapping
    /// (pages released behind each pass), gives the state the in-memory
    /// decode gives; a flipped byte near the end still fails the CRC.
    #[test]
    fn a_mapped_snapshot_released_as_it_is_read_decodes_like_the_bytes() {
        let _table = crate::payload::TABLE_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = 3 * RELEASE_EVERY / 120;
        let payloads: Vec<[u8; 100]> = (0..n).map(|i| [(i % 251) as u8; 100]).collect();
        let st = ready_state(payloads.iter().map(|p| &p[..]), n + 1);
        let data = encode(&collect(&st, 0, Vec::new()), 42);
        assert!(data.len() > 2 * RELEASE_EVERY, "{} bytes", data.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(snapshot_name(42));
        std::fs::write(&path, &data).unwrap();
        let file = MappedFile::new(map(&path).unwrap());
        let (mapped, lsn) = decode_mapped(&path, &file, 10, n + 1, 0).unwrap();
        let (plain, _) = decode(&path, &data, 10, n + 1).unwrap();
        assert_eq!(lsn, 42);
        assert_eq!(encode(&collect(&mapped, 0, Vec::new()), 42), encode(&collect(&plain, 0, Vec::new()), 42));
        assert_eq!(mapped.slab.live(), n);
        // With a capacity, the slab is sized for it before the first
        // message goes in (no growth, no copy, when the engine opens).
        let (sized, _) = decode_mapped(&path, &file, 10, 4 * n, 3 * n).unwrap();
        assert_eq!(sized.slab.reserved(), 3 * n);
        assert!(mapped.slab.reserved() >= n);
        // The payloads still point into the file, readable after every page
        // was dropped from the process (they fault back in).
        file.release_pages(0, usize::MAX);
        drop((sized, file));
        let first = mapped.slab.iter().next().unwrap();
        assert!(first.payload.is_mapped() && !plain.slab.iter().next().unwrap().payload.is_mapped());
        assert_eq!(first.payload.strong_count(), n);
        assert_eq!(encode(&collect(&mapped, 0, Vec::new()), 42), data);
        let bad_path = dir.path().join(snapshot_name(43));
        let mut bad = data.clone();
        let at = bad.len() - 10;
        bad[at] ^= 1;
        std::fs::write(&bad_path, &bad).unwrap();
        let bad_file = MappedFile::new(super::map(&bad_path).unwrap());
        assert!(matches!(decode_mapped(&bad_path, &bad_file, 10, n + 1, 43), Err(Error::Corruption { .. })));
        assert_eq!(bad_file.payloads(), 0, "a failed decode leaves no payload pointing into the file");
        drop(bad_file);
        assert!(!maps(&bad_path));
    }

    /// A payload taken out of a decoded snapshot keeps the file mapped after
    /// the state and the file handle are gone, and the last one unmaps it.
    #[test]
    fn the_last_mapped_payload_unmaps_its_file() {
        let _table = crate::payload::TABLE_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = ready_state([&b"first payload"[..], b"", b"third"], 10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(snapshot_name(9));
        std::fs::write(&path, encode(&collect(&st, 0, Vec::new()), 9)).unwrap();
        let file = MappedFile::new(map(&path).unwrap());
        let (state, _) = decode_mapped(&path, &file, 10, 10, 0).unwrap();
        let payloads: Vec<Payload> = state.slab.iter().map(|m| m.payload.clone()).collect();
        // An empty payload has nothing to share: it is a heap one.
        let forms: Vec<(bool, &[u8])> = payloads.iter().map(|p| (p.is_mapped(), &p[..])).collect();
        assert_eq!(forms, [(true, &b"first payload"[..]), (false, b""), (true, b"third")]);
        // 2 in the slab, 2 clones, the file.
        assert_eq!(payloads[0].strong_count(), 5);
        let kept = payloads[2].clone();
        drop((state, file, payloads));
        // The file is removed, as a newer snapshot removes it; the mapping
        // still reads.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(kept.strong_count(), 1);
        assert!(maps(&path));
        assert_eq!(&kept[..], b"third");
        assert_eq!(&kept.to_heap()[..], b"third");
        assert!(!kept.to_heap().is_mapped());
        drop(kept);
        assert!(!maps(&path));
    }

    /// Whether this process maps `path` (a removed file is listed as
    /// "<path> (deleted)").
    fn maps(path: &Path) -> bool {
        std::fs::read_to_string("/proc/self/maps").unwrap().contains(path.to_str().unwrap())
    }

    /// More files than the table has entries: the files past it give heap
    /// copies, and an entry freed by the last payload of its file is used
    /// again.
    #[test]
    fn files_past_the_table_of_regions_give_heap_copies() {
        let _table = crate::payload::TABLE_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = 5u32.to_le_bytes().to_vec();
        bytes.extend(b"hello");
        let open = |i: usize| {
            let path = dir.path().join(format!("{i}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            MappedFile::new(map(&path).unwrap())
        };
        // Engine tests on other threads of this process may hold a few
        // entries (those that need one hold `TABLE_TESTS` meanwhile).
        let files: Vec<MappedFile> = (0..crate::payload::REGIONS + 1).map(open).collect();
        let payloads: Vec<Payload> = files.iter().map(|f| f.payload(&f.map()[4..])).collect();
        assert!(payloads.iter().all(|p| &p[..] == b"hello"));
        assert!(payloads[..crate::payload::REGIONS / 2].iter().all(Payload::is_mapped));
        assert!(!payloads.last().unwrap().is_mapped());
        drop((files, payloads));
        let again = open(0);
        assert!(again.payload(&again.map()[4..]).is_mapped());
    }
}

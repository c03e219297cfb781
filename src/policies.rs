//! The `POLICIES` file: each topic's handler policy (`max_attempts`, the
//! handler's name), kept across restarts.
//!
//! A policy is set when a topic's handler starts (`Engine::set_topic_policy`)
//! and judges every failed or expired delivery of the topic. The messages
//! that were in flight when the previous owner stopped are judged at the
//! next open, before any handler has started: without the stored policies
//! they were judged by the queue's `max_attempts` (a handler allowing 10
//! attempts lost its message to the dead letters on the 5th; one allowing 2
//! had it delivered a 3rd time). The Redis backend keeps its policies in the
//! server, so this is also what makes the two agree.
//!
//! Written atomically (temp file, fsync, rename, directory fsync) when a
//! policy changes; read once, at open. Layout in `docs/format.md`.

use crate::codec::{Reader, Writer};
use crate::engine::TopicPolicy;
use crate::error::{Error, Result};
use crate::storage;
use std::collections::BTreeMap;
use std::path::Path;

pub const POLICIES_FILE: &str = "POLICIES";
const MAGIC: &[u8; 8] = b"RINGQPOL";
pub const POLICIES_VERSION: u32 = 1;
/// Magic, version, count and CRC.
const MIN_LEN: usize = 8 + 4 + 4 + 4;

/// Each topic's policy, by topic name.
pub type Policies = BTreeMap<String, TopicPolicy>;

/// The file's bytes for `policies`.
pub fn encode(policies: &Policies) -> Vec<u8> {
    let mut data = Vec::new();
    let mut w = Writer::new(&mut data);
    for b in MAGIC {
        w.u8(*b);
    }
    w.u32(POLICIES_VERSION);
    w.u32(u32::try_from(policies.len()).expect("fewer than 2^32 topics"));
    for (topic, p) in policies {
        w.str(topic);
        w.u32(p.max_attempts.unwrap_or(0));
        w.opt_str(p.handler.as_deref());
    }
    let crc = crc32c::crc32c(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    data
}

/// Writes `policies` as the directory's `POLICIES`, atomically (`faults`:
/// [`FaultPoint::PoliciesWrite`](storage::FaultPoint::PoliciesWrite)).
pub fn write(dir: &Path, policies: &Policies, faults: Option<&storage::Faults>) -> Result<()> {
    faults
        .map_or(Ok(()), |f| f.check(storage::FaultPoint::PoliciesWrite))
        .and_then(|()| storage::write_atomic(None, dir, POLICIES_FILE, &encode(policies)))
        .map_err(|e| Error::storage("writing the topic policies", dir.join(POLICIES_FILE), e))
}

/// The format of a POLICIES file newer than this build reads (its CRC
/// holds: written by a newer ringq, not damaged), if it is one.
pub fn newer_format(dir: &Path) -> Option<u32> {
    let data = std::fs::read(dir.join(POLICIES_FILE)).ok()?;
    crate::manifest::newer_in(&data, MAGIC, POLICIES_VERSION)
}

/// Reads the directory's `POLICIES` (none stored: empty).
pub fn read(dir: &Path) -> Result<Policies> {
    let path = dir.join(POLICIES_FILE);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policies::new()),
        Err(e) => return Err(Error::storage("reading the topic policies", &path, e)),
    };
    decode(&data).map_err(|(offset, what)| {
        Error::corruption(
            &path,
            offset,
            format!(
                "{what}: `ringq repair` removes the file (each topic's policy is set again when its handler \
                 starts; until then the queue's max_attempts applies)"
            ),
        )
    })
}

/// The policies in `data`, or where and why it does not read.
fn decode(data: &[u8]) -> std::result::Result<Policies, (u64, String)> {
    if data.len() < MIN_LEN || &data[..8] != MAGIC {
        return Err((0, "not a ringq policies file".into()));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err((0, "the policies file fails its CRC check".into()));
    }
    let mut r = Reader::new(&body[8..]);
    let at = |r: &Reader<'_>| (8 + r.pos()) as u64;
    let version = r.u32().map_err(|e| (at(&r), e.0))?;
    if version != POLICIES_VERSION {
        return Err((8, format!("policies format {version}: this ringq reads format {POLICIES_VERSION} only")));
    }
    // Topic length, max_attempts, handler tag: at least 9 bytes each.
    let count = r.count(9).map_err(|e| (at(&r), e.0))?;
    let mut policies = Policies::new();
    for _ in 0..count {
        let entry = at(&r);
        let topic = r.string().map_err(|e| (at(&r), e.0))?;
        let max_attempts = r.u32().map_err(|e| (at(&r), e.0))?;
        let handler = r.opt_string().map_err(|e| (at(&r), e.0))?;
        if topic.is_empty() || (max_attempts == 0 && handler.is_none()) {
            return Err((entry, "an empty entry (no ringq writes one)".into()));
        }
        let policy = TopicPolicy { max_attempts: (max_attempts != 0).then_some(max_attempts), handler };
        if policies.insert(topic, policy).is_some() {
            return Err((entry, "a topic named twice".into()));
        }
    }
    if !r.is_empty() {
        return Err((at(&r), "bytes after the last entry".into()));
    }
    Ok(policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Policies {
        let mut p = Policies::new();
        p.insert("orders".into(), TopicPolicy { max_attempts: Some(10), handler: Some("on_order".into()) });
        p.insert("mail".into(), TopicPolicy { max_attempts: None, handler: Some("send".into()) });
        p.insert("ticks".into(), TopicPolicy { max_attempts: Some(1000), handler: None });
        p
    }

    #[test]
    fn policies_read_back_as_written_and_none_stored_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        write(dir.path(), &sample(), None).unwrap();
        assert_eq!(read(dir.path()).unwrap(), sample());
        write(dir.path(), &Policies::new(), None).unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let mut p = Policies::new();
        p.insert("t".into(), TopicPolicy { max_attempts: Some(3), handler: Some("h".into()) });
        let data = encode(&p);
        let mut want = b"RINGQPOL".to_vec();
        want.extend_from_slice(&1u32.to_le_bytes()); // version
        want.extend_from_slice(&1u32.to_le_bytes()); // count
        want.extend_from_slice(&1u32.to_le_bytes()); // topic length
        want.push(b't');
        want.extend_from_slice(&3u32.to_le_bytes()); // max_attempts
        want.push(1); // handler present
        want.extend_from_slice(&1u32.to_le_bytes());
        want.push(b'h');
        let crc = crc32c::crc32c(&want);
        want.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(data, want);
    }

    #[test]
    fn every_damaged_byte_and_every_cut_is_a_corruption_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = encode(&sample());
        let path = dir.path().join(POLICIES_FILE);
        let check = |data: &[u8], case: &str| {
            std::fs::write(&path, data).unwrap();
            match read(dir.path()) {
                Err(Error::Corruption { path: p, detail, .. }) => {
                    assert_eq!(p, path, "{case}");
                    assert!(detail.contains("ringq repair"), "{case}: {detail}");
                }
                other => panic!("{case}: {other:?}"),
            }
        };
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            check(&bad, &format!("byte {i} flipped"));
        }
        for len in 0..good.len() {
            check(&good[..len], &format!("cut at {len}"));
        }
    }

    #[test]
    fn a_newer_format_and_forged_entries_are_refused_with_what_is_wrong() {
        let forged = |version: u32, entries: &[(&str, u32, Option<&str>)], extra: &[u8]| {
            let mut data = MAGIC.to_vec();
            let mut w = Writer::new(&mut data);
            w.u32(version);
            w.u32(entries.len() as u32);
            for (t, m, h) in entries {
                w.str(t);
                w.u32(*m);
                w.opt_str(*h);
            }
            data.extend_from_slice(extra);
            let crc = crc32c::crc32c(&data);
            data.extend_from_slice(&crc.to_le_bytes());
            decode(&data).unwrap_err().1
        };
        assert!(forged(2, &[], &[]).contains("format 2"));
        assert!(forged(1, &[("t", 0, None)], &[]).contains("empty entry"));
        assert!(forged(1, &[("", 3, None)], &[]).contains("empty entry"));
        assert!(forged(1, &[("t", 3, None), ("t", 4, None)], &[]).contains("named twice"));
        assert!(forged(1, &[("t", 3, None)], &[0]).contains("after the last entry"));
    }
}

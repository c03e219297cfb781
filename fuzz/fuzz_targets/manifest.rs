//! `ringq::manifest::read` on an arbitrary `MANIFEST` file (formats 1-3).
//!
//! Each input is written as `MANIFEST` into a scratch directory (under
//! `/dev/shm` when it exists, else the temp dir; `RINGQ_FUZZ_TMP` overrides)
//! and read back. Checks: `read` never panics; an accepted manifest has the
//! fields its bytes say (and an instance id other than 0 in format 3); written
//! again with `manifest::write` (which always writes format 3) it reads back
//! equal: a format-3 one exactly and byte for byte, an older one once
//! upgraded the way `Engine::open` and `repair` upgrade it (version 3, slot
//! limit 0 if it had none, a non-zero instance id). What `read` would not
//! give back as written (an older manifest as read, so instance id 0; the
//! same with instance id 0; `Manifest::default()`) `write` must refuse with
//! `Error::Invalid`, leaving the file that was there as it was.
//!
//! Random bytes almost never carry a valid CRC32C, so each input is read
//! twice: as is, and "repaired" (magic set; when the length is one a format
//! has, the version set to that format; the CRC fixed), which reaches the
//! field checks and the round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::error::Error;
use ringq::manifest::{MANIFEST_FILE, MANIFEST_VERSION, Manifest, read, write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const MAGIC: &[u8; 8] = b"RINGQMAN";

fn scratch() -> &'static (PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let base = match std::env::var_os("RINGQ_FUZZ_TMP") {
            Some(p) => PathBuf::from(p),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        let root = base.join(format!("ringq-fuzz-manifest-{}", std::process::id()));
        let (a, b) = (root.join("in"), root.join("out"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        ROOT.set(root).unwrap();
        // SAFETY: registers a plain `extern "C"` function; libFuzzer leaves
        // with exit() at the end of a run, which calls it.
        unsafe { libc::atexit(cleanup) };
        (a, b)
    })
}

static ROOT: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn cleanup() {
    if let Some(root) = ROOT.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn check(data: &[u8]) {
    let (dir, out) = scratch();
    std::fs::write(dir.join(MANIFEST_FILE), data).unwrap();
    let Ok(Some(m)) = read(dir) else {
        return;
    };
    // What the bytes say.
    let want_len = match m.version {
        1 => 24,
        2 => 28,
        v if (3..=MANIFEST_VERSION).contains(&v) => 52,
        v => panic!("accepted manifest version {v}"),
    };
    assert_eq!(data.len(), want_len, "accepted a manifest of the wrong length");
    assert_eq!(&data[0..8], MAGIC);
    assert_eq!(u32_at(data, 8), m.version);
    assert_eq!(m.epoch, u64_at(data, 12));
    assert_eq!(m.slot_limit, (m.version >= 2).then(|| u32_at(data, 20)));
    if m.version >= 3 {
        assert_eq!(
            (m.instance_id, m.journal_anchor, m.snapshot_lsn),
            (u64_at(data, 24), u64_at(data, 32), u64_at(data, 40))
        );
        assert_ne!(m.instance_id, 0, "accepted instance id 0");
    } else {
        assert_eq!((m.instance_id, m.journal_anchor, m.snapshot_lsn), (0, 0, 0));
    }

    // Written again: the current format, read back equal.
    let upgraded = if m.version == MANIFEST_VERSION {
        m
    } else {
        Manifest {
            version: MANIFEST_VERSION,
            slot_limit: Some(m.slot_limit.unwrap_or(0)),
            instance_id: if m.instance_id != 0 { m.instance_id } else { 1 },
            ..m
        }
    };
    let there = std::fs::read(out.join(MANIFEST_FILE)).ok();
    let unreadable = [(m.version != MANIFEST_VERSION).then_some(m), Some(Manifest { instance_id: 0, ..upgraded })];
    for bad in unreadable.into_iter().flatten().chain([Manifest::default()]) {
        match write(out, &bad) {
            Err(Error::Invalid(_)) => {}
            other => panic!("writing {bad:?}, which would not read back as written: {other:?}"),
        }
        assert_eq!(std::fs::read(out.join(MANIFEST_FILE)).ok(), there, "a refused write changed the MANIFEST");
    }
    if let Err(e) = write(out, &upgraded) {
        panic!("writing an accepted manifest failed: {e}");
    }
    match read(out) {
        Ok(Some(back)) => assert_eq!(back, upgraded, "manifest changed across write/read"),
        other => panic!("a written manifest does not read back: {other:?}"),
    }
    if m.version == MANIFEST_VERSION {
        let bytes = std::fs::read(out.join(MANIFEST_FILE)).unwrap();
        assert_eq!(bytes, data, "an accepted format-3 manifest re-writes to other bytes");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);

    if data.len() < 12 {
        return;
    }
    let mut fixed = data.to_vec();
    fixed[0..8].copy_from_slice(MAGIC);
    let version = match fixed.len() {
        24 => Some(1u32),
        28 => Some(2),
        // Formats 3 to 5 share the layout; the input picks one.
        52 => Some(3 + u32::from(fixed[8]) % (MANIFEST_VERSION - 2)),
        _ => None,
    };
    if let Some(v) = version {
        fixed[8..12].copy_from_slice(&v.to_le_bytes());
        let n = fixed.len();
        let crc = crc32c::crc32c(&fixed[..n - 4]);
        fixed[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    if fixed != data {
        check(&fixed);
    }
});

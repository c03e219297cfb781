//! `ringq::journal::marker::read` on an arbitrary `DURABLE` file.
//!
//! Each input is written as `DURABLE` into a scratch directory (under
//! `/dev/shm` when it exists, else the temp dir; `RINGQ_FUZZ_TMP` overrides)
//! and read. Checks: `read` never panics, and says what the bytes say: the
//! file's first 64 bytes, zero-filled if it is shorter, hold two 32-byte
//! slots (at offsets 0 and 32); the result is the higher LSN of those that
//! carry the magic `RINGQDUR` and a matching CRC32C of their first 24 bytes
//! (at 24..28), or 0 when neither does. `Marker::open` alone changes
//! nothing. Then the writer goes over the same file: `record(x)` with `x`
//! above what was read makes `read` say exactly `x` (whatever the file's
//! length: a value `read` ignored never comes back when the file grows), a
//! second `record(x + 1)` (the other slot) says `x + 1`, and a lower
//! `record` never lowers it.
//!
//! Random bytes almost never carry a valid CRC32C, so each input is read
//! twice: as is, and with each slot whose 28 checked bytes fit "repaired"
//! (magic and CRC set) unless bit 0 of its byte 28 is set (so the fuzzer can
//! keep one slot invalid; a slot cut at 28..31 bytes is always repaired).
//!
//! This target found a `DURABLE` cut short that came back once the writer
//! extended the file (`regressions/durable_marker/`, `docs/format.md` note
//! 25); it is fixed, and the checks above are strict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::journal::marker::{DURABLE_FILE, Marker, read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const MAGIC: &[u8; 8] = b"RINGQDUR";
const SLOT: usize = 32;

/// Bytes of a slot that are checked: magic, LSN, counter, CRC.
const CHECKED: usize = 28;

static ROOT: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn cleanup() {
    if let Some(root) = ROOT.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

fn scratch() -> &'static Path {
    ROOT.get_or_init(|| {
        let base = match std::env::var_os("RINGQ_FUZZ_TMP") {
            Some(p) => PathBuf::from(p),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        let root = base.join(format!("ringq-fuzz-durable-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        // SAFETY: registers a plain `extern "C"` function; libFuzzer leaves
        // with exit() at the end of a run, which calls it.
        unsafe { libc::atexit(cleanup) };
        root
    })
}

/// The LSN of a valid slot starting at `at` of the file's first 64 bytes,
/// zero-filled, if there is one.
fn slot(data: &[u8], at: usize) -> Option<u64> {
    let mut b = [0u8; SLOT];
    let have = data.get(at..).unwrap_or_default();
    let n = have.len().min(SLOT);
    b[..n].copy_from_slice(&have[..n]);
    let crc = u32::from_le_bytes(b[24..28].try_into().unwrap());
    (&b[0..8] == MAGIC && crc32c::crc32c(&b[0..24]) == crc).then(|| u64::from_le_bytes(b[8..16].try_into().unwrap()))
}

fn check(data: &[u8]) {
    let dir = scratch();
    let path = dir.join(DURABLE_FILE);
    std::fs::write(&path, data).unwrap();
    let got = read(dir);
    let want = slot(data, 0).into_iter().chain(slot(data, SLOT)).max().unwrap_or(0);
    assert_eq!(got, want, "marker read {got}, its valid slots say {want}");

    // The writer continues from whatever the file holds.
    let Some(x) = got.checked_add(1 + u64::from(data.first().copied().unwrap_or(0))) else {
        return;
    };
    let Ok(mut m) = Marker::open(dir) else {
        panic!("Marker::open failed on an existing file");
    };
    assert_eq!(std::fs::read(&path).unwrap(), data, "Marker::open changed the file");
    m.record(x);
    assert_eq!(read(dir), x, "the marker does not read back what was recorded");
    if let Some(y) = x.checked_add(1) {
        m.record(y);
        assert_eq!(read(dir), y, "the marker does not read back the second record");
    }
    m.record(got); // never lowers it
    assert!(read(dir) >= x, "the marker went down");
    m.release();
}

fuzz_target!(|data: &[u8]| {
    check(data);

    let mut fixed = data.to_vec();
    for at in [0, SLOT] {
        let keep_invalid = fixed.get(at + CHECKED).is_some_and(|b| b & 1 != 0);
        if let Some(b) = fixed.get_mut(at..at + CHECKED)
            && !keep_invalid
        {
            b[0..8].copy_from_slice(MAGIC);
            let crc = crc32c::crc32c(&b[0..24]);
            b[24..28].copy_from_slice(&crc.to_le_bytes());
        }
    }
    if fixed != data {
        check(&fixed);
    }
});

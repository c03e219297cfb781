//! Helpers shared by the integration tests that work on queue directories.
#![allow(dead_code)]

use ringq::journal::{read_segment_header, scan_segment};
use ringq::{Engine, Options, Publish, PublishOpts, Wait};
use std::fs;
use std::path::Path;
use std::time::Duration;

pub type Files = Vec<(String, Vec<u8>)>;

/// 64 KiB segments: rolls happen after a few hundred records.
pub fn small() -> Options {
    Options { segment_size: 64 * 1024, ..Options::default() }
}

pub fn publish(e: &Engine, topic: &str, payload: &[u8]) -> u64 {
    e.publish(Publish { topic, payload, ..Default::default() }, PublishOpts::default(), Wait::No).unwrap().0
}

pub fn drain(e: &Engine, topic: &str) -> Vec<Vec<u8>> {
    let got = e.checkout(topic, 10_000, Duration::from_secs(60), Wait::No).unwrap();
    got.into_iter().map(|d| d.payload.to_vec()).collect()
}

/// (name, bytes) of every file in `dir`. A live engine's preparer thread
/// may rename or remove a file while the directory is copied (a spare made
/// or recycled): the copy starts over if a file vanished before its read or
/// the names changed meanwhile, so that it holds each file under one name.
pub fn snapshot_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let names = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "LOCK")
            .collect();
        v.sort();
        v
    };
    'copy: for _ in 0..100 {
        let listed = names();
        let mut v = Vec::new();
        for name in &listed {
            match fs::read(dir.join(name)) {
                Ok(bytes) => v.push((name.clone(), bytes)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue 'copy,
                Err(err) => panic!("reading {}: {err}", dir.join(name).display()),
            }
        }
        if names() == listed {
            return v;
        }
    }
    panic!("the files of {} kept changing while being copied", dir.display());
}

pub fn restore(files: &[(String, Vec<u8>)], dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (n, b) in files {
        fs::write(dir.join(n), b).unwrap();
    }
}

/// `files` with the segment `wal` changed by `edit`.
pub fn edit_wal(files: &[(String, Vec<u8>)], wal: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<(String, Vec<u8>)> {
    let mut out = files.to_vec();
    edit(&mut out.iter_mut().find(|(n, _)| n == wal).expect("the segment").1);
    out
}

/// The segment the journal is being written to (the one whose header has a
/// first LSN; a prepared spare has none).
pub fn wal_name(files: &[(String, Vec<u8>)]) -> String {
    files
        .iter()
        .find(|(n, b)| {
            n.ends_with(".log") && read_segment_header(Path::new(n), b).unwrap().is_some_and(|h| h.first_lsn != 0)
        })
        .unwrap()
        .0
        .clone()
}

/// Offsets where each record ends in a segment image.
pub fn record_ends(path: &Path, data: &[u8]) -> Vec<u64> {
    let mut starts = Vec::new();
    let header = read_segment_header(path, data).unwrap().unwrap();
    let scan = scan_segment(path, data, &header, 0, |_, off, _| {
        starts.push(off);
        Ok(())
    })
    .unwrap();
    let mut ends: Vec<u64> = starts.into_iter().skip(1).collect();
    ends.push(scan.end);
    ends
}

pub fn stat(e: &Engine, key: &str) -> u64 {
    count(e, key)
}

/// Waits until the engine has a prepared segment ready, so that a copy of
/// its directory does not catch one half-made.
pub fn settle(e: &Engine) {
    let t0 = std::time::Instant::now();
    while stat(e, "journal_spares") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no spare segment was prepared");
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn crashed_queue_with(payloads: &[&[u8]]) -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    crashed_queue_with_opts(payloads, small())
}

/// A copy of the directory while the engine is open (what SIGKILL leaves).
pub fn crashed_queue_with_opts(payloads: &[&[u8]], opts: Options) -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let e = Engine::open(&src, opts).unwrap();
    for p in payloads {
        let (_, lsn) = e
            .publish(Publish { topic: "t", payload: p, ..Default::default() }, PublishOpts::default(), Wait::No)
            .unwrap();
        e.wait_durable(lsn).unwrap();
    }
    settle(&e);
    let files = snapshot_files(&src);
    e.close().unwrap();
    (tmp, files)
}

/// Zeros from `cut` to the end: what a write torn at `cut` leaves in a
/// preallocated segment.
pub fn tear_at(b: &mut [u8], cut: usize) {
    b[cut..].fill(0);
}

pub fn count(e: &Engine, key: &str) -> u64 {
    e.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| if let ringq::Stat::Int(i) = v { i } else { 0 })
        .unwrap()
}

pub fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()
}

pub fn libc_enospc() -> i32 {
    28
}

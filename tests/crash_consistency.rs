//! Crash consistency under power cuts, in the spirit of redb's
//! `tests/crash_consistency.rs`.
//!
//! Killing the process (what `tests/recovery.rs` does) keeps the page cache,
//! so it never shows what a power cut does. Here a model of the *durable*
//! disk is kept next to the real directory, fed by the engine's durability
//! observer (`ringq::storage::set_observer`), and "cutting the power" means
//! building a directory image that keeps only what the model says was
//! durable, plus any subset of what was not.
//!
//! # The disk model
//!
//! Per queue directory (one tracked at a time; the observer is process-wide,
//! so every test here holds `SERIAL`):
//! - **durable entries**: name -> inode, as read right after each directory
//!   fsync (`Observer::dir_synced`);
//! - **durable content** per inode: the bytes read through the file right
//!   after each fsync/fdatasync (`Observer::file_synced`); an inode never
//!   synced has none (an empty file);
//! - **removed content**: what an inode held when the engine unlinked it
//!   (`Observer::removing`), so a removal that is not durable yet can be
//!   undone by a cut.
//!
//! Reading "right after" the fsync over-approximates what it made durable
//! (a write between the fsync and the read counts as synced). That only
//! makes a cut keep more, and every page it keeps is a version the page
//! really had, so the images stay ones a real disk can produce.
//!
//! A **capture** freezes the model (callbacks block on its lock) and reads
//! the page-cache view: the current entries and every file's bytes (journal
//! segments are written through a shared mapping, which `read` sees). An
//! engine thread whose fsync returned goes no further than its callback
//! meanwhile, so nothing written during a capture depends on an fsync the
//! model has not seen.
//! A **power cut** turns a capture into an image:
//! - each name holds its durable inode or its current one (a create,
//!   unlink or rename since the last directory fsync may or may not have
//!   reached the disk), but a rename is atomic: a moved inode is under its
//!   new name or under its old one, never both, never neither;
//! - each file's length is the durable or the current one (files only grow);
//! - each 4 KiB page whose durable and current bytes differ is the durable
//!   version, the current one, or (a torn write-back) a mix of the two per
//!   512-byte sector. Pages never synced read as zeros (a preallocated
//!   segment's unwritten extents; a never-fsynced file's lost pages).
//!
//! `DURABLE` is never fsynced by the engine, so like any other unsynced file
//! it may keep any of its written versions per sector, or vanish. `LOCK` is
//! ignored (its content is a pid; `Engine::open` rewrites it).
//!
//! Captures are taken between operations of the single driver thread, and
//! also *inside* observer callbacks at random (`hook_rate`) — before the
//! fsync the callback reports is applied to the model, i.e. with that fsync
//! still in flight — in whatever engine thread calls it (flusher,
//! snapshotter, preparer, the driver inside `snapshot`, `open`, `close`).
//!
//! # What every image must satisfy
//!
//! `Engine::open` succeeds (never `Error::Corruption`: every image is a
//! state a real disk can be left in), and the state it recovers is exactly
//! the state after some prefix of the operations: the recovered LSN `R`
//! (`recovery_report().last_lsn`) names the prefix, and the messages (id,
//! topic, payload, version, dedup key) and dead letters must equal the
//! model's after the operation that wrote LSN `R`. `R` must be at least the
//! durable LSN the driver knew at the cut: with `durability="always"` that
//! covers every publish/ack/nack/release whose call returned (nothing
//! confirmed is lost, nothing acked comes back); with `"batch"` it is the
//! engine's own `durable_lsn` (so at most the work since the last fsync, one
//! `fsync_interval`, is lost). The recovery report is what says how much
//! was lost when the tail was damaged (torn tails, `dropped_records`); a
//! lost tail that is all zeros is indistinguishable from a clean end.
//!
//! The driver also moves to a new directory ("generation") now and then:
//! after a clean close and reopen, after a simulated `kill -9` (the page
//! cache view is copied, and the model of what was durable goes with it, so
//! a later cut can still lose what the killed process never synced), and
//! after a power cut (an image that recovered is opened and the workload
//! goes on from the recovered state).
//!
//! # Reproducing a failure
//!
//! A failing image is saved under `$TMPDIR/ringq-crash-failures/` with a
//! `FAILURE.txt`; `Engine::open` on a copy of it reproduces the failure
//! exactly. The workload seed is printed too (`RINGQ_CRASH_SEED=<n>` runs
//! that seed; thread timing still varies). `RINGQ_CRASH_STEPS=<n>` sets the
//! operations per run, `RINGQ_CRASH_KEEP_GOING=1` collects every failure
//! instead of stopping at the first.

use ringq::storage::{self, Observer};
use ringq::{Durability, Engine, Error, FaultPoint, Lsn, Options, Publish, PublishOpts, Stat, Wait};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

const PAGE: usize = 4096;
const SECTOR: usize = 512;
const LOCK: &str = "LOCK";
const TOPICS: [&str; 3] = ["orders", "emails", "audit"];
const KEYS: u64 = 6;
const CAPACITY: usize = 300;
const LEASE: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// splitmix64: small, seeded, good enough.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn stat(e: &Engine, key: &str) -> u64 {
    match e.stats().expect("stats").into_iter().find(|(k, _)| *k == key) {
        Some((_, Stat::Int(v))) => v,
        other => panic!("stat {key}: {other:?}"),
    }
}

/// FNV-1a over length-prefixed parts, then a final mix.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in (p.len() as u64).to_le_bytes().iter().chain(p.iter()) {
            h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn msg_hash(id: u64, topic: &str, payload: &[u8], version: u32, key: Option<&str>) -> u64 {
    let key = key.map_or(&[0xffu8][..], str::as_bytes);
    hash(&[&id.to_le_bytes(), topic.as_bytes(), payload, &version.to_le_bytes(), key])
}

fn dead_hash(id: u64) -> u64 {
    hash(&[b"dead", &id.to_le_bytes()])
}

// ---------------------------------------------------------------------------
// The durable-disk model and the observer that feeds it
// ---------------------------------------------------------------------------

type Bytes = Arc<Vec<u8>>;
/// (name, bytes) of every file of a directory image.
type Image = Vec<(String, Vec<u8>)>;

/// An inode's identity: device, number and birth time (numbers are reused
/// on some file systems). Ghosts (`dev == u64::MAX`) stand for inodes of a
/// killed process's directory that its copy has no file for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
struct Ino {
    dev: u64,
    ino: u64,
    born: i128,
}

fn ino_of(m: &fs::Metadata) -> Ino {
    let born = m.created().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i128);
    Ino { dev: m.dev(), ino: m.ino(), born }
}

/// What the model says is on the disk for one directory.
#[derive(Clone, Default)]
struct Disk {
    /// Name -> inode, as of the last directory fsync.
    entries: BTreeMap<String, Ino>,
    /// Content at the last fsync (absent: never synced, i.e. empty).
    synced: HashMap<Ino, Bytes>,
    /// Content of unlinked inodes when they were unlinked.
    removed: HashMap<Ino, Bytes>,
}

impl Disk {
    /// Everything in `dir` is durable (a directory after a reboot).
    fn all_durable(dir: &Path) -> Disk {
        let entries = listing(dir);
        let synced = entries.iter().map(|(n, i)| (*i, Arc::new(fs::read(dir.join(n)).expect("read")))).collect();
        Disk { entries, synced, removed: HashMap::new() }
    }

    /// The model for a copy of a killed process's directory: `cap` was
    /// taken from the original, `copy` lists the copy (same names).
    fn for_copy(cap: &Capture, copy: &BTreeMap<String, Ino>) -> Disk {
        let mut map: HashMap<Ino, Ino> = HashMap::new();
        for (name, old) in &cap.now {
            if let Some(new) = copy.get(name) {
                map.insert(*old, *new);
            }
        }
        let tr = |i: &Ino| map.get(i).copied().unwrap_or(Ino { dev: u64::MAX, ..*i });
        Disk {
            entries: cap.disk.entries.iter().map(|(n, i)| (n.clone(), tr(i))).collect(),
            synced: cap.disk.synced.iter().map(|(i, c)| (tr(i), c.clone())).collect(),
            removed: cap.disk.removed.iter().map(|(i, c)| (tr(i), c.clone())).collect(),
        }
    }
}

/// The names in `dir` (but `LOCK`) and their inodes.
fn listing(dir: &Path) -> BTreeMap<String, Ino> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).expect("listing the queue directory") {
        let Ok(e) = e else { continue };
        let Ok(name) = e.file_name().into_string() else { continue };
        if name == LOCK {
            continue;
        }
        if let Ok(m) = e.metadata() {
            out.insert(name, ino_of(&m));
        }
    }
    out
}

/// The model frozen at one instant, and the page-cache view then.
#[derive(Clone)]
struct Capture {
    label: String,
    disk: Disk,
    /// Current name -> inode.
    now: BTreeMap<String, Ino>,
    /// Current bytes of each currently linked inode.
    content: HashMap<Ino, Bytes>,
    /// Everything up to this LSN was durable when the capture was taken.
    required: Lsn,
}

impl Capture {
    /// Reads the page-cache view of `dir` (retrying while an engine thread
    /// that is between two callbacks renames or creates a file under it).
    fn take(dir: &Path, disk: &Disk, label: String, required: Lsn) -> Capture {
        for _ in 0..1000 {
            let now = listing(dir);
            let mut content = HashMap::new();
            let mut consistent = true;
            for (name, ino) in &now {
                let read = File::open(dir.join(name)).and_then(|f| {
                    let same = ino_of(&f.metadata()?) == *ino;
                    let mut data = Vec::new();
                    std::io::Read::read_to_end(&mut &f, &mut data)?;
                    Ok((same, data))
                });
                match read {
                    Ok((true, data)) => {
                        content.insert(*ino, Arc::new(data));
                    }
                    _ => {
                        consistent = false;
                        break;
                    }
                }
            }
            if consistent && listing(dir) == now {
                return Capture { label, disk: disk.clone(), now, content, required };
            }
            std::thread::yield_now();
        }
        panic!("could not read a consistent view of {}", dir.display());
    }

    fn durable_of(&self, ino: &Ino) -> &[u8] {
        self.disk.synced.get(ino).map_or(&[][..], |b| b.as_slice())
    }

    /// What the page cache holds for `ino` (for an unlinked inode, what it
    /// held when it was unlinked).
    fn current_of(&self, ino: &Ino) -> &[u8] {
        self.content
            .get(ino)
            .or_else(|| self.disk.removed.get(ino))
            .map_or_else(|| self.durable_of(ino), |b| b.as_slice())
    }

    /// The page-cache view as an image (what `kill -9` leaves).
    fn killed(&self) -> Image {
        self.now.iter().map(|(n, i)| (n.clone(), self.current_of(i).to_vec())).collect()
    }
}

struct Tracked {
    dir: PathBuf,
    disk: Disk,
}

#[derive(Default)]
struct TrackerState {
    tracked: Option<Tracked>,
    /// Captures taken inside callbacks, to be checked by the driver.
    pending: Vec<Capture>,
    /// Chance that a callback takes a capture first.
    hook_rate: f64,
    /// Take a capture at every callback (deterministic sub-cases).
    hook_all: bool,
    rng: Option<Rng>,
}

/// The process-wide observer: feeds the model of the tracked directory.
#[derive(Default)]
struct Tracker {
    st: Mutex<TrackerState>,
    /// The durable LSN the driver knows (a capture's `required`).
    required: AtomicU64,
}

impl Tracker {
    /// Starts tracking `dir` (canonical) with `disk` as its durable state.
    fn track(&self, dir: &Path, disk: Disk, required: Lsn) {
        let mut st = lock(&self.st);
        st.tracked = Some(Tracked { dir: dir.to_owned(), disk });
        st.pending.clear();
        self.required.store(required, Ordering::SeqCst);
    }

    fn untrack(&self) {
        let mut st = lock(&self.st);
        st.tracked = None;
        st.pending.clear();
    }

    fn set_hooks(&self, rate: f64, all: bool, seed: u64) {
        let mut st = lock(&self.st);
        st.hook_rate = rate;
        st.hook_all = all;
        st.rng = Some(Rng::new(seed ^ 0xC0FF_EE00));
    }

    fn set_required(&self, lsn: Lsn) {
        self.required.fetch_max(lsn, Ordering::SeqCst);
    }

    /// A capture of the tracked directory now.
    fn capture(&self, label: &str) -> Capture {
        let st = lock(&self.st);
        let t = st.tracked.as_ref().expect("a tracked directory");
        Capture::take(&t.dir, &t.disk, label.to_owned(), self.required.load(Ordering::SeqCst))
    }

    fn take_pending(&self) -> Vec<Capture> {
        std::mem::take(&mut lock(&self.st).pending)
    }

    /// Inside a callback of the tracked directory: maybe capture first.
    fn hook(&self, st: &mut TrackerState, what: &str) {
        let fire = st.hook_all || (st.hook_rate > 0.0 && st.rng.as_mut().is_some_and(|r| r.chance(st.hook_rate)));
        if !fire {
            return;
        }
        let t = st.tracked.as_ref().expect("tracked");
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        let label = format!("cut while {what} was in flight (thread {thread})");
        let cap = Capture::take(&t.dir, &t.disk, label, self.required.load(Ordering::SeqCst));
        st.pending.push(cap);
    }
}

impl Observer for Tracker {
    fn file_synced(&self, file: &File) {
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let Ok(target) = fs::read_link(&fd_path) else { return };
        let mut st = lock(&self.st);
        let Some(t) = &st.tracked else { return };
        // An unlinked file reads as "<path> (deleted)": same parent.
        if target.parent() != Some(t.dir.as_path()) {
            return;
        }
        let (Ok(meta), Ok(data)) = (file.metadata(), fs::read(&fd_path)) else { return };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.hook(&mut st, &format!("the fsync of {name}"));
        let t = st.tracked.as_mut().expect("tracked");
        t.disk.synced.insert(ino_of(&meta), Arc::new(data));
    }

    fn dir_synced(&self, dir: &Path) {
        let mut st = lock(&self.st);
        let Some(t) = &st.tracked else { return };
        if dir != t.dir {
            return;
        }
        self.hook(&mut st, "a directory fsync");
        let t = st.tracked.as_mut().expect("tracked");
        t.disk.entries = listing(&t.dir);
        // Inodes no longer linked are gone for good.
        let live: BTreeSet<Ino> = t.disk.entries.values().copied().collect();
        t.disk.synced.retain(|i, _| live.contains(i));
        t.disk.removed.retain(|i, _| live.contains(i));
    }

    fn removing(&self, path: &Path) {
        let mut st = lock(&self.st);
        let Some(t) = st.tracked.as_mut() else { return };
        if path.parent() != Some(t.dir.as_path()) {
            return;
        }
        if let (Ok(meta), Ok(data)) = (fs::metadata(path), fs::read(path)) {
            t.disk.removed.insert(ino_of(&meta), Arc::new(data));
        }
    }
}

fn tracker() -> &'static Arc<Tracker> {
    static T: OnceLock<Arc<Tracker>> = OnceLock::new();
    T.get_or_init(|| {
        let t = Arc::new(Tracker::default());
        storage::set_observer(Some(t.clone() as Arc<dyn Observer>));
        t
    })
}

/// The observer is process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------
// Power cuts: capture -> image
// ---------------------------------------------------------------------------

/// How much of what was not durable reaches the disk in one image.
#[derive(Clone, Copy, Debug)]
struct Style {
    /// Chance that a changed directory entry is in its current state.
    entry: f64,
    /// Chance that a changed page (or the length) is in its current state.
    page: f64,
    /// Chance that a changed page is torn: a mix of both, per sector.
    torn: f64,
}

impl Style {
    const NOTHING: Style = Style { entry: 0.0, page: 0.0, torn: 0.0 };
    const EVERYTHING: Style = Style { entry: 1.0, page: 1.0, torn: 0.0 };

    fn random(rng: &mut Rng) -> Style {
        match rng.below(8) {
            0 => Style::NOTHING,
            1 => Style::EVERYTHING,
            2 => Style { entry: 0.5, page: 0.5, torn: 0.0 },
            3 => Style { entry: 0.5, page: 0.5, torn: 0.4 },
            4 => Style { entry: 1.0, page: rng.unit(), torn: 0.0 },
            5 => Style { entry: rng.unit(), page: 0.9, torn: 0.1 },
            6 => Style { entry: rng.unit(), page: 0.1, torn: 0.1 },
            _ => Style { entry: rng.unit(), page: rng.unit(), torn: rng.unit() * 0.5 },
        }
    }
}

fn padded(data: &[u8], from: usize, to: usize) -> Vec<u8> {
    let mut v = vec![0u8; to - from];
    if from < data.len() {
        let end = to.min(data.len());
        v[..end - from].copy_from_slice(&data[from..end]);
    }
    v
}

/// One file's bytes after the cut.
fn cut_file(durable: &[u8], current: &[u8], style: Style, rng: &mut Rng) -> Vec<u8> {
    let len = if durable.len() == current.len() || rng.chance(style.page) { current.len() } else { durable.len() };
    let mut out = vec![0u8; len];
    for from in (0..len).step_by(PAGE) {
        let to = (from + PAGE).min(len);
        let (d, c) = (padded(durable, from, to), padded(current, from, to));
        let page = if d == c {
            c
        } else if rng.chance(style.torn) {
            let mut p = d;
            for s in (0..p.len()).step_by(SECTOR) {
                if rng.chance(0.5) {
                    let e = (s + SECTOR).min(p.len());
                    p[s..e].copy_from_slice(&c[s..e]);
                }
            }
            p
        } else if rng.chance(style.page) {
            c
        } else {
            d
        };
        out[from..to].copy_from_slice(&page);
    }
    out
}

/// The directory after the cut: each name holds its durable inode or its
/// current one (a create, unlink or rename since the last directory fsync
/// may or may not have reached the disk), except that a rename is atomic:
/// an inode moved from `a` to `b` is under `b` (and gone from `a`) or still
/// under `a` (and `b` holds what it held before).
fn cut_entries(cap: &Capture, style: Style, rng: &mut Rng) -> BTreeMap<String, Ino> {
    let names: BTreeSet<&String> = cap.disk.entries.keys().chain(cap.now.keys()).collect();
    let mut out: BTreeMap<String, Ino> = BTreeMap::new();
    for name in names {
        let (old, new) = (cap.disk.entries.get(name), cap.now.get(name));
        let pick = if old == new || rng.chance(style.entry) { new } else { old };
        if let Some(i) = pick {
            out.insert(name.clone(), *i);
        }
    }
    let current_name: HashMap<Ino, &String> = cap.now.iter().map(|(n, i)| (*i, n)).collect();
    for (a, moved) in &cap.disk.entries {
        let Some(&b) = current_name.get(moved) else { continue };
        if b == a {
            continue;
        }
        if out.get(b) == Some(moved) {
            // The rename reached the disk: `a` holds what it holds now.
            match cap.now.get(a) {
                Some(i) => out.insert(a.clone(), *i),
                None => out.remove(a),
            };
        } else {
            out.insert(a.clone(), *moved);
        }
    }
    out
}

/// A random power cut of `cap`.
fn power_cut(cap: &Capture, style: Style, rng: &mut Rng) -> Image {
    cut_entries(cap, style, rng)
        .into_iter()
        .map(|(n, i)| {
            let bytes = cut_file(cap.durable_of(&i), cap.current_of(&i), style, rng);
            (n, bytes)
        })
        .collect()
}

/// A chosen power cut: `pick(name, durable, current)` gives each file's
/// bytes; entries are the current ones.
fn cut_with(cap: &Capture, mut pick: impl FnMut(&str, &[u8], &[u8]) -> Vec<u8>) -> Image {
    cap.now.iter().map(|(n, i)| (n.clone(), pick(n, cap.durable_of(i), cap.current_of(i)))).collect()
}

// ---------------------------------------------------------------------------
// The expected queue state
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Msg {
    topic: &'static str,
    payload: Arc<[u8]>,
    version: u32,
    key: Option<String>,
    /// The lease token while checked out.
    token: Option<u64>,
    superseded: bool,
    hash: u64,
}

impl Msg {
    fn rehash(&mut self, id: u64) {
        self.hash = msg_hash(id, self.topic, &self.payload, self.version, self.key.as_deref());
    }
}

/// The queue as the driver's calls left it, and a digest of it after every
/// LSN, so a recovered state can be matched to the prefix it claims.
#[derive(Clone, Default)]
struct Expect {
    msgs: BTreeMap<u64, Msg>,
    dedup: HashMap<(&'static str, String), u64>,
    dead: BTreeSet<u64>,
    /// (LSN, digest after it), ascending.
    history: Vec<(Lsn, u64)>,
}

fn topic_static(t: &str) -> &'static str {
    TOPICS.iter().find(|x| **x == t).copied().unwrap_or_else(|| panic!("unknown topic {t}"))
}

impl Expect {
    fn new() -> Expect {
        let mut e = Expect::default();
        e.history.push((0, e.digest()));
        e
    }

    /// The digest of the state as a reopen sees it: in-flight messages are
    /// back (superseded ones dropped), leases do not count.
    fn digest(&self) -> u64 {
        let live = self.msgs.values().filter(|m| !m.superseded).fold(0u64, |h, m| h.wrapping_add(m.hash));
        self.dead.iter().fold(live, |h, id| h.wrapping_add(dead_hash(*id)))
    }

    fn record(&mut self, lsn: Lsn) {
        let d = self.digest();
        self.history.push((lsn, d));
    }

    fn digest_at(&self, lsn: Lsn) -> Option<u64> {
        self.history.iter().rev().find(|(l, _)| *l == lsn).map(|(_, d)| *d)
    }

    /// A publish returned `id` for this item (applied in batch order).
    fn published(&mut self, topic: &'static str, payload: &[u8], key: Option<&str>, id: u64) {
        if let Some(m) = self.msgs.get_mut(&id) {
            // Replaced in place: a ready holder of the key, or an earlier
            // item of the same batch.
            assert!(m.token.is_none(), "publish replaced in-flight message {id:x}");
            m.payload = payload.into();
            m.version += 1;
            m.rehash(id);
            return;
        }
        let mut version = 1;
        if let Some(k) = key {
            if let Some(h) = self.dedup.get(&(topic, k.to_owned())).copied() {
                let held = self.msgs.get_mut(&h).expect("dedup holder exists");
                assert!(held.token.is_some(), "a ready holder of {k} would have been replaced");
                held.superseded = true;
                version = held.version + 1;
            }
            self.dedup.insert((topic, k.to_owned()), id);
        }
        let mut m = Msg {
            topic,
            payload: payload.into(),
            version,
            key: key.map(str::to_owned),
            token: None,
            superseded: false,
            hash: 0,
        };
        m.rehash(id);
        self.msgs.insert(id, m);
    }

    fn remove(&mut self, id: u64) -> Msg {
        let m = self.msgs.remove(&id).expect("removed message exists");
        if let Some(k) = &m.key
            && self.dedup.get(&(m.topic, k.clone())) == Some(&id)
        {
            self.dedup.remove(&(m.topic, k.clone()));
        }
        m
    }

    fn acked(&mut self, id: u64) {
        self.remove(id);
    }

    /// Requeue (nack), release, or a reopen: ready again, or dropped if
    /// superseded.
    fn returned(&mut self, id: u64) {
        if self.msgs[&id].superseded {
            self.remove(id);
        } else {
            self.msgs.get_mut(&id).expect("exists").token = None;
        }
    }

    fn dead_lettered(&mut self, id: u64) {
        let superseded = self.msgs[&id].superseded;
        self.remove(id);
        if !superseded {
            self.dead.insert(id);
        }
    }

    /// What a reopen does to in-flight messages.
    fn reopened(&mut self) {
        let in_flight: Vec<u64> = self.msgs.iter().filter(|(_, m)| m.token.is_some()).map(|(id, _)| *id).collect();
        for id in in_flight {
            self.returned(id);
        }
    }

    /// The state a recovery produced (all ready), continuing the history up
    /// to its LSN.
    fn from_recovered(r: &Recovered, history: &[(Lsn, u64)]) -> Expect {
        let mut e = Expect {
            history: history.iter().copied().filter(|(l, _)| *l <= r.last_lsn).collect(),
            ..Default::default()
        };
        for m in &r.msgs {
            let topic = topic_static(&m.topic);
            let mut msg = Msg {
                topic,
                payload: m.payload.clone().into(),
                version: m.version,
                key: m.key.clone(),
                token: None,
                superseded: false,
                hash: 0,
            };
            msg.rehash(m.id);
            if let Some(k) = &m.key {
                e.dedup.insert((topic, k.clone()), m.id);
            }
            e.msgs.insert(m.id, msg);
        }
        e.dead = r.dead.iter().copied().collect();
        e
    }
}

// ---------------------------------------------------------------------------
// Opening an image and checking what it recovers
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct GotMsg {
    id: u64,
    topic: String,
    payload: Vec<u8>,
    version: u32,
    key: Option<String>,
}

#[derive(Clone, Debug)]
struct Recovered {
    last_lsn: Lsn,
    torn: usize,
    dropped_records: u64,
    msgs: Vec<GotMsg>,
    dead: Vec<u64>,
}

impl Recovered {
    fn digest(&self) -> u64 {
        let live = self
            .msgs
            .iter()
            .fold(0u64, |h, m| h.wrapping_add(msg_hash(m.id, &m.topic, &m.payload, m.version, m.key.as_deref())));
        self.dead.iter().fold(live, |h, id| h.wrapping_add(dead_hash(*id)))
    }
}

fn restore(files: &Image, dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("creating an image directory");
    for (n, b) in files {
        fs::write(dir.join(n), b).expect("writing an image file");
    }
}

/// Opens `files` as a queue directory at `dir` and reads everything back:
/// every ready message (a reopen makes in-flight ones ready) and dead letter.
fn recover(files: &Image, dir: &Path, opts: &Options) -> Result<Recovered, String> {
    restore(files, dir);
    let run = || -> Result<Recovered, String> {
        let e = Engine::open(dir, opts.clone()).map_err(|e| match e {
            Error::Corruption { .. } => format!("Engine::open reported corruption: {e}"),
            e => format!("Engine::open failed: {e}"),
        })?;
        let report = e.recovery_report();
        let mut msgs = Vec::new();
        for t in TOPICS {
            let got = e.checkout(t, 1 << 20, LEASE, Wait::No).map_err(|e| format!("checkout after open: {e}"))?;
            msgs.extend(got.into_iter().map(|d| GotMsg {
                id: d.id,
                topic: d.topic.to_string(),
                payload: d.payload.to_vec(),
                version: d.version,
                key: d.meta.and_then(|m| m.dedup_key.clone()),
            }));
        }
        let dead = e.dlq_list(None, None, None).map_err(|e| format!("dlq_list: {e}"))?;
        e.close().map_err(|e| format!("close after recovery: {e}"))?;
        Ok(Recovered {
            last_lsn: report.last_lsn,
            torn: report.torn.len(),
            dropped_records: report.dropped_records,
            msgs,
            dead: dead.into_iter().map(|d| d.message.id).collect(),
        })
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("the engine panicked: {what}"))
        }
    }
}

/// Checks a recovered state against the expected one for its LSN.
fn judge(rec: &Recovered, required: Lsn, exp: &Expect) -> Result<(), String> {
    let r = rec.last_lsn;
    let last = exp.history.last().map_or(0, |h| h.0);
    if r < required {
        return Err(format!(
            "durable work lost: recovered up to LSN {r}, but everything up to LSN {required} was durable \
             (written up to {last})"
        ));
    }
    let Some(want) = exp.digest_at(r) else {
        return Err(format!("recovered up to LSN {r}, which no operation wrote (written up to {last})"));
    };
    if rec.digest() != want {
        let mut detail = format!(
            "recovered state at LSN {r} differs from the state after that operation: {} messages and {} dead \
             letters recovered",
            rec.msgs.len(),
            rec.dead.len()
        );
        if r == last {
            let want_ids: BTreeSet<u64> = exp.msgs.iter().filter(|(_, m)| !m.superseded).map(|(id, _)| *id).collect();
            let got_ids: BTreeSet<u64> = rec.msgs.iter().map(|m| m.id).collect();
            let missing: Vec<_> = want_ids.difference(&got_ids).map(|i| format!("{i:x}")).collect();
            let extra: Vec<_> = got_ids.difference(&want_ids).map(|i| format!("{i:x}")).collect();
            detail += &format!("; missing {missing:?}, unexpected {extra:?}");
        }
        return Err(detail);
    }
    Ok(())
}

/// Where failing images go.
fn save_failure(name: &str, files: &Image, message: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name: String = name.chars().take(40).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let dir = std::env::temp_dir().join("ringq-crash-failures").join(format!("{name}-{}-{n}", std::process::id()));
    restore(files, &dir);
    let _ = fs::write(dir.join("FAILURE.txt"), message);
    dir
}

/// A scratch directory on tmpfs when there is one (fsync is free there),
/// removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
        let nanos = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = root.join(format!("ringq-crash-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir.canonicalize().expect("canonical scratch path"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The randomized workload
// ---------------------------------------------------------------------------

fn options(durability: Durability) -> Options {
    Options {
        durability,
        capacity: CAPACITY,
        segment_size: 64 * 1024,
        fsync_interval: Duration::from_millis(3),
        snapshot_every: 250,
        snapshot_interval: Duration::from_secs(3600),
        max_attempts: u32::MAX,
        ..Options::default()
    }
}

/// What a run did. `images` are the power cuts checked; `lost_some` of them
/// recovered less than was written, `torn` reported a torn tail, `dropped`
/// dropped whole records after one. `hooked` captures were taken inside
/// callbacks.
#[derive(Default, Debug)]
struct Counts {
    ops: u64,
    captures: u64,
    hooked: u64,
    images: u64,
    lost_some: u64,
    torn: u64,
    dropped: u64,
    generations: u64,
    kills: u64,
    continued: u64,
}

/// One driver thread runs a seeded random workload: publishes (single and
/// batched, dedup keys from a small pool, so replaces and supersedes
/// happen), checkouts, acks (some with chained publishes), nacks (requeue or
/// dead-letter), releases, explicit snapshots and short pauses, while the
/// engine's flusher, preparer and snapshotter run. After each operation: a
/// cut with 5% chance, and with about 0.4% each a clean restart, a `kill -9`
/// or a power cut the workload then continues from.
struct Run {
    name: String,
    seed: u64,
    opts: Options,
    rng: Rng,
    scratch: Scratch,
    generation: u32,
    /// How the directory got where it is (restarts, kills, power cuts).
    events: Vec<String>,
    dir: PathBuf,
    engine: Option<Engine>,
    exp: Expect,
    /// Deliveries checked out and not settled: (id, token).
    held: Vec<(u64, u64)>,
    last_lsn: Lsn,
    chain: u64,
    images_per_cut: usize,
    counts: Counts,
    failures: Vec<String>,
    keep_going: bool,
}

impl Run {
    fn new(name: &str, seed: u64, durability: Durability) -> Run {
        let scratch = Scratch::new(name);
        let dir = scratch.0.join("g0");
        fs::create_dir_all(&dir).unwrap();
        let mut run = Run {
            name: name.to_owned(),
            seed,
            opts: options(durability),
            rng: Rng::new(seed),
            scratch,
            generation: 0,
            events: vec!["generation 0: a new directory".into()],
            dir: dir.clone(),
            engine: None,
            exp: Expect::new(),
            held: Vec::new(),
            last_lsn: 0,
            chain: 0,
            images_per_cut: 8,
            counts: Counts::default(),
            failures: Vec::new(),
            keep_going: std::env::var("RINGQ_CRASH_KEEP_GOING").is_ok_and(|v| v == "1"),
        };
        tracker().track(&dir, Disk::default(), 0);
        tracker().set_hooks(0.03, false, seed);
        run.open_engine(None);
        run
    }

    fn e(&self) -> &Engine {
        self.engine.as_ref().expect("engine open")
    }

    /// Opens the current generation's directory; `expect_last`: the LSN
    /// recovery must reach (nothing was lost).
    fn open_engine(&mut self, expect_last: Option<Lsn>) {
        let e = Engine::open(&self.dir, self.opts.clone()).unwrap_or_else(|e| {
            panic!("[{} seed {}] opening generation {}: {e}", self.name, self.seed, self.generation)
        });
        let r = e.recovery_report();
        if let Some(want) = expect_last {
            assert_eq!(r.last_lsn, want, "[{} seed {}] reopen lost records: {r:?}", self.name, self.seed);
        }
        self.last_lsn = r.last_lsn;
        self.engine = Some(e);
        self.exp.reopened();
        self.held.clear();
        self.after_op();
        self.check_pending();
    }

    /// After each call: learn its LSN (one record per call that wrote one)
    /// and the durable LSN.
    fn after_op(&mut self) {
        let (lsn, durable) = (stat(self.e(), "lsn"), stat(self.e(), "durable_lsn"));
        if lsn > self.last_lsn {
            assert_eq!(lsn, self.last_lsn + 1, "[{} seed {}] one call wrote several records", self.name, self.seed);
            self.exp.record(lsn);
            self.last_lsn = lsn;
        }
        tracker().set_required(durable);
    }

    /// With `durability="always"`, a call returns once its record is synced.
    fn confirm(&mut self, lsn: Option<Lsn>) {
        if self.opts.durability == Durability::Always
            && let Some(l) = lsn
        {
            self.e().wait_durable(Some(l)).expect("wait_durable");
            tracker().set_required(l);
        }
    }

    fn payload(&mut self) -> Vec<u8> {
        let n = if self.rng.chance(0.1) { self.rng.range(2000, 7000) } else { self.rng.range(1, 1200) };
        self.rng.bytes(n as usize)
    }

    fn topic(&mut self) -> &'static str {
        TOPICS[self.rng.below(TOPICS.len() as u64) as usize]
    }

    fn key(&mut self) -> Option<String> {
        self.rng.chance(0.35).then(|| format!("k{}", self.rng.below(KEYS)))
    }

    fn take_held(&mut self, max: u64) -> Vec<(u64, u64)> {
        let n = self.rng.range(1, max).min(self.held.len() as u64);
        (0..n).map(|_| self.held.swap_remove(self.rng.below(self.held.len() as u64) as usize)).collect()
    }

    fn step(&mut self) {
        self.counts.ops += 1;
        let live = self.exp.msgs.len();
        let mut roll = self.rng.below(100);
        if live + 8 > CAPACITY * 2 / 3 && roll < 40 {
            roll += 40; // full enough: consume instead
        }
        match roll {
            0..30 => self.publish_one(),
            30..40 => self.publish_batch(),
            40..58 => self.checkout(),
            58..74 => self.ack(),
            74..82 => self.nack(),
            82..90 => self.release(),
            90..92 => {
                self.e().snapshot().expect("snapshot");
            }
            _ => std::thread::sleep(Duration::from_micros(self.rng.below(3000))),
        }
        self.after_op();
        self.check_pending();
        let p = self.rng.unit();
        if p < 0.05 {
            self.cut_now();
        } else if p < 0.054 {
            self.clean_restart();
        } else if p < 0.058 {
            self.kill_restart();
        } else if p < 0.062 {
            self.power_cut_and_continue();
        }
    }

    fn publish_one(&mut self) {
        let (topic, key, payload) = (self.topic(), self.key(), self.payload());
        let p = Publish { topic, payload: &payload, dedup_key: key.as_deref(), ..Default::default() };
        let (id, lsn) = self.e().publish(p, PublishOpts::default(), Wait::No).expect("publish");
        self.confirm(lsn);
        self.exp.published(topic, &payload, key.as_deref(), id);
    }

    fn publish_batch(&mut self) {
        let n = self.rng.range(2, 6);
        let items: Vec<(&'static str, Option<String>, Vec<u8>)> =
            (0..n).map(|_| (self.topic(), self.key(), self.payload())).collect();
        let pubs: Vec<Publish<'_>> = items
            .iter()
            .map(|(t, k, p)| Publish { topic: t, payload: p, dedup_key: k.as_deref(), ..Default::default() })
            .collect();
        let (ids, lsn) = self.e().publish_many(&pubs, PublishOpts::default(), Wait::No).expect("publish_many");
        self.confirm(lsn);
        for ((t, k, p), id) in items.iter().zip(ids) {
            self.exp.published(t, p, k.as_deref(), id);
        }
    }

    fn checkout(&mut self) {
        let (topic, max) = (self.topic(), self.rng.range(1, 4) as usize);
        let got = self.e().checkout(topic, max, LEASE, Wait::No).expect("checkout");
        for d in got {
            let m = self.exp.msgs.get_mut(&d.id).unwrap_or_else(|| panic!("checked out unknown {:x}", d.id));
            assert!(m.token.is_none() && *m.payload == *d.payload && m.version == d.version, "checkout of {:x}", d.id);
            m.token = Some(d.lease_token);
            self.held.push((d.id, d.lease_token));
        }
    }

    fn ack(&mut self) {
        if self.held.is_empty() {
            return self.checkout();
        }
        let leases = self.take_held(3);
        // Sometimes with chained publishes (one record with the ack). Their
        // keys are fresh, so their ids can be looked up afterwards.
        let chained: Vec<(&'static str, String, Vec<u8>)> = if self.rng.chance(0.2) {
            (0..self.rng.range(1, 2))
                .map(|_| {
                    self.chain += 1;
                    (self.topic(), format!("chain-{}", self.chain), self.payload())
                })
                .collect()
        } else {
            Vec::new()
        };
        let pubs: Vec<Publish<'_>> = chained
            .iter()
            .map(|(t, k, p)| Publish { topic: t, payload: p, dedup_key: Some(k), ..Default::default() })
            .collect();
        let out = self.e().ack(&leases, &pubs, Wait::No).expect("ack");
        assert!(out.lost.is_empty(), "ack lost {:?}", out.lost);
        self.confirm(out.lsn);
        for (id, _) in &leases {
            self.exp.acked(*id);
        }
        for (t, k, p) in &chained {
            // A publish that keeps the existing holder writes nothing and
            // returns its id, to be waited on as the record that made it.
            let keep = PublishOpts { on_duplicate: ringq::OnDuplicate::Keep, ..Default::default() };
            let probe = Publish { topic: t, payload: b"probe", dedup_key: Some(k), ..Default::default() };
            let (id, lsn) = self.e().publish(probe, keep, Wait::No).expect("probe");
            assert!(out.lsn.is_some() && lsn >= out.lsn, "a kept duplicate waits for the ack's record: {lsn:?}");
            let (again, lsn_again) = self.e().publish(probe, keep, Wait::No).expect("probe");
            assert_eq!((again, lsn_again), (id, lsn), "a kept duplicate wrote a record");
            self.confirm(lsn);
            self.exp.published(t, p, Some(k), id);
        }
    }

    fn nack(&mut self) {
        if self.held.is_empty() {
            return self.checkout();
        }
        let (id, token) = self.take_held(1)[0];
        let dead = self.rng.chance(0.25);
        let failure = ringq::Failure { error_type: Some("Boom".into()), ..Default::default() };
        let lsn = self.e().nack(id, token, None, failure, dead.then_some("poison")).expect("nack");
        self.confirm(lsn);
        if dead {
            self.exp.dead_lettered(id);
        } else {
            self.exp.returned(id);
        }
    }

    fn release(&mut self) {
        if self.held.is_empty() {
            return self.checkout();
        }
        let leases = self.take_held(3);
        let out = self.e().release(&leases).expect("release");
        assert!(out.lost.is_empty(), "release lost {:?}", out.lost);
        self.confirm(out.lsn);
        // Released in reverse order to the front: order is not checked.
        for (id, _) in &leases {
            self.exp.returned(*id);
        }
    }

    /// Checks `images_per_cut` random power cuts of `cap`; returns the first
    /// image that recovered cleanly, and what it recovered.
    fn check_capture(&mut self, cap: &Capture) -> Option<(Image, Recovered)> {
        self.counts.captures += 1;
        let mut good = None;
        let vdir = self.scratch.0.join("v");
        for i in 0..self.images_per_cut {
            let style = if i == 0 { Style::NOTHING } else { Style::random(&mut self.rng) };
            let files = power_cut(cap, style, &mut self.rng);
            self.counts.images += 1;
            let outcome =
                recover(&files, &vdir, &self.opts).and_then(|r| judge(&r, cap.required, &self.exp).map(|_| r));
            match outcome {
                Ok(r) => {
                    self.counts.lost_some += u64::from(r.last_lsn < self.last_lsn);
                    self.counts.torn += u64::from(r.torn > 0);
                    self.counts.dropped += u64::from(r.dropped_records > 0);
                    if good.is_none() {
                        good = Some((files, r));
                    }
                }
                Err(why) => self.fail(cap, style, &files, &why),
            }
        }
        good
    }

    fn fail(&mut self, cap: &Capture, style: Style, files: &Image, why: &str) {
        let msg = format!(
            "[{} seed {} generation {} op {}] {}: {why}\n  cut style {style:?}; required LSN {}, written up to {}\n  \
             durable entries {:?}\n  current entries {:?}\n  history: {}",
            self.name,
            self.seed,
            self.generation,
            self.counts.ops,
            cap.label,
            cap.required,
            self.last_lsn,
            cap.disk.entries.keys().collect::<Vec<_>>(),
            cap.now.keys().collect::<Vec<_>>(),
            self.events.join("; "),
        );
        let saved = save_failure(&self.name, files, &msg);
        let msg = format!("{msg}\n  image saved in {} (Engine::open on a copy reproduces it)", saved.display());
        if !self.keep_going {
            panic!("{msg}");
        }
        eprintln!("FAILURE {msg}");
        self.failures.push(msg);
    }

    fn check_pending(&mut self) {
        for cap in tracker().take_pending() {
            self.counts.hooked += 1;
            self.check_capture(&cap);
        }
    }

    fn cut_now(&mut self) {
        let cap = tracker().capture(&format!("cut between operations (after op {})", self.counts.ops));
        self.check_capture(&cap);
    }

    fn next_dir(&mut self) -> PathBuf {
        self.generation += 1;
        self.counts.generations += 1;
        let dir = self.scratch.0.join(format!("g{}", self.generation));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Leaves the current generation: its engine is closed untracked (what
    /// it writes now is not part of any later image) and its files go.
    fn abandon(&mut self) {
        self.check_pending();
        tracker().untrack();
        if let Some(e) = self.engine.take() {
            let _ = e.close();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Close (tracked: a cut may hit it), then reopen the same directory.
    fn clean_restart(&mut self) {
        let e = self.engine.take().expect("open");
        e.close().expect("close");
        self.check_pending();
        let last = self.last_lsn;
        self.events.push(format!("clean close and reopen after op {}", self.counts.ops));
        self.open_engine(Some(last));
    }

    /// `kill -9`: a copy of the page-cache view, with the model of what was
    /// durable carried over, is where the next process starts.
    fn kill_restart(&mut self) {
        self.counts.kills += 1;
        let cap = tracker().capture(&format!("kill -9 (after op {})", self.counts.ops));
        let last = self.last_lsn;
        self.abandon();
        let dir = self.next_dir();
        restore(&cap.killed(), &dir);
        let disk = Disk::for_copy(&cap, &listing(&dir));
        self.dir = dir;
        self.events.push(format!(
            "generation {}: kill -9 after op {} (durable LSN {}, written {last})",
            self.generation, self.counts.ops, cap.required
        ));
        tracker().track(&self.dir, disk, cap.required);
        self.open_engine(Some(last));
    }

    /// A power cut that recovered becomes the next generation's disk.
    fn power_cut_and_continue(&mut self) {
        let cap = tracker().capture(&format!("power cut, then continue (after op {})", self.counts.ops));
        let Some((files, rec)) = self.check_capture(&cap) else { return };
        self.counts.continued += 1;
        self.abandon();
        let dir = self.next_dir();
        restore(&files, &dir);
        self.dir = dir;
        self.exp = Expect::from_recovered(&rec, &self.exp.history);
        self.events.push(format!(
            "generation {}: power cut after op {} (recovered to LSN {} of {})",
            self.generation, self.counts.ops, rec.last_lsn, self.last_lsn
        ));
        tracker().track(&self.dir, Disk::all_durable(&self.dir), rec.last_lsn);
        self.open_engine(Some(rec.last_lsn));
    }

    fn finish(mut self) -> Counts {
        // A cut may hit the final close too.
        if let Some(e) = self.engine.take() {
            e.close().expect("close");
        }
        self.check_pending();
        tracker().untrack();
        eprintln!("{} seed {}: {:?}", self.name, self.seed, self.counts);
        if !self.failures.is_empty() {
            panic!("{} failure(s):\n{}", self.failures.len(), self.failures.join("\n"));
        }
        std::mem::take(&mut self.counts)
    }
}

/// Thousands of power cuts at random points of a random workload, for both
/// durability modes that promise anything.
#[test]
fn random_power_cuts_never_corrupt_and_never_lose_durable_work() {
    let _one = lock(&SERIAL);
    let t0 = Instant::now();
    let base_seed = env_u64("RINGQ_CRASH_SEED").unwrap_or(0x5EED_0001);
    let steps = env_u64("RINGQ_CRASH_STEPS").unwrap_or(2000);
    for (i, durability) in [Durability::Always, Durability::Batch].into_iter().enumerate() {
        let seed = base_seed.wrapping_add(i as u64);
        let name = format!("random-{}", durability.as_str());
        let mut run = Run::new(&name, seed, durability);
        for _ in 0..steps {
            run.step();
        }
        let c = run.finish();
        assert!(c.images >= steps / 5, "too few images checked: {c:?}");
    }
    eprintln!("random power cuts: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Deterministic sub-cases
// ---------------------------------------------------------------------------

/// A tracked queue for a hand-made scenario.
struct Case {
    scratch: Scratch,
    dir: PathBuf,
    opts: Options,
    exp: Expect,
    last_lsn: Lsn,
}

impl Case {
    fn new(name: &str, opts: Options) -> Case {
        let scratch = Scratch::new(name);
        let dir = scratch.0.join("q");
        fs::create_dir_all(&dir).unwrap();
        tracker().track(&dir, Disk::default(), 0);
        tracker().set_hooks(0.0, false, 0);
        Case { scratch, dir, opts, exp: Expect::new(), last_lsn: 0 }
    }

    fn open(&mut self) -> Engine {
        let e = Engine::open(&self.dir, self.opts.clone()).expect("open");
        self.last_lsn = e.recovery_report().last_lsn;
        self.exp.reopened();
        self.sync_lsn(&e);
        e
    }

    fn sync_lsn(&mut self, e: &Engine) {
        let lsn = stat(e, "lsn");
        if lsn > self.last_lsn {
            self.exp.record(lsn);
            self.last_lsn = lsn;
        }
        tracker().set_required(stat(e, "durable_lsn"));
    }

    /// Publishes `n` messages of `size` bytes to the first topic; with
    /// `confirm`, each waits for its fsync (durability="always").
    fn publish(&mut self, e: &Engine, n: usize, size: usize, confirm: bool) -> Lsn {
        let mut lsn = 0;
        for i in 0..n {
            let payload = vec![(self.last_lsn as u8).wrapping_add(i as u8); size];
            let p = Publish { topic: TOPICS[0], payload: &payload, ..Default::default() };
            let (id, l) = e.publish(p, PublishOpts::default(), Wait::No).expect("publish");
            if confirm {
                e.wait_durable(l).expect("wait_durable");
                tracker().set_required(l.unwrap());
            }
            self.exp.published(TOPICS[0], &payload, None, id);
            self.sync_lsn(e);
            lsn = l.unwrap();
        }
        lsn
    }

    /// Opens `files`, which must recover without error to at least
    /// `required` and to exactly the state of the LSN it reaches.
    fn check(&self, what: &str, files: &Image, required: Lsn) -> Recovered {
        let vdir = self.scratch.0.join("v");
        let res = recover(files, &vdir, &self.opts).and_then(|r| judge(&r, required, &self.exp).map(|_| r));
        res.unwrap_or_else(|why| {
            let saved = save_failure(what, files, &format!("{what}: {why}"));
            panic!("{what}: {why}\n  image saved in {}", saved.display())
        })
    }
}

/// Batch durability with no flusher round (nothing is fsynced unless a
/// test asks) and no automatic snapshot.
fn batch_without_flushes() -> Options {
    Options {
        durability: Durability::Batch,
        fsync_interval: Duration::from_secs(3600),
        snapshot_every: 1 << 40,
        ..options(Durability::Batch)
    }
}

/// The used segments of a capture (as killed), by first LSN.
fn used_segments(cap: &Capture) -> Vec<(Lsn, String)> {
    let mut used: Vec<(Lsn, String)> = cap
        .killed()
        .into_iter()
        .filter(|(n, d)| n.ends_with(".log") && first_lsn(d) != 0)
        .map(|(n, d)| (first_lsn(&d), n))
        .collect();
    used.sort();
    used
}

/// Every unsynced page written back but the first page (the header) of
/// `name`, which is as last fsynced.
fn first_page_lost(cap: &Capture, name: &str) -> Image {
    cut_with(cap, |n, d, cur| {
        let mut out = cur.to_vec();
        if n == name {
            out[..PAGE].copy_from_slice(&padded(d, 0, PAGE));
        }
        out
    })
}

/// First LSN in a segment's header (0: a prepared, unused segment).
fn first_lsn(data: &[u8]) -> Lsn {
    ringq::journal::read_segment_header(Path::new("x"), data).ok().flatten().map_or(0, |h| h.first_lsn)
}

/// (a) Right after a roll, before any fsync: the new segment's pages (its
/// header and first records) reached the disk by write-back, the old
/// segment's unsynced tail (records and seal) did not — or only its last
/// page did. Nothing was fsynced, so losing all of it is allowed; failing
/// to open is not.
#[test]
fn power_cut_right_after_a_segment_roll() {
    let _one = lock(&SERIAL);
    let opts = batch_without_flushes();
    let mut c = Case::new("roll", opts);
    let e = c.open();
    // Let the preparer make the spare the roll will take.
    let t0 = Instant::now();
    while stat(&e, "journal_spares") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no spare segment");
        std::thread::sleep(Duration::from_millis(1));
    }
    while stat(&e, "journal_segments") < 2 {
        c.publish(&e, 1, 1000, false);
    }
    c.publish(&e, 3, 1000, false);
    let cap = tracker().capture("right after a roll");
    let used = used_segments(&cap);
    let [(_, old), (_, new)] = &used[..] else { panic!("expected two used segments: {used:?}") };
    // All of the old segment's unsynced pages lost; then all but its last.
    let lost_tail = cut_with(&cap, |n, d, cur| if n == old { padded(d, 0, cur.len()) } else { cur.to_vec() });
    let keep_last_page = cut_with(&cap, |n, d, cur| {
        if n != old {
            return cur.to_vec();
        }
        let last = cur.iter().rposition(|b| *b != 0).unwrap_or(0) / PAGE * PAGE;
        let mut out = padded(d, 0, cur.len());
        out[last..].copy_from_slice(&cur[last..]);
        out
    });
    drop(e);
    for (what, img) in
        [("old tail lost, new segment written back", lost_tail), ("old tail lost but its last page", keep_last_page)]
    {
        let r = c.check(&format!("roll: {what} ({old} -> {new})"), &img, cap.required);
        assert!(r.last_lsn < c.last_lsn, "{what}: nothing was lost? {r:?}");
    }
    tracker().untrack();
}

/// (a2) Two rolls, nothing synced since the first segment filled: write-back
/// kept the first segment's seal and the third segment's pages but not the
/// page of the second segment that holds its header (the roll wrote both
/// through the mappings). The seal names a segment the disk says is unused:
/// a tear at the seal, the third segment dropped with it (nothing after the
/// seal was fsynced), never "segment missing". Seen once as a flaky cut of
/// `power_cut_at_every_step_of_a_snapshot` under load.
#[test]
fn power_cut_keeping_a_seal_but_not_the_header_it_names() {
    let _one = lock(&SERIAL);
    let opts = batch_without_flushes();
    let mut c = Case::new("seal-kept", opts);
    let e = c.open();
    while stat(&e, "journal_segments") < 3 {
        c.publish(&e, 1, 1000, false);
    }
    c.publish(&e, 3, 1000, false);
    let cap = tracker().capture("after two rolls");
    let used = used_segments(&cap);
    let [_, (_, second), _] = &used[..] else { panic!("expected three used segments: {used:?}") };
    // Every unsynced page written back, but the second segment's first.
    let img = first_page_lost(&cap, second);
    drop(e);
    let r = c.check("a seal kept, the header it names lost", &img, cap.required);
    assert!(r.last_lsn < used[1].0, "the journal ends at the seal: {r:?}");
    assert!(r.torn > 0, "the seal is reported as a torn tail: {r:?}");
    tracker().untrack();
}

/// (a3) As (a2), with the lost header on the segment a snapshot anchored: a
/// snapshot taken while segment 2 was active (its header and records never
/// fsynced) deleted segment 1, then a roll put segment 3's header on disk by
/// write-back but not segment 2's. The chain starts at segment 3, past the
/// snapshot; the records between are lost, none was fsynced: a tear, never
/// "journal resumes at LSN N but LSN M is missing".
#[test]
fn power_cut_keeping_a_later_header_but_not_the_snapshot_anchors() {
    let _one = lock(&SERIAL);
    let opts = batch_without_flushes();
    let mut c = Case::new("anchor-lost", opts.clone());
    let e = c.open();
    let roll = |c: &mut Case, e: &Engine| {
        let segments = stat(e, "journal_segments");
        while stat(e, "journal_segments") == segments {
            c.publish(e, 1, 1000, false);
        }
        c.publish(e, 3, 1000, false);
    };
    roll(&mut c, &e);
    e.snapshot().expect("snapshot");
    let snap = stat(&e, "snapshot_lsn");
    roll(&mut c, &e);
    let cap = tracker().capture("a roll past the snapshot's anchor");
    let used = used_segments(&cap);
    let [.., (_, anchor), (newest, _)] = &used[..] else { panic!("expected two used segments: {used:?}") };
    assert!(*newest > snap + 1, "records between the snapshot and the newest segment");
    let img = first_page_lost(&cap, anchor);
    drop(e);
    let r = c.check("a later header kept, the anchor's lost", &img, cap.required);
    assert_eq!(r.last_lsn, snap, "the journal ends at the snapshot: {r:?}");
    // Opened with larger segments, the anchor is a spare too small to use.
    // The image's MANIFEST names it until the open writes a new one: the
    // open must not delete it before (a kill in between left a queue that
    // refused to open, "journal segment is missing"). It goes at the next
    // open, which no MANIFEST names it to.
    let larger = Options { segment_size: opts.segment_size * 4, ..opts };
    let vdir = c.scratch.0.join("larger");
    let r = recover(&img, &vdir, &larger).expect("opened with larger segments");
    assert_eq!(r.last_lsn, snap);
    assert!(vdir.join(anchor).exists(), "the open deleted the segment the MANIFEST still named");
    Engine::open(&vdir, larger).expect("reopen").close().expect("close");
    assert!(!vdir.join(anchor).exists(), "the next open removes it");
    tracker().untrack();
}

/// (b) A hole in the unsynced part of the active segment with valid records
/// after it: a torn tail that drops them (and says so), never corruption.
#[test]
fn hole_in_front_of_unsynced_records_is_a_torn_tail() {
    let _one = lock(&SERIAL);
    let mut c = Case::new("hole", Options { snapshot_every: 1 << 40, ..options(Durability::Always) });
    let e = c.open();
    let confirmed = c.publish(&e, 3, 300, true);
    c.publish(&e, 24, 1000, false);
    let cap = tracker().capture("hole in the unsynced region");
    drop(e);
    let active = cap
        .now
        .iter()
        .find(|(n, i)| n.ends_with(".log") && first_lsn(cap.current_of(i)) != 0)
        .map(|(n, _)| n.clone())
        .expect("the active segment");
    let ino = cap.now[&active];
    let (d, cur) = (cap.durable_of(&ino), cap.current_of(&ino));
    // The first page that differs holds the synced end; punch the next one.
    let first_diff = (0..cur.len()).step_by(PAGE).find(|p| padded(d, *p, p + PAGE) != cur[*p..p + PAGE]).unwrap();
    let hole = first_diff + PAGE;
    assert!(cur[hole + 2 * PAGE..].iter().any(|b| *b != 0), "records after the hole");
    let img = cut_with(&cap, |n, d, cur| {
        let mut out = cur.to_vec();
        if n == active {
            out[hole..hole + PAGE].copy_from_slice(&padded(d, hole, hole + PAGE));
        }
        out
    });
    let r = c.check("hole in the unsynced region", &img, confirmed);
    assert!(r.torn > 0, "the hole was not reported as a torn tail: {r:?}");
    assert!(r.dropped_records > 0, "records after the hole were not counted as dropped: {r:?}");
    assert!(r.last_lsn >= confirmed && r.last_lsn < c.last_lsn, "{r:?}");
    tracker().untrack();
}

/// (c) A cut at every step of a snapshot: temp file written and synced but
/// not renamed, renamed but the rename not durable, MANIFEST half-way,
/// covered segments removed but the removal not durable.
#[test]
fn power_cut_at_every_step_of_a_snapshot() {
    let _one = lock(&SERIAL);
    let mut c = Case::new("snapshot", Options { snapshot_every: 1 << 40, ..options(Durability::Batch) });
    let e = c.open();
    c.publish(&e, 150, 1000, false); // a few segments
    let required = stat(&e, "durable_lsn");
    tracker().take_pending();
    tracker().set_hooks(0.0, true, 7);
    e.snapshot().expect("snapshot");
    tracker().set_hooks(0.0, false, 7);
    let caps = tracker().take_pending();
    drop(e);
    assert!(caps.len() >= 4, "a snapshot makes at least 4 fsyncs: {}", caps.len());
    let tmp_not_renamed = caps.iter().any(|c| c.now.keys().any(|n| n.contains(".snap.tmp")));
    let rename_not_durable = caps
        .iter()
        .any(|c| c.now.keys().any(|n| n.ends_with(".snap")) && !c.disk.entries.keys().any(|n| n.ends_with(".snap")));
    assert!(tmp_not_renamed && rename_not_durable, "the cuts did not catch the snapshot half-way");
    let mut rng = Rng::new(3);
    let mut n = 0;
    for cap in &caps {
        for i in 0..12 {
            let style = match i {
                0 => Style::NOTHING,
                1 => Style::EVERYTHING,
                _ => Style::random(&mut rng),
            };
            c.check(&format!("snapshot: {} ({style:?})", cap.label), &power_cut(cap, style, &mut rng), required);
            n += 1;
        }
    }
    eprintln!("snapshot: {} cut points, {n} images", caps.len());
    tracker().untrack();
}

/// (d) `kill -9` with unsynced records in an older segment, a restart, then
/// a power cut before anything else is synced. The restarted engine counts
/// every recovered record as durable, so it must have made them so.
#[test]
fn power_cut_after_kill_and_restart() {
    let _one = lock(&SERIAL);
    let opts =
        Options { fsync_interval: Duration::from_secs(3600), snapshot_every: 1 << 40, ..options(Durability::Batch) };
    let mut c = Case::new("kill", opts);
    let e = c.open();
    while stat(&e, "journal_segments") < 3 {
        c.publish(&e, 1, 1000, false);
    }
    let killed = tracker().capture("kill -9");
    let dir2 = c.scratch.0.join("restarted");
    restore(&killed.killed(), &dir2);
    let disk = Disk::for_copy(&killed, &listing(&dir2));
    tracker().untrack();
    drop(e);
    c.dir = dir2.clone();
    tracker().track(&dir2, disk, killed.required);
    let last = c.last_lsn;
    let e = c.open();
    assert_eq!(e.recovery_report().last_lsn, last, "a kill loses nothing");
    let durable = stat(&e, "durable_lsn");
    let cap = tracker().capture("power cut right after the restart");
    drop(e);
    let mut rng = Rng::new(11);
    for i in 0..20 {
        let style = if i == 0 { Style::NOTHING } else { Style::random(&mut rng) };
        c.check(
            &format!("kill, restart, power cut ({style:?}); durable_lsn {durable}"),
            &power_cut(&cap, style, &mut rng),
            durable,
        );
    }
    tracker().untrack();
}

/// (d2) `kill -9` while the preparer was making a spare: its name reached
/// the disk (another thread's directory fsync), its size and header did not
/// (the preparer's fdatasync had not run). The restarted engine adopts the
/// spare and later rolls into it; a power cut before the flusher syncs it
/// must not leave a seal naming an empty file. The restart makes an adopted
/// spare durable first.
#[test]
fn power_cut_after_rolling_into_a_spare_a_kill_left_unsynced() {
    let _one = lock(&SERIAL);
    let opts =
        Options { fsync_interval: Duration::from_secs(3600), snapshot_every: 1 << 40, ..options(Durability::Batch) };
    let mut c = Case::new("kill-spare", opts);
    let e = c.open();
    let t0 = Instant::now();
    while stat(&e, "journal_spares") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no spare segment");
        std::thread::sleep(Duration::from_millis(1));
    }
    c.publish(&e, 3, 1000, false);
    let killed = tracker().capture("kill -9 with a spare ready");
    let spare = killed
        .killed()
        .into_iter()
        .find(|(n, d)| n.ends_with(".log") && first_lsn(d) == 0)
        .map(|(n, _)| n)
        .expect("the spare");
    let dir2 = c.scratch.0.join("restarted");
    restore(&killed.killed(), &dir2);
    let mut disk = Disk::for_copy(&killed, &listing(&dir2));
    // As if the kill came between the spare's create and its fdatasync.
    let ino = disk.entries[&spare];
    disk.synced.remove(&ino);
    tracker().untrack();
    drop(e);
    c.dir = dir2.clone();
    tracker().track(&dir2, disk, killed.required);
    let e = c.open();
    let segments = stat(&e, "journal_segments");
    while stat(&e, "journal_segments") == segments {
        c.publish(&e, 1, 1000, false);
    }
    c.publish(&e, 2, 1000, false);
    let cap = tracker().capture("power cut after rolling into the adopted spare");
    drop(e);
    // Write-back kept every page but the adopted spare's: the old
    // segment's seal names it.
    let lost = cut_with(&cap, |n, d, cur| if n == spare { padded(d, 0, cur.len()) } else { cur.to_vec() });
    let r = c.check("restart adopted an unsynced spare, rolled into it, power cut", &lost, cap.required);
    assert!(r.last_lsn < c.last_lsn, "nothing was lost? {r:?}");
    tracker().untrack();
}

/// (e) A power cut at any point of the very first open of an empty
/// directory: the next open must work (an empty queue).
#[test]
fn power_cut_during_the_first_open() {
    let _one = lock(&SERIAL);
    let mut c = Case::new("first-open", options(Durability::Always));
    tracker().set_hooks(0.0, true, 5);
    let e = c.open();
    tracker().set_hooks(0.0, false, 5);
    let caps = tracker().take_pending();
    drop(e);
    assert!(!caps.is_empty());
    let mut rng = Rng::new(9);
    for cap in &caps {
        for i in 0..6 {
            let style = if i == 0 { Style::NOTHING } else { Style::random(&mut rng) };
            c.check(&format!("first open: {} ({style:?})", cap.label), &power_cut(cap, style, &mut rng), 0);
        }
    }
    tracker().untrack();
}

/// (f) `close()` with `durability="os"` whose final snapshot fails (a full
/// disk): the journal is then all that holds the work, partly in segments
/// the writer rolled away from without an fsync. `close()` records the last
/// LSN in `DURABLE`, so it must have synced them first: a power cut after
/// it may lose nothing, and a page the OS had not written back yet must not
/// turn into a corruption error.
#[test]
fn power_cut_after_closing_with_os_durability_and_a_failed_final_snapshot() {
    let _one = lock(&SERIAL);
    let mut c = Case::new("close-os", Options { snapshot_every: 1 << 40, ..options(Durability::Os) });
    let e = c.open();
    let last = c.publish(&e, 40, 4000, false);
    assert!(stat(&e, "journal_segments") >= 3, "the journal rolled");
    e.inject_fault(FaultPoint::SnapshotWrite, 28, -1);
    assert!(e.close().is_err(), "the final snapshot failed");
    drop(e);
    let cap = tracker().capture("after close");
    // DURABLE as close() left it; every other file only as fsynced.
    let synced_only = cut_with(&cap, |n, d, cur| if n == "DURABLE" { cur.to_vec() } else { padded(d, 0, cur.len()) });
    c.check("os: power cut after close, only what was fsynced", &synced_only, last);
    let mut rng = Rng::new(17);
    for _ in 0..20 {
        let style = Style::random(&mut rng);
        c.check(&format!("os: power cut after close ({style:?})"), &power_cut(&cap, style, &mut rng), last);
    }
    tracker().untrack();
}

/// (g) A cut at every step of a snapshot while the journal rolls under it:
/// the snapshot takes its state (LSN 16, the last record segment 1 holds)
/// and anchors segment 1; before it is written, record 17 rolls the journal.
/// The MANIFEST then names a segment whose records the snapshot covers, so
/// that segment must stay (until the next snapshot), and every image must
/// open — with the anchored segment covered and sealed, or cut short.
#[test]
fn power_cut_at_every_step_of_a_snapshot_the_journal_rolls_under() {
    let _one = lock(&SERIAL);
    let opts =
        Options { fsync_interval: Duration::from_secs(3600), snapshot_every: 1 << 40, ..options(Durability::Batch) };
    let mut c = Case::new("snapshot-roll", opts);
    let e = c.open();
    let t0 = Instant::now();
    while stat(&e, "journal_spares") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no spare segment");
        std::thread::sleep(Duration::from_millis(1));
    }
    // 4,082-byte records: 16 fit in a 64 KiB segment, the 17th does not.
    c.publish(&e, 16, 4000, false);
    assert_eq!(stat(&e, "journal_segments"), 1);
    tracker().take_pending();
    tracker().set_hooks(0.0, true, 19);
    let lsn = e
        .snapshot_interleaved(|| {
            c.publish(&e, 1, 4000, false);
        })
        .expect("snapshot");
    tracker().set_hooks(0.0, false, 19);
    assert_eq!((lsn, stat(&e, "journal_segments")), (16, 2), "the journal rolled; the anchored segment stays");
    c.sync_lsn(&e);
    let mut caps = tracker().take_pending();
    caps.push(tracker().capture("after the snapshot"));
    drop(e);
    assert!(caps.len() >= 4, "a snapshot makes at least 4 fsyncs: {}", caps.len());
    let mut rng = Rng::new(23);
    for cap in &caps {
        for i in 0..12 {
            let style = match i {
                0 => Style::NOTHING,
                1 => Style::EVERYTHING,
                _ => Style::random(&mut rng),
            };
            let what = format!("snapshot under a roll: {} ({style:?})", cap.label);
            c.check(&what, &power_cut(cap, style, &mut rng), cap.required);
        }
    }
    tracker().untrack();
}

/// (h) A snapshot deletes several covered segments and then fsyncs the
/// directory once: a power cut before that fsync completes may keep any
/// subset of the unlinks. Here the newer deleted segment is gone and the
/// older one stays, and the headers the writer put on the later segments
/// never reached the disk (no flusher round since the rolls), so the older
/// segment is the newest one in use and its seal names a deleted segment.
/// Everything it led to is in the snapshot the MANIFEST names: the queue
/// must open.
#[test]
fn power_cut_when_only_some_of_a_snapshots_deletions_reached_the_disk() {
    let _one = lock(&SERIAL);
    // What deleting covered segments leaves (recycling renames them).
    let opts = Options {
        fsync_interval: Duration::from_secs(3600),
        snapshot_every: 1 << 40,
        recycle_segments: false,
        ..options(Durability::Batch)
    };
    let mut c = Case::new("deletions", opts);
    let e = c.open();
    c.publish(&e, 150, 1000, false);
    assert!(stat(&e, "journal_segments") >= 3, "segments 1 and 2 closed");
    tracker().take_pending();
    tracker().set_hooks(0.0, true, 29);
    e.snapshot().expect("snapshot");
    tracker().set_hooks(0.0, false, 29);
    drop(e);
    let (one, two, three) = ("00000000000000000001.log", "00000000000000000002.log", "00000000000000000003.log");
    // The cut while the directory fsync after the deletions was in flight.
    let cap = tracker()
        .take_pending()
        .into_iter()
        .find(|cap| cap.disk.entries.contains_key(one) && !cap.now.contains_key(one) && !cap.now.contains_key(two))
        .expect("a cut with both unlinks made and not yet durable");
    let mut img: Image = Vec::new();
    for (n, i) in cap.now.iter().chain(cap.disk.entries.iter().filter(|(n, _)| *n == one)) {
        let bytes = if n == three {
            // Its header (first LSN 0 at preparation) as last fsynced.
            padded(cap.durable_of(i), 0, cap.current_of(i).len())
        } else {
            cap.current_of(i).to_vec()
        };
        img.push((n.clone(), bytes));
    }
    c.check("segment 1's unlink lost, segment 2's durable, segment 3's header lost", &img, cap.required);
    tracker().untrack();
}

/// (i) The disk is full, so a roll cannot make a segment, and a snapshot
/// covers every record: the roll starts the active segment over in place
/// (`Journal::rewind`). A power cut at any step of that must leave a queue
/// that opens with everything the snapshot holds; a rewind that zeroed the
/// old records page by page before its fsync left, after a cut, some pages
/// zeroed and old, already fsynced records after them: recovery took that
/// for corruption and refused to open.
#[test]
fn power_cut_at_every_step_of_a_rewind() {
    let _one = lock(&SERIAL);
    for durability in [Durability::Always, Durability::Batch] {
        let opts = Options { snapshot_every: 1 << 40, ..options(durability) };
        let mut c = Case::new(&format!("rewind-{}", durability.as_str()), opts);
        let e = c.open();
        let t0 = Instant::now();
        while stat(&e, "journal_spares") == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "no spare segment");
            std::thread::sleep(Duration::from_millis(1));
        }
        // No new segment from now on: the spare is taken by the first
        // roll, and the second one fails.
        e.inject_fault(FaultPoint::SegmentCreate, libc::ENOSPC, -1);
        let payload = vec![7u8; 1000];
        let publish = |c: &mut Case| -> Result<(), Error> {
            let p = Publish { topic: TOPICS[0], payload: &payload, ..Default::default() };
            let (id, l) = e.publish(p, PublishOpts::default(), Wait::No)?;
            e.wait_durable(l)?;
            if durability == Durability::Always {
                tracker().set_required(l.expect("an lsn"));
            }
            c.exp.published(TOPICS[0], &payload, None, id);
            c.sync_lsn(&e);
            Ok(())
        };
        let mut full = None;
        for _ in 0..1000 {
            if let Err(err) = publish(&mut c) {
                full = Some(err);
                break;
            }
        }
        let err = full.expect("the disk never filled");
        assert_eq!(err.errno(), Some(libc::ENOSPC), "{err}");
        e.snapshot().expect("snapshot");
        c.sync_lsn(&e);
        let rewound_at = c.last_lsn + 1;
        tracker().take_pending();
        tracker().set_hooks(0.0, true, 31);
        publish(&mut c).expect("the retried publish rewinds the active segment");
        tracker().set_hooks(0.0, false, 31);
        let mut caps = tracker().take_pending();
        assert!(
            caps.iter().any(|cap| cap.label.contains(".log")),
            "no cut while the rewind's fsync was in flight: {:?}",
            caps.iter().map(|c| &c.label).collect::<Vec<_>>()
        );
        // More records into the rewound segment (old ones after them).
        for _ in 0..5 {
            publish(&mut c).expect("publish after the rewind");
        }
        caps.push(tracker().capture("after the rewind and 5 more records"));
        drop(e);
        let rewound = caps.last().expect("a capture").killed().into_iter().any(|(n, d)| {
            let h = ringq::journal::read_segment_header(Path::new(&n), &d).ok().flatten();
            n.ends_with(".log") && h.is_some_and(|h| h.first_lsn == rewound_at)
        });
        assert!(rewound, "no segment was started over at LSN {rewound_at}");
        let mut rng = Rng::new(37);
        for cap in &caps {
            for i in 0..16 {
                let style = match i {
                    0 => Style::NOTHING,
                    1 => Style::EVERYTHING,
                    _ => Style::random(&mut rng),
                };
                let what = format!("rewind ({}): {} ({style:?})", durability.as_str(), cap.label);
                c.check(&what, &power_cut(cap, style, &mut rng), cap.required);
            }
        }
        tracker().untrack();
    }
}

//! A client of a shared queue's owner: the queue's operations as requests
//! over the owner's Unix socket.
//!
//! Calls from many threads share one connection. Each call adds its frame
//! to an outgoing buffer; if no thread is writing, it writes everything
//! buffered in one go (so concurrent callers' requests leave together, as
//! one write: group commit on the socket) and goes on writing what arrived
//! meanwhile. Answers are read by the callers themselves, one at a time
//! (leader and followers): a caller whose answer has not come and finds
//! nobody reading reads, handing each answer to the caller waiting for its
//! request id, until its own comes; then it lets a waiting caller take over.
//! So a lone caller's answer reaches it without waking another thread, and
//! the read polls briefly before it sleeps ([`frames`](super::frames)). If
//! the connection breaks, every call in flight fails with `OwnerGone`
//! (whether it took effect is unknown) and the next call connects again.

use super::addr::{self, Address};
use super::frames::FrameReader;
use super::loop_conn::{Answer, LoopConn};
use super::wire::{self, Welcome, op};
use crate::codec::{DResult, Reader, Writer};
use crate::engine::{AckOutcome, Checkout, Engine, Publish, PublishOpts, TopicPolicy, TopicStat};
use crate::error::{Error, Result};
use crate::store::{Histograms, Stats, Store};
use crate::types::{DeadLetter, Delivered, Durability, Failure, Lsn, Wait};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long a caller polls for its answer before it sleeps: a round trip
/// with the owner's work in it.
const SPIN: Duration = Duration::from_micros(100);

/// How long a client waits for the owner's welcome (shorter in tests).
const HELLO_PATIENCE: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 10 });

/// Ends a caller's turn at reading answers when dropped.
struct Resign<'a>(&'a Conn);

impl Drop for Resign<'_> {
    fn drop(&mut self) {
        self.0.resign();
    }
}

/// A connection to the owner (one per client, rebuilt after a break).
struct Conn {
    /// A `fork()` child points its copies of the two sockets at
    /// `/dev/null` (`fork::ChildDrops`; before `stream` and `reader`, so
    /// dropped before they close): a child that kept them would keep this
    /// connection open after this process died, and the owner would not
    /// end its leases, nor stop handing it messages, until the child exits.
    _in_child: [crate::fork::ChildDrops; 2],
    stream: UnixStream,
    out: Mutex<Outgoing>,
    pending: Mutex<Pending>,
    /// The answers' side, used by the caller that reads (`Pending::reading`).
    reader: Mutex<FrameReader>,
    /// What calls in flight fail with if the connection breaks.
    gone: String,
    /// Whom it is connected to (see [`GONE_OWNERS`]).
    owner: OwnerKey,
}

/// An owner as its hello named it: the queue's identity and the owner's
/// session (`Welcome::session`, drawn when it started serving).
type OwnerKey = (u64, u64);

/// The owners that hung up on a connection of this process. An owner
/// killed closes its sockets one after another: a connection of this
/// process still open to it (a blocking client's, idle beside an event
/// loop's) would take the next call and fail it with `OwnerGone` though
/// the owner was known to be gone before the call. A connection to an owner
/// named here is not used again. Only a hang-up this process did not cause
/// counts (not its own close, nor a connection it gave up), and a hello
/// from the owner takes it off. A handful of entries at most: one per owner
/// that died while this process was connected to it.
static GONE_OWNERS: Mutex<Vec<OwnerKey>> = Mutex::new(Vec::new());
/// Whether `GONE_OWNERS` has any entry (so a call need not lock it).
static ANY_GONE: AtomicBool = AtomicBool::new(false);

/// Every connection of this process to `owner` is dead (one saw it hang up).
fn owner_hung_up(owner: OwnerKey) {
    let mut g = GONE_OWNERS.lock();
    if !g.contains(&owner) {
        g.push(owner);
    }
    ANY_GONE.store(true, Ordering::Release);
}

fn owner_known_gone(owner: OwnerKey) -> bool {
    ANY_GONE.load(Ordering::Acquire) && GONE_OWNERS.lock().contains(&owner)
}

#[derive(Default)]
struct Outgoing {
    buf: Vec<u8>,
    /// A thread is writing; it will also write what is added meanwhile.
    writing: bool,
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, Arc<Slot>>,
    /// Why the connection broke (then nothing more is sent on it).
    broken: Option<String>,
    /// A caller is reading answers.
    reading: bool,
}

/// Where a caller waits for its answer.
#[derive(Default)]
struct Slot {
    answer: Mutex<Option<Result<Vec<u8>>>>,
    cv: Condvar,
    /// Its caller sleeps on `cv` (read and written with `answer` locked).
    parked: AtomicBool,
}

impl Slot {
    fn fill(&self, v: Result<Vec<u8>>) {
        *self.answer.lock() = Some(v);
        self.cv.notify_one();
    }

    fn filled(&self) -> bool {
        self.answer.lock().is_some()
    }
}

impl Conn {
    /// Whether the connection can take a call: its owner did not hang up on
    /// another connection of this process ([`GONE_OWNERS`]), it is not
    /// broken, and (when no caller is reading, so nobody would have
    /// noticed) the owner has not hung up on it meanwhile. A call sent to an owner that died while this
    /// client was idle would fail with `OwnerGone` though it never left.
    fn usable(&self) -> bool {
        if owner_known_gone(self.owner) {
            self.fail_all(self.gone.clone());
            return false;
        }
        {
            let p = self.pending.lock();
            if p.broken.is_some() {
                return false;
            }
            if p.reading {
                return true;
            }
        }
        let mut byte = [0u8; 1];
        // SAFETY: `byte` is valid for a write of one byte; the descriptor
        // is open for as long as `self.stream` lives.
        let n = unsafe {
            libc::recv(self.stream.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        let hung_up = n == 0
            || (n < 0
                && !matches!(
                    std::io::Error::last_os_error().kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ));
        if hung_up {
            self.hang_up(self.gone.clone());
        }
        !hung_up
    }

    /// The owner's end closed (or the socket failed): `fail_all`. Unless
    /// this process broke the connection first (its own close, which ends
    /// the socket here too), every other connection of this process to the
    /// same owner is dead too.
    fn hang_up(&self, why: String) {
        if self.fail_all(why) {
            owner_hung_up(self.owner);
        }
    }

    /// Fails every call in flight with `OwnerGone(why)`; nothing more goes
    /// out on this connection. True if this broke it (it was not broken).
    fn fail_all(&self, why: String) -> bool {
        self.fail_all_with(why.clone(), || Error::OwnerGone(why.clone()))
    }

    /// The same, each call failing with `err()`.
    fn fail_all_with(&self, why: String, err: impl Fn() -> Error) -> bool {
        let (first, waiting): (bool, Vec<Arc<Slot>>) = {
            let mut p = self.pending.lock();
            let first = p.broken.is_none();
            if first {
                p.broken = Some(why);
            }
            (first, p.waiting.drain().map(|(_, s)| s).collect())
        };
        for s in waiting {
            s.fill(Err(err()));
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        first
    }

    /// Waits for the answer `slot` is for: reads answers (for everyone)
    /// while nobody else does, else sleeps until the answer comes or the
    /// reader hands over.
    fn wait_for(&self, slot: &Slot) -> Result<Vec<u8>> {
        let mut a = slot.answer.lock();
        loop {
            if let Some(v) = a.take() {
                return v;
            }
            // With the slot locked, so a reader handing over (which locks
            // it to wake us) cannot slip between this check and the wait.
            if self.try_lead() {
                MutexGuard::unlocked(&mut a, || self.lead(slot));
                continue;
            }
            slot.parked.store(true, Ordering::Relaxed);
            slot.cv.wait(&mut a);
            slot.parked.store(false, Ordering::Relaxed);
        }
    }

    fn try_lead(&self) -> bool {
        let mut p = self.pending.lock();
        !std::mem::replace(&mut p.reading, true)
    }

    /// Reads answers until `mine` has one (or the connection broke), then
    /// hands reading over to a caller still waiting.
    fn lead(&self, mine: &Slot) {
        // Hands over however this ends (even by a panic, which would
        // otherwise leave every later caller waiting for a reader).
        let _resign = Resign(self);
        let mut r = self.reader.lock();
        while !mine.filled() {
            let Ok(Some(frame)) = r.read_frame() else {
                self.hang_up(self.gone.clone());
                break;
            };
            let Ok((id, code, body)) = wire::split(&frame) else {
                self.fail_all(self.gone.clone());
                break;
            };
            let slot = self.pending.lock().waiting.remove(&id);
            let Some(slot) = slot else { continue };
            slot.fill(match code {
                wire::OK => Ok(body.to_vec()),
                _ => Err(wire::get_error(&mut Reader::new(body))
                    .unwrap_or_else(|e| Error::Protocol(format!("unreadable error from the owner: {}", e.0)))),
            });
        }
    }

    /// Lets a waiting caller read (see [`Resign`]).
    fn resign(&self) {
        let waiting: Vec<Arc<Slot>> = {
            let mut p = self.pending.lock();
            p.reading = false;
            p.waiting.values().cloned().collect()
        };
        // Only a caller asleep on its slot needs waking: one that is not
        // (still sending, or about to check) will find nobody reading.
        for s in waiting {
            let _a = s.answer.lock();
            if s.parked.swap(false, Ordering::Relaxed) {
                s.cv.notify_one();
                break;
            }
        }
    }

    /// Queues `frame`; the first caller in writes for everyone.
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut out = self.out.lock();
        out.buf.extend_from_slice(frame);
        if out.writing {
            return Ok(());
        }
        out.writing = true;
        let mut spare = Vec::new();
        loop {
            std::mem::swap(&mut spare, &mut out.buf);
            let written = MutexGuard::unlocked(&mut out, || (&self.stream).write_all(&spare));
            spare.clear();
            if let Err(e) = written {
                out.writing = false;
                out.buf.clear();
                return Err(e);
            }
            if out.buf.is_empty() {
                out.writing = false;
                if out.buf.capacity() < spare.capacity() {
                    std::mem::swap(&mut spare, &mut out.buf);
                }
                return Ok(());
            }
        }
    }
}

/// A client of the owner serving the queue directory `dir`.
pub struct Client {
    dir: PathBuf,
    conn: Mutex<Option<Arc<Conn>>>,
    /// The queue's identity (every owner this client connects to serves it).
    instance: u64,
    /// What the owner said when this client last connected (a later owner
    /// may serve the queue with other options: see `SharedQueue::take_over`).
    welcome: Mutex<Welcome>,
    next_id: AtomicU64,
    closed: AtomicBool,
    fork_generation: u64,
    /// The process that connected (a `fork()` child may not use the client).
    opener_pid: u32,
    /// Topic policies set through this client, sent again to a new owner.
    policies: Mutex<Vec<(String, TopicPolicy)>>,
    /// Set on a client for an event loop ([`Client::for_loop`]): its
    /// requests are submitted on this connection, never waited for (`None`
    /// inside: not connected; a call then fails with `WouldBlock` and the
    /// caller reconnects elsewhere).
    looped: Option<Box<Mutex<Option<LoopConn>>>>,
}

impl Client {
    /// Connects to the owner of `dir`. `OwnerGone` if nobody answers there.
    pub fn connect(dir: &Path) -> Result<Client> {
        crate::fork::install();
        let (conn, welcome) = open_conn(dir, 1)?;
        Ok(Client {
            dir: dir.to_owned(),
            conn: Mutex::new(Some(conn)),
            instance: welcome.instance_id,
            welcome: Mutex::new(welcome),
            next_id: AtomicU64::new(2),
            closed: AtomicBool::new(false),
            fork_generation: crate::fork::generation(),
            opener_pid: std::process::id(),
            policies: Mutex::new(Vec::new()),
            looped: None,
        })
    }

    /// A client for an event loop on the queue `instance` at `dir`: its own
    /// connection (see [`loop_conn`](super::loop_conn)), on which every
    /// call is submitted and answered later. Connecting waits for the
    /// owner's hello (microseconds when the owner is alive).
    pub fn for_loop(dir: &Path, instance: u64) -> Result<Client> {
        let mut c = Client::connect(dir)?;
        let conn = c.conn.get_mut().take().expect("connected");
        c.looped = Some(Box::new(Mutex::new(None)));
        c.install_loop_conn(conn, c.instance, instance)?;
        Ok(c)
    }

    fn install_loop_conn(&self, conn: Arc<Conn>, found: u64, expected: u64) -> Result<()> {
        let looped = self.looped.as_ref().ok_or_else(|| Error::Invalid("not a client for an event loop".into()))?;
        if found != expected {
            conn.fail_all("replaced".into());
            return Err(self.replaced(found, expected));
        }
        let conn = Arc::into_inner(conn).expect("a new connection has one handle");
        // Non-blocking before the stream moves out of `conn` (`LoopConn::new`
        // sets it again): a failure here drops `conn` whole, its
        // `ChildDrops` before its sockets, where one in `LoopConn::new`
        // would close a stream whose number `conn` still registered for a
        // fork child.
        conn.stream
            .set_nonblocking(true)
            .map_err(|e| Error::OwnerGone(format!("setting up the connection to the owner: {e}")))?;
        let lc = LoopConn::new(conn.stream, conn.owner)
            .map_err(|e| Error::OwnerGone(format!("setting up the connection to the owner: {e}")))?;
        *looped.lock() = Some(lc);
        Ok(())
    }

    fn replaced(&self, found: u64, was: u64) -> Error {
        Error::OwnerGone(format!(
            "the queue directory {} now holds another queue (identity {}, was {}): open it again",
            self.dir.display(),
            crate::error::fmt_id(found),
            crate::error::fmt_id(was)
        ))
    }

    fn loop_conn(&self) -> Result<parking_lot::MappedMutexGuard<'_, LoopConn>> {
        let looped = self.looped.as_ref().ok_or_else(|| Error::Invalid("not a client for an event loop".into()))?;
        MutexGuard::try_map(looped.lock(), |c| c.as_mut()).map_err(|_| Error::WouldBlock)
    }

    /// The loop connection's socket (`None`: not connected).
    pub fn loop_fd(&self) -> Option<RawFd> {
        self.loop_conn().ok().filter(|c| c.broken().is_none()).map(|c| c.fd())
    }

    /// Writes what was submitted; true if some is left for when the socket
    /// is writable.
    pub fn loop_flush(&self) -> bool {
        self.loop_conn().is_ok_and(|mut c| {
            let more = c.flush();
            Self::note_hang_up(&mut c);
            more
        })
    }

    /// An owner that hung up on the loop's connection is gone for every
    /// connection of this process ([`GONE_OWNERS`]).
    fn note_hang_up(c: &mut LoopConn) {
        if let Some(owner) = c.take_hung_up() {
            owner_hung_up(owner);
        }
    }

    /// The answers that came; if the connection broke, every request in
    /// flight is answered with `OwnerGone` and the connection is dropped
    /// (the next call fails with `WouldBlock`: reconnect first).
    pub fn loop_pump(&self) -> Vec<Answer> {
        let Some(looped) = &self.looped else { return Vec::new() };
        let mut slot = looped.lock();
        let Some(c) = slot.as_mut() else { return Vec::new() };
        let answers = c.pump(|why| self.gone(why));
        Self::note_hang_up(c);
        if c.broken().is_some() {
            slot.take();
        }
        answers
    }

    /// Withdraws request `id` if it is still waiting at the owner.
    pub fn loop_cancel(&self, id: u64) {
        let cancel_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.loop_conn() {
            c.cancel(id, cancel_id);
        }
    }

    /// Connects the loop connection again (to whoever owns the directory
    /// now; `OwnerGone` if nobody does). Blocking: not on the loop.
    pub fn loop_reconnect(&self) -> Result<()> {
        self.check()?;
        if self.loop_fd().is_some() {
            return Ok(());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (conn, welcome) = open_conn(&self.dir, id)?;
        let instance = welcome.instance_id;
        if instance == self.instance {
            *self.welcome.lock() = welcome;
        }
        self.install_loop_conn(conn, instance, self.instance)
    }

    /// What the owner said when this client last connected.
    pub fn welcome(&self) -> Welcome {
        self.welcome.lock().clone()
    }

    fn check(&self) -> Result<()> {
        self.check_not_forked()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// A live connection: the current one, or a new one to whoever owns the
    /// directory now (`OwnerGone` if nobody does).
    pub fn connection(&self) -> Result<()> {
        self.live().map(|_| ())
    }

    fn live(&self) -> Result<Arc<Conn>> {
        self.check()?;
        self.live_checked()
    }

    /// `live` past its first check. `close` marks the client closed before
    /// it takes the connection's lock, so a call that passed the check as
    /// another thread closed the client finds it closed here, and must not
    /// connect again (its owner may be closing too: the call then failed
    /// with `OwnerGone`, seen as a flaky
    /// `test_close_wakes_a_consumer_waiting_in_checkout[shared-sync]`).
    fn live_checked(&self) -> Result<Arc<Conn>> {
        let mut slot = self.conn.lock();
        if let Some(c) = slot.as_ref().filter(|c| c.usable()) {
            return Ok(Arc::clone(c));
        }
        slot.take();
        let closed = || self.closed.load(Ordering::Acquire);
        if closed() {
            return Err(Error::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (conn, welcome) = match open_conn(&self.dir, id) {
            Ok(opened) => opened,
            // Closed while it connected (`close` waits for the lock).
            Err(_) if closed() => return Err(Error::Closed),
            Err(e) => return Err(e),
        };
        if closed() {
            conn.fail_all("the queue was closed".into());
            return Err(Error::Closed);
        }
        if welcome.instance_id != self.instance {
            conn.fail_all("replaced".into());
            return Err(self.replaced(welcome.instance_id, self.instance));
        }
        *self.welcome.lock() = welcome;
        *slot = Some(Arc::clone(&conn));
        drop(slot);
        // A new owner knows nothing of this process's topic policies.
        let policies = self.policies.lock().clone();
        for (topic, p) in policies {
            self.request_on(&conn, op::SET_TOPIC_POLICY, |w| put_policy(w, &topic, &p))?;
        }
        Ok(conn)
    }

    /// Sends one request and waits for its answer (a client for an event
    /// loop submits it instead: `Error::Submitted`).
    fn request(&self, code: u8, put: impl FnOnce(&mut Writer<'_>)) -> Result<Vec<u8>> {
        if self.looped.is_some() {
            self.check()?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut c = self.loop_conn()?;
            return Err(c.submit(id, code, put));
        }
        let conn = self.live()?;
        self.request_on(&conn, code, put)
    }

    fn request_on(&self, conn: &Conn, code: u8, put: impl FnOnce(&mut Writer<'_>)) -> Result<Vec<u8>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::with_capacity(64);
        let start = wire::begin(&mut frame, id, code);
        put(&mut Writer::new(&mut frame));
        wire::finish(&mut frame, start)?;
        let slot = Arc::new(Slot::default());
        {
            let mut p = conn.pending.lock();
            if let Some(why) = &p.broken {
                // Closed here since the connection was taken: a call on a
                // closed queue, as the callers it woke were told.
                if self.closed.load(Ordering::Acquire) {
                    return Err(Error::Closed);
                }
                return Err(Error::OwnerGone(why.clone()));
            }
            p.waiting.insert(id, Arc::clone(&slot));
        }
        if let Err(e) = conn.send(&frame) {
            conn.hang_up(self.gone(&format!("writing to its socket failed: {e}")));
        }
        conn.wait_for(&slot)
    }

    fn gone(&self, why: &str) -> String {
        format!(
            "the owner of the shared queue {} (pid {}) went away during the call ({why}); whether the call took \
             effect is unknown. The next call connects to the new owner (or takes the queue over)",
            self.dir.display(),
            self.welcome.lock().owner_pid
        )
    }

    /// Closes the connection (the owner ends the leases this client holds).
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if crate::fork::generation() != self.fork_generation {
            return;
        }
        if let Some(c) = self.conn.lock().take() {
            // Calls still waiting here end as calls on a closed queue do.
            c.fail_all_with("the queue was closed".into(), || Error::Closed);
        }
        if let Some(looped) = &self.looped
            && let Some(mut c) = looped.lock().take()
        {
            c.close();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// Connects to the owner of `dir` and says hello (request id `id`).
fn open_conn(dir: &Path, id: u64) -> Result<(Arc<Conn>, Welcome)> {
    let no_owner = |why: String| {
        Error::OwnerGone(format!(
            "no process serves the shared queue {} ({why}): open it with shared=True in a process that can own \
             it, or run `ringq serve {}`",
            dir.display(),
            dir.display()
        ))
    };
    let address: Address = addr::read(dir).ok_or_else(|| no_owner("no socket address recorded".into()))?;
    let stream = address.connect().map_err(|e| no_owner(format!("connecting to {address}: {e}")))?;
    let mut hello = Vec::new();
    let start = wire::begin(&mut hello, id, op::HELLO);
    wire::put_hello(&mut Writer::new(&mut hello));
    wire::finish(&mut hello, start)?;
    // If the owner refuses us it answers before our hello and hangs up: a
    // failed write still leaves its answer to read.
    let sent = (&stream).write_all(&hello);
    // An owner that is alive but does not answer (stopped, frozen) is no
    // owner to wait for without end.
    stream.set_read_timeout(Some(HELLO_PATIENCE)).map_err(|e| no_owner(e.to_string()))?;
    let mut r = FrameReader::new(stream.try_clone().map_err(|e| no_owner(e.to_string()))?, SPIN);
    let frame = match (r.read_frame(), sent) {
        (Ok(Some(f)), _) => f,
        (Ok(None), Err(e)) | (Err(_), Err(e)) => return Err(no_owner(format!("saying hello: {e}"))),
        (Ok(None), Ok(())) => return Err(no_owner("it hung up before its hello".into())),
        (Err(e), Ok(())) => return Err(no_owner(format!("waiting for its hello: {e}"))),
    };
    let (_, code, body) = wire::split(&frame).map_err(|e| Error::Protocol(e.0))?;
    if code != wire::OK {
        return Err(wire::get_error(&mut Reader::new(body)).unwrap_or_else(|e| Error::Protocol(e.0)));
    }
    let welcome = parse(body, wire::get_welcome)?;
    stream.set_read_timeout(None).map_err(|e| no_owner(e.to_string()))?;
    let here = addr::dir_id(dir);
    if matches!(address, Address::Abstract(_)) && welcome.dir != here && welcome.dir != (0, 0) && here != (0, 0) {
        // The name recorded here (copied with the directory, or reused by
        // a copy's owner) leads to the owner of another directory. (A
        // socket file is this directory's own: nothing to check.)
        return Err(no_owner(format!(
            "{address} is served by the owner of another directory (pid {})",
            welcome.owner_pid
        )));
    }
    let gone = format!(
        "the owner of the shared queue {} (pid {}) went away during the call; whether the call took effect is \
         unknown. The next call connects to the new owner (or takes the queue over)",
        dir.display(),
        welcome.owner_pid
    );
    let conn = Arc::new(Conn {
        _in_child: [crate::fork::ChildDrops::new(&stream), crate::fork::ChildDrops::new(r.get_ref())],
        stream,
        out: Mutex::new(Outgoing::default()),
        pending: Mutex::new(Pending::default()),
        reader: Mutex::new(r),
        gone,
        owner: (welcome.instance_id, welcome.session),
    });
    // It answered, so it is alive: an owner that hung up on one connection
    // and serves on (a connection it gave up) is usable again.
    if ANY_GONE.load(Ordering::Acquire) {
        GONE_OWNERS.lock().retain(|o| *o != conn.owner);
    }
    Ok((conn, welcome))
}

pub(crate) fn parse<T>(body: &[u8], f: impl FnOnce(&mut Reader<'_>) -> DResult<T>) -> Result<T> {
    let mut r = Reader::new(body);
    let v = f(&mut r).map_err(|e| Error::Protocol(format!("malformed answer: {}", e.0)))?;
    if !r.is_empty() {
        return Err(Error::Protocol("malformed answer: bytes after its end".into()));
    }
    Ok(v)
}

fn put_policy(w: &mut Writer<'_>, topic: &str, p: &TopicPolicy) {
    w.str(topic);
    wire::put_opt_u64(w, p.max_attempts.map(u64::from));
    w.opt_str(p.handler.as_deref());
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl Store for Client {
    fn path(&self) -> &Path {
        &self.dir
    }
    fn instance_id(&self) -> u64 {
        self.instance
    }
    fn durability(&self) -> Durability {
        self.welcome.lock().durability
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    fn is_forked(&self) -> bool {
        crate::fork::generation() != self.fork_generation
    }
    fn check_not_forked(&self) -> Result<()> {
        if self.is_forked() {
            return Err(Error::Forked { path: self.dir.clone(), pid: self.opener_pid });
        }
        Ok(())
    }
    fn would_wait(&self) -> bool {
        self.looped.is_none()
    }
    fn submits(&self) -> bool {
        self.looped.is_some()
    }
    fn wait_durable(&self, _lsn: Option<Lsn>) -> Result<()> {
        // The owner waited before it answered.
        Ok(())
    }
    fn publish(&self, p: Publish<'_>, opts: PublishOpts, wait: Wait) -> Result<(u64, Option<Lsn>)> {
        let b = self.request(op::PUBLISH, |w| {
            wire::put_publish(w, &p);
            wire::put_publish_opts(w, opts);
            wire::put_wait(w, wait);
        })?;
        Ok((parse(&b, |r| r.u64())?, None))
    }
    fn publish_many(&self, items: &[Publish<'_>], opts: PublishOpts, wait: Wait) -> Result<(Vec<u64>, Option<Lsn>)> {
        if opts.expected_version.is_some() || opts.on_duplicate != crate::types::OnDuplicate::Replace {
            return Err(Error::Invalid("publish_many takes no on_duplicate or expected_version".into()));
        }
        let b = self.request(op::PUBLISH_MANY, |w| {
            wire::put_publishes(w, items);
            wire::put_wait(w, wait);
        })?;
        Ok((parse(&b, wire::get_ids)?, None))
    }
    fn checkout_with(&self, topic: &str, c: Checkout) -> Result<Vec<Delivered>> {
        let b = self.request(op::CHECKOUT, |w| wire::put_checkout(w, topic, &c))?;
        parse(&b, wire::get_deliveries)
    }
    fn interrupts(&self, topic: &str) -> Result<u64> {
        let b = self.request(op::INTERRUPTS, |w| w.str(topic))?;
        parse(&b, |r| r.u64())
    }
    fn interrupt(&self, topic: &str) -> Result<()> {
        self.request(op::INTERRUPT, |w| w.str(topic)).map(|_| ())
    }
    fn ack(&self, leases: &[(u64, u64)], publish: &[Publish<'_>], wait: Wait) -> Result<AckOutcome> {
        let b = self.request(op::ACK, |w| {
            wire::put_leases(w, leases);
            wire::put_publishes(w, publish);
            wire::put_wait(w, wait);
        })?;
        Ok(AckOutcome { lsn: None, lost: parse(&b, wire::get_ids)? })
    }
    fn release(&self, leases: &[(u64, u64)]) -> Result<AckOutcome> {
        let b = self.request(op::RELEASE, |w| wire::put_leases(w, leases))?;
        Ok(AckOutcome { lsn: None, lost: parse(&b, wire::get_ids)? })
    }
    fn nack(
        &self,
        id: u64,
        token: u64,
        delay: Option<Duration>,
        failure: Failure,
        dead_letter_reason: Option<&str>,
    ) -> Result<Option<Lsn>> {
        self.request(op::NACK, |w| {
            w.u64(id);
            w.u64(token);
            wire::put_opt_u64(w, delay.map(micros));
            wire::put_failure(w, &failure);
            w.opt_str(dead_letter_reason);
        })?;
        Ok(None)
    }
    fn extend(&self, id: u64, token: u64, by: Duration) -> Result<u64> {
        let b = self.request(op::EXTEND, |w| {
            w.u64(id);
            w.u64(token);
            w.u64(micros(by));
        })?;
        parse(&b, |r| r.u64())
    }
    fn set_topic_policy(&self, topic: &str, policy: TopicPolicy) -> Result<()> {
        self.request(op::SET_TOPIC_POLICY, |w| put_policy(w, topic, &policy))?;
        let mut ps = self.policies.lock();
        ps.retain(|(t, _)| t != topic);
        ps.push((topic.to_owned(), policy));
        Ok(())
    }
    fn is_superseded(&self, id: u64) -> Result<bool> {
        let b = self.request(op::IS_SUPERSEDED, |w| w.u64(id))?;
        parse(&b, wire::get_flag)
    }
    fn cancel(&self, id: u64) -> Result<(u8, Option<Lsn>)> {
        // The owner waits for the record to be durable before it answers.
        let b = self.request(op::CANCEL_MESSAGE, |w| w.u64(id))?;
        Ok((parse(&b, |r| r.u8())?, None))
    }
    fn stats(&self) -> Result<Stats> {
        let b = self.request(op::STATS, |_| {})?;
        parse(&b, wire::get_stats)
    }
    fn histograms(&self) -> Result<Histograms> {
        let b = self.request(op::HISTOGRAMS, |_| {})?;
        parse(&b, wire::get_histograms)
    }
    fn topic_stats(&self) -> Result<Vec<TopicStat>> {
        let b = self.request(op::TOPIC_STATS, |_| {})?;
        parse(&b, wire::get_topic_stats)
    }
    fn snapshot(&self) -> Result<Lsn> {
        let b = self.request(op::SNAPSHOT, |_| {})?;
        parse(&b, |r| r.u64())
    }
    fn dlq_list(&self, topic: Option<&str>, reason: Option<&str>, limit: Option<usize>) -> Result<Vec<DeadLetter>> {
        let b = self.request(op::DLQ_LIST, |w| {
            w.opt_str(topic);
            w.opt_str(reason);
            wire::put_opt_u64(w, limit.map(|v| v as u64));
        })?;
        parse(&b, wire::get_dead_letters)
    }
    fn dlq_get(&self, id: u64) -> Result<DeadLetter> {
        let b = self.request(op::DLQ_GET, |w| w.u64(id))?;
        parse(&b, wire::get_dead_letter)
    }
    fn dlq_replay(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)> {
        let b = self.request(op::DLQ_REPLAY, |w| wire::put_opt_ids(w, ids))?;
        Ok((parse(&b, |r| r.u64())? as usize, None))
    }
    fn dlq_purge(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)> {
        let b = self.request(op::DLQ_PURGE, |w| wire::put_opt_ids(w, ids))?;
        Ok((parse(&b, |r| r.u64())? as usize, None))
    }
    fn close(&self) -> Result<()> {
        Client::close(self);
        Ok(())
    }
    fn with_engine(&self, _f: &mut dyn FnMut(&Engine)) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    /// An owner that only says hello: each connection it accepts is answered
    /// with a welcome (queue `instance`, session `session`) and handed to the
    /// test. It answers no request.
    fn hello_only_owner(dir: &Path, instance: u64, session: u64) -> mpsc::Receiver<UnixStream> {
        let (listener, _) = addr::bind(dir, instance).expect("binds");
        let dir_id = addr::dir_id(dir);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let mut s = s.expect("accepts");
                let (id, code, _) = read_request(&mut s);
                assert_eq!(code, op::HELLO);
                let welcome = Welcome {
                    version: wire::VERSION,
                    instance_id: instance,
                    durability: Durability::Batch,
                    owner_pid: 4_000_000,
                    capacity: 16,
                    max_attempts: 5,
                    session,
                    dir: dir_id,
                    queue: wire::QueueOptions::default(),
                };
                let mut f = Vec::new();
                let start = wire::begin(&mut f, id, wire::OK);
                wire::put_welcome(&mut Writer::new(&mut f), &welcome);
                wire::finish(&mut f, start).expect("small");
                s.write_all(&f).expect("welcome");
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Reads one request at the owner's end: (id, code, body).
    fn read_request(s: &mut UnixStream) -> (u64, u8, Vec<u8>) {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("a request's length");
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        s.read_exact(&mut frame).expect("a request");
        let (id, code, body) = wire::split(&frame).expect("a frame");
        (id, code, body.to_vec())
    }

    /// A queue identity no other test of this process uses (the set of
    /// owners gone is the process's).
    fn unique_instance(n: u64) -> u64 {
        0x5eed_0000_0000_0000 | u64::from(std::process::id()) << 8 | n
    }

    /// An owner that is alive but never answers (stopped with SIGSTOP,
    /// frozen): a client's open gives up on it after `HELLO_PATIENCE`
    /// instead of waiting for its welcome for good.
    #[test]
    fn an_owner_that_never_says_hello_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, _) = addr::bind(dir.path(), unique_instance(4)).expect("binds");
        let keep = std::thread::spawn(move || listener.incoming().take(1).map(|s| s.unwrap()).collect::<Vec<_>>());
        let t = std::time::Instant::now();
        match open_conn(dir.path(), 1) {
            Err(Error::OwnerGone(why)) => assert!(why.contains("waiting for its hello"), "{why}"),
            Err(e) => panic!("expected OwnerGone, got {e}"),
            Ok(_) => panic!("expected OwnerGone, got a connection"),
        }
        assert!(t.elapsed() < HELLO_PATIENCE * 3, "{:?}", t.elapsed());
        drop(keep.join());
    }

    /// The owner of another directory (a copy of the queue, the same
    /// identity) reached through the name recorded here is not this
    /// queue's owner.
    #[test]
    fn the_owner_of_another_directory_is_not_this_queues() {
        let (here, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Deep: an abstract socket, whose name the copied file keeps.
        let there = root.path().join("d".repeat(110));
        std::fs::create_dir(&there).unwrap();
        let accepted = hello_only_owner(&there, unique_instance(5), 10);
        std::fs::copy(there.join(addr::ADDRESS_FILE), here.path().join(addr::ADDRESS_FILE)).unwrap();
        match open_conn(here.path(), 1) {
            Err(Error::OwnerGone(why)) => assert!(why.contains("another directory"), "{why}"),
            Err(e) => panic!("expected OwnerGone, got {e}"),
            Ok(_) => panic!("expected OwnerGone, got a connection"),
        }
        drop(accepted);
    }

    /// An owner killed closes its sockets one after another. Once one
    /// connection of this process saw it hang up (here the event loop's),
    /// another one still open to it (the blocking client's, idle) is not
    /// used: the next call connects anew instead of going to the dying
    /// owner and failing with `OwnerGone`. A hello from that owner (it is
    /// alive after all) makes its connections usable again.
    #[test]
    fn an_owner_seen_hanging_up_on_one_connection_is_not_called_on_another() {
        let dir = tempfile::tempdir().unwrap();
        let instance = unique_instance(1);
        let accepted = hello_only_owner(dir.path(), instance, 7);
        let wait = Duration::from_secs(10);

        let blocking = Client::connect(dir.path()).expect("connects");
        let mut idle = accepted.recv_timeout(wait).expect("the blocking client's connection");
        let looped = Client::for_loop(dir.path(), instance).expect("connects");
        let loop_side = accepted.recv_timeout(wait).expect("the loop's connection");

        // The loop's connection sees the owner's end close first.
        drop(loop_side);
        let deadline = std::time::Instant::now() + wait;
        while looped.loop_fd().is_some() {
            assert!(std::time::Instant::now() < deadline, "the loop's connection never saw the hang-up");
            looped.loop_pump();
            std::thread::sleep(Duration::from_millis(1));
        }

        // The blocking client's connection is still open at the owner's
        // end, but it is not used: a new one is made.
        blocking.connection().expect("connects anew");
        let _fresh = accepted.recv_timeout(wait).expect("a new connection, not the idle one");
        let mut b = [0u8; 1];
        assert_eq!(idle.read(&mut b).expect("reads"), 0, "the idle connection was closed by the client");

        // That owner said hello again: its connection is used from now on.
        blocking.connection().expect("connected");
        assert!(accepted.recv_timeout(Duration::from_millis(200)).is_err(), "no further connection");
    }

    /// A connection this process ends itself (a client closed while a call
    /// of it waits reading answers) is no sign that the owner is gone: the
    /// other clients of this process keep their connections (and so the
    /// leases taken on them).
    #[test]
    fn closing_a_client_while_a_call_reads_leaves_the_other_clients_connected() {
        let dir = tempfile::tempdir().unwrap();
        let accepted = hello_only_owner(dir.path(), unique_instance(2), 8);
        let wait = Duration::from_secs(10);

        let other = Client::connect(dir.path()).expect("connects");
        let _other_side = accepted.recv_timeout(wait).expect("the other client's connection");
        let closing = Arc::new(Client::connect(dir.path()).expect("connects"));
        let mut closing_side = accepted.recv_timeout(wait).expect("the closing client's connection");

        // A call that is never answered: its caller reads, waiting.
        let c = Arc::clone(&closing);
        let call = std::thread::spawn(move || c.stats().map(|_| ()));
        read_request(&mut closing_side);
        let deadline = std::time::Instant::now() + wait;
        while !closing.conn.lock().as_ref().is_some_and(|c| c.pending.lock().reading) {
            assert!(std::time::Instant::now() < deadline, "the call never started reading");
            std::thread::sleep(Duration::from_millis(1));
        }
        closing.close();
        assert!(matches!(call.join().expect("joins"), Err(Error::Closed)));

        other.connection().expect("connected");
        assert!(accepted.recv_timeout(Duration::from_millis(200)).is_err(), "the other client connected anew");
    }

    /// A call that took the connection just before its client was closed
    /// (from another thread) fails as a call on a closed queue does,
    /// `Closed`, not `OwnerGone` ("the owner went away"): seen as a flaky
    /// `test_close_wakes_a_consumer_waiting_in_checkout[shared-sync]`.
    #[test]
    fn a_call_that_took_the_connection_as_its_client_closed_fails_as_closed() {
        let dir = tempfile::tempdir().unwrap();
        let accepted = hello_only_owner(dir.path(), unique_instance(3), 9);
        let client = Client::connect(dir.path()).expect("connects");
        let _side = accepted.recv_timeout(Duration::from_secs(10)).expect("the connection");
        let conn = client.live().expect("live");
        client.close();
        let err = client.request_on(&conn, op::STATS, |_| {}).unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
    }

    /// A call that passed the closed check just before its client was
    /// closed (from another thread), and finds no connection: `Closed`,
    /// and no new connection to the owner.
    #[test]
    fn a_call_that_finds_its_client_closed_after_the_check_does_not_connect_again() {
        let dir = tempfile::tempdir().unwrap();
        let accepted = hello_only_owner(dir.path(), unique_instance(4), 9);
        let client = Client::connect(dir.path()).expect("connects");
        let _side = accepted.recv_timeout(Duration::from_secs(10)).expect("the connection");
        client.close();
        match client.live_checked() {
            Err(Error::Closed) => {}
            Err(e) => panic!("expected Closed, got {e}"),
            Ok(_) => panic!("expected Closed, got a connection"),
        }
        assert!(accepted.recv_timeout(Duration::from_millis(200)).is_err(), "it connected again");
    }
}

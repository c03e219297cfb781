//! The owner's side of a shared queue: a Unix socket served by plain
//! threads, each request run against the [`Engine`] without Python.
//!
//! - One thread accepts; each connection gets a reader thread. The peer must
//!   run as the owner's user (`SO_PEERCRED`); anyone else is turned away.
//! - A connection's requests run in order as they arrive. What may wait (a
//!   checkout with a timeout and nothing ready, a publish into a full queue,
//!   a snapshot) first runs without waiting; if it would wait, a thread of
//!   its own finishes it and answers when done, so the requests behind it are
//!   not held up.
//! - Group commit on the socket: the answers to every request read in one
//!   go are written in one go, after one wait for their fsync
//!   (`durability="always"`).
//! - The server remembers the leases each connection holds. When a client
//!   goes away (closed, killed), its leases end at once: the messages are
//!   ready again with the delivery counted, as after a lease expiry.

use super::addr::Address;
use super::frames::FrameReader;
use super::wire::{self, op};
use crate::codec::{DResult, Reader, Writer};
use crate::engine::{Checkout, Engine, PublishOpts};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::types::Wait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A wait is done in slices this long, so a thread serving a client that
/// went away (or a request it withdrew, `op::CANCEL`) is not stuck for the
/// whole timeout: a withdrawn request stops waiting within a slice.
const SLICE: Duration = Duration::from_millis(100);

/// How long a connection's thread polls for the client's next request
/// before it sleeps (`frames`): a client calling in a loop sends it within
/// microseconds.
const SPIN: Duration = Duration::from_micros(50);

/// Serves one queue directory's socket while the owner has it open.
pub struct Server {
    inner: Arc<Inner>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    engine: Arc<Engine>,
    /// Before `listener`: unregistered before it is closed.
    _listener_in_child: crate::fork::ChildDrops,
    listener: UnixListener,
    address: Address,
    stopping: AtomicBool,
    /// Open connections (a handle to shut each down at stop) and their reader threads.
    conns: Mutex<HashMap<u64, ConnThread>>,
    next_conn: AtomicU64,
    clients: AtomicUsize,
    uid: u32,
    /// This owner's `Welcome::session`.
    session: u64,
    /// `Welcome::dir`: the directory's identity when serving began (the
    /// path may be relative, or renamed later).
    dir_id: (u64, u64),
}

/// A connection's socket (to shut it down at stop) and its reader thread.
/// A connection's handle (to shut it down at stop) and its reader thread;
/// the guard first, so that it is dropped before the handle is closed.
type ConnThread = (crate::fork::ChildDrops, UnixStream, Option<JoinHandle<()>>);

/// One client connection.
struct Conn {
    engine: Arc<Engine>,
    /// Before `writer`: unregistered before it is closed.
    _writer_in_child: crate::fork::ChildDrops,
    writer: Mutex<UnixStream>,
    /// Leases handed to this client and not yet given back.
    leases: Mutex<Leases>,
    /// Requests answered by a thread of their own (`later`), and whether
    /// the client withdrew each (`op::CANCEL`).
    waiting: Mutex<HashMap<u64, bool>>,
}

#[derive(Default)]
struct Leases {
    held: HashMap<u64, u64>,
    /// The client is gone: leases that arrive now end at once.
    gone: bool,
}

impl Server {
    /// Binds the queue's socket and starts accepting clients.
    pub fn start(engine: Arc<Engine>) -> Result<Server> {
        let dir_id = super::addr::dir_id(engine.path());
        let (listener, address) = super::addr::bind(engine.path(), engine.instance_id())?;
        let inner = Arc::new(Inner {
            engine,
            _listener_in_child: crate::fork::ChildDrops::new(&listener),
            listener,
            address,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            uid: unsafe_free_geteuid(),
            session: crate::manifest::random_u64(),
            dir_id,
        });
        let me = Arc::clone(&inner);
        let accept = std::thread::Builder::new()
            .name("ringq-serve".into())
            .spawn(move || accept_loop(&me))
            .map_err(|e| Error::storage("starting the shared queue's server thread", inner.engine.path(), e))?;
        Ok(Server { inner, accept: Mutex::new(Some(accept)) })
    }

    /// Where clients connect.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.inner.clients.load(Ordering::Relaxed)
    }

    /// Stops accepting, disconnects every client (their calls in flight
    /// fail with `OwnerGone`) and removes the socket. Idempotent.
    pub fn stop(&self) {
        let inner = &self.inner;
        // A fork() child's copy: its sockets are the parent's (shutting
        // them down would cut the parent's clients off, and its threads are
        // not here to join); the child only lets its copy go.
        if inner.engine.is_forked() || inner.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wakes the accept() (Linux returns EINVAL from a shut-down listener).
        unsafe_free_shutdown(inner.listener.as_raw_fd());
        if let Some(t) = self.accept.lock().take() {
            let _ = t.join();
        }
        let conns: Vec<_> = inner.conns.lock().drain().collect();
        for (_, (_, stream, _)) in &conns {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for (_, (_, _, reader)) in conns {
            if let Some(t) = reader {
                let _ = t.join();
            }
        }
        super::addr::clear(inner.engine.path());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unsafe_free_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn unsafe_free_shutdown(fd: i32) {
    // SAFETY: `fd` is the listener's open descriptor; shutdown only changes
    // its state (any error is irrelevant here).
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// The uid of the process at the other end of `s`.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn accept_loop(inner: &Arc<Inner>) {
    loop {
        let accepted = inner.listener.accept();
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors or similar: try again shortly.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let Ok(handle) = stream.try_clone() else { continue };
        let me = Arc::clone(inner);
        // Registered before its thread can end: the thread's last act takes
        // this lock to remove its entry, so a connection that ends at once
        // (a refused hello) cannot leave its handle behind, open for good.
        let mut conns = inner.conns.lock();
        let spawned = std::thread::Builder::new().name("ringq-client".into()).spawn(move || {
            me.clients.fetch_add(1, Ordering::Relaxed);
            serve(&me, stream);
            me.clients.fetch_sub(1, Ordering::Relaxed);
            if let Some((_, _, t)) = me.conns.lock().remove(&id) {
                drop(t); // our own handle: detach
            }
        });
        if let Ok(t) = spawned {
            if inner.stopping.load(Ordering::Acquire) {
                let _ = handle.shutdown(std::net::Shutdown::Both);
            }
            conns.insert(id, (crate::fork::ChildDrops::new(&handle), handle, Some(t)));
        }
        drop(conns);
    }
}

fn serve(inner: &Arc<Inner>, stream: UnixStream) {
    let engine = Arc::clone(&inner.engine);
    let Ok(writer) = stream.try_clone() else { return };
    let conn = Arc::new(Conn {
        engine,
        _writer_in_child: crate::fork::ChildDrops::new(&writer),
        writer: Mutex::new(writer),
        leases: Mutex::new(Leases::default()),
        waiting: Mutex::new(HashMap::new()),
    });
    let mut reader = FrameReader::new(stream, SPIN);
    // After `reader`: dropped (unregistered) before it closes the stream.
    let _reader_in_child = crate::fork::ChildDrops::new(reader.get_ref());
    if peer_uid(reader.get_ref()) != Some(inner.uid) {
        let e = Error::Protocol(format!(
            "refused: a shared queue serves only processes of its owner's user (uid {})",
            inner.uid
        ));
        conn.send(&answer(0, Err(e)));
        return;
    }
    if hello(inner, &conn, &mut reader) {
        let mut out: Vec<Pending> = Vec::new();
        // One request (waiting for it), then every whole one already
        // buffered; their answers go out together.
        'conn: loop {
            loop {
                let frame = match reader.read_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) | Err(_) => break 'conn,
                };
                let Ok((id, code, body)) = wire::split(&frame) else { break 'conn };
                if let Step::Answer(result, lsn) = handle(&conn, id, code, body) {
                    out.push(Pending { id, result, lsn });
                }
                if !reader.frame_buffered() || out.len() >= 1024 {
                    break;
                }
            }
            conn.finish(&mut out);
        }
        conn.finish(&mut out);
    }
    conn.disconnected();
}

/// The largest hello a client sends is a few dozen bytes.
const MAX_HELLO: usize = 4096;

/// How long a new connection may take to send its hello.
const HELLO_PATIENCE: Duration = Duration::from_secs(10);

fn hello(inner: &Inner, conn: &Conn, reader: &mut FrameReader) -> bool {
    // A peer that connects and says nothing (or announces a huge frame)
    // holds no thread or memory for long.
    if reader.get_ref().set_read_timeout(Some(HELLO_PATIENCE)).is_err() {
        return false;
    }
    let Ok(Some(frame)) = reader.read_frame_max(MAX_HELLO) else { return false };
    if reader.get_ref().set_read_timeout(None).is_err() {
        return false;
    }
    let parsed = wire::split(&frame).and_then(|(id, code, body)| {
        if code != op::HELLO {
            return Ok((id, Err(Error::Protocol("the first request must be a hello".into()))));
        }
        let (version, _pid) = wire::get_hello(&mut Reader::new(body))?;
        Ok((id, Ok(version)))
    });
    let (id, version) = match parsed {
        Ok(v) => v,
        Err(e) => (0, Err(Error::Protocol(e.0))),
    };
    let reply = version.and_then(|v| {
        if v != wire::VERSION {
            return Err(Error::Protocol(format!(
                "the owner speaks protocol version {}, this client {v}: use the same ringq version in every process",
                wire::VERSION
            )));
        }
        let e = &inner.engine;
        let mut body = Vec::new();
        wire::put_welcome(
            &mut Writer::new(&mut body),
            &wire::Welcome {
                version: wire::VERSION,
                instance_id: e.instance_id(),
                durability: e.durability(),
                owner_pid: std::process::id(),
                capacity: e.options().capacity as u64,
                max_attempts: e.options().max_attempts,
                session: inner.session,
                dir: inner.dir_id,
                queue: wire::QueueOptions::of(e.options()),
            },
        );
        Ok(body)
    });
    let ok = reply.is_ok();
    conn.send(&answer(id, reply));
    ok
}

/// An answer not yet written: its body (or error) and the LSN it must wait for.
struct Pending {
    id: u64,
    result: Result<Vec<u8>>,
    lsn: Option<u64>,
}

fn answer(id: u64, result: Result<Vec<u8>>) -> Vec<u8> {
    let mut buf = Vec::new();
    frame_into(&mut buf, id, result);
    buf
}

fn frame_into(buf: &mut Vec<u8>, id: u64, result: Result<Vec<u8>>) {
    match result {
        Ok(body) => {
            let start = wire::begin(buf, id, wire::OK);
            buf.extend_from_slice(&body);
            if wire::finish(buf, start).is_err() {
                frame_into(
                    buf,
                    id,
                    Err(Error::Protocol("the answer is larger than a frame may be; ask for less at a time".into())),
                );
            }
        }
        Err(e) => {
            let start = wire::begin(buf, id, wire::ERR);
            wire::put_error(&mut Writer::new(buf), &e);
            let _ = wire::finish(buf, start);
        }
    }
}

/// A checkout's answer: its deliveries, held by the connection from now
/// on. If they do not fit one frame of `limit` bytes, they go back
/// unstarted (their delivery not counted) and the checkout fails, saying to
/// ask for fewer: taken and then refused, each retry counted an attempt.
fn deliveries_answer(conn: &Conn, got: Vec<crate::types::Delivered>, limit: usize) -> Result<Vec<u8>> {
    let b = body(|w| wire::put_deliveries(w, &got));
    if b.len() + wire::HEADER > limit {
        let leases: Vec<(u64, u64)> = got.iter().map(|d| (d.id, d.lease_token)).collect();
        let _ = conn.engine.release(&leases);
        return Err(Error::Protocol(format!(
            "{} messages ({} bytes) do not fit one answer of at most {limit} bytes: check out fewer at a time \
             (they were given back)",
            got.len(),
            b.len()
        )));
    }
    conn.took(&got);
    Ok(b)
}

/// Encodes with `put` into a fresh body.
fn body(put: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut b = Vec::new();
    put(&mut Writer::new(&mut b));
    b
}

fn bad(e: crate::codec::DecodeError) -> Error {
    Error::Protocol(format!("malformed request: {}", e.0))
}

impl Conn {
    fn send(&self, bytes: &[u8]) {
        let mut w = self.writer.lock();
        let _ = w.write_all(bytes);
    }

    /// Waits once for the fsync every answer needs, then writes them all.
    fn finish(&self, out: &mut Vec<Pending>) {
        if out.is_empty() {
            return;
        }
        let max = out.iter().filter_map(|p| p.lsn).max();
        if let Err(e) = self.engine.wait_durable(max) {
            // Each waiting answer gets the failure (the error is not Clone:
            // rebuild it from its wire form).
            let mut enc = Vec::new();
            wire::put_error(&mut Writer::new(&mut enc), &e);
            for p in out.iter_mut().filter(|p| p.lsn.is_some()) {
                p.result = Err(wire::get_error(&mut Reader::new(&enc)).unwrap_or(Error::Closed));
            }
        }
        let mut buf = Vec::new();
        for p in out.drain(..) {
            frame_into(&mut buf, p.id, p.result);
        }
        self.send(&buf);
    }

    /// The client went away.
    fn is_gone(&self) -> bool {
        self.leases.lock().gone
    }

    /// The client withdrew request `id` (or went away): stop waiting for it.
    fn is_withdrawn(&self, id: u64) -> bool {
        self.waiting.lock().get(&id).copied().unwrap_or(false) || self.is_gone()
    }

    /// Marks request `id` withdrawn if a thread still works on it.
    fn withdraw(&self, id: u64) {
        if let Some(w) = self.waiting.lock().get_mut(&id) {
            *w = true;
        }
    }

    /// Leases the client took.
    fn took(&self, ds: &[crate::types::Delivered]) {
        let mut l = self.leases.lock();
        if l.gone {
            drop(l);
            let leases: Vec<(u64, u64)> = ds.iter().map(|d| (d.id, d.lease_token)).collect();
            let _ = self.engine.expire_leases(&leases);
            return;
        }
        for d in ds {
            l.held.insert(d.id, d.lease_token);
        }
    }

    /// Leases the client gave back (acked, released, nacked: whatever came of it).
    fn gave_back(&self, leases: &[(u64, u64)]) {
        let mut l = self.leases.lock();
        for (id, token) in leases {
            if l.held.get(id) == Some(token) {
                l.held.remove(id);
            }
        }
    }

    /// The client is gone: what it held is ready again at once.
    fn disconnected(&self) {
        let held: Vec<(u64, u64)> = {
            let mut l = self.leases.lock();
            l.gone = true;
            l.held.drain().collect()
        };
        if !held.is_empty() {
            let _ = self.engine.expire_leases(&held);
        }
    }
}

/// What came of a request.
enum Step {
    /// Its answer, and the LSN it must wait for before it is written.
    Answer(Result<Vec<u8>>, Option<u64>),
    /// A thread of its own answers it (it may wait).
    Later,
}

fn now(result: Result<Vec<u8>>) -> Step {
    Step::Answer(result, None)
}

/// Runs `f` with `wait` cut in slices of [`SLICE`], again while a slice ran
/// out with what `again` calls "nothing yet", the wait lasts, and the client
/// is there and still wants request `id`.
fn sliced<T>(
    conn: &Conn,
    id: u64,
    wait: Wait,
    mut f: impl FnMut(Wait) -> Result<T>,
    again: impl Fn(&Result<T>) -> bool,
) -> Result<T> {
    let deadline = match wait {
        Wait::No => return f(Wait::No),
        Wait::Until(t) => Some(t),
        Wait::Forever => None,
    };
    loop {
        let slice_end = Instant::now() + SLICE;
        let (w, last) = match deadline {
            Some(d) if d <= slice_end => (Wait::Until(d), true),
            _ => (Wait::Until(slice_end), false),
        };
        let r = f(w);
        // Early with nothing (an interrupt) is an answer too: only a slice
        // that ran out is waited again.
        if last || !again(&r) || conn.is_withdrawn(id) || Instant::now() < slice_end {
            return r;
        }
    }
}

/// Answers request `id` from a thread of its own, when `job` is done.
fn later(
    conn: &Arc<Conn>,
    id: u64,
    job: impl FnOnce(&Conn) -> Result<(Vec<u8>, Option<u64>)> + Send + 'static,
) -> Step {
    let c = Arc::clone(conn);
    conn.waiting.lock().insert(id, false);
    let spawned = std::thread::Builder::new().name("ringq-wait".into()).spawn(move || {
        let (result, lsn) = match job(&c) {
            Ok((b, l)) => (Ok(b), l),
            Err(e) => (Err(e), None),
        };
        c.waiting.lock().remove(&id);
        c.finish(&mut vec![Pending { id, result, lsn }]);
    });
    match spawned {
        Ok(_) => Step::Later,
        Err(e) => {
            conn.waiting.lock().remove(&id);
            now(Err(Error::storage("starting a thread for a waiting request", conn.engine.path(), e)))
        }
    }
}

fn decode<T>(r: &mut Reader<'_>, f: impl FnOnce(&mut Reader<'_>) -> DResult<T>) -> Result<T> {
    let v = f(r).map_err(bad)?;
    if !r.is_empty() {
        return Err(Error::Protocol("malformed request: bytes after its end".into()));
    }
    Ok(v)
}

fn full(r: &Result<impl Sized>) -> bool {
    matches!(r, Err(Error::Full { .. }))
}

/// Runs one request.
fn handle(conn: &Arc<Conn>, id: u64, code: u8, body_bytes: &[u8]) -> Step {
    match run(conn, id, code, &mut Reader::new(body_bytes)) {
        Ok(step) => step,
        Err(e) => now(Err(e)),
    }
}

fn run(conn: &Arc<Conn>, id: u64, code: u8, r: &mut Reader<'_>) -> Result<Step> {
    let e = &*conn.engine;
    Ok(match code {
        op::PUBLISH => {
            let (p, opts, wait) =
                decode(r, |r| Ok((wire::get_publish(r)?, wire::get_publish_opts(r)?, wire::get_wait(r)?)))?;
            match e.publish(p.as_publish(), opts, Wait::No) {
                Err(Error::Full { .. }) if !matches!(wait, Wait::No) => later(conn, id, move |c| {
                    let (mid, l) = sliced(c, id, wait, |w| c.engine.publish(p.as_publish(), opts, w), full)?;
                    Ok((body(|w| w.u64(mid)), l))
                }),
                r => {
                    let (mid, l) = r?;
                    Step::Answer(Ok(body(|w| w.u64(mid))), l)
                }
            }
        }
        op::PUBLISH_MANY => {
            let (items, wait) = decode(r, |r| Ok((wire::get_publishes(r)?, wire::get_wait(r)?)))?;
            let run = |e: &Engine, items: &[wire::OwnedPublish], w: Wait| {
                let batch: Vec<_> = items.iter().map(|i| i.as_publish()).collect();
                e.publish_many(&batch, PublishOpts::default(), w)
            };
            match run(e, &items, Wait::No) {
                Err(Error::Full { capacity, need, .. }) if !matches!(wait, Wait::No) && need <= capacity => {
                    later(conn, id, move |c| {
                        let (ids, l) = sliced(c, id, wait, |w| run(&c.engine, &items, w), full)?;
                        Ok((body(|w| wire::put_ids(w, &ids)), l))
                    })
                }
                r => {
                    let (ids, l) = r?;
                    Step::Answer(Ok(body(|w| wire::put_ids(w, &ids))), l)
                }
            }
        }
        op::CHECKOUT => {
            let (topic, c) = decode(r, wire::get_checkout)?;
            let got = e.checkout_with(&topic, Checkout { wait: Wait::No, ..c })?;
            if got.is_empty() && !matches!(c.wait, Wait::No) {
                later(conn, id, move |conn| {
                    let mut got = sliced(
                        conn,
                        id,
                        c.wait,
                        |w| conn.engine.checkout_with(&topic, Checkout { wait: w, ..c }),
                        |r| matches!(r, Ok(v) if v.is_empty()),
                    )?;
                    if !got.is_empty() && conn.is_withdrawn(id) {
                        // Withdrawn, or the client went away: it never saw
                        // these, so they go back unstarted, their delivery
                        // not counted (a cancel that comes after the answer
                        // leaves that to the client).
                        let leases: Vec<(u64, u64)> = got.iter().map(|d| (d.id, d.lease_token)).collect();
                        let _ = conn.engine.release(&leases);
                        got.clear();
                    }
                    Ok((deliveries_answer(conn, got, wire::MAX_FRAME)?, None))
                })
            } else {
                now(deliveries_answer(conn, got, wire::MAX_FRAME))
            }
        }
        op::ACK => {
            let (leases, items, wait) =
                decode(r, |r| Ok((wire::get_leases(r)?, wire::get_publishes(r)?, wire::get_wait(r)?)))?;
            let batch: Vec<_> = items.iter().map(|i| i.as_publish()).collect();
            // Refused (a follow-up too large, no room, a storage error),
            // the acks did not happen: the leases stay the client's, ended
            // at once if it goes away.
            let out = e.ack(&leases, &batch, wait)?;
            conn.gave_back(&leases);
            Step::Answer(Ok(body(|w| wire::put_ids(w, &out.lost))), out.lsn)
        }
        op::RELEASE => {
            let leases = decode(r, wire::get_leases)?;
            let out = e.release(&leases)?;
            conn.gave_back(&leases);
            Step::Answer(Ok(body(|w| wire::put_ids(w, &out.lost))), out.lsn)
        }
        op::NACK => {
            let (mid, token, delay, failure, reason) = decode(r, |r| {
                Ok((
                    r.u64()?,
                    r.u64()?,
                    wire::get_opt_u64(r)?.map(Duration::from_micros),
                    wire::get_failure(r)?,
                    r.opt_string()?,
                ))
            })?;
            let lsn = e.nack(mid, token, delay, failure, reason.as_deref())?;
            conn.gave_back(&[(mid, token)]);
            Step::Answer(Ok(Vec::new()), lsn)
        }
        op::EXTEND => {
            let (mid, token, by) = decode(r, |r| Ok((r.u64()?, r.u64()?, Duration::from_micros(r.u64()?))))?;
            let deadline = e.extend(mid, token, by)?;
            now(Ok(body(|w| w.u64(deadline))))
        }
        op::INTERRUPTS => {
            let topic = decode(r, |r| r.string())?;
            let n = e.interrupts(&topic)?;
            now(Ok(body(|w| w.u64(n))))
        }
        op::CANCEL => {
            let target = decode(r, |r| r.u64())?;
            conn.withdraw(target);
            now(Ok(Vec::new()))
        }
        op::INTERRUPT => {
            let topic = decode(r, |r| r.string())?;
            e.interrupt(&topic)?;
            now(Ok(Vec::new()))
        }
        op::SET_TOPIC_POLICY => {
            let (topic, max_attempts, handler) =
                decode(r, |r| Ok((r.string()?, wire::get_opt_u64(r)?, r.opt_string()?)))?;
            let max_attempts = max_attempts.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
            e.set_topic_policy(&topic, crate::TopicPolicy { max_attempts, handler })?;
            now(Ok(Vec::new()))
        }
        op::IS_SUPERSEDED => {
            let mid = decode(r, |r| r.u64())?;
            let s = e.is_superseded(mid)?;
            now(Ok(body(|w| w.u8(s as u8))))
        }
        op::CANCEL_MESSAGE => {
            let mid = decode(r, |r| r.u64())?;
            let (was, l) = e.cancel(mid)?;
            Step::Answer(Ok(body(|w| w.u8(was))), l)
        }
        op::STATS => {
            decode(r, |_| Ok(()))?;
            let stats = Store::stats(e)?;
            now(Ok(body(|w| wire::put_stats(w, &stats))))
        }
        op::HISTOGRAMS => {
            decode(r, |_| Ok(()))?;
            let hs = Store::histograms(e)?;
            now(Ok(body(|w| wire::put_histograms(w, &hs))))
        }
        op::TOPIC_STATS => {
            decode(r, |_| Ok(()))?;
            let ts = e.topic_stats()?;
            now(Ok(body(|w| wire::put_topic_stats(w, &ts))))
        }
        op::SNAPSHOT => {
            decode(r, |_| Ok(()))?;
            later(conn, id, |c| {
                let l = c.engine.snapshot()?;
                Ok((body(|w| w.u64(l)), None))
            })
        }
        op::DLQ_LIST => {
            let (topic, reason, limit) = decode(r, |r| Ok((r.opt_string()?, r.opt_string()?, wire::get_opt_u64(r)?)))?;
            let found = e.dlq_list(topic.as_deref(), reason.as_deref(), limit.map(|v| v as usize))?;
            now(Ok(body(|w| wire::put_dead_letters(w, &found))))
        }
        op::DLQ_GET => {
            let mid = decode(r, |r| r.u64())?;
            let d = e.dlq_get(mid)?;
            now(Ok(body(|w| wire::put_dead_letter(w, &d))))
        }
        op::DLQ_REPLAY | op::DLQ_PURGE => {
            let ids = decode(r, wire::get_opt_ids)?;
            let (n, l) =
                if code == op::DLQ_REPLAY { e.dlq_replay(ids.as_deref()) } else { e.dlq_purge(ids.as_deref()) }?;
            Step::Answer(Ok(body(|w| w.u64(n as u64))), l)
        }
        other => return Err(Error::Protocol(format!("unknown request code {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Publish};

    fn conn(engine: Engine) -> Conn {
        let (writer, _other) = UnixStream::pair().unwrap();
        Conn {
            engine: Arc::new(engine),
            _writer_in_child: crate::fork::ChildDrops::new(&writer),
            writer: Mutex::new(writer),
            leases: Mutex::new(Leases::default()),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn a_checkout_whose_answer_does_not_fit_a_frame_gives_its_messages_back_uncounted() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path().join("q"), Options::default()).unwrap();
        for _ in 0..3 {
            e.publish(Publish { topic: "t", payload: &[7u8; 100], ..Default::default() }, Default::default(), Wait::No)
                .unwrap();
        }
        let c = conn(e);
        let lease = Duration::from_secs(60);
        let checkout = Checkout { max: 3, lease, wait: Wait::No, share: 1, since: None };
        let take = |c: &Conn| c.engine.checkout_with("t", checkout).unwrap();
        let got = take(&c);
        assert_eq!(got.len(), 3);
        let err = deliveries_answer(&c, got, 200).unwrap_err();
        assert!(err.to_string().contains("check out fewer"), "{err}");
        assert!(c.leases.lock().held.is_empty(), "the connection holds none of them");
        let again = take(&c);
        assert_eq!(again.iter().map(|d| d.attempt).collect::<Vec<_>>(), [1, 1, 1], "their delivery was not counted");
        let body = deliveries_answer(&c, again, wire::MAX_FRAME).unwrap();
        assert!(body.len() > 300);
        assert_eq!(c.leases.lock().held.len(), 3);
    }
}

//! A client's connection driven by an event loop (`ringq.AsyncQueue` on a
//! shared queue's client): nothing on it ever blocks.
//!
//! A call encodes its request into the outgoing buffer and returns at once
//! with `Error::Submitted(request id)`; the loop writes the buffer when it
//! gets a turn ([`LoopConn::flush`], one write for every request its tasks
//! made in that turn: group commit on the socket, as the threaded client
//! does) and, when the socket is readable, takes the answers that came
//! ([`LoopConn::pump`]), each with the operation it answers. The owner does
//! the waiting (for room, a message, the fsync); a task waits for its
//! answer in the loop. A request that is no longer wanted (its task was
//! cancelled) can be withdrawn ([`op::CANCEL`]): the owner stops waiting
//! for it, and gives back what a withdrawn checkout took.

use super::wire::{self, op};
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// How much a pump reads before it hands what it has to the loop (other
/// callbacks get their turn; the socket stays readable).
const PUMP_BYTES: usize = 4 << 20;

/// One answer taken off the socket: the request's id, the operation it
/// answers, and its body (or the owner's error).
pub type Answer = (u64, u8, Result<Vec<u8>>);

/// A connection to the owner for one event loop.
pub struct LoopConn {
    /// Dropped by a `fork()` child (as a blocking connection's sockets).
    _in_child: crate::fork::ChildDrops,
    stream: UnixStream,
    /// Requests not yet written, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Bytes read and not yet a whole frame, from `start` on.
    inbuf: Vec<u8>,
    start: usize,
    /// Requests sent and not answered: their operation.
    pending: HashMap<u64, u8>,
    /// Why the connection broke (nothing more goes out on it).
    broken: Option<String>,
    /// It broke because the owner's end closed (not because of what the
    /// owner sent, or a close here).
    hung_up: bool,
    /// The owner it said hello to: its queue's identity and its session.
    owner: (u64, u64),
}

impl LoopConn {
    /// Takes a connection that said hello to `owner` (its queue's identity
    /// and session); from now on it never blocks.
    pub fn new(stream: UnixStream, owner: (u64, u64)) -> std::io::Result<LoopConn> {
        stream.set_nonblocking(true)?;
        Ok(LoopConn {
            _in_child: crate::fork::ChildDrops::new(&stream),
            stream,
            out: Vec::new(),
            sent: 0,
            inbuf: Vec::new(),
            start: 0,
            pending: HashMap::new(),
            broken: None,
            hung_up: false,
            owner,
        })
    }

    /// The socket the loop watches.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Why the connection broke, if it did.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The owner, if the connection broke because the owner's end of the
    /// socket closed; once (a second call answers `None`).
    pub fn take_hung_up(&mut self) -> Option<(u64, u64)> {
        std::mem::take(&mut self.hung_up).then_some(self.owner)
    }

    /// Whether requests wait to be written.
    pub fn has_output(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Adds request `id` (operation `code`, body by `put`) to what goes out
    /// next; `Error::Submitted(id)` says it was taken.
    pub(crate) fn submit(&mut self, id: u64, code: u8, put: impl FnOnce(&mut Writer<'_>)) -> Error {
        if let Some(why) = &self.broken {
            return Error::OwnerGone(why.clone());
        }
        let start = wire::begin(&mut self.out, id, code);
        put(&mut Writer::new(&mut self.out));
        if let Err(e) = wire::finish(&mut self.out, start) {
            return e;
        }
        self.pending.insert(id, code);
        Error::Submitted(id)
    }

    /// Withdraws request `id` if it is still unanswered (the owner stops
    /// waiting for it); its answer may still come and is then ignored by
    /// whoever asked.
    pub fn cancel(&mut self, id: u64, cancel_id: u64) {
        if self.broken.is_none() && self.pending.contains_key(&id) {
            let _ = self.submit(cancel_id, op::CANCEL, |w| w.u64(id));
        }
    }

    /// Writes what it can without blocking; `Ok(true)` if some is left
    /// (the loop then waits for the socket to be writable).
    pub fn flush(&mut self) -> bool {
        while self.broken.is_none() && self.sent < self.out.len() {
            match (&self.stream).write(&self.out[self.sent..]) {
                Ok(0) => self.hang_up("the owner's socket took no more bytes".into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.hang_up(format!("writing to its socket failed: {e}")),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        false
    }

    /// The answers that came (without blocking). If the connection broke,
    /// every request still unanswered is answered with `OwnerGone` (whether
    /// it took effect is unknown) and [`broken`](Self::broken) says why.
    pub fn pump(&mut self, gone: impl Fn(&str) -> String) -> Vec<Answer> {
        let mut answers = Vec::new();
        let mut read = 0;
        let mut chunk = [0u8; 64 * 1024];
        while self.broken.is_none() && read < PUMP_BYTES {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => self.hang_up("the owner hung up".into()),
                Ok(n) => {
                    read += n;
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.frames(&mut answers);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.hang_up(format!("reading its socket failed: {e}")),
            }
        }
        if let Some(why) = &self.broken {
            let why = gone(why);
            for (id, code) in self.pending.drain() {
                answers.push((id, code, Err(Error::OwnerGone(why.clone()))));
            }
        }
        answers
    }

    /// Takes every whole frame buffered.
    fn frames(&mut self, answers: &mut Vec<Answer>) {
        loop {
            let b = &self.inbuf[self.start..];
            if b.len() < 4 {
                break;
            }
            let len = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
            if !(wire::HEADER..=wire::MAX_FRAME).contains(&len) {
                self.break_with(format!("the owner sent a frame of bad length {len}"));
                return;
            }
            if b.len() < 4 + len {
                break;
            }
            let frame = &b[4..4 + len];
            match wire::split(frame) {
                Ok((id, code, body)) => {
                    if let Some(op) = self.pending.remove(&id) {
                        let result = match code {
                            wire::OK => Ok(body.to_vec()),
                            _ => Err(wire::get_error(&mut Reader::new(body)).unwrap_or_else(|e| {
                                Error::Protocol(format!("unreadable error from the owner: {}", e.0))
                            })),
                        };
                        answers.push((id, op, result));
                    }
                }
                Err(e) => {
                    self.break_with(format!("the owner sent a malformed frame: {}", e.0));
                    return;
                }
            }
            self.start += 4 + len;
        }
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
            self.start = 0;
        } else if self.start > self.inbuf.len() / 2 {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
    }

    fn hang_up(&mut self, why: String) {
        self.hung_up |= self.broken.is_none();
        self.break_with(why);
    }

    fn break_with(&mut self, why: String) {
        if self.broken.is_none() {
            self.broken = Some(why);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Ends the connection (the owner ends the leases taken on it).
    pub fn close(&mut self) {
        self.break_with("the queue was closed".into());
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_frame(id: u64, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let start = wire::begin(&mut f, id, wire::OK);
        f.extend_from_slice(body);
        wire::finish(&mut f, start).unwrap();
        f
    }

    #[test]
    fn answers_split_anywhere_come_out_whole_with_their_operation() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut c = LoopConn::new(a, (1, 1)).unwrap();
        for id in 1..=3 {
            assert!(matches!(c.submit(id, op::PUBLISH, |w| w.u64(id)), Error::Submitted(i) if i == id));
        }
        assert!(!c.flush());
        let mut all = Vec::new();
        for id in [2u64, 1, 3] {
            all.extend(answer_frame(id, &id.to_le_bytes()));
        }
        for piece in all.chunks(5) {
            b.write_all(piece).unwrap();
            for (id, code, body) in c.pump(|w| w.to_owned()) {
                assert_eq!(code, op::PUBLISH);
                assert_eq!(body.unwrap(), id.to_le_bytes());
            }
        }
        assert!(c.pending.is_empty(), "every request answered");
    }

    #[test]
    fn a_hang_up_answers_every_request_in_flight_with_owner_gone() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut c = LoopConn::new(a, (1, 1)).unwrap();
        let _ = c.submit(7, op::CHECKOUT, |_| {});
        let _ = c.submit(8, op::ACK, |_| {});
        c.flush();
        drop(b);
        let mut got = c.pump(|why| format!("gone: {why}"));
        got.sort_by_key(|a| a.0);
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0].2, Err(Error::OwnerGone(m)) if m.starts_with("gone: ")));
        assert!(c.broken().is_some());
        assert!(matches!(c.submit(9, op::ACK, |_| {}), Error::OwnerGone(_)), "nothing more goes out");
    }

    #[test]
    fn a_full_socket_leaves_the_rest_for_later_and_loses_nothing() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut c = LoopConn::new(a, (1, 1)).unwrap();
        let big = vec![7u8; 1 << 20];
        for id in 0..8 {
            let _ = c.submit(id, op::PUBLISH, |w| w.bytes(&big));
        }
        assert!(c.flush(), "8 MiB do not fit a socket buffer");
        let expected = c.out.len();
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            let mut buf = vec![0u8; 1 << 16];
            while n < expected {
                n += b.read(&mut buf).unwrap();
            }
            n
        });
        while c.flush() {
            std::thread::yield_now();
        }
        assert_eq!(reader.join().unwrap(), expected);
    }
}

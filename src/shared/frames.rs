//! Reading frames off a Unix socket, spinning briefly before sleeping.
//!
//! A request and its answer cross the socket in a few microseconds, but a
//! thread that sleeps in `recv` and is woken by the other side's write costs
//! tens of microseconds on a virtual machine (an idle CPU is halted and must
//! be woken). A call made right after the last one (a publish loop) or an
//! answer due any moment (the owner is working on it) is therefore first
//! polled for, without blocking, for a short `spin` (yielding the CPU
//! between polls, so a busy machine loses nothing); only then does the
//! reader sleep in a blocking `recv`.

use super::wire;
use std::io::{self, ErrorKind};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Room for many frames at once (answers written together are read together).
const BUFFER: usize = 256 * 1024;

/// Frames from one socket, with a buffer.
pub struct FrameReader {
    stream: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    spin: Duration,
}

impl FrameReader {
    /// Reads from `stream`, polling for up to `spin` before each blocking read.
    pub fn new(stream: UnixStream, spin: Duration) -> FrameReader {
        FrameReader { stream, buf: vec![0; BUFFER], start: 0, end: 0, spin }
    }

    /// The socket.
    pub fn get_ref(&self) -> &UnixStream {
        &self.stream
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// True if a whole frame is already buffered (reading it will not block).
    pub fn frame_buffered(&self) -> bool {
        let b = self.buffered();
        b.len() >= 4 && b.len() - 4 >= u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize
    }

    /// Reads one frame (without its length), or `None` at a clean end (the
    /// peer closed between frames). A length out of range is `InvalidData`.
    pub fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.read_frame_max(wire::MAX_FRAME)
    }

    /// [`read_frame`](Self::read_frame) of a frame at most `max` bytes long.
    /// A frame larger than the buffer grows as its bytes arrive: a length
    /// alone (a peer that says 1 GiB and sends nothing) costs no memory.
    pub fn read_frame_max(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        if !self.fill(4)? {
            return Ok(None);
        }
        let b = self.buffered();
        let len = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
        if !(wire::HEADER..=max).contains(&len) {
            return Err(io::Error::new(ErrorKind::InvalidData, format!("bad frame length {len}")));
        }
        if 4 + len <= self.buf.len() {
            if !self.fill(4 + len)? {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let frame = self.buf[self.start + 4..self.start + 4 + len].to_vec();
            self.consume(4 + len);
            return Ok(Some(frame));
        }
        // Larger than the buffer: read the rest straight into the frame,
        // making room a buffer's size at a time.
        let mut frame = Vec::with_capacity(2 * BUFFER);
        frame.extend_from_slice(&self.buffered()[4..]);
        self.consume(self.end - self.start);
        let mut at = frame.len();
        while at < len {
            if at == frame.len() {
                frame.resize(at + (len - at).min(BUFFER), 0);
            }
            match recv(&self.stream, &mut frame[at..], 0) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(frame))
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Buffers at least `n` bytes (`n` fits the buffer). False if the peer
    /// closed before any byte of them came; `UnexpectedEof` if it closed
    /// part way.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.end - self.start < n {
            if self.buf.len() - self.start < n {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let got = self.read_some()?;
            if got == 0 {
                return if self.end == self.start { Ok(false) } else { Err(ErrorKind::UnexpectedEof.into()) };
            }
        }
        Ok(true)
    }

    /// One read into the buffer's free end: polled for up to `spin`, then
    /// blocking. 0 at the end of the stream.
    fn read_some(&mut self) -> io::Result<usize> {
        let mut deadline = None;
        loop {
            let flags = if deadline.is_some_and(|d| Instant::now() >= d) { 0 } else { libc::MSG_DONTWAIT };
            match recv(&self.stream, &mut self.buf[self.end..], flags) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                // A blocking read ran out of the socket's read timeout.
                Err(e) if e.kind() == ErrorKind::WouldBlock && flags == 0 => return Err(timed_out()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.spin.is_zero() {
                        deadline = Some(Instant::now());
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + self.spin);
                    }
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a read past the socket's read timeout (`SO_RCVTIMEO`) gives.
fn timed_out() -> io::Error {
    io::Error::new(ErrorKind::TimedOut, "no data within the socket's read timeout")
}

fn recv(s: &UnixStream, into: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `into` is valid for writes of `into.len()` bytes and the
    // descriptor is open for as long as `s` lives.
    let n = unsafe { libc::recv(s.as_raw_fd(), into.as_mut_ptr().cast(), into.len(), flags) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn frame(body_len: usize) -> Vec<u8> {
        let len = (wire::HEADER + body_len) as u32;
        let mut f = len.to_le_bytes().to_vec();
        f.extend((0..len).map(|i| i as u8));
        f
    }

    #[test]
    fn frames_of_every_size_and_split_anywhere_come_out_whole() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, Duration::from_micros(50));
        let sizes = [0usize, 1, 100, BUFFER - 4 - wire::HEADER, BUFFER, 3 * BUFFER + 7];
        let writer = std::thread::spawn(move || {
            for s in sizes {
                let f = frame(s);
                // In pieces that cut the length and the body.
                for piece in f.chunks(3 + s / 3) {
                    a.write_all(piece).unwrap();
                }
            }
        });
        for s in sizes {
            let got = r.read_frame().unwrap().unwrap();
            assert_eq!(got, frame(s)[4..]);
        }
        writer.join().unwrap();
        assert!(r.read_frame().unwrap().is_none(), "a clean end");
    }

    #[test]
    fn a_bad_length_and_an_end_mid_frame_are_errors() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, Duration::ZERO);
        a.write_all(&2u32.to_le_bytes()).unwrap();
        assert_eq!(r.read_frame().unwrap_err().kind(), ErrorKind::InvalidData);
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, Duration::ZERO);
        a.write_all(&frame(10)[..8]).unwrap();
        drop(a);
        assert_eq!(r.read_frame().unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }

    /// A read timeout on the socket ends a wait for a frame, at its start
    /// and in the middle of a large one (it used to poll again forever).
    #[test]
    fn a_read_timeout_ends_the_wait_for_a_frame() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut r = FrameReader::new(b, Duration::from_micros(50));
        let t = Instant::now();
        assert_eq!(r.read_frame().unwrap_err().kind(), ErrorKind::TimedOut);
        // From another thread: more than the socket's buffer holds.
        let writer = std::thread::spawn(move || {
            a.write_all(&frame(2 * BUFFER)[..BUFFER + 100]).unwrap();
            a
        });
        assert_eq!(r.read_frame().unwrap_err().kind(), ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(writer.join().unwrap());
        // A limit below the frame's length refuses it.
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, Duration::ZERO);
        a.write_all(&frame(100)).unwrap();
        assert_eq!(r.read_frame_max(50).unwrap_err().kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn frame_buffered_says_whether_a_read_would_block() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, Duration::ZERO);
        let mut two = frame(5);
        two.extend(frame(6));
        a.write_all(&two).unwrap();
        r.read_frame().unwrap().unwrap();
        assert!(r.frame_buffered());
        r.read_frame().unwrap().unwrap();
        assert!(!r.frame_buffered());
    }
}

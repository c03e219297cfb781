//! One error type for the engine, converted to Python exceptions in exactly one
//! place (`bindings::errors`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Every way an engine call can fail.
#[derive(Debug)]
pub enum Error {
    /// Another process (or another handle in this process) owns the directory.
    Locked { path: PathBuf, pid: Option<u32> },
    /// No room for `need` new messages in a queue of `capacity` (`waited`:
    /// the caller's timeout ran out).
    Full { capacity: usize, need: usize, waited: bool },
    /// The engine was closed.
    Closed,
    /// A `fork()` child's copy of an engine its parent (`pid`) opened.
    Forked { path: PathBuf, pid: u32 },
    /// Lease tokens that no longer match their message (expired, re-delivered, acked).
    LeaseLost { ids: Vec<u64> },
    /// A delivery of another queue (`delivery_queue` is its instance id), or
    /// of an earlier queue at this path, handed to this one.
    Foreign { id: u64, delivery_queue: u64, this_queue: u64 },
    /// `expected_version` did not match.
    VersionConflict { key: String, expected: u32, actual: u32 },
    /// A payload, key, topic or header block over its limit.
    Limit { what: &'static str, size: usize, limit: usize },
    /// A bad option value.
    Config(String),
    /// A damaged file: where, and what is wrong.
    Corruption { path: PathBuf, offset: u64, detail: String },
    /// A failed write/fsync/create: the operation and the OS error.
    Storage { op: String, path: PathBuf, source: io::Error },
    /// No message or dead letter with that id.
    NotFound(String),
    /// Bad argument that is not a limit (unknown `on_duplicate`, empty topic, ...).
    Invalid(String),
    /// A shared queue's owner went away (or cannot be reached) during the call.
    OwnerGone(String),
    /// The other side of a shared queue's socket broke the protocol.
    Protocol(String),
    /// A call made under [`crate::blocking::try_first`] found the engine's
    /// lock taken (or a failed fsync to heal) and changed nothing: the
    /// caller runs it again, free to wait. Never leaves the bindings.
    WouldBlock,
    /// A request handed to a shared queue's owner by a client that does not
    /// wait (`shared::loop_conn`): its answer comes later, under this
    /// request id. Never leaves the bindings.
    Submitted(u64),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn storage(op: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Storage { op: op.into(), path: path.into(), source }
    }

    pub(crate) fn corruption(path: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> Self {
        Error::Corruption { path: path.into(), offset, detail: detail.into() }
    }

    /// The OS errno of a storage error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Storage { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A message id as users see it: 16 lowercase hex digits (so ids sort as
/// text in publish order).
pub fn hex_id(id: u64) -> HexId {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    HexId(out)
}

/// An id as 16 lowercase hex digits, without an allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexId([u8; 16]);

impl HexId {
    pub fn as_str(&self) -> &str {
        // Every byte is an ASCII hex digit (`hex_id`): valid UTF-8, so
        // the check `from_utf8` makes per id is left out of the hot path.
        debug_assert!(self.0.iter().all(u8::is_ascii_hexdigit));
        // SAFETY: ASCII bytes are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

pub(crate) fn fmt_id(id: u64) -> String {
    hex_id(id).as_str().to_owned()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Locked { path, pid: Some(pid) } => write!(
                f,
                "queue directory {} is owned by process {pid}; close that queue or wait for the process to exit",
                path.display()
            ),
            Error::Locked { path, pid: None } => {
                write!(f, "queue directory {} is owned by another process (pid unknown)", path.display())
            }
            Error::Full { capacity, need, .. } if need > capacity => write!(
                f,
                "{need} new messages can never fit a queue of capacity {capacity}: publish fewer at a time, \
                 or raise `capacity`"
            ),
            Error::Full { capacity, waited: true, .. } => write!(
                f,
                "queue is full ({capacity} messages) and no room came before the timeout; ack messages or \
                 raise `capacity`"
            ),
            Error::Full { capacity, .. } => write!(
                f,
                "queue is full ({capacity} messages); ack messages, raise `capacity`, or publish with \
                 block=True to wait for room"
            ),
            Error::Closed => write!(f, "the queue is closed"),
            Error::Forked { path, pid } => write!(
                f,
                "queue {} was opened by process {pid} before a fork(); this child process cannot use it \
                 (its threads and lock stayed with the parent): open the queue in the child, after the fork",
                path.display()
            ),
            Error::LeaseLost { ids } => {
                let shown: Vec<String> = ids.iter().take(8).map(|i| fmt_id(*i)).collect();
                write!(
                    f,
                    "lease lost for {} message(s) [{}]: the lease expired or the message was delivered again",
                    ids.len(),
                    shown.join(", ")
                )
            }
            Error::Foreign { id, delivery_queue, this_queue } => write!(
                f,
                "delivery {} came from another queue (instance {}), not this one (instance {}): use it on the \
                 queue that delivered it; nothing was changed",
                fmt_id(*id),
                fmt_id(*delivery_queue),
                fmt_id(*this_queue)
            ),
            Error::VersionConflict { key, expected, actual } => write!(
                f,
                "version conflict on dedup key {key:?}: expected version {expected}, live version is {actual}"
            ),
            Error::Limit { what, size, limit } => {
                write!(f, "{what} is {size} bytes, over the limit of {limit} bytes; nothing was written")
            }
            Error::Config(msg) => write!(f, "invalid option: {msg}"),
            Error::Corruption { path, offset, detail } => {
                write!(f, "corrupt file {} at offset {offset}: {detail}", path.display())
            }
            Error::Storage { op, path, source } => {
                write!(f, "{op} failed for {}: {source}", path.display())
            }
            Error::NotFound(id) => write!(f, "no message or dead letter with id {id}"),
            Error::OwnerGone(why) => write!(f, "{why}"),
            Error::Protocol(why) => write!(f, "shared queue protocol error: {why}"),
            Error::WouldBlock => write!(f, "the call would wait for the engine (an internal signal; please report it)"),
            Error::Submitted(id) => {
                write!(f, "request {id} was sent; its answer comes later (an internal signal; please report it)")
            }
            Error::Invalid(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_lowercase_hex_digits() {
        assert_eq!(hex_id(0x0123_4567_89ab_cdef).as_str(), "0123456789abcdef");
        assert_eq!(fmt_id(0), "0000000000000000");
        assert_eq!(fmt_id(u64::MAX), "ffffffffffffffff");
        assert_eq!(fmt_id(0xa), "000000000000000a");
    }
}

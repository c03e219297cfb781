//! Plain data: options, messages, dead letters and what calls return.

use crate::error::{Error, Result};
pub use crate::payload::Payload;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock microseconds since the Unix epoch (what the files store).
pub type Micros = u64;
/// Journal sequence number; the first record is 1.
pub type Lsn = u64;

/// The wall clock. The engine reads time through its clock
/// ([`crate::clock`]), which is this unless a test gave it a manual one.
pub fn now_micros() -> Micros {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// `at` plus `d`, saturating (a huge duration means "never", not a wrap).
pub fn micros_after(at: Micros, d: Duration) -> Micros {
    at.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Message ids have this many bits for the sequence part.
pub const SEQ_BITS: u32 = 64 - SLOT_BITS;

/// The slot part of a message id has this many bits; the rest is a sequence
/// number that never repeats, so ids are unique across restarts and sort in
/// publish order.
pub const SLOT_BITS: u32 = 24;
pub const MAX_CAPACITY: usize = (1 << SLOT_BITS) - 1;
pub const MAX_TOPIC: usize = 255;
/// Priorities are 0..=MAX_PRIORITY.
pub const MAX_PRIORITY: u8 = 9;
/// `Message::line` of a message without an ordering key.
pub const NO_LINE: u32 = u32::MAX;

pub(crate) fn slot_of(id: u64) -> u32 {
    (id & ((1u64 << SLOT_BITS) - 1)) as u32
}

/// When `publish`/`checkout` return: what durability means for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Return after fsync; concurrent callers share one fsync (group commit).
    Always,
    /// fsync at least every `fsync_interval`.
    Batch,
    /// Leave flushing to the OS.
    Os,
}

impl Durability {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Durability::Always),
            "batch" => Ok(Durability::Batch),
            "os" => Ok(Durability::Os),
            other => Err(Error::Config(format!("durability={other:?}: expected \"always\", \"batch\" or \"os\""))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Batch => "batch",
            Durability::Os => "os",
        }
    }
}

/// Queue options. Defaults are documented in the README's options table;
/// `tests/test_options_table.py` compares them with the Python SDK's table
/// (`ringq.config.QUEUE_OPTIONS`, through `ringq._core._default_options`).
#[derive(Debug, Clone)]
pub struct Options {
    pub capacity: usize,
    pub durability: Durability,
    pub fsync_interval: Duration,
    pub max_attempts: u32,
    pub segment_size: usize,
    pub snapshot_every: u64,
    pub snapshot_interval: Duration,
    pub max_payload: usize,
    pub max_key: usize,
    pub max_headers: usize,
    pub dlq_capacity: usize,
    /// Where the engine reads the time (see [`crate::clock`]): the wall
    /// clock, or a manual clock for tests.
    pub clock: crate::clock::Clock,
    /// Journal segments a snapshot covers become the next spares
    /// (`journal::prepare::recycle_spare`) instead of being deleted and
    /// new files written with zeros. On by default; the queue option
    /// `recycle_segments` (`RINGQ_RECYCLE_SEGMENTS`) in Python. Off, the
    /// journal behaves as before recycling existed (tests of
    /// what deleting covered segments leaves on disk turn it off; so may a
    /// copy-on-write filesystem, where overwriting a file in place
    /// allocates new blocks anyway).
    pub recycle_segments: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: 100_000,
            durability: Durability::Batch,
            fsync_interval: Duration::from_millis(50),
            max_attempts: 5,
            segment_size: 16 * 1024 * 1024,
            snapshot_every: 1_000_000,
            snapshot_interval: Duration::from_secs(300),
            max_payload: 1024 * 1024,
            max_key: 1024,
            max_headers: 64 * 1024,
            dlq_capacity: 10_000,
            clock: crate::clock::Clock::System,
            recycle_segments: true,
        }
    }
}

impl Options {
    /// Checks every field and reports all bad ones at once.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            bad.push(format!("capacity={} (must be 1..={MAX_CAPACITY})", self.capacity));
        }
        if self.fsync_interval.is_zero() && self.durability == Durability::Batch {
            bad.push("fsync_interval=0 (must be > 0 with durability=\"batch\")".into());
        }
        if self.max_attempts == 0 {
            bad.push("max_attempts=0 (must be >= 1)".into());
        }
        if self.max_payload == 0 || self.max_payload > 64 * 1024 * 1024 {
            bad.push(format!("max_payload={} (must be 1..=64 MiB)", self.max_payload));
        }
        if self.max_key == 0 || self.max_key > 64 * 1024 {
            bad.push(format!("max_key={} (must be 1..=65536)", self.max_key));
        }
        if self.max_headers > 16 * 1024 * 1024 {
            bad.push(format!("max_headers={} (must be <= 16 MiB)", self.max_headers));
        }
        // A record larger than a segment gets a segment of its own size.
        if self.segment_size < 64 * 1024 || self.segment_size >= (1 << 31) {
            bad.push(format!("segment_size={} (must be >= 64 KiB and < 2 GiB)", self.segment_size));
        }
        if self.snapshot_every == 0 {
            bad.push("snapshot_every=0 (must be >= 1)".into());
        }
        if self.snapshot_interval.is_zero() {
            bad.push("snapshot_interval=0 (must be > 0)".into());
        }
        if self.dlq_capacity == 0 {
            bad.push("dlq_capacity=0 (must be >= 1)".into());
        }
        if bad.is_empty() { Ok(()) } else { Err(Error::Config(bad.join("; "))) }
    }
}

/// Where a message is. (A free slot has no message.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgState {
    Ready = 1,
    Delayed = 2,
    InFlight = 3,
}

impl MsgState {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(MsgState::Ready),
            2 => Some(MsgState::Delayed),
            3 => Some(MsgState::InFlight),
            _ => None,
        }
    }
}

/// Rarely-set fields, behind a pointer so a plain message stays small, and
/// shared (`Arc`) so a delivery, a dead letter's copy or a snapshot image
/// takes them without a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub dedup_key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub first_failed_at: Option<Micros>,
    /// 0..=9, higher first within a topic (0 unless published with one).
    pub priority: u8,
    /// At most one message per ordering key of a topic is in flight, and the
    /// messages of a key are delivered in publish order.
    pub ordering_key: Option<String>,
    /// How long the dedup key keeps returning this message's id after it
    /// was acked (microseconds).
    pub dedup_window: Option<Micros>,
}

impl Meta {
    /// The metadata of a message that has a priority and nothing else: one
    /// shared value per priority, so such messages cost no allocation (a
    /// change copies it first, see `Message::meta_mut`).
    pub(crate) fn priority_only(priority: u8) -> Arc<Meta> {
        static SHARED: std::sync::OnceLock<Vec<Arc<Meta>>> = std::sync::OnceLock::new();
        let all = SHARED.get_or_init(|| {
            (0..=MAX_PRIORITY).map(|priority| Arc::new(Meta { priority, ..Default::default() })).collect()
        });
        all[priority.min(MAX_PRIORITY) as usize].clone()
    }

    /// Whether this is `priority_only`'s shape.
    pub(crate) fn is_priority_only(&self) -> bool {
        self.ordering_key.is_none() && self.only_placement()
    }

    /// Whether nothing but the fields that place a message (priority,
    /// ordering key) is set.
    fn only_placement(&self) -> bool {
        self.dedup_key.is_none()
            && self.headers.is_empty()
            && self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.first_failed_at.is_none()
            && self.dedup_window.is_none()
    }

    /// Whether it has an ordering key, maybe a priority, and nothing else
    /// (what messages of one key can share, see `state::KeyLine`).
    pub(crate) fn is_key_only(&self) -> bool {
        self.ordering_key.is_some() && self.only_placement()
    }

    /// Whether any field added by journal meta tag 2 is set.
    pub(crate) fn has_extension(&self) -> bool {
        self.priority != 0 || self.ordering_key.is_some() || self.dedup_window.is_some()
    }
}

/// A message in the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u64,
    pub topic: u32,
    pub state: MsgState,
    pub superseded: bool,
    pub attempt: u32,
    pub version: u32,
    pub enqueued_at: Micros,
    pub visible_at: Micros,
    /// Current lease (0 when not in flight) and its deadline.
    pub lease_token: u64,
    pub lease_deadline: Micros,
    /// Incremented each time the message enters a ready list; a ready-list
    /// entry is live only while its ticket matches (see `ring`).
    pub ticket: u32,
    /// In memory only: the index of its ordering key's line in its topic
    /// (`state::KeyLine`), or `NO_LINE`; set when the message is placed.
    pub line: u32,
    /// Shared, so a delivery or a snapshot takes it without a copy.
    pub payload: Payload,
    pub meta: Option<Arc<Meta>>,
}

impl Message {
    pub fn dedup_key(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.dedup_key.as_deref())
    }
    pub fn priority(&self) -> u8 {
        self.meta.as_ref().map_or(0, |m| m.priority)
    }
    pub fn ordering_key(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.ordering_key.as_deref())
    }
    /// The metadata to change (copied first if a delivery or a snapshot
    /// image still shares it).
    pub(crate) fn meta_mut(&mut self) -> &mut Meta {
        Arc::make_mut(self.meta.get_or_insert_with(Default::default))
    }
}

/// What to do when a dedup key is already live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    #[default]
    Replace,
    Keep,
}

impl OnDuplicate {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "replace" => Ok(OnDuplicate::Replace),
            "keep" => Ok(OnDuplicate::Keep),
            o => Err(Error::Invalid(format!("on_duplicate={o:?}: expected \"replace\" or \"keep\""))),
        }
    }
}

/// How long a call may wait. Measured in real time (`Instant`), whatever
/// the engine's clock: a manual clock changes when messages fall due, not
/// how long a caller sleeps.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    No,
    Until(Instant),
    Forever,
}

/// A delivered message (the payload is shared with the ring's copy).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: u64,
    /// Shared with the topic (no copy per delivery).
    pub topic: Arc<str>,
    pub payload: Payload,
    pub attempt: u32,
    pub version: u32,
    pub enqueued_at: Micros,
    pub lease_token: u64,
    pub lease_deadline: Micros,
    pub meta: Option<Arc<Meta>>,
}

/// Why a message failed, as the caller tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub traceback: Option<String>,
    pub handler: Option<String>,
}

/// An entry of the dead-letter ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message: Message,
    pub topic: String,
    pub reason: String,
    pub failure: Failure,
    pub dead_lettered_at: Micros,
}

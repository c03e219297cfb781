//! The bytes a shared queue's owner and its clients exchange over the Unix
//! socket. Every byte is written here and described in `docs/protocol.md`;
//! values use the journal's little-endian encoding (`crate::codec`).
//!
//! A frame is `u32 length | u64 request id | u8 code | body`, the length
//! counting everything after itself. A request's code is its operation; a
//! response's code is [`OK`] or [`ERR`] and carries the request's id.
//! Requests are pipelined: a client sends without waiting, the owner may
//! answer out of order (a checkout that waits answers when it is done).

use crate::codec::{DResult, DecodeError, Reader, Writer};
use crate::engine::{Checkout, Publish, PublishOpts, Stat, TopicStat};
use crate::error::Error;
use crate::histogram::HistogramRead;
use crate::record::{decode_failure, decode_meta, encode_failure, encode_meta};
use crate::types::{DeadLetter, Delivered, Durability, Failure, Message, MsgState, OnDuplicate, Wait};
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The protocol's version; the owner refuses a client that speaks another.
pub(crate) const VERSION: u32 = 4;
/// The first bytes of a client's hello.
pub(crate) const MAGIC: &[u8; 8] = b"RINGQSHR";
/// The largest frame either side accepts (a bigger one is a protocol error).
pub(crate) const MAX_FRAME: usize = 1 << 30;
/// Frame header after the length: request id and code.
pub(crate) const HEADER: usize = 8 + 1;

/// Response codes.
pub(crate) const OK: u8 = 0;
pub(crate) const ERR: u8 = 1;

/// Request codes (operations). New codes may be added; old ones never change.
pub(crate) mod op {
    pub(crate) const HELLO: u8 = 1;
    pub(crate) const PUBLISH: u8 = 2;
    pub(crate) const PUBLISH_MANY: u8 = 3;
    pub(crate) const CHECKOUT: u8 = 4;
    pub(crate) const ACK: u8 = 5;
    pub(crate) const RELEASE: u8 = 6;
    pub(crate) const NACK: u8 = 7;
    pub(crate) const EXTEND: u8 = 8;
    pub(crate) const INTERRUPTS: u8 = 9;
    pub(crate) const INTERRUPT: u8 = 10;
    pub(crate) const SET_TOPIC_POLICY: u8 = 11;
    pub(crate) const IS_SUPERSEDED: u8 = 12;
    pub(crate) const STATS: u8 = 13;
    pub(crate) const HISTOGRAMS: u8 = 14;
    pub(crate) const TOPIC_STATS: u8 = 15;
    pub(crate) const SNAPSHOT: u8 = 16;
    pub(crate) const DLQ_LIST: u8 = 17;
    pub(crate) const DLQ_GET: u8 = 18;
    pub(crate) const DLQ_REPLAY: u8 = 19;
    pub(crate) const DLQ_PURGE: u8 = 20;
    /// Withdraws a request of the same connection that is still waiting
    /// (its id in the body): the owner stops waiting for it and gives back
    /// what a withdrawn checkout took. Answered with nothing.
    pub(crate) const CANCEL: u8 = 21;
    /// `Store::cancel` of a message (its id); answered with a `u8`, what it
    /// was (`engine::CANCEL_*`), once the record is durable.
    pub(crate) const CANCEL_MESSAGE: u8 = 22;
}

/// Starts a frame in `buf`: the length is patched by [`finish`].
pub(crate) fn begin(buf: &mut Vec<u8>, id: u64, code: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(code);
    start
}

/// Writes the length of the frame begun at `start`; a frame over
/// [`MAX_FRAME`] is refused (and removed from `buf`).
pub(crate) fn finish(buf: &mut Vec<u8>, start: usize) -> Result<(), Error> {
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(Error::Limit { what: "request", size: len, limit: MAX_FRAME });
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Splits a frame (without its length prefix) into id, code and body.
pub(crate) fn split(frame: &[u8]) -> DResult<(u64, u8, &[u8])> {
    if frame.len() < HEADER {
        return Err(DecodeError(format!("frame of {} bytes is shorter than its header", frame.len())));
    }
    let id = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
    Ok((id, frame[8], &frame[HEADER..]))
}

// -- values -------------------------------------------------------------------

fn opt_u64(w: &mut Writer<'_>, v: Option<u64>) {
    match v {
        Some(v) => {
            w.u8(1);
            w.u64(v);
        }
        None => w.u8(0),
    }
}

fn read_opt_u64(r: &mut Reader<'_>) -> DResult<Option<u64>> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        t => Err(DecodeError(format!("bad option tag {t}"))),
    }
}

fn flag(r: &mut Reader<'_>) -> DResult<bool> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        t => Err(DecodeError(format!("bad flag {t}"))),
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// A wait travels as what is left of it when the request is written.
pub(crate) fn put_wait(w: &mut Writer<'_>, wait: Wait) {
    match wait {
        Wait::No => w.u8(0),
        Wait::Until(t) => {
            w.u8(1);
            w.u64(micros(t.saturating_duration_since(Instant::now())));
        }
        Wait::Forever => w.u8(2),
    }
}

pub(crate) fn get_wait(r: &mut Reader<'_>) -> DResult<Wait> {
    match r.u8()? {
        0 => Ok(Wait::No),
        1 => {
            let left = Duration::from_micros(r.u64()?);
            Ok(Instant::now().checked_add(left).map_or(Wait::Forever, Wait::Until))
        }
        2 => Ok(Wait::Forever),
        t => Err(DecodeError(format!("bad wait kind {t}"))),
    }
}

fn ids(w: &mut Writer<'_>, ids: &[u64]) {
    w.u32(ids.len() as u32);
    for id in ids {
        w.u64(*id);
    }
}

fn read_ids(r: &mut Reader<'_>) -> DResult<Vec<u64>> {
    let n = r.count(8)?;
    (0..n).map(|_| r.u64()).collect()
}

pub(crate) fn put_leases(w: &mut Writer<'_>, leases: &[(u64, u64)]) {
    w.u32(leases.len() as u32);
    for (id, token) in leases {
        w.u64(*id);
        w.u64(*token);
    }
}

pub(crate) fn get_leases(r: &mut Reader<'_>) -> DResult<Vec<(u64, u64)>> {
    let n = r.count(16)?;
    (0..n).map(|_| Ok((r.u64()?, r.u64()?))).collect()
}

/// One message to publish.
pub(crate) fn put_publish(w: &mut Writer<'_>, p: &Publish<'_>) {
    w.str(p.topic);
    w.bytes(p.payload);
    w.opt_str(p.dedup_key);
    opt_u64(w, p.delay.map(micros));
    w.u32(p.headers.len() as u32);
    for (k, v) in p.headers {
        w.str(k);
        w.str(v);
    }
    w.opt_str(p.correlation_id);
    w.opt_str(p.causation_id);
    w.u8(p.priority);
    w.opt_str(p.ordering_key);
    opt_u64(w, p.dedup_window.map(micros));
}

/// A decoded [`Publish`], owning what the borrowed form points at.
#[derive(Debug, Default)]
pub(crate) struct OwnedPublish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub dedup_key: Option<String>,
    pub delay: Option<Duration>,
    pub headers: Vec<(String, String)>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub priority: u8,
    pub ordering_key: Option<String>,
    pub dedup_window: Option<Duration>,
}

impl OwnedPublish {
    pub fn as_publish(&self) -> Publish<'_> {
        Publish {
            topic: &self.topic,
            payload: &self.payload,
            dedup_key: self.dedup_key.as_deref(),
            delay: self.delay,
            headers: &self.headers,
            correlation_id: self.correlation_id.as_deref(),
            causation_id: self.causation_id.as_deref(),
            priority: self.priority,
            ordering_key: self.ordering_key.as_deref(),
            dedup_window: self.dedup_window,
        }
    }
}

pub(crate) fn get_publish(r: &mut Reader<'_>) -> DResult<OwnedPublish> {
    let topic = r.string()?;
    let payload = r.bytes()?.to_vec();
    let dedup_key = r.opt_string()?;
    let delay = read_opt_u64(r)?.map(Duration::from_micros);
    let n = r.count(8)?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        headers.push((r.string()?, r.string()?));
    }
    Ok(OwnedPublish {
        topic,
        payload,
        dedup_key,
        delay,
        headers,
        correlation_id: r.opt_string()?,
        causation_id: r.opt_string()?,
        priority: r.u8()?,
        ordering_key: r.opt_string()?,
        dedup_window: read_opt_u64(r)?.map(Duration::from_micros),
    })
}

pub(crate) fn put_publishes(w: &mut Writer<'_>, items: &[Publish<'_>]) {
    w.u32(items.len() as u32);
    for p in items {
        put_publish(w, p);
    }
}

pub(crate) fn get_publishes(r: &mut Reader<'_>) -> DResult<Vec<OwnedPublish>> {
    // An item is at least its length prefixes and option tags.
    let n = r.count(4 + 4 + 1 + 1 + 4 + 1 + 1)?;
    (0..n).map(|_| get_publish(r)).collect()
}

pub(crate) fn put_publish_opts(w: &mut Writer<'_>, o: PublishOpts) {
    w.u8(match o.on_duplicate {
        OnDuplicate::Replace => 0,
        OnDuplicate::Keep => 1,
    });
    opt_u64(w, o.expected_version.map(u64::from));
}

pub(crate) fn get_publish_opts(r: &mut Reader<'_>) -> DResult<PublishOpts> {
    let on_duplicate = match r.u8()? {
        0 => OnDuplicate::Replace,
        1 => OnDuplicate::Keep,
        t => return Err(DecodeError(format!("bad on_duplicate {t}"))),
    };
    let expected_version = match read_opt_u64(r)? {
        Some(v) => Some(u32::try_from(v).map_err(|_| DecodeError(format!("expected_version {v} too large")))?),
        None => None,
    };
    Ok(PublishOpts { on_duplicate, expected_version })
}

pub(crate) fn put_checkout(w: &mut Writer<'_>, topic: &str, c: &Checkout) {
    w.str(topic);
    w.u64(c.max as u64);
    w.u64(micros(c.lease));
    put_wait(w, c.wait);
    w.u64(c.share as u64);
    opt_u64(w, c.since);
}

pub(crate) fn get_checkout(r: &mut Reader<'_>) -> DResult<(String, Checkout)> {
    let topic = r.string()?;
    let max = r.u64()? as usize;
    let lease = Duration::from_micros(r.u64()?);
    let wait = get_wait(r)?;
    let share = r.u64()? as usize;
    let since = read_opt_u64(r)?;
    Ok((topic, Checkout { max, lease, wait, share, since }))
}

pub(crate) fn put_delivered(w: &mut Writer<'_>, d: &Delivered) {
    w.u64(d.id);
    w.str(&d.topic);
    w.bytes(&d.payload);
    w.u32(d.attempt);
    w.u32(d.version);
    w.u64(d.enqueued_at);
    w.u64(d.lease_token);
    w.u64(d.lease_deadline);
    encode_meta(w, d.meta.as_deref());
}

pub(crate) fn get_delivered(r: &mut Reader<'_>) -> DResult<Delivered> {
    Ok(Delivered {
        id: r.u64()?,
        topic: r.str()?.into(),
        payload: r.bytes()?.into(),
        attempt: r.u32()?,
        version: r.u32()?,
        enqueued_at: r.u64()?,
        lease_token: r.u64()?,
        lease_deadline: r.u64()?,
        meta: decode_meta(r)?,
    })
}

pub(crate) fn put_deliveries(w: &mut Writer<'_>, ds: &[Delivered]) {
    w.u32(ds.len() as u32);
    for d in ds {
        put_delivered(w, d);
    }
}

pub(crate) fn get_deliveries(r: &mut Reader<'_>) -> DResult<Vec<Delivered>> {
    let n = r.count(8 + 4 + 4 + 4 + 4 + 8 * 3 + 1)?;
    (0..n).map(|_| get_delivered(r)).collect()
}

pub(crate) fn put_failure(w: &mut Writer<'_>, f: &Failure) {
    encode_failure(w, f);
}

pub(crate) fn get_failure(r: &mut Reader<'_>) -> DResult<Failure> {
    decode_failure(r)
}

pub(crate) fn put_opt_u64(w: &mut Writer<'_>, v: Option<u64>) {
    opt_u64(w, v);
}

pub(crate) fn get_opt_u64(r: &mut Reader<'_>) -> DResult<Option<u64>> {
    read_opt_u64(r)
}

pub(crate) fn get_flag(r: &mut Reader<'_>) -> DResult<bool> {
    flag(r)
}

pub(crate) fn put_ids(w: &mut Writer<'_>, v: &[u64]) {
    ids(w, v);
}

pub(crate) fn get_ids(r: &mut Reader<'_>) -> DResult<Vec<u64>> {
    read_ids(r)
}

pub(crate) fn put_opt_ids(w: &mut Writer<'_>, v: Option<&[u64]>) {
    match v {
        Some(v) => {
            w.u8(1);
            ids(w, v);
        }
        None => w.u8(0),
    }
}

pub(crate) fn get_opt_ids(r: &mut Reader<'_>) -> DResult<Option<Vec<u64>>> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(read_ids(r)?)),
        t => Err(DecodeError(format!("bad option tag {t}"))),
    }
}

pub(crate) fn put_stats(w: &mut Writer<'_>, stats: &[(Cow<'static, str>, Stat)]) {
    w.u32(stats.len() as u32);
    for (k, v) in stats {
        w.str(k);
        match v {
            Stat::Int(i) => {
                w.u8(0);
                w.u64(*i);
            }
            Stat::Float(f) => {
                w.u8(1);
                w.u64(f.to_bits());
            }
            Stat::Text(s) => {
                w.u8(2);
                w.str(s);
            }
            Stat::None => w.u8(3),
        }
    }
}

pub(crate) fn get_stats(r: &mut Reader<'_>) -> DResult<Vec<(Cow<'static, str>, Stat)>> {
    let n = r.count(5)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.string()?;
        let v = match r.u8()? {
            0 => Stat::Int(r.u64()?),
            1 => Stat::Float(f64::from_bits(r.u64()?)),
            2 => Stat::Text(r.string()?),
            3 => Stat::None,
            t => return Err(DecodeError(format!("bad stat kind {t}"))),
        };
        out.push((Cow::Owned(k), v));
    }
    Ok(out)
}

pub(crate) fn put_histograms(w: &mut Writer<'_>, hs: &[(Cow<'static, str>, HistogramRead)]) {
    w.u32(hs.len() as u32);
    for (name, h) in hs {
        w.str(name);
        w.u32(h.counts.len() as u32);
        for c in &h.counts {
            w.u64(*c);
        }
        w.u64(h.sum_seconds.to_bits());
    }
}

pub(crate) fn get_histograms(r: &mut Reader<'_>) -> DResult<Vec<(Cow<'static, str>, HistogramRead)>> {
    let n = r.count(16)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string()?;
        let k = r.count(8)?;
        let counts = (0..k).map(|_| r.u64()).collect::<DResult<Vec<u64>>>()?;
        let sum_seconds = f64::from_bits(r.u64()?);
        out.push((Cow::Owned(name), HistogramRead { counts, sum_seconds }));
    }
    Ok(out)
}

pub(crate) fn put_topic_stats(w: &mut Writer<'_>, ts: &[TopicStat]) {
    w.u32(ts.len() as u32);
    for t in ts {
        w.str(&t.name);
        w.u64(t.ready);
        w.u64(t.in_flight);
        w.u64(t.delayed);
        w.u64(t.dead_lettered);
    }
}

pub(crate) fn get_topic_stats(r: &mut Reader<'_>) -> DResult<Vec<TopicStat>> {
    let n = r.count(4 + 32)?;
    (0..n)
        .map(|_| {
            Ok(TopicStat {
                name: r.string()?,
                ready: r.u64()?,
                in_flight: r.u64()?,
                delayed: r.u64()?,
                dead_lettered: r.u64()?,
            })
        })
        .collect()
}

pub(crate) fn put_dead_letter(w: &mut Writer<'_>, d: &DeadLetter) {
    let m = &d.message;
    w.u64(m.id);
    w.str(&d.topic);
    w.bytes(&m.payload);
    w.u32(m.attempt);
    w.u32(m.version);
    w.u64(m.enqueued_at);
    encode_meta(w, m.meta.as_deref());
    w.str(&d.reason);
    encode_failure(w, &d.failure);
    w.u64(d.dead_lettered_at);
}

pub(crate) fn get_dead_letter(r: &mut Reader<'_>) -> DResult<DeadLetter> {
    let id = r.u64()?;
    let topic = r.string()?;
    let payload = r.bytes()?.into();
    let attempt = r.u32()?;
    let version = r.u32()?;
    let enqueued_at = r.u64()?;
    let meta = decode_meta(r)?;
    let message = Message {
        id,
        topic: 0,
        state: MsgState::Ready,
        superseded: false,
        attempt,
        version,
        enqueued_at,
        visible_at: 0,
        lease_token: 0,
        lease_deadline: 0,
        ticket: 0,
        line: crate::types::NO_LINE,
        payload,
        meta,
    };
    Ok(DeadLetter { message, topic, reason: r.string()?, failure: decode_failure(r)?, dead_lettered_at: r.u64()? })
}

pub(crate) fn put_dead_letters(w: &mut Writer<'_>, ds: &[DeadLetter]) {
    w.u32(ds.len() as u32);
    for d in ds {
        put_dead_letter(w, d);
    }
}

pub(crate) fn get_dead_letters(r: &mut Reader<'_>) -> DResult<Vec<DeadLetter>> {
    let n = r.count(8 + 4 + 4 + 8 + 8)?;
    (0..n).map(|_| get_dead_letter(r)).collect()
}

// -- hello --------------------------------------------------------------------

/// What the owner tells a client when it connects.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub version: u32,
    pub instance_id: u64,
    pub durability: Durability,
    pub owner_pid: u32,
    pub capacity: u64,
    pub max_attempts: u32,
    /// Drawn at random when the owner started serving: tells this owner
    /// from a later one of the same queue, whatever their pids.
    pub session: u64,
    /// The device and inode numbers of the owner's queue directory
    /// (`addr::dir_id`; version 4): a client connected to the owner of a
    /// copy of its queue (the same identity) tells it apart.
    pub dir: (u64, u64),
    /// The rest of the options that shape the queue (version 4): a client
    /// that takes over opens the queue with them, not with its own.
    pub queue: QueueOptions,
}

/// The owner's options a client that takes over keeps (with durability,
/// capacity and max_attempts, in [`Welcome`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    pub fsync_interval: Duration,
    pub segment_size: u64,
    pub snapshot_every: u64,
    pub snapshot_interval: Duration,
    pub max_payload: u64,
    pub max_key: u64,
    pub max_headers: u64,
    pub dlq_capacity: u64,
    pub recycle_segments: bool,
}

impl QueueOptions {
    pub fn of(o: &crate::types::Options) -> QueueOptions {
        QueueOptions {
            fsync_interval: o.fsync_interval,
            segment_size: o.segment_size as u64,
            snapshot_every: o.snapshot_every,
            snapshot_interval: o.snapshot_interval,
            max_payload: o.max_payload as u64,
            max_key: o.max_key as u64,
            max_headers: o.max_headers as u64,
            dlq_capacity: o.dlq_capacity as u64,
            recycle_segments: o.recycle_segments,
        }
    }

    /// `base` with these options (each clamped to what this machine's
    /// `usize` holds).
    pub fn apply(&self, base: crate::types::Options) -> crate::types::Options {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        crate::types::Options {
            fsync_interval: self.fsync_interval,
            segment_size: size(self.segment_size),
            snapshot_every: self.snapshot_every,
            snapshot_interval: self.snapshot_interval,
            max_payload: size(self.max_payload),
            max_key: size(self.max_key),
            max_headers: size(self.max_headers),
            dlq_capacity: size(self.dlq_capacity),
            recycle_segments: self.recycle_segments,
            ..base
        }
    }
}

impl Default for QueueOptions {
    fn default() -> QueueOptions {
        QueueOptions::of(&crate::types::Options::default())
    }
}

pub(crate) fn put_hello(w: &mut Writer<'_>) {
    w.buf.extend_from_slice(MAGIC);
    w.u32(VERSION);
    w.u32(std::process::id());
}

/// The client's version and pid.
pub(crate) fn get_hello(r: &mut Reader<'_>) -> DResult<(u32, u32)> {
    let mut magic = [0u8; 8];
    for b in magic.iter_mut() {
        *b = r.u8()?;
    }
    if &magic != MAGIC {
        return Err(DecodeError("not a ringq client (bad magic)".into()));
    }
    Ok((r.u32()?, r.u32()?))
}

/// A durability as the welcome carries it (one byte).
pub(crate) fn durability_code(d: Durability) -> u8 {
    match d {
        Durability::Always => 0,
        Durability::Batch => 1,
        Durability::Os => 2,
    }
}

/// The durability a welcome's byte stands for (`None`: no such code).
pub(crate) fn durability_of(code: u8) -> Option<Durability> {
    match code {
        0 => Some(Durability::Always),
        1 => Some(Durability::Batch),
        2 => Some(Durability::Os),
        _ => None,
    }
}

pub(crate) fn put_welcome(w: &mut Writer<'_>, x: &Welcome) {
    w.u32(x.version);
    w.u64(x.instance_id);
    w.u8(durability_code(x.durability));
    w.u32(x.owner_pid);
    w.u64(x.capacity);
    w.u32(x.max_attempts);
    w.u64(x.session);
    w.u64(x.dir.0);
    w.u64(x.dir.1);
    let q = &x.queue;
    w.u64(micros(q.fsync_interval));
    w.u64(q.segment_size);
    w.u64(q.snapshot_every);
    w.u64(micros(q.snapshot_interval));
    w.u64(q.max_payload);
    w.u64(q.max_key);
    w.u64(q.max_headers);
    w.u64(q.dlq_capacity);
    w.u8(u8::from(q.recycle_segments));
}

pub(crate) fn get_welcome(r: &mut Reader<'_>) -> DResult<Welcome> {
    Ok(Welcome {
        version: r.u32()?,
        instance_id: r.u64()?,
        durability: {
            let t = r.u8()?;
            durability_of(t).ok_or_else(|| DecodeError(format!("bad durability {t}")))?
        },
        owner_pid: r.u32()?,
        capacity: r.u64()?,
        max_attempts: r.u32()?,
        session: r.u64()?,
        dir: (r.u64()?, r.u64()?),
        queue: QueueOptions {
            fsync_interval: Duration::from_micros(r.u64()?),
            segment_size: r.u64()?,
            snapshot_every: r.u64()?,
            snapshot_interval: Duration::from_micros(r.u64()?),
            max_payload: r.u64()?,
            max_key: r.u64()?,
            max_headers: r.u64()?,
            dlq_capacity: r.u64()?,
            recycle_segments: match r.u8()? {
                0 => false,
                1 => true,
                t => return Err(DecodeError(format!("bad recycle_segments {t}"))),
            },
        },
    })
}

// -- errors -------------------------------------------------------------------

/// The `what` of a limit error, as the engine names it (a `&'static str`).
fn limit_name(s: &str) -> &'static str {
    match s {
        "topic" => "topic",
        "payload" => "payload",
        "dedup_key" => "dedup_key",
        "correlation_id" => "correlation_id",
        "causation_id" => "causation_id",
        "headers" => "headers",
        "request" => "request",
        _ => "value",
    }
}

fn path(w: &mut Writer<'_>, p: &std::path::Path) {
    w.str(&p.to_string_lossy());
}

pub(crate) fn put_error(w: &mut Writer<'_>, e: &Error) {
    match e {
        Error::Locked { path: p, pid } => {
            w.u8(1);
            path(w, p);
            opt_u64(w, pid.map(u64::from));
        }
        Error::Full { capacity, need, waited } => {
            w.u8(2);
            w.u64(*capacity as u64);
            w.u64(*need as u64);
            w.u8(*waited as u8);
        }
        Error::Closed => w.u8(3),
        Error::Forked { path: p, pid } => {
            w.u8(4);
            path(w, p);
            w.u32(*pid);
        }
        Error::LeaseLost { ids: v } => {
            w.u8(5);
            ids(w, v);
        }
        Error::Foreign { id, delivery_queue, this_queue } => {
            w.u8(6);
            w.u64(*id);
            w.u64(*delivery_queue);
            w.u64(*this_queue);
        }
        Error::VersionConflict { key, expected, actual } => {
            w.u8(7);
            w.str(key);
            w.u32(*expected);
            w.u32(*actual);
        }
        Error::Limit { what, size, limit } => {
            w.u8(8);
            w.str(what);
            w.u64(*size as u64);
            w.u64(*limit as u64);
        }
        Error::Config(m) => {
            w.u8(9);
            w.str(m);
        }
        Error::Corruption { path: p, offset, detail } => {
            w.u8(10);
            path(w, p);
            w.u64(*offset);
            w.str(detail);
        }
        Error::Storage { op, path: p, source } => {
            w.u8(11);
            w.str(op);
            path(w, p);
            w.u32(source.raw_os_error().unwrap_or(libc::EIO) as u32);
        }
        Error::NotFound(m) => {
            w.u8(12);
            w.str(m);
        }
        Error::Invalid(m) => {
            w.u8(13);
            w.str(m);
        }
        Error::OwnerGone(m) => {
            w.u8(14);
            w.str(m);
        }
        Error::Protocol(m) => {
            w.u8(15);
            w.str(m);
        }
        Error::WouldBlock | Error::Submitted(_) => {
            // Never sent (only the bindings see them); as a protocol error if it were.
            w.u8(15);
            w.str(&e.to_string());
        }
    }
}

pub(crate) fn get_error(r: &mut Reader<'_>) -> DResult<Error> {
    Ok(match r.u8()? {
        1 => Error::Locked { path: PathBuf::from(r.string()?), pid: read_opt_u64(r)?.map(|p| p as u32) },
        2 => Error::Full { capacity: r.u64()? as usize, need: r.u64()? as usize, waited: flag(r)? },
        3 => Error::Closed,
        4 => Error::Forked { path: PathBuf::from(r.string()?), pid: r.u32()? },
        5 => Error::LeaseLost { ids: read_ids(r)? },
        6 => Error::Foreign { id: r.u64()?, delivery_queue: r.u64()?, this_queue: r.u64()? },
        7 => Error::VersionConflict { key: r.string()?, expected: r.u32()?, actual: r.u32()? },
        8 => Error::Limit { what: limit_name(r.str()?), size: r.u64()? as usize, limit: r.u64()? as usize },
        9 => Error::Config(r.string()?),
        10 => Error::Corruption { path: PathBuf::from(r.string()?), offset: r.u64()?, detail: r.string()? },
        11 => Error::Storage {
            op: r.string()?,
            path: PathBuf::from(r.string()?),
            source: std::io::Error::from_raw_os_error(r.u32()? as i32),
        },
        12 => Error::NotFound(r.string()?),
        13 => Error::Invalid(r.string()?),
        14 => Error::OwnerGone(r.string()?),
        15 => Error::Protocol(r.string()?),
        t => return Err(DecodeError(format!("bad error kind {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T>(put: impl Fn(&mut Writer<'_>), get: impl Fn(&mut Reader<'_>) -> DResult<T>) -> T {
        let mut buf = Vec::new();
        put(&mut Writer::new(&mut buf));
        let mut r = Reader::new(&buf);
        let v = get(&mut r).expect("decodes");
        assert!(r.is_empty(), "nothing trails");
        // Every truncation is refused, never a panic.
        for cut in 0..buf.len() {
            assert!(get(&mut Reader::new(&buf[..cut])).is_err(), "truncated at {cut} of {}", buf.len());
        }
        v
    }

    #[test]
    fn publish_items_round_trip() {
        let headers = vec![("k".to_owned(), "v".to_owned())];
        let p = Publish {
            topic: "t",
            payload: b"abc",
            dedup_key: Some("key"),
            delay: Some(Duration::from_millis(1500)),
            headers: &headers,
            correlation_id: Some("c"),
            causation_id: None,
            priority: 7,
            ordering_key: Some("customer-42"),
            dedup_window: Some(Duration::from_secs(3600)),
        };
        let got = round(|w| put_publishes(w, &[p, Publish { topic: "u", ..Default::default() }]), get_publishes);
        assert_eq!(got.len(), 2);
        let q = got[0].as_publish();
        assert_eq!(
            (q.topic, q.payload, q.dedup_key, q.delay, q.headers, q.correlation_id, q.causation_id),
            (p.topic, p.payload, p.dedup_key, p.delay, p.headers, p.correlation_id, p.causation_id)
        );
        assert_eq!((q.priority, q.ordering_key, q.dedup_window), (p.priority, p.ordering_key, p.dedup_window));
        assert_eq!(got[1].topic, "u");
    }

    #[test]
    fn every_error_round_trips_with_its_message() {
        let errors = vec![
            Error::Locked { path: "/q".into(), pid: Some(7) },
            Error::Full { capacity: 10, need: 2, waited: true },
            Error::Closed,
            Error::Forked { path: "/q".into(), pid: 3 },
            Error::LeaseLost { ids: vec![1, 2] },
            Error::Foreign { id: 1, delivery_queue: 2, this_queue: 3 },
            Error::VersionConflict { key: "k".into(), expected: 1, actual: 2 },
            Error::Limit { what: "payload", size: 10, limit: 5 },
            Error::Config("bad".into()),
            Error::corruption("/q/x", 9, "broken"),
            Error::storage("writing", "/q/y", std::io::Error::from_raw_os_error(libc::ENOSPC)),
            Error::NotFound("00".into()),
            Error::Invalid("no".into()),
            Error::OwnerGone("gone".into()),
            Error::Protocol("garbled".into()),
        ];
        for e in errors {
            let got = round(|w| put_error(w, &e), get_error);
            assert_eq!(got.to_string(), e.to_string());
        }
    }

    #[test]
    fn checkout_and_deliveries_round_trip() {
        let c = Checkout { max: 5, lease: Duration::from_secs(3), wait: Wait::Forever, share: 2, since: Some(4) };
        let (topic, got) = round(|w| put_checkout(w, "t", &c), get_checkout);
        assert_eq!((topic.as_str(), got.max, got.lease, got.share, got.since), ("t", 5, c.lease, 2, Some(4)));
        assert!(matches!(got.wait, Wait::Forever));
        let d = Delivered {
            id: 9,
            topic: "t".into(),
            payload: b"p".as_slice().into(),
            attempt: 1,
            version: 2,
            enqueued_at: 3,
            lease_token: 4,
            lease_deadline: 5,
            meta: None,
        };
        let got = round(|w| put_deliveries(w, std::slice::from_ref(&d)), get_deliveries);
        assert_eq!((got[0].id, got[0].lease_token, &*got[0].payload), (9, 4, b"p".as_slice()));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = get_publishes(&mut Reader::new(&data));
            let _ = get_deliveries(&mut Reader::new(&data));
            let _ = get_error(&mut Reader::new(&data));
            let _ = get_stats(&mut Reader::new(&data));
            let _ = get_dead_letters(&mut Reader::new(&data));
            let _ = get_checkout(&mut Reader::new(&data));
        }
    }
}

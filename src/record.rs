//! Journal record bodies: a transaction is a list of operations applied
//! atomically (one record, one CRC). Records log *effects* (which message went
//! where), not requests, so replay never re-decides anything: the live path
//! decides, writes the record, then applies it with the same code replay uses
//! (`state::State::apply`).
//!
//! Byte layout: `docs/format.md`, section "Operations".

use crate::codec::{DResult, DecodeError, Reader, Writer};
use crate::payload::Payload;
use crate::types::{Failure, Message, Meta, Micros, MsgState};
use std::sync::Arc;

/// Operation tags (one byte). New tags may be added; old ones never change.
mod tag {
    pub const ENQUEUE: u8 = 1;
    pub const REPLACE: u8 = 2;
    pub const CHECKOUT: u8 = 3;
    pub const ACK: u8 = 4;
    pub const REQUEUE: u8 = 5;
    pub const DEAD_LETTER: u8 = 6;
    pub const DROP: u8 = 7;
    pub const DLQ_REMOVE: u8 = 8;
    /// Journal format 2.
    pub const RELEASE: u8 = 9;
    /// Queue format 4 (MANIFEST): an acked message's dedup key remembered.
    pub const REMEMBER: u8 = 10;
    /// Queue format 5: `Checkout` and `Ack` with their ids as runs.
    pub const CHECKOUT_RUNS: u8 = 11;
    pub const ACK_RUNS: u8 = 12;
}

/// Meta tags: 0 none, 1 the fields every format has, 2 those plus the
/// fields of queue format 4 (priority, ordering key, dedup window).
mod meta_tag {
    pub const NONE: u8 = 0;
    pub const BASE: u8 = 1;
    pub const EXTENDED: u8 = 2;
}

/// The topic of an [`Op::Enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRef {
    /// By name: a decoded record, a snapshot's message, a test.
    Name(Arc<str>),
    /// The index of a topic the engine's live state has interned (the
    /// engine's own plans): the journal looks its name up as it encodes
    /// the record ([`encode_txn_named`]). A batch then carries no reference
    /// count per message (a clone in the plan and a drop in `apply`, two
    /// atomic operations each, about a tenth of an engine `publish_many`).
    Id(u32),
}

impl From<Arc<str>> for TopicRef {
    fn from(name: Arc<str>) -> Self {
        TopicRef::Name(name)
    }
}

impl From<&str> for TopicRef {
    fn from(name: &str) -> Self {
        TopicRef::Name(name.into())
    }
}

/// Looks up the name of an interned topic (see [`TopicRef::Id`]).
pub type TopicNames<'a> = &'a dyn Fn(u32) -> Option<&'a str>;

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new message. `supersedes` names the in-flight holder of the same
    /// dedup key that this message supersedes.
    Enqueue { topic: TopicRef, msg: Message, supersedes: Option<u64> },
    /// New messages of one topic with nothing but a payload each (the
    /// engine's plain `publish_many`): ready, version 1, no metadata. In
    /// memory only: written as one `Enqueue` per message, the same bytes a
    /// list of `Enqueue`s would write, so a replay reads `Enqueue`s. One
    /// operation for the whole batch instead of a 136-byte `Enqueue` each.
    EnqueuePlain { topic: TopicRef, enqueued_at: Micros, msgs: Vec<(u64, Payload)> },
    /// Replace a ready/delayed message's payload and metadata in place.
    Replace { id: u64, version: u32, payload: Payload, meta: Option<Arc<Meta>> },
    /// Deliveries: each message goes in flight, attempt + 1. Written with
    /// tag 3, or tag 11 (its ids as runs) when that is smaller.
    Checkout { ids: Vec<u64> },
    /// Removed by their lease holders. Tag 4, or tag 12 as runs.
    Ack { ids: Vec<u64> },
    /// Back to ready (`visible_at` <= now) or delayed, after a failure at `failed_at`.
    Requeue { id: u64, visible_at: Micros, failed_at: Micros },
    /// Moved to the dead-letter ring.
    DeadLetter { id: u64, reason: String, failure: Failure, at: Micros },
    /// Removed without a dead letter (a superseded message that failed).
    Drop { id: u64 },
    /// Dead letters removed (purge, or replay which also enqueues copies).
    DlqRemove { ids: Vec<u64> },
    /// Given back unstarted: each goes to the front of its ready list (in
    /// this order) with the delivery that checkout counted undone; a
    /// superseded one is dropped instead.
    Release { ids: Vec<u64> },
    /// A message acked with a dedup window: its key keeps answering with
    /// its id until `until` (queue format 4).
    Remember { topic: Arc<str>, key: String, id: u64, until: Micros },
}

pub(crate) fn encode_meta(w: &mut Writer<'_>, meta: Option<&Meta>) {
    let Some(m) = meta else {
        w.u8(meta_tag::NONE);
        return;
    };
    let extended = m.has_extension();
    w.u8(if extended { meta_tag::EXTENDED } else { meta_tag::BASE });
    w.opt_str(m.dedup_key.as_deref());
    w.u32(m.headers.len() as u32);
    for (k, v) in &m.headers {
        w.str(k);
        w.str(v);
    }
    w.opt_str(m.correlation_id.as_deref());
    w.opt_str(m.causation_id.as_deref());
    match m.first_failed_at {
        Some(t) => {
            w.u8(1);
            w.u64(t)
        }
        None => w.u8(0),
    }
    if extended {
        w.u8(m.priority);
        w.opt_str(m.ordering_key.as_deref());
        match m.dedup_window {
            Some(t) => {
                w.u8(1);
                w.u64(t)
            }
            None => w.u8(0),
        }
    }
}

pub(crate) fn decode_meta(r: &mut Reader<'_>) -> DResult<Option<Arc<Meta>>> {
    let extended = match r.u8()? {
        meta_tag::NONE => return Ok(None),
        meta_tag::BASE => false,
        meta_tag::EXTENDED => true,
        t => return Err(DecodeError(format!("bad meta tag {t}"))),
    };
    let dedup_key = r.opt_string()?;
    let n = r.count(8)?;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        headers.push((r.string()?, r.string()?));
    }
    let correlation_id = r.opt_string()?;
    let causation_id = r.opt_string()?;
    let first_failed_at = match r.u8()? {
        0 => None,
        1 => Some(r.u64()?),
        t => return Err(DecodeError(format!("bad first_failed_at tag {t}"))),
    };
    let mut meta = Meta { dedup_key, headers, correlation_id, causation_id, first_failed_at, ..Default::default() };
    if extended {
        meta.priority = r.u8()?;
        if meta.priority > crate::types::MAX_PRIORITY {
            return Err(DecodeError(format!("priority {} (must be 0..=9)", meta.priority)));
        }
        meta.ordering_key = r.opt_string()?;
        meta.dedup_window = match r.u8()? {
            0 => None,
            1 => Some(r.u64()?),
            t => return Err(DecodeError(format!("bad dedup_window tag {t}"))),
        };
    }
    if meta.priority != 0 && meta.is_priority_only() {
        return Ok(Some(Meta::priority_only(meta.priority)));
    }
    Ok(Some(Arc::new(meta)))
}

/// Every field of a message except its topic (the caller writes the topic as a
/// name in the journal and as an index in snapshots). Lease fields are not
/// stored: leases do not survive a restart.
pub(crate) fn encode_message(w: &mut Writer<'_>, m: &Message) {
    w.u64(m.id);
    w.u8(m.state as u8);
    w.u8(m.superseded as u8);
    w.u32(m.attempt);
    w.u32(m.version);
    w.u64(m.enqueued_at);
    w.u64(m.visible_at);
    encode_meta(w, m.meta.as_deref());
    w.bytes(&m.payload);
}

pub(crate) fn decode_message(r: &mut Reader<'_>, topic: u32) -> DResult<Message> {
    decode_message_with(r, topic, &Payload::new)
}

/// `decode_message`, making the payload from its bytes with `payload` (a
/// snapshot's point into the mapped file, see `payload::MappedFile`).
pub(crate) fn decode_message_with(
    r: &mut Reader<'_>,
    topic: u32,
    payload: &dyn Fn(&[u8]) -> Payload,
) -> DResult<Message> {
    let id = r.u64()?;
    let state = MsgState::from_u8(r.u8()?).ok_or_else(|| DecodeError("bad message state".into()))?;
    let superseded = match r.u8()? {
        0 => false,
        1 => true,
        t => return Err(DecodeError(format!("bad superseded flag {t}"))),
    };
    let attempt = r.u32()?;
    let version = r.u32()?;
    let enqueued_at = r.u64()?;
    let visible_at = r.u64()?;
    let meta = decode_meta(r)?;
    let payload = payload(r.bytes()?);
    Ok(Message {
        id,
        topic,
        state,
        superseded,
        attempt,
        version,
        enqueued_at,
        visible_at,
        lease_token: 0,
        lease_deadline: 0,
        ticket: 0,
        line: crate::types::NO_LINE,
        payload,
        meta,
    })
}

fn encode_ids(w: &mut Writer<'_>, ids: &[u64]) {
    w.u32(ids.len() as u32);
    for id in ids {
        w.u64(*id);
    }
}

fn decode_ids(r: &mut Reader<'_>) -> DResult<Vec<u64>> {
    let n = r.count(8)?;
    (0..n).map(|_| r.u64()).collect()
}

/// A run's bytes: first id (8), step (8), length (4).
const RUN_BYTES: usize = 20;

/// Most ids the runs operations of one record may stand for together: more
/// than a queue has slots can never apply, and a damaged length must not
/// make a huge allocation (a record of many such operations neither).
const MAX_RUN_IDS: usize = 1 << crate::types::SLOT_BITS;

/// `ids` as arithmetic runs, greedily: `(first, step, length)`, each id of
/// a run being the one before plus `step` (wrapping). A checkout in FIFO
/// order is one run: consecutive ids differ by `2^24 + 1` on fresh slots
/// and by `2^24 - 1` on slots recycled from the last ack (the free list
/// hands back the last freed first).
fn id_runs(ids: &[u64]) -> impl Iterator<Item = (u64, u64, u32)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = *ids.get(i)?;
        let Some(&second) = ids.get(i + 1) else {
            i += 1;
            return Some((first, 0, 1));
        };
        let step = second.wrapping_sub(first);
        let mut j = i + 1;
        while j + 1 < ids.len() && ids[j + 1].wrapping_sub(ids[j]) == step {
            j += 1;
        }
        let len = j + 1 - i;
        i = j + 1;
        Some((first, step, len as u32))
    })
}

/// Writes `Checkout`/`Ack` ids with `plain` (tag 3/4: 8 bytes an id) or,
/// when that is smaller, as runs with `runs` (tag 11/12: 20 bytes a run):
/// 256 ids in checkout order take 24 bytes instead of 2,052.
fn encode_ids_tagged(w: &mut Writer<'_>, plain: u8, runs: u8, ids: &[u64]) {
    let n = id_runs(ids).count();
    if n * RUN_BYTES < ids.len() * 8 {
        w.u8(runs);
        w.u32(n as u32);
        for (first, step, len) in id_runs(ids) {
            w.u64(first);
            w.u64(step);
            w.u32(len);
        }
    } else {
        w.u8(plain);
        encode_ids(w, ids);
    }
}

/// Runs, expanded; `budget` is how many ids the record's runs may still
/// stand for (checked before anything is allocated for them).
fn decode_runs(r: &mut Reader<'_>, budget: &mut usize) -> DResult<Vec<u64>> {
    let n = r.count(RUN_BYTES)?;
    let mut runs = Vec::with_capacity(n);
    let mut total = 0usize;
    for _ in 0..n {
        let (first, step, len) = (r.u64()?, r.u64()?, r.u32()? as usize);
        if len == 0 {
            return Err(DecodeError("a run of 0 ids".into()));
        }
        total += len;
        if total > *budget {
            return Err(DecodeError(format!("runs of more than {MAX_RUN_IDS} ids in one record")));
        }
        runs.push((first, step, len));
    }
    *budget -= total;
    let mut ids = Vec::with_capacity(total);
    for (first, step, len) in runs {
        let mut id = first;
        for _ in 0..len {
            ids.push(id);
            id = id.wrapping_add(step);
        }
    }
    Ok(ids)
}

pub(crate) fn encode_failure(w: &mut Writer<'_>, f: &Failure) {
    w.opt_str(f.error_type.as_deref());
    w.opt_str(f.error_message.as_deref());
    w.opt_str(f.traceback.as_deref());
    w.opt_str(f.handler.as_deref());
}

pub(crate) fn decode_failure(r: &mut Reader<'_>) -> DResult<Failure> {
    Ok(Failure {
        error_type: r.opt_string()?,
        error_message: r.opt_string()?,
        traceback: r.opt_string()?,
        handler: r.opt_string()?,
    })
}

/// Appends the encoded transaction body to `buf` (its enqueues name their
/// topics: [`TopicRef::Name`]).
pub fn encode_txn(ops: &[Op], buf: &mut Vec<u8>) {
    encode_txn_named(ops, &|_| None, buf);
}

/// [`encode_txn`] for operations that may name interned topics by index
/// ([`TopicRef::Id`]), whose names `names` gives.
///
/// # Panics
///
/// On an index `names` does not know: the engine plans only with topics
/// its state interned, and encodes with that state's names.
pub fn encode_txn_named(ops: &[Op], names: TopicNames<'_>, buf: &mut Vec<u8>) {
    let mut w = Writer::new(buf);
    let count: usize = ops.iter().map(|op| if let Op::EnqueuePlain { msgs, .. } = op { msgs.len() } else { 1 }).sum();
    w.u32(count as u32);
    for op in ops {
        encode_op(&mut w, op, names);
    }
}

/// Writes an enqueue's topic name.
fn write_topic(w: &mut Writer<'_>, topic: &TopicRef, names: TopicNames<'_>) {
    match topic {
        TopicRef::Name(name) => w.str(name),
        TopicRef::Id(id) => w.str(names(*id).unwrap_or_else(|| panic!("ringq internal error: no name for topic {id}"))),
    }
}

fn encode_op(w: &mut Writer<'_>, op: &Op, names: TopicNames<'_>) {
    match op {
        Op::Enqueue { topic, msg, supersedes } => {
            w.u8(tag::ENQUEUE);
            write_topic(w, topic, names);
            w.u64(supersedes.unwrap_or(0));
            encode_message(w, msg);
        }
        Op::EnqueuePlain { topic, enqueued_at, msgs } => {
            for (id, payload) in msgs {
                // As `Enqueue` of the message `State::apply` makes of it.
                w.u8(tag::ENQUEUE);
                write_topic(w, topic, names);
                w.u64(0);
                w.u64(*id);
                w.u8(MsgState::Ready as u8);
                w.u8(0);
                w.u32(0);
                w.u32(1);
                w.u64(*enqueued_at);
                w.u64(0);
                w.u8(meta_tag::NONE);
                w.bytes(payload);
            }
        }
        Op::Replace { id, version, payload, meta } => {
            w.u8(tag::REPLACE);
            w.u64(*id);
            w.u32(*version);
            encode_meta(w, meta.as_deref());
            w.bytes(payload);
        }
        Op::Checkout { ids } => encode_ids_tagged(w, tag::CHECKOUT, tag::CHECKOUT_RUNS, ids),
        Op::Ack { ids } => encode_ids_tagged(w, tag::ACK, tag::ACK_RUNS, ids),
        Op::Requeue { id, visible_at, failed_at } => {
            w.u8(tag::REQUEUE);
            w.u64(*id);
            w.u64(*visible_at);
            w.u64(*failed_at);
        }
        Op::DeadLetter { id, reason, failure, at } => {
            w.u8(tag::DEAD_LETTER);
            w.u64(*id);
            w.str(reason);
            encode_failure(w, failure);
            w.u64(*at);
        }
        Op::Drop { id } => {
            w.u8(tag::DROP);
            w.u64(*id);
        }
        Op::DlqRemove { ids } => {
            w.u8(tag::DLQ_REMOVE);
            encode_ids(w, ids);
        }
        Op::Release { ids } => {
            w.u8(tag::RELEASE);
            encode_ids(w, ids);
        }
        Op::Remember { topic, key, id, until } => {
            w.u8(tag::REMEMBER);
            w.str(topic);
            w.str(key);
            w.u64(*id);
            w.u64(*until);
        }
    }
}

/// Decodes a transaction body. Never panics on hostile input.
pub fn decode_txn(body: &[u8]) -> Result<Vec<Op>, String> {
    let mut r = Reader::new(body);
    let ops = decode_ops(&mut r).map_err(|e| e.0)?;
    if !r.is_empty() {
        return Err(format!("{} trailing bytes after the last operation", body.len() - r.pos()));
    }
    Ok(ops)
}

fn decode_ops(r: &mut Reader<'_>) -> DResult<Vec<Op>> {
    let n = r.count(5)?;
    let mut ops = Vec::with_capacity(n);
    let mut budget = MAX_RUN_IDS;
    for _ in 0..n {
        ops.push(decode_op(r, &mut budget)?);
    }
    Ok(ops)
}

fn decode_op(r: &mut Reader<'_>, run_budget: &mut usize) -> DResult<Op> {
    Ok(match r.u8()? {
        tag::ENQUEUE => {
            let topic = TopicRef::Name(r.str()?.into());
            let sup = r.u64()?;
            let msg = decode_message(r, 0)?;
            Op::Enqueue { topic, msg, supersedes: (sup != 0).then_some(sup) }
        }
        tag::REPLACE => {
            let id = r.u64()?;
            let version = r.u32()?;
            let meta = decode_meta(r)?;
            let payload = r.bytes()?.into();
            Op::Replace { id, version, payload, meta }
        }
        tag::CHECKOUT => Op::Checkout { ids: decode_ids(r)? },
        tag::ACK => Op::Ack { ids: decode_ids(r)? },
        tag::CHECKOUT_RUNS => Op::Checkout { ids: decode_runs(r, run_budget)? },
        tag::ACK_RUNS => Op::Ack { ids: decode_runs(r, run_budget)? },
        tag::REQUEUE => Op::Requeue { id: r.u64()?, visible_at: r.u64()?, failed_at: r.u64()? },
        tag::DEAD_LETTER => {
            let id = r.u64()?;
            let reason = r.string()?;
            let failure = decode_failure(r)?;
            Op::DeadLetter { id, reason, failure, at: r.u64()? }
        }
        tag::DROP => Op::Drop { id: r.u64()? },
        tag::DLQ_REMOVE => Op::DlqRemove { ids: decode_ids(r)? },
        tag::RELEASE => Op::Release { ids: decode_ids(r)? },
        tag::REMEMBER => {
            let topic: Arc<str> = r.str()?.into();
            let key = r.string()?;
            Op::Remember { topic, key, id: r.u64()?, until: r.u64()? }
        }
        t => return Err(DecodeError(format!("unknown operation tag {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(id: u64, payload: Vec<u8>, meta: Option<Arc<Meta>>) -> Message {
        Message {
            id,
            topic: 0,
            state: MsgState::Ready,
            superseded: false,
            attempt: 2,
            version: 3,
            enqueued_at: 11,
            visible_at: 12,
            lease_token: 0,
            lease_deadline: 0,
            ticket: 0,
            line: crate::types::NO_LINE,
            payload: payload.into(),
            meta,
        }
    }

    #[test]
    fn an_enqueue_naming_an_interned_topic_by_index_is_written_with_its_name() {
        let names = ["orders", "emails"];
        let lookup = |t: u32| names.get(t as usize).copied();
        let by_index = vec![
            Op::Enqueue { topic: TopicRef::Id(1), msg: msg(7, b"a".to_vec(), None), supersedes: None },
            Op::Enqueue { topic: TopicRef::Id(0), msg: msg(8, b"b".to_vec(), None), supersedes: Some(3) },
        ];
        let mut buf = Vec::new();
        encode_txn_named(&by_index, &lookup, &mut buf);
        let by_name = vec![
            Op::Enqueue { topic: "emails".into(), msg: msg(7, b"a".to_vec(), None), supersedes: None },
            Op::Enqueue { topic: "orders".into(), msg: msg(8, b"b".to_vec(), None), supersedes: Some(3) },
        ];
        let mut named = Vec::new();
        encode_txn(&by_name, &mut named);
        assert_eq!(buf, named, "the same bytes as the names would give");
        assert_eq!(decode_txn(&buf).unwrap(), by_name);
    }

    #[test]
    fn a_plain_batch_is_written_as_the_enqueues_it_stands_for() {
        let names = ["orders", "emails"];
        let lookup = |t: u32| names.get(t as usize).copied();
        let plain = |id: u64, payload: &[u8]| Message {
            attempt: 0,
            version: 1,
            enqueued_at: 11,
            visible_at: 0,
            ..msg(id, payload.to_vec(), None)
        };
        let batch = vec![
            Op::Ack { ids: vec![3, 4] },
            Op::EnqueuePlain {
                topic: TopicRef::Id(1),
                enqueued_at: 11,
                msgs: vec![(7, b"a".as_slice().into()), (9, Payload::from(&[][..])), (8, vec![0xFF; 300].into())],
            },
            Op::Drop { id: 5 },
        ];
        let mut buf = Vec::new();
        encode_txn_named(&batch, &lookup, &mut buf);
        let each = vec![
            Op::Ack { ids: vec![3, 4] },
            Op::Enqueue { topic: "emails".into(), msg: plain(7, b"a"), supersedes: None },
            Op::Enqueue { topic: "emails".into(), msg: plain(9, b""), supersedes: None },
            Op::Enqueue { topic: "emails".into(), msg: plain(8, &[0xFF; 300]), supersedes: None },
            Op::Drop { id: 5 },
        ];
        let mut one_by_one = Vec::new();
        encode_txn(&each, &mut one_by_one);
        assert_eq!(buf, one_by_one, "the same bytes as one Enqueue per message");
        assert_eq!(decode_txn(&buf).unwrap(), each, "read back as Enqueues");
    }

    #[test]
    #[should_panic(expected = "no name for topic 5")]
    fn an_index_without_a_name_is_an_internal_error_not_a_wrong_record() {
        let op = Op::Enqueue { topic: TopicRef::Id(5), msg: msg(1, Vec::new(), None), supersedes: None };
        encode_txn(&[op], &mut Vec::new());
    }

    fn arb_meta() -> impl Strategy<Value = Option<Arc<Meta>>> {
        proptest::option::of(
            (
                proptest::option::of(".{0,8}"),
                proptest::collection::vec((".{0,4}", ".{0,4}"), 0..3),
                proptest::option::of("[a-z]{0,6}"),
                proptest::option::of("[a-z]{0,6}"),
                proptest::option::of(any::<u64>()),
                (
                    0..=crate::types::MAX_PRIORITY,
                    proptest::option::of("[a-z]{0,6}"),
                    proptest::option::of(any::<u64>()),
                ),
            )
                .prop_map(|(k, h, c, ca, f, (priority, ordering_key, dedup_window))| {
                    Arc::new(Meta {
                        dedup_key: k,
                        headers: h,
                        correlation_id: c,
                        causation_id: ca,
                        first_failed_at: f,
                        priority,
                        ordering_key,
                        dedup_window,
                    })
                }),
        )
    }

    /// Ids made of a few arithmetic runs (steps that wrap included), with
    /// single ids between them: written as runs or plain, whichever is smaller.
    fn arb_runs() -> impl Strategy<Value = Vec<u64>> {
        let run = (any::<u64>(), prop_oneof![Just((1u64 << 24) + 1), Just((1u64 << 24) - 1), any::<u64>()], 1..40usize);
        proptest::collection::vec(run, 1..4).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(first, step, n)| (0..n as u64).map(move |i| first.wrapping_add(step.wrapping_mul(i))))
                .collect()
        })
    }

    fn body_of(op: &Op) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_txn(std::slice::from_ref(op), &mut buf);
        buf
    }

    #[test]
    fn checkout_and_ack_ids_in_order_are_written_as_one_run() {
        // Fresh slots, then slots recycled from the last ack (last freed first).
        let fresh: Vec<u64> = (0..256u64).map(|i| ((10 + i) << 24) | (5 + i)).collect();
        let recycled: Vec<u64> = (0..256u64).map(|i| ((300 + i) << 24) | (260 - i)).collect();
        for ids in [fresh, recycled] {
            for (op, tag) in [(Op::Checkout { ids: ids.clone() }, tag::CHECKOUT_RUNS), (Op::Ack { ids }, tag::ACK_RUNS)]
            {
                let buf = body_of(&op);
                assert_eq!((buf[4], buf.len()), (tag, 4 + 1 + 4 + RUN_BYTES), "one run, not 2,052 bytes");
                assert_eq!(decode_txn(&buf).unwrap(), vec![op]);
            }
        }
    }

    #[test]
    fn ids_are_written_as_runs_only_when_that_is_smaller() {
        let ten: Vec<u64> = (0..10).map(|i| 100 + 3 * i).collect();
        let cases = [
            (vec![], false),
            (vec![7], false),
            (vec![7, 9], false),
            (vec![7, 9, 11], true),
            (vec![1, 5, 2, 8, 3], false),
            // A run of ten, then three ids (a pair and one): 3 runs, 60 bytes against 104.
            ([&ten[..], &[1, 50, 7]].concat(), true),
            // A run of three, two pairs and one: 4 runs, 80 bytes against 64.
            (vec![2, 4, 6, 1, 50, 3, 99, 4], false),
        ];
        for (ids, as_runs) in cases {
            let op = Op::Ack { ids: ids.clone() };
            let buf = body_of(&op);
            let want = if as_runs { tag::ACK_RUNS } else { tag::ACK };
            assert_eq!(buf[4], want, "{ids:?}");
            if !as_runs {
                assert_eq!(buf.len(), 4 + 1 + 4 + 8 * ids.len(), "{ids:?}: the plain form, as before");
            }
            assert_eq!(decode_txn(&buf).unwrap(), vec![op], "{ids:?}");
        }
    }

    #[test]
    fn runs_refuse_a_run_of_no_ids_and_more_ids_than_a_queue_has_slots() {
        let op = |b: &mut Vec<u8>, tag: u8, runs: &[(u64, u64, u32)]| {
            b.push(tag);
            b.extend((runs.len() as u32).to_le_bytes());
            for (first, step, len) in runs {
                b.extend(first.to_le_bytes());
                b.extend(step.to_le_bytes());
                b.extend(len.to_le_bytes());
            }
        };
        let body = |tag: u8, runs: &[(u64, u64, u32)]| {
            let mut b = 1u32.to_le_bytes().to_vec();
            op(&mut b, tag, runs);
            b
        };
        let err = decode_txn(&body(tag::ACK_RUNS, &[(5, 1, 2), (1, 1, 0)])).unwrap_err();
        assert!(err.contains("a run of 0 ids"), "{err}");
        // Refused before anything is allocated for them.
        let err = decode_txn(&body(tag::CHECKOUT_RUNS, &[(1, 1, 1 << 24), (1, 1, 1)])).unwrap_err();
        assert!(err.contains("runs of more than 16777216 ids"), "{err}");
        let err = decode_txn(&body(tag::CHECKOUT_RUNS, &[(1, 1, u32::MAX)])).unwrap_err();
        assert!(err.contains("runs of more than"), "{err}");
        // The bound holds for the record, not per operation: two operations
        // of 2^23 + 1 ids each are refused at the second.
        let mut two = 2u32.to_le_bytes().to_vec();
        op(&mut two, tag::CHECKOUT_RUNS, &[(1, 1, (1 << 23) + 1)]);
        op(&mut two, tag::ACK_RUNS, &[(1, 1, (1 << 23) + 1)]);
        let err = decode_txn(&two).unwrap_err();
        assert!(err.contains("ids in one record"), "{err}");
        // A step wraps, as the encoder's subtraction did.
        let ops = decode_txn(&body(tag::CHECKOUT_RUNS, &[(u64::MAX, 2, 2), (9, 0, 1)])).unwrap();
        assert_eq!(ops, vec![Op::Checkout { ids: vec![u64::MAX, 1, 9] }]);
        // The count of runs is checked against the bytes left.
        let mut short = body(tag::ACK_RUNS, &[(5, 1, 2)]);
        short[5..9].copy_from_slice(&2u32.to_le_bytes());
        assert!(decode_txn(&short).unwrap_err().contains("larger than"));
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64), arb_meta(), any::<Option<u64>>()).prop_map(
                |(id, p, m, s)| Op::Enqueue {
                    topic: "t".into(),
                    msg: msg(id, p, m),
                    supersedes: s.filter(|v| *v != 0)
                }
            ),
            (any::<u64>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..32), arb_meta())
                .prop_map(|(id, version, p, meta)| Op::Replace { id, version, payload: p.into(), meta }),
            proptest::collection::vec(any::<u64>(), 0..5).prop_map(|ids| Op::Checkout { ids }),
            proptest::collection::vec(any::<u64>(), 0..5).prop_map(|ids| Op::Ack { ids }),
            arb_runs().prop_map(|ids| Op::Checkout { ids }),
            arb_runs().prop_map(|ids| Op::Ack { ids }),
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(id, visible_at, failed_at)| { Op::Requeue { id, visible_at, failed_at } }),
            (any::<u64>(), ".{0,10}", proptest::option::of(".{0,10}"), any::<u64>()).prop_map(|(id, reason, e, at)| {
                Op::DeadLetter { id, reason, failure: Failure { error_message: e, ..Default::default() }, at }
            }),
            any::<u64>().prop_map(|id| Op::Drop { id }),
            proptest::collection::vec(any::<u64>(), 0..5).prop_map(|ids| Op::DlqRemove { ids }),
            proptest::collection::vec(any::<u64>(), 0..5).prop_map(|ids| Op::Release { ids }),
            ("[a-z]{1,4}", ".{0,8}", any::<u64>(), any::<u64>()).prop_map(|(t, key, id, until)| Op::Remember {
                topic: t.as_str().into(),
                key,
                id,
                until
            }),
        ]
    }

    proptest! {
        #[test]
        fn txn_encoding_round_trips(ops in proptest::collection::vec(arb_op(), 0..6)) {
            let mut buf = Vec::new();
            encode_txn(&ops, &mut buf);
            prop_assert_eq!(decode_txn(&buf).unwrap(), ops);
        }

        #[test]
        fn txn_decoder_never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_txn(&data);
        }

        #[test]
        fn txn_decoder_rejects_every_truncation(ops in proptest::collection::vec(arb_op(), 1..4)) {
            let mut buf = Vec::new();
            encode_txn(&ops, &mut buf);
            for cut in 0..buf.len() {
                prop_assert!(decode_txn(&buf[..cut]).is_err());
            }
        }
    }
}

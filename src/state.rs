//! The queue's in-memory state and the one function that changes it:
//! `State::apply(op)`. The live path decides an operation, writes it to the
//! journal, then applies it; recovery applies the journal's operations in
//! LSN order with the same function. So a replayed state is the live state.
//!
//! Counts (`n_ready`, ...) are maintained here, next to the transitions, and
//! checked against a recount by `check_invariants` in tests.

use crate::dedup::{DedupIndex, Remembered};
use crate::dlq::DeadLetterRing;
use crate::payload::Payload;
use crate::record::{Op, TopicRef};
use crate::ring::{ReadyList, Slab};
use crate::timers::{DelayHeap, LeaseHeap};
use crate::types::{DeadLetter, Message, Micros, MsgState, NO_LINE, SLOT_BITS, slot_of};
use parking_lot::Condvar;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub(crate) struct Topic {
    pub name: Arc<str>,
    pub ready: ReadyList,
    pub n_ready: usize,
    pub n_in_flight: usize,
    pub n_delayed: usize,
    /// Checkout waiters on this topic sleep here (with the engine's lock).
    pub cv: Arc<Condvar>,
    pub waiters: usize,
    /// Bumped by `Engine::interrupt`: waiters that see it change return.
    pub interrupts: u64,
    /// A caller that polls (`engine::wake`) waits for this topic: the next
    /// message that becomes ready here signals it.
    pub async_armed: std::sync::atomic::AtomicBool,
    /// Ordering key → index of its line in `lines`. Each live message of
    /// the key names its line (`Message::line`), so taking a message out of
    /// its line costs no lookup by key.
    pub keys: HashMap<Arc<str>, u32>,
    /// The lines of the keys in `keys`; unused ones are listed in `free_lines`.
    pub lines: Vec<KeyLine>,
    pub free_lines: Vec<u32>,
}

/// The live messages of one ordering key, in id (publish) order. Only the
/// first may be on the ready list or in flight; the others that are ready
/// wait ("parked": counted in `n_ready`, not listed).
#[derive(Default)]
pub(crate) struct KeyLine {
    /// The key (shared with `Topic::keys`); `None` while the line is free.
    pub key: Option<Arc<str>>,
    /// Ids in increasing (publish) order; the first is the key's head.
    pub ids: VecDeque<u64>,
    /// The metadata of the last message of the key that had nothing else
    /// (`Meta::is_key_only`): the next such publish shares it rather than
    /// allocating its own.
    pub meta: Option<Arc<crate::types::Meta>>,
}

impl Topic {
    fn new(name: Arc<str>) -> Self {
        Topic {
            name,
            ready: ReadyList::default(),
            n_ready: 0,
            n_in_flight: 0,
            n_delayed: 0,
            cv: Arc::new(Condvar::new()),
            waiters: 0,
            interrupts: 0,
            async_armed: std::sync::atomic::AtomicBool::new(false),
            keys: HashMap::new(),
            lines: Vec::new(),
            free_lines: Vec::new(),
        }
    }
}

pub(crate) struct State {
    pub slab: Slab,
    pub topics: Vec<Topic>,
    pub topic_ids: HashMap<Arc<str>, u32>,
    last_topic: u32,
    pub dedup: DedupIndex,
    /// Dedup keys of acked messages published with a dedup window.
    pub remembered: Remembered,
    /// Live messages with a dedup key and a dedup window (when 0, an ack
    /// needs no look at its messages' metadata).
    pub n_windowed: usize,
    /// Topics where a message left the head of its ordering key and the
    /// next one became listed: `Shared::commit` wakes their consumers.
    pub unparked: Vec<u32>,
    pub dlq: DeadLetterRing,
    pub leases: LeaseHeap,
    pub delays: DelayHeap,
    /// The next id's sequence part; only grows.
    pub next_seq: u64,
    pub dlq_capacity: usize,
    pub dlq_evicted: u64,
    /// Message slots must be below this (see `manifest::Manifest::slot_bound`).
    pub slot_limit: usize,
    /// The snapshot the state was loaded from, while payloads point into it
    /// (see `payload::MappedFile` and [`State::sparse_mapped`]).
    pub mapped: Option<MappedSnapshot>,
}

/// A snapshot whose payloads the state points into, and how many did when
/// it was loaded.
pub(crate) struct MappedSnapshot {
    pub file: crate::payload::MappedFile,
    pub at_load: usize,
}

type Applied = Result<(), String>;

impl State {
    pub fn new(dlq_capacity: usize, slot_limit: usize) -> Self {
        State {
            slab: Slab::default(),
            topics: Vec::new(),
            topic_ids: HashMap::new(),
            last_topic: 0,
            dedup: DedupIndex::default(),
            remembered: Remembered::default(),
            n_windowed: 0,
            unparked: Vec::new(),
            dlq: DeadLetterRing::default(),
            leases: LeaseHeap::default(),
            delays: DelayHeap::default(),
            next_seq: 1,
            dlq_capacity,
            dlq_evicted: 0,
            slot_limit,
            mapped: None,
        }
    }

    /// Takes every message, dead letter and index out, leaving an empty
    /// state of the same limits (to be dropped outside the engine's lock).
    pub fn take(&mut self) -> State {
        let empty = State::new(self.dlq_capacity, self.slot_limit);
        std::mem::replace(self, empty)
    }

    /// The mapped snapshot, taken out of the state once no payload points
    /// into it any more (dropping it, outside the engine's lock, unmaps it).
    pub fn take_unused_mapped(&mut self) -> Option<crate::payload::MappedFile> {
        if self.mapped.as_ref()?.file.payloads() > 0 {
            return None;
        }
        self.mapped.take().map(|m| m.file)
    }

    /// After a newer snapshot replaced (and removed) the one the state was
    /// loaded from: when at most a quarter of the payloads that pointed
    /// into it still do, those payloads (with their message ids), to be
    /// copied into the heap outside the engine's lock and put back with
    /// [`State::swap_in_heap`], so that a few long-lived messages (dead
    /// letters, say) do not keep a removed file's disk space.
    pub fn sparse_mapped(&self) -> Option<Vec<(u64, Payload)>> {
        let m = self.mapped.as_ref()?;
        if m.file.payloads() * 4 > m.at_load {
            return None;
        }
        let messages = self.slab.iter().chain(self.dlq.iter().map(|d| &d.message));
        Some(messages.filter(|m| m.payload.is_mapped()).map(|m| (m.id, m.payload.clone())).collect())
    }

    /// Puts the heap copies made from [`State::sparse_mapped`] in place of
    /// the mapped payloads they copy, where a message still holds the same
    /// one; copies any mapped payload left (one that moved between the slab
    /// and the dead letters meanwhile) and lets the mapped snapshot go:
    /// returned, to be dropped outside the lock. Deliveries and snapshot
    /// images that still point into the file keep it mapped until they are
    /// dropped.
    pub fn swap_in_heap(&mut self, copies: Vec<(u64, Payload, Payload)>) -> Option<MappedSnapshot> {
        let mut left = HashMap::new();
        for (id, was, heap) in copies {
            match self.slab.get_mut(id) {
                Some(m) if m.payload.ptr_eq(&was) => m.payload = heap,
                _ => {
                    left.insert(id, (was, heap));
                }
            }
        }
        for d in self.dlq.iter_mut() {
            if let Some((was, heap)) = left.remove(&d.message.id)
                && d.message.payload.ptr_eq(&was)
            {
                d.message.payload = heap;
            }
        }
        let messages = self.slab.iter_mut().chain(self.dlq.iter_mut().map(|d| &mut d.message));
        for m in messages.filter(|m| m.payload.is_mapped()) {
            m.payload = m.payload.to_heap();
        }
        self.mapped.take()
    }

    /// The id of a new message in `slot`: the next sequence number, which
    /// only grows. Refused (never wrapped) once the sequence part is used up.
    pub fn new_id(&mut self, slot: u32) -> crate::error::Result<u64> {
        if self.next_seq >= (1u64 << crate::types::SEQ_BITS) {
            return Err(crate::error::Error::Invalid(format!(
                "this queue has used all {} message ids; move its messages to a new queue directory",
                1u64 << crate::types::SEQ_BITS
            )));
        }
        let id = (self.next_seq << SLOT_BITS) | slot as u64;
        self.next_seq += 1;
        Ok(id)
    }

    /// A slot and an id for a new message of a call that makes several:
    /// the slot is added to `taken`. When ids run out the slot, and every
    /// slot in `taken`, is given back (the call fails and changes nothing).
    pub fn alloc_message(&mut self, taken: &mut Vec<u32>) -> crate::error::Result<u64> {
        let slot = self.slab.alloc();
        match self.new_id(slot) {
            Ok(id) => {
                taken.push(slot);
                Ok(id)
            }
            Err(e) => {
                self.slab.unalloc(slot);
                for s in taken.drain(..) {
                    self.slab.unalloc(s);
                }
                Err(e)
            }
        }
    }

    pub fn topic_id(&self, name: &str) -> Option<u32> {
        self.topic_ids.get(name).copied()
    }

    pub fn intern(&mut self, name: &str) -> u32 {
        // Most operations hit the topic the previous one did.
        if let Some(t) = self.topics.get(self.last_topic as usize)
            && *t.name == *name
        {
            return self.last_topic;
        }
        let t = match self.topic_ids.get(name) {
            Some(t) => *t,
            None => {
                let t = self.topics.len() as u32;
                let name: Arc<str> = name.into();
                self.topics.push(Topic::new(name.clone()));
                self.topic_ids.insert(name, t);
                t
            }
        };
        self.last_topic = t;
        t
    }

    pub fn totals(&self) -> (usize, usize, usize) {
        self.topics.iter().fold((0, 0, 0), |(r, f, d), t| (r + t.n_ready, f + t.n_in_flight, d + t.n_delayed))
    }

    /// Puts a message (already in the slab, `state` set) on its list.
    fn place(&mut self, id: u64) {
        self.place_at(id, false);
    }

    /// The same; a ready message goes first with `front`.
    fn place_at(&mut self, id: u64, front: bool) {
        let m = self.slab.get_mut(id).expect("placed message exists");
        let t = &mut self.topics[m.topic as usize];
        match m.state {
            MsgState::Ready => {
                let parked = m.line != NO_LINE && t.lines[m.line as usize].ids.front() != Some(&id);
                if parked {
                    // Waits for the messages before it of its ordering key.
                } else if front {
                    t.ready.push_front(m);
                } else {
                    t.ready.push(m);
                }
                t.n_ready += 1;
            }
            MsgState::Delayed => {
                self.delays.push(m.visible_at, id);
                t.n_delayed += 1;
            }
            MsgState::InFlight => {
                t.n_in_flight += 1;
                if m.lease_token != 0 {
                    self.leases.set(id, m.lease_deadline);
                }
            }
        }
    }

    /// Takes a message off its list (its ready entry goes stale by itself).
    fn unplace(&mut self, id: u64) {
        let m = self.slab.get_mut(id).expect("unplaced message exists");
        let t = &mut self.topics[m.topic as usize];
        match m.state {
            MsgState::Ready => t.n_ready -= 1,
            MsgState::Delayed => t.n_delayed -= 1,
            MsgState::InFlight => {
                t.n_in_flight -= 1;
                m.lease_token = 0;
                m.lease_deadline = 0;
                self.leases.remove(id);
            }
        }
    }

    fn remove_message(&mut self, id: u64) -> Message {
        self.unplace(id);
        let m = self.slab.remove(id).expect("removed message exists");
        if let Some(k) = m.dedup_key() {
            self.dedup.remove_if(m.topic, k, m.id);
            if m.meta.as_ref().is_some_and(|x| x.dedup_window.is_some()) {
                self.n_windowed -= 1;
            }
        }
        if m.line != NO_LINE {
            self.key_remove(m.topic, m.line, m.ordering_key().expect("a message in a line has a key"), id);
        }
        m
    }

    /// Adds `id` to its ordering key's line, in id order. A message that
    /// goes before the current head (only when a snapshot lists messages
    /// out of id order) takes the head's place: the old head, if listed,
    /// is made stale on its ready list and waits.
    ///
    /// `hint` is the line that `line_of` gave when the publish was planned
    /// (`NO_LINE` when the key had none, or in recovery): used when it still
    /// holds the key, which saves hashing the key a second time.
    fn key_insert(&mut self, topic: u32, meta: Arc<crate::types::Meta>, id: u64, hint: u32) {
        let key = meta.ordering_key.as_deref().expect("a keyed message");
        let t = &mut self.topics[topic as usize];
        let hinted = t.lines.get(hint as usize).is_some_and(|l| l.key.as_deref() == Some(key));
        let ix = match if hinted { Some(&hint) } else { t.keys.get(key) } {
            Some(&ix) => ix,
            None => {
                let ix = t.free_lines.pop().unwrap_or_else(|| {
                    t.lines.push(KeyLine::default());
                    (t.lines.len() - 1) as u32
                });
                let key: Arc<str> = key.into();
                t.keys.insert(key.clone(), ix);
                t.lines[ix as usize].key = Some(key);
                ix
            }
        };
        self.slab.get_mut(id).expect("a keyed message is in the slab").line = ix;
        let line = &mut t.lines[ix as usize];
        if meta.is_key_only() && !line.meta.as_ref().is_some_and(|m| Arc::ptr_eq(m, &meta)) {
            line.meta = Some(meta.clone());
        }
        let q = &mut line.ids;
        if q.back().is_none_or(|b| *b < id) {
            q.push_back(id);
            return;
        }
        let at = q.partition_point(|x| *x < id);
        q.insert(at, id);
        if at == 0
            && let Some(&old) = q.get(1)
            && let Some(m) = self.slab.get_mut(old)
            && m.state == MsgState::Ready
        {
            m.ticket = m.ticket.wrapping_add(1);
        }
    }

    /// Takes `id` out of its ordering key's line; if it was the head, the
    /// next message becomes the head and, if ready, is listed.
    fn key_remove(&mut self, topic: u32, ix: u32, key: &str, id: u64) {
        let t = &mut self.topics[topic as usize];
        let line = &mut t.lines[ix as usize];
        let q = &mut line.ids;
        let was_head = q.front() == Some(&id);
        if was_head {
            q.pop_front();
        } else if let Some(i) = q.iter().position(|x| *x == id) {
            q.remove(i);
        }
        let next = q.front().copied();
        if q.is_empty() {
            line.meta = None;
            line.key = None;
            t.keys.remove(key);
            t.free_lines.push(ix);
        }
        if was_head
            && let Some(next) = next
            && let Some(m) = self.slab.get_mut(next)
            && m.state == MsgState::Ready
        {
            self.topics[topic as usize].ready.push(m);
            if !self.unparked.contains(&topic) {
                self.unparked.push(topic);
            }
        }
    }

    /// For each message that `ops` ack and that was published with a dedup
    /// key and a dedup window, appends the `Remember` of its key (until
    /// `now` plus the window). Called before the record is written, so the
    /// acks and the keys they leave behind are one record.
    pub fn remember_acked(&mut self, ops: &mut Vec<Op>, now: Micros) {
        let mut add = Vec::new();
        for op in ops.iter() {
            let Op::Ack { ids } = op else { continue };
            for id in ids {
                let Some(m) = self.slab.get(*id) else { continue };
                let Some(meta) = m.meta.as_deref() else { continue };
                if let (Some(key), Some(w)) = (meta.dedup_key.as_deref(), meta.dedup_window) {
                    let topic = self.topics[m.topic as usize].name.clone();
                    add.push(Op::Remember { topic, key: key.to_owned(), id: *id, until: now.saturating_add(w) });
                }
            }
        }
        if !add.is_empty() {
            self.remembered.prune(now);
            ops.extend(add);
        }
    }

    /// The line of `key` in topic `topic` (`NO_LINE` if the key has no live
    /// message) and, when `share` (the publish carries only `ordering_key`
    /// and `priority`), the line's shared metadata if its priority matches
    /// (see `KeyLine::meta`).
    pub fn line_of(&self, topic: u32, key: &str, priority: u8, share: bool) -> (u32, Option<Arc<crate::types::Meta>>) {
        let t = &self.topics[topic as usize];
        let Some(&ix) = t.keys.get(key) else { return (NO_LINE, None) };
        let meta = if share { t.lines[ix as usize].meta.clone().filter(|m| m.priority == priority) } else { None };
        (ix, meta)
    }

    /// Whether `m` is ready but waits behind the head of its ordering key
    /// (so it is not on its topic's ready list).
    pub fn is_parked(&self, m: &Message) -> bool {
        m.state == MsgState::Ready
            && m.line != NO_LINE
            && self.topics[m.topic as usize].lines[m.line as usize].ids.front() != Some(&m.id)
    }

    /// Ready messages waiting behind the head of their ordering key.
    #[cfg(test)]
    pub fn parked(&self, topic: u32) -> usize {
        self.slab.iter().filter(|m| m.topic == topic && self.is_parked(m)).count()
    }

    fn require(&self, id: u64, states: &[MsgState], what: &str) -> Applied {
        match self.slab.get(id) {
            Some(m) if states.contains(&m.state) => Ok(()),
            Some(m) => Err(format!("{what}: message {id:016x} is {:?}", m.state)),
            None => Err(format!("{what}: no message {id:016x}")),
        }
    }

    /// The index of an enqueue's topic (interned if it comes by name).
    fn topic_of(&mut self, topic: TopicRef) -> std::result::Result<u32, String> {
        match topic {
            TopicRef::Name(name) => Ok(self.intern(&name)),
            TopicRef::Id(t) if (t as usize) < self.topics.len() => Ok(t),
            TopicRef::Id(t) => Err(format!("enqueue names topic {t} of {}", self.topics.len())),
        }
    }

    /// A new message of topic `tid` (`Op::Enqueue`).
    fn enqueue(&mut self, tid: u32, mut msg: Message, supersedes: Option<u64>) -> Applied {
        use MsgState::*;
        msg.topic = tid;
        if matches!(msg.state, InFlight) {
            return Err(format!("enqueue of {:016x} in flight", msg.id));
        }
        if slot_of(msg.id) as usize >= self.slot_limit {
            return Err(format!(
                "message {:016x} uses slot {}, but this queue never had more than {} slots",
                msg.id,
                slot_of(msg.id),
                self.slot_limit
            ));
        }
        if let Some(old) = supersedes {
            self.require(old, &[InFlight], "supersede")?;
            self.slab.get_mut(old).expect("checked").superseded = true;
        }
        let id = msg.id;
        if let Some(k) = msg.dedup_key()
            && !msg.superseded
        {
            self.dedup.set(tid, k, id);
        }
        let windowed = msg.dedup_key().is_some() && msg.meta.as_ref().is_some_and(|x| x.dedup_window.is_some());
        let key: Option<Arc<crate::types::Meta>> = msg.ordering_key().and(msg.meta.clone());
        self.next_seq = self.next_seq.max((id >> SLOT_BITS) + 1);
        msg.lease_token = 0;
        let hint = std::mem::replace(&mut msg.line, NO_LINE); // set by `key_insert`
        if !self.slab.insert(msg) {
            return Err(format!("enqueue of {id:016x}: slot is taken"));
        }
        self.n_windowed += windowed as usize;
        if let Some(meta) = key {
            self.key_insert(tid, meta, id, hint);
        }
        self.place(id);
        Ok(())
    }

    /// Applies one operation. Errors mean the journal does not fit the state
    /// (corruption or a bug); the live path never produces one.
    pub fn apply(&mut self, op: Op) -> Applied {
        use MsgState::*;
        match op {
            Op::Enqueue { topic, msg, supersedes } => {
                let tid = self.topic_of(topic)?;
                self.enqueue(tid, msg, supersedes)?;
            }
            Op::EnqueuePlain { topic, enqueued_at, msgs } => {
                let tid = self.topic_of(topic)?;
                for (id, payload) in msgs {
                    let msg = Message {
                        id,
                        topic: tid,
                        state: Ready,
                        superseded: false,
                        attempt: 0,
                        version: 1,
                        enqueued_at,
                        visible_at: 0,
                        lease_token: 0,
                        lease_deadline: 0,
                        ticket: 0,
                        line: NO_LINE,
                        payload,
                        meta: None,
                    };
                    self.enqueue(tid, msg, None)?;
                }
            }
            Op::Replace { id, version, payload, meta } => {
                self.require(id, &[Ready, Delayed], "replace")?;
                let m = self.slab.get_mut(id).expect("checked");
                let windowed = |m: &Option<Arc<crate::types::Meta>>| {
                    m.as_ref().is_some_and(|x| x.dedup_key.is_some() && x.dedup_window.is_some()) as usize
                };
                let before = windowed(&m.meta);
                let first_failed_at = m.meta.as_ref().and_then(|x| x.first_failed_at);
                // A replace keeps the message's place: its priority and
                // ordering key stay what they were.
                let (priority, ordering_key) = (m.priority(), m.ordering_key().map(str::to_owned));
                m.version = version;
                m.payload = payload;
                m.meta = meta;
                if first_failed_at.is_some() {
                    m.meta_mut().first_failed_at = first_failed_at;
                }
                if m.priority() != priority || m.ordering_key() != ordering_key.as_deref() {
                    let x = m.meta_mut();
                    x.priority = priority;
                    x.ordering_key = ordering_key;
                }
                self.n_windowed = self.n_windowed + windowed(&m.meta) - before;
            }
            Op::Checkout { ids } => {
                for id in ids.iter().take(8) {
                    self.slab.prefetch_slot(*id);
                }
                for (i, &id) in ids.iter().enumerate() {
                    if let Some(&ahead) = ids.get(i + 8) {
                        self.slab.prefetch_slot(ahead);
                    }
                    self.require(id, &[Ready, Delayed], "checkout")?;
                    self.unplace(id);
                    let m = self.slab.get_mut(id).expect("checked");
                    m.state = InFlight;
                    m.attempt = m.attempt.saturating_add(1);
                    self.place(id);
                }
            }
            Op::Ack { ids } => {
                for id in ids {
                    self.require(id, &[InFlight], "ack")?;
                    self.remove_message(id);
                }
            }
            Op::Requeue { id, visible_at, failed_at } => {
                self.require(id, &[InFlight], "requeue")?;
                self.unplace(id);
                let m = self.slab.get_mut(id).expect("checked");
                m.meta_mut().first_failed_at.get_or_insert(failed_at);
                m.visible_at = visible_at;
                m.state = if visible_at == 0 { Ready } else { Delayed };
                self.place(id);
            }
            Op::DeadLetter { id, reason, failure, at } => {
                self.require(id, &[Ready, Delayed, InFlight], "dead-letter")?;
                let mut message = self.remove_message(id);
                message.meta_mut().first_failed_at.get_or_insert(at);
                let topic = self.topics[message.topic as usize].name.to_string();
                let dl = DeadLetter { message, topic, reason, failure, dead_lettered_at: at };
                self.dlq_evicted += self.dlq.push(dl, self.dlq_capacity) as u64;
            }
            Op::Drop { id } => {
                self.require(id, &[Ready, Delayed, InFlight], "drop")?;
                self.remove_message(id);
            }
            Op::DlqRemove { ids } => {
                for id in ids {
                    self.dlq.remove(id);
                }
            }
            Op::Remember { topic, key, id, until } => {
                let tid = self.intern(&topic);
                self.remembered.set(tid, &key, id, until);
            }
            Op::Release { ids } => {
                for id in ids.into_iter().rev() {
                    self.require(id, &[InFlight], "release")?;
                    if self.slab.get(id).expect("checked").superseded {
                        self.remove_message(id);
                        continue;
                    }
                    self.unplace(id);
                    let m = self.slab.get_mut(id).expect("checked");
                    m.state = Ready;
                    m.attempt = m.attempt.saturating_sub(1);
                    self.place_at(id, true);
                }
            }
        }
        Ok(())
    }

    /// Evicts dead letters over `dlq_capacity` (counted as evictions).
    pub fn trim_dlq(&mut self) {
        self.dlq_evicted += self.dlq.trim(self.dlq_capacity) as u64;
    }

    /// Moves delayed messages that are due to their ready lists; returns the
    /// topics that got messages.
    pub fn release_due(&mut self, now: Micros) -> Vec<u32> {
        let mut woke = Vec::new();
        while let Some((due, id)) = self.delays.pop_due(now) {
            let Some(m) = self.slab.get_mut(id) else {
                continue;
            };
            if m.state != MsgState::Delayed || m.visible_at != due {
                continue;
            }
            let t = m.topic;
            self.unplace(id);
            let m = self.slab.get_mut(id).expect("exists");
            m.state = MsgState::Ready;
            self.place(id);
            if !woke.contains(&t) {
                woke.push(t);
            }
        }
        woke
    }

    /// Grants a lease on an in-flight message (live path, after `apply`).
    pub fn lease(&mut self, id: u64, token: u64, deadline: Micros) {
        let m = self.slab.get_mut(id).expect("leased message exists");
        m.lease_token = token;
        m.lease_deadline = deadline;
        self.leases.set(id, deadline);
    }

    #[cfg(test)]
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// Recounts everything; used by tests to check the maintained counts.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut counts = vec![(0usize, 0usize, 0usize); self.topics.len()];
        for m in self.slab.iter() {
            let c = &mut counts[m.topic as usize];
            match m.state {
                MsgState::Ready => c.0 += 1,
                MsgState::InFlight => c.1 += 1,
                MsgState::Delayed => c.2 += 1,
            }
        }
        for (t, c) in self.topics.iter().zip(&counts) {
            assert_eq!((t.n_ready, t.n_in_flight, t.n_delayed), *c, "counts of topic {}", t.name);
            let tid = self.topic_ids[&t.name];
            assert_eq!(t.ready.live_ids(&self.slab).count(), c.0 - self.parked(tid), "ready list of {}", t.name);
            for (k, ix) in &t.keys {
                let q = &t.lines[*ix as usize].ids;
                assert!(!q.is_empty(), "empty line of key {k}");
                assert_eq!(t.lines[*ix as usize].key.as_deref(), Some(&**k), "a line names its key");
                assert!(q.iter().zip(q.iter().skip(1)).all(|(a, b)| a < b), "line of key {k} in id order");
                for id in q {
                    let m = self.slab.get(*id).expect("a keyed id is live");
                    assert_eq!(m.ordering_key(), Some(&**k));
                    assert_eq!(m.line, *ix, "a message names its line");
                }
                for id in q.iter().skip(1) {
                    assert_ne!(self.slab.get(*id).unwrap().state, MsgState::InFlight, "only the head of {k} in flight");
                }
            }
            for ix in &t.free_lines {
                let l = &t.lines[*ix as usize];
                assert!(l.key.is_none() && l.ids.is_empty() && l.meta.is_none(), "free line {ix} is empty");
            }
            let keyed = self.slab.iter().filter(|m| m.topic == tid && m.ordering_key().is_some()).count();
            assert_eq!(
                keyed,
                t.keys.values().map(|ix| t.lines[*ix as usize].ids.len()).sum::<usize>(),
                "every keyed message in a line"
            );
        }
        let windowed =
            self.slab.iter().filter(|m| m.dedup_key().is_some() && m.meta.as_ref().unwrap().dedup_window.is_some());
        assert_eq!(windowed.count(), self.n_windowed, "windowed count");
        assert_eq!(self.slab.live(), self.slab.iter().count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_refused_not_wrapped_when_the_sequence_part_runs_out() {
        let mut st = State::new(10, 1 << SLOT_BITS);
        let last = (1u64 << crate::types::SEQ_BITS) - 1;
        st.set_next_seq(last);
        let id = st.new_id(5).unwrap();
        assert_eq!((id >> SLOT_BITS, id & ((1 << SLOT_BITS) - 1)), (last, 5));
        let err = st.new_id(6).unwrap_err();
        assert!(err.to_string().contains("used all"), "{err}");
        assert_eq!(st.next_seq, last + 1, "a refused id changes nothing");
    }

    #[test]
    fn a_refused_message_id_gives_back_every_slot_its_call_took() {
        let mut st = State::new(10, 1 << SLOT_BITS);
        st.set_next_seq((1u64 << crate::types::SEQ_BITS) - 2);
        let mut taken = Vec::new();
        st.alloc_message(&mut taken).unwrap();
        st.alloc_message(&mut taken).unwrap();
        assert_eq!(taken.len(), 2);
        let err = st.alloc_message(&mut taken).unwrap_err();
        assert!(err.to_string().contains("used all"), "{err}");
        assert!(taken.is_empty());
        assert_eq!((st.slab.slot_count(), st.slab.free_slots()), (3, 3), "no slot leaked");
    }
}

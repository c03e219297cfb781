//! The queue's in-memory state and the one function that changes it:
//! `State::apply(op)`. The live path decides an operation, writes it to the
//! journal, then applies it; recovery applies the journal's operations in
//! LSN order with the same function. So a replayed state is the live state.
//!
//! Counts (`n_ready`, ...) are maintained here, next to the transitions, and
//! checked against a recount by `check_invariants` in tests.

use crate::dedup::DedupIndex;
use crate::dlq::DeadLetterRing;
use crate::record::Op;
use crate::ring::{ReadyList, Slab};
use crate::timers::{DelayHeap, LeaseHeap};
use crate::types::{DeadLetter, Message, Micros, MsgState, SLOT_BITS, slot_of};
use parking_lot::Condvar;
use std::collections::HashMap;
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
        }
    }
}

pub(crate) struct State {
    pub slab: Slab,
    pub topics: Vec<Topic>,
    pub topic_ids: HashMap<Arc<str>, u32>,
    last_topic: u32,
    pub dedup: DedupIndex,
    pub dlq: DeadLetterRing,
    pub leases: LeaseHeap,
    pub delays: DelayHeap,
    /// The next id's sequence part; only grows.
    pub next_seq: u64,
    pub dlq_capacity: usize,
    pub dlq_evicted: u64,
    /// Message slots must be below this (see `manifest::Manifest::slot_bound`).
    pub slot_limit: usize,
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
            dlq: DeadLetterRing::default(),
            leases: LeaseHeap::default(),
            delays: DelayHeap::default(),
            next_seq: 1,
            dlq_capacity,
            dlq_evicted: 0,
            slot_limit,
        }
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

    /// The shared name of a topic (creating it), for operations to carry.
    pub fn topic_name(&mut self, name: &str) -> Arc<str> {
        let t = self.intern(name);
        self.topics[t as usize].name.clone()
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
                if front {
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
        }
        m
    }

    fn require(&self, id: u64, states: &[MsgState], what: &str) -> Applied {
        match self.slab.get(id) {
            Some(m) if states.contains(&m.state) => Ok(()),
            Some(m) => Err(format!("{what}: message {id:016x} is {:?}", m.state)),
            None => Err(format!("{what}: no message {id:016x}")),
        }
    }

    /// Applies one operation. Errors mean the journal does not fit the state
    /// (corruption or a bug); the live path never produces one.
    pub fn apply(&mut self, op: Op) -> Applied {
        use MsgState::*;
        match op {
            Op::Enqueue { topic, mut msg, supersedes } => {
                let tid = self.intern(&topic);
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
                self.next_seq = self.next_seq.max((id >> SLOT_BITS) + 1);
                msg.lease_token = 0;
                if !self.slab.insert(msg) {
                    return Err(format!("enqueue of {id:016x}: slot is taken"));
                }
                self.place(id);
            }
            Op::Replace { id, version, payload, meta } => {
                self.require(id, &[Ready, Delayed], "replace")?;
                let m = self.slab.get_mut(id).expect("checked");
                let first_failed_at = m.meta.as_ref().and_then(|x| x.first_failed_at);
                m.version = version;
                m.payload = payload;
                m.meta = meta;
                if first_failed_at.is_some() {
                    m.meta_mut().first_failed_at = first_failed_at;
                }
            }
            Op::Checkout { ids } => {
                for id in ids {
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
            assert_eq!(t.ready.live_ids(&self.slab).count(), c.0, "ready list of {}", t.name);
        }
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

//! The ring of slots and the per-topic ready lists.
//!
//! A message id is `seq << SLOT_BITS | slot`: the slot is where the message
//! lives, the sequence never repeats. So a lookup by id is an index plus a
//! compare, ids sort in publish order, and a stale id (its slot reused) never
//! matches.
//!
//! Slot states: free → (publish) ready | delayed → (checkout) in_flight →
//! (ack | drop | dead-letter) free, or → (nack | lease expiry) ready | delayed.
//! Only the engine, holding its lock, moves a slot between states.
//!
//! A ready list holds `(id, ticket)` entries in FIFO order. An entry is live
//! only while its message is still ready with the same ticket; checkout does
//! not search the list to remove an entry, it lets it go stale and skips it
//! when it reaches the front. That keeps every transition O(1) and lets
//! replay apply a checkout of a message that is not at the front.

use crate::types::{Message, MsgState, SLOT_BITS, slot_of};
use std::collections::VecDeque;

/// Storage for messages, indexed by slot.
#[derive(Default)]
pub(crate) struct Slab {
    slots: Vec<Option<Message>>,
    free: Vec<u32>,
    live: usize,
}

impl Slab {
    pub fn live(&self) -> usize {
        self.live
    }

    /// How many slots exist (occupied or free).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// A free slot for a new message (not yet occupied: `insert` does that).
    pub fn alloc(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let s = self.slots.len() as u32;
        debug_assert!(s < (1 << SLOT_BITS));
        self.slots.push(None);
        s
    }

    /// Gives back a slot from `alloc` that was not used.
    pub fn unalloc(&mut self, slot: u32) {
        debug_assert!(self.slots[slot as usize].is_none());
        self.free.push(slot);
    }

    /// Takes `slot` off the free list: one record freed it (an ack) and
    /// filled it again (a publish chained to that ack) without `alloc`.
    pub fn claim(&mut self, slot: u32) {
        if let Some(i) = self.free.iter().rposition(|s| *s == slot) {
            self.free.swap_remove(i);
        }
    }

    /// Puts `msg` in its slot (the slot named by its id). Returns false if taken.
    pub fn insert(&mut self, msg: Message) -> bool {
        let s = slot_of(msg.id) as usize;
        if s >= self.slots.len() {
            self.slots.resize_with(s + 1, || None);
        }
        if self.slots[s].is_some() {
            return false;
        }
        self.slots[s] = Some(msg);
        self.live += 1;
        true
    }

    pub fn get(&self, id: u64) -> Option<&Message> {
        self.slots.get(slot_of(id) as usize)?.as_ref().filter(|m| m.id == id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Message> {
        self.slots.get_mut(slot_of(id) as usize)?.as_mut().filter(|m| m.id == id)
    }

    /// Removes and returns the message; its slot becomes free.
    pub fn remove(&mut self, id: u64) -> Option<Message> {
        let s = slot_of(id) as usize;
        let cell = self.slots.get_mut(s)?;
        if cell.as_ref().is_some_and(|m| m.id == id) {
            self.live -= 1;
            self.free.push(s as u32);
            cell.take()
        } else {
            None
        }
    }

    /// After replay placed messages by id: every empty slot becomes free.
    pub fn rebuild_free_list(&mut self) {
        self.free = (0..self.slots.len() as u32).rev().filter(|s| self.slots[*s as usize].is_none()).collect();
    }

    pub fn iter(&self) -> impl Iterator<Item = &Message> {
        self.slots.iter().filter_map(|m| m.as_ref())
    }

    /// Slots `alloc` can hand out without growing.
    #[cfg(test)]
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    #[cfg(test)]
    pub fn ids(&self) -> Vec<u64> {
        self.iter().map(|m| m.id).collect()
    }
}

/// One topic's FIFO of ready messages.
#[derive(Default)]
pub(crate) struct ReadyList {
    entries: VecDeque<(u64, u32)>,
}

impl ReadyList {
    pub fn push(&mut self, msg: &mut Message) {
        msg.ticket = msg.ticket.wrapping_add(1);
        self.entries.push_back((msg.id, msg.ticket));
    }

    /// Puts `msg` first (a message given back unstarted takes its turn again).
    pub fn push_front(&mut self, msg: &mut Message) {
        msg.ticket = msg.ticket.wrapping_add(1);
        self.entries.push_front((msg.id, msg.ticket));
    }

    fn is_live(slab: &Slab, (id, ticket): (u64, u32)) -> bool {
        slab.get(id).is_some_and(|m| m.state == MsgState::Ready && m.ticket == ticket)
    }

    /// Up to `max` ready ids from the front, in order, without removing them.
    /// Stale entries met on the way are dropped.
    pub fn peek_front(&mut self, slab: &Slab, max: usize, out: &mut Vec<u64>) {
        while let Some(&e) = self.entries.front() {
            if Self::is_live(slab, e) {
                break;
            }
            self.entries.pop_front();
        }
        for &e in self.entries.iter() {
            if out.len() >= max {
                break;
            }
            if Self::is_live(slab, e) {
                out.push(e.0);
            }
        }
    }

    /// Drops stale entries at the front (after a checkout made them stale).
    pub fn trim_front(&mut self, slab: &Slab) {
        while let Some(&e) = self.entries.front() {
            if Self::is_live(slab, e) {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// Ready ids in order (for snapshots and inspection).
    pub fn live_ids<'a>(&'a self, slab: &'a Slab) -> impl Iterator<Item = u64> + 'a {
        self.entries.iter().filter(move |e| Self::is_live(slab, **e)).map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> Message {
        Message {
            id,
            topic: 0,
            state: MsgState::Ready,
            superseded: false,
            attempt: 0,
            version: 1,
            enqueued_at: 0,
            visible_at: 0,
            lease_token: 0,
            lease_deadline: 0,
            ticket: 0,
            payload: crate::payload::Payload::default(),
            meta: None,
        }
    }

    #[test]
    fn slot_state_machine_reuses_freed_slots_with_new_ids() {
        let mut slab = Slab::default();
        let s = slab.alloc();
        let id1 = (1u64 << SLOT_BITS) | s as u64;
        assert!(slab.insert(msg(id1)));
        assert!(!slab.insert(msg(id1)), "an occupied slot is never overwritten");
        assert!(slab.remove(id1).is_some());
        let s2 = slab.alloc();
        assert_eq!(s, s2, "freed slot is reused");
        let id2 = (2u64 << SLOT_BITS) | s2 as u64;
        assert!(slab.insert(msg(id2)));
        assert!(slab.get(id1).is_none(), "a stale id never matches the new occupant");
        assert!(slab.get(id2).is_some());
        assert_eq!(slab.live(), 1);
    }

    #[test]
    fn ready_list_skips_stale_entries_and_keeps_fifo() {
        let mut slab = Slab::default();
        let mut list = ReadyList::default();
        for seq in 1..=4u64 {
            let s = slab.alloc();
            let mut m = msg((seq << SLOT_BITS) | s as u64);
            list.push(&mut m);
            slab.insert(m);
        }
        let ids = slab.ids();
        // The second message goes in flight: its entry goes stale.
        slab.get_mut(ids[1]).unwrap().state = MsgState::InFlight;
        let mut out = Vec::new();
        list.peek_front(&slab, 10, &mut out);
        assert_eq!(out, vec![ids[0], ids[2], ids[3]]);
        // Back to ready: it re-enters at the back with a new ticket; the old
        // entry stays stale.
        let m = slab.get_mut(ids[1]).unwrap();
        m.state = MsgState::Ready;
        list.push(m);
        out.clear();
        list.peek_front(&slab, 10, &mut out);
        assert_eq!(out, vec![ids[0], ids[2], ids[3], ids[1]]);
    }
}

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

/// Hints the CPU to bring the cache line at `p` closer (no effect on
/// correctness; a no-op off x86-64). A checkout in priority or key order
/// visits slots out of publish order, where the hardware's own prefetching
/// does not help.
#[inline]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; SSE is part of
    // the x86-64 baseline.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many entries ahead of the one being read a scan prefetches.
pub(crate) const PREFETCH_AHEAD: usize = 8;

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

    /// Makes room for `slots` slots up front (the queue's capacity), so
    /// the slots never move as the queue fills. Growing by doubling would
    /// copy every message into a buffer twice the size while both exist
    /// (at a million messages, 42 MB into 84 MB), and the kernel zeroes the
    /// fresh pages of each new buffer. A page costs memory (RSS) only once
    /// a slot in it is used; under strict overcommit
    /// (`vm.overcommit_memory=2`) the whole reservation counts against the
    /// commit limit, and if it is refused the slab grows as before.
    pub fn reserve(&mut self, slots: usize) {
        let more = slots.saturating_sub(self.slots.len());
        if more > self.slots.capacity() - self.slots.len() {
            let _ = self.slots.try_reserve_exact(more);
        }
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

    /// Prefetches the slot of `id` (see [`prefetch`]).
    pub fn prefetch_slot(&self, id: u64) {
        if let Some(cell) = self.slots.get(slot_of(id) as usize) {
            prefetch((cell as *const Option<Message>).cast());
        }
    }

    /// Prefetches the payload of message `id`, if it is there.
    pub fn prefetch_payload(&self, id: u64) {
        if let Some(m) = self.get(id) {
            m.payload.prefetch();
        }
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

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Message> {
        self.slots.iter_mut().filter_map(|m| m.as_mut())
    }

    /// Slots the slab holds room for.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.slots.capacity()
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

/// One topic's ready messages: a FIFO per priority, taken highest first.
///
/// Priority 0 (every message published without one) has its own deque, so
/// the plain path costs what it did before priorities existed; priorities
/// 1..=9 get a deque each when first used, and `high` has bit `p` set while
/// lane `p` may hold entries. A checkout looks at no more than ten lanes,
/// so it stays O(1) in the number of ready messages.
#[derive(Default)]
pub(crate) struct ReadyList {
    entries: VecDeque<(u64, u32)>,
    lanes: Vec<VecDeque<(u64, u32)>>,
    high: u16,
}

impl ReadyList {
    /// Room for `n` more entries of priority 0 (recovery: without it,
    /// filling a list of a million entries leaves its smaller buffers of
    /// 8, 4, 2, ... MB behind).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    fn lane(&mut self, priority: u8) -> &mut VecDeque<(u64, u32)> {
        if priority == 0 {
            return &mut self.entries;
        }
        if self.lanes.is_empty() {
            self.lanes.resize_with(crate::types::MAX_PRIORITY as usize, VecDeque::new);
        }
        self.high |= 1 << priority;
        &mut self.lanes[priority as usize - 1]
    }

    pub fn push(&mut self, msg: &mut Message) {
        msg.ticket = msg.ticket.wrapping_add(1);
        let e = (msg.id, msg.ticket);
        self.lane(msg.priority()).push_back(e);
    }

    /// Puts `msg` first in its priority (a message given back unstarted
    /// takes its turn again).
    pub fn push_front(&mut self, msg: &mut Message) {
        msg.ticket = msg.ticket.wrapping_add(1);
        let e = (msg.id, msg.ticket);
        self.lane(msg.priority()).push_front(e);
    }

    fn is_live(slab: &Slab, (id, ticket): (u64, u32)) -> bool {
        slab.get(id).is_some_and(|m| m.state == MsgState::Ready && m.ticket == ticket)
    }

    fn trim(lane: &mut VecDeque<(u64, u32)>, slab: &Slab) {
        while let Some(&e) = lane.front() {
            if Self::is_live(slab, e) {
                break;
            }
            lane.pop_front();
        }
    }

    fn take_live(lane: &VecDeque<(u64, u32)>, slab: &Slab, max: usize, out: &mut Vec<u64>) {
        for (i, &e) in lane.iter().enumerate() {
            if out.len() >= max {
                break;
            }
            // Slots a few ahead: out of publish order (priorities, keys,
            // retries) each entry is a cache miss of its own.
            if let Some(&(ahead, _)) = lane.get(i + PREFETCH_AHEAD) {
                slab.prefetch_slot(ahead);
            }
            if Self::is_live(slab, e) {
                out.push(e.0);
            }
        }
    }

    /// The lanes of priorities 9..=1 that may hold entries, highest first.
    fn high_lanes(&self) -> impl Iterator<Item = usize> + use<> {
        let high = self.high;
        (1..=crate::types::MAX_PRIORITY as usize).rev().filter(move |p| high & (1 << p) != 0)
    }

    /// Lane `p` (1..=9) with its stale front entries dropped, or `None`
    /// (and its bit cleared) if that leaves it empty.
    fn trimmed_lane(&mut self, p: usize, slab: &Slab) -> Option<&mut VecDeque<(u64, u32)>> {
        let lane = &mut self.lanes[p - 1];
        Self::trim(lane, slab);
        if lane.is_empty() {
            self.high &= !(1 << p);
            return None;
        }
        Some(lane)
    }

    /// Up to `max` ready ids from the front, highest priority first, in
    /// order, without removing them. Stale entries met on the way are dropped.
    pub fn peek_front(&mut self, slab: &Slab, max: usize, out: &mut Vec<u64>) {
        if self.high != 0 {
            for p in self.high_lanes() {
                if let Some(lane) = self.trimmed_lane(p, slab) {
                    Self::take_live(lane, slab, max, out);
                    if out.len() >= max {
                        return;
                    }
                }
            }
        }
        Self::trim(&mut self.entries, slab);
        Self::take_live(&self.entries, slab, max, out);
    }

    /// Drops stale entries at the front (after a checkout made them stale).
    pub fn trim_front(&mut self, slab: &Slab) {
        if self.high != 0 {
            for p in self.high_lanes() {
                self.trimmed_lane(p, slab);
            }
        }
        Self::trim(&mut self.entries, slab);
    }

    /// Ready ids in delivery order (for snapshots and inspection).
    pub fn live_ids<'a>(&'a self, slab: &'a Slab) -> impl Iterator<Item = u64> + 'a {
        let high = self.high_lanes().flat_map(move |p| self.lanes[p - 1].iter());
        high.chain(self.entries.iter()).filter(move |e| Self::is_live(slab, **e)).map(|e| e.0)
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
            line: crate::types::NO_LINE,
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
    fn a_reserved_slab_fills_to_its_capacity_without_moving() {
        let mut slab = Slab::default();
        slab.reserve(10_000);
        let base = slab.slots.as_ptr();
        for seq in 1..=10_000u64 {
            let s = slab.alloc();
            assert!(slab.insert(msg((seq << SLOT_BITS) | s as u64)));
        }
        assert_eq!(slab.slots.as_ptr(), base, "the slots moved: a reallocation");
        assert_eq!(slab.live(), 10_000);
        // Reserving less than it holds changes nothing.
        slab.reserve(10);
        assert_eq!(slab.slots.as_ptr(), base);
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

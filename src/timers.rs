//! Timer data: lease deadlines and delayed-message due times. The engine's
//! timer thread sleeps until the earliest of the two heaps' tops and is woken
//! by a condvar when an earlier deadline arrives; nothing polls.
//!
//! Leases use an indexed min-heap (position per slot), so an ack removes its
//! lease in O(log n) and the heap holds only messages in flight — not every
//! message delivered within the last lease period. Delays use a plain heap
//! with lazy deletion: a delayed message leaves only by becoming due.

use crate::types::{Micros, slot_of};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const ABSENT: u32 = u32::MAX;

/// Min-heap of `(deadline, id)` with removal and re-keying by id.
#[derive(Default)]
pub(crate) struct LeaseHeap {
    heap: Vec<(Micros, u64)>,
    /// Heap position of the lease held by each slot.
    pos: Vec<u32>,
}

impl LeaseHeap {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn peek(&self) -> Option<(Micros, u64)> {
        self.heap.first().copied()
    }

    fn set_pos(&mut self, i: usize) {
        let s = slot_of(self.heap[i].1) as usize;
        if s >= self.pos.len() {
            self.pos.resize(s + 1, ABSENT);
        }
        self.pos[s] = i as u32;
    }

    fn position(&self, id: u64) -> Option<usize> {
        let p = *self.pos.get(slot_of(id) as usize)?;
        (p != ABSENT && self.heap.get(p as usize).is_some_and(|e| e.1 == id)).then_some(p as usize)
    }

    /// Adds or moves the lease of `id`.
    pub fn set(&mut self, id: u64, deadline: Micros) {
        if let Some(i) = self.position(id) {
            self.heap[i].0 = deadline;
            self.fix(i);
            return;
        }
        self.heap.push((deadline, id));
        let i = self.heap.len() - 1;
        self.set_pos(i);
        self.up(i);
    }

    pub fn remove(&mut self, id: u64) {
        let Some(i) = self.position(id) else { return };
        self.pos[slot_of(id) as usize] = ABSENT;
        let last = self.heap.len() - 1;
        if i != last {
            self.heap.swap(i, last);
            self.heap.pop();
            self.set_pos(i);
            self.fix(i);
        } else {
            self.heap.pop();
        }
    }

    /// Removes and returns the earliest lease if it is due at `now`.
    pub fn pop_due(&mut self, now: Micros) -> Option<u64> {
        let (d, id) = self.peek()?;
        if d > now {
            return None;
        }
        self.remove(id);
        Some(id)
    }

    fn fix(&mut self, i: usize) {
        if i > 0 && self.heap[i].0 < self.heap[(i - 1) / 2].0 {
            self.up(i);
        } else {
            self.down(i);
        }
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.heap[i].0 >= self.heap[p].0 {
                break;
            }
            self.heap.swap(i, p);
            self.set_pos(i);
            self.set_pos(p);
            i = p;
        }
    }

    fn down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && self.heap[l].0 < self.heap[m].0 {
                m = l;
            }
            if r < n && self.heap[r].0 < self.heap[m].0 {
                m = r;
            }
            if m == i {
                break;
            }
            self.heap.swap(i, m);
            self.set_pos(i);
            self.set_pos(m);
            i = m;
        }
    }
}

/// Due times of delayed messages; entries whose message is no longer delayed
/// at that time are skipped by the caller.
#[derive(Default)]
pub(crate) struct DelayHeap {
    heap: BinaryHeap<Reverse<(Micros, u64)>>,
}

impl DelayHeap {
    pub fn push(&mut self, due: Micros, id: u64) {
        self.heap.push(Reverse((due, id)));
    }
    pub fn peek(&self) -> Option<Micros> {
        self.heap.peek().map(|Reverse((d, _))| *d)
    }
    pub fn pop_due(&mut self, now: Micros) -> Option<(Micros, u64)> {
        match self.heap.peek() {
            Some(Reverse((d, _))) if *d <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// The indexed heap always yields the same earliest lease as a sorted
        /// model, through any mix of set / re-key / remove / pop.
        #[test]
        fn lease_heap_matches_a_sorted_model(ops in proptest::collection::vec((0u8..4, 0u64..40, 0u64..1000), 1..200)) {
            let mut heap = LeaseHeap::default();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for (kind, slot, t) in ops {
                let id = (7 << crate::types::SLOT_BITS) | slot;
                match kind {
                    0 | 1 => { heap.set(id, t); model.insert(id, t); }
                    2 => { heap.remove(id); model.remove(&id); }
                    _ => {
                        let got = heap.pop_due(t);
                        let min = model.iter().map(|(i, d)| (*d, *i)).min();
                        match min {
                            Some((d, _)) if d <= t => {
                                let got = got.expect("a due lease must pop");
                                prop_assert_eq!(model[&got], d);
                                model.remove(&got);
                            }
                            _ => prop_assert!(got.is_none()),
                        }
                    }
                }
                prop_assert_eq!(heap.len(), model.len());
                prop_assert_eq!(heap.peek().map(|e| e.0), model.values().min().copied());
            }
        }
    }

    #[test]
    fn delay_heap_pops_in_due_order() {
        let mut h = DelayHeap::default();
        h.push(30, 3);
        h.push(10, 1);
        h.push(20, 2);
        assert_eq!(h.pop_due(5), None);
        assert_eq!(h.pop_due(25), Some((10, 1)));
        assert_eq!(h.pop_due(25), Some((20, 2)));
        assert_eq!(h.pop_due(25), None);
        assert_eq!(h.peek(), Some(30));
    }
}

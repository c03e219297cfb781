//! The dead-letter ring: bounded; when full, the oldest entry is evicted (and
//! counted by the engine). Entries are persisted through journal operations
//! and snapshots like everything else.

use crate::types::DeadLetter;
use std::collections::VecDeque;

#[derive(Default)]
pub(crate) struct DeadLetterRing {
    entries: VecDeque<DeadLetter>,
}

impl DeadLetterRing {
    /// Adds an entry; evicts the oldest while over `capacity` (the capacity
    /// may have shrunk since the entries were written); returns how many.
    pub fn push(&mut self, dl: DeadLetter, capacity: usize) -> usize {
        self.entries.push_back(dl);
        let mut evicted = 0;
        while self.entries.len() > capacity {
            self.entries.pop_front();
            evicted += 1;
        }
        evicted
    }

    /// Evicts the oldest entries over `capacity` (after loading a snapshot
    /// written with a larger one); returns how many.
    pub fn trim(&mut self, capacity: usize) -> usize {
        let over = self.entries.len().saturating_sub(capacity);
        self.entries.drain(..over);
        over
    }

    pub fn get(&self, id: u64) -> Option<&DeadLetter> {
        self.entries.iter().find(|d| d.message.id == id)
    }

    pub fn remove(&mut self, id: u64) -> Option<DeadLetter> {
        let i = self.entries.iter().position(|d| d.message.id == id)?;
        self.entries.remove(i)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &DeadLetter> {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut DeadLetter> {
        self.entries.iter_mut()
    }
}

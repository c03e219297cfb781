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
    /// Adds an entry; returns the evicted oldest one when over `capacity`.
    pub fn push(&mut self, dl: DeadLetter, capacity: usize) -> Option<DeadLetter> {
        self.entries.push_back(dl);
        if self.entries.len() > capacity {
            self.entries.pop_front()
        } else {
            None
        }
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
}

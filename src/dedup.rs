//! The dedup index: `(topic, key)` → id of the live, not-superseded message
//! carrying the key. At most one such message exists per key; a superseded
//! in-flight message keeps its key in its metadata but is not indexed.

use std::collections::HashMap;

#[derive(Default)]
pub(crate) struct DedupIndex {
    map: HashMap<(u32, Box<str>), u64>,
}

impl DedupIndex {
    pub fn get(&self, topic: u32, key: &str) -> Option<u64> {
        // A borrowed tuple key is not expressible with std's Borrow, so build one.
        self.map.get(&(topic, Box::from(key))).copied()
    }

    pub fn set(&mut self, topic: u32, key: &str, id: u64) {
        self.map.insert((topic, Box::from(key)), id);
    }

    /// Removes the key only if it still points at `id`.
    pub fn remove_if(&mut self, topic: u32, key: &str, id: u64) {
        let k = (topic, Box::from(key));
        if self.map.get(&k) == Some(&id) {
            self.map.remove(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_index_removal_only_for_current_holder() {
        let mut d = DedupIndex::default();
        d.set(1, "k", 10);
        d.set(2, "k", 20);
        assert_eq!(d.get(1, "k"), Some(10));
        assert_eq!(d.get(2, "k"), Some(20), "keys are per topic");
        d.set(1, "k", 11); // superseded: the key moves to the new message
        d.remove_if(1, "k", 10); // the old holder's ack must not free the key
        assert_eq!(d.get(1, "k"), Some(11));
        d.remove_if(1, "k", 11);
        assert_eq!(d.get(1, "k"), None);
        assert_eq!(d.len(), 1);
    }
}

//! The dedup index: `(topic, key)` → id of the live, not-superseded message
//! carrying the key. At most one such message exists per key; a superseded
//! in-flight message keeps its key in its metadata but is not indexed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

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

/// Dedup keys of acked messages that were published with a dedup window:
/// `(topic, key)` → (id, until). A publish of such a key before `until`
/// answers with the acked message's id and enqueues nothing. Expired keys
/// are dropped as time passes (`prune`, called on publish and ack) and never
/// written to a snapshot, so memory follows the keys acked within a window.
#[derive(Default)]
pub(crate) struct Remembered {
    map: HashMap<(u32, Box<str>), (u64, u64)>,
    /// Expiry order, for `prune`; an entry whose key was remembered again
    /// since is skipped.
    expiry: BinaryHeap<Reverse<(u64, u32, Box<str>)>>,
}

impl Remembered {
    /// The id the key answers with at `now`, if its window is still open.
    pub fn get(&self, topic: u32, key: &str, now: u64) -> Option<u64> {
        match self.map.get(&(topic, Box::from(key))) {
            Some(&(id, until)) if now < until => Some(id),
            _ => None,
        }
    }

    pub fn set(&mut self, topic: u32, key: &str, id: u64, until: u64) {
        self.map.insert((topic, Box::from(key)), (id, until));
        self.expiry.push(Reverse((until, topic, Box::from(key))));
    }

    /// Drops the keys whose window closed at or before `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some(Reverse((until, _, _))) = self.expiry.peek() {
            if *until > now {
                break;
            }
            let Reverse((until, topic, key)) = self.expiry.pop().expect("peeked");
            let k = (topic, key);
            if self.map.get(&k).is_some_and(|(_, u)| *u == until) {
                self.map.remove(&k);
            }
        }
    }

    /// Entries still open at `now`: (topic, key, id, until).
    pub fn live(&self, now: u64) -> impl Iterator<Item = (u32, &str, u64, u64)> {
        self.map.iter().filter(move |(_, (_, u))| *u > now).map(|((t, k), (id, u))| (*t, &**k, *id, *u))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_keys_answer_until_their_window_closes_and_are_pruned() {
        let mut r = Remembered::default();
        r.set(0, "a", 10, 100);
        r.set(0, "b", 11, 200);
        r.set(1, "a", 12, 300);
        assert_eq!(r.get(0, "a", 99), Some(10));
        assert_eq!(r.get(0, "a", 100), None, "closed at until");
        assert_eq!(r.get(1, "a", 150), Some(12), "keys are per topic");
        r.set(0, "a", 13, 250); // the key acked again later: the new window counts
        r.prune(200);
        assert_eq!(r.len(), 2, "b expired; a's old expiry entry skipped");
        assert_eq!(r.get(0, "a", 240), Some(13));
        let mut live: Vec<_> = r.live(260).map(|(t, k, id, u)| (t, k.to_owned(), id, u)).collect();
        live.sort();
        assert_eq!(live, vec![(1, "a".to_owned(), 12, 300)]);
        r.prune(u64::MAX);
        assert_eq!(r.len(), 0);
    }

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

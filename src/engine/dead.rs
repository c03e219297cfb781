//! The dead-letter calls: list, get, replay, purge.

use super::Engine;
use crate::error::{Error, Result};
use crate::record::Op;
use crate::types::{DeadLetter, MsgState};

impl Engine {
    /// Dead letters, oldest first, filtered.
    pub fn dlq_list(&self, topic: Option<&str>, reason: Option<&str>, limit: Option<usize>) -> Result<Vec<DeadLetter>> {
        let g = self.sh.open_inner()?;
        Ok(g.state
            .dlq
            .iter()
            .filter(|d| topic.is_none_or(|t| d.topic == t) && reason.is_none_or(|r| d.reason == r))
            .take(limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    pub fn dlq_get(&self, id: u64) -> Result<DeadLetter> {
        let g = self.sh.open_inner()?;
        g.state.dlq.get(id).cloned().ok_or_else(|| Error::NotFound(crate::error::fmt_id(id)))
    }

    /// Puts dead letters back in the queue as new messages (attempts reset,
    /// correlation and causation kept). `None` replays all. An entry whose
    /// dedup key is live in the queue again (or taken by an earlier entry
    /// of this replay), or that finds no room, stays.
    pub fn dlq_replay(&self, ids: Option<&[u64]>) -> Result<(usize, Option<u64>)> {
        let sh = &self.sh;
        let mut g = sh.lock_healthy()?;
        let now = sh.clock.now();
        let room = sh.opts.capacity.saturating_sub(g.state.slab.live());
        let mut keys = std::collections::HashSet::new();
        let chosen: Vec<DeadLetter> = g
            .state
            .dlq
            .iter()
            .filter(|d| ids.is_none_or(|ids| ids.contains(&d.message.id)))
            .filter(|d| {
                d.message.dedup_key().is_none_or(|k| {
                    g.state.topic_id(&d.topic).and_then(|t| g.state.dedup.get(t, k)).is_none()
                        && keys.insert((d.topic.as_str(), k))
                })
            })
            .take(room)
            .cloned()
            .collect();
        if chosen.is_empty() {
            return Ok((0, None));
        }
        let mut ops = vec![Op::DlqRemove { ids: chosen.iter().map(|d| d.message.id).collect() }];
        let mut slots = Vec::new();
        for d in chosen {
            let mut msg = d.message;
            // Refused when ids run out: the slots taken so far go back.
            msg.id = g.state.alloc_message(&mut slots)?;
            msg.state = MsgState::Ready;
            msg.attempt = 0;
            msg.superseded = false;
            msg.visible_at = 0;
            msg.enqueued_at = now;
            if msg.meta.as_ref().is_some_and(|m| m.first_failed_at.is_some()) {
                msg.meta_mut().first_failed_at = None;
            }
            let topic = crate::record::TopicRef::Id(g.state.intern(&d.topic));
            ops.push(Op::Enqueue { topic, msg, supersedes: None });
        }
        let n = slots.len();
        let lsn = sh.commit_new(&mut g, ops, slots)?;
        g.counters.dlq_replayed += n as u64;
        for t in 0..g.state.topics.len() as u32 {
            sh.wake_topic(&g, t, n);
        }
        Ok((n, Some(lsn)))
    }

    /// Deletes dead letters (`None`: all). Returns how many.
    pub fn dlq_purge(&self, ids: Option<&[u64]>) -> Result<(usize, Option<u64>)> {
        let sh = &self.sh;
        let mut g = sh.lock_healthy()?;
        let chosen: Vec<u64> =
            g.state.dlq.iter().map(|d| d.message.id).filter(|id| ids.is_none_or(|ids| ids.contains(id))).collect();
        if chosen.is_empty() {
            return Ok((0, None));
        }
        let n = chosen.len();
        let lsn = sh.commit(&mut g, vec![Op::DlqRemove { ids: chosen }])?;
        g.counters.dlq_purged += n as u64;
        Ok((n, Some(lsn)))
    }
}

#[cfg(test)]
mod tests {
    use crate::types::{Options, Wait};
    use crate::{Engine, Publish, PublishOpts};
    use std::time::Duration;

    #[test]
    fn dlq_replay_refused_for_want_of_ids_gives_its_slots_back() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Engine::open(tmp.path().join("q"), Options::default()).unwrap();
        for p in [b"a", b"b", b"c"] {
            e.publish(Publish { topic: "t", payload: p, ..Default::default() }, PublishOpts::default(), Wait::No)
                .unwrap();
        }
        for d in e.checkout("t", 3, Duration::from_secs(60), Wait::No).unwrap() {
            e.nack(d.id, d.lease_token, None, Default::default(), Some("non_retryable")).unwrap();
        }
        let free = |e: &Engine| {
            let g = e.sh.inner.lock();
            (g.state.slab.free_slots(), g.state.slab.slot_count() - g.state.slab.live())
        };
        let (free_before, empty_before) = free(&e);
        assert_eq!((free_before, empty_before), (3, 3));
        // One id left: the first replayed dead letter gets it, the second is refused.
        e.sh.inner.lock().state.set_next_seq((1u64 << crate::types::SEQ_BITS) - 1);
        let err = e.dlq_replay(None).unwrap_err();
        assert!(err.to_string().contains("used all"), "{err}");
        assert_eq!(free(&e), (3, 3), "every slot taken for the refused replay is free again");
        assert_eq!(e.dlq_list(None, None, None).unwrap().len(), 3, "nothing was replayed");
        e.close().unwrap();
    }
}

//! Consumer-side calls (checkout, ack, nack, extend), the dead-letter calls,
//! and stats.

use super::publish::{Publish, PublishOpts};
use super::{Engine, Inner};
use crate::error::{Error, Result};
use crate::histogram::HistogramRead;
use crate::record::Op;
use crate::types::{DeadLetter, Delivered, Failure, Message, MsgState, SLOT_BITS, Wait, now_micros};
use std::time::Duration;

/// What `ack` did: the LSN to wait on and the ids whose lease was stale.
#[derive(Debug, Default)]
pub struct AckOutcome {
    pub lsn: Option<u64>,
    pub lost: Vec<u64>,
}

/// A value in `stats()`.
#[derive(Debug, Clone, PartialEq)]
pub enum Stat {
    Int(u64),
    Float(f64),
    Text(String),
    None,
}

fn delivered(m: &Message, topic: &str) -> Delivered {
    Delivered {
        id: m.id,
        topic: topic.to_owned(),
        payload: m.payload.to_vec(),
        attempt: m.attempt,
        version: m.version,
        enqueued_at: m.enqueued_at,
        lease_token: m.lease_token,
        lease_deadline: m.lease_deadline,
        meta: m.meta.clone(),
    }
}

impl Inner {
    /// The message if `token` is its current lease.
    fn leased(&self, id: u64, token: u64) -> Option<&Message> {
        self.state.slab.get(id).filter(|m| m.state == MsgState::InFlight && m.lease_token == token && token != 0)
    }
}

impl Engine {
    /// Takes up to `max` ready messages of `topic` under a lease of `lease`.
    /// Waits per `wait` when none is ready; returns an empty list on timeout.
    pub fn checkout(&self, topic: &str, max: usize, lease: Duration, wait: Wait) -> Result<Vec<Delivered>> {
        let sh = &self.sh;
        if max == 0 {
            return Err(Error::Invalid("max_messages must be >= 1".into()));
        }
        if topic.is_empty() || topic.len() > crate::types::MAX_TOPIC {
            return Err(Error::Invalid(format!("topic must be 1..=255 bytes, got {}", topic.len())));
        }
        let mut g = sh.inner.lock();
        let mut ids = Vec::new();
        let tid = loop {
            sh.ensure_healthy(&mut g)?;
            let Some(tid) = g.state.topic_id(topic) else {
                if matches!(wait, Wait::No) {
                    return Ok(Vec::new());
                }
                g.state.intern(topic);
                continue;
            };
            let st = &mut g.state;
            st.topics[tid as usize].ready.peek_front(&st.slab, max, &mut ids);
            if !ids.is_empty() {
                break tid;
            }
            let cv = st.topics[tid as usize].cv.clone();
            let gen_before = st.topics[tid as usize].interrupts;
            st.topics[tid as usize].waiters += 1;
            let timed_out = match wait {
                Wait::No => true,
                Wait::Until(t) => cv.wait_until(&mut g, t).timed_out(),
                Wait::Forever => {
                    cv.wait(&mut g);
                    false
                }
            };
            g.state.topics[tid as usize].waiters -= 1;
            if timed_out || g.state.topics[tid as usize].interrupts != gen_before {
                let st = &mut g.state;
                st.topics[tid as usize].ready.peek_front(&st.slab, max, &mut ids);
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                break tid;
            }
        };
        sh.commit(&mut g, vec![Op::Checkout { ids: ids.clone() }])?;
        let st = &mut g.state;
        st.topics[tid as usize].ready.trim_front(&st.slab);
        let deadline = now_micros() + lease.as_micros() as u64;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let token = sh.next_token(&mut g);
            g.state.lease(id, token, deadline);
            let m = g.state.slab.get(id).expect("checked out");
            out.push(delivered(m, topic));
        }
        g.counters.delivered += out.len() as u64;
        sh.wake_timer_for(&mut g, deadline);
        Ok(out)
    }

    /// Acks `leases` (id, token) and, in the same journal record, publishes
    /// `publish` (handler chaining). Acks with stale tokens change nothing and
    /// are reported in `lost`; with publishes, any stale token rejects all.
    pub fn ack(&self, leases: &[(u64, u64)], publish: &[Publish<'_>], wait: Wait) -> Result<AckOutcome> {
        let sh = &self.sh;
        for p in publish {
            sh.check_limits(p)?;
        }
        let mut g = sh.inner.lock();
        sh.ensure_healthy(&mut g)?;
        let mut valid = Vec::with_capacity(leases.len());
        let mut lost = Vec::new();
        for &(id, token) in leases {
            if g.leased(id, token).is_some() {
                valid.push(id);
            } else {
                lost.push(id);
            }
        }
        // The same delivery twice in one call: the second is stale.
        if valid.len() > 1 {
            let mut sorted = valid.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                let mut seen = std::collections::HashSet::with_capacity(valid.len());
                valid.retain(|id| {
                    seen.insert(*id) || {
                        lost.push(*id);
                        false
                    }
                });
            }
        }
        if !publish.is_empty() && !lost.is_empty() {
            return Err(Error::LeaseLost { ids: lost });
        }
        let freed = valid.len();
        let prefix = if valid.is_empty() { Vec::new() } else { vec![Op::Ack { ids: valid }] };
        let lsn = if publish.is_empty() {
            if prefix.is_empty() { None } else { Some(sh.commit(&mut g, prefix)?) }
        } else {
            sh.publish_locked(&mut g, publish, PublishOpts::default(), prefix, freed, wait)?.1
        };
        g.counters.acked += freed as u64;
        if freed > 0 {
            sh.not_full.notify_all();
        }
        Ok(AckOutcome { lsn, lost })
    }

    /// Gives a message back: ready again (after `delay`), or to the
    /// dead-letter ring when `dead_letter` names a reason or attempts are
    /// exhausted; a superseded message is dropped.
    pub fn nack(
        &self,
        id: u64,
        token: u64,
        delay: Option<Duration>,
        mut failure: Failure,
        dead_letter: Option<&str>,
    ) -> Result<Option<u64>> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        sh.ensure_healthy(&mut g)?;
        let Some(m) = g.leased(id, token) else {
            return Err(Error::LeaseLost { ids: vec![id] });
        };
        let now = now_micros();
        let (topic, superseded, attempt) = (m.topic, m.superseded, m.attempt);
        if failure.handler.is_none() {
            failure.handler = g.handler(topic);
        }
        let op = if superseded {
            Op::Drop { id }
        } else if let Some(reason) = dead_letter {
            Op::DeadLetter { id, reason: reason.to_owned(), failure, at: now }
        } else if attempt >= g.max_attempts(topic, sh.opts.max_attempts) {
            Op::DeadLetter { id, reason: "max_attempts".into(), failure, at: now }
        } else {
            let visible_at = delay.filter(|d| !d.is_zero()).map_or(0, |d| now + d.as_micros() as u64);
            Op::Requeue { id, visible_at, failed_at: now }
        };
        let kind = std::mem::discriminant(&op);
        let requeue_at = match &op {
            Op::Requeue { visible_at, .. } => Some(*visible_at),
            _ => None,
        };
        let lsn = sh.commit(&mut g, vec![op])?;
        g.counters.nacked += 1;
        match requeue_at {
            Some(0) => sh.wake_topic(&g, topic, 1),
            Some(at) => sh.wake_timer_for(&mut g, at),
            None => {
                if kind == std::mem::discriminant(&Op::Drop { id: 0 }) {
                    g.counters.superseded_dropped += 1;
                } else {
                    g.counters.dead_lettered += 1;
                }
                sh.not_full.notify_all();
            }
        }
        Ok(Some(lsn))
    }

    /// Makes every `checkout` now waiting on `topic` return what is ready
    /// (often nothing) at once, as if its timeout ran out; later calls wait
    /// as usual. Dispatchers use it to stop workers without polling.
    pub fn interrupt(&self, topic: &str) -> Result<()> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        if g.closed {
            return Err(Error::Closed);
        }
        if let Some(tid) = g.state.topic_id(topic) {
            let t = &mut g.state.topics[tid as usize];
            t.interrupts += 1;
            t.cv.notify_all();
        }
        Ok(())
    }

    /// Sets (or with `TopicPolicy::default()`, clears) what a topic's handler
    /// asks of the engine: its `max_attempts` (for nacks and lease expiries
    /// alike) and the handler name recorded on dead letters. Kept in memory
    /// only: a handler sets it each time it starts.
    pub fn set_topic_policy(&self, topic: &str, policy: super::TopicPolicy) -> Result<()> {
        if policy.max_attempts == Some(0) {
            return Err(Error::Invalid("max_attempts must be >= 1".into()));
        }
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        if g.closed {
            return Err(Error::Closed);
        }
        let tid = g.state.intern(topic);
        if policy.max_attempts.is_none() && policy.handler.is_none() {
            g.policies.remove(&tid);
        } else {
            g.policies.insert(tid, policy);
        }
        Ok(())
    }

    /// Pushes the lease deadline to now + `by`; returns the new deadline.
    pub fn extend(&self, id: u64, token: u64, by: Duration) -> Result<u64> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        if g.closed {
            return Err(Error::Closed);
        }
        if g.leased(id, token).is_none() {
            return Err(Error::LeaseLost { ids: vec![id] });
        }
        let deadline = now_micros() + by.as_micros() as u64;
        g.state.lease(id, token, deadline);
        sh.wake_timer_for(&mut g, deadline);
        Ok(deadline)
    }

    /// Whether a newer publish with the same dedup key superseded `id`.
    pub fn is_superseded(&self, id: u64) -> Result<bool> {
        let g = self.sh.open_inner()?;
        Ok(g.state.slab.get(id).is_some_and(|m| m.superseded))
    }

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
    /// dedup key is live in the queue again, or that finds no room, stays.
    pub fn dlq_replay(&self, ids: Option<&[u64]>) -> Result<(usize, Option<u64>)> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        sh.ensure_healthy(&mut g)?;
        let now = now_micros();
        let room = sh.opts.capacity.saturating_sub(g.state.slab.live());
        let chosen: Vec<DeadLetter> = g
            .state
            .dlq
            .iter()
            .filter(|d| ids.is_none_or(|ids| ids.contains(&d.message.id)))
            .filter(|d| {
                d.message
                    .dedup_key()
                    .is_none_or(|k| g.state.topic_id(&d.topic).and_then(|t| g.state.dedup.get(t, k)).is_none())
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
            let slot = g.state.slab.alloc();
            slots.push(slot);
            let mut msg = d.message;
            msg.id = (g.state.next_seq << SLOT_BITS) | slot as u64;
            g.state.next_seq += 1;
            msg.state = MsgState::Ready;
            msg.attempt = 0;
            msg.superseded = false;
            msg.visible_at = 0;
            msg.enqueued_at = now;
            if let Some(meta) = msg.meta.as_mut() {
                meta.first_failed_at = None;
            }
            let topic = g.state.topic_name(&d.topic);
            ops.push(Op::Enqueue { topic, msg, supersedes: None });
        }
        let n = slots.len();
        let lsn = match sh.commit(&mut g, ops) {
            Ok(l) => l,
            Err(e) => {
                for s in slots {
                    g.state.slab.unalloc(s);
                }
                return Err(e);
            }
        };
        g.counters.dlq_replayed += n as u64;
        for t in 0..g.state.topics.len() as u32 {
            sh.wake_topic(&g, t, n);
        }
        Ok((n, Some(lsn)))
    }

    /// Deletes dead letters (`None`: all). Returns how many.
    pub fn dlq_purge(&self, ids: Option<&[u64]>) -> Result<(usize, Option<u64>)> {
        let sh = &self.sh;
        let mut g = sh.inner.lock();
        sh.ensure_healthy(&mut g)?;
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

    /// Numbers for `stats()`: gauges, counters since open, recovery facts.
    pub fn stats(&self) -> Result<Vec<(&'static str, Stat)>> {
        let sh = &self.sh;
        let g = sh.open_inner()?;
        let (ready, in_flight, delayed) = g.state.totals();
        let (journal_bytes, segments) = g.journal.disk_usage();
        let c = &g.counters;
        let r = &g.report;
        let i = |v: u64| Stat::Int(v);
        Ok(vec![
            ("ready", i(ready as u64)),
            ("in_flight", i(in_flight as u64)),
            ("delayed", i(delayed as u64)),
            ("dead", i(g.state.dlq.len() as u64)),
            ("total", i(g.state.slab.live() as u64)),
            ("capacity", i(sh.opts.capacity as u64)),
            ("topics", i(g.state.topics.len() as u64)),
            ("dedup_keys", i(g.state.dedup.len() as u64)),
            ("published", i(c.published)),
            ("replaced", i(c.replaced)),
            ("kept", i(c.kept)),
            ("superseded", i(c.superseded)),
            ("superseded_dropped", i(c.superseded_dropped)),
            ("delivered", i(c.delivered)),
            ("acked", i(c.acked)),
            ("nacked", i(c.nacked)),
            ("expired", i(c.expired)),
            ("dead_lettered", i(c.dead_lettered)),
            ("dlq_evicted", i(g.state.dlq_evicted)),
            ("dlq_replayed", i(c.dlq_replayed)),
            ("dlq_purged", i(c.dlq_purged)),
            ("snapshots", i(c.snapshots)),
            ("lsn", i(g.journal.next_lsn() - 1)),
            ("durable_lsn", i(sh.sync.durable())),
            ("journal_bytes", i(journal_bytes)),
            ("journal_segments", i(segments as u64)),
            ("snapshot_lsn", i(g.snapshot_lsn)),
            ("snapshot_age", Stat::Float(g.snapshot_at.elapsed().as_secs_f64())),
            ("fsyncs", i(sh.sync.fsyncs())),
            ("recovered_records", i(r.records_replayed)),
            ("torn_tail_bytes", i(r.torn_bytes())),
            ("torn_tail_records", i(r.torn.len() as u64)),
            ("recovery_seconds", Stat::Float(r.seconds)),
            ("durability", Stat::Text(sh.opts.durability.as_str().into())),
            ("degraded", g.degraded.clone().map_or(Stat::None, Stat::Text)),
            ("last_snapshot_error", g.snapshot_error.clone().map_or(Stat::None, Stat::Text)),
        ])
    }

    /// The engine's latency histograms: `fsync` (the flusher's journal
    /// fsyncs) and `snapshot` (whole snapshots). Bounds are
    /// [`BOUNDS_SECONDS`](crate::histogram::BOUNDS_SECONDS). No lock.
    pub fn histograms(&self) -> [(&'static str, HistogramRead); 2] {
        [("fsync", self.sh.fsync_latency.read()), ("snapshot", self.sh.snapshot_duration.read())]
    }

    /// Per topic: ready, in flight, delayed.
    pub fn topic_stats(&self) -> Result<Vec<(String, [u64; 3])>> {
        let g = self.sh.open_inner()?;
        Ok(g.state
            .topics
            .iter()
            .map(|t| (t.name.to_string(), [t.n_ready as u64, t.n_in_flight as u64, t.n_delayed as u64]))
            .collect())
    }
}

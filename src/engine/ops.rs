//! Consumer-side calls: checkout, ack, release, nack, extend, interrupt.

use super::publish::{Publish, PublishOpts};
use super::{Engine, Inner};
use crate::error::{Error, Result};
use crate::record::Op;
use crate::types::{Delivered, Failure, Message, Micros, MsgState, Wait, micros_after};
use std::time::Duration;

/// `Engine::cancel`: no live message has the id.
pub const CANCEL_NOT_FOUND: u8 = 0;
/// `Engine::cancel`: the message was ready or delayed.
pub const CANCEL_WAITING: u8 = 1;
/// `Engine::cancel`: the message was in flight.
pub const CANCEL_IN_FLIGHT: u8 = 2;

/// What `ack` (and `release`) did: the LSN to wait on and the ids whose
/// lease was stale.
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

/// What a checkout takes and how it waits.
#[derive(Debug, Clone, Copy)]
pub struct Checkout {
    /// At most this many messages.
    pub max: usize,
    pub lease: Duration,
    pub wait: Wait,
    /// Take at most `ceil(ready / share)` (and at least one): a pool of
    /// `share` workers passes its size, so one worker never takes what the
    /// others would start on now.
    pub share: usize,
    /// Do not wait if `interrupt` was called on the topic since
    /// [`Engine::interrupts`] returned this value (a sticky interrupt: it
    /// also stops a caller that was on its way into the call).
    pub since: Option<u64>,
}

impl Checkout {
    pub fn new(max: usize, lease: Duration, wait: Wait) -> Self {
        Checkout { max, lease, wait, share: 1, since: None }
    }
}

/// Counts the bytes of the payloads in `out` that point into a mapped
/// snapshot (a queue's messages from before it was reopened, see
/// `payload::MappedFile`): the caller reads them next, and every
/// `payload::RELEASE_READ` bytes the file's pages are dropped from the
/// process again, so a drain does not pile the file up in its memory.
/// Outside the engine's lock: the lengths are read from the file.
fn release_read_pages(out: &[Delivered]) {
    let mut mapped = out.iter().filter(|d| d.payload.is_mapped()).peekable();
    let Some(file) = mapped.peek().and_then(|d| d.payload.mapped_file()) else { return };
    if file.note_read(mapped.map(|d| d.payload.len()).sum()) {
        file.release_pages(0, usize::MAX);
    }
}

fn delivered(m: &Message, topic: &std::sync::Arc<str>) -> Delivered {
    Delivered {
        id: m.id,
        topic: topic.clone(),
        payload: m.payload.clone(),
        attempt: m.attempt,
        version: m.version,
        enqueued_at: m.enqueued_at,
        lease_token: m.lease_token,
        lease_deadline: m.lease_deadline,
        meta: m.meta.clone(),
    }
}

impl Inner {
    /// The message if `token` is its current lease and the lease has not
    /// run out at `now` (even if the timer has not reclaimed it yet: a lease
    /// past its deadline belongs to nobody).
    pub(crate) fn leased(&self, id: u64, token: u64, now: Micros) -> Option<&Message> {
        self.state
            .slab
            .get(id)
            .filter(|m| m.state == MsgState::InFlight && m.lease_token == token && token != 0 && m.lease_deadline > now)
    }

    /// Splits `leases` into the ids whose lease is current at `now` (each
    /// once) and the stale ones.
    fn current_leases(&self, leases: &[(u64, u64)], now: Micros) -> (Vec<u64>, Vec<u64>) {
        let mut valid = Vec::with_capacity(leases.len());
        let mut lost = Vec::new();
        for (i, &(id, token)) in leases.iter().enumerate() {
            if let Some(&(ahead, _)) = leases.get(i + crate::ring::PREFETCH_AHEAD) {
                self.state.slab.prefetch_slot(ahead);
            }
            if self.leased(id, token, now).is_some() {
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
        (valid, lost)
    }
}

impl Engine {
    /// Takes up to `max` ready messages of `topic` under a lease of `lease`.
    /// Waits per `wait` when none is ready; returns an empty list on timeout.
    pub fn checkout(&self, topic: &str, max: usize, lease: Duration, wait: Wait) -> Result<Vec<Delivered>> {
        self.checkout_with(topic, Checkout::new(max, lease, wait))
    }

    /// `checkout` with a fair share and a sticky interrupt (see [`Checkout`]).
    pub fn checkout_with(&self, topic: &str, c: Checkout) -> Result<Vec<Delivered>> {
        let sh = &self.sh;
        if c.max == 0 {
            return Err(Error::Invalid("max_messages must be >= 1".into()));
        }
        if topic.is_empty() || topic.len() > crate::types::MAX_TOPIC {
            return Err(Error::Invalid(format!("topic must be 1..=255 bytes, got {}", topic.len())));
        }
        let mut g = sh.lock_healthy()?;
        if g.state.mapped.is_some()
            && let Some(file) = g.state.take_unused_mapped()
        {
            // Every message the queue was opened with is gone: unmap the
            // snapshot they came from, outside the lock.
            drop(g);
            drop(file);
            g = sh.lock_healthy()?;
        }
        let mut ids = Vec::new();
        let mut first = true;
        let tid = loop {
            if !first {
                sh.ensure_healthy(&mut g)?;
            }
            first = false;
            let Some(tid) = g.state.topic_id(topic) else {
                if matches!(c.wait, Wait::No) {
                    return Ok(Vec::new());
                }
                g.state.intern(topic);
                continue;
            };
            let st = &mut g.state;
            let t = &mut st.topics[tid as usize];
            let take = c.max.min(t.n_ready.div_ceil(c.share.max(1))).max(1);
            t.ready.peek_front(&st.slab, take, &mut ids);
            if !ids.is_empty() {
                break tid;
            }
            if c.since.is_some_and(|s| s != t.interrupts) {
                return Ok(Vec::new());
            }
            let cv = t.cv.clone();
            let gen_before = t.interrupts;
            t.waiters += 1;
            let timed_out = match c.wait {
                Wait::No => true,
                Wait::Until(t) => cv.wait_until(&mut g, t).timed_out(),
                Wait::Forever => {
                    cv.wait(&mut g);
                    false
                }
            };
            let st = &mut g.state;
            let t = &mut st.topics[tid as usize];
            t.waiters -= 1;
            if timed_out || t.interrupts != gen_before {
                let take = c.max.min(t.n_ready.div_ceil(c.share.max(1))).max(1);
                t.ready.peek_front(&st.slab, take, &mut ids);
                if ids.is_empty() || g.closed {
                    return if g.closed { Err(Error::Closed) } else { Ok(Vec::new()) };
                }
                break tid;
            }
        };
        sh.commit(&mut g, vec![Op::Checkout { ids: ids.clone() }])?;
        let st = &mut g.state;
        st.topics[tid as usize].ready.trim_front(&st.slab);
        let deadline = micros_after(sh.clock.now(), c.lease);
        let name = st.topics[tid as usize].name.clone();
        let mut out = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            // Payloads a few ahead: in priority or key order they are not
            // consecutive (nor are the slots, see `Op::Checkout` in `state`).
            if let Some(&ahead) = ids.get(i + 4) {
                g.state.slab.prefetch_payload(ahead);
            }
            let token = sh.next_token(&mut g);
            g.state.lease(id, token, deadline);
            let m = g.state.slab.get(id).expect("checked out");
            out.push(delivered(m, &name));
        }
        g.counters.delivered += out.len() as u64;
        sh.wake_timer_for(&mut g, deadline);
        // Only a queue still holding its snapshot mapped has payloads there.
        let mapped = g.state.mapped.is_some();
        drop(g);
        if mapped {
            release_read_pages(&out);
        }
        Ok(out)
    }

    /// The topic's interrupt count, for [`Checkout::since`].
    pub fn interrupts(&self, topic: &str) -> Result<u64> {
        let mut g = self.sh.open_inner()?;
        let tid = g.state.intern(topic);
        Ok(g.state.topics[tid as usize].interrupts)
    }

    /// Acks `leases` (id, token) and, in the same journal record, publishes
    /// `publish` (handler chaining). Acks with stale tokens change nothing and
    /// are reported in `lost`; with publishes, any stale token rejects all.
    /// A follow-up that repeats the topic and dedup key of a superseded
    /// message it acks is dropped: a newer message took the key while the
    /// acked one was in flight (a publish; `unschedule`'s tombstone, even
    /// cancelled since), and the newer one stands.
    pub fn ack(&self, leases: &[(u64, u64)], publish: &[Publish<'_>], wait: Wait) -> Result<AckOutcome> {
        let sh = &self.sh;
        for p in publish {
            sh.check_limits(p)?;
        }
        let mut g = sh.lock_healthy()?;
        let (valid, lost) = g.current_leases(leases, sh.clock.now());
        if !publish.is_empty() && !lost.is_empty() {
            return Err(Error::LeaseLost { ids: lost });
        }
        let kept: Vec<Publish<'_>>;
        let mut publish = publish;
        if publish.iter().any(|p| p.dedup_key.is_some()) {
            let st = &g.state;
            let taken: Vec<(u32, &str)> = valid
                .iter()
                .filter_map(|id| st.slab.get(*id))
                .filter(|m| m.superseded)
                .filter_map(|m| Some((m.topic, m.dedup_key()?)))
                .collect();
            if !taken.is_empty() {
                let repeats = |p: &Publish<'_>| {
                    p.dedup_key.is_some_and(|k| {
                        st.topic_id(p.topic).is_some_and(|t| taken.iter().any(|&(tt, tk)| tt == t && tk == k))
                    })
                };
                kept = publish.iter().filter(|p| !repeats(p)).copied().collect();
                publish = &kept;
            }
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
            sh.room_freed();
        }
        Ok(AckOutcome { lsn, lost })
    }

    /// Gives deliveries back unstarted: each goes to the front of its topic's
    /// ready list, in the given order, and the delivery its checkout counted
    /// is undone (`attempt` as before). A superseded one is dropped (the
    /// newer message carries its key). Stale leases change nothing and are
    /// reported in `lost`.
    pub fn release(&self, leases: &[(u64, u64)]) -> Result<AckOutcome> {
        let sh = &self.sh;
        let mut g = sh.lock_healthy()?;
        let (valid, lost) = g.current_leases(leases, sh.clock.now());
        if valid.is_empty() {
            return Ok(AckOutcome { lsn: None, lost });
        }
        let mut topics: Vec<(u32, bool)> = Vec::with_capacity(valid.len());
        for id in &valid {
            let m = g.state.slab.get(*id).expect("leased");
            topics.push((m.topic, m.superseded));
        }
        let n = valid.len() as u64;
        let lsn = sh.commit(&mut g, vec![Op::Release { ids: valid }])?;
        g.counters.released += n;
        let mut dropped = false;
        for (t, superseded) in topics {
            if superseded {
                g.counters.superseded_dropped += 1;
                dropped = true;
            } else {
                sh.wake_topic(&g, t, 1);
            }
        }
        if dropped {
            sh.room_freed();
        }
        Ok(AckOutcome { lsn: Some(lsn), lost })
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
        let mut g = sh.lock_healthy()?;
        let now = sh.clock.now();
        let Some(m) = g.leased(id, token, now) else {
            return Err(Error::LeaseLost { ids: vec![id] });
        };
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
            let visible_at = delay.filter(|d| !d.is_zero()).map_or(0, |d| micros_after(now, d));
            Op::Requeue { id, visible_at, failed_at: now }
        };
        let (requeue_at, dropped) = match &op {
            Op::Requeue { visible_at, .. } => (Some(*visible_at), false),
            Op::Drop { .. } => (None, true),
            _ => (None, false),
        };
        let lsn = sh.commit(&mut g, vec![op])?;
        g.counters.nacked += 1;
        match requeue_at {
            Some(0) => sh.wake_topic(&g, topic, 1),
            Some(at) => sh.wake_timer_for(&mut g, at),
            None => {
                if dropped {
                    g.counters.superseded_dropped += 1;
                } else {
                    g.count_dead(topic);
                }
                sh.room_freed();
            }
        }
        Ok(Some(lsn))
    }

    /// Makes every `checkout` now waiting on `topic` return what is ready
    /// (often nothing) at once, as if its timeout ran out; a later checkout
    /// passing the count from before this call ([`Checkout::since`]) does
    /// not wait either. Dispatchers use it to stop workers without polling.
    pub fn interrupt(&self, topic: &str) -> Result<()> {
        let sh = &self.sh;
        let mut g = sh.open_inner()?;
        let tid = g.state.intern(topic);
        let t = &mut g.state.topics[tid as usize];
        t.interrupts += 1;
        t.cv.notify_all();
        Ok(())
    }

    /// Sets (or with `TopicPolicy::default()`, clears) what a topic's handler
    /// asks of the engine: its `max_attempts` (for nacks and lease expiries
    /// alike) and the handler name recorded on dead letters. A handler sets
    /// it each time it starts; it is kept in the directory's `POLICIES`
    /// file, so the messages in flight when the process stops are judged by
    /// it at the next open (before any handler starts). A change is written
    /// (and fsynced) before it applies; if the write fails (a full disk) it
    /// applies all the same, `stats()["policies_error"]` says why, and the
    /// write is retried at the next change and after each snapshot.
    pub fn set_topic_policy(&self, topic: &str, policy: super::TopicPolicy) -> Result<()> {
        if policy.max_attempts == Some(0) {
            return Err(Error::Invalid("max_attempts must be >= 1".into()));
        }
        if topic.is_empty() || topic.len() > crate::types::MAX_TOPIC {
            return Err(Error::Invalid(format!("topic must be 1..=255 bytes, got {}", topic.len())));
        }
        let sh = &self.sh;
        drop(sh.open_inner()?);
        let mut file = sh.policy_file.lock();
        let cleared = policy.max_attempts.is_none() && policy.handler.is_none();
        let changed = if cleared {
            file.policies.remove(topic).is_some()
        } else {
            file.policies.insert(topic.to_owned(), policy.clone()).as_ref() != Some(&policy)
        };
        if changed || file.error.is_some() {
            sh.write_policies(&mut file);
        }
        let mut g = sh.open_inner()?;
        let tid = g.state.intern(topic);
        if cleared {
            g.policies.remove(&tid);
        } else {
            g.policies.insert(tid, policy);
        }
        Ok(())
    }

    /// Pushes the lease deadline to now + `by`; returns the new deadline.
    pub fn extend(&self, id: u64, token: u64, by: Duration) -> Result<u64> {
        let sh = &self.sh;
        let mut g = sh.open_inner()?;
        let now = sh.clock.now();
        if g.leased(id, token, now).is_none() {
            return Err(Error::LeaseLost { ids: vec![id] });
        }
        let deadline = micros_after(now, by);
        g.state.lease(id, token, deadline);
        sh.wake_timer_for(&mut g, deadline);
        Ok(deadline)
    }

    /// Ends the given leases now, as if they had run out (the timer takes
    /// them at once: back to ready with the delivery counted, dead-lettered
    /// after the last attempt, dropped if superseded). Leases no longer
    /// current are skipped. For a shared queue's client that went away
    /// holding them. Returns how many were ended.
    pub fn expire_leases(&self, leases: &[(u64, u64)]) -> Result<usize> {
        let sh = &self.sh;
        let mut g = sh.open_inner()?;
        let now = sh.clock.now();
        let mut n = 0;
        for &(id, token) in leases {
            if g.leased(id, token, now).is_some() {
                g.state.lease(id, token, now);
                n += 1;
            }
        }
        if n > 0 {
            sh.wake_timer_for(&mut g, now);
        }
        Ok(n)
    }

    /// Removes message `id` for good, wherever it is: ready or delayed (it
    /// is never delivered), or in flight (its holder's ack, nack, extend or
    /// release is then `LeaseLost`; it is neither retried nor dead-lettered).
    /// Its dedup key is freed. One `Drop` record. Returns what it was:
    /// `CANCEL_NOT_FOUND` (no such live message: never published, acked,
    /// dropped, or a dead letter), `CANCEL_WAITING` (ready or delayed) or
    /// `CANCEL_IN_FLIGHT`, with the record's LSN.
    pub fn cancel(&self, id: u64) -> Result<(u8, Option<u64>)> {
        let sh = &self.sh;
        let mut g = sh.lock_healthy()?;
        let Some(m) = g.state.slab.get(id) else {
            return Ok((CANCEL_NOT_FOUND, None));
        };
        let was = if m.state == crate::types::MsgState::InFlight { CANCEL_IN_FLIGHT } else { CANCEL_WAITING };
        let lsn = sh.commit(&mut g, vec![Op::Drop { id }])?;
        g.counters.cancelled += 1;
        sh.room_freed();
        Ok((was, Some(lsn)))
    }

    /// Whether a newer publish with the same dedup key superseded `id`.
    pub fn is_superseded(&self, id: u64) -> Result<bool> {
        let g = self.sh.open_inner()?;
        Ok(g.state.slab.get(id).is_some_and(|m| m.superseded))
    }
}

#[cfg(test)]
mod tests {
    use super::{CANCEL_IN_FLIGHT, CANCEL_NOT_FOUND, CANCEL_WAITING};
    use crate::error::Error;
    use crate::types::{Options, Wait};
    use crate::{Engine, Publish, PublishOpts, Stat};
    use std::time::Duration;

    fn publish(e: &Engine, payload: &[u8], key: Option<&str>, delay: Option<Duration>) -> u64 {
        let p = Publish { topic: "t", payload, dedup_key: key, delay, ..Default::default() };
        e.publish(p, PublishOpts::default(), Wait::No).unwrap().0
    }

    fn stat(e: &Engine, name: &str) -> u64 {
        match e.stats().unwrap().into_iter().find(|(k, _)| *k == name) {
            Some((_, Stat::Int(v))) => v,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn cancel_removes_a_message_wherever_it_is_and_the_removal_survives_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let e = Engine::open(&dir, Options::default()).unwrap();
        let held = publish(&e, b"held", Some("k-held"), None);
        let [d] = e.checkout("t", 1, Duration::from_secs(60), Wait::No).unwrap().try_into().unwrap();
        assert_eq!(d.id, held);
        let ready = publish(&e, b"ready", Some("k-ready"), None);
        let delayed = publish(&e, b"delayed", None, Some(Duration::from_secs(3600)));
        let kept = publish(&e, b"kept", None, None);

        assert_eq!(e.cancel(ready).unwrap().0, CANCEL_WAITING);
        assert_eq!(e.cancel(delayed).unwrap().0, CANCEL_WAITING);
        assert_eq!(e.cancel(held).unwrap().0, CANCEL_IN_FLIGHT);
        assert_eq!(e.cancel(held).unwrap(), (CANCEL_NOT_FOUND, None), "twice: nothing left");
        assert_eq!(e.cancel(0xdead_0000_0001).unwrap(), (CANCEL_NOT_FOUND, None));

        // The holder's lease is gone: nothing it does counts.
        match e.ack(&[(held, d.lease_token)], &[], Wait::No) {
            Ok(out) => assert_eq!(out.lost, vec![held]),
            Err(other) => panic!("{other:?}"),
        }
        assert!(matches!(e.extend(held, d.lease_token, Duration::from_secs(1)), Err(Error::LeaseLost { .. })));
        assert_eq!((stat(&e, "total"), stat(&e, "in_flight"), stat(&e, "dead"), stat(&e, "cancelled")), (1, 0, 0, 3));
        // Their dedup keys are free: a new message takes each.
        let again = publish(&e, b"again", Some("k-ready"), None);
        assert_ne!(again, ready);
        e.close().unwrap();

        let e = Engine::open(&dir, Options::default()).unwrap();
        let left: Vec<u64> =
            e.checkout("t", 10, Duration::from_secs(60), Wait::No).unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(left, vec![kept, again], "replay removed the cancelled ones too");
        assert_eq!(stat(&e, "delayed"), 0);
    }
}

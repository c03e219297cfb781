//! Publishing: limits are checked before anything else, then the publish is
//! *planned* against the current state (dedup decisions, versions, how many
//! new slots it needs), capacity is waited for, ids are assigned, and the
//! plan is committed as one journal record. A batch is planned item by item,
//! so a key published twice in one batch behaves as two publishes would.

use super::{Engine, Inner, Shared};
use crate::error::{Error, Result};
use crate::record::{Op, TopicRef};
use crate::types::{MAX_TOPIC, Message, Meta, MsgState, OnDuplicate, Wait, micros_after};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One message to publish, borrowed from the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Publish<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub dedup_key: Option<&'a str>,
    pub delay: Option<Duration>,
    pub headers: &'a [(String, String)],
    pub correlation_id: Option<&'a str>,
    pub causation_id: Option<&'a str>,
    /// 0..=9, higher first (see `ReadyList`).
    pub priority: u8,
    /// At most one message of the key in flight, FIFO per key.
    pub ordering_key: Option<&'a str>,
    /// With `dedup_key`: the key keeps answering with this message's id for
    /// this long after it was acked.
    pub dedup_window: Option<Duration>,
}

/// Options that apply to every message of a publish call.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOpts {
    pub on_duplicate: OnDuplicate,
    pub expected_version: Option<u32>,
}

/// Where a publish's result id comes from.
enum Target {
    Existing(u64),
    /// Index of an `Op::Enqueue` in the plan (its id is assigned later).
    New(usize),
}

#[derive(Default)]
pub(crate) struct Plan {
    ops: Vec<Op>,
    targets: Vec<Target>,
    new_count: usize,
    replaced: u64,
    kept: u64,
    superseded: u64,
    /// Earliest due time of a delayed message in the plan.
    earliest_delay: Option<u64>,
}

impl Shared {
    pub(crate) fn check_limits(&self, p: &Publish<'_>) -> Result<()> {
        let o = &self.opts;
        if p.topic.is_empty() {
            return Err(Error::Invalid("topic must not be empty".into()));
        }
        if p.topic.len() > MAX_TOPIC {
            return Err(Error::Limit { what: "topic", size: p.topic.len(), limit: MAX_TOPIC });
        }
        if p.payload.len() > o.max_payload {
            return Err(Error::Limit { what: "payload", size: p.payload.len(), limit: o.max_payload });
        }
        for (what, v) in
            [("dedup_key", p.dedup_key), ("correlation_id", p.correlation_id), ("causation_id", p.causation_id)]
        {
            if let Some(v) = v
                && v.len() > o.max_key
            {
                return Err(Error::Limit { what, size: v.len(), limit: o.max_key });
            }
        }
        if p.dedup_key == Some("") {
            return Err(Error::Invalid("dedup_key must not be empty (use None for no key)".into()));
        }
        if p.priority > crate::types::MAX_PRIORITY {
            return Err(Error::Invalid(format!("priority={} (must be 0..=9)", p.priority)));
        }
        if let Some(k) = p.ordering_key {
            if k.is_empty() {
                return Err(Error::Invalid("ordering_key must not be empty (use None for no key)".into()));
            }
            if k.len() > o.max_key {
                return Err(Error::Limit { what: "ordering_key", size: k.len(), limit: o.max_key });
            }
        }
        if let Some(w) = p.dedup_window {
            if p.dedup_key.is_none() {
                return Err(Error::Invalid("dedup_window needs a dedup_key".into()));
            }
            if w.is_zero() {
                return Err(Error::Invalid("dedup_window must be > 0 (use None for no window)".into()));
            }
        }
        // Each pair costs its bytes plus two length prefixes on disk.
        let hsize: usize = p.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        if hsize > o.max_headers {
            return Err(Error::Limit { what: "headers", size: hsize, limit: o.max_headers });
        }
        Ok(())
    }

    /// Plans `items` against the state, as it will be once the messages
    /// `gone` are removed (acks committed in the same transaction: their
    /// dedup keys are free).
    pub(crate) fn plan(&self, g: &mut Inner, items: &[Publish<'_>], opts: PublishOpts, gone: &[u64]) -> Result<Plan> {
        let now = self.clock.now();
        g.state.remembered.prune(now);
        let mut plan = Plan { ops: Vec::with_capacity(items.len()), ..Default::default() };
        let mut pending: HashMap<(&str, &str), usize> = HashMap::new();
        let mut topic: Option<(&str, u32)> = None;
        for p in items {
            let tid = match topic {
                Some((t, tid)) if std::ptr::eq(t, p.topic) || t == p.topic => tid,
                _ => {
                    let tid = g.state.intern(p.topic);
                    topic = Some((p.topic, tid));
                    tid
                }
            };
            // The operations name the topic by its index in the state
            // (interned above, under this lock): no name to share per message.
            let name = TopicRef::Id(tid);
            // The key's line, found once here and handed to `apply` with
            // the message; its shared metadata when the publish has nothing
            // else to carry.
            let (line, shared) = match p.ordering_key {
                Some(k) => {
                    let share = p.dedup_key.is_none()
                        && p.headers.is_empty()
                        && p.correlation_id.is_none()
                        && p.causation_id.is_none();
                    g.state.line_of(tid, k, p.priority, share)
                }
                None => (crate::types::NO_LINE, None),
            };
            let meta = shared.or_else(|| build_meta(p));
            let visible_at = p.delay.filter(|d| !d.is_zero()).map(|d| micros_after(now, d));
            if let Some(v) = visible_at {
                plan.earliest_delay = Some(plan.earliest_delay.map_or(v, |e: u64| e.min(v)));
            }
            let Some(key) = p.dedup_key else {
                if opts.expected_version.is_some() {
                    return Err(Error::Invalid("expected_version needs a dedup_key".into()));
                }
                plan.push_new(name, p, (meta, line), 1, visible_at, now, None);
                continue;
            };
            // An earlier item of this batch holds the key.
            if let Some(&ix) = pending.get(&(p.topic, key)) {
                let (held_id, version) = match &plan.ops[ix] {
                    Op::Enqueue { msg, .. } => (None, msg.version),
                    Op::Replace { id, version, .. } => (Some(*id), *version),
                    _ => unreachable!("pending points at enqueue/replace"),
                };
                check_version(key, opts.expected_version, version)?;
                let target = held_id.map_or(Target::New(ix), Target::Existing);
                if opts.on_duplicate == OnDuplicate::Keep {
                    plan.kept += 1;
                } else {
                    plan.replaced += 1;
                    match &mut plan.ops[ix] {
                        Op::Enqueue { msg, .. } => {
                            // As a replace of a queued message does: its place
                            // stays, so its priority and ordering key do too.
                            let (priority, key) = (msg.priority(), msg.ordering_key().map(str::to_owned));
                            msg.payload = p.payload.into();
                            msg.meta = meta;
                            if msg.priority() != priority || msg.ordering_key() != key.as_deref() {
                                let x = msg.meta_mut();
                                x.priority = priority;
                                x.ordering_key = key;
                            }
                            msg.version += 1;
                        }
                        Op::Replace { payload, meta: m, version, .. } => {
                            *payload = p.payload.into();
                            *m = meta;
                            *version += 1;
                        }
                        _ => unreachable!(),
                    }
                }
                plan.targets.push(target);
                continue;
            }
            let holder =
                g.state.topic_id(p.topic).and_then(|t| g.state.dedup.get(t, key)).filter(|h| !gone.contains(h));
            let Some(hid) = holder else {
                // Acked within its dedup window: answered, not enqueued.
                if let Some(rid) = g.state.topic_id(p.topic).and_then(|t| g.state.remembered.get(t, key, now)) {
                    plan.kept += 1;
                    plan.targets.push(Target::Existing(rid));
                    continue;
                }
                check_version(key, opts.expected_version, 0)?;
                let ix = plan.push_new(name, p, (meta, line), 1, visible_at, now, None);
                pending.insert((p.topic, key), ix);
                continue;
            };
            let h = g.state.slab.get(hid).expect("dedup index points at a live message");
            check_version(key, opts.expected_version, h.version)?;
            if opts.on_duplicate == OnDuplicate::Keep {
                plan.kept += 1;
                plan.targets.push(Target::Existing(hid));
                continue;
            }
            if h.state == MsgState::InFlight {
                plan.superseded += 1;
                let ix = plan.push_new(name, p, (meta, line), h.version + 1, visible_at, now, Some(hid));
                pending.insert((p.topic, key), ix);
            } else {
                plan.replaced += 1;
                plan.ops.push(Op::Replace { id: hid, version: h.version + 1, payload: p.payload.into(), meta });
                pending.insert((p.topic, key), plan.ops.len() - 1);
                plan.targets.push(Target::Existing(hid));
            }
        }
        Ok(plan)
    }

    /// Gives every new message of the plan a slot and an id: first the
    /// slots of `gone` (messages the same record acks before the new ones
    /// are added: on a full queue there is no other room for a handler's
    /// chained publishes), then free ones. Returns the slots taken from
    /// `gone` (no allocation when there are none). On error, the free slots
    /// taken are given back.
    fn assign_ids(&self, g: &mut Inner, plan: &mut Plan, gone: &[u64]) -> Result<Vec<u32>> {
        let mut reused = Vec::new();
        for i in 0..plan.ops.len() {
            let Op::Enqueue { msg, .. } = &mut plan.ops[i] else { continue };
            let from_gone = gone.get(reused.len()).map(|id| crate::types::slot_of(*id));
            let slot = from_gone.unwrap_or_else(|| g.state.slab.alloc());
            match g.state.new_id(slot) {
                Ok(id) => {
                    msg.id = id;
                    if from_gone.is_some() {
                        reused.push(slot);
                    }
                }
                Err(e) => {
                    if from_gone.is_none() {
                        g.state.slab.unalloc(slot);
                    }
                    let given = plan.ops[..i].iter().filter_map(|op| match op {
                        Op::Enqueue { msg, .. } => Some(crate::types::slot_of(msg.id)),
                        _ => None,
                    });
                    for s in given.skip(reused.len()) {
                        g.state.slab.unalloc(s);
                    }
                    return Err(e);
                }
            }
        }
        Ok(reused)
    }

    /// Waits (per `wait`) until the plan fits, then commits it with `prefix`
    /// operations (acks) in the same record. Returns the result ids and LSN.
    pub(crate) fn publish_locked(
        &self,
        g: &mut parking_lot::MutexGuard<'_, Inner>,
        items: &[Publish<'_>],
        opts: PublishOpts,
        prefix: Vec<Op>,
        freed: usize,
        wait: Wait,
    ) -> Result<(Vec<u64>, Option<u64>)> {
        let mut plan = loop {
            self.ensure_healthy(g)?;
            let gone: &[u64] = match prefix.first() {
                Some(Op::Ack { ids }) => ids,
                _ => &[],
            };
            let plan = self.plan(g, items, opts, gone)?;
            let live = g.state.slab.live() - freed;
            if plan.new_count == 0 || live + plan.new_count <= self.opts.capacity {
                break plan;
            }
            self.wait_for_room(g, plan.new_count, freed, wait)?;
        };
        let gone: &[u64] = match prefix.first() {
            Some(Op::Ack { ids }) => ids,
            _ => &[],
        };
        let reused = self.assign_ids(g, &mut plan, gone)?;
        let base = prefix.len();
        let ops = if prefix.is_empty() {
            std::mem::take(&mut plan.ops)
        } else {
            let mut ops = prefix;
            ops.append(&mut plan.ops);
            ops
        };
        let mut ids = Vec::with_capacity(plan.targets.len());
        for t in &plan.targets {
            ids.push(match t {
                Target::Existing(id) => *id,
                Target::New(ix) => match &ops[base + ix] {
                    Op::Enqueue { msg, .. } => msg.id,
                    _ => unreachable!(),
                },
            });
        }
        let n_new = plan.new_count;
        let lsn = if ops.is_empty() {
            // A kept duplicate writes nothing, but its answer (the holder's
            // id, or an acked one a dedup window remembers) stands on records
            // that may not be durable yet: the caller waits for the last one
            // written, as for a record of its own (no wait once it is).
            (plan.kept > 0).then(|| g.journal.next_lsn() - 1).filter(|lsn| *lsn > 0)
        } else {
            match self.commit(g, ops) {
                Ok(lsn) => Some(lsn),
                Err(e) => {
                    // Give back the new messages' free slots (a key
                    // published twice in the batch targets one message
                    // twice; the acked messages keep theirs).
                    let mut new_slots: Vec<u32> = (ids.iter().zip(&plan.targets))
                        .filter(|(_, t)| matches!(t, Target::New(_)))
                        .map(|(id, _)| crate::types::slot_of(*id))
                        .filter(|s| !reused.contains(s))
                        .collect();
                    new_slots.sort_unstable();
                    new_slots.dedup();
                    for s in new_slots {
                        g.state.slab.unalloc(s);
                    }
                    return Err(e);
                }
            }
        };
        // The acks freed these slots and the new messages filled them.
        for s in reused {
            g.state.slab.claim(s);
        }
        let c = &mut g.counters;
        c.published += n_new as u64;
        c.replaced += plan.replaced;
        c.kept += plan.kept;
        c.superseded += plan.superseded;
        // Wake consumers of each topic that got a ready message.
        let mut last = u32::MAX;
        for (id, t) in ids.iter().zip(&plan.targets) {
            if let (Target::New(_), Some(m)) = (t, g.state.slab.get(*id))
                && m.state == MsgState::Ready
                && m.topic != last
            {
                last = m.topic;
                self.wake_topic(g, m.topic, n_new);
            }
        }
        if let Some(at) = plan.earliest_delay {
            self.wake_timer_for(g, at);
        }
        Ok((ids, lsn))
    }

    /// `need` new messages do not fit (beside `freed`, messages the same
    /// record removes): waits per `wait` for room. `Error::Full` when they
    /// never can, or when the wait ran out and they still do not; `Ok`:
    /// plan again (the state may have changed meanwhile).
    fn wait_for_room(
        &self,
        g: &mut parking_lot::MutexGuard<'_, Inner>,
        need: usize,
        freed: usize,
        wait: Wait,
    ) -> Result<()> {
        let full = |waited| Error::Full { capacity: self.opts.capacity, need, waited };
        if need > self.opts.capacity {
            return Err(full(false));
        }
        let timed_out = match wait {
            Wait::No => true,
            Wait::Until(t) => self.not_full.wait_until(g, t).timed_out(),
            Wait::Forever => {
                self.not_full.wait(g);
                false
            }
        };
        if timed_out && g.state.slab.live() - freed + need > self.opts.capacity {
            return Err(full(!matches!(wait, Wait::No)));
        }
        Ok(())
    }

    /// `publish_locked` of messages of `topic` with nothing but a payload
    /// each (at least one): the same ids, record bytes, state and wake-ups
    /// as the plan of the equivalent `Publish`es would give, without a
    /// plan (one `Op::EnqueuePlain`).
    fn publish_plain_locked(
        &self,
        g: &mut parking_lot::MutexGuard<'_, Inner>,
        topic: &str,
        payloads: &[&[u8]],
        wait: Wait,
    ) -> Result<(Vec<u64>, Option<u64>)> {
        let n = payloads.len();
        debug_assert!(n > 0, "an empty batch takes the planned path");
        loop {
            self.ensure_healthy(g)?;
            if g.state.slab.live() + n <= self.opts.capacity {
                break;
            }
            self.wait_for_room(g, n, 0, wait)?;
        }
        let now = self.clock.now();
        g.state.remembered.prune(now);
        let tid = g.state.intern(topic);
        let (mut ids, mut slots) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            ids.push(g.state.alloc_message(&mut slots)?);
        }
        let msgs = ids.iter().zip(payloads).map(|(&id, &p)| (id, p.into())).collect();
        let op = Op::EnqueuePlain { topic: TopicRef::Id(tid), enqueued_at: now, msgs };
        let lsn = self.commit_new(g, vec![op], slots)?;
        g.counters.published += n as u64;
        self.wake_topic(g, tid, n);
        Ok((ids, Some(lsn)))
    }
}

impl Publish<'_> {
    /// Nothing but a topic and a payload (`Op::EnqueuePlain` can carry it).
    fn is_plain(&self) -> bool {
        self.dedup_key.is_none()
            && self.delay.is_none_or(|d| d.is_zero())
            && self.headers.is_empty()
            && self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.priority == 0
            && self.ordering_key.is_none()
            && self.dedup_window.is_none()
    }
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    fn push_new(
        &mut self,
        topic: TopicRef,
        p: &Publish<'_>,
        (meta, line): (Option<Arc<Meta>>, u32),
        version: u32,
        visible_at: Option<u64>,
        now: u64,
        supersedes: Option<u64>,
    ) -> usize {
        let msg = Message {
            id: 0,
            topic: 0,
            state: if visible_at.is_some() { MsgState::Delayed } else { MsgState::Ready },
            superseded: false,
            attempt: 0,
            version,
            enqueued_at: now,
            visible_at: visible_at.unwrap_or(0),
            lease_token: 0,
            lease_deadline: 0,
            ticket: 0,
            // A hint for `State::key_insert`, which sets the real line.
            line,
            payload: p.payload.into(),
            meta,
        };
        self.ops.push(Op::Enqueue { topic, msg, supersedes });
        self.new_count += 1;
        self.targets.push(Target::New(self.ops.len() - 1));
        self.ops.len() - 1
    }
}

fn check_version(key: &str, expected: Option<u32>, actual: u32) -> Result<()> {
    match expected {
        Some(e) if e != actual => Err(Error::VersionConflict { key: key.to_owned(), expected: e, actual }),
        _ => Ok(()),
    }
}

/// The message's options as stored. An empty correlation or causation id
/// is stored as none, as every backend reads it back (a Redis hash cannot
/// tell an empty field from a missing one).
fn build_meta(p: &Publish<'_>) -> Option<Arc<Meta>> {
    let correlation_id = p.correlation_id.filter(|s| !s.is_empty());
    let causation_id = p.causation_id.filter(|s| !s.is_empty());
    if p.dedup_key.is_none()
        && p.headers.is_empty()
        && correlation_id.is_none()
        && causation_id.is_none()
        && p.priority == 0
        && p.ordering_key.is_none()
    {
        return None;
    }
    if p.dedup_key.is_none()
        && p.headers.is_empty()
        && correlation_id.is_none()
        && causation_id.is_none()
        && p.ordering_key.is_none()
    {
        return Some(Meta::priority_only(p.priority));
    }
    Some(Arc::new(Meta {
        dedup_key: p.dedup_key.map(str::to_owned),
        headers: p.headers.to_vec(),
        correlation_id: correlation_id.map(str::to_owned),
        causation_id: causation_id.map(str::to_owned),
        first_failed_at: None,
        priority: p.priority,
        ordering_key: p.ordering_key.map(str::to_owned),
        dedup_window: p.dedup_window.filter(|_| p.dedup_key.is_some()).map(|d| micros_after(0, d)),
    }))
}

impl Engine {
    /// Publishes one message; returns its id (or the id of the message that
    /// now carries its dedup key) and the LSN to wait on for durability.
    pub fn publish(&self, p: Publish<'_>, opts: PublishOpts, wait: Wait) -> Result<(u64, Option<u64>)> {
        self.sh.check_limits(&p)?;
        let mut g = self.sh.lock_healthy()?;
        let (ids, lsn) = if p.is_plain() && opts.expected_version.is_none() {
            self.sh.publish_plain_locked(&mut g, p.topic, &[p.payload], wait)?
        } else {
            self.sh.publish_locked(&mut g, &[p], opts, Vec::new(), 0, wait)?
        };
        Ok((ids[0], lsn))
    }

    /// Publishes a batch as one journal record: all or nothing, and it waits
    /// for room for the whole batch.
    pub fn publish_many(
        &self,
        items: &[Publish<'_>],
        opts: PublishOpts,
        wait: Wait,
    ) -> Result<(Vec<u64>, Option<u64>)> {
        for p in items {
            self.sh.check_limits(p)?;
        }
        if let Some(first) = items.first()
            && opts.expected_version.is_none()
            && items.iter().all(|p| p.is_plain() && p.topic == first.topic)
        {
            let payloads: Vec<&[u8]> = items.iter().map(|p| p.payload).collect();
            let mut g = self.sh.lock_healthy()?;
            return self.sh.publish_plain_locked(&mut g, first.topic, &payloads, wait);
        }
        let mut g = self.sh.lock_healthy()?;
        self.sh.publish_locked(&mut g, items, opts, Vec::new(), 0, wait)
    }

    /// `publish_many` of messages of `topic` with nothing but a payload
    /// each, without building a `Publish` per message (the bindings' list
    /// of `bytes`).
    pub fn publish_payloads(&self, topic: &str, payloads: &[&[u8]], wait: Wait) -> Result<(Vec<u64>, Option<u64>)> {
        if payloads.is_empty() {
            return self.publish_many(&[], PublishOpts::default(), wait);
        }
        for &payload in payloads {
            self.sh.check_limits(&Publish { topic, payload, ..Default::default() })?;
        }
        let mut g = self.sh.lock_healthy()?;
        self.sh.publish_plain_locked(&mut g, topic, payloads, wait)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::record::{Op, TopicRef};
    use crate::storage::FaultPoint;
    use crate::types::{Options, Wait};
    use crate::{Engine, Publish, PublishOpts};
    use std::time::{Duration, Instant};

    fn open(dir: &std::path::Path, capacity: usize) -> Engine {
        Engine::open(dir, Options { capacity, ..Options::default() }).unwrap()
    }

    /// (slots neither free nor holding a message, live messages)
    fn slots(e: &Engine) -> (usize, usize) {
        let g = e.sh.inner.lock();
        let s = &g.state.slab;
        (s.slot_count() - s.free_slots() - s.live(), s.live())
    }

    fn drain(e: &Engine, topic: &str) -> Vec<(u64, Vec<u8>)> {
        let ds = e.checkout(topic, 1000, Duration::from_secs(60), Wait::No).unwrap();
        let leases: Vec<_> = ds.iter().map(|d| (d.id, d.lease_token)).collect();
        e.ack(&leases, &[], Wait::No).unwrap();
        ds.into_iter().map(|d| (d.id, d.payload.to_vec())).collect()
    }

    fn full(err: Error) -> (usize, bool) {
        match err {
            Error::Full { need, waited, .. } => (need, waited),
            other => panic!("expected Full, got {other}"),
        }
    }

    #[test]
    fn a_plain_batch_is_published_whole_in_order_and_read_back_after_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let e = open(&dir, 100);
        let (ids, lsn) = e.publish_payloads("t", &[b"a", b"", b"ccc"], Wait::No).unwrap();
        assert!(lsn.is_some() && ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        // `publish_many` of plain items goes the same way, with the next ids.
        let items: Vec<Publish<'_>> =
            [b"d", b"e"].iter().map(|p| Publish { topic: "t", payload: *p, ..Default::default() }).collect();
        let (mut more, _) = e.publish_many(&items, PublishOpts::default(), Wait::No).unwrap();
        assert!(more[0] > ids[2]);
        // So does a single plain publish; one with an option is planned.
        let one = |payload: &'static [u8], delay: Option<Duration>| Publish {
            topic: "t",
            payload,
            delay,
            ..Default::default()
        };
        more.push(e.publish(one(b"f", Some(Duration::ZERO)), PublishOpts::default(), Wait::No).unwrap().0);
        let delayed =
            e.publish(one(b"g", Some(Duration::from_secs(3600))), PublishOpts::default(), Wait::No).unwrap().0;
        more.push(e.publish(one(b"h", None), PublishOpts::default(), Wait::No).unwrap().0);
        assert!(more.windows(2).all(|w| w[0] < w[1]) && delayed > more[2] && delayed < more[3], "{more:?} {delayed}");
        let stat = |e: &Engine, key: &str| e.stats().unwrap().into_iter().find(|(k, _)| *k == key).unwrap().1;
        assert_eq!(stat(&e, "published"), crate::Stat::Int(8));
        // What a kill would leave (a copy of the open queue): its journal is
        // replayed, as a close's snapshot would not show.
        let copy = tmp.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            // A spare being made (`*.tmp`) is not part of the queue, and one
            // renamed since the listing is not needed either.
            if f.extension().is_none_or(|x| x != "tmp")
                && let Err(err) = std::fs::copy(&f, copy.join(f.file_name().unwrap()))
            {
                assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{}: {err}", f.display());
            }
        }
        e.close().unwrap();
        let killed = open(&copy, 100);
        assert_eq!(
            killed.stats().unwrap().into_iter().find(|(k, _)| *k == "recovered_records").unwrap().1,
            crate::Stat::Int(5)
        );
        let replayed = drain(&killed, "t");
        killed.close().unwrap();
        let e = open(&dir, 100);
        let got = drain(&e, "t");
        assert_eq!(replayed, got);
        let want: Vec<(u64, Vec<u8>)> = ids
            .iter()
            .chain(&more)
            .copied()
            .zip([&b"a"[..], b"", b"ccc", b"d", b"e", b"f", b"h"].map(<[u8]>::to_vec))
            .collect();
        assert_eq!(got, want);
        e.close().unwrap();
    }

    #[test]
    fn a_plain_batch_writes_and_applies_what_the_plan_of_its_items_would() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = crate::clock::Clock::Manual { start: 1_700_000_000_000_000 };
        let open = |name: &str| Engine::open(tmp.path().join(name), Options { clock, ..Options::default() }).unwrap();
        let (planned, plain) = (open("planned"), open("plain"));
        let payloads: [&[u8]; 3] = [b"a", b"", &[0xFF; 300]];
        let items: Vec<Publish<'_>> =
            payloads.iter().map(|&payload| Publish { topic: "t", payload, ..Default::default() }).collect();
        // The planned path's operations, encoded, then committed.
        let (ids, bytes, tid) = {
            let mut g = planned.sh.lock_healthy().unwrap();
            let mut plan = planned.sh.plan(&mut g, &items, PublishOpts::default(), &[]).unwrap();
            planned.sh.assign_ids(&mut g, &mut plan, &[]).unwrap();
            let ids: Vec<u64> = (plan.ops.iter())
                .map(|op| match op {
                    Op::Enqueue { msg, .. } => msg.id,
                    other => panic!("planned {other:?}"),
                })
                .collect();
            let mut bytes = Vec::new();
            let topics = &g.state.topics;
            crate::record::encode_txn_named(&plan.ops, &|t| topics.get(t as usize).map(|t| &*t.name), &mut bytes);
            let tid = g.state.topic_id("t").unwrap();
            planned.sh.commit(&mut g, plan.ops).unwrap();
            (ids, bytes, tid)
        };
        // The plain path, for real; and its operation, as it builds it.
        let (plain_ids, _) = plain.publish_payloads("t", &payloads, Wait::No).unwrap();
        assert_eq!(plain_ids, ids);
        let op = Op::EnqueuePlain {
            topic: TopicRef::Id(tid),
            enqueued_at: plain.sh.clock.now(),
            msgs: ids.iter().zip(payloads).map(|(&id, p)| (id, p.into())).collect(),
        };
        let g = plain.sh.inner.lock();
        let mut plain_bytes = Vec::new();
        let topics = &g.state.topics;
        crate::record::encode_txn_named(&[op], &|t| topics.get(t as usize).map(|t| &*t.name), &mut plain_bytes);
        assert_eq!(plain_bytes, bytes, "the same record");
        let h = planned.sh.inner.lock();
        for id in &ids {
            assert_eq!(g.state.slab.get(*id), h.state.slab.get(*id), "message {id:x}");
        }
        assert_eq!(g.state.topics[tid as usize].n_ready, h.state.topics[tid as usize].n_ready);
        assert_eq!(g.counters.published, h.counters.published + 3, "commit alone counts nothing");
    }

    #[test]
    fn a_plain_batch_that_does_not_fit_is_refused_whole_or_waits_for_room() {
        let tmp = tempfile::tempdir().unwrap();
        let e = std::sync::Arc::new(open(&tmp.path().join("q"), 4));
        let four: [&[u8]; 5] = [b"1", b"2", b"3", b"4", b"5"];
        assert_eq!(full(e.publish_payloads("t", &four, Wait::Forever).unwrap_err()), (5, false), "never fits");
        e.publish_payloads("t", &four[..3], Wait::No).unwrap();
        assert_eq!(full(e.publish_payloads("t", &four[..2], Wait::No).unwrap_err()), (2, false));
        let soon = Wait::Until(Instant::now() + Duration::from_millis(20));
        assert_eq!(full(e.publish_payloads("t", &four[..2], soon).unwrap_err()), (2, true));
        assert_eq!(slots(&e), (0, 3), "a refused batch adds nothing");
        // Room made while it waits: the batch goes in then.
        let consumer = std::thread::spawn({
            let e = e.clone();
            move || {
                std::thread::sleep(Duration::from_millis(30));
                drain(&e, "t").len()
            }
        });
        let (ids, _) =
            e.publish_payloads("t", &four[3..], Wait::Until(Instant::now() + Duration::from_secs(30))).unwrap();
        assert_eq!((ids.len(), consumer.join().unwrap()), (2, 3));
        assert_eq!(slots(&e).1, 2);
    }

    #[test]
    fn a_plain_batch_is_checked_before_anything_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Engine::open(tmp.path().join("q"), Options { max_payload: 10, ..Options::default() }).unwrap();
        assert_eq!(e.publish_payloads("t", &[], Wait::No).unwrap(), (Vec::new(), None));
        let err = e.publish_payloads("", &[b"a"], Wait::No).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        let err = e.publish_payloads("t", &[b"a", &[0; 11]], Wait::No).unwrap_err();
        assert!(matches!(err, Error::Limit { what: "payload", size: 11, limit: 10 }), "{err}");
        assert_eq!(slots(&e), (0, 0), "nothing published, no slot taken");
        assert_eq!(e.sh.inner.lock().state.topic_id("t"), None, "no topic made");
    }

    #[test]
    fn a_plain_batch_refused_for_want_of_ids_gives_its_slots_back() {
        let tmp = tempfile::tempdir().unwrap();
        let e = open(&tmp.path().join("q"), 10);
        e.publish_payloads("t", &[b"a"], Wait::No).unwrap();
        e.sh.inner.lock().state.set_next_seq((1u64 << crate::types::SEQ_BITS) - 2);
        let err = e.publish_payloads("t", &[b"b", b"c", b"d"], Wait::No).unwrap_err();
        assert!(err.to_string().contains("used all"), "{err}");
        assert_eq!(slots(&e), (0, 1), "every slot the batch took is free again");
        assert_eq!(drain(&e, "t").len(), 1);
    }

    #[test]
    fn a_plain_batch_whose_record_is_not_written_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let e = open(&dir, 1000);
        let payload = [7u8; 100];
        // 100 messages: a record big enough for `pwrite` (`WRITE_MIN`).
        let batch = vec![&payload[..]; 100];
        e.inject_fault(FaultPoint::JournalWrite, libc::EIO, 1);
        let err = e.publish_payloads("t", &batch, Wait::No).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EIO), "{err}");
        assert_eq!(slots(&e), (0, 0), "no message, no slot held");
        let (ids, _) = e.publish_payloads("t", &batch[..2], Wait::No).unwrap();
        e.close().unwrap();
        let e = open(&dir, 1000);
        assert_eq!(drain(&e, "t").into_iter().map(|(id, _)| id).collect::<Vec<_>>(), ids);
        e.close().unwrap();
    }

    #[test]
    fn a_plain_batch_wakes_a_waiting_checkout() {
        let tmp = tempfile::tempdir().unwrap();
        let e = std::sync::Arc::new(open(&tmp.path().join("q"), 10));
        let waiter = std::thread::spawn({
            let e = e.clone();
            move || e.checkout("t", 10, Duration::from_secs(60), Wait::Until(Instant::now() + Duration::from_secs(30)))
        });
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        e.publish_payloads("t", &[b"x", b"y"], Wait::No).unwrap();
        let got = waiter.join().unwrap().unwrap();
        assert!(!got.is_empty() && started.elapsed() < Duration::from_secs(10));
    }
}

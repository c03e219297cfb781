//! [`Store`]: what a queue offers, whoever holds it — the [`Engine`] of this
//! process, or a shared queue (`crate::shared`) whose owner may be another
//! process. The Python bindings are written once against it.

use crate::engine::{AckOutcome, Checkout, Engine, Publish, PublishOpts, Stat, TopicPolicy, TopicStat};
use crate::error::Result;
use crate::histogram::HistogramRead;
use crate::types::{DeadLetter, Delivered, Durability, Failure, Lsn, Wait};
use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

/// `stats()` entries: a name and a value.
pub type Stats = Vec<(Cow<'static, str>, Stat)>;
/// `histograms()` entries.
pub type Histograms = Vec<(Cow<'static, str>, HistogramRead)>;

/// The queue operations, with the engine's semantics (see [`Engine`]).
/// Returned LSNs are for [`Store::wait_durable`]; a store that waits
/// before answering returns `None`.
pub trait Store: Send + Sync {
    fn path(&self) -> &Path;
    fn instance_id(&self) -> u64;
    fn durability(&self) -> Durability;
    fn is_closed(&self) -> bool;
    fn is_forked(&self) -> bool;
    fn check_not_forked(&self) -> Result<()>;
    /// True when a call may have to wait (for a lock, a socket, a disk):
    /// the caller should let other threads run meanwhile.
    fn would_wait(&self) -> bool;
    /// True for a store that only submits requests (a shared queue's client
    /// for an event loop): each call returns `Error::Submitted` at once and
    /// the owner does its waiting, so a call is given its whole wait (room,
    /// a message) the first time.
    fn submits(&self) -> bool {
        false
    }
    fn wait_durable(&self, lsn: Option<Lsn>) -> Result<()>;

    fn publish(&self, p: Publish<'_>, opts: PublishOpts, wait: Wait) -> Result<(u64, Option<Lsn>)>;
    fn publish_many(&self, items: &[Publish<'_>], opts: PublishOpts, wait: Wait) -> Result<(Vec<u64>, Option<Lsn>)>;
    /// `publish_many` of messages of `topic` with nothing but a payload
    /// each ([`Engine::publish_payloads`]).
    fn publish_payloads(&self, topic: &str, payloads: &[&[u8]], wait: Wait) -> Result<(Vec<u64>, Option<Lsn>)> {
        let items: Vec<Publish<'_>> =
            payloads.iter().map(|&payload| Publish { topic, payload, ..Default::default() }).collect();
        self.publish_many(&items, PublishOpts::default(), wait)
    }
    fn checkout_with(&self, topic: &str, c: Checkout) -> Result<Vec<Delivered>>;
    fn interrupts(&self, topic: &str) -> Result<u64>;
    fn interrupt(&self, topic: &str) -> Result<()>;
    fn ack(&self, leases: &[(u64, u64)], publish: &[Publish<'_>], wait: Wait) -> Result<AckOutcome>;
    fn release(&self, leases: &[(u64, u64)]) -> Result<AckOutcome>;
    fn nack(
        &self,
        id: u64,
        token: u64,
        delay: Option<Duration>,
        failure: Failure,
        dead_letter_reason: Option<&str>,
    ) -> Result<Option<Lsn>>;
    fn extend(&self, id: u64, token: u64, by: Duration) -> Result<u64>;
    fn set_topic_policy(&self, topic: &str, policy: TopicPolicy) -> Result<()>;
    fn is_superseded(&self, id: u64) -> Result<bool>;
    /// `Engine::cancel`: what the message was (`CANCEL_*`) and the LSN.
    fn cancel(&self, id: u64) -> Result<(u8, Option<Lsn>)>;

    fn stats(&self) -> Result<Stats>;
    fn histograms(&self) -> Result<Histograms>;
    fn topic_stats(&self) -> Result<Vec<TopicStat>>;
    fn snapshot(&self) -> Result<Lsn>;
    fn dlq_list(&self, topic: Option<&str>, reason: Option<&str>, limit: Option<usize>) -> Result<Vec<DeadLetter>>;
    fn dlq_get(&self, id: u64) -> Result<DeadLetter>;
    fn dlq_replay(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)>;
    fn dlq_purge(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)>;
    fn close(&self) -> Result<()>;

    /// Runs `f` on the engine itself when it is in this process (test
    /// hooks); false if it is not.
    fn with_engine(&self, f: &mut dyn FnMut(&Engine)) -> bool;
}

impl Store for Engine {
    fn path(&self) -> &Path {
        Engine::path(self)
    }
    fn instance_id(&self) -> u64 {
        Engine::instance_id(self)
    }
    fn durability(&self) -> Durability {
        Engine::durability(self)
    }
    fn is_closed(&self) -> bool {
        Engine::is_closed(self)
    }
    fn is_forked(&self) -> bool {
        Engine::is_forked(self)
    }
    fn check_not_forked(&self) -> Result<()> {
        Engine::check_not_forked(self)
    }
    fn would_wait(&self) -> bool {
        Engine::would_wait(self)
    }
    fn wait_durable(&self, lsn: Option<Lsn>) -> Result<()> {
        Engine::wait_durable(self, lsn)
    }
    fn publish(&self, p: Publish<'_>, opts: PublishOpts, wait: Wait) -> Result<(u64, Option<Lsn>)> {
        Engine::publish(self, p, opts, wait)
    }
    fn publish_many(&self, items: &[Publish<'_>], opts: PublishOpts, wait: Wait) -> Result<(Vec<u64>, Option<Lsn>)> {
        Engine::publish_many(self, items, opts, wait)
    }
    fn publish_payloads(&self, topic: &str, payloads: &[&[u8]], wait: Wait) -> Result<(Vec<u64>, Option<Lsn>)> {
        Engine::publish_payloads(self, topic, payloads, wait)
    }
    fn checkout_with(&self, topic: &str, c: Checkout) -> Result<Vec<Delivered>> {
        Engine::checkout_with(self, topic, c)
    }
    fn interrupts(&self, topic: &str) -> Result<u64> {
        Engine::interrupts(self, topic)
    }
    fn interrupt(&self, topic: &str) -> Result<()> {
        Engine::interrupt(self, topic)
    }
    fn ack(&self, leases: &[(u64, u64)], publish: &[Publish<'_>], wait: Wait) -> Result<AckOutcome> {
        Engine::ack(self, leases, publish, wait)
    }
    fn release(&self, leases: &[(u64, u64)]) -> Result<AckOutcome> {
        Engine::release(self, leases)
    }
    fn nack(
        &self,
        id: u64,
        token: u64,
        delay: Option<Duration>,
        failure: Failure,
        dead_letter_reason: Option<&str>,
    ) -> Result<Option<Lsn>> {
        Engine::nack(self, id, token, delay, failure, dead_letter_reason)
    }
    fn extend(&self, id: u64, token: u64, by: Duration) -> Result<u64> {
        Engine::extend(self, id, token, by)
    }
    fn set_topic_policy(&self, topic: &str, policy: TopicPolicy) -> Result<()> {
        Engine::set_topic_policy(self, topic, policy)
    }
    fn is_superseded(&self, id: u64) -> Result<bool> {
        Engine::is_superseded(self, id)
    }
    fn cancel(&self, id: u64) -> Result<(u8, Option<Lsn>)> {
        Engine::cancel(self, id)
    }
    fn stats(&self) -> Result<Stats> {
        Ok(Engine::stats(self)?.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect())
    }
    fn histograms(&self) -> Result<Histograms> {
        Ok(Engine::histograms(self).into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect())
    }
    fn topic_stats(&self) -> Result<Vec<TopicStat>> {
        Engine::topic_stats(self)
    }
    fn snapshot(&self) -> Result<Lsn> {
        Engine::snapshot(self)
    }
    fn dlq_list(&self, topic: Option<&str>, reason: Option<&str>, limit: Option<usize>) -> Result<Vec<DeadLetter>> {
        Engine::dlq_list(self, topic, reason, limit)
    }
    fn dlq_get(&self, id: u64) -> Result<DeadLetter> {
        Engine::dlq_get(self, id)
    }
    fn dlq_replay(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)> {
        Engine::dlq_replay(self, ids)
    }
    fn dlq_purge(&self, ids: Option<&[u64]>) -> Result<(usize, Option<Lsn>)> {
        Engine::dlq_purge(self, ids)
    }
    fn close(&self) -> Result<()> {
        Engine::close(self)
    }
    fn with_engine(&self, f: &mut dyn FnMut(&Engine)) -> bool {
        f(self);
        true
    }
}

//! What falls due as time passes: leases that ran out and delayed messages.
//!
//! [`Shared::fire_due`] is the timer's work, done in one place for its two
//! callers: the timer thread, whenever it wakes (see `background`), and
//! [`Engine::advance_clock`], which moves a manual clock and runs it
//! synchronously at each instant something falls due on the way, so a test
//! sees the outcome a timer thread waking at each of those instants would
//! have produced, and only that one.
//!
//! A lease that ran out at `now`: its message goes back to the end of its
//! topic's ready list (its next delivery counts one more attempt), or to the
//! dead-letter ring with reason `lease_expired` when its attempts are used
//! up, or is dropped if a newer publish superseded it. Expired leases are
//! handled in deadline order, ties in id (publish) order. Then delayed
//! messages due at `now` become ready, in due order, ties in id order.

use super::{Engine, Inner, Shared};
use crate::error::{Error, Result};
use crate::record::Op;
use crate::types::Micros;
use std::time::Duration;

/// What an expiry did to a message, for the counters and wake-ups.
struct Expired {
    topic: u32,
    requeued: bool,
    superseded: bool,
}

impl Shared {
    /// Expires the leases that ran out at `now` and releases the delays due
    /// at `now`, waking whoever waits for them. If the journal refuses the
    /// expiry record, the leases are kept (retried a second later), the
    /// engine is marked degraded and the error returned; due delays are
    /// released either way.
    pub(crate) fn fire_due(&self, g: &mut Inner, now: Micros) -> Result<()> {
        let expired = self.expire_leases(g, now);
        for t in g.state.release_due(now) {
            self.wake_topic(g, t, usize::MAX);
        }
        expired
    }

    fn expire_leases(&self, g: &mut Inner, now: Micros) -> Result<()> {
        let mut due: Vec<(Micros, u64)> = Vec::new();
        while let Some(id) = g.state.leases.pop_due(now) {
            let deadline = g.state.slab.get(id).map_or(0, |m| m.lease_deadline);
            due.push((deadline, id));
        }
        if due.is_empty() {
            return Ok(());
        }
        // The heap breaks ties between equal deadlines by its shape: sort, so
        // the ready list gets them in one order only.
        due.sort_unstable();
        let mut ops = Vec::with_capacity(due.len());
        let mut what = Vec::with_capacity(due.len());
        for &(_, id) in &due {
            let op = g.expiry_op(self.opts.max_attempts, id, now, "no ack in time");
            let m = g.state.slab.get(id).expect("a leased message exists");
            what.push(Expired { topic: m.topic, requeued: matches!(op, Op::Requeue { .. }), superseded: m.superseded });
            ops.push(op);
        }
        match self.commit(g, ops) {
            Ok(_) => {
                g.counters.expired += what.len() as u64;
                for e in &what {
                    if e.requeued {
                        self.wake_topic(g, e.topic, 1);
                    } else if e.superseded {
                        g.counters.superseded_dropped += 1;
                    } else {
                        g.count_dead(e.topic);
                    }
                }
                self.room_freed();
                Ok(())
            }
            Err(e) => {
                // The disk refused the record: keep the leases and retry soon.
                let retry = now.saturating_add(1_000_000);
                for &(_, id) in &due {
                    let token = g.state.slab.get(id).map_or(0, |m| m.lease_token);
                    g.state.lease(id, token, retry);
                }
                self.mark_degraded(g, e.to_string());
                Err(e)
            }
        }
    }
}

impl Engine {
    /// The engine's time now, in microseconds since the Unix epoch: the wall
    /// clock's, or a manual clock's (see [`crate::clock`]).
    pub fn now(&self) -> Micros {
        self.sh.clock.now()
    }

    /// Moves a manual clock ([`Clock::Manual`](crate::Clock::Manual)) `by`
    /// forward and, before returning, does the timer's work for that time:
    /// at each instant a lease runs out or a delay falls due on the way, in
    /// order, expired leases come back (or are dead-lettered, or dropped if
    /// superseded) and due delays become ready, waking waiting checkouts and
    /// publishers. Returns the new time. With the system clock it fails
    /// (`Error::Invalid`): the wall clock moves by itself.
    ///
    /// ```
    /// use ringq::{Clock, Engine, Options, Publish, PublishOpts, Wait};
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let opts = Options { clock: Clock::manual(), ..Options::default() };
    /// let q = Engine::open(dir.path().join("q"), opts).unwrap();
    /// let p = Publish { topic: "t", payload: b"x", ..Default::default() };
    /// q.publish(p, PublishOpts::default(), Wait::No).unwrap();
    /// let d = q.checkout("t", 1, Duration::from_secs(30), Wait::No).unwrap();
    /// q.advance_clock(Duration::from_secs(31)).unwrap();
    /// let again = q.checkout("t", 1, Duration::from_secs(30), Wait::No).unwrap();
    /// assert_eq!((again[0].id, again[0].attempt), (d[0].id, 2));
    /// q.close().unwrap();
    /// ```
    pub fn advance_clock(&self, by: Duration) -> Result<Micros> {
        let sh = &self.sh;
        if !sh.clock.is_manual() {
            return Err(Error::Invalid(
                "advance_clock needs a manual clock (open the engine with Options { clock: Clock::Manual, .. })".into(),
            ));
        }
        let mut g = sh.open_inner()?;
        let target = sh.clock.after(by).expect("a manual clock");
        loop {
            let next = [g.state.leases.peek().map(|e| e.0), g.state.delays.peek()].into_iter().flatten().min();
            let Some(at) = next.filter(|at| *at <= target) else { break };
            let at = sh.clock.set(at).expect("a manual clock");
            sh.fire_due(&mut g, at)?;
        }
        sh.clock.set(target);
        Ok(target)
    }
}

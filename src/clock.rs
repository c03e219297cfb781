//! Where the engine reads the time.
//!
//! Every timestamp the engine stores or compares — enqueue times, lease
//! deadlines, delays falling due, failure and dead-letter times, the timer
//! thread's decisions — comes from one [`EngineClock`], chosen by
//! [`Options::clock`](crate::Options::clock):
//!
//! - [`Clock::System`] (the default): the wall clock. Reading it is a match
//!   on a two-variant enum and `SystemTime::now()`, exactly what the engine
//!   did before the clock was a parameter: no dynamic call, no lock.
//! - [`Clock::Manual`]: a clock for tests that never moves by itself. Only
//!   [`Engine::advance_clock`](crate::Engine::advance_clock) moves it, and
//!   that call also does the timer thread's work for the time that passed
//!   before it returns, so lease expiry and delays are tested without
//!   sleeping and with one possible outcome.
//!
//! Waits measured in real time stay on real time with either clock: a
//! call's own `timeout` (`Wait::Until(Instant)`), the flusher's
//! `fsync_interval`, the time-based snapshot trigger
//! (`snapshot_interval`), group-commit gathering. They bound how long a
//! caller or a background thread sleeps, not when a message's state changes.

use crate::types::{Micros, micros_after, now_micros};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which clock an engine reads (an option: see [`Options`](crate::Options)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The wall clock (microseconds since the Unix epoch).
    #[default]
    System,
    /// A clock that stands at `start` (microseconds since the Unix epoch)
    /// until [`Engine::advance_clock`](crate::Engine::advance_clock) moves it.
    Manual { start: Micros },
}

impl Clock {
    /// A manual clock that starts at the wall clock's time now.
    pub fn manual() -> Clock {
        Clock::Manual { start: now_micros() }
    }
}

/// The clock an open engine reads: the wall clock, or a manual one's time.
#[derive(Debug)]
pub(crate) enum EngineClock {
    System,
    /// Written only under the engine's lock (by `advance_clock`); an atomic
    /// so that reading it never needs that lock.
    Manual(AtomicU64),
}

impl EngineClock {
    pub fn new(kind: Clock) -> Self {
        match kind {
            Clock::System => EngineClock::System,
            Clock::Manual { start } => EngineClock::Manual(AtomicU64::new(start)),
        }
    }

    /// The time now (microseconds since the Unix epoch).
    #[inline]
    pub fn now(&self) -> Micros {
        match self {
            EngineClock::System => now_micros(),
            EngineClock::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, EngineClock::Manual(_))
    }

    /// Sets a manual clock to `at` (never backwards); `None` for the system clock.
    pub fn set(&self, at: Micros) -> Option<Micros> {
        match self {
            EngineClock::System => None,
            EngineClock::Manual(t) => Some(t.fetch_max(at, Ordering::AcqRel).max(at)),
        }
    }

    /// The manual clock's time `by` from now; `None` for the system clock.
    pub fn after(&self, by: Duration) -> Option<Micros> {
        match self {
            EngineClock::System => None,
            EngineClock::Manual(t) => Some(micros_after(t.load(Ordering::Acquire), by)),
        }
    }

    /// How long the timer thread may sleep before `at` falls due: real time
    /// for the wall clock; `None` (until something wakes it) for a manual
    /// clock, whose time passes only in `advance_clock`, which does the
    /// timer's work itself.
    pub fn until(&self, at: Micros) -> Option<Duration> {
        match self {
            EngineClock::System => Some(Duration::from_micros(at.saturating_sub(now_micros()))),
            EngineClock::Manual(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_set_and_never_goes_back() {
        let c = EngineClock::new(Clock::Manual { start: 1_000 });
        assert!(c.is_manual());
        assert_eq!(c.now(), 1_000);
        assert_eq!(c.after(Duration::from_millis(2)), Some(3_000));
        assert_eq!(c.now(), 1_000, "after() only computes");
        assert_eq!(c.set(5_000), Some(5_000));
        assert_eq!(c.set(4_000), Some(5_000), "never backwards");
        assert_eq!(c.now(), 5_000);
        assert_eq!(c.until(9_000), None, "the timer thread does not wait for a manual clock");
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock_and_cannot_be_set() {
        let c = EngineClock::new(Clock::System);
        let (a, now, b) = (now_micros(), c.now(), now_micros());
        assert!(a <= now && now <= b);
        assert_eq!(c.set(1), None);
        assert_eq!(c.after(Duration::from_secs(1)), None);
        assert!(c.until(now_micros() + 5_000_000).is_some_and(|d| d <= Duration::from_secs(5)));
    }
}

//! Latency histograms that the engine's background threads fill without a
//! lock: one relaxed atomic add per observation, read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds in seconds (the same as the dispatcher's handler
/// histograms); one more bucket counts everything above the last bound.
pub const BOUNDS_SECONDS: [f64; 18] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Per-bucket counts (not cumulative) and the sum of observations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A read of a [`Histogram`]: `counts[i]` observations fell in
/// `(BOUNDS_SECONDS[i-1], BOUNDS_SECONDS[i]]`, the last one above every bound.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramRead {
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS_SECONDS.partition_point(|&b| b < s);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn read(&self) -> HistogramRead {
        HistogramRead {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_the_last_is_overflow() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // <= 0.0001
        h.observe(Duration::from_micros(100)); // == 0.0001: same bucket
        h.observe(Duration::from_micros(101)); // next bucket
        h.observe(Duration::from_millis(3)); // (0.0025, 0.005]
        h.observe(Duration::from_secs(61)); // overflow
        let r = h.read();
        assert_eq!(r.counts.len(), BOUNDS_SECONDS.len() + 1);
        assert_eq!(r.counts[0], 2);
        assert_eq!(r.counts[1], 1);
        assert_eq!(r.counts[5], 1);
        assert_eq!(r.counts[BOUNDS_SECONDS.len()], 1);
        assert_eq!(r.counts.iter().sum::<u64>(), 5);
        assert!((r.sum_seconds - (0.00005 + 0.0001 + 0.000101 + 0.003 + 61.0)).abs() < 1e-9);
    }
}

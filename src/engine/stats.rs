//! What the engine reports: `stats()`, latency histograms, per-topic counts.

use super::{Engine, Stat};
use crate::error::Result;
use crate::histogram::HistogramRead;

/// Per topic: ready, in flight, delayed, and dead-lettered since open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStat {
    pub name: String,
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead_lettered: u64,
}

impl Engine {
    /// Numbers for `stats()`: gauges, counters since open, recovery facts.
    pub fn stats(&self) -> Result<Vec<(&'static str, Stat)>> {
        let sh = &self.sh;
        // Before the engine's lock: a change of policy holds this one while
        // it takes the engine's. After the fork check: in a fork child this
        // lock may be held by a thread that is not there.
        sh.check()?;
        let policies_error = sh.policy_file.lock().error.clone();
        let g = sh.open_inner()?;
        let (ready, in_flight, delayed) = g.state.totals();
        let (journal_bytes, segments) = g.journal.disk_usage();
        let c = &g.counters;
        let r = &g.report;
        let i = |v: u64| Stat::Int(v);
        let text = |v: Option<String>| v.map_or(Stat::None, Stat::Text);
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
            ("released", i(c.released)),
            ("acked", i(c.acked)),
            ("nacked", i(c.nacked)),
            ("expired", i(c.expired)),
            ("dead_lettered", i(c.dead_lettered)),
            ("dlq_evicted", i(g.state.dlq_evicted)),
            ("dlq_replayed", i(c.dlq_replayed)),
            ("dlq_purged", i(c.dlq_purged)),
            ("cancelled", i(c.cancelled)),
            ("snapshots", i(c.snapshots)),
            ("lsn", i(g.journal.next_lsn() - 1)),
            ("durable_lsn", i(sh.sync.durable())),
            ("journal_bytes", i(journal_bytes)),
            ("journal_segments", i(segments as u64)),
            ("journal_spares", i(sh.spares.bytes().1 as u64)),
            ("snapshot_lsn", i(g.snapshot_lsn)),
            ("snapshot_age", Stat::Float(g.snapshot_at.elapsed().as_secs_f64())),
            ("fsyncs", i(sh.sync.fsyncs())),
            ("recovered_records", i(r.records_replayed)),
            ("torn_tail_bytes", i(r.torn_bytes())),
            ("torn_tails", i(r.torn.len() as u64)),
            ("dropped_records", i(r.dropped_records)),
            ("recovery_seconds", Stat::Float(r.seconds)),
            ("durability", Stat::Text(sh.opts.durability.as_str().into())),
            ("instance_id", Stat::Text(crate::error::fmt_id(sh.instance_id))),
            ("epoch", i(g.manifest.epoch)),
            ("degraded", text(g.degraded.clone())),
            ("last_snapshot_error", text(g.snapshot_error.clone())),
            ("journal_prepare_error", text(sh.spares.error())),
            ("policies_error", text(policies_error)),
        ])
    }

    /// The engine's latency histograms: `fsync` (the flusher's journal
    /// fsyncs) and `snapshot` (whole snapshots). Bounds are
    /// [`BOUNDS_SECONDS`](crate::histogram::BOUNDS_SECONDS). No lock.
    pub fn histograms(&self) -> [(&'static str, HistogramRead); 2] {
        [("fsync", self.sh.fsync_latency.read()), ("snapshot", self.sh.snapshot_duration.read())]
    }

    /// Per topic counts.
    pub fn topic_stats(&self) -> Result<Vec<TopicStat>> {
        let g = self.sh.open_inner()?;
        Ok(g.state
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| TopicStat {
                name: t.name.to_string(),
                ready: t.n_ready as u64,
                in_flight: t.n_in_flight as u64,
                delayed: t.n_delayed as u64,
                dead_lettered: g.dead_by_topic.get(i).copied().unwrap_or(0),
            })
            .collect())
    }
}

"""Prometheus metrics for a ``ringq.Queue`` (``pip install ringq[prometheus]``).

    from prometheus_client import start_http_server
    import ringq.metrics
    ringq.metrics.register(q)          # into prometheus_client's default registry
    start_http_server(9100)

The collector reads ``q.stats()``, the per-topic counts and
``q.handler_stats()`` when Prometheus scrapes, so nothing is counted on the
publish / checkout / ack path: the engine keeps its counters anyway, and a
scrape costs one short engine lock. Every series carries a ``queue`` label
(the directory, or the ``name`` given to ``register``).

Series (``_total`` counters, the rest gauges):

- queue: ``ringq_published_total``, ``ringq_replaced_total`` and
  ``ringq_kept_total`` (dedup), ``ringq_superseded_total``,
  ``ringq_superseded_dropped_total``, ``ringq_delivered_total``,
  ``ringq_acked_total``, ``ringq_nacked_total``, ``ringq_lease_expired_total``,
  ``ringq_dead_lettered_total``, ``ringq_dlq_evicted_total``,
  ``ringq_dlq_replayed_total``, ``ringq_dlq_purged_total``,
  ``ringq_snapshots_total``, ``ringq_fsyncs_total``; ``ringq_ready``,
  ``ringq_in_flight``, ``ringq_delayed``, ``ringq_dead_letters``,
  ``ringq_capacity``, ``ringq_journal_bytes``, ``ringq_journal_segments``,
  ``ringq_snapshot_age_seconds``, ``ringq_lsn``, ``ringq_durable_lsn``,
  ``ringq_degraded`` (1 while an fsync failure is unresolved), and from the
  last open ``ringq_recovery_seconds``, ``ringq_recovered_records``,
  ``ringq_torn_tail_bytes``, ``ringq_torn_tail_records``;
- per topic (label ``topic``): ``ringq_topic_ready``,
  ``ringq_topic_in_flight``, ``ringq_topic_delayed``;
- per handler (label ``handler``): ``ringq_handler_processed_total``,
  ``..._succeeded_total``, ``..._failed_total``, ``..._retried_total``,
  ``..._dead_lettered_total``, ``..._undecodable_total``,
  ``..._late_acks_total``; ``ringq_handler_workers``,
  ``ringq_handler_active``, ``ringq_handler_abandoned_running``; histograms
  ``ringq_handler_queue_wait_seconds`` and
  ``ringq_handler_handler_duration_seconds`` (kept per worker thread and
  merged at scrape time: no lock per message; handlers only read the clock
  for them once ``register`` was called).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ringq.metrics needs prometheus_client: pip install 'ringq[prometheus]'"
    ) from e

if TYPE_CHECKING:
    from ringq.queue import Queue

__all__ = ["RingqCollector", "register"]

# (stats key, metric name, help)
_COUNTERS = (
    ("published", "ringq_published", "Messages published (new ids)."),
    ("replaced", "ringq_replaced", "Publishes that replaced a live message (same dedup key)."),
    ("kept", "ringq_kept", "Publishes ignored because the key's message was kept."),
    ("superseded", "ringq_superseded", "In-flight messages superseded by a newer publish."),
    ("superseded_dropped", "ringq_superseded_dropped", "Superseded messages dropped on failure."),
    ("delivered", "ringq_delivered", "Deliveries (checkouts) of messages."),
    ("acked", "ringq_acked", "Messages acked."),
    ("nacked", "ringq_nacked", "Deliveries given back (nack)."),
    ("expired", "ringq_lease_expired", "Leases that ran out."),
    ("dead_lettered", "ringq_dead_lettered", "Messages moved to the dead-letter queue."),
    ("dlq_evicted", "ringq_dlq_evicted", "Dead letters evicted by the dead-letter capacity."),
    ("dlq_replayed", "ringq_dlq_replayed", "Dead letters replayed."),
    ("dlq_purged", "ringq_dlq_purged", "Dead letters purged."),
    ("snapshots", "ringq_snapshots", "Snapshots written."),
    ("fsyncs", "ringq_fsyncs", "Journal fsyncs."),
)
_GAUGES = (
    ("ready", "ringq_ready", "Messages ready for delivery."),
    ("in_flight", "ringq_in_flight", "Messages checked out under a lease."),
    ("delayed", "ringq_delayed", "Messages waiting for their delay or retry backoff."),
    ("dead", "ringq_dead_letters", "Dead letters kept."),
    ("capacity", "ringq_capacity", "Live messages the queue may hold."),
    ("journal_bytes", "ringq_journal_bytes", "Bytes of journal segments on disk."),
    ("journal_segments", "ringq_journal_segments", "Journal segments on disk."),
    ("snapshot_age", "ringq_snapshot_age_seconds", "Seconds since the last snapshot."),
    ("lsn", "ringq_lsn", "Last journal record written."),
    ("durable_lsn", "ringq_durable_lsn", "Last journal record known to be on disk."),
    ("recovery_seconds", "ringq_recovery_seconds", "Time the last open spent recovering."),
    ("recovered_records", "ringq_recovered_records", "Records replayed by the last open."),
    ("torn_tail_bytes", "ringq_torn_tail_bytes", "Torn-tail bytes dropped by the last open."),
    ("torn_tail_records", "ringq_torn_tail_records", "Torn tails dropped by the last open."),
)
_TOPIC_GAUGES = ("ready", "in_flight", "delayed")
_HANDLER_COUNTERS = (
    "processed",
    "succeeded",
    "failed",
    "retried",
    "dead_lettered",
    "undecodable",
    "late_acks",
)
_HANDLER_GAUGES = ("workers", "active", "abandoned_running")
_HANDLER_HISTOGRAMS = (
    ("queue_wait", "Publish to handler start (a retry counts from its first publish)."),
    ("handler_duration", "Time the handler ran, per attempt."),
)


class RingqCollector(Collector):
    """Reads one queue's numbers at scrape time (see the module docstring)."""

    def __init__(self, queue: Queue, name: str | None = None) -> None:
        self._queue = queue
        self._name = name if name is not None else queue.path

    def collect(self) -> Iterator[Metric]:
        q = self._queue
        if q.closed:
            return
        stats = q.stats()
        label = [self._name]
        for key, metric, doc in _COUNTERS:
            c = CounterMetricFamily(metric, doc, labels=["queue"])
            c.add_metric(label, float(stats[key]))
            yield c
        for key, metric, doc in _GAUGES:
            g = GaugeMetricFamily(metric, doc, labels=["queue"])
            g.add_metric(label, float(stats[key]))
            yield g
        degraded = GaugeMetricFamily(
            "ringq_degraded", "1 while an fsync failure is unresolved.", labels=["queue"]
        )
        degraded.add_metric(label, 0.0 if stats["degraded"] is None else 1.0)
        yield degraded

        topics = q._engine.topic_stats()
        for key in _TOPIC_GAUGES:
            g = GaugeMetricFamily(
                f"ringq_topic_{key}", f"Messages {key} per topic.", labels=["queue", "topic"]
            )
            for topic, counts in sorted(topics.items()):
                g.add_metric([self._name, topic], float(counts[key]))
            yield g

        handlers = q.handler_stats()
        for key in _HANDLER_COUNTERS:
            c = CounterMetricFamily(
                f"ringq_handler_{key}", f"Handler messages {key}.", labels=["queue", "handler"]
            )
            for name, hs in sorted(handlers.items()):
                c.add_metric([self._name, name], float(hs[key]))
            yield c
        for key in _HANDLER_GAUGES:
            g = GaugeMetricFamily(
                f"ringq_handler_{key}", f"Handler {key}.", labels=["queue", "handler"]
            )
            for name, hs in sorted(handlers.items()):
                g.add_metric([self._name, name], float(hs[key]))
            yield g
        for key, doc in _HANDLER_HISTOGRAMS:
            h = HistogramMetricFamily(
                f"ringq_handler_{key}_seconds", doc, labels=["queue", "handler"]
            )
            for name, hs in sorted(handlers.items()):
                hist = hs[key]
                cumulative, buckets = 0, []
                for bound, count in zip(hist["buckets"], hist["counts"], strict=False):
                    cumulative += count
                    buckets.append((repr(float(bound)), float(cumulative)))
                buckets.append(("+Inf", float(sum(hist["counts"]))))
                h.add_metric([self._name, name], buckets, float(hist["sum"]))
            yield h


def register(
    queue: Queue, registry: CollectorRegistry = REGISTRY, name: str | None = None
) -> RingqCollector:
    """Registers a collector for ``queue``; returns it (``registry.unregister``
    removes it)."""
    collector = RingqCollector(queue, name)
    registry.register(collector)
    queue._enable_timing()
    return collector

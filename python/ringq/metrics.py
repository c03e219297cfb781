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
  ``ringq_torn_tail_bytes``, ``ringq_torn_tails``;
- per topic (label ``topic``): ``ringq_topic_ready``,
  ``ringq_topic_in_flight``, ``ringq_topic_delayed``;
- per handler (label ``handler``): ``ringq_handler_processed_total``,
  ``..._succeeded_total``, ``..._failed_total``, ``..._retried_total``,
  ``..._dead_lettered_total``, ``..._undecodable_total``,
  ``..._late_acks_total``; ``ringq_handler_workers``,
  ``ringq_handler_active``, ``ringq_handler_abandoned_running``; histograms
  ``ringq_handler_queue_wait_seconds`` and
  ``ringq_handler_handler_duration_seconds`` and
  ``ringq_handler_end_to_end_seconds`` (first publish to success; kept per
  worker thread and merged at scrape time: no lock per message; handlers only
  read the clock for them once ``register`` was called);
- engine histograms: ``ringq_fsync_seconds`` (the flusher's journal fsyncs)
  and ``ringq_snapshot_seconds`` (whole snapshots), filled by the engine's
  background threads with one atomic add each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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

from ringq._metric_names import (
    _COUNTERS,
    _ENGINE_HISTOGRAMS,
    _GAUGES,
    _HANDLER_COUNTERS,
    _HANDLER_GAUGES,
    _HANDLER_HISTOGRAMS,
    _TOPIC_GAUGES,
)

if TYPE_CHECKING:
    from ringq.core import QueueCore as Queue

__all__ = ["RingqCollector", "register"]


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
        # A backend reports what it has: Redis has no journal, snapshots or
        # fsyncs of its own, and its series are left out (a missing key
        # failed the whole registry's scrape).
        for key, metric, doc in _COUNTERS:
            if stats.get(key) is not None:
                c = CounterMetricFamily(metric, doc, labels=["queue"])
                c.add_metric(label, float(stats[key]))
                yield c
        for key, metric, doc in _GAUGES:
            if stats.get(key) is not None:
                g = GaugeMetricFamily(metric, doc, labels=["queue"])
                g.add_metric(label, float(stats[key]))
                yield g
        degraded = GaugeMetricFamily(
            "ringq_degraded", "1 while an fsync failure is unresolved.", labels=["queue"]
        )
        degraded.add_metric(label, 0.0 if stats.get("degraded") is None else 1.0)
        yield degraded

        topics = q.topic_stats()
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
                _add_histogram(h, [self._name, name], hs[key])
            yield h
        engine_hists = q.backend.histograms()
        for key, metric, doc in _ENGINE_HISTOGRAMS:
            h = HistogramMetricFamily(metric, doc, labels=["queue"])
            _add_histogram(h, label, engine_hists[key])
            yield h


def _add_histogram(family: HistogramMetricFamily, labels: list[str], hist: dict[str, Any]) -> None:
    """Adds one series from per-bucket counts (``buckets`` bounds, one more
    count for above the last bound) as Prometheus' cumulative buckets."""
    cumulative, buckets = 0, []
    for bound, count in zip(hist["buckets"], hist["counts"], strict=False):
        cumulative += count
        buckets.append((repr(float(bound)), float(cumulative)))
    buckets.append(("+Inf", float(sum(hist["counts"]))))
    family.add_metric(labels, buckets, float(hist["sum"]))


def register(
    queue: Queue, registry: CollectorRegistry = REGISTRY, name: str | None = None
) -> RingqCollector:
    """Registers a collector for ``queue``; returns it (``registry.unregister``
    removes it)."""
    collector = RingqCollector(queue, name)
    registry.register(collector)
    queue._enable_timing()
    return collector

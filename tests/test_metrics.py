"""Prometheus exposition of a queue, parsed back with prometheus_client's parser."""

from __future__ import annotations

import time
from pathlib import Path

import ringq
import ringq.metrics
from conftest import wait_until
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_expose_queue_topic_and_handler_numbers(qdir: Path) -> None:
    registry = CollectorRegistry()
    with ringq.Queue(qdir, max_attempts=1) as q:
        ringq.metrics.register(q, registry, name="orders-q")
        q.publish_many([b"a", b"b", b"c"], topic="orders")
        q.publish(b"k1", topic="orders", dedup_key="k")
        q.publish(b"k2", topic="orders", dedup_key="k")
        q.publish(b"later", topic="mail", delay=3600)
        [d] = q.checkout("orders", timeout=0)
        q.ack(d)
        [d] = q.checkout("orders", timeout=0)
        q.nack(d, error="boom")  # max_attempts=1: dead-lettered

        @q.handler(bytes, topic="orders", retry=ringq.Retry(max_attempts=1))
        def on_order(msg: bytes) -> None:
            if msg == b"c":
                raise ValueError("no c")

        q.start()
        assert wait_until(lambda: q.stats()["ready"] == 0 and q.stats()["in_flight"] == 0)
        m = scrape(registry)
        qlabel = (("queue", "orders-q"),)
        assert m[("ringq_published_total", qlabel)] == 5
        assert m[("ringq_replaced_total", qlabel)] == 1
        assert m[("ringq_acked_total", qlabel)] == 2  # "a" by hand, "k2" by the handler
        assert m[("ringq_dead_lettered_total", qlabel)] == 2
        assert m[("ringq_dead_letters", qlabel)] == 2
        assert (m[("ringq_ready", qlabel)], m[("ringq_delayed", qlabel)]) == (0, 1)
        assert m[("ringq_degraded", qlabel)] == 0
        assert m[("ringq_topic_delayed", (("queue", "orders-q"), ("topic", "mail")))] == 1
        hlabel = (("handler", "on_order"), ("queue", "orders-q"))
        assert m[("ringq_handler_processed_total", hlabel)] == 2
        assert m[("ringq_handler_succeeded_total", hlabel)] == 1
        assert m[("ringq_handler_failed_total", hlabel)] == 1
        assert m[("ringq_handler_workers", hlabel)] == 1
        assert m[("ringq_handler_handler_duration_seconds_count", hlabel)] == 2
        inf = (("handler", "on_order"), ("le", "+Inf"), ("queue", "orders-q"))
        assert m[("ringq_handler_queue_wait_seconds_bucket", inf)] == 2
        assert 0 < m[("ringq_handler_queue_wait_seconds_sum", hlabel)] < 60
        q.stop()
    # A closed queue contributes nothing (and does not fail the scrape).
    assert not any(name.startswith("ringq_") for name, _ in scrape(registry))


def test_handler_histograms_bucket_and_sum_the_durations(qdir: Path) -> None:
    registry = CollectorRegistry()
    with ringq.Queue(qdir) as q:
        ringq.metrics.register(q, registry)

        @q.handler(bytes, topic="t", max_parallelism=2)
        def slow(msg: bytes) -> None:
            time.sleep(0.03)

        q.publish_many([b"1", b"2", b"3"], topic="t")
        q.start()
        assert wait_until(lambda: q.handler_stats()["slow"]["succeeded"] == 3)
        m = scrape(registry)
        base = {"handler": "slow", "queue": q.path}

        def sample(name: str, **extra: str) -> float:
            return m[(name, tuple(sorted({**base, **extra}.items())))]

        hist = "ringq_handler_handler_duration_seconds"
        assert sample(f"{hist}_count") == 3
        assert 0.09 <= sample(f"{hist}_sum") < 1.0
        assert sample(f"{hist}_bucket", le="0.025") == 0, "every run took >= 30 ms"
        assert sample(f"{hist}_bucket", le="+Inf") == 3
        # Buckets are cumulative and never decrease.
        bounds = ("0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf")
        values = [sample(f"{hist}_bucket", le=b) for b in bounds]
        assert values == sorted(values)
        q.stop()


def test_handler_histograms_have_the_engines_buckets(qdir: Path) -> None:
    with ringq.Queue(qdir) as q:

        @q.handler(bytes, topic="t")
        def h(msg: bytes) -> None:
            pass

        q.start()
        engine = q.backend.histograms()
        stats = q.handler_stats()["h"]
        for name in ("queue_wait", "handler_duration", "end_to_end"):
            assert (
                stats[name]["buckets"]
                == engine["fsync"]["buckets"]
                == engine["snapshot"]["buckets"]
            )
            assert len(stats[name]["counts"]) == len(stats[name]["buckets"]) + 1
        q.stop()


def test_end_to_end_histogram_counts_successes_from_the_first_publish(qdir: Path) -> None:
    registry = CollectorRegistry()
    with ringq.Queue(qdir) as q:
        ringq.metrics.register(q, registry)
        seen: list[int] = []

        retry = ringq.Retry(max_attempts=3, backoff=ringq.Backoff.fixed(0.05))

        @q.handler(bytes, topic="t", retry=retry)
        def flaky(msg: bytes, ctx: ringq.Context) -> None:
            seen.append(ctx.attempt)
            if msg == b"retry" and ctx.attempt == 1:
                raise ValueError("first attempt fails")

        q.publish_many([b"ok", b"retry"], topic="t")
        q.start()
        assert wait_until(lambda: q.handler_stats()["flaky"]["succeeded"] == 2)
        m = scrape(registry)
        labels = (("handler", "flaky"), ("queue", q.path))
        # Two successes (the failed attempt is not one); the retried one
        # waited out its 50 ms backoff, so the sum includes it.
        assert m[("ringq_handler_end_to_end_seconds_count", labels)] == 2
        assert m[("ringq_handler_end_to_end_seconds_sum", labels)] >= 0.05
        assert m[("ringq_handler_handler_duration_seconds_count", labels)] == 3
        q.stop()


def test_engine_histograms_time_fsyncs_and_snapshots(qdir: Path) -> None:
    registry = CollectorRegistry()
    with ringq.Queue(qdir, durability="always") as q:
        ringq.metrics.register(q, registry, name="q")
        for i in range(5):
            q.publish(b"x%d" % i, topic="t")
        q.snapshot()
        q.snapshot()  # nothing new: no snapshot written, none observed
        m = scrape(registry)
        label = (("queue", "q"),)
        stats = q.stats()
        fsyncs = m[("ringq_fsync_seconds_count", label)]
        # Every publish waited for an fsync of its own (one writer, no overlap);
        # the snapshot's own fsyncs (file, directory) are in the snapshot's time.
        assert 5 <= fsyncs <= stats["fsyncs"]
        assert m[("ringq_fsync_seconds_bucket", (("le", "+Inf"), ("queue", "q")))] == fsyncs
        assert 0 < m[("ringq_fsync_seconds_sum", label)] < 60
        assert m[("ringq_snapshot_seconds_count", label)] == stats["snapshots"] == 1
        assert m[("ringq_snapshot_seconds_sum", label)] > 0
        h = q._backend.histograms()["fsync"]
        assert len(h["counts"]) == len(h["buckets"]) + 1
        assert list(h["buckets"]) == sorted(h["buckets"])

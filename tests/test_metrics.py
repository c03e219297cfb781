"""Prometheus exposition of a queue, parsed back with prometheus_client's parser."""

from __future__ import annotations

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
        q.stop()
    # A closed queue contributes nothing (and does not fail the scrape).
    assert not any(name.startswith("ringq_") for name, _ in scrape(registry))

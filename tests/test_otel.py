"""OpenTelemetry instruments read through the SDK's in-memory reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ringq
import ringq.otel
from conftest import wait_until
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    data = reader.get_metrics_data()
    out: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    out[(metric.name, tuple(sorted(p.attributes.items())))] = p.value  # type: ignore[union-attr]
    return out


def test_otel_instruments_report_queue_topic_and_handler_numbers(qdir: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with ringq.Queue(qdir) as q:
        ringq.otel.instrument(q, provider, name="q1")
        q.publish_many([b"a", b"b"], topic="t")
        q.publish(b"c", topic="later", delay=3600)
        seen: list[bytes] = []

        @q.handler(bytes, topic="t")
        def h(msg: bytes) -> None:
            seen.append(msg)

        q.start()
        assert wait_until(lambda: len(seen) == 2)
        q.stop()
        m = points(reader)
        base = (("ringq.queue", "q1"),)
        assert m[("ringq.published", base)] == 3
        assert m[("ringq.acked", base)] == 2
        assert m[("ringq.delayed", base)] == 1
        assert m[("ringq.topic.delayed", (("ringq.queue", "q1"), ("topic", "later")))] == 1
        hattrs = (("handler", "h"), ("ringq.queue", "q1"))
        assert m[("ringq.handler.succeeded", hattrs)] == 2
    provider.shutdown()

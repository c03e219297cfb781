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


def test_the_latency_histograms_go_out_with_every_export(qdir: Path) -> None:
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )

    class Collecting(MetricExporter):  # type: ignore[misc]
        """An exporter that keeps what it is given (the SDK has none built in)."""

        def __init__(self) -> None:
            super().__init__()
            self.exported: list[Any] = []

        def export(self, metrics_data: Any, timeout_millis: float = 0, **_: Any) -> Any:
            self.exported.append(metrics_data)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 0) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 0, **_: Any) -> None:
            pass

        def get_finished_metrics_data(self) -> list[Any]:
            return self.exported

    inner = Collecting()
    with ringq.Queue(qdir) as q:
        exporter = ringq.otel.HistogramExporter(inner, q, name="q1")
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader])
        ringq.otel.instrument(q, provider, name="q1")
        seen: list[bytes] = []

        @q.handler(bytes, topic="t")
        def h(msg: bytes) -> None:
            seen.append(msg)

        q.start()
        q.publish_many([b"a", b"b", b"c"], topic="t")
        assert wait_until(lambda: len(seen) == 3)
        q.stop()
        q.snapshot()
        provider.force_flush()
        hists: dict[str, Any] = {}
        gauges: set[str] = set()
        for data in inner.get_finished_metrics_data():
            for rm in data.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if type(metric.data).__name__ == "Histogram":
                            hists[metric.name] = metric
                        else:
                            gauges.add(metric.name)
        assert "ringq.published" in gauges, "the reader's own instruments still go out"
        duration = hists["ringq.handler.handler_duration"]
        assert duration.unit == "s"
        [point] = duration.data.data_points
        assert dict(point.attributes) == {"ringq.queue": "q1", "handler": "h"}
        assert point.count == 3
        assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
        assert sum(point.bucket_counts) == 3 and point.sum > 0
        assert hists["ringq.handler.queue_wait"].data.data_points[0].count == 3
        assert hists["ringq.snapshot.duration"].data.data_points[0].count >= 1
        assert "ringq.fsync.duration" in hists
    provider.shutdown()

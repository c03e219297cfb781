"""OpenTelemetry metrics for a ``ringq.Queue`` (``pip install ringq[otel]``).

    import ringq.otel
    ringq.otel.instrument(q)                  # uses the global MeterProvider
    ringq.otel.instrument(q, meter_provider)  # or a given one

Asynchronous instruments whose callbacks read the engine when the SDK
collects, so nothing is counted on the publish / checkout / ack path. The
names follow ``ringq.metrics`` with dots: ``ringq.published`` (counter),
``ringq.ready`` (gauge), ``ringq.topic.ready`` (attribute ``topic``),
``ringq.handler.succeeded`` (attribute ``handler``), ... Every observation
carries ``ringq.queue`` (the directory, or ``name``).

The latency histograms (queue wait, handler duration, end-to-end, fsync,
snapshot) come already bucketed from the queue (the same buckets
``ringq.metrics`` gives Prometheus). The OpenTelemetry API has no
asynchronous histogram, and recording each message into the SDK's
synchronous one would take its lock once per message on the handler path;
so ``HistogramExporter`` wraps the exporter of a push reader and adds them to
every export as cumulative explicit-bucket histograms:

    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    exporter = ringq.otel.HistogramExporter(OTLPMetricExporter(), q)
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)])
    ringq.otel.instrument(q, provider)

Their names: ``ringq.handler.queue_wait``, ``ringq.handler.handler_duration``,
``ringq.handler.end_to_end`` (attribute ``handler``), ``ringq.fsync.duration``
and ``ringq.snapshot.duration``, all in seconds. The queue keeps no minimum
or maximum, so those fields are NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ringq.otel needs opentelemetry-api: pip install 'ringq[otel]'") from e
try:
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricExporter,
        MetricExportResult,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    _HAS_SDK = True
except ImportError:  # pragma: no cover - the API without the SDK: no exporter
    MetricExporter = object  # type: ignore[assignment,misc]
    _HAS_SDK = False

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

__all__ = ["HistogramExporter", "instrument"]

Callback = Callable[[CallbackOptions], Iterable[Observation]]


def instrument(
    queue: Queue, meter_provider: MeterProvider | None = None, name: str | None = None
) -> None:
    """Registers observable instruments for ``queue`` on ``meter_provider``
    (default: the global one)."""
    meter = metrics.get_meter("ringq", meter_provider=meter_provider)
    base = {"ringq.queue": name if name is not None else queue.path}

    def stat(key: str) -> Callback:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            if queue.closed:
                return []
            value = queue.stats().get(key)  # None: not this backend's (Redis: no journal)
            return [] if value is None else [Observation(float(value), base)]

        return observe

    def per_topic(key: str) -> Callback:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            if queue.closed:
                return []
            topics: dict[str, dict[str, int]] = queue.topic_stats()
            return [Observation(float(c[key]), {**base, "topic": t}) for t, c in topics.items()]

        return observe

    def per_handler(key: str) -> Callback:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            if queue.closed:
                return []
            handlers: dict[str, dict[str, Any]] = queue.handler_stats()
            return [Observation(float(h[key]), {**base, "handler": n}) for n, h in handlers.items()]

        return observe

    def dotted(metric: str) -> str:
        return metric.replace("_", ".", 1)

    for key, metric, doc in _COUNTERS:
        meter.create_observable_counter(dotted(metric), [stat(key)], description=doc)
    for key, metric, doc in _GAUGES:
        meter.create_observable_gauge(dotted(metric), [stat(key)], description=doc)
    for key in _TOPIC_GAUGES:
        meter.create_observable_gauge(f"ringq.topic.{key}", [per_topic(key)])
    for key in _HANDLER_COUNTERS:
        meter.create_observable_counter(f"ringq.handler.{key}", [per_handler(key)])
    for key in _HANDLER_GAUGES:
        meter.create_observable_gauge(f"ringq.handler.{key}", [per_handler(key)])


class HistogramExporter(MetricExporter):
    """A ``MetricExporter`` that passes every export on to ``exporter`` with
    ringq's latency histograms of ``queue`` added (see the module docs).
    Needs the OpenTelemetry SDK (``opentelemetry-sdk``)."""

    def __init__(self, exporter: Any, queue: Queue, name: str | None = None) -> None:
        if not _HAS_SDK:  # pragma: no cover - depends on the environment
            raise ImportError(
                "HistogramExporter needs the OpenTelemetry SDK: pip install opentelemetry-sdk"
            )
        super().__init__(
            preferred_temporality=getattr(exporter, "_preferred_temporality", None),
            preferred_aggregation=getattr(exporter, "_preferred_aggregation", None),
        )
        self._inner = exporter
        self._queue = queue
        self._base = {"ringq.queue": name if name is not None else queue.path}
        self._start = time.time_ns()
        self._scope = InstrumentationScope("ringq.histograms")
        queue._enable_timing()

    def _point(self, attrs: Mapping[str, str], hist: Mapping[str, Any], now: int) -> Any:
        counts = [int(c) for c in hist["counts"]]
        return HistogramDataPoint(
            attributes=dict(attrs),
            start_time_unix_nano=self._start,
            time_unix_nano=now,
            count=sum(counts),
            sum=float(hist["sum"]),
            bucket_counts=counts,
            explicit_bounds=[float(b) for b in hist["buckets"]],
            min=math.nan,
            max=math.nan,
        )

    def histograms(self) -> list[Any]:
        """The histograms as OpenTelemetry ``Metric`` data (empty once the
        queue is closed)."""
        q = self._queue
        if q.closed:
            return []
        now = time.time_ns()
        out = []
        handlers: dict[str, dict[str, Any]] = q.handler_stats()
        for key, doc in _HANDLER_HISTOGRAMS:
            points = [
                self._point({**self._base, "handler": n}, hs[key], now)
                for n, hs in sorted(handlers.items())
            ]
            out.append(self._metric(f"ringq.handler.{key}", doc, points))
        engine = q.backend.histograms()
        for key, _, doc in _ENGINE_HISTOGRAMS:
            points = [self._point(self._base, engine[key], now)]
            out.append(self._metric(f"ringq.{key}.duration", doc, points))
        return out

    @staticmethod
    def _metric(name: str, doc: str, points: list[Any]) -> Any:
        data = Histogram(
            data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
        )
        return Metric(name=name, description=doc, unit="s", data=data)

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        extra = ScopeMetrics(scope=self._scope, metrics=self.histograms(), schema_url="")
        if metrics_data.resource_metrics:
            first, *rest = metrics_data.resource_metrics
            first = ResourceMetrics(
                resource=first.resource,
                scope_metrics=[*first.scope_metrics, extra],
                schema_url=first.schema_url,
            )
            resource_metrics = [first, *rest]
        else:
            resource_metrics = [
                ResourceMetrics(resource=Resource.get_empty(), scope_metrics=[extra], schema_url="")
            ]
        data = MetricsData(resource_metrics=resource_metrics)
        result: MetricExportResult = self._inner.export(
            data, timeout_millis=timeout_millis, **kwargs
        )
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)

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
snapshot) are exported by ``ringq.metrics`` only: the OpenTelemetry API has
no asynchronous histogram, and recording into the SDK's synchronous one would
take its lock once per message on the handler path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ringq.otel needs opentelemetry-api: pip install 'ringq[otel]'") from e

from ringq._metric_names import (
    _COUNTERS,
    _GAUGES,
    _HANDLER_COUNTERS,
    _HANDLER_GAUGES,
    _TOPIC_GAUGES,
)

if TYPE_CHECKING:
    from ringq.core import QueueCore as Queue

__all__ = ["instrument"]

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
            return [Observation(float(queue.stats()[key]), base)]

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

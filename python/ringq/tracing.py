"""OpenTelemetry traces for a queue: ``ringq.tracing.trace(q)`` (``pip
install ringq[otel]``).

A middleware (``ringq.middleware``) that makes spans and carries the W3C
trace context in message headers (``traceparent``, ``tracestate``), so a
trace follows a message from the code that published it through every
handler that published the next one, in this process or another, on any
backend:

- ``ringq publish <topic>`` (kind ``PRODUCER``), made when the message is
  handed to the backend, a child of whatever span is current then (a
  handler's ``ringq handle`` span for ``ctx.publish``); its context goes into
  the message's headers;
- ``ringq handle <topic>`` (kind ``CONSUMER``), from just before the handler
  runs to just after, a child of the context the message carries, current
  while the handler runs; attributes ``messaging.system`` (``ringq``),
  ``messaging.destination.name``, ``messaging.message.id``,
  ``ringq.attempt``, ``ringq.handler`` and ``ringq.outcome``
  (``succeeded`` / ``failed``; a failure also records the exception and sets
  the status to error);
- ``ringq dead letter <topic>`` (kind ``INTERNAL``, attribute
  ``ringq.reason``), when a handler's failure dead-letters the message: in
  its trace, next to the handle span of the attempt.

- ``ringq ack <topic>`` (kind ``CLIENT``, ``messaging.operation.type``
  ``settle``), once the backend accepted the ack of a handled message: a
  child of the context the message carries, spanning the backend call that
  acked it (the acks of a batch of handled messages go in one call, after
  their handle spans ended; each message gets its own span over that call).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ringq.tracing needs opentelemetry-api: pip install 'ringq[otel]'") from e

from ringq.backend import Delivery, OutgoingMessage

if TYPE_CHECKING:
    from ringq.context import Context
    from ringq.core import QueueCore
    from ringq.middleware import Outcome

__all__ = ["Tracing", "trace_queue"]


class Tracing:
    """The middleware ``trace_queue`` adds (see the module docstring)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("ringq", tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        #: The open handle span and context token of each running delivery.
        self._open: dict[str, tuple[Any, object]] = {}

    def before_publish(self, message: OutgoingMessage) -> OutgoingMessage:
        with self.tracer.start_as_current_span(
            f"ringq publish {message.topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "ringq",
                "messaging.destination.name": message.topic,
                "messaging.operation.type": "send",
            },
        ):
            headers = dict(message.headers)
            propagate.inject(headers)
        return OutgoingMessage(
            message.topic,
            message.payload,
            dedup_key=message.dedup_key,
            delay=message.delay,
            headers=headers,
            correlation_id=message.correlation_id,
            causation_id=message.causation_id,
            priority=message.priority,
            ordering_key=message.ordering_key,
            dedup_window=message.dedup_window,
        )

    def before_handle(self, d: Delivery, ctx: Context) -> None:
        parent = propagate.extract(d.headers)
        span = self.tracer.start_span(
            f"ringq handle {d.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "ringq",
                "messaging.destination.name": d.topic,
                "messaging.message.id": d.id,
                "messaging.operation.type": "process",
                "ringq.attempt": d.attempt,
                "ringq.handler": ctx.handler,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        with self._lock:
            self._open[d.id] = (span, token)

    def after_handle(self, d: Delivery, ctx: Context, outcome: Outcome) -> None:
        with self._lock:
            opened = self._open.pop(d.id, None)
        if opened is None:
            return
        span, token = opened
        span.set_attribute("ringq.outcome", "succeeded" if outcome.succeeded else "failed")
        if outcome.error is not None:
            span.record_exception(outcome.error)
            span.set_status(Status(StatusCode.ERROR, type(outcome.error).__name__))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    def on_ack(self, deliveries: list[Delivery], seconds: float) -> None:
        end = time.time_ns()
        start = end - int(seconds * 1e9)
        for d in deliveries:
            span = self.tracer.start_span(
                f"ringq ack {d.topic}",
                context=propagate.extract(d.headers),
                kind=SpanKind.CLIENT,
                start_time=start,
                attributes={
                    "messaging.system": "ringq",
                    "messaging.destination.name": d.topic,
                    "messaging.message.id": d.id,
                    "messaging.operation.type": "settle",
                    "messaging.batch.message_count": len(deliveries),
                },
            )
            span.end(end_time=end)

    def on_dead_letter(self, d: Delivery, reason: str, error: BaseException | None) -> None:
        span = self.tracer.start_span(
            f"ringq dead letter {d.topic}",
            context=propagate.extract(d.headers),
            attributes={
                "messaging.system": "ringq",
                "messaging.destination.name": d.topic,
                "messaging.message.id": d.id,
                "ringq.reason": reason,
            },
        )
        if error is not None:
            span.record_exception(error)
        span.end()


def trace_queue(queue: QueueCore, tracer_provider: Any = None) -> Tracing:
    """Adds the tracing middleware to ``queue`` (``tracer_provider``: the
    global one by default); returns it."""
    tracing = Tracing(tracer_provider)
    queue.add_middleware(tracing)
    return tracing

"""Traces (``ringq.tracing``): a trace follows order -> ship -> notify
across handlers through the W3C context in the messages' headers, with
the attempt, topic, handler and outcome on each handle span; checked with
the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import ringq
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from ringq.tracing import trace_queue


@ringq.message("tr.order")
@dataclass
class Order:
    order_id: str


@ringq.message("tr.ship")
@dataclass
class Ship:
    order_id: str


@ringq.message("tr.notify")
@dataclass
class Notify:
    order_id: str


def test_a_trace_follows_a_message_through_handlers(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    done = threading.Event()
    with ringq.Queue(tmp_path / "q", max_attempts=2) as q:
        trace_queue(q, provider)

        attempts: list[int] = []

        @q.handler(Order)
        def on_order(o: Order, ctx: ringq.Context) -> None:
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                raise RuntimeError("first attempt fails")
            ctx.publish(Ship(o.order_id))

        @q.handler(Ship)
        def on_ship(s: Ship, ctx: ringq.Context) -> None:
            ctx.publish(Notify(s.order_id))

        @q.handler(Notify)
        def on_notify(n: Notify) -> None:
            done.set()

        with tracer.start_as_current_span("checkout-request") as root:
            q.publish(Order("o-1"))
        q.start()
        assert done.wait(10)
        q.stop()
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {root.get_span_context().trace_id}, [
        s.name for s in spans
    ]
    by_id = {s.context.span_id: s for s in spans}

    def chain(span: object) -> list[str]:
        out = []
        while span is not None:
            out.append(span.name)  # type: ignore[attr-defined]
            parent = span.parent  # type: ignore[attr-defined]
            span = by_id.get(parent.span_id) if parent is not None else None
        return out

    [notify] = [s for s in spans if s.name == "ringq handle tr.notify"]
    assert chain(notify) == [
        "ringq handle tr.notify",
        "ringq publish tr.notify",
        "ringq handle tr.ship",
        "ringq publish tr.ship",
        "ringq handle tr.order",
        "ringq publish tr.order",
        "checkout-request",
    ]
    orders = sorted(
        (s for s in spans if s.name == "ringq handle tr.order"),
        key=lambda s: s.attributes["ringq.attempt"],  # type: ignore[index]
    )
    assert [s.attributes["ringq.outcome"] for s in orders] == ["failed", "succeeded"]  # type: ignore[index]
    assert orders[0].status.status_code is StatusCode.ERROR
    assert orders[0].kind is SpanKind.CONSUMER
    assert orders[1].attributes["ringq.handler"] == "on_order"  # type: ignore[index]
    assert attempts == [1, 2]
    # Each handled message's ack: in its trace, a child of its publish span,
    # after its successful handle span (staged follow-ups: order and ship;
    # a batch flush: notify).
    for topic in ("tr.order", "tr.ship", "tr.notify"):
        [ack] = [s for s in spans if s.name == f"ringq ack {topic}"]
        assert chain(ack)[:2] == [f"ringq ack {topic}", f"ringq publish {topic}"]
        assert ack.kind is SpanKind.CLIENT
        assert ack.attributes["messaging.operation.type"] == "settle"  # type: ignore[index]
        handled = max(
            (s for s in spans if s.name == f"ringq handle {topic}"), key=lambda s: s.end_time or 0
        )
        assert ack.end_time is not None and handled.end_time is not None
        assert ack.end_time >= handled.end_time


def test_async_handlers_acks_have_spans_too(tmp_path: Path) -> None:
    import asyncio

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def main() -> None:
        async with ringq.AsyncQueue(tmp_path / "q") as aq:
            trace_queue(aq.queue, provider)
            seen = asyncio.Event()
            count = 0

            @aq.handler(bytes, topic="t")
            async def h(b: bytes) -> None:
                nonlocal count
                count += 1
                if count == 3:
                    seen.set()

            await aq.publish_many([b"a", b"b", b"c"], topic="t")
            aq.start()
            await asyncio.wait_for(seen.wait(), 10)
            await aq.stop()

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    acks = [s for s in spans if s.name == "ringq ack t"]
    assert len(acks) == 3
    # The bytes publish_many of an AsyncQueue has its publish spans too
    # (it once skipped before_publish), each the parent of its message's ack.
    publishes = {s.context.span_id for s in spans if s.name == "ringq publish t"}
    assert len(publishes) == 3
    assert all(a.parent is not None for a in acks)
    assert {a.parent.span_id for a in acks if a.parent is not None} == publishes


def test_an_on_ack_hook_that_raises_is_logged_and_the_message_stays_acked(
    tmp_path: Path, caplog: object
) -> None:
    class Boom:
        def on_ack(self, deliveries: list[ringq.Delivery], seconds: float) -> None:
            raise RuntimeError("hook broke")

    done = threading.Event()
    with ringq.Queue(tmp_path / "q") as q:
        q.add_middleware(Boom())

        @q.handler(bytes, topic="t")
        def h(b: bytes) -> None:
            done.set()

        q.publish(b"x", "t")
        q.start()
        assert done.wait(10)
        q.stop(drain=True)
        assert q.stats()["total"] == 0
        assert q.handler_stats()["h"]["succeeded"] == 1
    assert "on_ack of 1 message(s) raised" in caplog.text  # type: ignore[attr-defined]


def test_a_dead_letter_is_in_the_trace(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    dead = threading.Event()
    with ringq.Queue(tmp_path / "q") as q:
        trace_queue(q, provider)

        @q.handler(bytes, topic="t", retry=ringq.Retry(max_attempts=1))
        def h(b: bytes) -> None:
            raise ValueError("no")

        q.publish(b"x", "t")
        q.start()
        for _ in range(1000):
            if any(s.name == "ringq dead letter t" for s in exporter.get_finished_spans()):
                dead.set()
                break
            threading.Event().wait(0.01)
        q.stop()
    assert dead.is_set()
    [span] = [s for s in exporter.get_finished_spans() if s.name == "ringq dead letter t"]
    assert span.attributes["ringq.reason"] == "max_attempts"  # type: ignore[index]

"""Chaining: what a handler publishes (``ctx.publish``; on the backend,
``ack(deliveries, publish=[...])``) is committed atomically with the ack of
the message it handled: a failed attempt publishes nothing. Chained messages
inherit the correlation id and name the handled message as their cause."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import ringq
from conftest import wait_until
from ringq.backend import OutgoingMessage

from .conftest import Harness, drain


@dataclass
class Order:
    order_id: str


@dataclass
class Ship:
    order_id: str


@dataclass
class Note:
    text: str


def test_an_ack_with_follow_ups_publishes_them_with_the_ack(q: ringq.Queue) -> None:
    mid = q.publish(b"order", "orders", correlation_id="corr")
    [d] = q.checkout("orders", timeout=0)
    follow_ups = [
        OutgoingMessage("ship", b"s", correlation_id="corr", causation_id=d.id),
        OutgoingMessage("note", b"n", headers={"k": "v"}),
    ]
    q.backend.ack(d, publish=follow_ups)
    s = q.stats()
    assert (s["in_flight"], s["ready"], s["total"]) == (0, 2, 2)
    [ship] = q.checkout("ship", timeout=0)
    assert (ship.payload, ship.correlation_id, ship.causation_id) == (b"s", "corr", mid)
    [note] = q.checkout("note", timeout=0)
    assert (note.payload, note.headers) == (b"n", {"k": "v"})


def test_a_stale_ack_with_follow_ups_publishes_nothing(harness: Harness) -> None:
    q = harness.open()
    q.publish_many([b"a", b"b"], "orders")
    stale, current = q.checkout("orders", max_messages=2, lease=10, timeout=0)
    q.extend(current, 60)
    harness.advance(10)
    with pytest.raises(ringq.LeaseLost) as info:
        q.backend.ack([stale, current], publish=[OutgoingMessage("ship", b"s")])
    assert info.value.ids == [stale.id]
    assert q.checkout("ship", timeout=0) == []
    assert q.stats()["in_flight"] == 1, "the current one is not acked either"
    q.backend.ack(current, publish=[OutgoingMessage("ship", b"s")])
    assert [d.payload for d in q.checkout("ship", timeout=0)] == [b"s"]


def test_a_follow_up_fits_in_the_room_its_ack_makes(harness: Harness) -> None:
    q = harness.open(capacity=1)
    q.publish(b"order", "orders")
    [d] = q.checkout("orders", timeout=0)
    q.backend.ack(d, publish=[OutgoingMessage("ship", b"s")])
    assert [x.payload for x in drain(q, "ship")] == [b"s"]


def test_follow_ups_with_one_key_need_room_for_one_message(harness: Harness) -> None:
    """The second follow-up with a key replaces the first, as two publishes
    would: one message, so it fits where one does (the Redis backend counted
    room for each and refused the ack as never fitting)."""
    q = harness.open(capacity=1)
    q.publish(b"order", "orders")
    [d] = q.checkout("orders", timeout=0)
    q.backend.ack(
        d,
        publish=[
            OutgoingMessage("ship", b"first", dedup_key="k"),
            OutgoingMessage("ship", b"second", dedup_key="k"),
        ],
    )
    [shipped] = drain(q, "ship")
    assert (shipped.payload, shipped.version) == (b"second", 2)


def test_a_follow_up_with_the_acked_messages_own_key_is_a_new_message(q: ringq.Queue) -> None:
    q.publish(b"v1", "t", dedup_key="k")
    [d] = q.checkout("t", timeout=0)
    q.backend.ack(d, publish=[OutgoingMessage("t", b"v2", dedup_key="k")])
    [nxt] = q.checkout("t", timeout=0)
    assert (nxt.payload, nxt.attempt, nxt.version) == (b"v2", 1, 1)
    assert nxt.id != d.id


@pytest.mark.parametrize("newer", ["kept", "cancelled"])
def test_a_follow_up_repeating_the_key_of_a_superseded_message_it_acks_is_dropped(
    harness: Harness, newer: str
) -> None:
    """A message superseded while in flight (a newer one took its key) is
    acked with a follow-up of its own key, decided before the newer one
    came: the newer one stands (the follow-up replaced it), and a newer one
    cancelled meanwhile (``unschedule``: a tombstone, then its cancel)
    stays gone (the follow-up took the free key: the schedule went on).
    Other follow-ups go in."""
    q = harness.open()
    q.publish(b"v1", "t", dedup_key="k")
    [d] = q.checkout("t", timeout=0)
    v2 = q.publish(b"v2", "t", dedup_key="k")
    if newer == "cancelled":
        assert q.cancel(v2) == "cancelled"
    q.backend.ack(
        d,
        publish=[
            OutgoingMessage("t", b"from v1", dedup_key="k"),
            OutgoingMessage("t", b"other", dedup_key="j"),
            OutgoingMessage("u", b"same key, other topic", dedup_key="k"),
        ],
    )
    left = {x.payload for x in drain(q, "t")} | {x.payload for x in drain(q, "u")}
    kept = {b"v2"} if newer == "kept" else set()
    assert left == kept | {b"other", b"same key, other topic"}
    assert q.stats()["in_flight"] == len(left)


def test_a_handlers_publishes_inherit_correlation_and_commit_with_its_ack(q: ringq.Queue) -> None:
    shipped: list[tuple[str, str | None, str | None]] = []
    both = threading.Event()

    @q.handler(Order)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        ctx.publish(Ship(msg.order_id))
        ctx.publish(Note(f"order {msg.order_id}"), headers={"k": "v"})

    @q.handler(Ship)
    def on_ship(msg: Ship, ctx: ringq.Context) -> None:
        shipped.append((msg.order_id, ctx.correlation_id, ctx.causation_id))
        if len(shipped) == 2:
            both.set()

    first = q.publish(Order("o-1"), correlation_id="corr-1")
    second = q.publish(Order("o-2"))
    q.start()
    assert both.wait(10)
    q.stop()
    assert sorted(shipped) == [("o-1", "corr-1", first), ("o-2", second, second)]
    notes = q.checkout(ringq.codecs.topic_for(Note), max_messages=10, timeout=0)
    assert [(n.headers["k"], n.causation_id) for n in notes] == [("v", first), ("v", second)]


def test_a_failed_attempt_publishes_nothing(harness: Harness) -> None:
    q = harness.open()
    attempts: list[int] = []

    retry = ringq.Retry(max_attempts=2, backoff=ringq.Backoff.fixed(5.0))

    @q.handler(Order, retry=retry)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        attempts.append(ctx.attempt)
        ctx.publish(Ship(msg.order_id))
        raise RuntimeError("after staging")

    mid = q.publish(Order("o-1"))
    q.start()
    assert wait_until(lambda: q.stats()["delayed"] == 1), "the first attempt failed"
    assert q.checkout(ringq.codecs.topic_for(Ship), timeout=0) == []
    harness.advance(5.0)  # the backoff is over: the second (last) attempt
    assert wait_until(lambda: len(q.dlq) == 1)
    q.stop()
    assert attempts == [1, 2]
    assert q.dlq.get(mid).error_message == "after staging"
    assert q.checkout(ringq.codecs.topic_for(Ship), timeout=0) == []

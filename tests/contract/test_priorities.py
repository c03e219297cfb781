"""Priorities: ``publish(..., priority=0..9)``. Within a topic a higher
priority is delivered first, and messages of one priority in publish order;
a release gives a message back at the front of its priority. Priority is
strict: lower ones wait while higher ones are ready (docs: "Priorities").
A replace keeps the place, and so the priority, of the message it replaces.
Out-of-range priorities are refused. All of it survives a reopen."""

from __future__ import annotations

import pytest
import ringq
from ringq.backend import OutgoingMessage

from .conftest import Harness, drain


def test_higher_priorities_first_fifo_within_one(harness: Harness) -> None:
    q = harness.open()
    for payload, p in [(b"a0", 0), (b"b5", 5), (b"c9", 9), (b"d5", 5), (b"e", None), (b"f9", 9)]:
        q.publish(payload, "t", priority=p)
    got = drain(q, "t")
    assert [d.payload for d in got] == [b"c9", b"f9", b"b5", b"d5", b"a0", b"e"]
    assert [d.priority for d in got] == [9, 9, 5, 5, 0, 0]


def test_a_checkout_of_one_takes_the_highest_and_release_puts_it_back_first(
    harness: Harness,
) -> None:
    q = harness.open()
    q.publish(b"low", "t", priority=1)
    q.publish(b"high-1", "t", priority=7)
    q.publish(b"high-2", "t", priority=7)
    [d] = q.checkout("t", timeout=0)
    assert d.payload == b"high-1"
    q.release(d)
    assert [m.payload for m in drain(q, "t")] == [b"high-1", b"high-2", b"low"]


def test_priorities_survive_a_reopen_and_a_retry_returns_to_its_priority(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"low", "t")
    q.publish(b"high", "t", priority=8)
    [d] = q.checkout("t", timeout=0)
    q.nack(d, error="retry", delay=5)
    q.close()
    q = harness.open()
    assert [m.payload for m in drain(q, "t")] == [b"low"]
    q.publish(b"later-low", "t")
    harness.advance(10)
    got = drain(q, "t")
    assert [(m.payload, m.priority) for m in got] == [(b"high", 8), (b"later-low", 0)]


def test_publish_many_and_chained_publishes_carry_priorities(harness: Harness) -> None:
    q = harness.open()
    q.publish_many(
        [ringq.Message(b"m-low", topic="t"), ringq.Message(b"m-high", topic="t", priority=9)]
    )
    [first, second] = drain(q, "t")
    assert (first.payload, second.payload) == (b"m-high", b"m-low")
    q.backend.ack(first, publish=[OutgoingMessage("u", b"chained", priority=4)])
    q.ack(second)
    [c] = drain(q, "u")
    assert (c.payload, c.priority) == (b"chained", 4)


def test_a_replace_keeps_the_priority_of_the_message_it_replaces(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"v1", "t", dedup_key="k", priority=2)
    q.publish(b"mid", "t", priority=5)
    q.publish(b"v2", "t", dedup_key="k", priority=9)
    assert [(m.payload, m.priority) for m in drain(q, "t")] == [(b"mid", 5), (b"v2", 2)]


@pytest.mark.parametrize("bad", [-1, 10, 1.5, "high", True])
def test_a_priority_out_of_range_is_refused_and_nothing_is_published(
    harness: Harness, bad: object
) -> None:
    q = harness.open()
    with pytest.raises((ValueError, TypeError), match="priority"):
        q.publish(b"x", "t", priority=bad)
    assert q.stats()["total"] == 0

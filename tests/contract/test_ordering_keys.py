"""Ordering keys: ``publish(..., ordering_key=k)``. At most one message of a
key is in flight, and the messages of a key are delivered in publish order;
other keys and unkeyed messages are not held up. A message waiting behind
its key counts as ready. The head of a key keeps it through retries (the
next waits while it is delayed) and across a lease expiry; an ack, a dead
letter or a cancel of the head releases the key to the next message.
All of it survives a reopen."""

from __future__ import annotations

import pytest
import ringq
from ringq.backend import OutgoingMessage

from .conftest import Harness, drain


def payloads(ds: list[ringq.Delivery]) -> list[bytes]:
    return [d.payload for d in ds]


def test_one_in_flight_per_key_fifo_per_key_and_other_keys_not_blocked(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"a1", "t", ordering_key="a")
    q.publish(b"a2", "t", ordering_key="a")
    q.publish(b"b1", "t", ordering_key="b")
    q.publish(b"plain", "t")
    q.publish(b"a3", "t", ordering_key="a")
    assert q.stats()["ready"] == 5, "waiting messages count as ready"
    first = drain(q, "t")
    assert payloads(first) == [b"a1", b"b1", b"plain"]
    assert [d.ordering_key for d in first] == ["a", "b", None]
    assert drain(q, "t") == [], "a2 waits for a1"
    q.ack(first[0])
    [a2] = drain(q, "t")
    assert a2.payload == b"a2"
    q.ack(a2)
    assert payloads(drain(q, "t")) == [b"a3"]


def test_a_retry_keeps_the_key_and_the_next_waits_for_it(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"1", "t", ordering_key="k")
    q.publish(b"2", "t", ordering_key="k")
    [d] = drain(q, "t")
    q.nack(d, error="retry", delay=30)
    assert drain(q, "t") == [], "2 waits while 1 is delayed for its retry"
    harness.advance(31)
    [again] = drain(q, "t")
    assert (again.payload, again.attempt) == (b"1", 2)
    q.ack(again)
    assert payloads(drain(q, "t")) == [b"2"]


def test_a_lease_expiry_redelivers_the_head_before_the_next(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"1", "t", ordering_key="k")
    q.publish(b"2", "t", ordering_key="k")
    [d] = q.checkout("t", lease=10, timeout=0)
    assert d.payload == b"1"
    harness.advance(11)
    got = drain(q, "t")
    assert payloads(got) == [b"1"]
    assert got[0].attempt == 2


@pytest.mark.parametrize("how", ["dead_letter", "cancel"])
def test_a_dead_letter_or_a_cancel_of_the_head_releases_the_key(harness: Harness, how: str) -> None:
    q = harness.open()
    q.publish(b"1", "t", ordering_key="k")
    q.publish(b"2", "t", ordering_key="k")
    [d] = drain(q, "t")
    if how == "dead_letter":
        q.backend.nack(d, error_message="bad", dead_letter_reason="non_retryable")
    else:
        assert q.cancel(d.id) == "cancelled_in_flight"
    assert payloads(drain(q, "t")) == [b"2"]


def test_cancelling_a_waiting_message_keeps_the_order_of_the_rest(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"1", "t", ordering_key="k")
    two = q.publish(b"2", "t", ordering_key="k")
    q.publish(b"3", "t", ordering_key="k")
    [d] = drain(q, "t")
    assert q.cancel(two) == "cancelled"
    q.ack(d)
    assert payloads(drain(q, "t")) == [b"3"]
    assert q.stats()["total"] == 1


def test_waiting_messages_and_the_held_key_survive_a_reopen(harness: Harness) -> None:
    q = harness.open()
    for i in range(3):
        q.publish(b"k%d" % i, "t", ordering_key="k")
    q.publish(b"other", "t", ordering_key="o")
    [k0, other] = drain(q, "t")
    assert (k0.payload, other.payload) == (b"k0", b"other")
    q.ack(other)
    q.close()
    # k0 was in flight: once its lease is over (a reopen ends it at once on a
    # directory; on Redis the lease outlives the client that took it) it is
    # delivered again, before k1 and k2, and alone.
    q = harness.open()
    harness.advance(601)
    [again] = drain(q, "t")
    assert (again.payload, again.ordering_key) == (b"k0", "k")
    q.ack(again)
    for expected in (b"k1", b"k2"):
        [d] = drain(q, "t")
        assert d.payload == expected
        q.ack(d)
    assert q.stats()["total"] == 0


def test_chained_and_batched_publishes_carry_ordering_keys(harness: Harness) -> None:
    q = harness.open()
    q.publish_many([ringq.Message(b"m%d" % i, topic="t", ordering_key="k") for i in range(3)])
    [d] = drain(q, "t")
    q.backend.ack(d, publish=[OutgoingMessage("t", b"chained", ordering_key="k")])
    assert payloads(drain(q, "t")) == [b"m1"]


def test_an_empty_ordering_key_is_refused(harness: Harness) -> None:
    q = harness.open()
    with pytest.raises(ValueError, match="ordering_key"):
        q.publish(b"x", "t", ordering_key="")
    assert q.stats()["total"] == 0

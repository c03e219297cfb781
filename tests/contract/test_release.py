"""Release: deliveries given back unstarted go to the front of their topic,
in the order given, their delivery not counted; a superseded one is dropped."""

from __future__ import annotations

import pytest
import ringq

from .conftest import drain

TOPIC = "jobs"


def test_release_puts_messages_back_in_front_in_the_given_order_with_attempt_unchanged(
    q: ringq.Queue,
) -> None:
    q.publish_many([b"a", b"b", b"c", b"d", b"e", b"f"], topic=TOPIC)
    q.publish_many([b"o1", b"o2"], topic="other")
    [a] = q.checkout(TOPIC, timeout=0)
    q.nack(a)  # a failed once: it is retried behind the others, as attempt 2
    b, c, d, _e = q.checkout(TOPIC, max_messages=4, timeout=0)
    [o1] = q.checkout("other", timeout=0)

    # Each goes to the front of its own topic, ahead of what was ready (f, a).
    q.release([d, o1, b])
    again = drain(q, TOPIC)
    assert [(x.payload, x.attempt) for x in again] == [
        (b"d", 1),
        (b"b", 1),
        (b"f", 1),
        (b"a", 2),
    ]
    assert [(x.payload, x.attempt) for x in drain(q, "other")] == [(b"o1", 1), (b"o2", 1)]

    # A retry released unstarted stays at its attempt (2), in the given order.
    _d, _b, f, a2 = again
    q.release([a2, f])
    assert [(x.payload, x.attempt) for x in drain(q, TOPIC)] == [(b"a", 2), (b"f", 1)]

    # A released delivery is undone: releasing (or acking) it again is refused.
    with pytest.raises(ringq.LeaseLost) as info:
        q.release(d)
    assert info.value.ids == [d.id]
    with pytest.raises(ringq.LeaseLost):
        q.ack(a2)
    with pytest.raises(ringq.LeaseLost) as info:
        q.release([c, b])  # c is valid and is released; b is stale (b2 replaced it)
    assert info.value.ids == [b.id]
    [c2] = drain(q, TOPIC)
    assert (c2.payload, c2.attempt) == (b"c", 1)
    assert q.stats()["released"] == 6


def test_release_of_a_superseded_delivery_drops_it_and_keeps_the_newer_message(
    q: ringq.Queue,
) -> None:
    q.publish(b"v1", TOPIC, dedup_key="k")
    [old] = q.checkout(TOPIC, timeout=0)
    newer = q.publish(b"v2", TOPIC, dedup_key="k")  # while v1 is in flight
    assert newer != old.id
    assert q.backend.is_superseded(old)
    q.release(old)
    [d] = drain(q, TOPIC)
    assert (d.id, d.payload, d.attempt) == (newer, b"v2", 1)
    s = q.stats()
    assert (s["total"], s["in_flight"], s["ready"]) == (1, 1, 0)
    q.ack(d)
    assert q.stats()["total"] == 0

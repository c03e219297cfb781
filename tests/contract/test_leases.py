"""Leases: a checkout grants a lease (token + deadline); only its current
holder may ack, nack, extend or release; when it runs out the message comes
back with the next attempt, or is dead-lettered when out of attempts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import ringq

from .conftest import Harness, at

#: Every call that needs a current lease.
CALLS: dict[str, Callable[[ringq.Queue, ringq.Delivery], Any]] = {
    "ack": lambda q, d: q.ack(d),
    "ack_list": lambda q, d: q.ack([d]),
    "nack": lambda q, d: q.nack(d, error="boom"),
    "nack_later": lambda q, d: q.nack(d, delay=5.0),
    "extend": lambda q, d: q.extend(d, 60.0),
    "release": lambda q, d: q.release(d),
}

#: What a refused call must leave alone.
STATE = ("ready", "in_flight", "delayed", "dead", "total")


def state(q: ringq.Queue) -> dict[str, Any]:
    s = q.stats()
    return {k: s[k] for k in STATE}


def test_expiry_redelivers_with_the_next_attempt_and_a_new_token(harness: Harness) -> None:
    q = harness.open()
    mid = q.publish(b"x")
    [d1] = q.checkout(lease=30, timeout=0)
    assert d1.attempt == 1
    harness.advance(29.9)
    assert q.checkout(timeout=0) == [], "not before its deadline"
    harness.advance(0.2)
    [d2] = q.checkout(lease=30, timeout=0)
    assert (d2.id, d2.attempt, d2.payload) == (mid, 2, b"x")
    assert d2.lease_token != d1.lease_token
    s = q.stats()
    assert (s["expired"], s["in_flight"], s["ready"], s["total"]) == (1, 1, 0, 1)


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_stale_lease_is_lease_lost_and_changes_nothing(harness: Harness, call: str) -> None:
    q = harness.open()
    mid = q.publish(b"x")
    [stale] = q.checkout(lease=30, timeout=0)
    harness.advance(31)
    [current] = q.checkout(lease=30, timeout=0)
    assert current.id == mid
    before = state(q)
    with pytest.raises(ringq.LeaseLost) as info:
        CALLS[call](q, stale)
    assert info.value.ids == [mid]
    assert state(q) == before
    q.ack(current)  # the current holder is unaffected
    assert q.stats()["total"] == 0


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_lease_past_its_deadline_is_lease_lost_before_anyone_else_took_it(
    harness: Harness, call: str
) -> None:
    q = harness.open(max_attempts=2)
    mid = q.publish(b"x")
    [d] = q.checkout(lease=10, timeout=0)
    harness.advance(10)
    before = state(q)
    with pytest.raises(ringq.LeaseLost) as info:
        CALLS[call](q, d)
    assert info.value.ids == [mid]
    assert state(q) == before
    [again] = q.checkout(timeout=0)
    assert (again.id, again.attempt) == (mid, 2)


def test_ack_of_several_acks_the_current_ones_and_names_the_stale_ones(harness: Harness) -> None:
    q = harness.open()
    m1 = q.publish(b"1")
    m2 = q.publish(b"2")
    [d1] = q.checkout(lease=10, timeout=0)
    [d2] = q.checkout(lease=60, timeout=0)
    harness.advance(11)
    [d1_again] = q.checkout(lease=60, timeout=0)
    assert (d1.id, d2.id, d1_again.id) == (m1, m2, m1)
    with pytest.raises(ringq.LeaseLost) as info:
        q.ack([d1, d2])
    assert info.value.ids == [m1]
    s = q.stats()
    assert (s["in_flight"], s["total"]) == (1, 1)
    q.ack(d1_again)
    assert q.stats()["total"] == 0


def test_a_second_ack_is_lease_lost(q: ringq.Queue) -> None:
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.ack(d)
    with pytest.raises(ringq.LeaseLost) as info:
        q.ack(d)
    assert info.value.ids == [mid]


def test_a_delivery_listed_twice_is_acked_once_and_the_second_is_lease_lost(
    q: ringq.Queue,
) -> None:
    """The second copy finds the message gone: ``LeaseLost`` naming it, and
    the counts as after one ack (the Redis backend counted both: one in
    flight fewer than there were, and room for one more than the capacity)."""
    m1 = q.publish(b"1")
    m2 = q.publish(b"2")
    d1, d2 = q.checkout(max_messages=2, timeout=0)
    with pytest.raises(ringq.LeaseLost) as info:
        q.ack([d1, d1, d2])
    assert info.value.ids == [m1]
    assert state(q) == {"ready": 0, "in_flight": 0, "delayed": 0, "dead": 0, "total": 0}
    assert m2 == d2.id


def test_a_delivery_listed_twice_is_released_once_and_delivered_once_again(
    q: ringq.Queue,
) -> None:
    """Released twice in one call: once (the Redis backend listed it twice in
    its topic, and the next checkout handed the one message out twice)."""
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    with pytest.raises(ringq.LeaseLost) as info:
        q.release([d, d])
    assert info.value.ids == [mid]
    assert state(q) == {"ready": 1, "in_flight": 0, "delayed": 0, "dead": 0, "total": 1}
    again = q.checkout(max_messages=10, timeout=0)
    assert [x.id for x in again] == [mid]


def test_the_default_lease_comes_from_the_queue(harness: Harness) -> None:
    q = harness.open(lease=12.0)
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    assert d.lease_deadline == at(harness.now() + 12.0)
    harness.advance(12.0)
    [again] = q.checkout(timeout=0)
    assert (again.id, again.attempt) == (mid, 2)


def test_extend_pushes_the_deadline_from_now(harness: Harness) -> None:
    q = harness.open()
    mid = q.publish(b"x")
    [d] = q.checkout(lease=30, timeout=0)
    now = harness.advance(20)
    deadline = q.extend(d, 60.0)
    assert deadline == at(now + 60.0)
    harness.advance(59)  # well past the first deadline
    assert q.checkout(timeout=0) == []
    assert q.stats()["in_flight"] == 1
    # The extended lease still runs out.
    harness.advance(1)
    [again] = q.checkout(timeout=0)
    assert (again.id, again.attempt) == (mid, 2)
    with pytest.raises(ringq.LeaseLost):
        q.ack(d)


def test_extend_keeps_the_original_delivery_the_holder(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"x")
    [d] = q.checkout(lease=10, timeout=0)
    for _ in range(5):
        harness.advance(8)
        q.extend(d, 10)
    assert q.checkout(timeout=0) == []
    q.ack(d)
    assert q.stats()["total"] == 0


def test_a_topics_policy_outlives_a_reopen_and_judges_what_was_in_flight(harness: Harness) -> None:
    """A handler's policy (what ``q.start()`` sets) is kept by the backend:
    the messages in flight when the queue was closed are judged by it once
    their lease is over after the reopen (on a directory at once, by the
    open; on Redis the lease outlives the client), before any handler
    starts again. The directory judged them by the queue's ``max_attempts``
    (5): "u" (9 allowed) was dead-lettered on its 6th delivery, "t" (2
    allowed) delivered a 3rd time."""
    q = harness.open()
    q.backend.set_topic_policy("t", max_attempts=2, handler="on_t")
    q.backend.set_topic_policy("u", max_attempts=9, handler="on_u")
    for topic, failures in (("t", 1), ("u", 5)):
        mid = q.publish(topic.encode(), topic)
        for _ in range(failures):
            [d] = q.checkout(topic, lease=600, timeout=0)
            q.nack(d)
        [d] = q.checkout(topic, lease=600, timeout=0)
        assert (d.id, d.attempt) == (mid, failures + 1)
    q.close()
    q = harness.open()
    harness.advance(601)
    [again] = q.checkout("u", lease=600, timeout=0)
    assert (again.payload, again.attempt) == (b"u", 7)
    assert q.checkout("t", timeout=0) == []
    [dead] = q.dlq.list()
    assert (dead.message.payload, dead.reason, dead.attempts) == (b"t", "lease_expired", 2)
    assert dead.handler == "on_t"


def test_expiry_on_the_last_attempt_dead_letters_with_reason_lease_expired(
    harness: Harness,
) -> None:
    q = harness.open(max_attempts=2)
    published_at = harness.now()
    mid = q.publish(b"x", correlation_id="c-1")
    [d1] = q.checkout(lease=10, timeout=0)
    first_deadline = harness.advance(10)
    [d2] = q.checkout(lease=10, timeout=0)
    assert (d1.attempt, d2.attempt) == (1, 2)
    harness.advance(15)
    assert q.checkout(timeout=0) == []
    dead = q.dlq.get(mid)
    assert dead.reason == "lease_expired"
    assert dead.attempts == 2
    assert dead.error_type == "LeaseExpired"
    assert dead.first_failed_at == at(first_deadline)
    assert dead.dead_lettered_at == at(first_deadline + 10), "at the deadline"
    assert (dead.message.payload, dead.message.correlation_id) == (b"x", "c-1")
    assert dead.message.enqueued_at == at(published_at)
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["dead"], s["total"]) == (0, 0, 1, 0)
    with pytest.raises(ringq.LeaseLost):
        q.ack(d2)


def test_a_superseded_message_whose_lease_runs_out_is_dropped(harness: Harness) -> None:
    q = harness.open()
    q.publish(b"v1", dedup_key="k")
    [old] = q.checkout(lease=10, timeout=0)
    newer = q.publish(b"v2", dedup_key="k")
    harness.advance(10)
    assert [(d.id, d.payload, d.attempt) for d in q.checkout(max_messages=5, timeout=0)] == [
        (newer, b"v2", 1)
    ]
    assert q.dlq.list() == []
    with pytest.raises(ringq.LeaseLost):
        q.ack(old)


@pytest.mark.parametrize("seconds", [365 * 86400 + 1, 1e15, float("inf"), float("nan"), -1])
def test_durations_past_365_days_or_not_finite_are_refused_alike_and_change_nothing(
    q: ringq.Queue, seconds: float
) -> None:
    """Every backend takes delays, leases and extensions of 0..=365 days
    (leases and extensions above 0). Redis took any: ``extend(d, 1e15)``
    overflowed to a deadline in the past (the message went to another
    consumer while its holder worked), ``checkout(lease=1e15)`` counted a
    delivery it then failed to return, ``nack(d, delay=1e15)`` made the
    message ready at once."""
    with pytest.raises(ValueError, match="delay="):
        q.publish(b"x", delay=seconds)
    assert q.stats()["total"] == 0
    q.publish(b"x")
    with pytest.raises(ValueError, match="lease="):
        q.checkout(lease=seconds, timeout=0)
    [d] = q.checkout(lease=60, timeout=0)
    assert d.attempt == 1, "the refused checkout took nothing"
    with pytest.raises(ValueError, match="seconds="):
        q.extend(d, seconds)
    with pytest.raises(ValueError, match="delay="):
        q.nack(d, delay=seconds)
    s = q.stats()
    assert (s["in_flight"], s["ready"], s["delayed"]) == (1, 0, 0), "still leased, untouched"
    q.ack(d)
    assert q.stats()["total"] == 0


@pytest.mark.not_on(
    "redis",
    "redis_cluster",
    reason="a lease outlives the client on Redis: back when it runs out (docs/backends.md)",
)
def test_a_message_in_flight_when_the_queue_stopped_is_ready_at_the_reopen(
    harness: Harness,
) -> None:
    """The reopen of a directory ends the leases of the process that
    stopped: its messages are ready at once, the delivery counted (attempt
    2 next), before any clock moves."""
    q = harness.open()
    mid = q.publish(b"x", "t")
    [d] = q.checkout("t", lease=600, timeout=0)
    assert d.attempt == 1
    q.close()
    q = harness.open()
    assert (q.stats()["ready"], q.stats()["in_flight"]) == (1, 0)
    [again] = q.checkout("t", timeout=0)
    assert (again.id, again.attempt) == (mid, 2)

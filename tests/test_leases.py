"""Leases: expiry redelivers, stale tokens are rejected, extend, attempts run out."""

from __future__ import annotations

import time

import pytest
import ringq
from conftest import OpenQueue, wait_until


def test_lease_expiry_redelivers_with_next_attempt(open_queue: OpenQueue) -> None:
    q = open_queue()
    mid = q.publish(b"x")
    [d1] = q.checkout(lease=0.2, timeout=0)
    assert d1.attempt == 1
    t0 = time.monotonic()
    [d2] = q.checkout(lease=30, timeout=5)
    assert 0.1 <= time.monotonic() - t0 < 2.0
    assert (d2.id, d2.attempt, d2.payload) == (mid, 2, b"x")
    assert d2.lease_token != d1.lease_token
    s = q.stats()
    assert (s["expired"], s["in_flight"], s["ready"], s["delivered"]) == (1, 1, 0, 2)


def test_stale_ack_extend_and_nack_raise_lease_lost_and_change_nothing(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    mid = q.publish(b"x")
    [stale] = q.checkout(lease=0.2, timeout=0)
    [current] = q.checkout(lease=30, timeout=5)
    assert current.id == mid
    before = q.stats()
    for call in (lambda: q.ack(stale), lambda: q.extend(stale, 10), lambda: q.nack(stale)):
        with pytest.raises(ringq.LeaseLost) as info:
            call()
        assert info.value.ids == [mid]
    after = q.stats()
    for key in ("ready", "in_flight", "acked", "nacked", "dead", "total"):
        assert after[key] == before[key], key
    q.ack(current)
    assert q.stats()["total"] == 0


def test_ack_of_a_list_acks_valid_ones_and_names_stale_ones(open_queue: OpenQueue) -> None:
    q = open_queue()
    m1 = q.publish(b"1")
    m2 = q.publish(b"2")
    [d1] = q.checkout(lease=0.2, timeout=0)
    [d2] = q.checkout(lease=30, timeout=0)
    [d1_again] = q.checkout(lease=30, timeout=5)
    assert (d1.id, d2.id, d1_again.id) == (m1, m2, m1)
    with pytest.raises(ringq.LeaseLost) as info:
        q.ack([d1, d2])
    assert info.value.ids == [m1]
    s = q.stats()
    assert (s["acked"], s["in_flight"], s["total"]) == (1, 1, 1)
    q.ack(d1_again)
    assert q.stats()["total"] == 0


def test_double_ack_is_lease_lost(open_queue: OpenQueue) -> None:
    q = open_queue()
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.ack(d)
    with pytest.raises(ringq.LeaseLost) as info:
        q.ack(d)
    assert info.value.ids == [mid]


def test_extend_pushes_deadline_so_no_redelivery(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.publish(b"x")
    [d] = q.checkout(lease=0.3, timeout=0)
    now = time.time()
    deadline = q.extend(d, 2.0)
    assert now + 2.0 - 0.05 <= deadline <= time.time() + 2.0 + 0.5
    time.sleep(0.6)
    assert q.checkout(timeout=0) == []
    s = q.stats()
    assert (s["in_flight"], s["expired"]) == (1, 0)
    q.ack(d)  # the original delivery still holds the lease
    assert q.stats()["total"] == 0


def test_extended_lease_still_expires_eventually(open_queue: OpenQueue) -> None:
    q = open_queue()
    mid = q.publish(b"x")
    [d] = q.checkout(lease=0.2, timeout=0)
    q.extend(d, 0.4)
    t0 = time.monotonic()
    [again] = q.checkout(timeout=5)
    assert time.monotonic() - t0 >= 0.25
    assert (again.id, again.attempt) == (mid, 2)


def test_expired_lease_after_max_attempts_dead_letters_as_lease_expired(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(max_attempts=2)
    mid = q.publish(b"x")
    [d1] = q.checkout(lease=0.1, timeout=0)
    [d2] = q.checkout(lease=0.1, timeout=5)
    assert (d1.attempt, d2.attempt) == (1, 2)
    assert wait_until(lambda: q.stats()["dead"] == 1)
    assert q.checkout(timeout=0.3) == []
    dead = q.dlq.get(mid)
    assert dead.reason == "lease_expired"
    assert dead.attempts == 2
    assert dead.message.payload == b"x"
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["dead_lettered"]) == (0, 0, 1)


def test_nack_after_max_attempts_dead_letters_as_max_attempts(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=3)
    mid = q.publish(b"x")
    for attempt in (1, 2, 3):
        [d] = q.checkout(timeout=0)
        assert (d.id, d.attempt) == (mid, attempt)
        q.nack(d, error="nope")
    assert q.checkout(timeout=0) == []
    s = q.stats()
    assert (s["dead"], s["nacked"], s["total"]) == (1, 3, 0)
    dead = q.dlq.get(mid)
    assert (dead.reason, dead.attempts, dead.error_message) == ("max_attempts", 3, "nope")


def test_nack_with_non_retryable_reason_dead_letters_at_once(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=5)
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q._backend.nack(
        d, error_type="app.Bad", error_message="bad input", dead_letter_reason="non_retryable"
    )
    assert q.stats()["dead"] == 1
    assert q.checkout(timeout=0) == []
    dead = q.dlq.get(mid)
    assert (dead.reason, dead.attempts, dead.error_type) == ("non_retryable", 1, "app.Bad")


def test_nack_without_delay_makes_message_ready_again(open_queue: OpenQueue) -> None:
    q = open_queue()
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.nack(d)
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["nacked"]) == (1, 0, 1)
    [again] = q.checkout(timeout=0)
    assert (again.id, again.attempt) == (mid, 2)


def test_default_lease_comes_from_the_queue(open_queue: OpenQueue) -> None:
    q = open_queue(lease=0.2)
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    assert d.lease_deadline - time.time() < 0.5
    [again] = q.checkout(lease=60, timeout=5)
    assert (again.id, again.attempt) == (mid, 2)

"""Delayed messages: scheduled publishes and nack backoff."""

from __future__ import annotations

import time

from conftest import OpenQueue


def test_delayed_message_is_invisible_until_due(open_queue: OpenQueue) -> None:
    q = open_queue()
    t0 = time.monotonic()
    later = q.publish(b"later", delay=0.5)
    now = q.publish(b"now")
    s = q.stats()
    assert (s["delayed"], s["ready"], s["total"]) == (1, 1, 2)
    [d] = q.checkout(max_messages=10, timeout=0)
    assert d.id == now
    assert q.checkout(timeout=0) == []
    [d2] = q.checkout(timeout=5)
    waited = time.monotonic() - t0
    assert d2.id == later
    assert d2.attempt == 1
    assert 0.45 <= waited < 1.5, waited
    assert q.stats()["delayed"] == 0


def test_waiting_checkout_wakes_when_delay_is_due(open_queue: OpenQueue) -> None:
    q = open_queue()
    mid = q.publish(b"x", delay=0.3)
    t0 = time.monotonic()
    [d] = q.checkout(timeout=3)
    assert d.id == mid
    assert 0.25 <= time.monotonic() - t0 < 1.0


def test_delayed_messages_of_one_topic_become_ready_in_due_order(open_queue: OpenQueue) -> None:
    q = open_queue()
    slow = q.publish(b"slow", delay=0.4)
    fast = q.publish(b"fast", delay=0.1)
    assert q.checkout(timeout=0) == []
    [first] = q.checkout(timeout=3)
    [second] = q.checkout(timeout=3)
    assert (first.id, second.id) == (fast, slow)


def test_nack_with_delay_retries_after_the_delay(open_queue: OpenQueue) -> None:
    q = open_queue()
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    t0 = time.monotonic()
    q.nack(d, delay=0.4)
    s = q.stats()
    assert (s["delayed"], s["ready"], s["in_flight"]) == (1, 0, 0)
    assert q.checkout(timeout=0) == []
    [again] = q.checkout(timeout=3)
    assert 0.35 <= time.monotonic() - t0 < 1.5
    assert (again.id, again.attempt) == (mid, 2)


def test_delayed_message_does_not_block_other_topics(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.publish(b"a", "a", delay=30)
    b = q.publish(b"b", "b")
    assert [d.id for d in q.checkout("b", timeout=0)] == [b]
    assert q.checkout("a", timeout=0) == []

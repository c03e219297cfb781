"""Capacity: live messages (ready, delayed, in flight) are bounded; a
publish on a full queue blocks (optionally up to a timeout) or raises
``QueueFull`` with ``block=False``, like ``queue.Queue.put``; a batch is all
or nothing."""

from __future__ import annotations

import threading
import time

import pytest
import ringq

from .conftest import Harness, drain


def test_publish_on_a_full_queue_with_block_false_raises_queue_full(harness: Harness) -> None:
    q = harness.open(capacity=3)
    for i in range(3):
        q.publish(b"%d" % i)
    t0 = time.monotonic()
    with pytest.raises(ringq.QueueFull):
        q.publish(b"x", block=False)
    assert time.monotonic() - t0 < 0.5, "block=False never waits"
    with pytest.raises(ringq.QueueFull):
        q.publish("text", block=False)
    s = q.stats()
    assert (s["total"], s["capacity"]) == (3, 3)


def test_capacity_counts_delayed_and_in_flight_messages(harness: Harness) -> None:
    q = harness.open(capacity=2)
    q.publish(b"later", delay=60)
    q.publish(b"now")
    q.checkout(timeout=0)
    with pytest.raises(ringq.QueueFull):
        q.publish(b"x", block=False)


def test_a_blocking_publish_times_out_with_queue_full(harness: Harness) -> None:
    q = harness.open(capacity=1)
    q.publish(b"a")
    t0 = time.monotonic()
    with pytest.raises(ringq.QueueFull):
        q.publish(b"b", timeout=0.2)
    assert time.monotonic() - t0 >= 0.18, "it waited for room first"
    assert q.stats()["total"] == 1


def test_a_blocked_publisher_gets_the_room_an_ack_makes(harness: Harness) -> None:
    q = harness.open(capacity=2)
    q.publish(b"a")
    q.publish(b"b")
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(q.publish(b"c", timeout=30)), daemon=True)
    t.start()
    [d] = q.checkout(timeout=0)
    q.ack(d)
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(result) == 1
    assert [x.payload for x in drain(q)] == [b"b", b"c"]


def test_a_blocked_publisher_gets_the_room_a_dead_letter_makes(harness: Harness) -> None:
    q = harness.open(capacity=1, max_attempts=1)
    q.publish(b"a")
    [d] = q.checkout(lease=10, timeout=0)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(q.publish(b"b", timeout=30)), daemon=True)
    t.start()
    harness.advance(10)  # the lease runs out on the last attempt: dead-lettered
    t.join(timeout=10)
    assert not t.is_alive()
    assert [x.payload for x in drain(q)] == [b"b"]
    assert q.dlq.get(d.id).reason == "lease_expired"


def test_replacing_on_a_full_queue_needs_no_room(harness: Harness) -> None:
    q = harness.open(capacity=1)
    mid = q.publish(b"v1", dedup_key="k")
    assert q.publish(b"v2", dedup_key="k", block=False) == mid


def test_a_batch_larger_than_the_free_room_publishes_nothing(harness: Harness) -> None:
    q = harness.open(capacity=5)
    first = q.publish_many([b"1", b"2"])
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"a", b"b", b"c", b"d"], block=False)
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"a", b"b", b"c", b"d"], timeout=0.1)
    assert q.stats()["total"] == 2
    assert [d.id for d in drain(q)] == first
    # exactly the free room fits
    assert len(q.publish_many([b"x"] * 3, block=False)) == 3


def test_a_batch_beyond_capacity_is_refused(harness: Harness) -> None:
    q = harness.open(capacity=3)
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"x"] * 4, block=False)
    assert q.stats()["total"] == 0

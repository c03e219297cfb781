"""A bounded queue: QueueFull, blocking publishers, all-or-nothing batches."""

from __future__ import annotations

import threading
import time

import pytest
import ringq
from conftest import OpenQueue, drain


def test_publish_on_full_queue_with_block_false_raises_queue_full(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=3)
    for i in range(3):
        q.publish(b"%d" % i)
    t0 = time.monotonic()
    with pytest.raises(ringq.QueueFull):
        q.publish(b"x", block=False)
    assert time.monotonic() - t0 < 0.1
    with pytest.raises(ringq.QueueFull):
        q.publish("text", block=False)
    s = q.stats()
    assert (s["total"], s["published"], s["capacity"]) == (3, 3, 3)


def test_capacity_counts_delayed_and_in_flight_messages(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=2)
    q.publish(b"later", delay=60)
    q.publish(b"now")
    q.checkout(timeout=0)
    with pytest.raises(ringq.QueueFull):
        q.publish(b"x", block=False)


def test_blocking_publish_times_out_with_queue_full(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=1)
    q.publish(b"a")
    t0 = time.monotonic()
    with pytest.raises(ringq.QueueFull):
        q.publish(b"b", timeout=0.2)
    waited = time.monotonic() - t0
    assert 0.18 <= waited < 1.0, waited
    assert q.stats()["total"] == 1


def test_blocked_publisher_is_released_by_an_ack(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=2)
    q.publish(b"a")
    q.publish(b"b")
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(q.publish(b"c", timeout=10)), daemon=True)
    t.start()
    time.sleep(0.2)
    assert t.is_alive(), "publish on a full queue returned instead of blocking"
    [d] = q.checkout(timeout=0)
    released_at = time.monotonic()
    q.ack(d)
    t.join(timeout=5)
    assert not t.is_alive()
    assert time.monotonic() - released_at < 1.0
    assert len(result) == 1
    assert [x.payload for x in drain(q)] == [b"b", b"c"]


def test_replace_on_full_queue_needs_no_space(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=1)
    mid = q.publish(b"v1", dedup_key="k")
    assert q.publish(b"v2", dedup_key="k", block=False) == mid


def test_publish_many_larger_than_free_space_publishes_nothing(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=5)
    first = q.publish_many([b"1", b"2"])
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"a", b"b", b"c", b"d"], block=False)
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"a", b"b", b"c", b"d"], timeout=0.1)
    s = q.stats()
    assert (s["total"], s["published"]) == (2, 2)
    assert [d.id for d in drain(q)] == first
    # exactly the free space fits
    assert len(q.publish_many([b"x"] * 3, block=False)) == 3


def test_publish_many_beyond_capacity_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=3)
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"x"] * 4, block=False)
    assert q.stats()["total"] == 0

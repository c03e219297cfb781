"""Delays: a message published with ``delay`` is invisible until it falls
due, then joins the end of its topic; a checkout waiting for it wakes."""

from __future__ import annotations

import threading

import pytest
import ringq

from .conftest import Harness


def test_a_delayed_message_is_invisible_until_due(harness: Harness) -> None:
    q = harness.open()
    later = q.publish(b"later", delay=5.0)
    now = q.publish(b"now")
    s = q.stats()
    assert (s["delayed"], s["ready"], s["total"]) == (1, 1, 2)
    [d] = q.checkout(max_messages=10, timeout=0)
    assert d.id == now
    harness.advance(4.999)
    assert q.checkout(timeout=0) == []
    assert q.stats()["delayed"] == 1
    harness.advance(0.001)
    [d2] = q.checkout(timeout=0)
    assert (d2.id, d2.attempt) == (later, 1)
    assert q.stats()["delayed"] == 0


def test_a_waiting_checkout_wakes_when_a_delay_falls_due(harness: Harness) -> None:
    q = harness.open()
    mid = q.publish(b"x", delay=3.0)
    got: list[list[ringq.Delivery]] = []
    waiter = threading.Thread(target=lambda: got.append(q.checkout(timeout=30)), daemon=True)
    waiter.start()
    harness.advance(3.0)
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert [d.id for d in got[0]] == [mid]


def test_delayed_messages_of_a_topic_become_ready_in_due_order(harness: Harness) -> None:
    q = harness.open()
    slow = q.publish(b"slow", delay=4.0)
    fast = q.publish(b"fast", delay=1.0)
    ready = q.publish(b"ready")
    harness.advance(2.0)
    between = q.publish(b"between")
    harness.advance(2.0)
    got = [d.id for d in q.checkout(max_messages=10, timeout=0)]
    assert got == [ready, fast, between, slow], "each joins the end when it falls due"


def test_a_delayed_message_does_not_hold_up_other_topics(q: ringq.Queue) -> None:
    q.publish(b"a", "a", delay=30)
    b = q.publish(b"b", "b")
    assert [d.id for d in q.checkout("b", timeout=0)] == [b]
    assert q.checkout("a", timeout=0) == []


def test_a_delay_of_zero_is_no_delay(q: ringq.Queue) -> None:
    mid = q.publish(b"x", delay=0)
    assert [d.id for d in q.checkout(timeout=0)] == [mid]


@pytest.mark.parametrize("lease", [3, 5])
def test_a_lease_end_and_a_delay_falling_due_between_two_calls_reenter_in_time_order(
    harness: Harness, lease: float
) -> None:
    """A lease ends at +3 s (or +5 s: a tie, the lease first), a delay
    falls due at +5 s, and nothing calls the queue until +6 s: the lease's
    message re-enters first, as its time came first (Redis made every due
    delay ready before ending any lease)."""
    q = harness.open()
    q.publish(b"leased", "t")
    [_held] = q.checkout("t", lease=lease, timeout=0)
    q.publish(b"delayed", "t", delay=5)
    harness.advance(6)
    got = [d.payload for d in q.checkout("t", max_messages=10, timeout=0)]
    assert got == [b"leased", b"delayed"]


def test_more_than_a_thousand_due_delays_still_come_before_a_later_lease_end(
    harness: Harness,
) -> None:
    """1,001 delays fall due at +1 s and a lease ends at +2 s: all the
    delays re-enter before the lease's message (Redis settles at most 1000
    of each per call, and stops at the last time of a list it cut)."""
    q = harness.open()
    q.publish(b"leased", "t")
    [_held] = q.checkout("t", lease=2, timeout=0)
    q.publish_many([ringq.Message(b"d%d" % i, topic="t", delay=1) for i in range(1001)])
    harness.advance(3)
    got = [d.payload for d in q.checkout("t", max_messages=2000, timeout=0)]
    assert len(got) == 1002 and got[-1] == b"leased", got[-3:]

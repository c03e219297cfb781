"""Closing: every call on a closed queue (with its deliveries too) raises
``QueueClosed``; a consumer waiting in ``checkout`` is woken; reopening
keeps what was published: ready messages in order, delayed ones delayed,
dead letters, dedup keys and the id sequence."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ringq

from .conftest import Harness


def test_every_call_after_close_raises_queue_closed(q: ringq.Queue) -> None:
    q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.close()
    assert q.closed
    calls: dict[str, Callable[[], Any]] = {
        "publish": lambda: q.publish(b"y"),
        "publish(str)": lambda: q.publish("str"),
        "publish_many": lambda: q.publish_many([b"a"]),
        "checkout": lambda: q.checkout(timeout=0),
        "ack": lambda: q.ack(d),
        "nack": lambda: q.nack(d),
        "extend": lambda: q.extend(d, 1.0),
        "release": lambda: q.release(d),
        "stats": lambda: q.stats(),
        "snapshot": lambda: q.snapshot(),
        "dlq.list": lambda: q.dlq.list(),
        "dlq.replay": lambda: q.dlq.replay(),
        "dlq.purge": lambda: q.dlq.purge(),
    }
    did_not_raise = []
    for name, call in calls.items():
        try:
            call()
        except ringq.QueueClosed:
            continue
        did_not_raise.append(name)
    assert did_not_raise == []
    q.close()  # closing twice is harmless


def test_close_wakes_a_consumer_waiting_in_checkout(q: ringq.Queue) -> None:
    outcome: list[object] = []
    waiting = threading.Event()

    def consumer() -> None:
        waiting.set()
        try:
            outcome.append(q.checkout(timeout=30))
        except ringq.QueueClosed as exc:
            outcome.append(exc)

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    assert waiting.wait(5)
    q.close()
    t.join(timeout=10)
    assert not t.is_alive()
    assert outcome and (outcome[0] == [] or isinstance(outcome[0], ringq.QueueClosed))


def test_leaving_a_with_block_closes_the_queue(harness: Harness) -> None:
    with harness.open() as q:
        q.publish(b"x")
        assert not q.closed
    assert q.closed
    with harness.open() as again:
        assert again.stats()["ready"] == 1


def test_reopening_keeps_ready_delayed_dead_keys_and_the_id_sequence(harness: Harness) -> None:
    q = harness.open()
    ready = [
        q.publish(b"r%d" % i, "t", headers={"i": str(i)}, correlation_id=f"c{i}") for i in range(3)
    ]
    delayed = q.publish(b"later", "t", delay=60)
    dead = q.publish(b"dead", "d")
    [d] = q.checkout("d", timeout=0)
    q.backend.nack(d, error_message="boom", dead_letter_reason="non_retryable")
    keyed = q.publish(b"k1", "t", dedup_key="key")
    assert q.publish(b"k2", "t", dedup_key="key") == keyed
    before = q.stats()
    q.close()

    q = harness.open()
    s = q.stats()
    for key in ("ready", "delayed", "dead", "in_flight", "total"):
        assert s[key] == before[key], key
    assert (s["ready"], s["delayed"], s["dead"]) == (4, 1, 1)
    assert q.dlq.get(dead).error_message == "boom"
    assert q.publish(b"k3", "t", dedup_key="key") == keyed, "the key still names its message"
    newest = q.publish(b"new", "t")
    assert newest > max([*ready, delayed, dead, keyed])
    got = q.checkout("t", max_messages=10, timeout=0)
    assert [x.id for x in got] == [*ready, keyed, newest]
    assert [x.headers for x in got[:3]] == [{"i": "0"}, {"i": "1"}, {"i": "2"}]
    assert [x.correlation_id for x in got[:3]] == ["c0", "c1", "c2"]
    assert (got[3].payload, got[3].version) == (b"k3", 3)
    assert all(x.attempt == 1 for x in got)
    q.ack(got)
    # The delayed one is still delayed, and falls due in time.
    harness.advance(60)
    [later] = q.checkout("t", timeout=0)
    assert (later.id, later.payload) == (delayed, b"later")

"""Replaying dead letters at a rate (``q.dlq.replay(rate=...)``): the SDK
paces the replays itself, in real time. Everything else about dead letters
is part of the contract (``tests/contract/test_dead_letters.py``)."""

from __future__ import annotations

import time

import pytest
import ringq
from conftest import OpenQueue


def dead_letter(q: ringq.Queue, payload: bytes, topic: str = "default") -> str:
    """Publish one message and dead-letter it at once as non-retryable."""
    mid = q.publish(payload, topic)
    [d] = q.checkout(topic, timeout=0)
    q.backend.nack(d, error_message="bad", dead_letter_reason="non_retryable")
    return mid


def test_replay_with_a_rate_paces_the_messages_and_keeps_their_order(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    ids = [dead_letter(q, f"m{i}".encode(), "t") for i in range(30)]
    t0 = time.monotonic()
    assert q.dlq.replay(rate=100.0) == 30
    took = time.monotonic() - t0
    assert took >= 0.25, f"30 messages at 100/s took only {took:.3f}s"
    assert len(q.dlq) == 0
    got = q.checkout("t", max_messages=100, timeout=0)
    assert [d.payload for d in got] == [f"m{i}".encode() for i in range(30)]
    assert all(d.id not in ids for d in got)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ringq.ConfigError, match="rate"):
            q.dlq.replay(rate=bad)

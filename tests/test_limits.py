"""Oversized payloads, keys, topics and headers are refused before anything is written."""

from __future__ import annotations

import pytest
import ringq
from conftest import OpenQueue

LIMITS = {"max_payload": 1024, "max_key": 16, "max_headers": 64}

OVERSIZED = {
    "payload": {"payload": b"x" * 1025},
    "key": {"payload": b"x", "dedup_key": "k" * 17},
    "topic": {"payload": b"x", "topic": "t" * 256},
    "header": {"payload": b"x", "headers": {"name": "v" * 100}},
}


def assert_nothing_written(q: ringq.Queue, before: dict[str, object]) -> None:
    after = q.stats()
    for key in ("total", "ready", "published", "lsn"):
        assert after[key] == before[key], key


@pytest.mark.parametrize("what", list(OVERSIZED))
def test_oversized_field_raises_limit_exceeded_naming_it(open_queue: OpenQueue, what: str) -> None:
    q = open_queue(**LIMITS)
    before = q.stats()
    args = dict(OVERSIZED[what])
    payload = args.pop("payload")
    with pytest.raises(ringq.LimitExceeded) as info:
        q.publish(payload, **args)  # type: ignore[arg-type]
    assert what in str(info.value).lower()
    assert isinstance(info.value, ValueError)
    assert_nothing_written(q, before)
    # nor inside a batch: one oversized item refuses the whole batch
    message = ringq.Message(payload, **args)  # type: ignore[arg-type]
    with pytest.raises(ringq.LimitExceeded):
        q.publish_many([b"fine", message])
    assert_nothing_written(q, before)
    q.close()
    q = open_queue(**LIMITS)
    assert q.stats()["total"] == 0
    assert q.checkout(timeout=0) == []


def test_sizes_at_the_limit_are_accepted(open_queue: OpenQueue) -> None:
    q = open_queue(**LIMITS)
    q.publish(b"x" * 1024, "t" * 255, dedup_key="k" * 16)
    [d] = q.checkout("t" * 255, timeout=0)
    assert len(d.payload) == 1024


def test_default_limits(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.publish(b"x" * (1024 * 1024), dedup_key="k" * 1024)
    with pytest.raises(ringq.LimitExceeded):
        q.publish(b"x" * (1024 * 1024 + 1))
    with pytest.raises(ringq.LimitExceeded):
        q.publish(b"x", dedup_key="k" * 1025)
    with pytest.raises(ringq.LimitExceeded):
        q.publish(b"x", headers={"h": "v" * (64 * 1024)})
    assert q.stats()["total"] == 1


def test_key_limit_counts_utf8_bytes(open_queue: OpenQueue) -> None:
    q = open_queue(max_key=16)
    with pytest.raises(ringq.LimitExceeded):
        q.publish(b"x", dedup_key="é" * 9)  # 18 bytes, 9 characters


def test_empty_topic_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()
    with pytest.raises(ValueError):
        q.publish(b"x", topic="")
    with pytest.raises(ValueError):
        q.publish_many([b"x"], topic="")
    assert q.stats()["total"] == 0

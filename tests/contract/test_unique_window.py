"""Unique windows: ``publish(..., dedup_key=k, dedup_window=s)``. While a
message with key ``k`` is live, the key dedups as always; once it is acked,
for ``s`` more seconds a publish of ``k`` enqueues nothing and returns the
acked message's id. Only an ack opens the window (a dead letter or a cancel
frees the key at once). The window survives a reopen; an expired key is
forgotten."""

from __future__ import annotations

import pytest

from .conftest import Harness, drain


def test_the_key_answers_with_the_acked_id_until_the_window_closes(harness: Harness) -> None:
    q = harness.open()
    first = q.publish(b"job", "t", dedup_key="job-1", dedup_window=60)
    [d] = drain(q, "t")
    q.ack(d)
    assert q.publish(b"again", "t", dedup_key="job-1", dedup_window=60) == first
    assert q.publish(b"plain-dedup", "t", dedup_key="job-1") == first, "any publish of the key"
    assert drain(q, "t") == [], "nothing was enqueued"
    assert q.stats()["total"] == 0
    harness.advance(59)
    assert q.publish(b"again", "t", dedup_key="job-1") == first
    harness.advance(1)
    second = q.publish(b"after", "t", dedup_key="job-1", dedup_window=60)
    assert second != first
    assert [m.payload for m in drain(q, "t")] == [b"after"]


def test_the_window_survives_a_reopen(harness: Harness) -> None:
    q = harness.open()
    first = q.publish(b"job", "t", dedup_key="k", dedup_window=300)
    [d] = drain(q, "t")
    q.ack(d)
    q.close()
    q = harness.open()
    assert q.publish(b"again", "t", dedup_key="k") == first
    harness.advance(301)
    assert q.publish(b"again", "t", dedup_key="k") != first


def test_keys_are_per_topic_and_only_an_ack_opens_a_window(harness: Harness) -> None:
    q = harness.open()
    acked = q.publish(b"x", "t", dedup_key="k", dedup_window=60)
    q.ack(drain(q, "t"))
    assert q.publish(b"y", "u", dedup_key="k") != acked, "another topic's key"
    dead = q.publish(b"d", "t", dedup_key="dead", dedup_window=60)
    [d] = drain(q, "t")
    q.backend.nack(d, error_message="bad", dead_letter_reason="non_retryable")
    assert q.publish(b"d2", "t", dedup_key="dead", dedup_window=60) != dead
    cancelled = q.publish(b"c", "t", dedup_key="gone", dedup_window=60)
    q.cancel(cancelled)
    assert q.publish(b"c2", "t", dedup_key="gone") != cancelled


def test_a_window_without_a_key_or_not_positive_is_refused(harness: Harness) -> None:
    q = harness.open()
    with pytest.raises(ValueError, match="dedup_window needs a dedup_key"):
        q.publish(b"x", "t", dedup_window=60)
    with pytest.raises(ValueError, match="dedup_window"):
        q.publish(b"x", "t", dedup_key="k", dedup_window=0)
    with pytest.raises(ValueError, match="dedup_window"):
        q.publish(b"x", "t", dedup_key="k", dedup_window=-1)
    assert q.stats()["total"] == 0

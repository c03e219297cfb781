"""Retries: a nack gives the message back (at once or after a backoff delay)
with the next delivery counted; out of attempts (or non-retryable) it is
dead-lettered with what went wrong."""

from __future__ import annotations

import ringq

from .conftest import Harness


def test_nack_without_delay_makes_the_message_ready_again(q: ringq.Queue) -> None:
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.nack(d)
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["delayed"]) == (1, 0, 0)
    [again] = q.checkout(timeout=0)
    assert (again.id, again.attempt) == (mid, 2)


def test_nack_with_a_delay_retries_once_the_backoff_is_over(harness: Harness) -> None:
    q = harness.open()
    mid = q.publish(b"x")
    other = q.publish(b"other")
    [d] = q.checkout(timeout=0)
    q.nack(d, delay=4.0)
    s = q.stats()
    assert (s["delayed"], s["ready"], s["in_flight"]) == (1, 1, 0)
    assert [x.id for x in q.checkout(max_messages=5, timeout=0)] == [other]
    harness.advance(3.9)
    assert q.checkout(timeout=0) == []
    harness.advance(0.1)
    [again] = q.checkout(timeout=0)
    assert (again.id, again.attempt) == (mid, 2)
    assert q.stats()["delayed"] == 0


def test_nack_on_the_last_attempt_dead_letters_with_reason_max_attempts(
    harness: Harness,
) -> None:
    q = harness.open(max_attempts=3)
    mid = q.publish(b"x")
    for attempt in (1, 2, 3):
        [d] = q.checkout(timeout=0)
        assert (d.id, d.attempt) == (mid, attempt)
        q.nack(d, error="nope")
    assert q.checkout(timeout=0) == []
    s = q.stats()
    assert (s["dead"], s["total"]) == (1, 0)
    dead = q.dlq.get(mid)
    assert (dead.reason, dead.attempts, dead.error_message) == ("max_attempts", 3, "nope")


def test_the_last_attempt_dead_letters_even_with_a_retry_delay(harness: Harness) -> None:
    q = harness.open(max_attempts=1)
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.nack(d, delay=60.0)
    assert q.stats()["delayed"] == 0
    assert q.dlq.get(mid).reason == "max_attempts"


def test_a_non_retryable_failure_dead_letters_at_once(harness: Harness) -> None:
    q = harness.open(max_attempts=5)
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.backend.nack(
        d, error_type="app.Bad", error_message="bad input", dead_letter_reason="non_retryable"
    )
    assert q.stats()["dead"] == 1
    assert q.checkout(timeout=0) == []
    dead = q.dlq.get(mid)
    assert (dead.reason, dead.attempts, dead.error_type) == ("non_retryable", 1, "app.Bad")

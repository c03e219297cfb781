"""Handlers on every backend and through both APIs: a handler's retry
policy (attempts, backoff, exceptions that dead-letter at once), a payload
it cannot decode, ``ctx.superseded``, and producers replacing one key at
once. (The backend calls behind them are in the other files; these run the
handlers' own paths: the shared client's round trips, the async API's
worker tasks.)"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import ringq
from conftest import wait_until

from .conftest import Harness, drain


@dataclass
class Job:
    n: int


class Hopeless(Exception):
    """Listed in ``dead_letter_on``."""


def test_a_handlers_retry_policy_retries_after_its_backoff_then_dead_letters(
    harness: Harness,
) -> None:
    q = harness.open()
    attempts: list[int] = []

    @q.handler(Job, retry=ringq.Retry(max_attempts=3, backoff=ringq.Backoff.fixed(4.0)))
    def on_job(msg: Job, ctx: ringq.Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"attempt {ctx.attempt}")

    mid = q.publish(Job(1))
    q.start()
    try:
        for seen in (1, 2):
            assert wait_until(lambda seen=seen: len(attempts) == seen and q.stats()["delayed"] == 1)
            harness.advance(4.0)
        assert wait_until(lambda: len(q.dlq) == 1)
    finally:
        q.stop()
    assert attempts == [1, 2, 3]
    dead = q.dlq.get(mid)
    assert (dead.reason, dead.attempts, dead.handler) == ("max_attempts", 3, "on_job")
    assert (dead.error_type or "").endswith("RuntimeError") and dead.error_message == "attempt 3"


def test_an_exception_listed_in_dead_letter_on_dead_letters_at_once(harness: Harness) -> None:
    q = harness.open()
    attempts: list[int] = []

    @q.handler(Job, dead_letter_on=(Hopeless,))
    def on_job(msg: Job, ctx: ringq.Context) -> None:
        attempts.append(ctx.attempt)
        raise Hopeless("no use retrying")

    mid = q.publish(Job(1))
    q.start()
    try:
        assert wait_until(lambda: len(q.dlq) == 1)
    finally:
        q.stop()
    assert attempts == [1]
    assert (q.dlq.get(mid).reason, q.dlq.get(mid).handler) == ("non_retryable", "on_job")


def test_a_payload_its_handler_cannot_decode_is_dead_lettered_undecodable(
    harness: Harness,
) -> None:
    q = harness.open()
    handled: list[Job] = []

    @q.handler(Job)
    def on_job(msg: Job) -> None:
        handled.append(msg)

    bad = q.publish(b"{not json", ringq.codecs.topic_for(Job))
    q.publish(Job(2))
    q.start()
    try:
        assert wait_until(lambda: len(q.dlq) == 1 and handled == [Job(2)])
    finally:
        q.stop()
    dead = q.dlq.get(bad)
    assert dead.reason == "undecodable" and dead.attempts == 1
    assert "Job" in (dead.error_message or "")


def test_a_handler_sees_ctx_superseded_once_a_newer_message_takes_its_key(
    harness: Harness,
) -> None:
    q = harness.open()
    started, newer_published = threading.Event(), threading.Event()
    seen: list[tuple[bool, bool]] = []

    @q.handler(Job)
    def on_job(msg: Job, ctx: ringq.Context) -> None:
        if msg.n == 1:
            before = ctx.superseded
            started.set()
            assert newer_published.wait(10)
            seen.append((before, ctx.superseded))

    q.publish(Job(1), dedup_key="k")
    q.start()
    try:
        assert started.wait(10)
        q.publish(Job(2), dedup_key="k")
        newer_published.set()
        assert wait_until(lambda: len(seen) == 1 and q.stats()["total"] == 0)
    finally:
        q.stop()
    assert seen == [(False, True)]


def test_producers_replacing_one_key_at_once_leave_one_message_per_key(
    harness: Harness,
) -> None:
    """Four threads replace the same three keys, 30 times each: one
    message per key, the version counting every publish."""
    q = harness.open()
    go = threading.Barrier(4)
    errors: list[BaseException] = []

    def producer(n: int) -> None:
        try:
            go.wait(10)
            for i in range(30):
                q.publish(b"%d-%d" % (n, i), "t", dedup_key=f"k{i % 3}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    got = drain(q, "t")
    assert sorted(d.dedup_key or "" for d in got) == ["k0", "k1", "k2"]
    assert sorted(d.version for d in got) == [40, 40, 40]

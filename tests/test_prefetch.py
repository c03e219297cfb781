"""Prefetch must never cost a message its attempts or its turn.

A worker checks out a batch (at most ``prefetch``, at most a fair share
``ceil(ready / workers)``, about 5 ms of measured handler time); the
unstarted messages of a batch go back to the front of their topic, their
delivery undone, after ``hold`` (20 ms) or on heartbeat, abandon or stop.
The dispatcher tests replay the scenarios of the issue that reported
batches starving workers, dead-lettering messages that never ran and
charging attempts to messages whose only fault was a slow neighbour (sizes
reduced). The rules they rely on are the contract's (``tests/contract``:
``release`` puts messages back in front, attempt unchanged; a lease is lost
at its deadline); the last test here pins that the engine agrees with the
dispatcher's wall-clock monitor before its own timer has run.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import pytest
import ringq
from conftest import OpenQueue, drain, wait_until

TOPIC = "jobs"


def _settled(q: ringq.Queue) -> bool:
    s = q.stats()
    return bool(s["ready"] == 0 and s["in_flight"] == 0 and s["delayed"] == 0)


@pytest.mark.parametrize("count", [6, 30])
def test_max_parallelism_runs_that_many_handlers_at_once_on_a_backlog_published_before_start(
    open_queue: OpenQueue, count: int
) -> None:
    q = open_queue()
    # Every handler waits until three run at once: if a worker hoards the
    # backlog (or releases it too late), fewer than three meet and it breaks.
    barrier = threading.Barrier(3, timeout=3)
    lock = threading.Lock()
    running = peak = 0
    errors: list[BaseException] = []
    done: list[int] = []

    @q.handler(bytes, topic=TOPIC, max_parallelism=3, retry=ringq.Retry(max_attempts=1))
    def work(msg: bytes) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            barrier.wait()
            time.sleep(0.05)
        except BaseException as e:
            errors.append(e)
            raise
        finally:
            with lock:
                running -= 1
                done.append(int(msg))

    q.publish_many([str(i).encode() for i in range(count)], topic=TOPIC)
    q.start()
    assert wait_until(lambda: len(done) == count and _settled(q), 20)
    q.stop()
    assert errors == [], "fewer than 3 handlers ran at once"
    assert peak == 3
    assert sorted(done) == list(range(count))
    assert q.handler_stats()["work"]["succeeded"] == count
    assert q.dlq.list() == []


def test_short_lease_and_one_attempt_a_batch_never_dead_letters_messages_that_waited(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    runs: list[tuple[int, int]] = []

    @q.handler(
        bytes,
        topic=TOPIC,
        timeout=0.25,
        max_parallelism=4,
        retry=ringq.Retry(max_attempts=1),
    )
    def work(msg: bytes, ctx: ringq.Context) -> None:
        runs.append((int(msg), ctx.attempt))
        time.sleep(0.1)

    q.publish_many([str(i).encode() for i in range(10)], topic=TOPIC)
    q.start()
    assert wait_until(lambda: len(runs) >= 10 and _settled(q), 10)
    q.stop()
    assert q.dlq.list() == []
    assert q.dlq.list(reason="lease_expired") == []
    assert sorted(runs) == [(i, 1) for i in range(10)], "each ran once, on its first attempt"
    stats = q.handler_stats()["work"]
    assert (stats["succeeded"], stats["late_acks"], stats["dead_lettered"]) == (10, 0, 0)
    assert q.stats()["expired"] == 0


def test_a_slow_neighbour_in_the_batch_never_charges_fast_messages_an_attempt(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    count = 32
    slow = {i for i in range(count) if i % 4 == 3}
    runs: dict[int, list[int]] = collections.defaultdict(list)
    lock = threading.Lock()
    unblock = threading.Event()

    # Default prefetch and retry; only the lease is short.
    @q.handler(bytes, topic=TOPIC, timeout=0.5, max_parallelism=2)
    def work(msg: bytes, ctx: ringq.Context) -> None:
        i = int(msg)
        with lock:
            runs[i].append(ctx.attempt)
            first = len(runs[i]) == 1
        if i in slow and first:
            unblock.wait(1.2)  # overruns its 0.5 s lease, on its first run only

    q.publish_many([str(i).encode() for i in range(count)], topic=TOPIC)
    q.start()
    try:
        assert wait_until(
            lambda: (
                all(len(runs[i]) >= (2 if i in slow else 1) for i in range(count)) and _settled(q)
            ),
            15,
        )
    finally:
        unblock.set()
    q.stop()
    assert q.dlq.list() == []
    assert all(runs[i][0] == 1 for i in range(count)), "a first run is attempt 1"
    assert {i: runs[i] for i in slow} == {i: [1, 2] for i in slow}, "overran: back at attempt 2"
    charged = {i: runs[i] for i in range(count) if i not in slow and runs[i] != [1]}
    assert charged == {}, "fast messages ran again, charged an attempt for a slow neighbour"


def test_stop_without_drain_gives_back_prefetched_messages_with_their_attempt_unchanged(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    started = threading.Event()
    handled: list[int] = []

    @q.handler(bytes, topic=TOPIC, prefetch=10, max_parallelism=1)
    def work(msg: bytes) -> None:
        handled.append(int(msg))
        if len(handled) == 1:
            before = q._backend.interrupts(TOPIC)
            started.set()
            # stop() marks the pool stopping, then interrupts the topic.
            assert wait_until(lambda: q._backend.interrupts(TOPIC) > before, 10)

    q.publish_many([str(i).encode() for i in range(10)], topic=TOPIC)
    q.start()
    assert started.wait(5)
    assert q.stop(drain=False, timeout=10)
    assert handled == [0]
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["expired"]) == (9, 0, 0)
    rest = drain(q, TOPIC)
    assert [int(d.payload) for d in rest] == list(range(1, 10)), "order kept"
    assert [d.attempt for d in rest] == [1] * 9, "never ran: attempt unchanged"


def test_handler_stats_count_engine_dead_letters_and_late_acks_apart_from_successes(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    once = ringq.Retry(max_attempts=1)
    returned: list[str] = []

    @q.handler(bytes, topic=TOPIC, timeout=0.5, max_parallelism=4, retry=once)
    def overrun(msg: bytes, ctx: ringq.Context) -> None:
        if msg == b"raise":
            raise RuntimeError("fails outright")
        if msg == b"just-late":
            # Returns a hair after its lease ran out, before anyone noticed.
            time.sleep(max(0.0, ctx.deadline - time.time() - 0.005))
            while time.time() <= ctx.deadline:
                pass
        else:
            assert ctx.cancelled.wait(5), "the lease ran out"
        returned.append(ctx.message_id)  # returns normally: a late ack

    @q.handler(bytes, topic="other", retry=once)
    def other(msg: bytes) -> None:
        raise ValueError("dead letter of another topic")

    late = q.publish_many([b"cancelled-1", b"cancelled-2", b"just-late"], topic=TOPIC)
    failing = q.publish(b"raise", topic=TOPIC)
    q.publish_many([b"x", b"y"], topic="other")
    q.start()

    def answered() -> int:
        s = q.handler_stats()["overrun"]
        return int(s["late_acks"] + s["succeeded"])

    assert wait_until(lambda: len(returned) == 3 and _settled(q) and answered() == 3, 10)
    q.stop()

    mine = q.dlq.list(topic=TOPIC)
    assert {d.id: d.reason for d in mine} == {
        **{mid: "lease_expired" for mid in late},
        failing: "max_attempts",
    }
    stats = q.handler_stats()
    assert stats["overrun"]["dead_lettered"] == len(mine) == 4
    assert stats["other"]["dead_lettered"] == len(q.dlq.list(topic="other")) == 2
    assert (stats["overrun"]["late_acks"], stats["overrun"]["succeeded"]) == (3, 0), (
        "a late ack is not a success"
    )
    assert q.stats()["acked"] == 0


@pytest.mark.parametrize("op", ["ack", "nack", "extend", "release"])
def test_a_lease_past_its_deadline_is_lost_even_before_the_engine_reclaims_the_message(
    open_queue: OpenQueue, op: str
) -> None:
    # The dispatcher's lease monitor cancels a handler at its deadline and
    # counts what it returns afterwards as late; the engine must agree, not
    # accept the ack because its own timer has not run yet.
    q = open_queue(max_attempts=1)
    q.publish_many([b"m"] * 5)
    calls: dict[str, Callable[[ringq.Delivery], object]] = {
        "ack": lambda d: q.ack(d),
        "nack": lambda d: q.nack(d, delay=0.0),
        "extend": lambda d: q.extend(d, 30.0),
        "release": lambda d: q.release(d),
    }
    accepted = 0
    for _ in range(5):
        [d] = q.checkout(lease=0.02, timeout=0)
        while time.time() < d.lease_deadline:
            pass
        try:
            calls[op](d)
            accepted += 1
        except ringq.LeaseLost:
            pass
    assert accepted == 0, f"{op} accepted {accepted} of 5 leases past their deadline"
    assert wait_until(lambda: len(q.dlq) == 5)
    assert {d.reason for d in q.dlq.list()} == {"lease_expired"}

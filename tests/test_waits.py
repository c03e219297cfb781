"""Slow work never holds the interpreter, and nothing polls.

A call that has to wait for the engine's lock (held by a snapshot, a roll,
a slow disk) waits with the GIL released, so the process's other threads
keep running. ``_hold_lock`` is a test hook that holds the lock the way a
long snapshot would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import ringq
from conftest import OpenQueue, wait_until

HOLD = 0.4


def _ticker_gap_while(q: ringq.Queue, op: Callable[[], object]) -> tuple[float, float]:
    """Holds the engine lock for HOLD seconds while another thread runs
    ``op`` over and over and a third ticks every millisecond. Returns the
    longest call of ``op`` and the longest gap between ticks."""
    stop = threading.Event()
    gaps: list[float] = []
    calls: list[float] = []

    def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    def caller() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            op()
            calls.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=ticker), threading.Thread(target=caller)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(calls) > 10 and len(gaps) > 10)
    q._backend._hold_lock(HOLD)
    stop.set()
    for t in threads:
        t.join()
    return max(calls), max(gaps)


@pytest.mark.parametrize(
    "name",
    ["publish", "publish_many", "checkout", "ack", "extend", "release", "stats", "dlq_list"],
)
def test_a_call_waiting_for_the_engine_lock_lets_other_threads_run(
    open_queue: OpenQueue, name: str
) -> None:
    q = open_queue(capacity=1_000_000)
    q.publish(b"held", topic="held")
    [held] = q.checkout("held", timeout=0)

    def op() -> object:
        if name == "publish":
            return q.publish(b"y", topic="u")
        if name == "publish_many":
            return q.publish_many([b"y", b"z"], topic="u")
        if name == "checkout":
            return q.checkout("t", timeout=0)
        if name == "stats":
            return q.stats()
        if name == "dlq_list":
            return q.dlq.list()
        if name == "extend":
            return q.extend(held, 60)
        q.publish(b"y", topic="t")
        [d] = q.checkout("t", timeout=0)
        return q.ack(d) if name == "ack" else q.release(d)

    longest_call, longest_gap = _ticker_gap_while(q, op)
    assert longest_call >= HOLD / 2, "a call waited for the held lock"
    assert longest_gap < HOLD / 4, f"other threads stalled for {longest_gap:.3f}s"


def test_scaling_down_idle_workers_takes_effect_at_once(open_queue: OpenQueue) -> None:
    q = open_queue()

    @q.handler(str, topic="t", max_parallelism=4)
    def h(msg: str) -> None:
        pass

    q.start()
    assert wait_until(lambda: q.handler_stats()["h"]["workers"] == 4)
    t0 = time.monotonic()
    q.scale("h", 1)
    assert wait_until(lambda: q.handler_stats()["h"]["workers"] == 1, timeout=2)
    assert time.monotonic() - t0 < 1.0
    q.scale("h", 0)
    assert wait_until(lambda: q.handler_stats()["h"]["workers"] == 0, timeout=2)
    t0 = time.monotonic()
    assert q.stop(timeout=5)
    assert time.monotonic() - t0 < 1.0, "stop with no busy worker returns at once"


def test_a_misspelt_handler_override_is_an_error_at_start(qdir: object) -> None:
    opts = ringq.QueueOptions.from_mapping({"handlers": {"on_ordr": {"timeout": 5}}})
    with ringq.Queue(str(qdir), options=opts) as q:

        @q.handler(str, topic="orders")
        def on_order(msg: str) -> None:
            pass

        with pytest.raises(ringq.ConfigError) as info:
            q.start()
        assert "on_ordr" in str(info.value) and "on_order" in str(info.value)
        assert not q.running

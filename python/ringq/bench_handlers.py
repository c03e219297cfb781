"""Handler scenarios of ``python -m ringq.bench`` (see ``ringq.bench``).

- ``handler_pair``: one thread publishing N 100-byte messages singly while a
  handler with a trivial body runs on ringq's dispatcher, vs one thread
  ``put``-ing into a ``queue.Queue`` while a consumer thread ``get``s and calls
  the same function. Both sides record what the function saw; counts and
  FIFO order are verified before a figure is kept (target ratio >= 1.5).
- ``handler_latency``: an idle queue with a started handler; publish one
  message, measure until the handler starts (``perf_counter`` in the same
  process), wait for it to finish, repeat. p50 target <= 100 us; p99
  reported. The same loop over ``queue.Queue`` with a consumer thread is
  reported for reference.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from typing import Any

import ringq
from ringq.bench_kit import (
    TOPIC,
    Config,
    VerifyError,
    fresh_dir,
    log,
    no_gc,
    paired,
    run_pair,
    spread,
    verify_fifo,
)

__all__ = ["handler_latency", "handler_pair", "percentiles_us"]


def handler_pair(cfg: Config) -> dict[str, Any]:
    n = cfg.n
    payloads = cfg.payloads(n)

    def ours(path: str) -> float:
        seen: list[bytes] = []
        done = threading.Event()
        q = ringq.Queue(path, capacity=n, durability="batch")
        try:
            keep = seen.append

            @q.handler(bytes, topic=TOPIC, prefetch=256)
            def trivial(msg: bytes) -> None:
                keep(msg)
                if len(seen) == n:
                    done.set()

            q.start()

            def produce() -> None:
                pub = q.publish
                for p in payloads:
                    pub(p, TOPIC)

            def consume() -> None:
                if not done.wait(60):
                    raise VerifyError(f"handler saw {len(seen)} of {n} in 60 s")

            dt = run_pair(produce, consume)
            q.stop(drain=False)
            verify_fifo(seen, payloads, "handler_pair")
        finally:
            q.close()
        return n / dt

    def theirs() -> float:
        sq: queue.Queue[bytes] = queue.Queue()
        seen: list[bytes] = []
        keep = seen.append

        def trivial(msg: bytes) -> None:
            keep(msg)

        def produce() -> None:
            put = sq.put
            for p in payloads:
                put(p)

        def consume() -> None:
            get = sq.get
            for _ in range(n):
                trivial(get())

        dt = run_pair(produce, consume)
        verify_fifo(seen, payloads, "queue.Queue handler_pair")
        return n / dt

    res = paired(cfg, "handler_pair", ours, theirs, 1.5)
    return {"n": n, "prefetch": 256, "durability": "batch", **res}


def percentiles_us(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (seconds), in microseconds."""
    s = sorted(samples)
    return {
        "p50_us": round(statistics.median(s) * 1e6, 1),
        "p99_us": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6, 1),
        "max_us": round(s[-1] * 1e6, 1),
    }


def handler_latency(cfg: Config) -> dict[str, Any]:
    rounds = 500 if cfg.quick else 2000
    p50s: list[float] = []
    p99s: list[float] = []
    reps: list[dict[str, float]] = []
    stdlib: list[dict[str, float]] = []
    for rep in range(cfg.reps):
        lat = _ringq_latency(cfg, rounds)
        r = percentiles_us(lat)
        reps.append(r)
        p50s.append(r["p50_us"])
        p99s.append(r["p99_us"])
        stdlib.append(_stdlib_latency(rounds))
        log(f"  handler_latency rep {rep + 1}: p50 {r['p50_us']} us, p99 {r['p99_us']} us")
    p50 = spread(p50s, 1)
    return {
        "rounds": rounds,
        "durability": "batch",
        "unit": "us",
        "target": "p50 <= 100 us (p99 reported)",
        "p50_us": p50,
        "p99_us": spread(p99s, 1),
        "repetitions": reps,
        "reference_stdlib_queue": {
            "p50_us": spread([s["p50_us"] for s in stdlib], 1),
            "p99_us": spread([s["p99_us"] for s in stdlib], 1),
        },
        "met": p50["median"] <= 100.0,
    }


def _ringq_latency(cfg: Config, rounds: int) -> list[float]:
    """Publish -> handler start, one message at a time on an idle queue."""
    lat: list[float] = []
    started = threading.Event()
    sent = [0.0]
    with fresh_dir(cfg) as path:
        q = ringq.Queue(path, durability="batch")
        try:

            @q.handler(bytes, topic=TOPIC)
            def on_msg(msg: bytes) -> None:
                lat.append(time.perf_counter() - sent[0])
                started.set()

            q.start()
            time.sleep(0.05)
            with no_gc():
                for _ in range(rounds):
                    started.clear()
                    sent[0] = time.perf_counter()
                    q.publish(b"x" * 100, TOPIC)
                    if not started.wait(5):
                        raise VerifyError("handler did not start within 5 s")
                    time.sleep(0.0002)
            q.stop(drain=False)
        finally:
            q.close()
    if len(lat) != rounds:
        raise VerifyError(f"handler_latency: {len(lat)} of {rounds} measured")
    return lat


def _stdlib_latency(rounds: int) -> dict[str, float]:
    sq: queue.Queue[float | None] = queue.Queue()
    lat: list[float] = []
    started = threading.Event()

    def consumer() -> None:
        while (sent := sq.get()) is not None:
            lat.append(time.perf_counter() - sent)
            started.set()

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    time.sleep(0.01)
    with no_gc():
        for _ in range(rounds):
            started.clear()
            sq.put(time.perf_counter())
            started.wait(5)
            time.sleep(0.0002)
    sq.put(None)
    t.join()
    return percentiles_us(lat)

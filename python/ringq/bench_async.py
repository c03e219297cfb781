"""asyncio scenarios of ``python -m ringq.bench`` (``ringq.AsyncQueue``).

- ``async_pair``: an async producer task publishing 100-byte payloads one
  at a time and a trivial ``async def`` handler, end to end, against an
  ``asyncio.Queue`` producer/consumer pair in the same kind of loop
  (in-memory, not durable): ratio (target >= 1.5).
- ``async_always_tasks``: ``durability="always"``, 1,000 concurrent tasks
  each awaiting its own ``publish``: msg/s (target >= 100k) and the ratio
  to one task publishing alone (target >= 20), with fsyncs per message.
- ``async_latency``: publish -> async handler start on an idle queue
  (``durability="batch"``): p50 (target <= 150 us), p99.
- ``async_loop_gaps``: a 1 ms ticker task beside 100k async publishes
  (``batch``): the largest gap between ticks (target <= 5 ms) and p99.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import ringq
from ringq.bench_handlers import percentiles_us
from ringq.bench_kit import (
    Config,
    VerifyError,
    alternate,
    conclude,
    fresh_dir,
    log,
    no_gc,
    spread,
    verify_fifo,
)

__all__ = ["async_always_tasks", "async_latency", "async_loop_gaps", "async_pair"]

TOPIC = "bench"


def async_pair(cfg: Config) -> dict[str, Any]:
    n = cfg.n
    payloads = cfg.payloads(n)

    async def ours(path: str) -> float:
        seen: list[bytes] = []
        done = asyncio.Event()
        async with ringq.AsyncQueue(path, capacity=n, durability="batch") as q:
            keep = seen.append

            @q.handler(bytes, topic=TOPIC, max_parallelism=64)
            async def trivial(msg: bytes) -> None:
                keep(msg)
                if len(seen) == n:
                    done.set()

            q.start()
            pub = q.publish
            with no_gc():
                t0 = time.perf_counter()
                for p in payloads:
                    await pub(p, TOPIC)
                await asyncio.wait_for(done.wait(), 60)
                dt = time.perf_counter() - t0
            await q.stop(drain=False)
        if sorted(seen) != sorted(payloads):
            raise VerifyError(f"async_pair: handler saw {len(seen)} of {n}")
        return n / dt

    async def theirs() -> float:
        aq: asyncio.Queue[bytes] = asyncio.Queue()
        seen: list[bytes] = []

        async def consumer() -> None:
            keep = seen.append
            for _ in range(n):
                keep(await aq.get())
                aq.task_done()

        with no_gc():
            t0 = time.perf_counter()
            task = asyncio.create_task(consumer())
            put = aq.put
            for p in payloads:
                await put(p)
            await task
            dt = time.perf_counter() - t0
        verify_fifo(seen, payloads, "async_pair (asyncio.Queue)")
        return n / dt

    def ringq_side() -> float:
        with fresh_dir(cfg) as path:
            return asyncio.run(ours(path))

    a, b, errors = alternate(
        cfg,
        "async_pair",
        ringq_side,
        lambda: asyncio.run(theirs()),
        lambda x, y: f"ringq {x:,.0f} msg/s, asyncio.Queue {y:,.0f} msg/s",
    )
    figures: dict[str, Any] = {}
    if a:
        figures = {
            "ringq": spread(a),
            "asyncio_queue": spread(b),
            "ratio": spread([x / y for x, y in zip(a, b, strict=True)], 3),
        }
    out: dict[str, Any] = {
        "n": n,
        "durability": "batch",
        "unit": "msg/s",
        "target": "ratio >= 1.5 (vs an asyncio.Queue pair, in memory)",
    }
    return conclude(out, figures, "ratio", 1.5, errors)


def async_always_tasks(cfg: Config) -> dict[str, Any]:
    tasks = 1000
    rounds = 3 if cfg.quick else 10
    alone_n = 200 if cfg.quick else 500
    many: list[float] = []
    alone: list[float] = []
    per_fsync: list[float] = []
    errors: list[str] = []

    async def run(path: str) -> tuple[float, float, float]:
        async with ringq.AsyncQueue(
            path, capacity=tasks * rounds + alone_n, durability="always"
        ) as q:
            payload = b"x" * 100
            f0 = q.stats()["fsyncs"]
            with no_gc():
                t0 = time.perf_counter()
                for _ in range(rounds):
                    await asyncio.gather(*(q.publish(payload) for _ in range(tasks)))
                dt_many = time.perf_counter() - t0
            fsyncs = q.stats()["fsyncs"] - f0
            with no_gc():
                t0 = time.perf_counter()
                for _ in range(alone_n):
                    await q.publish(payload)
                dt_alone = time.perf_counter() - t0
            if q.stats()["ready"] != tasks * rounds + alone_n:
                raise VerifyError("async_always_tasks: a publish is missing")
        n = tasks * rounds
        return n / dt_many, alone_n / dt_alone, n / max(1, fsyncs)

    for rep in range(cfg.reps):
        with fresh_dir(cfg) as path:
            try:
                m, a, f = asyncio.run(run(path))
            except VerifyError as e:
                errors.append(f"repetition {rep + 1}: {e}")
                continue
        many.append(m)
        alone.append(a)
        per_fsync.append(f)
        log(
            f"  async_always_tasks rep {rep + 1}: {m:,.0f} msg/s with {tasks} tasks, "
            f"{a:,.0f} alone ({m / a:.1f}x), {f:.0f} messages per fsync"
        )
    out: dict[str, Any] = {
        "tasks": tasks,
        "durability": "always",
        "unit": "msg/s",
        "target": "msg/s >= 100,000 with 1,000 tasks and >= 20x one task",
    }
    figures: dict[str, Any] = {}
    if many:
        ratios = [x / y for x, y in zip(many, alone, strict=True)]
        figures = {
            "ringq_1000_tasks": spread(many),
            "ringq_one_task": spread(alone),
            "ratio": spread(ratios, 2),
            "messages_per_fsync": spread(per_fsync, 1),
        }
    out = conclude(out, figures, "ratio", 20.0, errors)
    if many:
        out["met"] = bool(out["met"]) and statistics.median(many) >= 100_000
    return out


def async_latency(cfg: Config) -> dict[str, Any]:
    rounds = 500 if cfg.quick else 2000
    reps: list[dict[str, float]] = []

    async def run(path: str) -> list[float]:
        lat: list[float] = []
        started = asyncio.Event()
        sent = [0.0]
        async with ringq.AsyncQueue(path, durability="batch") as q:

            @q.handler(bytes, topic=TOPIC)
            async def on_msg(msg: bytes) -> None:
                lat.append(time.perf_counter() - sent[0])
                started.set()

            q.start()
            await asyncio.sleep(0.05)
            with no_gc():
                for _ in range(rounds):
                    started.clear()
                    sent[0] = time.perf_counter()
                    await q.publish(b"x" * 100, TOPIC)
                    await asyncio.wait_for(started.wait(), 5)
                    await asyncio.sleep(0.0002)
            await q.stop(drain=False)
        return lat

    for rep in range(cfg.reps):
        with fresh_dir(cfg) as path:
            lat = asyncio.run(run(path))
        if len(lat) != rounds:
            raise VerifyError(f"async_latency: {len(lat)} of {rounds} measured")
        r = percentiles_us(lat)
        reps.append(r)
        log(f"  async_latency rep {rep + 1}: p50 {r['p50_us']} us, p99 {r['p99_us']} us")
    p50 = spread([r["p50_us"] for r in reps], 1)
    return {
        "rounds": rounds,
        "durability": "batch",
        "unit": "us",
        "target": "p50 <= 150 us (p99 reported)",
        "p50_us": p50,
        "p99_us": spread([r["p99_us"] for r in reps], 1),
        "repetitions": reps,
        "met": p50["median"] <= 150.0,
    }


def async_loop_gaps(cfg: Config) -> dict[str, Any]:
    n = 20_000 if cfg.quick else 100_000
    maxes: list[float] = []
    p99s: list[float] = []
    rates: list[float] = []

    async def run(path: str) -> tuple[float, float, float]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async with ringq.AsyncQueue(path, capacity=n, durability="batch") as q:
            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            payload = b"x" * 100
            publish = q.publish
            t0 = time.perf_counter()
            for _ in range(n):
                await publish(payload)  # never has to wait: gives the loop turns
            dt = time.perf_counter() - t0
            stop.set()
            await tick
        s = sorted(gaps)
        return s[-1], s[min(len(s) - 1, int(len(s) * 0.99))], n / dt

    for rep in range(cfg.reps):
        with fresh_dir(cfg) as path:
            mx, p99, rate = asyncio.run(run(path))
        maxes.append(mx * 1000)
        p99s.append(p99 * 1000)
        rates.append(rate)
        log(
            f"  async_loop_gaps rep {rep + 1}: largest tick gap {mx * 1000:.2f} ms, "
            f"p99 {p99 * 1000:.2f} ms, {rate:,.0f} msg/s"
        )
    worst = spread(maxes, 2)
    return {
        "n": n,
        "durability": "batch",
        "unit": "ms",
        "target": "largest gap of a 1 ms ticker <= 5 ms (p99 reported)",
        "max_gap_ms": worst,
        "p99_gap_ms": spread(p99s, 2),
        "publish_rate": spread(rates),
        "met": worst["median"] <= 5.0,
    }

"""What the benchmark scenarios share (``ringq.bench``,
``ringq.bench_handlers``): sizes, the queue under test, timing with the
cyclic GC off, verification and the paired ringq-vs-``queue.Queue`` runs."""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import ringq
from ringq import Delivery

_T = TypeVar("_T")

__all__ = [
    "BATCH",
    "CHECKOUT_MAX",
    "PAYLOAD_SIZE",
    "THREADS",
    "TOPIC",
    "BenchQueue",
    "Config",
    "Durability",
    "VerifyError",
    "alternate",
    "conclude",
    "fresh_dir",
    "log",
    "no_gc",
    "paired",
    "publish_batches",
    "run_pair",
    "run_threads",
    "spread",
    "timed",
    "verify_fifo",
    "verify_ready",
]

PAYLOAD_SIZE = 100
TOPIC = "t"
BATCH = 1000
CHECKOUT_MAX = 256
THREADS = 8

Durability = Literal["always", "batch", "os"]


class BenchQueue(Protocol):
    """The part of ``ringq.Queue`` the benchmark uses."""

    def publish(self, payload: bytes, topic: str | None = None) -> str: ...
    def publish_many(self, payloads: Iterable[bytes], topic: str | None = None) -> list[str]: ...
    def checkout(
        self,
        topic: str = ...,
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float | None = None,
    ) -> list[Delivery]: ...
    def ack(self, deliveries: list[Delivery]) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class VerifyError(Exception):
    """A run delivered the wrong messages: its figure is not kept."""


@dataclass
class Config:
    quick: bool
    reps: int
    tmp_base: str | None
    n: int = 200_000
    always_n: int = 200_000
    threads_each: int = 2000
    single_n: int = 1000
    reopen_n: int = 1_000_000
    _payloads: list[bytes] = field(default_factory=list)

    def payloads(self, n: int) -> list[bytes]:
        """``n`` distinct 100-byte payloads, the first 8 bytes a sequence number."""
        if len(self._payloads) < n:
            fill = bytes(range(PAYLOAD_SIZE - 8))
            self._payloads = [i.to_bytes(8, "big") + fill for i in range(n)]
        return self._payloads[:n]

    def open(self, path: str, *, capacity: int, durability: Durability = "batch") -> BenchQueue:
        return ringq.Queue(path, capacity=capacity, durability=durability)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def fresh_dir(cfg: Config) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="ringq-bench-", dir=cfg.tmp_base) as d:
        yield os.path.join(d, "q")


def spread(values: list[float], digits: int = 0) -> dict[str, float]:
    """Median with min/max (the noise across repetitions)."""

    def r(v: float) -> float:
        return round(v, digits) if digits else float(round(v))

    return {"median": r(statistics.median(values)), "min": r(min(values)), "max": r(max(values))}


@contextmanager
def no_gc() -> Iterator[None]:
    """Collect, then keep the cyclic GC off while timing (as ``timeit`` does).

    The runs keep every delivery for the FIFO check afterwards; with the GC
    on, collections over that growing list would be timed as queue cost.
    """
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def timed(fn: Callable[[], None]) -> float:
    with no_gc():
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def settle(q: BenchQueue, limit: float = 10.0) -> None:
    """Waits (untimed) until everything written so far is on disk.

    With ``durability="batch"`` the flusher syncs a phase's records after it
    returns; timing the next phase at once would charge it that sync (and
    the page-table work the sync does on the other core). Raises if the
    queue is not durable within ``limit`` seconds.
    """
    deadline = time.monotonic() + limit
    while True:
        st = q.stats()
        if st["durable_lsn"] >= st["lsn"]:
            return
        if time.monotonic() > deadline:
            raise VerifyError(f"not durable after {limit} s: {st['durable_lsn']} < {st['lsn']}")
        time.sleep(0.005)


def verify_fifo(received: list[bytes], expected: list[bytes], what: str) -> None:
    if len(received) != len(expected):
        raise VerifyError(f"{what}: received {len(received)} messages, expected {len(expected)}")
    if received != expected:
        first = next(i for i, (a, b) in enumerate(zip(received, expected, strict=True)) if a != b)
        raise VerifyError(f"{what}: out of order or wrong payload at position {first}")


def verify_ready(q: BenchQueue, n: int, what: str) -> None:
    ready = q.stats().get("ready")
    if ready != n:
        raise VerifyError(f"{what}: stats()['ready'] = {ready}, expected {n}")


def publish_batches(q: BenchQueue, batches: list[list[bytes]]) -> None:
    pub = q.publish_many
    for b in batches:
        pub(b, topic=TOPIC)


# -- paired comparisons against queue.Queue ---------------------------------


def alternate(
    cfg: Config,
    name: str,
    first: Callable[[], _T],
    second: Callable[[], _T],
    describe: Callable[[_T, _T], str],
) -> tuple[list[_T], list[_T], list[str]]:
    """Runs ``cfg.reps`` repetitions of two sides, alternating which goes
    first (so drift hits both); a ``VerifyError`` discards that repetition.
    Returns each side's results, in step, and the discarded repetitions."""
    a_side: list[_T] = []
    b_side: list[_T] = []
    errors: list[str] = []
    for rep in range(cfg.reps):
        try:
            if rep % 2 == 0:
                a = first()
                b = second()
            else:
                b = second()
                a = first()
        except VerifyError as e:
            errors.append(f"repetition {rep + 1}: {e}")
            log(f"  {name}: repetition {rep + 1} discarded: {e}")
            continue
        a_side.append(a)
        b_side.append(b)
        log(f"  {name} rep {rep + 1}: {describe(a, b)}")
    return a_side, b_side, errors


def conclude(
    out: dict[str, Any],
    figures: dict[str, Any],
    key: str,
    target: float,
    errors: list[str],
    at_most: bool = False,
) -> dict[str, Any]:
    """Completes a scenario's result: ``figures`` (empty when no repetition
    counted), ``met`` when the median of ``figures[key]`` reaches ``target``
    (is at most it, with ``at_most``), and the discarded repetitions."""
    if figures:
        out.update(figures)
        median = figures[key]["median"]
        out["met"] = median <= target if at_most else median >= target
    else:
        out["met"] = False
    if errors:
        out["errors"] = errors
    return out


def paired(
    cfg: Config,
    name: str,
    run_ringq: Callable[[str], float],
    run_stdlib: Callable[[], float],
    target_ratio: float,
    unit: str = "msg/s",
) -> dict[str, Any]:
    """Runs ``cfg.reps`` repetitions of both sides (alternating which goes
    first) and summarizes rates and per-repetition ratios."""

    def ringq_side() -> float:
        with fresh_dir(cfg) as path:
            return run_ringq(path)

    ours, theirs, errors = alternate(
        cfg,
        name,
        ringq_side,
        run_stdlib,
        lambda a, b: f"ringq {a:,.0f} {unit}, queue.Queue {b:,.0f} {unit}",
    )
    figures: dict[str, Any] = {}
    if ours:
        figures = {
            "ringq": spread(ours),
            "stdlib_queue": spread(theirs),
            "ratio": spread([a / b for a, b in zip(ours, theirs, strict=True)], 3),
        }
    out: dict[str, Any] = {"unit": unit, "target": f"ratio >= {target_ratio}"}
    return conclude(out, figures, "ratio", target_ratio, errors)


def run_threads(*bodies: Callable[[], None]) -> float:
    """Runs each body on a thread of its own, from a common start, with the
    garbage collector off; returns the seconds until the last one ended."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(bodies) + 1)

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            start.wait()
            try:
                fn()
            except BaseException as e:
                errors.append(e)

        return body

    threads = [threading.Thread(target=wrap(f), daemon=True) for f in bodies]
    for t in threads:
        t.start()
    with no_gc():
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
    if errors:
        raise VerifyError(f"a thread failed: {type(errors[0]).__name__}: {errors[0]}")
    return dt


def run_pair(produce: Callable[[], None], consume: Callable[[], None]) -> float:
    """Runs producer and consumer threads from a common start; returns seconds."""
    return run_threads(produce, consume)

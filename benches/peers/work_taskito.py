"""taskito's workloads: jobs instead of messages.

A job is ``noop(seq)``, a trivial task that records that it ran. ``A``
enqueues one job per call (``noop.delay``), ``B`` runs the in-process worker
over N queued jobs, ``C`` enqueues from a thread while the worker runs,
``F`` is enqueue -> job starts. Each run checks that every job ran exactly
once. ``taskito`` uses its defaults (50 ms scheduler poll), ``taskito_tuned``
a 1 ms poll; both the default worker count (one per CPU).
"""

from __future__ import annotations

import collections
import gc
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TASKITO_LOG_LEVEL", "WARNING")  # else 2 log lines per job

from work import Checked


class Jobs:
    """A taskito queue with the ``noop`` task and a record of what ran."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from taskito import Queue

        Path(spec["dir"]).mkdir(parents=True, exist_ok=True)
        poll = 1 if spec["peer"] == "taskito_tuned" else 50
        self.q = Queue(
            db_path=str(Path(spec["dir"]) / "taskito.db"), scheduler_poll_interval_ms=poll
        )
        self.ran: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()
        self.target = 0
        self.all_ran = threading.Event()
        self.ran_at: dict[int, float] = {}
        self.log_fd: int | None = None

        @self.q.task(name="bench.noop", max_retries=0)
        def noop(seq: int) -> None:
            with self.lock:
                self.ran[seq] += 1
                self.ran_at[seq] = time.perf_counter()
                if self.log_fd is not None:  # ran = acked (see role_crash)
                    os.write(self.log_fd, b"r%d\na%d\n" % (seq, seq))
                if self.target and len(self.ran) >= self.target:
                    self.all_ran.set()

        self.noop = noop
        self.worker: threading.Thread | None = None

    def start_worker(self) -> None:
        self.worker = threading.Thread(target=self.q.run_worker, daemon=True)
        self.worker.start()

    def wait_all(self, n: int, timeout: float) -> None:
        self.target = n
        if len(self.ran) >= n:
            self.all_ran.set()
        if not self.all_ran.wait(timeout):
            raise Checked(f"only {len(self.ran)} of {n} jobs ran within {timeout} s")

    def check_once(self, n: int) -> None:
        twice = [s for s, c in self.ran.items() if c != 1]
        if len(self.ran) != n or twice:
            raise Checked(f"{len(self.ran)} distinct jobs ran of {n}; more than once: {twice[:5]}")

    def close(self) -> None:
        if self.worker is not None:
            self.q.shutdown()
            self.worker.join(35)
        self.q.close()


def role_a(spec: dict[str, Any]) -> dict[str, Any]:
    j = Jobs(spec)
    n = spec["n"]
    gc.disable()
    t0 = time.perf_counter()
    for i in range(n):
        j.noop.delay(i)
    secs = time.perf_counter() - t0
    gc.enable()
    pending = j.q.stats()["pending"]
    j.close()
    if pending != n:
        raise Checked(f"{pending} pending after {n} enqueues")
    return {"seconds": secs, "rate": n / secs}


def role_b(spec: dict[str, Any]) -> dict[str, Any]:
    j = Jobs(spec)
    n = spec["n"]
    j.q.enqueue_many(j.noop.name, [(i,) for i in range(n)])
    t0 = time.perf_counter()
    j.start_worker()
    j.wait_all(n, 300)
    secs = time.perf_counter() - t0
    _settle(j, n)
    j.close()
    j.check_once(n)
    return {"seconds": secs, "rate": n / secs}


def role_c(spec: dict[str, Any]) -> dict[str, Any]:
    j = Jobs(spec)
    n = spec["n"]
    j.start_worker()
    time.sleep(0.3)  # the worker is up and idle
    t0 = time.perf_counter()

    def produce() -> None:
        for i in range(n):
            j.noop.delay(i)

    producer = threading.Thread(target=produce)
    producer.start()
    j.wait_all(n, 300)
    producer.join()
    secs = time.perf_counter() - t0
    _settle(j, n)
    j.close()
    j.check_once(n)
    return {"seconds": secs, "rate": n / secs}


def _settle(j: Jobs, n: int) -> None:
    """Waits until taskito recorded every job complete (just after it ran)."""
    deadline = time.monotonic() + 30
    while j.q.stats()["completed"] < n:
        if time.monotonic() > deadline:
            raise Checked(f"taskito recorded {j.q.stats()} after all {n} ran")
        time.sleep(0.005)


def role_f(spec: dict[str, Any]) -> dict[str, Any]:
    j = Jobs(spec)
    j.start_worker()
    time.sleep(0.3)
    lat = []
    for i in range(spec["n"]):
        time.sleep(spec.get("gap", 0.002))
        j.all_ran.clear()
        j.target = i + 1
        t0 = time.perf_counter()
        j.noop.delay(i)
        if not j.all_ran.wait(10):
            raise Checked(f"job {i} did not start within 10 s")
        lat.append(j.ran_at[i] - t0)
    j.close()
    lat.sort()
    return {
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
        "samples": len(lat),
    }


def role_fill(spec: dict[str, Any]) -> dict[str, Any]:
    j = Jobs(spec)
    n = spec["n"]
    for k in range(0, n, 1000):
        j.q.enqueue_many(j.noop.name, [(i,) for i in range(k, min(n, k + 1000))])
    pending = j.q.stats()["pending"]
    j.close()
    if pending != n:
        raise Checked(f"{pending} pending after filling {n}")
    return {"filled": n}


def role_crash(spec: dict[str, Any]) -> dict[str, Any]:
    j = Jobs(spec)
    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if spec["role"] == "crash_put":
        for i in range(spec["n"]):
            j.noop.delay(i)
            os.write(log, b"a%d\n" % i)
    else:
        j.log_fd = log  # "acked": the job ran (taskito marks it complete right after)
        j.start_worker()
    time.sleep(60)  # killed well before this
    return {}


def role_drain(spec: dict[str, Any]) -> dict[str, Any]:
    """Reopens; for a killed producer counts the queued jobs (they are not
    read back one by one), for a killed worker runs the rest and lists what ran."""
    j = Jobs(spec)
    if spec.get("after") == "crash_put":
        pending = j.q.stats()["pending"]
        j.close()
        return {"count": pending}
    j.start_worker()
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 2.0:
        stats = j.q.stats()
        if stats["pending"] == 0 and stats["running"] == 0:
            break
        done = stats["completed"] + stats["failed"] + stats["dead"]
        if done != last:
            last, quiet_since = done, time.monotonic()
        time.sleep(0.05)
    seqs = list(j.ran.elements())
    left = j.q.stats()
    j.close()
    return {"seqs": seqs, "left": {k: left[k] for k in ("pending", "running")}}


ROLES = {
    "A": role_a,
    "B": role_b,
    "C": role_c,
    "F": role_f,
    "fill": role_fill,
    "crash_put": role_crash,
    "crash_ack": role_crash,
    "drain": role_drain,
}

"""What idle periodic schedules cost: ``python -m ringq.bench_schedules``.

Opens a queue in a fresh directory, registers ``--schedules`` schedules
(``q.every``; half intervals of an hour and more, half cron strings that
match once a day, so none fires during the measurement), starts the
handlers, waits until every schedule's first tick is set, and then measures
this process's CPU time (every thread: the engine's timers and fsync thread,
the handler workers) over an idle window of ``--seconds``. The same is
measured for the same queue with no schedules, for comparison. Prints JSON:
``cpu_percent`` is CPU seconds / wall seconds x 100 (one core = 100).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

from ringq.queue import Queue
from ringq.schedules import SCHEDULE_TOPIC

__all__ = ["idle_cpu", "main"]


def _settled(q: Queue, n: int) -> bool:
    s = q.topic_stats().get(SCHEDULE_TOPIC, {})
    return (s.get("ready", 0), s.get("in_flight", 0), s.get("delayed", 0)) == (0, 0, n)


def idle_cpu(schedules: int, seconds: float, durability: str = "batch") -> dict[str, Any]:
    """Registers ``schedules`` schedules and measures the idle CPU over ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="ringq-bench-schedules-") as d:
        q = Queue(d, capacity=max(100_000, 2 * schedules), durability=durability)  # type: ignore[arg-type]
        try:
            started = time.perf_counter()
            for i in range(schedules):
                if i % 2:
                    q.every(
                        f"{i % 60} {i % 24} * * *", {"n": i}, topic="jobs", name=f"s{i}"
                    )  # once a day
                else:
                    q.every(3600.0 + i, {"n": i}, topic="jobs", name=f"s{i}")
            registered = time.perf_counter() - started
            q.start()
            deadline = time.monotonic() + 300
            while not _settled(q, schedules):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"schedules did not settle: {q.topic_stats()}")
                time.sleep(0.05)
            settled = time.perf_counter() - started
            time.sleep(0.5)  # let the last acks' fsync and snapshots pass
            cpu0, wall0 = time.process_time(), time.perf_counter()
            time.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            fired = q.topic_stats().get("jobs", {}).get("ready", 0)
        finally:
            q.close()
    return {
        "schedules": schedules,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 4),
        "cpu_percent": round(100 * cpu / wall, 4),
        "register_seconds": round(registered, 3),
        "settle_seconds": round(settled, 3),
        "fired_during_window": fired,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringq.bench_schedules", description=__doc__)
    p.add_argument("--schedules", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=30.0, help="the idle window")
    p.add_argument("--durability", default="batch", choices=["always", "batch", "os"])
    p.add_argument("--no-baseline", action="store_true", help="skip the queue without schedules")
    args = p.parse_args(argv)
    out: dict[str, Any] = {
        "with_schedules": idle_cpu(args.schedules, args.seconds, args.durability)
    }
    if not args.no_baseline:
        out["baseline_no_schedules"] = _baseline(args.seconds, args.durability)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _baseline(seconds: float, durability: str) -> dict[str, Any]:
    """The same idle window on a queue with running handlers but no schedules."""
    with tempfile.TemporaryDirectory(prefix="ringq-bench-schedules-") as d:
        q = Queue(d, durability=durability)  # type: ignore[arg-type]
        try:
            q.handler(bytes, name="noop", topic="jobs")(lambda m: None)
            q.start()
            time.sleep(0.5)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            time.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            q.close()
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 4),
        "cpu_percent": round(100 * cpu / wall, 4),
    }


if __name__ == "__main__":
    sys.exit(main())

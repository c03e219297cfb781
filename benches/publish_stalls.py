"""Stalls of single publishes: how long each ``q.publish`` call takes, the
tail of that distribution, and the same for ``queue.Queue.put`` in the same
run (the machine's own stalls: preemption, the VM).

    .venv/bin/python benches/publish_stalls.py [--n N] [--rounds R] [--json out.json]

Each round opens a fresh queue (default options, so ``durability="batch"``,
but ``capacity=N``; in a temporary directory) and times ``N`` calls one by one with
``time.perf_counter_ns`` (100-byte payloads, one topic, garbage collection
off), then does the same with ``queue.Queue.put``. The default N (1.1M)
is past the default ``snapshot_every`` (1M journal records), so each round
includes a snapshot of about 1M ready messages and several journal segment
rolls: the work that holds the engine's lock for a long time at once.

Prints JSON: per round and for both, the median, p99, p99.99 and largest
call in microseconds and how many calls took 1, 4, 16 and 40 ms or
more. The figures are wall time on whatever else the machine runs; compare
rounds of two builds alternated in one session (``docs/benchmarks.md``,
"Stalls under the engine's lock")."""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import ringq

PAYLOAD = 100


def tail(latencies_ns: list[int]) -> dict[str, Any]:
    """The distribution's summary (``latencies_ns`` is sorted in place)."""
    lat = latencies_ns
    lat.sort()
    n = len(lat)

    def at(q: float) -> float:
        return lat[min(n - 1, int(n * q))] / 1e3

    return {
        "calls": n,
        "p50_us": at(0.5),
        "p99_us": at(0.99),
        "p99_99_us": at(0.9999),
        "max_us": lat[-1] / 1e3,
        "over_1ms": sum(1 for x in lat if x >= 1_000_000),
        "over_4ms": sum(1 for x in lat if x >= 4_000_000),
        "over_16ms": sum(1 for x in lat if x >= 16_000_000),
        "over_40ms": sum(1 for x in lat if x >= 40_000_000),
    }


def timed_calls(call: Callable[[bytes], Any], payloads: list[bytes], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = [0] * n
    k = len(payloads)
    gc.disable()
    try:
        for i in range(n):
            p = payloads[i % k]
            t = clock()
            call(p)
            out[i] = clock() - t
    finally:
        gc.enable()
    return out


def one_round(n: int, payloads: list[bytes]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ringq-stalls-") as tmp:
        q = ringq.Queue(os.path.join(tmp, "q"), capacity=n)
        try:
            pub = q.publish
            ours = timed_calls(lambda p: pub(p, topic="t"), payloads, n)
            ready = q.stats()["ready"]
            if ready != n:
                raise SystemExit(f"expected {n} ready messages, found {ready}")
        finally:
            q.close()
    sq: queue.Queue[bytes] = queue.Queue()
    theirs = timed_calls(sq.put, payloads, n)
    return {"ringq_publish": tail(ours), "queue_put": tail(theirs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_100_000, help="calls per round (default 1.1M)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        ap.error("--n and --rounds must be at least 1")
    payloads = [os.urandom(PAYLOAD) for _ in range(1000)]
    rounds = []
    for r in range(args.rounds):
        res = one_round(args.n, payloads)
        rounds.append(res)
        o, t = res["ringq_publish"], res["queue_put"]
        print(
            f"round {r + 1}: ringq max {o['max_us'] / 1e3:.1f} ms, "
            f">=40 ms {o['over_40ms']}, >=16 ms {o['over_16ms']}, "
            f">=4 ms {o['over_4ms']}, >=1 ms {o['over_1ms']}; "
            f"queue.Queue max {t['max_us'] / 1e3:.1f} ms, >=4 ms {t['over_4ms']}",
            file=sys.stderr,
        )
    summary = {
        "tool": "benches/publish_stalls.py",
        "n": args.n,
        "payload_bytes": PAYLOAD,
        "rounds": rounds,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

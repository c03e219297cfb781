"""Many-process scenarios of ``python -m ringq.bench`` (see ``ringq.bench``).

The owner of a shared queue is the bench process; clients are separate
processes (``python -m ringq.bench_shared client ...``) that time their own
calls and print the rate as JSON. 100-byte payloads.

- ``shared_publish``: a client publishes one message per call (target
  >= 25,000 msg/s; a Unix-socket round trip is the floor).
- ``shared_publish_many``: a client publishes batches of 100 (>= 350,000 msg/s).
- ``shared_checkout_ack``: a client checks out 100 at a time and acks them
  (>= 250,000 msg/s).
- ``shared_two_clients``: two client processes publishing one message per
  call at once, against one alone (aggregate ratio >= 1.3).
- ``processes_cpu``: a handler doing about 0.5 ms of pure-Python work per
  message, ``processes=2`` against two threads (``max_parallelism=2``), time
  until every message is acked (ratio >= 1.7 on two cores).

Every client's messages are verified (count, and the owner's totals) before
a figure is kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import ringq
from ringq.bench_kit import (
    PAYLOAD_SIZE,
    TOPIC,
    Config,
    VerifyError,
    alternate,
    conclude,
    fresh_dir,
    log,
    spread,
)

__all__ = [
    "processes_cpu",
    "shared_checkout_ack",
    "shared_publish",
    "shared_publish_many",
    "shared_two_clients",
    "spin_handler",
]

#: Pure-Python work per message in ``processes_cpu`` (seconds).
SPIN = 0.0005


def _client(path: str, mode: str, n: int, start_at: float = 0.0) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "ringq.bench_shared", "client", path, mode, str(n), str(start_at)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise VerifyError(f"client exited {proc.returncode}: {err[-500:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _absolute(
    cfg: Config, name: str, mode: str, n: int, target: float, ready: int = 0
) -> dict[str, Any]:
    rates: list[float] = []
    errors: list[str] = []
    for rep in range(cfg.reps):
        with fresh_dir(cfg) as path:
            q = ringq.Queue(path, shared=True, capacity=max(n, ready) + 1000)
            try:
                if ready:
                    payload = bytes(PAYLOAD_SIZE)
                    for i in range(0, ready, 1000):
                        q.publish_many([payload] * min(1000, ready - i), TOPIC)
                r = _result(_client(path, mode, n))
                s = q.stats()
                want = 0 if mode == "checkout_ack" else n
                if s["total"] != want or r["count"] != n:
                    raise VerifyError(f"owner holds {s['total']}, client did {r['count']}")
            except VerifyError as e:
                errors.append(f"repetition {rep + 1}: {e}")
                continue
            finally:
                q.close()
        rates.append(r["rate"])
        log(f"  {name} rep {rep + 1}: {r['rate']:,.0f} msg/s")
    out: dict[str, Any] = {"n": n, "unit": "msg/s", "target": f"msg/s >= {target:,.0f}"}
    return conclude(out, {"ringq": spread(rates)} if rates else {}, "ringq", target, errors)


def shared_publish(cfg: Config) -> dict[str, Any]:
    n = max(1000, cfg.n // 10)
    return _absolute(cfg, "shared_publish", "publish", n, 25_000.0)


def shared_publish_many(cfg: Config) -> dict[str, Any]:
    n = cfg.n - cfg.n % 100
    return _absolute(cfg, "shared_publish_many", "publish_many", n, 350_000.0)


def shared_checkout_ack(cfg: Config) -> dict[str, Any]:
    n = cfg.n - cfg.n % 100
    return _absolute(cfg, "shared_checkout_ack", "checkout_ack", n, 250_000.0, ready=n)


def shared_two_clients(cfg: Config) -> dict[str, Any]:
    n = max(1000, cfg.n // 10)
    target = 1.3

    def run(clients: int) -> float:
        with fresh_dir(cfg) as path:
            q = ringq.Queue(path, shared=True, capacity=clients * n + 1000)
            try:
                # A common start, after both clients connected and warmed up.
                start_at = time.time() + 1.0
                procs = [_client(path, "publish", n, start_at) for _ in range(clients)]
                results = [_result(p) for p in procs]
                if q.stats()["total"] != clients * n:
                    raise VerifyError(f"owner holds {q.stats()['total']}, expected {clients * n}")
            finally:
                q.close()
        elapsed = max(float(r["seconds"]) for r in results)
        return clients * n / elapsed

    one, two, errors = alternate(
        cfg,
        "shared_two_clients",
        lambda: run(1),
        lambda: run(2),
        lambda a, b: f"one {a:,.0f} msg/s, two {b:,.0f} msg/s",
    )
    figures: dict[str, Any] = {}
    if one:
        figures = {
            "one_client": spread(one),
            "two_clients": spread(two),
            "ratio": spread([b / a for a, b in zip(one, two, strict=True)], 3),
        }
    out: dict[str, Any] = {"n_per_client": n, "unit": "msg/s", "target": f"ratio >= {target}"}
    return conclude(out, figures, "ratio", target, errors)


def spin_handler(payload: bytes) -> None:
    """About ``SPIN`` seconds of pure-Python work (the GIL held throughout)."""
    end = time.perf_counter() + SPIN
    x = 0
    while time.perf_counter() < end:
        x += 1


def processes_cpu(cfg: Config) -> dict[str, Any]:
    n = 400 if cfg.n >= 10_000 else 40
    target = 1.7

    def run(processes: bool) -> float:
        with fresh_dir(cfg) as path:
            q = ringq.Queue(path, capacity=n + 10)
            try:
                options: dict[str, Any] = {"processes": 2} if processes else {"max_parallelism": 2}
                q.handler(bytes, topic=TOPIC, prefetch=1, **options)(spin_handler)
                if processes:
                    # Start the worker processes before timing (one message each).
                    q.publish_many([b"warm"] * 2, TOPIC)
                    q.start()
                    while q.stats()["acked"] < 2:
                        time.sleep(0.005)
                else:
                    q.start()
                acked0 = q.stats()["acked"]
                t0 = time.perf_counter()
                q.publish_many([bytes(PAYLOAD_SIZE)] * n, TOPIC)

                while q.stats()["acked"] - acked0 < n:
                    time.sleep(0.002)
                dt = time.perf_counter() - t0
                q.stop()
                if q.stats()["total"] != 0:
                    raise VerifyError(f"{q.stats()['total']} messages left")
            finally:
                q.close()
        return dt

    threads_s, procs_s, errors = alternate(
        cfg,
        "processes_cpu",
        lambda: run(False),
        lambda: run(True),
        lambda t, p: f"threads {t:.3f} s, processes {p:.3f} s",
    )
    figures: dict[str, Any] = {}
    if threads_s:
        figures = {
            "threads_seconds": spread(threads_s, 3),
            "processes_seconds": spread(procs_s, 3),
            "ratio": spread([t / p for t, p in zip(threads_s, procs_s, strict=True)], 3),
        }
    out: dict[str, Any] = {
        "n": n,
        "work_per_message_s": SPIN,
        "unit": "s",
        "target": f"ratio (threads time / processes time) >= {target}",
        "cpus": os.cpu_count(),
    }
    return conclude(out, figures, "ratio", target, errors)


def client_main(argv: list[str]) -> int:
    """A client process: times its calls against the owner of ``argv[0]``."""
    path, mode, n, start_at = argv[0], argv[1], int(argv[2]), float(argv[3])
    q = ringq.Queue(path, shared=True)
    if q.role != "client":
        print(f"expected to be a client, not {q.role}", file=sys.stderr)
        return 2
    payload = bytes(PAYLOAD_SIZE)
    count = 0
    q.stats()  # connected and warm
    if start_at:
        time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    if mode == "publish":
        publish = q.publish
        for _ in range(n):
            publish(payload, TOPIC)
        count = n
    elif mode == "publish_many":
        batch = [payload] * 100
        for _ in range(n // 100):
            q.publish_many(batch, TOPIC)
        count = n
    elif mode == "checkout_ack":
        while count < n:
            got = q.checkout(TOPIC, 100, None, 0)
            if not got:
                break
            q.ack(got)
            count += len(got)
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    q.close()
    print(json.dumps({"count": count, "seconds": dt, "rate": count / dt}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        sys.exit(client_main(sys.argv[2:]))
    print("usage: python -m ringq.bench_shared client PATH MODE N START_AT", file=sys.stderr)
    sys.exit(2)

"""One run of one workload against one peer, in a fresh process.

    python benches/peers/work.py '{"peer": "ringq", "role": "A", "n": 100000,
                                   "dir": "/tmp/x", "out": "/tmp/x.json"}'

Roles: ``A`` produce, ``B`` consume + ack, ``C`` producer and consumer
threads (for the asyncio rows, an async producer and the library's worker on
one loop: ``work_async.py``), ``C_processes`` producer and consumer
processes (``work_procs.py``), ``F`` latency; for the crash workload
``fill`` (then close cleanly), ``crash_put`` / ``crash_ack`` (run until
SIGKILLed, appending each confirmed sequence number to ``log``), ``drain``
(reopen and read everything); for the reopen workload ``fill`` then
``reopen``. The result is JSON in ``out`` (taskito prints a banner on
stdout, so stdout is not used). Every timed role checks its result (count
and FIFO order) and reports an ``error`` instead of a figure when the check
fails.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from peers import ASYNC_ROWS, info_of, open_peer

# work_taskito and work_procs import this module as ``work``: let them get
# this very one (run as __main__), so their ``Checked`` is the one caught here.
sys.modules.setdefault("work", sys.modules[__name__])

PAYLOAD = 100


def payload(seq: int) -> bytes:
    return b"%08d" % seq + b"x" * (PAYLOAD - 8)


def seq_of(p: bytes) -> int:
    return int(p[:8])


def batches(n: int, size: int, start: int = 0) -> list[list[bytes]]:
    return [[payload(i) for i in range(j, min(j + size, n))] for j in range(start, n, size)]


class Checked(Exception):
    """The run's own check failed: no figure is kept."""


def fill(peer: Any, n: int) -> None:
    """Untimed: batches of 1000 where the peer has a batch call (the others loop)."""
    for b in batches(n, 1000):
        peer.put(b)


def consume(peer: Any, n: int, first: int = 0, stall: float = 10.0) -> int:
    """Reads and acks ``n`` items, checking FIFO order; returns the count."""
    expect, got, b = first, 0, peer.info.batch
    while got < n:
        items = peer.get(b, stall)
        if not items:
            raise Checked(f"stalled: {got} of {n} read, nothing for {stall} s")
        for _h, p in items:
            s = seq_of(p)
            if s != expect:
                raise Checked(f"out of order: read {s}, expected {expect}")
            expect += 1
        peer.ack([h for h, _ in items])
        got += len(items)
    return got


def role_a(spec: dict[str, Any]) -> dict[str, Any]:
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0))
    work = batches(spec["n"], peer.info.batch)
    gc.disable()
    t0 = time.perf_counter()
    for b in work:
        peer.put(b)
    secs = time.perf_counter() - t0
    gc.enable()
    stored = peer.size()
    peer.close()
    if stored != spec["n"]:
        raise Checked(f"{stored} stored after {spec['n']} puts")
    return {"seconds": secs, "rate": spec["n"] / secs}


def role_b(spec: dict[str, Any]) -> dict[str, Any]:
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0))
    fill(peer, spec["n"])
    gc.disable()
    t0 = time.perf_counter()
    consume(peer, spec["n"])
    secs = time.perf_counter() - t0
    gc.enable()
    left = peer.get(1, 0)
    peer.close()
    if left:
        raise Checked(f"an extra item after {spec['n']}: {left[0][1][:8]!r}")
    return {"seconds": secs, "rate": spec["n"] / secs}


def role_c(spec: dict[str, Any]) -> dict[str, Any]:
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0))
    n = spec["n"]
    work = batches(n, peer.info.batch)
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for b in work:
                peer.put(b)
        except BaseException as e:  # reported below
            failure.append(e)

    gc.disable()
    t0 = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        consume(peer, n, stall=30.0)
    finally:
        producer.join()
    secs = time.perf_counter() - t0
    gc.enable()
    peer.close()
    if failure:
        raise Checked(f"producer failed: {failure[0]!r}")
    return {"seconds": secs, "rate": n / secs}


def role_f(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish -> consumer receives, one message at a time on an idle queue."""
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0))
    samples = spec["n"]
    received = threading.Event()
    at: list[float] = []
    stop = threading.Event()

    def consumer() -> None:
        while not stop.is_set():
            items = peer.get(1, 0.5)
            if items:
                at.append(time.perf_counter())
                peer.ack([items[0][0]])
                received.set()

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    lat = []
    for i in range(samples):
        time.sleep(spec.get("gap", 0.002))  # idle: the consumer is waiting
        received.clear()
        t0 = time.perf_counter()
        peer.put([payload(i)])
        if not received.wait(10):
            stop.set()
            raise Checked(f"message {i} not received within 10 s")
        lat.append(at[-1] - t0)
    stop.set()
    t.join(5)
    peer.close()
    lat.sort()
    return {
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
        "samples": samples,
    }


def role_fill(spec: dict[str, Any]) -> dict[str, Any]:
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0), spec["n"])
    fill(peer, spec["n"])
    stored = peer.size()
    peer.close()
    if stored != spec["n"]:
        raise Checked(f"{stored} stored after filling {spec['n']}")
    return {"filled": spec["n"]}


def role_reopen(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0), spec["n"])
    first = peer.get(1, 5.0)
    secs = time.perf_counter() - t0
    if not first or seq_of(first[0][1]) != 0:
        raise Checked(f"first item after reopen: {first[:1]!r}")
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
    size = peer.size()
    peer.close()
    if size < spec["n"] - 1:
        raise Checked(f"{size} left after reopening {spec['n']}")
    return {"seconds": secs, "rss_mb": rss}


def role_crash(spec: dict[str, Any]) -> dict[str, Any]:
    """Puts (or reads and acks) until SIGKILLed, logging each confirmed sequence."""
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0), spec["n"])
    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if spec["role"] == "crash_put":
        size, n = peer.info.batch, spec["n"]
        for start in range(0, n, size):  # made as it goes: the kill comes in 0.3 s
            b = [payload(i) for i in range(start, min(start + size, n))]
            peer.put(b)
            os.write(log, b"a%d\n" % seq_of(b[-1]))
    else:
        # "r": received, its ack is about to start; "a": the ack returned.
        while True:
            items = peer.get(peer.info.batch, 1.0)
            if not items:
                break
            seqs = [seq_of(p) for _h, p in items]
            os.write(log, b"".join(b"r%d\n" % s for s in seqs))
            peer.ack([h for h, _ in items])
            os.write(log, b"".join(b"a%d\n" % s for s in seqs))
    time.sleep(60)  # the parent kills us well before this
    return {}


def role_drain(spec: dict[str, Any]) -> dict[str, Any]:
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0), spec["n"])
    seqs: list[int] = []
    while True:
        items = peer.get(1000 if peer.info.batch == 1 else peer.info.batch, 0.5)
        if not items:
            break
        seqs.extend(seq_of(p) for _h, p in items)
        peer.ack([h for h, _ in items])
    peer.close()
    return {"seqs": seqs}


ROLES = {
    "A": role_a,
    "B": role_b,
    "C": role_c,
    "F": role_f,
    "fill": role_fill,
    "reopen": role_reopen,
    "crash_put": role_crash,
    "crash_ack": role_crash,
    "drain": role_drain,
}


def main() -> int:
    spec = json.loads(sys.argv[1])
    if spec["peer"] in ASYNC_ROWS:
        import work_async

        roles = work_async.ROLES
    elif info_of(spec["peer"]).consume == "task":
        import work_taskito

        roles = work_taskito.ROLES
    elif spec["role"] == "C_processes":
        import work_procs

        roles = {"C_processes": work_procs.role_c_processes}
    else:
        roles = ROLES
    try:
        result = roles[spec["role"]](spec)
    except Checked as e:
        result = {"error": str(e)}
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

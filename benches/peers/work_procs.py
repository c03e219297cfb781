"""Workload C with real processes: producer processes and one consumer
process on one queue at once (``PROCESS_ROWS`` in ``peers.py``).

    python benches/peers/work.py '{"peer": "ringq_shared", "role": "C_processes",
                                   "n": 100000, "dir": "/tmp/x", "out": "/tmp/x.json"}'

The ``C_processes`` role runs in ``work.py``'s process, which opens the
peer first (for ``ringq_shared`` it becomes the owner of the directory) and
starts the workers, ``python benches/peers/work_procs.py producer|consumer
'<json>'``. Each worker opens the peer, builds its batches, prints
``ready`` and waits for a line on stdin; the clock starts when every worker
is ready and the line is sent, and stops at the consumer's last ack (the
workers report ``time.monotonic()``, one clock for every process on Linux).
Producer ``i`` puts its own contiguous range of sequence numbers; the
consumer checks that it reads each of them once, each producer's in order,
and that none is left. Any peer of ``INFOS`` runs here too (``"peer":
"redis_b100"`` with a ``"port"``); only the rows of ``PROCESS_ROWS`` are in
the suite.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from peers import Ringq, info_of, open_peer
from work import Checked, batches, seq_of

STALL = 30.0  # seconds with nothing to read before the consumer gives up (as role_c)


def ranges(n: int, producers: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each producer; the last takes the remainder."""
    share = n // producers
    return [(i * share, n if i == producers - 1 else (i + 1) * share) for i in range(producers)]


def _say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _wait_go() -> bool:
    return sys.stdin.readline().strip() == "go"


def producer(spec: dict[str, Any]) -> dict[str, Any]:
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0), spec["n"])
    start, end = spec["range"]
    work = batches(end, peer.info.batch, start)
    gc.disable()
    _say({"ready": True})
    if not _wait_go():
        return {"error": "no start signal"}
    t0 = time.monotonic()
    for b in work:
        peer.put(b)
    t1 = time.monotonic()
    gc.enable()
    peer.close()
    return {"t0": t0, "t1": t1, "put": end - start}


def consumer(spec: dict[str, Any]) -> dict[str, Any]:
    peer = open_peer(spec["peer"], Path(spec["dir"]), spec.get("port", 0), spec["n"])
    n, size = spec["n"], peer.info.batch
    owner = [(s, e, i) for i, (s, e) in enumerate(spec["ranges"])]
    expect = [s for s, _e, _i in owner]
    seen = bytearray(n)
    got = distinct = duplicates = out_of_order = 0
    first_problem = ""
    gc.disable()
    _say({"ready": True})
    if not _wait_go():
        return {"error": "no start signal"}
    t0 = time.monotonic()
    while distinct < n:
        items = peer.get(size, STALL)
        if not items:
            break
        for _h, p in items:
            s = seq_of(p)
            got += 1
            if not 0 <= s < n:
                out_of_order += 1
                first_problem = first_problem or f"read {s}, outside 0..{n - 1}"
                continue
            if seen[s]:
                duplicates += 1
                first_problem = first_problem or f"read {s} twice"
                continue
            seen[s] = 1
            distinct += 1
            i = next(i for a, e, i in owner if a <= s < e)
            if s != expect[i]:
                out_of_order += 1
                first_problem = first_problem or (
                    f"producer {i}: read {s}, expected {expect[i]} (its order)"
                )
            expect[i] = s + 1
        peer.ack([h for h, _ in items])
    t1 = time.monotonic()
    gc.enable()
    extra = peer.get(1, 0) if distinct == n else []
    peer.close()
    return {"t0": t0, "t1": t1, "read": got, "distinct": distinct, "lost": n - distinct,
            "duplicates": duplicates, "out_of_order": out_of_order, "extra": len(extra),
            "first_problem": first_problem}  # fmt: skip


def _start(role: str, spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, role, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen[str], name: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        err = proc.stderr.read()[-800:] if proc.stderr else ""
        raise Checked(f"{name} exited {proc.returncode} without a word: {err}")
    msg: dict[str, Any] = json.loads(line)
    if "error" in msg:
        raise Checked(f"{name}: {msg['error']}")
    return msg


def role_c_processes(spec: dict[str, Any]) -> dict[str, Any]:
    key, n = spec["peer"], spec["n"]
    info = info_of(key)
    producers = spec.get("producers") or info.producers or 2
    base = {"peer": key, "dir": spec["dir"], "port": spec.get("port", 0), "n": n}
    peer = open_peer(key, Path(spec["dir"]), spec.get("port", 0), n)  # the owner, for ringq
    role = getattr(peer, "role", "")
    if key == "ringq_shared" and role != "owner":
        raise Checked(f"this process should own the fresh directory, it is its {role}")
    parts = ranges(n, producers)
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        procs.append(("consumer", _start("consumer", {**base, "ranges": parts})))
        for i, r in enumerate(parts):
            procs.append((f"producer {i}", _start("producer", {**base, "range": r})))
        for name, proc in procs:
            _line(proc, name)  # ready: opened, connected, batches built
        t0 = time.monotonic()
        for _name, proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        done = {name: _line(proc, name) for name, proc in procs}
        for _name, proc in procs:
            proc.wait(60)
    finally:
        for _name, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    c = done["consumer"]
    secs = max(r["t1"] for r in done.values()) - t0
    # ringq: nothing ready, in flight or delayed (every ack landed); the consumer
    # has checked that nothing more is there to read, for every peer.
    left = int(peer.q.stats()["total"]) if isinstance(peer, Ringq) else 0
    peer.close()
    counts = {k: c[k] for k in ("read", "lost", "duplicates", "out_of_order", "extra")}
    if c["lost"] or c["duplicates"] or c["out_of_order"] or c["extra"] or left:
        raise Checked(f"{counts}, {left} left in the queue; first: {c['first_problem']}")
    start_lag = max(r["t0"] for r in done.values()) - t0
    return {"seconds": secs, "rate": n / secs, "producers": producers, "owner": role or "-",
            "start_lag_ms": start_lag * 1000, **counts}  # fmt: skip


def main() -> int:
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    try:
        result = {"producer": producer, "consumer": consumer}[role](spec)
    except Checked as e:
        result = {"error": str(e)}
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    _say(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

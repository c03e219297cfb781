"""A FastAPI app under ``uvicorn --workers 4`` on 127.0.0.1, every worker
publishing through ``shared=True``, while a separate process consumes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("fastapi", reason="fastapi is installed by scripts/dev setup")

CONSUMER = """
import sys, time, ringq
q = ringq.Queue(sys.argv[1], shared=True)
want, seen, owner_gone = int(sys.argv[2]), [], 0
deadline = time.monotonic() + 90
while len(set(seen)) < want and time.monotonic() < deadline:
    try:
        got = q.checkout("orders", max_messages=50, timeout=1)
        seen.extend(d.dedup_key for d in got)
        if got:
            q.ack(got)
    except ringq.OwnerGone as e:
        # The owner (a uvicorn worker) went away: the next call reconnects;
        # what this one checked out may come again (at least once).
        owner_gone += 1
        print("consumer:", e, file=sys.stderr, flush=True)
print(owner_gone, " ".join(seen), flush=True)
q.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_four_uvicorn_workers_publish_to_one_shared_queue(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    port = free_port()
    env = {**os.environ, "RINGQ_PATH": str(qdir), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_shared:app",
            "--workers",
            "4",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "info",  # a worker uvicorn restarts shows in the captured output
            "--no-access-log",
        ],
        env=env,
        cwd=tmp_path,
    )
    n = 400
    consumer = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, str(qdir), str(n)], stdout=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/stats", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda i: post(base + "/orders", {"order_id": f"o-{i}", "amount": i}), range(n)
                )
            )
        pids = {a["pid"] for a in answers}
        roles = {a["role"] for a in answers}
        assert len(pids) >= 2, f"requests spread over the workers: {pids}"
        assert roles <= {"owner", "client"} and "client" in roles
        out, _ = consumer.communicate(timeout=120)
        assert consumer.returncode == 0
        owner_gone, *seen = out.split()
        assert set(seen) == {f"o-{i}" for i in range(n)}, "every order consumed"
        if owner_gone == "0":
            assert len(seen) == n, "each order consumed exactly once"
        assert len({a["id"] for a in answers}) == n
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()

"""``examples/fastapi_app``: a FastAPI app on ``ringq.AsyncQueue`` under a
real uvicorn on 127.0.0.1, driven with httpx. A publish waiting for room in
a full queue holds up only its own request; stopping the server while
handlers run loses nothing."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ringq

httpx = pytest.importorskip("httpx", reason="httpx is installed by scripts/dev setup")
pytest.importorskip("fastapi", reason="fastapi is installed by scripts/dev setup")

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, qdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "RINGQ_PATH": str(qdir), "PYTHONPATH": str(ROOT), **env}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "examples.fastapi_app.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("uvicorn did not answer /health within 30 s")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("uvicorn did not stop within 30 s of SIGINT") from None
        return self.proc.stdout.read()  # type: ignore[union-attr]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[collections.abc.Callable[..., Server]]:
    started: list[Server] = []

    def start(**env: str) -> Server:
        s = Server(tmp_path / "q", **env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_a_publish_waiting_for_room_holds_up_only_its_request(
    server_factory: collections.abc.Callable[..., Server],
) -> None:
    s = server_factory(RINGQ_CAPACITY="2", HANDLER_PARALLELISM="0", RINGQ_DURABILITY="batch")
    with httpx.Client(base_url=s.url, timeout=30) as client:
        for i in range(2):
            assert (
                client.post("/orders", json={"order_id": f"o-{i}", "amount": 1}).status_code == 200
            )
        waiting: list[httpx.Response] = []
        third = threading.Thread(
            target=lambda: waiting.append(
                httpx.post(s.url + "/orders", json={"order_id": "o-2", "amount": 1}, timeout=30)
            )
        )
        third.start()
        time.sleep(0.2)
        # The queue is full and that request waits; the others answer at once.
        slowest = 0.0
        for _ in range(20):
            t0 = time.monotonic()
            assert client.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
        stats = client.get("/stats").json()
        assert stats["queue"]["ready"] == 2 and not waiting
        assert slowest < 0.5, slowest
        # The handler turns each order into a receipt (the queue stays full)
        # and taking the receipts frees the room the third order waits for.
        client.post("/handlers/5")
        deadline = time.monotonic() + 20
        while client.get("/stats").json()["handled"]["succeeded"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not waiting
        taken = client.post("/receipts/take").json()["receipts"]
        assert len(taken) == 2
        third.join(30)
        assert waiting and waiting[0].status_code == 200, waiting
        deadline = time.monotonic() + 20
        while client.get("/stats").json()["handled"]["succeeded"] < 3:
            assert time.monotonic() < deadline, client.get("/stats").json()
            time.sleep(0.05)
        assert len(client.post("/receipts/take").json()["receipts"]) == 1


def test_stopping_the_server_while_handlers_run_loses_nothing(
    server_factory: collections.abc.Callable[..., Server], tmp_path: Path
) -> None:
    s = server_factory(HANDLER_DELAY="0.3", HANDLER_PARALLELISM="10")
    orders = 40
    with httpx.Client(base_url=s.url, timeout=30) as client:
        for i in range(orders):
            r = client.post("/orders", json={"order_id": f"o-{i}", "amount": i})
            assert r.status_code == 200
        deadline = time.monotonic() + 10
        while client.get("/stats").json()["handled"]["active"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    output = s.stop()
    assert s.proc.returncode == 0, output
    with ringq.Queue(tmp_path / "q") as q:
        topics = {t.rsplit(".", 1)[-1]: t for t in q.topic_stats()}
        receipts = q.checkout(topics["Receipt"], max_messages=1000, timeout=0)
        left = q.checkout(topics["OrderPlaced"], max_messages=1000, timeout=0)
        assert q.stats()["in_flight"] == len(receipts) + len(left)
    handled = [r.payload for r in receipts]
    assert len(set(handled)) == len(handled), "no order was handled twice"
    assert 0 < len(handled) < orders, "stopped while handlers ran"
    assert len(handled) + len(left) == orders, "every order is handled or still queued"

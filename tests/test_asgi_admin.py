"""``ringq.asgi.admin_app``: the admin endpoint mounted in an app of the
user's (FastAPI, under a real uvicorn), and called as a bare ASGI app."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import ringq
import ringq.asgi

httpx = pytest.importorskip("httpx", reason="httpx is installed by scripts/dev setup")
pytest.importorskip("fastapi", reason="fastapi is installed by scripts/dev setup")

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_letter_one(qdir: Path) -> str:
    with ringq.Queue(qdir, max_attempts=1) as q:
        mid = q.publish(b"bad", "orders")
        [d] = q.checkout("orders", timeout=0)
        q.nack(d, error=ValueError("broken"))
        return mid


def test_mounted_in_a_fastapi_app_under_uvicorn(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    mid = dead_letter_one(qdir)
    port = free_port()
    env = {**os.environ, "RINGQ_PATH": str(qdir), "ADMIN_TOKEN": "s3cret", "PYTHONPATH": str(TESTS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "apps.admin_mounted:app", "--port", str(port)],
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stdout.read()  # type: ignore[union-attr]
            try:
                if httpx.get(base + "/hello").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        right = {"Authorization": "Bearer s3cret"}
        assert httpx.get(base + "/admin/stats").status_code == 401, "reads need the token"
        stats = httpx.get(base + "/admin/stats", headers=right).json()
        assert stats["queue"]["dead"] == 1
        [dead] = httpx.get(base + "/admin/dlq", headers=right).json()
        assert dead["id"] == mid and "broken" in dead["error_message"]
        assert "ValueError" in dead["traceback"], "the token's holder sees the traceback"
        metrics = httpx.get(base + "/admin/metrics", headers=right)
        assert metrics.status_code == 200 and "ringq_" in metrics.text
        assert httpx.post(base + "/admin/dlq/replay", json={}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(base + "/admin/dlq/replay", json={}, headers=wrong).status_code == 403
        r = httpx.post(base + "/admin/dlq/replay", json={}, headers=right)
        assert r.status_code == 200 and r.json() == {"replayed": 1}
        after = httpx.get(base + "/admin/stats", headers=right).json()["queue"]
        assert (after["dead"], after["ready"]) == (0, 1)
        assert httpx.get(base + "/admin/nothing", headers=right).status_code == 404
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    assert server.returncode == 0


def test_as_a_bare_asgi_app_for_an_async_queue(qdir: Path) -> None:
    dead_letter_one(qdir)

    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            app: Any = ringq.asgi.admin_app(q)  # no token: actions are refused
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
                assert (await client.get("/stats")).json()["queue"]["dead"] == 1
                refused = await client.post(
                    "/dlq/purge", json={"all": True}, headers={"Authorization": "Bearer x"}
                )
                assert refused.status_code == 403
                bad = await client.get("/dlq", params={"limit": "many"})
                assert bad.status_code == 400
                assert await q.dlq.count() == 1

    asyncio.run(main())


def test_the_token_is_checked_before_the_body_and_bodies_are_capped(qdir: Path) -> None:
    from ringq.server import MAX_BODY

    big = b"{" + b" " * (MAX_BODY + 10) + b"}"
    with ringq.Queue(qdir) as q:
        server = q.serve_admin(token="t")
        refused = httpx.post(server.url + "/snapshot", content=big)
        assert refused.status_code == 401
        too_big = httpx.post(
            server.url + "/snapshot", content=big, headers={"Authorization": "Bearer t"}
        )
        assert too_big.status_code == 413
        ok = httpx.post(server.url + "/snapshot", json={}, headers={"Authorization": "Bearer t"})
        assert ok.status_code == 200

        async def asgi() -> None:
            app: Any = ringq.asgi.admin_app(q, token="t")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
                assert (await c.post("/snapshot", content=big)).status_code == 401
                r = await c.post("/snapshot", content=big, headers={"Authorization": "Bearer t"})
                assert r.status_code == 413

        asyncio.run(asgi())


def test_a_handler_named_with_a_slash_and_spaces_is_paused_and_resumed(qdir: Path) -> None:
    """The dashboard percent-encodes a handler's name in the action's path;
    both endpoints decode each segment of it. The threaded one matched the
    encoded text (no such handler) and a "/" split the name in two."""
    name = "mail/send ü"
    q = ringq.Queue(qdir)
    try:

        @q.handler(bytes, topic="t", name=name)
        def h(msg: bytes) -> None:
            pass

        q.start()
        server = q.serve_admin(token="t")
        path = f"/handlers/{urllib.parse.quote(name, safe='')}"
        auth = {"Authorization": "Bearer t"}
        try:
            done = httpx.post(f"{server.url}{path}/pause", json={}, headers=auth, timeout=10)
            assert done.status_code == 200 and done.json()["handler"] == name, done.text
            assert q.admin.paused == [name]
        finally:
            server.close()

        async def resume() -> None:
            app: Any = ringq.asgi.admin_app(q, token="t")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
                done = await c.post(f"{path}/resume", json={}, headers=auth)
                assert done.status_code == 200 and done.json()["handler"] == name, done.text

        asyncio.run(resume())
        assert q.admin.paused == []
    finally:
        q.close()

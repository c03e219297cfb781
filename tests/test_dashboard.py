"""The admin endpoint's web page in a real browser: headless Chromium
(Debian's) driven over the DevTools protocol loads it against a live queue
with the token in the URL's fragment, shows the numbers ``stats()`` gives,
replays a dead letter with its button, and leaves a screenshot in the
test's directory."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import ringq


class Browser:
    """One headless Chromium and one page of it, over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--window-size=1200,1400", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            line = self.proc.stderr.readline()
            assert line or self.proc.poll() is None, "chromium exited"
            found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
            assert time.monotonic() < deadline, "chromium did not start"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            [page] = [t for t in json.load(r) if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self.next_id = 0

    def call(self, method: str, **params: Any) -> Any:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            answer = json.loads(self.ws.recv(timeout=30))
            if answer.get("id") == self.next_id:
                assert "error" not in answer, answer
                return answer["result"]

    def js(self, expression: str) -> Any:
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return got["result"].get("value")

    def wait_for(self, expression: str, limit: float = 20.0) -> Any:
        deadline = time.monotonic() + limit
        while not (value := self.js(expression)):
            assert time.monotonic() < deadline, f"not within {limit} s: {expression}"
            time.sleep(0.05)
        return value

    def close(self) -> None:
        self._stack.close()
        self.proc.kill()
        self.proc.wait(10)


def test_the_dashboard_in_chromium_shows_the_queue_and_replays(tmp_path: Path) -> None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (scripts/dev test installs it)")
    with ringq.Queue(tmp_path / "q", max_attempts=1) as q:
        for i in range(3):
            q.publish(b"%d" % i, topic="orders")
        [bad] = q.checkout("orders", timeout=0)
        q.nack(bad, error=ValueError("card declined"))
        done: list[bytes] = []
        q.handler(bytes, topic="mail", name="send_mail")(done.append)
        q.start()
        server = q.serve_admin(token="s3cret")
        browser = Browser(binary, tmp_path / "profile")
        try:
            browser.call("Page.enable")
            browser.call("Page.navigate", url=f"{server.url}/#token=s3cret")
            browser.wait_for("document.body.dataset.loaded === '1'")
            stats = q.stats()
            shown = browser.js(
                "Object.fromEntries(['ready','in_flight','delayed','dead'].map("
                "k => [k, document.getElementById('queue-' + k).textContent]))"
            )
            assert shown == {k: f"{stats[k]:,}" for k in ("ready", "in_flight", "delayed", "dead")}
            assert browser.js("location.hash") == "", "the token leaves the address bar"
            rows = browser.js(
                "[...document.querySelectorAll('#topics tbody tr')].map(r => r.innerText)"
            )
            assert any(r.startswith("orders") and "2" in r for r in rows), rows
            assert browser.js("document.querySelector('#handlers tbody tr').dataset.handler") == (
                "send_mail"
            )
            # The dead letter, its detail view, then its replay button.
            assert browser.js("document.querySelectorAll('#dlq tbody tr').length") == 1
            browser.js("document.querySelector('#dlq a.show').click()")
            detail = browser.wait_for("document.getElementById('detail').innerText")
            assert "card declined" in detail and "ValueError" in detail, detail
            shot = browser.call("Page.captureScreenshot", format="png")["data"]
            png = base64.b64decode(shot)
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            (tmp_path / "dashboard.png").write_bytes(png)
            browser.js("document.querySelector('#dlq button.replay').click()")
            deadline = time.monotonic() + 20
            while len(q.dlq) != 0:
                assert time.monotonic() < deadline, "the replay button did not replay"
                time.sleep(0.05)
            browser.wait_for("document.querySelectorAll('#dlq tbody tr').length === 0")
            assert q.stats()["ready"] == 3
        finally:
            browser.close()
            q.stop()


def test_ringq_dashboard_serves_a_closed_queue(tmp_path: Path) -> None:
    """``ringq dashboard PATH`` opens a closed queue and serves its page and
    its reads (with the token) until it is stopped."""
    import os
    import signal
    import sys

    qdir = tmp_path / "q"
    with ringq.Queue(qdir) as q:
        q.publish(b"x", topic="t")
    env = {**os.environ, "RINGQ_ADMIN_TOKEN": "s3cret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringq.cli", "dashboard", str(qdir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)/#token=", line)
        assert url, line + (proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        with urllib.request.urlopen(url.group(1) + "/", timeout=10) as r:
            assert b"<title>ringq</title>" in r.read()
        req = urllib.request.Request(url.group(1) + "/stats")
        req.add_header("Authorization", "Bearer s3cret")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.load(r)["queue"]["ready"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def test_ringq_dashboard_leaves_a_redis_namespaces_options_alone() -> None:
    """On a redis:// queue, ``ringq dashboard`` serves the namespace as it
    is: opening it does not store the CLI's default options in it."""
    import os
    import signal
    import sys
    import uuid

    from redis_servers import redis_url

    url = redis_url()
    if url is None:
        pytest.skip("redis-server is not installed (scripts/dev test installs it)")
    ns = "dash-" + uuid.uuid4().hex[:8]
    with ringq.Queue(url, namespace=ns, capacity=7, max_attempts=2) as q:
        q.publish(b"x", topic="t")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringq.cli", "dashboard", url, "--namespace", ns, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "RINGQ_ADMIN_TOKEN"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert found, line
        with urllib.request.urlopen(found.group(1) + "/stats", timeout=10) as r:
            stats = json.load(r)["queue"]
        assert (stats["ready"], stats["capacity"]) == (1, 7)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    with ringq.Queue(url, namespace=ns, capacity=7, max_attempts=2) as q:
        assert q.stats()["capacity"] == 7

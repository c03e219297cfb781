"""The admin endpoint over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import ringq
import ringq.asgi
from conftest import OpenQueue, wait_until
from prometheus_client.parser import text_string_to_metric_families


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
        if resp.headers.get_content_type() == "application/json":
            return json.loads(raw)
        return raw.decode()


def status_of(url: str, body: dict[str, Any] | None, token: str | None = None) -> int:
    try:
        call(url, body, token)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def test_admin_endpoint_reads_and_acts_only_with_the_token(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=1)
    for p in (b"a", b"b"):
        q.publish(p, topic="t")
    for d in q.checkout("t", max_messages=2, timeout=0):
        q.nack(d, error="bad")
    seen: list[bytes] = []

    @q.handler(bytes, topic="t")
    def h(msg: bytes) -> None:
        seen.append(msg)

    q.start()
    server = q.serve_admin(token="s3cret")
    base = server.url
    assert base.startswith("http://127.0.0.1:")

    for read in ("/stats", "/dlq", "/metrics"):
        assert status_of(f"{base}{read}", None) == 401, f"{read} without the token"
        assert status_of(f"{base}{read}", None, token="wrong") == 403, read
    stats = call(f"{base}/stats", token="s3cret")
    assert stats["queue"]["dead"] == 2 and "h" in stats["handlers"]
    dead = call(f"{base}/dlq?topic=t&limit=1", token="s3cret")
    assert [d["reason"] for d in dead] == ["max_attempts"]
    metrics = call(f"{base}/metrics", token="s3cret")
    families = {f.name for f in text_string_to_metric_families(metrics)}
    assert {"ringq_published", "ringq_ready", "ringq_handler_processed"} <= families

    replay = f"{base}/dlq/replay"
    assert status_of(replay, {}) == 401, "no token"
    assert status_of(replay, {}, token="wrong") == 403
    assert call(replay, {"ids": [dead[0]["id"]]}, token="s3cret") == {"replayed": 1}
    assert wait_until(lambda: seen == [b"a"])
    assert status_of(f"{base}/dlq/purge", {}, token="s3cret") == 400, "needs ids or all"
    assert call(f"{base}/dlq/purge", {"all": True}, token="s3cret") == {"purged": 1}
    assert call(f"{base}/handlers/h/pause", {}, token="s3cret")["action"] == "pause"
    assert q.admin.paused == ["h"]
    assert call(f"{base}/handlers/h/scale", {"workers": 2}, token="s3cret")["action"] == "scale"
    assert q.handler_stats()["h"]["workers"] == 2
    assert status_of(f"{base}/handlers/nope/scale", {"workers": 1}, token="s3cret") == 400
    assert call(f"{base}/snapshot", {}, token="s3cret")["lsn"] == q.stats()["snapshot_lsn"]
    assert status_of(f"{base}/nothing", {}, token="s3cret") == 404
    q.close()
    try:
        urllib.request.urlopen(f"{base}/stats", timeout=2)
        raise AssertionError("the endpoint must stop with the queue")
    except urllib.error.URLError:
        pass


def test_without_a_token_every_action_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()
    server = q.serve_admin()
    assert status_of(f"{server.url}/snapshot", {}, token="anything") == 403
    assert call(f"{server.url}/stats")["queue"]["ready"] == 0


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_token_is_refused_rather_than_matching_an_empty_bearer(
    open_queue: OpenQueue, token: str
) -> None:
    """``token=os.environ.get("ADMIN_TOKEN", "")`` with the variable unset:
    the endpoint let anyone act with ``Authorization: Bearer `` (an empty
    token compared equal). It is refused where it is given, for the
    threaded endpoint and the ASGI app alike; nothing is served."""
    q = open_queue()
    with pytest.raises(ringq.ConfigError, match="token="):
        q.serve_admin(token=token)
    with pytest.raises(ringq.ConfigError, match="token="):
        ringq.asgi.admin_app(q, token=token)


def test_tracebacks_only_with_the_token_and_metrics_open_on_request(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(max_attempts=1)
    q.publish(b"x", topic="t")
    [d] = q.checkout("t", timeout=0)
    try:
        raise ValueError("secret detail in a stack frame")
    except ValueError as e:
        q.nack(d, error=e)
    # No token configured: reads are open, tracebacks are not shown.
    open_server = q.serve_admin()
    [row] = call(f"{open_server.url}/dlq")
    assert row["traceback"] is None and row["traceback_hidden"] is True
    assert row["error_message"] == "secret detail in a stack frame"
    # A token configured: its holder sees the traceback; /metrics left open.
    guarded = q.serve_admin(token="s3cret", open_metrics=True)
    [row] = call(f"{guarded.url}/dlq", token="s3cret")
    assert "ValueError" in row["traceback"] and "traceback_hidden" not in row
    assert "ringq_published" in call(f"{guarded.url}/metrics")
    assert status_of(f"{guarded.url}/stats", None) == 401


def test_the_endpoints_metrics_fill_the_handler_histograms(open_queue: OpenQueue) -> None:
    """``/metrics`` serves the handlers' duration and end-to-end
    histograms: the endpoint turns the timing on, as
    ``ringq.metrics.register`` does (they stayed at 0 while the handler's
    counters moved)."""
    q = open_queue()
    server = q.serve_admin()
    done: list[bytes] = []

    @q.handler(bytes, topic="t")
    def h(msg: bytes) -> None:
        done.append(msg)

    q.publish_many([b"a", b"b", b"c"], topic="t")
    q.start()
    assert wait_until(lambda: len(done) == 3)
    q.stop()
    got = {
        (s.name, s.labels.get("handler")): s.value
        for family in text_string_to_metric_families(call(f"{server.url}/metrics"))
        for s in family.samples
    }
    assert got[("ringq_handler_succeeded_total", "h")] == 3
    assert got[("ringq_handler_handler_duration_seconds_count", "h")] == 3
    assert got[("ringq_handler_end_to_end_seconds_count", "h")] == 3


@pytest.mark.parametrize("length", ["x", "-1", "1e3"])
def test_a_bad_content_length_is_answered_400(open_queue: OpenQueue, length: str) -> None:
    """A ``Content-Length`` that is not a count of bytes: a 400 naming it.
    "x" raised in the server's thread (a traceback, the connection dropped
    unanswered); "-1" read until the client hung up."""
    import http.client
    from urllib.parse import urlparse

    q = open_queue()
    server = q.serve_admin(token="s3cret")
    try:
        url = urlparse(server.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.putrequest("POST", "/snapshot")
        conn.putheader("Authorization", "Bearer s3cret")
        conn.putheader("Content-Length", length)
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 400
        assert "Content-Length" in json.loads(resp.read())["error"]
        conn.close()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("host", "token", "status"),
    [
        ("evil.example", None, 403),
        ("evil.example:80", None, 403),
        ("localhost:9", None, 200),
        ("[::1]:9", None, 200),
        (None, None, 200),  # HTTP/1.0 without a Host: no browser sends that
        ("proxy.example", "s3cret", 200),  # a same-machine proxy with the token
        ("proxy.example", "wrong", 403),
    ],
)
def test_a_loopback_endpoint_answers_only_requests_that_name_this_machine(
    open_queue: OpenQueue, host: str | None, token: str | None, status: int
) -> None:
    """Without the token, reads are open to this machine; a web page that
    points a name of its own at 127.0.0.1 (DNS rebinding) sends that name
    as the Host and is refused, so it cannot read the dead letters. The
    token's holder (a reverse proxy passing its client's Host) is not."""
    import http.client
    from urllib.parse import urlparse

    q = open_queue()
    server = q.serve_admin(token="s3cret", open_metrics=True) if token else q.serve_admin()
    try:
        url = urlparse(server.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.putrequest("GET", "/dlq", skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        if token is not None:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        assert conn.getresponse().status == status
        conn.close()
    finally:
        server.close()

"""``q.serve_admin(...)``: a small HTTP endpoint for operators.

Binds 127.0.0.1 by default. Every action needs ``Authorization: Bearer
<token>`` (without a token configured, actions are refused). With a token
configured, reads need it too (``/stats``, ``/dlq``, and ``/metrics`` unless
``open_metrics=True`` leaves that one open for a scraper); without one,
reads are open to whoever can connect. Tracebacks of dead letters are only
shown to a caller with the token. Each action goes through ``q.admin``, so
it is logged.

GET  ``/`` (also ``/dashboard``)       the web page (``ringq.dashboard``; it holds no data)
GET  ``/metrics``                      Prometheus text (needs prometheus_client)
GET  ``/stats``                        ``self._admin.stats()`` as JSON
GET  ``/dlq?topic=&reason=&limit=``    dead letters as JSON
POST ``/snapshot``                     write a snapshot
POST ``/dlq/replay``   ``{"ids": [...]?, "rate": n?}``
POST ``/dlq/purge``    ``{"ids": [...]}`` or ``{"all": true}``
POST ``/handlers/<name>/scale``  ``{"workers": n}``
POST ``/handlers/<name>/pause`` and ``/resume``
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from ringq.dlq import as_dict
from ringq.errors import ConfigError, RingqError

if TYPE_CHECKING:
    from ringq.admin import Admin
    from ringq.core import QueueCore

__all__ = ["AdminRoutes", "AdminServer"]

log = logging.getLogger("ringq.admin")

#: The largest request body an action takes (they are small JSON objects).
MAX_BODY = 1 << 20


class AdminRoutes:
    """What the admin endpoint answers, whatever serves it: the threaded
    HTTP server here (``q.serve_admin``) or an ASGI app (``ringq.asgi``).
    ``handle`` takes a method, a path (relative to where it is served), the
    query, the ``Authorization`` header and the raw body."""

    def __init__(
        self, queue: QueueCore, admin: Admin, token: str | None, open_metrics: bool = False
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            # An empty token (an unset environment variable read with a
            # default of "") matched the header "Bearer ": anyone could act.
            raise ConfigError(
                f"token={token!r} (must be a non-empty str; None refuses every action)"
            )
        self._q = queue
        self._admin = admin
        self._token = token
        self._open_metrics = open_metrics
        # ``/metrics`` serves the handlers' latency histograms: they fill
        # only with timing on (as ``ringq.metrics.register`` turns it on).
        queue._enable_timing()

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str | None,
        body: bytes,
    ) -> tuple[int, str, bytes]:
        try:
            if method == "GET":
                refused = self.read_refused(path, authorization)
                if refused:
                    return _json(refused, {"error": "reading needs the admin token"})
                return self.get(path, query, self.authorized(authorization) == 0)
            if method != "POST":
                return _json(405, {"error": f"{method} is not served here"})
            refused = self.authorized(authorization)
            if refused:
                return _json(refused, {"error": "actions need the admin token"})
            if len(body) > MAX_BODY:
                return _json(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
            try:
                parsed = json.loads(body or b"{}")
                if not isinstance(parsed, dict):
                    raise ValueError("the body must be a JSON object")
            except ValueError as e:
                return _json(400, {"error": f"bad JSON body: {e}"})
            return self.post(path, parsed)
        except (KeyError, ValueError, TypeError, RingqError) as e:
            return _json(400, {"error": f"{type(e).__name__}: {e}"})

    def authorized(self, header: str | None) -> int:
        """0 if allowed, else the HTTP status to refuse with."""
        if self._token is None:
            return 403
        if not header or not header.startswith("Bearer "):
            return 401
        given = header.removeprefix("Bearer ").encode()
        return 0 if hmac.compare_digest(given, self._token.encode()) else 403

    def read_refused(self, path: str, header: str | None) -> int:
        """0 if a read of ``path`` is allowed, else the HTTP status to refuse
        with: with a token configured, every read needs it (``/metrics``
        too, unless ``open_metrics``)."""
        if self._token is None or (path == "/metrics" and self._open_metrics):
            return 0
        if path in ("/", "/dashboard"):
            return 0  # the page holds no data: what it shows needs the token
        return self.authorized(header)

    def get(
        self, path: str, query: dict[str, list[str]], trusted: bool = False
    ) -> tuple[int, str, bytes]:
        """A read; ``trusted``: the caller gave the token (tracebacks shown)."""
        if path in ("/", "/dashboard"):
            from ringq.dashboard import page

            return 200, "text/html; charset=utf-8", page()
        if path == "/stats":
            return _json(200, self._admin.stats())
        if path == "/dlq":
            one = {k: v[0] for k, v in query.items()}
            limit = int(one["limit"]) if "limit" in one else None
            dead = self._admin.dead_letters(one.get("topic"), one.get("reason"), limit)
            rows = [as_dict(d, payload=False) for d in dead]
            if not trusted:
                for row in rows:
                    if row["traceback"] is not None:
                        row["traceback"] = None
                        row["traceback_hidden"] = True
            return _json(200, rows)
        if path == "/metrics":
            try:
                from prometheus_client import CollectorRegistry, generate_latest

                from ringq.metrics import RingqCollector
            except ImportError:
                return _json(501, {"error": "pip install 'ringq[prometheus]' for /metrics"})
            registry = CollectorRegistry()
            registry.register(RingqCollector(self._q))
            return 200, "text/plain; version=0.0.4", generate_latest(registry)
        return _json(404, {"error": f"no such resource: {path}"})

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
        admin = self._admin
        # ``path`` as sent (percent-encoded): a handler's name may hold a
        # "/" or a space (the dashboard encodes it), decoded per segment.
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if parts == ["snapshot"]:
            return _json(200, {"lsn": admin.snapshot()})
        if parts == ["dlq", "replay"]:
            return _json(200, {"replayed": admin.replay(body.get("ids"), rate=body.get("rate"))})
        if parts == ["dlq", "purge"]:
            if not body.get("ids") and body.get("all") is not True:
                return _json(400, {"error": 'give "ids" or "all": true'})
            return _json(200, {"purged": admin.purge(body.get("ids"))})
        if len(parts) == 3 and parts[0] == "handlers":
            name, action = parts[1], parts[2]
            if action == "scale":
                admin.scale(name, body["workers"])
            elif action == "pause":
                admin.pause(name)
            elif action == "resume":
                admin.resume(name)
            else:
                return _json(404, {"error": f"no handler action {action!r}"})
            return _json(200, {"handler": name, "action": action})
        return _json(404, {"error": f"no such action: {path}"})


class AdminServer:
    """The running endpoint; ``url`` says where, ``close()`` stops it."""

    def __init__(
        self,
        queue: QueueCore,
        admin: Admin,
        host: str,
        port: int,
        token: str | None,
        open_metrics: bool = False,
    ) -> None:
        self.routes = AdminRoutes(queue, admin, token, open_metrics)
        local = host in _LOOPBACK
        server = ThreadingHTTPServer((host, port), _handler_for(self.routes, local))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="ringq-admin-http", daemon=True
        )
        self._thread.start()
        if not local:
            log.warning("admin endpoint on %s: reachable beyond this machine", self.url)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _json(status: int, value: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(value).encode()


#: Names of this machine's loopback interface, as a bind address or a Host.
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _host_name(header: str | None) -> str:
    """The name in a ``Host`` header, without its port (or brackets)."""
    host = (header or "").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _handler_for(routes: AdminRoutes, local: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            host = self.headers.get("Host")
            if (
                local
                and host is not None
                and _host_name(host) not in _LOOPBACK
                and routes.authorized(self.headers.get("Authorization")) != 0
            ):
                # On loopback, a request naming another host and without the
                # token comes through a name made to point here (DNS
                # rebinding): a web page reading the open endpoint. Refused
                # before anything is read. (A browser always sends a Host; a
                # same-machine proxy that passes its own through gives the
                # token.)
                self.close_connection = True
                self._send(*_json(403, {"error": "the Host header must name this machine"}))
                return False
            return True

        def do_GET(self) -> None:
            self._answer("GET", b"")

        def do_POST(self) -> None:
            # The token before the body: nobody without it gets one read.
            refused = routes.authorized(self.headers.get("Authorization"))
            given = (self.headers.get("Content-Length") or "0").strip()
            # Digits only: "-1" read to the end of the stream, "x" raised in
            # the server's thread (a traceback, no answer).
            length = int(given) if given.isascii() and given.isdigit() else -1
            if refused or not 0 <= length <= MAX_BODY:
                self.close_connection = True  # the unread body stays unread
                if refused:
                    self._send(*_json(refused, {"error": "actions need the admin token"}))
                elif length < 0:
                    self._send(*_json(400, {"error": f"bad Content-Length {given!r}"}))
                else:
                    self._send(*_json(413, {"error": f"the body is over {MAX_BODY} bytes"}))
                return
            self._answer("POST", self.rfile.read(length))

        def _answer(self, method: str, body: bytes) -> None:
            url = urlparse(self.path)
            self._send(
                *routes.handle(
                    method, url.path, parse_qs(url.query), self.headers.get("Authorization"), body
                )
            )

        def _send(self, status: int, content_type: str, out: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("admin http: " + format, *args)

    return Handler

"""``ringq.asgi.admin_app(q)``: the admin endpoint as an ASGI app.

The same resources and actions as ``q.serve_admin`` (``ringq.server``):
``GET /metrics``, ``/stats``, ``/dlq`` and the token-guarded ``POST``
actions. It is served by the app it is mounted in (no second port), for
example in FastAPI or Starlette::

    app.mount("/admin", ringq.asgi.admin_app(q, token=os.environ["ADMIN_TOKEN"]))

It is a plain ASGI callable, so it needs no web framework of its own.
Paths are relative to the mount point (the scope's ``root_path``). Each
request runs its queue call in a worker thread: a snapshot, or a replay
paced by ``rate``, takes its time without holding up the server's loop.
``q`` is a ``ringq.Queue`` or a ``ringq.AsyncQueue``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from ringq.server import MAX_BODY, AdminRoutes, _json

if TYPE_CHECKING:
    from ringq.aio import AsyncQueue
    from ringq.queue import Queue

__all__ = ["admin_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def admin_app(
    q: Queue | AsyncQueue, token: str | None = None, open_metrics: bool = False
) -> ASGIApp:
    """An ASGI app serving ``q``'s admin endpoint; actions need ``token``
    (``Authorization: Bearer <token>``; without a token they are refused),
    and so do reads when a token is given (``/metrics`` excepted with
    ``open_metrics=True``). Tracebacks are shown only with the token."""
    from ringq.aio import AsyncQueue

    queue = q.queue if isinstance(q, AsyncQueue) else q
    routes = AdminRoutes(queue, queue.admin, token, open_metrics)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise RuntimeError(f"ringq.asgi.admin_app serves HTTP, not {scope['type']!r}")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization")
        method: str = scope["method"]
        refused = routes.authorized(authorization) if method == "POST" else 0
        # The token before the body: nobody without it gets one read.
        status, content_type, out = (
            _json(refused, {"error": "actions need the admin token"}) if refused else (0, "", b"")
        )
        chunks: list[bytes] = []
        size = 0
        while not refused:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                status, content_type, out = _json(
                    413, {"error": f"the body is over {MAX_BODY} bytes"}
                )
                break
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        if not status:
            # As sent (percent-encoded), as the threaded endpoint sees it:
            # a "/" inside a handler's name stays inside its segment.
            raw: bytes | None = scope.get("raw_path")
            path: str = raw.decode("latin-1") if raw else quote(scope["path"])
            root: str = quote(scope.get("root_path", ""))
            if root and path.startswith(root):
                path = path[len(root) :]
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            status, content_type, out = await asyncio.to_thread(
                routes.handle, method, path or "/", query, authorization, b"".join(chunks)
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(out)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out})

    return app

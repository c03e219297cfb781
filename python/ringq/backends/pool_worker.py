"""The backend of a queue opened inside a process-pool worker.

A process-pool handler (``@q.handler(T, processes=N)``) runs in worker
processes that import the handler's module; a module that opens its queue
at import (``q = ringq.Queue(...)`` at the top, ``@q.handler`` below) opens it
again in every worker. There the queue is inert: it opens nothing (the
directory belongs to the process running the handlers), registering
handlers still works (they are never started here), and every operation
raises ``RingqError`` saying to use the handler's ``ctx`` (``ctx.publish``,
``ctx.heartbeat``) instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ringq.errors import RingqError

__all__ = ["PoolWorkerBackend", "become", "parent_pid"]

_parent: int | None = None


def become(parent: int) -> None:
    """Marks this process as a pool worker of process ``parent``."""
    global _parent
    _parent = parent


def parent_pid() -> int | None:
    """The process this one works for, if it is a pool worker."""
    return _parent


class PoolWorkerBackend:
    """Satisfies ``ringq.backend.Backend``; every operation refuses."""

    role = "pool-worker"
    address = None
    durability = "batch"
    lease = 30.0
    forked = False
    instance_id = ""

    def __init__(self, path: str, **options: Any) -> None:
        self.path = path
        self.closed = False
        if isinstance(options.get("lease"), (int, float)):
            self.lease = float(options["lease"])

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise RingqError(
            f"this process is a process-pool worker (of pid {_parent}): the queue {self.path} "
            "belongs to that process. A handler here publishes with ctx.publish (committed "
            "with its ack) and renews its lease with ctx.heartbeat"
        )

    def check_not_forked(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._refuse

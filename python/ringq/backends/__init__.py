"""The backends behind ``ringq.backend.Backend``; ``open_backend`` picks one."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ringq.backend import Backend
from ringq.backends.urls import is_redis_url

__all__ = ["fast_publish", "open_backend"]


def open_backend(
    target: str | os.PathLike[str], *, shared: bool = False, **options: Any
) -> Backend:
    """The backend for ``target``: a Redis URL (``redis://``, ``rediss://``,
    ``redis+cluster://``: ``ringq.backends.redis``, in the namespace
    ``namespace``), or a directory, owned by this process
    (``shared=False``), or shared by processes (``ringq.backends.shared``).
    ``options`` are the queue options; ``None`` values keep the defaults.
    In a process-pool worker the queue is inert (``ringq.backends.pool_worker``).
    (Tests also pass ``_manual_clock=True``: see ``QueueCore._open_backend``.)"""
    from ringq.backends import pool_worker

    if pool_worker.parent_pid() is not None:
        inert: Backend = pool_worker.PoolWorkerBackend(os.fspath(target), **options)
        return inert
    if is_redis_url(target):
        from ringq.backends.redis import open_redis

        return open_redis(str(target), shared=shared, **options)
    if options.get("namespace") is not None:
        from ringq.errors import ConfigError

        raise ConfigError(
            f"namespace={options['namespace']!r} applies to redis:// queues only, not to the "
            f"directory {os.fspath(target)!r}"
        )
    options.pop("namespace", None)
    if shared:
        from ringq.backends.shared import open_shared

        return open_shared(os.fspath(target), **options)
    from ringq.backends.local import open_local

    return open_local(os.fspath(target), **options)


def fast_publish(
    backend: Backend, publish: Callable[..., str], publish_many: Callable[..., list[str]]
) -> tuple[Callable[..., str], Callable[..., list[str]]] | None:
    """``publish`` and ``publish_many`` for a queue on ``backend`` that send
    a plain call (``bytes``, a ``str`` topic or none, no options; a list of
    ``bytes``) straight to the backend without a Python frame, and every
    other call to the given methods; ``None`` when ``backend`` has no such
    path (only the engine, ``ringq._core``, in this process or as a shared
    queue's client, has one)."""
    from ringq import _core

    if type(backend) is not _core.Engine:
        return None
    return backend._fast_publishers(publish, publish_many)

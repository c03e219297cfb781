"""The backends behind ``ringq.backend.Backend``; ``open_backend`` picks one."""

from __future__ import annotations

import os
from typing import Any

from ringq.backend import Backend

__all__ = ["open_backend"]


def open_backend(
    target: str | os.PathLike[str], *, shared: bool = False, **options: Any
) -> Backend:
    """The backend for ``target``: a directory, owned by this process
    (``shared=False``), or shared by processes (``ringq.backends.shared``).
    ``options`` are the queue options; ``None`` values keep the defaults.
    In a process-pool worker the queue is inert (``ringq.backends.pool_worker``).
    (Tests also pass ``_manual_clock=True``: see ``QueueCore._open_backend``.)"""
    from ringq.backends import pool_worker

    if pool_worker.parent_pid() is not None:
        inert: Backend = pool_worker.PoolWorkerBackend(os.fspath(target), **options)
        return inert
    if shared:
        from ringq.backends.shared import open_shared

        return open_shared(os.fspath(target), **options)
    from ringq.backends.local import open_local

    return open_local(os.fspath(target), **options)

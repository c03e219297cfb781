"""The backends behind ``ringq.backend.Backend``; ``open_backend`` picks one."""

from __future__ import annotations

import os
from typing import Any

from ringq.backend import Backend

__all__ = ["open_backend"]


def open_backend(target: str | os.PathLike[str], **options: Any) -> Backend:
    """The backend for ``target``: a directory (the engine in this process).
    ``options`` are the queue options; ``None`` values keep the defaults."""
    from ringq.backends.local import open_local

    return open_local(os.fspath(target), **options)

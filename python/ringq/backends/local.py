"""The in-process backend: the Rust engine (``ringq._core``), which
implements ``ringq.backend.Backend`` itself, plus the read-only directory
tools the CLI uses (they work while another process owns the queue)."""

from __future__ import annotations

from typing import Any

from ringq import _core
from ringq.backend import Backend, DeadLetter

__all__ = [
    "ENGINE_VERSION",
    "FORMAT_VERSION",
    "dead_letters",
    "inspect",
    "open_local",
    "peek",
    "repair",
]

#: The version of the engine (and of the package: they are built together).
ENGINE_VERSION: str = _core.__version__
#: The journal segment format this engine writes into a new file (a covered
#: segment recycled as a spare is format 3, same layout: docs/format.md).
FORMAT_VERSION: int = _core.FORMAT_VERSION


def open_local(path: str, **options: Any) -> Backend:
    """Opens (creating) the queue directory ``path`` in this process."""
    engine: Backend = _core.Engine(path, **options)
    return engine


def inspect(path: str) -> dict[str, Any]:
    """What ``path`` holds, read as recovery would, without taking its lock."""
    return _core.inspect(path)


def peek(path: str, topic: str, limit: int = 10) -> list[dict[str, Any]]:
    """The next messages of ``topic``, read-only."""
    return _core.peek(path, topic, limit)


def dead_letters(path: str, limit: int | None = None) -> list[DeadLetter]:
    """Dead letters, oldest first, read-only."""
    return _core.dead_letters(path, limit)


def repair(path: str) -> dict[str, Any]:
    """Accepts damage recovery refuses to open silently; says what it was."""
    return _core.repair(path)

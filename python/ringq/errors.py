"""The exceptions ringq raises, on every backend.

Defined here, in Python; the engine (``ringq._core``) raises these very
classes, and so do the other backends.

Hierarchy::

    RingqError                      root of every ringq error
    ├── QueueLocked                 another process owns the directory (.pid, .path)
    ├── QueueFull                   capacity reached (block=False or timeout ran out)
    ├── QueueClosed                 the queue was closed
    │   └── QueueForked             used in a fork() child of the process that opened it (.pid)
    ├── OwnerGone                   a shared queue's owner went away during the call
    ├── LeaseLost                   stale lease token on ack/nack/extend/release (.ids)
    │   └── ForeignDelivery         a delivery of another queue (or an earlier one at this path)
    ├── VersionConflict             expected_version mismatch (.expected, .actual)
    ├── LimitExceeded (ValueError)  payload, key, topic or headers too large
    ├── ConfigError (ValueError)    an option has an invalid value
    ├── CorruptionError             damaged journal/snapshot before valid data (.path, .offset)
    ├── StorageError (OSError)      write, fsync or file creation failed (.errno)
    └── NotFound (KeyError)         no message or dead letter with that id
"""

from __future__ import annotations

import traceback

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "CorruptionError",
    "ForeignDelivery",
    "LeaseLost",
    "LimitExceeded",
    "NotFound",
    "OwnerGone",
    "QueueClosed",
    "QueueForked",
    "QueueFull",
    "QueueLocked",
    "RingqError",
    "StorageError",
    "Submitted",
    "VersionConflict",
    "WouldBlock",
    "describe_error",
    "qualified_name",
]


class RingqError(Exception):
    """Root of every error ringq raises."""


class QueueLocked(RingqError):
    """Another process owns the queue directory. ``pid`` and ``path`` say which."""

    pid: int | None = None
    path: str = ""


class QueueFull(RingqError):
    """The queue holds ``capacity`` messages (``block=False`` or the timeout ran out).

    ``capacity`` and ``need`` (the places the call needed) are set when the
    engine raised it: ``need > capacity`` means it can never fit."""

    capacity: int | None = None
    need: int | None = None


class WouldBlock(RingqError):
    """Internal to ``ringq.AsyncQueue``: a call from its event loop found the
    engine busy (another thread held its lock longer than a call may wait on
    the loop); the queue runs it again in a worker thread. It never reaches
    users."""


class Submitted(Exception):
    """Internal to ``ringq.AsyncQueue`` on a shared queue's client: the call
    was sent to the owner and its answer comes later, under ``ticket``. Not
    a ``RingqError`` (nothing failed); it never reaches users."""

    def __init__(self, ticket: int) -> None:
        super().__init__(ticket)
        self.ticket = ticket


class QueueClosed(RingqError):
    """The queue was closed."""


class QueueForked(QueueClosed):
    """A queue opened before ``fork()``, used in the child: open it there instead.
    ``pid`` is the process that opened it."""

    pid: int | None = None


class OwnerGone(RingqError):
    """A shared queue's owning process went away while the call was under way:
    whether it took effect is unknown (a publish with a ``dedup_key`` can be
    repeated safely). The next call reconnects, or takes the queue over."""


class BackendUnavailable(OwnerGone):
    """The server a queue lives on (Redis) cannot be reached, or the
    connection broke during the call: whether the call took effect is
    unknown (as with ``OwnerGone``, which this is a kind of)."""


class LeaseLost(RingqError):
    """The lease token is stale: the message expired and may belong to someone else.

    ``ids`` lists the message ids whose acks/nacks/extends were rejected.
    """

    ids: list[str]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.ids = []


class ForeignDelivery(LeaseLost):
    """A delivery of another queue (or of an earlier queue at this path):
    nothing was changed."""


class VersionConflict(RingqError):
    """``expected_version`` did not match the live message's version."""

    expected: int = 0
    actual: int = 0


class LimitExceeded(RingqError, ValueError):
    """A payload, key, topic or header block is larger than the configured limit."""


class ConfigError(RingqError, ValueError):
    """An option has an invalid value."""


class CorruptionError(RingqError):
    """A journal or snapshot file is damaged before valid data.

    ``path`` and ``offset`` say where.
    """

    path: str = ""
    offset: int = 0


class StorageError(RingqError, OSError):
    """A write, fsync or file creation failed (disk full, I/O error)."""


class NotFound(RingqError, KeyError):
    """No message or dead letter with that id."""

    def __str__(self) -> str:
        # KeyError quotes its argument; the message reads better as is.
        return str(self.args[0]) if self.args else ""


def describe_error(
    error: str | BaseException | None,
) -> tuple[str | None, str | None, str | None]:
    """``(error_type, error_message, traceback)`` of a failure, as a dead
    letter records it."""
    if error is None:
        return None, None, None
    if isinstance(error, str):
        return None, error, None
    return qualified_name(type(error)), str(error), "".join(traceback.format_exception(error))


def qualified_name(cls: type) -> str:
    """``module.QualName``, or just ``QualName`` for builtins."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


# Users meet these as ``ringq.<Name>`` (tracebacks, dead letters' error_type,
# pickles): that is where they live publicly.
for _cls in (
    RingqError,
    QueueLocked,
    QueueFull,
    QueueClosed,
    QueueForked,
    OwnerGone,
    LeaseLost,
    ForeignDelivery,
    VersionConflict,
    LimitExceeded,
    ConfigError,
    CorruptionError,
    StorageError,
    NotFound,
):
    _cls.__module__ = "ringq"
del _cls

"""``q.admin``: see and steer a running queue from code.

Every action (scale, pause, resume, snapshot, replay, purge, drain) is
logged on the ``ringq.admin`` logger at INFO with what it did, so an
operator's changes leave a trace next to the application's own logs.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ringq.backend import DeadLetter

if TYPE_CHECKING:
    from ringq.core import QueueCore
    from ringq.dlq import DeadLetterPredicate

__all__ = ["Admin"]

log = logging.getLogger("ringq.admin")


class Admin:
    """Administration of one queue (``q.admin``)."""

    __slots__ = ("_paused", "_q")

    def __init__(self, queue: QueueCore) -> None:
        self._q = queue
        #: Worker counts of paused handlers, to restore on resume.
        self._paused: dict[str, int] = {}

    def stats(self) -> dict[str, Any]:
        """``{"path": ..., "queue": q.stats(), "topics": {...}, "handlers": {...}}``."""
        q = self._q
        return {
            "path": q.path,
            "queue": q.stats(),
            "topics": q.topic_stats(),
            "handlers": q.handler_stats(),
        }

    def scale(self, handler: str, workers: int) -> None:
        """Run ``workers`` worker threads for ``handler`` (0 pauses it)."""
        self._q.scale(handler, workers)
        self._paused.pop(handler, None)
        log.info("admin: handler %s scaled to %d workers", handler, workers)

    def pause(self, handler: str) -> None:
        """Stop taking new messages for ``handler`` (running ones finish)."""
        if handler in self._paused:
            return
        current = self._q.handler_stats()[handler]["target"] if self._q.running else 0
        self._q.scale(handler, 0)
        self._paused[handler] = current
        log.info("admin: handler %s paused (was %d workers)", handler, current)

    def resume(self, handler: str) -> None:
        """Undo ``pause``: the worker count from before, or the handler's
        ``max_parallelism`` if it was not paused through ``pause``."""
        workers = (
            self._paused.pop(handler, 0) or self._q.handlers.get(handler).options.max_parallelism
        )
        self._q.scale(handler, workers)
        log.info("admin: handler %s resumed with %d workers", handler, workers)

    @property
    def paused(self) -> builtins.list[str]:
        return sorted(self._paused)

    def snapshot(self) -> int:
        """Write a snapshot now; returns its LSN."""
        lsn = self._q.snapshot()
        log.info("admin: snapshot written at LSN %d", lsn)
        return lsn

    def dead_letters(
        self, topic: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        return self._q.dlq.list(topic, reason, limit)

    def replay(
        self,
        ids: Iterable[str] | None = None,
        where: DeadLetterPredicate | None = None,
        rate: float | None = None,
    ) -> int:
        """Replay dead letters (``q.dlq.replay``); returns how many."""
        n = self._q.dlq.replay(ids, where, rate)
        log.info("admin: replayed %d dead letters%s", n, "" if rate is None else f" at {rate}/s")
        return n

    def purge(
        self, ids: Iterable[str] | None = None, where: DeadLetterPredicate | None = None
    ) -> int:
        """Delete dead letters (``q.dlq.purge``); returns how many."""
        n = self._q.dlq.purge(ids, where)
        log.info("admin: purged %d dead letters", n)
        return n

    def drain(self, timeout: float | None = None) -> bool:
        """Let the handlers finish every ready message, then stop them
        (``q.stop(drain=True)``); False if ``timeout`` ran out first."""
        before = self._q.stats()["ready"]
        done = self._q.stop(drain=True, timeout=timeout)
        log.info(
            "admin: drained (%d were ready), handlers stopped%s",
            before,
            "" if done else f"; some still busy after {timeout}s",
        )
        return done

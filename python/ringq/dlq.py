"""``ringq.DeadLetterQueue``: the persisted, bounded ring of dead letters.

A message lands here when its attempts are exhausted (``max_attempts``), its
last lease expired with no attempts left (``lease_expired``), or a handler
declared its error non-retryable (``non_retryable``). Dead letters keep the
original message plus the last error; they survive restarts. Replaying one
publishes it again under a new id with its attempts reset and its
correlation id kept.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ringq.backend import DeadLetter
from ringq.errors import ConfigError

if TYPE_CHECKING:
    from ringq.backend import Backend

__all__ = ["DeadLetterPredicate", "DeadLetterQueue", "as_dict"]

DeadLetterPredicate = Callable[[DeadLetter], bool]


class DeadLetterQueue:
    """Dead letters of one queue (``Queue.dlq``), oldest first."""

    __slots__ = ("_backend",)

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def list(
        self, topic: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """Dead letters, oldest first, optionally of one topic and/or reason."""
        return self._backend.dlq_list(topic, reason, limit)

    def get(self, id: str) -> DeadLetter:
        """The dead letter of message ``id``; raises ``ringq.NotFound``."""
        return self._backend.dlq_get(id)

    def replay(
        self,
        ids: Iterable[str] | None = None,
        where: DeadLetterPredicate | None = None,
        rate: float | None = None,
    ) -> int:
        """Publish dead letters again (new ids, attempts reset, correlation
        kept); returns how many.

        ``ids`` and ``where`` select which (both: the ids that also match the
        predicate); with neither, all of them are replayed. ``rate`` caps the
        pace in messages per second (replayed in small batches, oldest
        first), so a large backlog does not flood the handlers; without it
        everything goes back in one atomic step.
        """
        done = 0
        for due, batch in self._replay_plan(ids, where, rate):
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            done += self._backend.dlq_replay(batch)
        return done

    def _replay_plan(
        self,
        ids: Iterable[str] | None,
        where: DeadLetterPredicate | None,
        rate: float | None,
        listing: builtins.list[DeadLetter] | None = None,
    ) -> Iterator[tuple[float, builtins.list[str] | None]]:
        """``replay``'s steps: (when, on ``time.monotonic``, ids or ``None``
        for all), in order. Without ``rate``: one step, now. ``listing``:
        every dead letter, if the caller has it (else asked for here when
        needed: ``_needs_listing``)."""
        if rate is not None:
            want = "None or a number of messages per second > 0 and <= 1000000000"
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise TypeError(f"rate must be {want}, not {type(rate).__name__}")
            if not 0 < rate <= 1e9:  # also refuses NaN
                raise ConfigError(f"rate={rate!r} (must be {want})")
        selected = self._select(ids, where, listing)
        if selected == []:
            return
        if rate is None:
            yield time.monotonic(), selected
            return
        if selected is None:
            selected = [d.id for d in (listing or self._backend.dlq_list())]
        # Batches of about 1/20 s worth, paced from the start time.
        step = max(1, int(rate / 20))
        started = time.monotonic()
        for i in range(0, len(selected), step):
            yield started + i / rate, selected[i : i + step]

    def purge(
        self, ids: Iterable[str] | None = None, where: DeadLetterPredicate | None = None
    ) -> int:
        """Delete dead letters for good; selection as for ``replay``. Returns how many."""
        selected = self._select(ids, where)
        return 0 if selected == [] else self._backend.dlq_purge(selected)

    @staticmethod
    def _needs_listing(
        ids: Iterable[str] | None, where: DeadLetterPredicate | None, rate: float | None
    ) -> bool:
        """Whether ``replay`` (``rate``) or ``purge`` (``rate=None``) with
        this selection reads every dead letter first."""
        return where is not None or (rate is not None and ids is None)

    def _select(
        self,
        ids: Iterable[str] | None,
        where: DeadLetterPredicate | None,
        listing: builtins.list[DeadLetter] | None = None,
    ) -> builtins.list[str] | None:
        """The backend's id list: ``None`` means all."""
        wanted = [ids] if isinstance(ids, str) else None if ids is None else list(ids)
        if where is None:
            return wanted
        candidates = self._backend.dlq_list() if listing is None else listing
        if wanted is not None:
            keep = set(wanted)
            candidates = [d for d in candidates if d.id in keep]
        return [d.id for d in candidates if where(d)]

    def __len__(self) -> int:
        return int(self._backend.stats()["dead"])

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(self._backend.dlq_list())

    def __repr__(self) -> str:
        return f"<ringq.DeadLetterQueue of {self._backend.path!r}>"


def as_dict(d: DeadLetter, payload: bool = True) -> dict[str, object]:
    """A dead letter as plain JSON-able data (the CLI and the admin endpoint);
    the payload as UTF-8 text (undecodable bytes escaped) unless left out."""
    out: dict[str, object] = {
        "id": d.id,
        "topic": d.topic,
        "reason": d.reason,
        "attempts": d.attempts,
        "handler": d.handler,
        "error_type": d.error_type,
        "error_message": d.error_message,
        "traceback": d.traceback,
        "headers": d.message.headers,
        "first_failed_at": d.first_failed_at,
        "dead_lettered_at": d.dead_lettered_at,
    }
    if payload:
        out["payload"] = d.message.payload.decode("utf-8", errors="backslashreplace")
    return out

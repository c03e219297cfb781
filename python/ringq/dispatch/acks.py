"""Handing a batch back to the engine: the acks of handled messages in one
call (``flush``) and the unstarted messages released (``release_rest``).

Both the worker and the lease monitor (for a batch held past its hold time)
call these: each takes from the worker's deques with ``popleft``, which is
atomic, so every message is acked or released once, by whoever comes first.
A released message goes to the front of its topic with its delivery undone
(``attempt`` as before): it is never charged an attempt, dead-lettered or
queued behind retries because a neighbour in its batch was slow.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ringq.backend import Delivery
from ringq.errors import LeaseLost, QueueClosed, RingqError

if TYPE_CHECKING:
    from ringq.backend import Backend
    from ringq.dispatch.pool import Worker
    from ringq.dispatch.tallies import Counters

__all__ = ["flush", "release_rest"]

log = logging.getLogger("ringq.dispatch")


def release_rest(engine: Backend, w: Worker) -> None:
    """Gives back the unstarted messages of ``w``'s batch (front of the
    topic, deliveries undone), whoever calls it first, and under a rate
    limit the token each took (it takes one again when it is checked out
    again: kept, a released message cost two and the handler ran below its
    rate)."""
    rest = _take_all(w.batch)
    if not rest:
        return
    gate = w.pool.gate
    if gate is not None:
        gate.give_back(len(rest))
    try:
        engine.release(rest)
    except LeaseLost:
        pass  # some had expired already: the engine retries those
    except QueueClosed:
        pass
    except RingqError as e:
        log.error("handler %s: release of %d messages failed: %s", w.pool.spec.name, len(rest), e)


def flush(engine: Backend, w: Worker, counters: Counters | None = None) -> None:
    """Sends the acks of handled messages (one engine call); counts the
    accepted ones as successes (in ``counters``, the worker's by default)."""
    done = _take_all(w.pending)
    if not done:
        return
    c = w.counters if counters is None else counters
    mw = w.pool.spec.middleware
    started = time.perf_counter()
    try:
        engine.ack(done)
    except LeaseLost as e:
        c.late_acks += len(e.ids)
        c.succeeded += len(done) - len(e.ids)
        if mw is not None and mw.ack:
            lost = set(e.ids)
            mw.acked([d for d in done if d.id not in lost], time.perf_counter() - started)
        log.warning(
            "handler %s: late ack rejected for %s (their leases ran out; "
            "the messages were retried)",
            w.pool.spec.name,
            ", ".join(e.ids),
        )
    except QueueClosed:
        raise
    except RingqError as e:
        # E.g. a failed fsync: the messages stay in flight and come back.
        log.error("handler %s: ack of %d messages failed: %s", w.pool.spec.name, len(done), e)
    else:
        c.succeeded += len(done)
        if mw is not None and mw.ack:
            mw.acked(done, time.perf_counter() - started)


def _take_all(dq: collections.deque[Delivery]) -> list[Delivery]:
    """Empties ``dq`` with ``popleft`` (atomic), so that a concurrent taker
    never gets the same message."""
    out: list[Delivery] = []
    with contextlib.suppress(IndexError):
        while True:
            out.append(dq.popleft())
    return out

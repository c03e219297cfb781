"""A failed attempt: what the worker tells the engine.

The engine decides what becomes of a message given back with ``nack``, by
one rule for every nack (a handler's or a plain ``q.nack``) and for lease
expiries, which no Python code sees: a dead-letter reason given, dead
letter; superseded by a newer message with its dedup key, dropped; out of
attempts (``attempt >= max_attempts`` of its topic), dead letter with reason
``max_attempts``; otherwise ready again after ``delay``. A handler's topic
takes its ``Retry.max_attempts``: the dispatcher sets it as the topic's
policy when the handler starts.

The worker supplies only what the engine cannot know:

- the reason of a failure the engine cannot see: ``undecodable`` (the
  payload does not decode into the handler's type) and ``non_retryable``
  (an exception listed in ``dead_letter_on``, or a decoded message that
  cannot be pickled for a ``processes=`` handler's worker process), both
  at once;
- for any other exception, the delay before the next delivery, from the
  handler's backoff (``Retry.next_delay``).

``next_delay`` is ``None`` once the attempts are used up: the worker then
gives no delay and names no reason, and the engine dead-letters the message
by its rule. That answer only picks the counter the failure goes to
(``retried`` or ``dead_lettered``); it never changes what the engine does.
The per-handler ``dead_lettered`` of ``stats()`` is the engine's count of
the topic anyway while the queue is open.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ringq.dispatch.processes import UnsendableMessage
from ringq.errors import LeaseLost, QueueClosed, RingqError, describe_error

if TYPE_CHECKING:
    from ringq.backend import Backend, Delivery
    from ringq.codecs.decoding import UndecodableError
    from ringq.dispatch.pool import Worker

__all__ = ["attempt_failed", "undecodable"]

log = logging.getLogger("ringq.dispatch")


def undecodable(engine: Backend, w: Worker, d: Delivery, e: UndecodableError) -> None:
    """``d``'s payload does not decode into the handler's type: dead letter."""
    c = w.counters
    c.undecodable += 1
    if _nack(engine, w, d, e, None, "undecodable"):
        c.dead_lettered += 1
        _dead_lettered(w, d, "undecodable", e)


def _dead_lettered(w: Worker, d: Delivery, reason: str, e: BaseException) -> None:
    """The middlewares' ``on_dead_letter`` (their errors are logged there)."""
    mw = w.pool.spec.middleware
    if mw is not None and mw.dead:
        mw.dead_lettered(d, reason, e)


def attempt_failed(engine: Backend, w: Worker, d: Delivery, e: BaseException) -> None:
    """The handler raised ``e`` on ``d``: retried after the backoff, or
    dead-lettered (see the module docstring)."""
    spec = w.pool.spec
    c = w.counters
    c.failed += 1
    if w.abandoned:
        log.warning(
            "handler %s failed on message %s after its lease ran out: %r", spec.name, d.id, e
        )
        return
    if isinstance(e, (spec.options.dead_letter_on, UnsendableMessage)):
        if _nack(engine, w, d, e, None, "non_retryable"):
            c.dead_lettered += 1
            _dead_lettered(w, d, "non_retryable", e)
        return
    delay = spec.options.retry.next_delay(d.attempt)
    if _nack(engine, w, d, e, delay, None):
        if delay is None:
            c.dead_lettered += 1
            _dead_lettered(w, d, "max_attempts", e)
        else:
            c.retried += 1


def _nack(
    engine: Backend,
    w: Worker,
    d: Delivery,
    error: BaseException,
    delay: float | None,
    reason: str | None,
) -> bool:
    """Records the failure on the message; False if the engine refused."""
    error_type, error_message, tb = describe_error(error)
    try:
        engine.nack(d, delay, error_type, error_message, tb, w.pool.spec.name, reason)
        return True
    except LeaseLost:
        w.counters.late_acks += 1
        log.warning(
            "handler %s: could not record the failure of message %s: its lease ran out",
            w.pool.spec.name,
            d.id,
        )
    except QueueClosed:
        raise
    except RingqError as e:
        log.error("handler %s: nack of message %s failed: %s", w.pool.spec.name, d.id, e)
    return False

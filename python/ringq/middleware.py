"""Middleware: hooks around publishing and handling, ``q.add_middleware(obj)``.

A middleware is any object with some of these methods (each optional):

- ``before_publish(message: OutgoingMessage) -> OutgoingMessage | None``:
  every message this process publishes (``q.publish``, ``q.publish_many``,
  a handler's ``ctx.publish``), encoded, before the backend sees it; it may
  return another message (``dataclasses.replace``-style: e.g. with a trace
  header added) or ``None`` to leave it as it is. A plain ``def``: publishing
  never waits on an event loop.
- ``before_handle(delivery: Delivery, ctx: Context)``: before a handler runs
  on a message (after it was decoded);
- ``after_handle(delivery: Delivery, ctx: Context, outcome: Outcome)``:
  after the handler returned or raised, before the ack or the failure is
  sent;
- ``on_dead_letter(delivery: Delivery, reason: str, error: BaseException | None)``:
  when a handler's failure (or an undecodable payload) dead-letters the
  message (not when a lease runs out on the last attempt: the engine
  decides that one, no handler is there);
- ``on_ack(deliveries: list[Delivery], seconds: float)``: after the backend
  accepted the acks of messages handlers handled (a batch, in one call that
  took ``seconds``; with a handler's staged ``ctx.publish`` messages, one
  message). A plain ``def``: it runs where the ack was sent (a worker
  thread or the handler's loop). Refused acks (a lease that ran out) are
  not in the list.

``before_handle``, ``after_handle`` and ``on_dead_letter`` may be ``async
def``: an async handler awaits them on its loop; a thread worker runs them
to completion (``asyncio.run``) in its thread.

**Order.** ``before_publish`` and ``before_handle`` run in the order the
middlewares were added; ``after_handle`` in the reverse order (the first
added wraps all the others).

**Errors never lose a message.** A ``before_publish`` that raises makes
the publish raise: nothing is published. A ``before_handle`` that raises
fails the attempt without running the handler; an ``after_handle`` that
raises fails the attempt even if the handler succeeded (its staged
messages are not published); either way the message is retried (or
dead-lettered) by the handler's policy, as for a handler's own exception.
An ``on_dead_letter`` or ``on_ack`` that raises is logged: the message is
already a dead letter, or acked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ringq.errors import ConfigError

if TYPE_CHECKING:
    from ringq.backend import Delivery, OutgoingMessage
    from ringq.context import Context

__all__ = ["HOOKS", "Middlewares", "Outcome"]

log = logging.getLogger("ringq.middleware")

HOOKS = ("before_publish", "before_handle", "after_handle", "on_dead_letter", "on_ack")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a handler's attempt ended: ``error`` is what it raised (``None``:
    it returned)."""

    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


def _run(result: Any) -> None:
    """A sync hook's result; an async one's coroutine, run to completion here."""
    if inspect.isawaitable(result):
        asyncio.run(_awaited(result))


async def _awaited(result: Any) -> None:
    await result


class Middlewares:
    """The middlewares of one queue, by hook (added to, never removed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[object] = []
        self.publish: list[Callable[[OutgoingMessage], OutgoingMessage | None]] = []
        self.before: list[Callable[..., Any]] = []
        self.after: list[Callable[..., Any]] = []
        self.dead: list[Callable[..., Any]] = []
        self.ack: list[Callable[[list[Delivery], float], object]] = []

    def add(self, obj: object) -> None:
        found = [name for name in HOOKS if callable(getattr(obj, name, None))]
        if not found:
            raise ConfigError(
                f"a middleware has at least one of {', '.join(HOOKS)}; {obj!r} has none"
            )
        publish = getattr(obj, "before_publish", None)
        if publish is not None and inspect.iscoroutinefunction(publish):
            raise ConfigError(
                f"{type(obj).__name__}.before_publish must be a plain def: publishing "
                "never waits on an event loop"
            )
        on_ack = getattr(obj, "on_ack", None)
        if on_ack is not None and inspect.iscoroutinefunction(on_ack):
            raise ConfigError(
                f"{type(obj).__name__}.on_ack must be a plain def: it runs where the ack "
                "was sent, a worker thread or the handler's loop"
            )
        with self._lock:
            self.items.append(obj)
            if publish is not None:
                self.publish = [*self.publish, publish]
            if hasattr(obj, "before_handle"):
                self.before = [*self.before, obj.before_handle]
            if hasattr(obj, "after_handle"):
                self.after = [obj.after_handle, *self.after]
            if hasattr(obj, "on_dead_letter"):
                self.dead = [*self.dead, obj.on_dead_letter]
            if on_ack is not None:
                self.ack = [*self.ack, on_ack]

    def __bool__(self) -> bool:
        return bool(self.items)

    # -- publishing -----------------------------------------------------------

    def before_publish(self, message: OutgoingMessage) -> OutgoingMessage:
        for hook in self.publish:
            changed = hook(message)
            if changed is not None:
                message = changed
        return message

    # -- handling, from a thread worker --------------------------------------

    def before_handle(self, d: Delivery, ctx: Context) -> None:
        for hook in self.before:
            _run(hook(d, ctx))

    def after_handle(self, d: Delivery, ctx: Context, outcome: Outcome) -> None:
        for hook in self.after:
            _run(hook(d, ctx, outcome))

    def dead_lettered(self, d: Delivery, reason: str, error: BaseException | None) -> None:
        for hook in self.dead:
            try:
                _run(hook(d, reason, error))
            except Exception:
                log.exception("on_dead_letter of message %s raised", d.id)

    def acked(self, deliveries: list[Delivery], seconds: float) -> None:
        for hook in self.ack:
            try:
                hook(deliveries, seconds)
            except Exception:
                log.exception("on_ack of %d message(s) raised", len(deliveries))

    # -- handling, from an async handler -----------------------------------

    async def abefore_handle(self, d: Delivery, ctx: Context) -> None:
        for hook in self.before:
            result = hook(d, ctx)
            if inspect.isawaitable(result):
                await result

    async def aafter_handle(self, d: Delivery, ctx: Context, outcome: Outcome) -> None:
        for hook in self.after:
            result = hook(d, ctx, outcome)
            if inspect.isawaitable(result):
                await result

    async def adead_lettered(self, d: Delivery, reason: str, error: BaseException | None) -> None:
        for hook in self.dead:
            try:
                result = hook(d, reason, error)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_dead_letter of message %s raised", d.id)

"""``ringq.Context``: what a handler knows about the message it is running.

One ``Context`` is made per delivery. It carries the message's ids, attempt
and headers, lets the handler renew its lease (``heartbeat``), notice that
its time ran out (``cancelled`` / ``raise_if_cancelled``), and stage further
messages (``publish``) that are committed atomically with this message's
ack: if the attempt fails, nothing it staged is published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ringq.backend import Delivery, OutgoingMessage
from ringq.codecs.encoding import outgoing_message
from ringq.errors import RingqError

if TYPE_CHECKING:
    from ringq.backend import Backend
    from ringq.codecs.formats import Codec

__all__ = ["Cancelled", "Context"]


class PublishHooks(Protocol):
    """What a context needs of the queue's middlewares
    (``ringq.middleware.Middlewares``): its ``before_publish`` hooks."""

    publish: list[Any]

    def before_publish(self, message: OutgoingMessage) -> OutgoingMessage: ...


class Cancelled(RingqError):
    """The handler's lease ran out; the message is being retried elsewhere."""


class Context:
    """The running handler's view of its message (see the module docstring).

    Attributes: ``message_id``, ``topic``, ``attempt`` (1 on the first
    delivery), ``dedup_key``, ``correlation_id``, ``causation_id``,
    ``headers``, ``enqueued_at`` (epoch seconds), ``handler`` (its name).
    """

    __slots__ = (
        "_backend",
        "_before_heartbeat",
        "_cancelled_by",
        "_codec",
        "_delivery",
        "_event",
        "_expired",
        "_lease",
        "_log",
        "_middleware",
        "_on_deadline",
        "_staged",
        "deadline",
        "handler",
    )

    def __init__(
        self,
        backend: Backend,
        delivery: Delivery,
        handler: str,
        lease: float,
        codec: Codec | None = None,
        middleware: PublishHooks | None = None,
    ) -> None:
        self._backend = backend
        #: What ``publish`` encodes with (the queue's codec; ``None``: JSON).
        self._codec = codec
        #: The queue's middlewares (``before_publish`` sees what is staged).
        self._middleware = middleware
        self._delivery = delivery
        self.handler = handler
        self._lease = lease
        self._staged: list[OutgoingMessage] | None = None
        self._event: threading.Event | None = None
        self._expired = False
        #: Why ``cancelled`` is set other than the lease running out.
        self._cancelled_by: str | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        #: Set by the dispatcher: sends pending acks of the batch and renews
        #: its unstarted messages' leases before this one is renewed.
        self._before_heartbeat: Callable[[], None] | None = None
        #: Set by the dispatcher: told each new deadline ``heartbeat`` sets,
        #: so that its lease watch wakes by then (a heartbeat may shorten
        #: the lease).
        self._on_deadline: Callable[[float], None] | None = None
        #: When the lease runs out (epoch seconds); moved by ``heartbeat``.
        self.deadline = delivery.lease_deadline

    # -- the message -----------------------------------------------------

    @property
    def delivery(self) -> Delivery:
        """The raw delivery (payload bytes, lease token, ...)."""
        return self._delivery

    @property
    def message_id(self) -> str:
        return self._delivery.id

    @property
    def topic(self) -> str:
        return self._delivery.topic

    @property
    def attempt(self) -> int:
        return self._delivery.attempt

    @property
    def dedup_key(self) -> str | None:
        return self._delivery.dedup_key

    @property
    def correlation_id(self) -> str | None:
        return self._delivery.correlation_id

    @property
    def causation_id(self) -> str | None:
        return self._delivery.causation_id

    @property
    def headers(self) -> dict[str, str]:
        return self._delivery.headers

    @property
    def enqueued_at(self) -> float:
        return self._delivery.enqueued_at

    @property
    def superseded(self) -> bool:
        """True once a newer message with this one's dedup key was published
        while this one is in flight: if this attempt fails, the message is
        dropped instead of retried (the newer one carries the payload)."""
        return self._backend.is_superseded(self._delivery)

    # -- time --------------------------------------------------------------

    @property
    def cancelled(self) -> threading.Event:
        """Set when the lease ran out before the handler finished. The
        message is then retried (or dead-lettered) and this attempt's ack
        will be rejected; a long handler should check it and stop."""
        ev = self._event
        if ev is None:
            ev = threading.Event()
            self._event = ev
            # The monitor sets _expired before reading _event: one of the two
            # sides always sees the other's write.
            if self._expired:
                ev.set()
        return ev

    def raise_if_cancelled(self) -> None:
        """Raise ``ringq.Cancelled`` if the lease ran out or the message was
        cancelled (``q.cancel``)."""
        if self._expired:
            if self._cancelled_by is not None:
                raise Cancelled(f"message {self.message_id} was {self._cancelled_by}")
            raise Cancelled(f"lease of message {self.message_id} ran out")

    def _cancel(self, why: str) -> None:
        """The message was removed under this attempt (``q.cancel``): sets
        ``cancelled``; its ack will be refused and nothing retries it."""
        self._cancelled_by = why
        self._expire()

    @property
    def remaining(self) -> float:
        """Seconds left on the lease (negative once it ran out)."""
        return self.deadline - time.time()

    def heartbeat(self, seconds: float | None = None) -> float:
        """Renew the lease for ``seconds`` (default: the handler's timeout)
        from now; returns the new deadline. Raises ``ringq.LeaseLost`` if the
        lease already ran out and ``ringq.Cancelled`` after cancellation."""
        self.raise_if_cancelled()
        if self._before_heartbeat is not None:
            self._before_heartbeat()
        deadline = self._backend.extend(self._delivery, self._lease if seconds is None else seconds)
        self._set_deadline(deadline)
        return deadline

    def _set_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        if self._on_deadline is not None:
            self._on_deadline(deadline)

    def _expire(self) -> None:
        """Called by the lease monitor when the deadline passed."""
        self._expired = True
        ev = self._event
        if ev is not None:
            ev.set()

    # -- chaining ----------------------------------------------------------

    def publish(
        self,
        payload: object,
        topic: str | None = None,
        *,
        dedup_key: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> None:
        """Stage a message, published atomically with this message's ack
        (options as for ``Queue.publish``).

        It inherits this message's correlation id (or takes this message's
        id as its correlation id when there is none) and its causation id is
        this message's id. Nothing is published if the attempt fails.
        """
        d = self._delivery
        item = outgoing_message(
            payload,
            topic,
            headers=headers,
            dedup_key=dedup_key,
            delay=delay,
            correlation_id=d.correlation_id or d.id,
            causation_id=d.id,
            priority=priority,
            ordering_key=ordering_key,
            dedup_window=dedup_window,
            codec=self._codec,
        )
        if self._middleware is not None and self._middleware.publish:
            item = self._middleware.before_publish(item)
        if self._staged is None:
            self._staged = [item]
        else:
            self._staged.append(item)

    @property
    def staged(self) -> list[OutgoingMessage]:
        """The messages ``publish`` staged so far (committed with the ack)."""
        return [] if self._staged is None else list(self._staged)

    # -- logging -------------------------------------------------------------

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``ringq.handler.<name>``) whose records carry
        ``message_id``, ``correlation_id``, ``attempt`` and ``handler``."""
        if self._log is None:
            extra: dict[str, Any] = {
                "message_id": self.message_id,
                "correlation_id": self.correlation_id,
                "attempt": self.attempt,
                "handler": self.handler,
            }
            logger = logging.getLogger(f"ringq.handler.{self.handler}")
            self._log = logging.LoggerAdapter(logger, extra)
        return self._log

    def __repr__(self) -> str:
        return (
            f"<ringq.Context {self.handler} message={self.message_id} attempt={self.attempt}"
            f"{' cancelled' if self._expired else ''}>"
        )

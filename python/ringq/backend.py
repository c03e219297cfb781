"""The backend seam: what the SDK needs from a queue store, and nothing more.

``Queue``, handlers, dispatch, context, retries, dead letters, admin,
metrics and the CLI reach a store only through a ``Backend``. A backend takes
bytes and the seam's three types, which every backend returns and any
backend can build: ``Delivery`` (a message under a lease), ``DeadLetter``
and ``OutgoingMessage`` (an encoded message to publish). Encoding objects is
the SDK's job, done before a call; errors are the classes of
``ringq.errors``. A backend that builds deliveries passes the list it
returns from ``checkout`` to ``untrack_deliveries``, which takes them off
the cyclic garbage collector as the engine's own are (a ``Delivery`` with
exact ``bytes`` as its payload can be part of no cycle).

Backends (``ringq.backends``):

- ``local``: the Rust engine in this process (``ringq._core.Engine``, which
  implements this protocol directly, so a call costs one boundary crossing).
- ``shared``: a directory shared by processes: the first to open it owns it
  (the engine, plus a Unix socket in the directory it serves); later ones
  are its clients over that socket (``docs/protocol.md``). Same class, same
  protocol; ``role`` says which.

Ids, lease tokens and queue ids are 64-bit values; ids and queue ids are
written as 16 hex digits. Durations are seconds; timestamps are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from ringq._core import DeadLetter, Delivery, OutgoingMessage, untrack_deliveries

__all__ = ["Backend", "DeadLetter", "Delivery", "OutgoingMessage", "untrack_deliveries"]


@runtime_checkable
class Backend(Protocol):
    """A queue store. Every call that may wait (for a message, for room, for
    fsync, for a lock or the network) lets other Python threads run."""

    @property
    def path(self) -> str:
        """Where the queue lives (a directory, a URL)."""

    @property
    def instance_id(self) -> str:
        """The queue's identity (16 hex digits): deliveries carry it."""

    @property
    def durability(self) -> str: ...

    @property
    def lease(self) -> float:
        """The default lease of ``checkout``, in seconds."""

    @property
    def closed(self) -> bool: ...

    @property
    def role(self) -> str:
        """``"local"`` (this process only), ``"owner"`` (shared, served from
        here) or ``"client"`` (shared, served by another process)."""

    @property
    def address(self) -> str | None:
        """Where a shared queue's owner listens, in the owner; else ``None``."""

    @property
    def forked(self) -> bool:
        """True in a ``fork()`` child of the process that opened it."""

    def check_not_forked(self) -> None:
        """Raises ``ringq.QueueForked`` in such a child."""

    def publish(
        self,
        payload: bytes,
        topic: str | None = None,
        dedup_key: str | None = None,
        delay: float | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        on_duplicate: str = "replace",
        expected_version: int | None = None,
        block: bool = True,
        timeout: float | None = None,
        *,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> str:
        """``priority`` 0..=9 (higher first within a topic; ``None`` is 0);
        ``ordering_key``: one message of the key in flight at a time, in
        publish order; ``dedup_window`` (seconds, with ``dedup_key``): the
        key keeps answering with this message's id that long after its ack."""

    def publish_many(
        self,
        payloads: Iterable[bytes | OutgoingMessage],
        topic: str | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> list[str]:
        """All or none; ``bytes`` items go to ``topic``."""

    def checkout(
        self,
        topic: str = "default",
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float | None = None,
        *,
        share: int = 1,
        since: int | None = None,
    ) -> list[Delivery]:
        """At most ``ceil(ready / share)``; with ``since`` (from
        ``interrupts``), an ``interrupt`` after it stops the wait."""

    def interrupts(self, topic: str) -> int: ...

    def interrupt(self, topic: str) -> None:
        """Wakes every checkout waiting on ``topic`` (sticky, see ``checkout``)."""

    def ack(
        self,
        deliveries: Delivery | Iterable[Delivery],
        publish: Sequence[OutgoingMessage] | None = None,
    ) -> None:
        """Removes them; ``publish`` is committed atomically with the ack."""

    def release(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """Gives them back unstarted: first in their topic, delivery not counted."""

    def nack(
        self,
        delivery: Delivery,
        delay: float | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        traceback: str | None = None,
        handler: str | None = None,
        dead_letter_reason: str | None = None,
    ) -> None: ...

    def extend(self, delivery: Delivery, seconds: float) -> float: ...

    def is_superseded(self, delivery: Delivery) -> bool: ...

    def cancel(self, id: str) -> str:
        """Removes message ``id`` for good; ``"cancelled"`` (it was ready or
        delayed), ``"cancelled_in_flight"`` (its holder's ack, nack, extend
        and release are then ``LeaseLost``; it is neither retried nor
        dead-lettered) or ``"not_found"``. Durable as a publish is."""
        ...

    def set_topic_policy(
        self, topic: str, max_attempts: int | None = None, handler: str | None = None
    ) -> None:
        """What ``topic``'s handler asks (``q.start()`` sets it): its
        ``max_attempts`` for nacks and lease expiries, and its name on the
        dead letters the backend makes; both ``None`` clear it. Kept by the
        backend (a directory's ``POLICIES`` file, a Redis hash) until changed:
        after a reopen, the messages left in flight are judged by it."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def topic_stats(self) -> dict[str, dict[str, int]]: ...

    def histograms(self) -> dict[str, dict[str, Any]]: ...

    def snapshot(self) -> int: ...

    def dlq_list(
        self, topic: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]: ...

    def dlq_get(self, id: str) -> DeadLetter: ...

    def dlq_replay(self, ids: list[str] | None = None) -> int: ...

    def dlq_purge(self, ids: list[str] | None = None) -> int: ...

    def close(self) -> None: ...

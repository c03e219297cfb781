"""Type stubs for the Rust engine (``ringq._core``), written by hand.

The engine stores bytes; encoding Python objects is the SDK's job. Every call
that can block (waiting for a message, for capacity, or for fsync) releases
the GIL while it waits. Errors are the classes of ``ringq.errors``.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self, final

__version__: str
FORMAT_VERSION: int

__all__ = [
    "FORMAT_VERSION",
    "DeadLetter",
    "Delivery",
    "Engine",
    "OutgoingMessage",
    "__version__",
    "_default_options",
    "dead_letters",
    "inspect",
    "peek",
    "repair",
    "untrack_deliveries",
]

@final
class Delivery:
    """A message checked out under a lease."""

    def __new__(
        cls,
        id: str,
        topic: str,
        payload: bytes,
        *,
        attempt: int = 1,
        version: int = 1,
        dedup_key: str | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        enqueued_at: float = 0.0,
        lease_deadline: float = 0.0,
        lease_token: int = 0,
        queue_id: str | None = None,
        priority: int | None = None,
        ordering_key: str | None = None,
    ) -> Self: ...
    @property
    def id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def ordering_key(self) -> str | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def attempt(self) -> int: ...
    @property
    def dedup_key(self) -> str | None: ...
    @property
    def version(self) -> int: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def causation_id(self) -> str | None: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def enqueued_at(self) -> float: ...
    @property
    def lease_deadline(self) -> float: ...
    @property
    def lease_token(self) -> int: ...
    @property
    def queue_id(self) -> str:
        """The instance id of the queue that delivered it."""

@final
class DeadLetter:
    """A message that left the queue for the dead-letter ring, and why."""

    def __new__(
        cls,
        message: Delivery,
        reason: str,
        *,
        error_type: str | None = None,
        error_message: str | None = None,
        traceback: str | None = None,
        handler: str | None = None,
        first_failed_at: float | None = None,
        dead_lettered_at: float = 0.0,
    ) -> Self: ...
    @property
    def id(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def message(self) -> Delivery: ...
    @property
    def reason(self) -> str: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def traceback(self) -> str | None: ...
    @property
    def handler(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def first_failed_at(self) -> float | None: ...
    @property
    def dead_lettered_at(self) -> float: ...

@final
class OutgoingMessage:
    """A message to publish, already encoded (``publish_many`` items, a
    handler's staged ``ctx.publish``)."""

    def __new__(
        cls,
        topic: str,
        payload: bytes,
        *,
        dedup_key: str | None = None,
        delay: float | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> Self: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def dedup_key(self) -> str | None: ...
    @property
    def delay(self) -> float | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def ordering_key(self) -> str | None: ...
    @property
    def dedup_window(self) -> float | None: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def causation_id(self) -> str | None: ...

@final
class Engine:
    """A backend (``ringq.backend.Backend``): the engine in this process,
    or with ``shared=True`` a directory shared by processes (owner or client)."""

    def __new__(
        cls,
        path: str,
        *,
        capacity: int | None = None,
        durability: str = "batch",
        fsync_interval: float | None = None,
        max_attempts: int | None = None,
        segment_size: int | None = None,
        snapshot_every: int | None = None,
        snapshot_interval: float | None = None,
        max_payload: int | None = None,
        max_key: int | None = None,
        max_headers: int | None = None,
        dlq_capacity: int | None = None,
        lease: float | None = None,
        shared: bool = False,
        recycle_segments: bool = True,
        _manual_clock: bool | None = None,
    ) -> Self:
        """``None`` keeps the engine's default (see the README's options table).

        ``_manual_clock=True`` is for tests: the engine's clock (enqueue
        times, lease deadlines, delays, dead-letter times) stands at the
        time of opening until ``_advance_clock`` moves it. A call's own
        ``timeout`` still counts real time."""
    @property
    def path(self) -> str: ...
    @property
    def lease(self) -> float:
        """The default lease of ``checkout``, in seconds."""
    @property
    def closed(self) -> bool: ...
    @property
    def role(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def forked(self) -> bool:
        """True in a ``fork()`` child: the queue belongs to the parent."""
    @property
    def instance_id(self) -> str: ...
    def check_not_forked(self) -> None:
        """Raises ``QueueForked`` in a ``fork()`` child of the process that opened it."""
    @property
    def durability(self) -> str: ...
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
    ) -> str: ...
    def _fast_publishers(
        self, publish: Callable[..., str], publish_many: Callable[..., list[str]]
    ) -> tuple[Callable[..., str], Callable[..., list[str]]]: ...
    def publish_many(
        self,
        payloads: Iterable[bytes | OutgoingMessage],
        topic: str | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> list[str]: ...
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
        """``share``: take at most ``ceil(ready / share)``; ``since``: do not
        wait if ``interrupt(topic)`` was called after ``interrupts(topic)``
        returned this value."""
    def interrupts(self, topic: str) -> int: ...
    def release(self, deliveries: Delivery | Iterable[Delivery]) -> None: ...
    def ack(
        self,
        deliveries: Delivery | Iterable[Delivery],
        publish: Sequence[OutgoingMessage] | None = None,
    ) -> None: ...
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
    def interrupt(self, topic: str) -> None: ...
    def set_topic_policy(
        self, topic: str, max_attempts: int | None = None, handler: str | None = None
    ) -> None: ...
    def is_superseded(self, delivery: Delivery) -> bool: ...
    def cancel(self, id: str) -> str: ...
    def stats(self) -> dict[str, Any]: ...
    def topic_stats(self) -> dict[str, dict[str, int]]:
        """Per topic: ready, in_flight, delayed, dead_lettered (since open)."""
    def histograms(self) -> dict[str, dict[str, Any]]: ...
    def snapshot(self) -> int: ...
    def dlq_list(
        self, topic: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]: ...
    def dlq_get(self, id: str) -> DeadLetter: ...
    def dlq_replay(self, ids: list[str] | None = None) -> int: ...
    def dlq_purge(self, ids: list[str] | None = None) -> int: ...
    def close(self) -> None: ...
    def _inject_fault(self, kind: str, errno: int, count: int) -> None: ...
    def _hold_lock(self, seconds: float) -> None:
        """Test hook: hold the engine's lock (GIL released)."""
    def _advance_clock(self, seconds: float) -> float:
        """Test hook (``_manual_clock=True``): move the clock ``seconds``
        forward and, before returning, expire the leases and release the
        delays that fell due meanwhile, in time order, as the timer thread
        would have (waking waiting checkouts). Returns the clock's new time
        (epoch seconds). ``ValueError`` with the wall clock."""

def untrack_deliveries(items: list[Delivery]) -> None:
    """Takes each ``Delivery`` of ``items`` whose payload is exact ``bytes``
    off the cyclic garbage collector (it can be part of no cycle), as
    ``Engine.checkout`` does with its own; other items are left alone."""

def _default_options() -> dict[str, Any]:
    """What ``Engine``'s options left out (or ``None``) are: the engine's
    defaults, by option name (for the test that compares them with
    ``ringq.config.QUEUE_OPTIONS``)."""

def inspect(path: str) -> dict[str, Any]:
    """Read a queue directory without taking its lock or changing it.

    Keys: path, owner_pid, epoch, instance_id, slot_limit, snapshot_path, snapshot_lsn,
    last_lsn, records_replayed, segments, torn_tail_bytes, torn_tail_at,
    topics (list of {name, ready, in_flight, delayed}), ready, in_flight,
    delayed, dead, dedup_keys, dropped_records, seconds. Raises ``CorruptionError`` naming the
    damaged file and offset.
    """

def peek(path: str, topic: str, limit: int = 10) -> list[dict[str, Any]]:
    """Up to ``limit`` messages of ``topic``, read-only: ready ones in
    delivery order, then those waiting behind their ordering key, then
    delayed and in-flight ones. Keys: id, topic, state, attempt, version,
    dedup_key, priority, ordering_key, enqueued_at, payload."""

def dead_letters(path: str, limit: int | None = None) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first, read-only."""

def repair(path: str) -> dict[str, Any]:
    """Accept damage recovery refuses to open silently, and say what it was
    (``ringq repair``): keys changes (list of str), last_lsn, instance_id."""

"""``ringq.Queue``: the low-level API over the Rust engine.

``Queue`` owns one ``ringq._core.Engine`` (one queue directory) and adds what
belongs on the Python side of the boundary: encoding objects to bytes, the
default lease, and turning exceptions into dead-letter error fields. Every
method is a thin call into the engine; the hot ones (``publish`` of bytes,
``checkout``, ``ack``) do no other work.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ringq._core import ConfigError, Delivery, Engine
from ringq.codecs import DEFAULT_TOPIC, encode
from ringq.dlq import DeadLetterQueue

if TYPE_CHECKING:
    from ringq._core import PublishItem

__all__ = ["Message", "Queue"]

Durability = Literal["always", "batch", "os"]
OnDuplicate = Literal["replace", "keep"]


@dataclass(frozen=True, slots=True)
class Message:
    """One item of ``Queue.publish_many`` that carries more than a payload."""

    payload: object
    topic: str | None = None
    dedup_key: str | None = None
    delay: float | None = None
    headers: dict[str, str] | None = None
    correlation_id: str | None = None
    causation_id: str | None = None


class Queue:
    """A durable queue stored in one directory, owned by this process.

    ``capacity`` bounds the number of live messages; ``durability`` is
    ``"always"`` (publish/ack return after fsync), ``"batch"`` (fsync at least
    every ``fsync_interval`` seconds) or ``"os"``. In every mode a crash of the
    process loses nothing whose call returned. ``lease`` is the default
    checkout lease in seconds. The remaining options are passed to the engine
    unchanged; ``None`` keeps the engine's default. Invalid options raise
    ``ringq.ConfigError``.
    """

    __slots__ = ("_dlq", "_engine", "_lease")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        capacity: int = 100_000,
        durability: Durability = "batch",
        fsync_interval: float = 0.05,
        max_attempts: int = 5,
        lease: float = 30.0,
        segment_size: int | None = None,
        snapshot_every: int | None = None,
        snapshot_interval: float | None = None,
        max_payload: int | None = None,
        max_key: int | None = None,
        max_headers: int | None = None,
        dlq_capacity: int | None = None,
    ) -> None:
        if not lease > 0:  # also rejects NaN
            raise ConfigError(f"lease must be > 0 seconds, got {lease!r}")
        optional = {
            "segment_size": segment_size,
            "snapshot_every": snapshot_every,
            "snapshot_interval": snapshot_interval,
            "max_payload": max_payload,
            "max_key": max_key,
            "max_headers": max_headers,
            "dlq_capacity": dlq_capacity,
        }
        options: dict[str, Any] = {k: v for k, v in optional.items() if v is not None}
        self._engine = Engine(
            os.fspath(path),
            capacity=capacity,
            durability=durability,
            fsync_interval=fsync_interval,
            max_attempts=max_attempts,
            **options,
        )
        self._lease = float(lease)
        self._dlq = DeadLetterQueue(self._engine)

    # -- publishing ---------------------------------------------------------

    def publish(
        self,
        payload: object,
        topic: str | None = None,
        *,
        dedup_key: str | None = None,
        delay: float | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        on_duplicate: OnDuplicate = "replace",
        expected_version: int | None = None,
        block: bool = True,
        timeout: float | None = None,
    ) -> str:
        """Publish one message and return its id.

        ``bytes`` are stored as given, ``str`` as UTF-8, other objects as
        msgspec JSON on the topic named after their type (unless ``topic`` is
        given). ``dedup_key`` replaces a live message with the same key in
        place (or keeps it, with ``on_duplicate="keep"``); the returned id is
        the message now carrying the key's payload. A full queue blocks
        (``timeout`` bounds the wait) or, with ``block=False``, raises
        ``QueueFull``.
        """
        if type(payload) is bytes:
            # The hot path: nothing but the engine call.
            return self._engine.publish(
                DEFAULT_TOPIC if topic is None else topic,
                payload,
                dedup_key,
                delay,
                headers,
                correlation_id,
                causation_id,
                on_duplicate,
                expected_version,
                block,
                timeout,
            )
        default_topic, data = encode(payload)
        return self._engine.publish(
            default_topic if topic is None else topic,
            data,
            dedup_key,
            delay,
            headers,
            correlation_id,
            causation_id,
            on_duplicate,
            expected_version,
            block,
            timeout,
        )

    def publish_many(
        self,
        payloads: Iterable[object],
        topic: str | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> list[str]:
        """Publish several messages atomically (all or none) in one engine call.

        Items are payloads (as for ``publish``) or ``ringq.Message`` for
        per-message options. Returns the ids in item order.
        """
        default_topic = DEFAULT_TOPIC if topic is None else topic
        if type(payloads) is list and all(type(p) is bytes for p in payloads):
            # Fast path: plain bytes to one topic cross the boundary as-is.
            return self._engine.publish_batch(default_topic, payloads, block, timeout)
        items: list[PublishItem] = [
            (default_topic, p, None, None, None, None, None)
            if type(p) is bytes
            else _publish_item(p, topic)
            for p in payloads
        ]
        return self._engine.publish_many(items, block, timeout)

    # -- consuming ----------------------------------------------------------

    def checkout(
        self,
        topic: str = DEFAULT_TOPIC,
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float | None = None,
    ) -> list[Delivery]:
        """Take up to ``max_messages`` ready messages of ``topic`` under a lease.

        Waits for the first message up to ``timeout`` seconds (``None``: no
        limit, ``0``: never wait) and returns ``[]`` if none came. ``lease``
        defaults to the queue's ``lease``.
        """
        return self._engine.checkout(
            topic, max_messages, self._lease if lease is None else lease, timeout
        )

    def ack(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """Remove delivered messages for good.

        With several deliveries, the valid ones are acked and ``LeaseLost``
        lists the stale ones.
        """
        if type(deliveries) is not Delivery and type(deliveries) is not list:
            deliveries = list(deliveries)
        self._engine.ack(deliveries)

    def nack(
        self,
        delivery: Delivery,
        delay: float | None = None,
        error: str | BaseException | None = None,
    ) -> None:
        """Give a delivery back: retried after ``delay``, or dead-lettered when
        its attempts are exhausted (or dropped if it was superseded).

        ``error`` is recorded on the dead letter: a message string, or an
        exception (its type name, message and formatted traceback).
        """
        error_type, error_message, tb = describe_error(error)
        self._engine.nack(delivery, delay, error_type, error_message, tb)

    def extend(self, delivery: Delivery, seconds: float) -> float:
        """Push the lease deadline ``seconds`` from now; returns it (epoch seconds)."""
        return self._engine.extend(delivery, seconds)

    # -- administration -----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts and counters (``ready``, ``in_flight``, ``delayed``, ``dead``, ...)."""
        return self._engine.stats()

    def snapshot(self) -> int:
        """Write a snapshot now; returns the LSN it covers."""
        return self._engine.snapshot()

    @property
    def dlq(self) -> DeadLetterQueue:
        """The dead-letter queue: list, get, replay and purge dead letters."""
        return self._dlq

    @property
    def path(self) -> str:
        return self._engine.path

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def close(self) -> None:
        """Snapshot, release the directory lock and stop the engine's threads."""
        self._engine.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ringq.Queue {self.path!r} {state}>"


def _publish_item(obj: object, topic: str | None) -> PublishItem:
    if isinstance(obj, Message):
        default_topic, data = encode(obj.payload)
        if obj.topic is not None:
            default_topic = obj.topic
        elif topic is not None:
            default_topic = topic
        return (
            default_topic,
            data,
            obj.dedup_key,
            obj.delay,
            obj.headers,
            obj.correlation_id,
            obj.causation_id,
        )
    default_topic, data = encode(obj)
    return (default_topic if topic is None else topic, data, None, None, None, None, None)


def describe_error(
    error: str | BaseException | None,
) -> tuple[str | None, str | None, str | None]:
    """``(error_type, error_message, traceback)`` for a dead letter."""
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

"""``ringq.Queue``: the low-level API over the Rust engine.

``Queue`` owns one ``ringq._core.Engine`` (one queue directory) and adds what
belongs on the Python side of the boundary: encoding objects to bytes and
turning exceptions into dead-letter error fields.

The hot methods (``publish``, ``publish_many``, ``checkout``, ``ack``,
``extend``) are implemented by the engine with exactly the signatures and
semantics documented here. Each ``Queue`` binds the engine's methods over its
own (instance attributes), so ``q.publish(...)`` goes from the caller straight
into Rust without a Python frame in between; encoding non-``bytes`` payloads is
the one step that calls back into Python (``_encode`` / ``_publish_item``). The
methods below remain the reference (and what ``help(ringq.Queue)`` shows), and
calling them through the class (``Queue.publish(q, ...)``) does the same thing.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ringq._core import ConfigError, Delivery, Engine
from ringq.admin import Admin
from ringq.codecs import DEFAULT_TOPIC, TYPE_HEADER, encode_message
from ringq.config import Durability, QueueOptions
from ringq.dlq import DeadLetterQueue
from ringq.hosting import HandlerHost
from ringq.server import AdminServer

if TYPE_CHECKING:
    from ringq._core import PublishItem
    from ringq.di import Resolver

__all__ = ["Message", "Queue"]

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


class Queue(HandlerHost):
    """A durable queue stored in one directory, owned by this process.

    ``capacity`` bounds the number of live messages; ``durability`` is
    ``"always"`` (publish/ack return after fsync), ``"batch"`` (fsync at least
    every ``fsync_interval`` seconds) or ``"os"``. In every mode a crash of the
    process loses nothing whose call returned. ``lease`` is the default
    checkout lease in seconds. The remaining options are passed to the engine
    unchanged; ``None`` keeps the engine's default. Invalid options raise
    ``ringq.ConfigError``.

    ``options`` (a ``ringq.QueueOptions``, e.g. from ``QueueOptions.from_env()``)
    gives all of these at once, plus per-handler overrides; pass either
    ``options`` or the keywords, not both. ``resolver`` (``ringq.di``) builds
    class handlers per message; by default a fresh ``ringq.di.Container``.
    Handlers: ``handler``, ``register``, ``start``, ``stop``, ``scale``
    (see ``ringq.hosting``).
    """

    # No __slots__: __init__ shadows the hot methods with instance attributes.
    _engine: Engine
    _dlq: DeadLetterQueue
    _admin: Admin

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
        options: QueueOptions | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        settings = {k: v for k, v in locals().items() if k in _KEYWORD_DEFAULTS}
        if options is not None:
            given = sorted(k for k, v in settings.items() if v != _KEYWORD_DEFAULTS[k])
            if given:
                raise ConfigError(
                    "pass queue options either as keywords or as options=, not both "
                    f"(also given: {', '.join(given)})"
                )
            from_options = options.engine_kwargs()
            unknown = sorted(set(from_options) - set(_KEYWORD_DEFAULTS))
            if unknown:
                raise ConfigError(f"QueueOptions has options Queue does not know: {unknown}")
            settings = {**_KEYWORD_DEFAULTS, **from_options}
        self._init_handlers(options, resolver)
        # The engine checks every option (one message shape, all bad ones
        # at once); None means "the engine's default".
        engine = Engine(os.fspath(path), **settings)
        engine._set_encoder(_encode, _publish_item, type_header=TYPE_HEADER)
        self._engine = engine
        self._dlq = DeadLetterQueue(engine)
        self._admin = Admin(self)
        self._servers: list[AdminServer] = []
        self._bind_engine_methods()

    def _bind_engine_methods(self) -> None:
        """Shadow the hot methods with the engine's bound methods.

        The engine implements ``publish``, ``publish_many``
        (``publish_payloads``), ``checkout``, ``ack`` and ``extend`` with the
        signatures and semantics of the methods below, so binding them here
        only removes a Python frame (about 0.5 us) from every call. mypy is
        told to allow assigning to a method ([method-assign]); it still checks
        that each engine method's type fits the method it replaces.
        """
        cls, e = type(self), self._engine
        if cls.publish is _REFERENCE["publish"]:
            self.publish = e.publish  # type: ignore[method-assign]
        if cls.publish_many is _REFERENCE["publish_many"]:
            self.publish_many = e.publish_payloads  # type: ignore[method-assign]
        if cls.checkout is _REFERENCE["checkout"]:
            self.checkout = e.checkout  # type: ignore[method-assign]
        if cls.ack is _REFERENCE["ack"]:
            self.ack = e.ack  # type: ignore[method-assign]
        if cls.extend is _REFERENCE["extend"]:
            self.extend = e.extend  # type: ignore[method-assign]

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
        given), with their type tag in the ``"ringq-type"`` header (added to a
        copy of ``headers``). Without ``topic``, bytes and str go to
        ``"default"``. ``dedup_key`` replaces a live message with the same key in
        place (or keeps it, with ``on_duplicate="keep"``); the returned id is
        the message now carrying the key's payload. A full queue blocks
        (``timeout`` bounds the wait) or, with ``block=False``, raises
        ``QueueFull``.
        """
        return self._engine.publish(
            payload,
            topic,
            dedup_key=dedup_key,
            delay=delay,
            headers=headers,
            correlation_id=correlation_id,
            causation_id=causation_id,
            on_duplicate=on_duplicate,
            expected_version=expected_version,
            block=block,
            timeout=timeout,
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

        Items are payloads (as for ``publish``; ``topic`` applies to all of
        them) or ``ringq.Message`` for per-message options (its ``topic`` wins).
        Returns the ids in item order.
        """
        return self._engine.publish_payloads(payloads, topic, block=block, timeout=timeout)

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
        return self._engine.checkout(topic, max_messages, lease, timeout)

    def ack(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """Remove delivered messages for good.

        With several deliveries, the valid ones are acked and ``LeaseLost``
        lists the stale ones.
        """
        self._engine.ack(deliveries)

    def release(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """Give deliveries back *unstarted*: each goes to the front of its
        topic and its delivery is not counted (``attempt`` stays as it was).
        For messages a consumer took but will not work on (shutting down,
        took too many); a failed attempt is ``nack``. Stale leases raise
        ``LeaseLost`` (the valid ones are released)."""
        self._engine.release(deliveries)

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
    def admin(self) -> Admin:
        """Administration: stats, scale/pause/resume handlers, snapshot,
        dead letters, drain; every action is logged (``ringq.admin``)."""
        return self._admin

    def serve_admin(
        self, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> AdminServer:
        """Serve ``/metrics``, ``/stats``, ``/dlq`` and admin actions over HTTP
        (see ``ringq.server``); actions need ``token``. Stopped by ``close()``."""
        server = AdminServer(self, host, port, token)
        self._servers.append(server)
        return server

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
        """Stop running handlers (without draining), snapshot, release the
        directory lock and stop the engine's threads. In a ``fork()`` child
        of the process that opened it, only marks this copy closed (the
        queue, its threads and its lock are the parent's)."""
        if self._engine.forked:
            self._engine.close()
            return
        for server in self._servers:
            server.close()
        self._servers.clear()
        self._stop_workers(drain=False)
        self._engine.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving ``with q:`` drains and stops running handlers (without
        draining if the block raised), then closes."""
        try:
            self._stop_workers(drain=exc_type is None)
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ringq.Queue {self.path!r} {state}>"


#: Queue's keyword options and their defaults (checked against ``options=``).
_KEYWORD_DEFAULTS: dict[str, object] = {
    "capacity": 100_000,
    "durability": "batch",
    "fsync_interval": 0.05,
    "max_attempts": 5,
    "lease": 30.0,
    "segment_size": None,
    "snapshot_every": None,
    "snapshot_interval": None,
    "max_payload": None,
    "max_key": None,
    "max_headers": None,
    "dlq_capacity": None,
}

# The Python methods, to tell them from a subclass's overrides (or a test's
# patches on the class), which ``_bind_engine_methods`` leaves alone.
_REFERENCE: dict[str, object] = {
    name: getattr(Queue, name) for name in ("publish", "publish_many", "checkout", "ack", "extend")
}

_encode: Callable[[object], tuple[str, bytes, str | None]] = functools.partial(
    encode_message, codec=None
)
"""``(default_topic, payload, type_tag)`` of a non-``bytes`` payload (the engine's encoder)."""


def _publish_item(obj: object, topic: str | None) -> PublishItem:
    """The engine item of a non-``bytes`` ``publish_many`` item (``Message`` or payload)."""
    if isinstance(obj, Message):
        default_topic, data, tag = encode_message(obj.payload)
        if obj.topic is not None:
            default_topic = obj.topic
        elif topic is not None:
            default_topic = topic
        headers = obj.headers
        if tag is not None:
            headers = {**(headers or {}), TYPE_HEADER: tag}
        return (
            default_topic,
            data,
            obj.dedup_key,
            obj.delay,
            headers,
            obj.correlation_id,
            obj.causation_id,
        )
    default_topic, data, tag = encode_message(obj)
    return (
        default_topic if topic is None else topic,
        data,
        None,
        None,
        None if tag is None else {TYPE_HEADER: tag},
        None,
        None,
    )


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

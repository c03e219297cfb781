"""``QueueCore``: the queue API on top of a ``ringq.backend.Backend``.

It adds what belongs on the Python side of the seam: encoding objects to
bytes (``ringq.codecs``), turning exceptions into dead-letter error fields,
the dead-letter view and the handlers (``ringq.hosting``). ``ringq.Queue``
is this plus the operator tools (``q.admin``, ``q.serve_admin``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, TypeVar, Unpack

from ringq.backend import Backend, Delivery, OutgoingMessage
from ringq.backends import fast_publish, open_backend
from ringq.codecs import DEFAULT_TOPIC
from ringq.codecs.encoding import outgoing_message
from ringq.codecs.envelope import Encrypted
from ringq.codecs.formats import DEFAULT_CODEC, Codec
from ringq.config import QUEUE_DEFAULTS, QUEUE_OPTIONS, Durability, QueueOptions
from ringq.dlq import DeadLetterQueue
from ringq.errors import ConfigError, QueueClosed, describe_error
from ringq.hosting import HandlerHost
from ringq.retry import _Problems

if TYPE_CHECKING:
    from ringq.di import Resolver

__all__ = ["Message", "PublishOptions", "QueueCore"]

T = TypeVar("T")

OnDuplicate = Literal["replace", "keep"]


class PublishOptions(TypedDict, total=False):
    """The keyword options of ``Queue.publish`` (all optional)."""

    dedup_key: str | None
    delay: float | None
    headers: dict[str, str] | None
    correlation_id: str | None
    causation_id: str | None
    on_duplicate: OnDuplicate
    expected_version: int | None
    block: bool
    timeout: float | None
    priority: int | None
    ordering_key: str | None
    dedup_window: float | None


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
    priority: int | None = None
    ordering_key: str | None = None
    dedup_window: float | None = None


#: The queue options and their defaults (``None``: the backend's default),
#: from ``ringq.config.QUEUE_OPTIONS``. ``QueueCore.__init__`` spells them out
#: for type checkers; ``tests/test_options_table.py`` keeps them equal.
KEYWORD_DEFAULTS: Final[Mapping[str, object]] = QUEUE_DEFAULTS


def resolve_settings(options: QueueOptions | None, given: dict[str, object]) -> dict[str, object]:
    """The backend's options: the keywords, or ``options`` (not both).

    The backend checks the keywords, but for the ``bool`` ones
    (``shared``, ``recycle_segments``), checked here: ``shared=1`` would
    otherwise open a queue of this process only."""
    if options is None:
        p = _Problems()
        for option in QUEUE_OPTIONS:
            if option.kind == "bool" and option.name in given:
                option.check(p, given[option.name])
        p.raise_if_any("option")
        return given
    # A bool by type too: recycle_segments=1 is not the default True.
    also = sorted(
        k
        for k, v in given.items()
        if v != KEYWORD_DEFAULTS[k] or isinstance(v, bool) != isinstance(KEYWORD_DEFAULTS[k], bool)
    )
    if also:
        raise ConfigError(
            "pass queue options either as keywords or as options=, not both "
            f"(also given: {', '.join(also)})"
        )
    return {**KEYWORD_DEFAULTS, **options.engine_kwargs()}


def outgoing(
    item: object, topic: str | None, codec: Codec | None = None
) -> bytes | OutgoingMessage:
    """A ``publish_many`` item as the backend takes it: ``bytes`` as is (to
    the call's topic) unless ``codec`` seals them, anything else encoded
    with ``codec`` (a ``Message``'s topic wins)."""
    if type(item) is bytes and not isinstance(codec, Encrypted):
        return item
    if isinstance(item, Message):
        return outgoing_message(
            item.payload,
            item.topic if item.topic is not None else topic,
            headers=item.headers,
            dedup_key=item.dedup_key,
            delay=item.delay,
            correlation_id=item.correlation_id,
            causation_id=item.causation_id,
            priority=item.priority,
            ordering_key=item.ordering_key,
            dedup_window=item.dedup_window,
            codec=codec,
        )
    return outgoing_message(item, topic, codec=codec)


#: The keywords ``Queue.publish`` takes.
PUBLISH_OPTION_NAMES: Final = frozenset(PublishOptions.__annotations__)


def check_publish_call(
    what: str, topic: object, options: Mapping[str, object] | None = None, payloads: object = None
) -> None:
    """Refuses, with a message naming ``what`` (``"Queue.publish"``...), a
    ``topic`` that is not a ``str`` or ``None``, a keyword ``publish`` does
    not take, and ``publish_many`` payloads given as one ``bytes``/``str``
    (iterating them would publish each byte or character as a message)."""
    if topic is not None and not isinstance(topic, str):
        raise TypeError(f"{what}() topic must be a str or None, not {type(topic).__name__}")
    if options and not options.keys() <= PUBLISH_OPTION_NAMES:
        bad = sorted(options.keys() - PUBLISH_OPTION_NAMES)[0]
        raise TypeError(f"{what}() got an unexpected keyword argument {bad!r}")
    if isinstance(payloads, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            f"{what}() takes an iterable of payloads, not one {type(payloads).__name__} "
            "(wrap it in a list, or call publish)"
        )


def _weakly(obj: QueueCore, method: Callable[..., T]) -> Callable[..., T]:
    """``method`` bound to ``obj`` without keeping ``obj`` alive: the
    fast path (``Engine._fast_publishers``), which the queue holds, holds
    its fallbacks, and a strong reference would make the queue and the fast
    path a cycle (a queue dropped without ``close()`` would keep its
    directory locked until the collector ran)."""
    ref = weakref.ref(obj)

    def call(*args: Any, **kwargs: Any) -> T:
        target = ref()
        if target is None:  # pragma: no cover - the engine outlived its queue
            raise QueueClosed("the queue was dropped")
        return method(target, *args, **kwargs)

    call.__doc__ = method.__doc__
    return call


class QueueCore(HandlerHost):
    """A durable queue on a backend (by default the engine in this process,
    in the directory ``path``). See ``ringq.Queue`` for the options."""

    _backend: Backend
    _dlq: DeadLetterQueue
    #: Whether ``publish``/``publish_many`` may take the backend's frameless
    #: path (``ringq.backends.fast_publish``).
    _fast_path = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        # The rows of ringq.config.QUEUE_OPTIONS, spelled out for type checkers
        # and readers (tests/test_options_table.py keeps them equal).
        capacity: int = 100_000,
        durability: Durability = "batch",
        fsync_interval: float = 0.05,
        max_attempts: int = 5,
        lease: float = 30.0,
        segment_size: int | None = None,
        recycle_segments: bool = True,
        snapshot_every: int | None = None,
        snapshot_interval: float | None = None,
        max_payload: int | None = None,
        max_key: int | None = None,
        max_headers: int | None = None,
        dlq_capacity: int | None = None,
        shared: bool = False,
        namespace: str | None = None,
        options: QueueOptions | None = None,
        resolver: Resolver | None = None,
        codec: Codec | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if k in KEYWORD_DEFAULTS}
        settings = resolve_settings(options, given)
        if codec is not None and not isinstance(codec, Codec):
            raise ConfigError(
                f"codec= takes a codec (ringq.codecs.JsonCodec(), MsgpackCodec(), "
                f"PickleCodec(), Encrypted(...)), not {type(codec).__name__}"
            )
        self._codec = DEFAULT_CODEC if codec is None else codec
        #: Every payload is sealed (``Encrypted``): bytes too, so no fast path.
        self._sealed = isinstance(codec, Encrypted)
        if namespace is not None:
            # Where the queue lives in a redis:// target, not a queue option.
            settings["namespace"] = namespace
        self._init_handlers(options, resolver)
        # The backend checks every option (one message shape, all bad ones at once).
        backend = self._open_backend(path, settings)
        self._backend = backend
        self._dlq = DeadLetterQueue(backend)
        cls = type(self)
        if (
            cls._fast_path
            and not self._sealed
            and cls.publish is QueueCore.publish
            and cls.publish_many is QueueCore.publish_many
        ):
            # About a quarter of a plain publish is this class's Python
            # frame; the backend may offer a path without it (same calls,
            # same results). A subclass that overrides either keeps its own.
            fast = fast_publish(
                backend,
                _weakly(self, QueueCore.publish),
                _weakly(self, QueueCore.publish_many),
            )
            if fast is not None:
                self.publish, self.publish_many = fast  # type: ignore[method-assign]

    def _open_backend(self, path: str | os.PathLike[str], settings: dict[str, object]) -> Backend:
        """Opens the store this queue runs on (``ringq.backends.open_backend``).

        A seam for tests, not an option: the contract suite
        (``tests/contract``) overrides it in a subclass to open engines with
        a manual clock (``_core.Engine(..., _manual_clock=True)``). Users
        choose a store by ``path``.
        """
        is_shared = settings.pop("shared", False) is True
        return open_backend(path, shared=is_shared, **settings)

    # -- publishing ---------------------------------------------------------

    def publish(
        self, payload: object, topic: str | None = None, **options: Unpack[PublishOptions]
    ) -> str:
        """Publish one message and return its id.

        ``bytes`` are stored as given, ``str`` as UTF-8, other objects as
        msgspec JSON on the topic named after their type (unless ``topic`` is
        given), with their type tag in the ``"ringq-type"`` header (added to a
        copy of ``headers``). Without ``topic``, bytes and str go to
        ``"default"``. The options (keywords only, ``PublishOptions``):
        ``dedup_key`` replaces a live message with the same key in place (or
        keeps it, with ``on_duplicate="keep"``; ``expected_version`` makes the
        replacement conditional); the returned id is the message now carrying
        the key's payload. ``delay`` (seconds) holds it back; ``headers``,
        ``correlation_id`` and ``causation_id`` travel with it. ``priority``
        (0..=9) delivers it before lower ones of its topic; ``ordering_key``
        keeps one message of the key in flight at a time, in publish order;
        ``dedup_window`` (seconds, with ``dedup_key``) keeps the key answering
        with this message's id for that long after its ack. A full queue
        blocks (``timeout`` bounds the wait) or, with ``block=False``, raises
        ``QueueFull``. A ``ringq.Message`` gives its topic (the ``topic``
        argument only where it has none), its headers (merged over the
        ``headers`` argument: its own win) and its options (a keyword given
        wins).
        """
        # ``**options`` rather than named keyword-only parameters: a call
        # that gives none costs one frame and no default lookups.
        check_publish_call("Queue.publish", topic, options)
        hooked = bool(self._middleware.publish)
        if type(payload) is bytes and not self._sealed and not hooked:
            if options:
                return self._backend.publish(payload, topic, **options)
            return self._backend.publish(payload, topic)
        m = outgoing(payload, topic, self._codec)
        if not isinstance(m, OutgoingMessage):
            if not hooked:
                return self._backend.publish(m, topic, **options)
            m = OutgoingMessage(DEFAULT_TOPIC if topic is None else topic, m)
        merged: dict[str, Any] = {
            "dedup_key": m.dedup_key,
            "delay": m.delay,
            "correlation_id": m.correlation_id,
            "causation_id": m.causation_id,
            "priority": m.priority,
            "ordering_key": m.ordering_key,
            "dedup_window": m.dedup_window,
        }
        merged.update((k, v) for k, v in options.items() if v is not None)
        headers = options.get("headers")
        if m.headers:
            headers = {**(headers or {}), **m.headers}
        merged["headers"] = headers
        if hooked:
            m = self._middleware.before_publish(
                OutgoingMessage(
                    m.topic,
                    m.payload,
                    dedup_key=merged["dedup_key"],
                    delay=merged["delay"],
                    headers=headers,
                    correlation_id=merged["correlation_id"],
                    causation_id=merged["causation_id"],
                    priority=merged["priority"],
                    ordering_key=merged["ordering_key"],
                    dedup_window=merged["dedup_window"],
                )
            )
            merged.update(
                dedup_key=m.dedup_key,
                delay=m.delay,
                headers=m.headers or None,
                correlation_id=m.correlation_id,
                causation_id=m.causation_id,
                priority=m.priority,
                ordering_key=m.ordering_key,
                dedup_window=m.dedup_window,
            )
        return self._backend.publish(m.payload, m.topic, **merged)

    def publish_many(
        self,
        payloads: Iterable[object],
        topic: str | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> list[str]:
        """Publish several messages atomically (all or none) in one backend call.

        Items are payloads (as for ``publish``; ``topic`` applies to all of
        them) or ``ringq.Message`` for per-message options (its ``topic`` wins).
        Returns the ids in item order.
        """
        check_publish_call("Queue.publish_many", topic, payloads=payloads)
        if self._middleware.publish:
            mw, default = self._middleware, DEFAULT_TOPIC if topic is None else topic
            items: list[bytes | OutgoingMessage] = []
            for p in payloads:
                m = outgoing(p, topic, self._codec)
                if not isinstance(m, OutgoingMessage):
                    m = OutgoingMessage(default, m)
                items.append(mw.before_publish(m))
        elif self._sealed:
            items = [outgoing(p, topic, self._codec) for p in payloads]
        else:
            items = [p if type(p) is bytes else outgoing(p, topic, self._codec) for p in payloads]
        return self._backend.publish_many(items, topic, block=block, timeout=timeout)

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
        return self._backend.checkout(topic, max_messages, lease, timeout)

    def ack(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """Remove delivered messages for good.

        With several deliveries, the valid ones are acked and ``LeaseLost``
        lists the stale ones.
        """
        self._backend.ack(deliveries)

    def release(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """Give deliveries back *unstarted*: each goes to the front of its
        topic and its delivery is not counted (``attempt`` stays as it was).
        For messages a consumer took but will not work on (shutting down,
        took too many); a failed attempt is ``nack``. Stale leases raise
        ``LeaseLost`` (the valid ones are released)."""
        self._backend.release(deliveries)

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
        self._backend.nack(delivery, delay, error_type, error_message, tb)

    def extend(self, delivery: Delivery, seconds: float) -> float:
        """Push the lease deadline ``seconds`` from now; returns it (epoch seconds)."""
        return self._backend.extend(delivery, seconds)

    def add_middleware(self, middleware: object) -> None:
        """Add hooks around publishing and handling (``ringq.middleware``:
        ``before_publish``, ``before_handle``, ``after_handle``,
        ``on_dead_letter``; any of them, plain or ``async def``). Hooks run in
        the order middlewares were added (``after_handle`` in reverse); one
        that raises fails the publish or the attempt, never loses a message."""
        self._middleware.add(middleware)
        if self._middleware.publish:
            # The frameless publish path has no room for hooks.
            vars(self).pop("publish", None)
            vars(self).pop("publish_many", None)

    def cancel(self, message_id: str) -> str:
        """Remove message ``message_id`` for good, durably (as a publish is),
        and say what it was:

        - ``"cancelled"``: it was ready or delayed; it will not be delivered;
        - ``"cancelled_in_flight"``: a consumer held it; that attempt's ack,
          nack, heartbeat and release are refused (``LeaseLost``), it is
          neither retried nor dead-lettered, and a handler running it in
          this process sees ``ctx.cancelled`` set (in another process, at its
          next ``ctx.heartbeat()``, which raises, or when its ack is refused);
          what it staged with ``ctx.publish`` is not published;
        - ``"not_found"``: no live message has the id (never published,
          already acked or removed, or dead-lettered: see ``q.dlq.purge``).

        A dedup key the message held is free again.
        """
        outcome = self._backend.cancel(message_id)
        if outcome == "cancelled_in_flight":
            self._cancelled_in_flight(message_id)
        return outcome

    # -- administration -----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts and counters (``ready``, ``in_flight``, ``delayed``, ``dead``, ...)."""
        return self._backend.stats()

    def topic_stats(self) -> dict[str, dict[str, int]]:
        """Per topic: ``ready``, ``in_flight``, ``delayed``, ``dead_lettered``."""
        return self._backend.topic_stats()

    def snapshot(self) -> int:
        """Write a snapshot now; returns the LSN it covers."""
        return self._backend.snapshot()

    @property
    def dlq(self) -> DeadLetterQueue:
        """The dead-letter queue: list, get, replay and purge dead letters."""
        return self._dlq

    @property
    def backend(self) -> Backend:
        """The store behind this queue (``ringq.backend.Backend``)."""
        return self._backend

    @property
    def path(self) -> str:
        return self._backend.path

    @property
    def closed(self) -> bool:
        return self._backend.closed

    @property
    def role(self) -> str:
        """``"local"``, or for a shared queue ``"owner"`` / ``"client"``."""
        return self._backend.role

    def close(self) -> None:
        """Stop running handlers (without draining), snapshot, release the
        directory lock and stop the engine's threads. In a ``fork()`` child
        of the process that opened it, only marks this copy closed (the
        queue, its threads and its lock are the parent's)."""
        if not self._backend.forked:
            self._stop_workers(drain=False, closing=True)
        self._backend.close()

    def __enter__(self) -> QueueCore:
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
            self._stop_workers(drain=exc_type is None, closing=True)
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ringq.{type(self).__name__} {self.path!r} {state}>"

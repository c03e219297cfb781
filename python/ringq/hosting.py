"""The handler half of ``ringq.Queue``: register handlers, start, stop, scale.

``Queue`` inherits these methods; see ``ringq.handlers`` for declaring
handlers and ``ringq.dispatch`` for how they run.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ringq.codecs.formats import DEFAULT_CODEC, Codec
from ringq.dispatch import Dispatcher
from ringq.errors import ConfigError
from ringq.handlers import (
    Handler,
    HandlerRegistry,
    HandlerSpec,
    build_spec,
    message_type_of_class,
    message_type_of_function,
)
from ringq.middleware import Middlewares
from ringq.ratelimit import RateLimit, RateLimits
from ringq.retry import check_seconds

if TYPE_CHECKING:
    from ringq.backend import Backend
    from ringq.config import QueueOptions
    from ringq.di.protocol import Resolver
    from ringq.retry import Retry

__all__ = ["HandlerHost"]

log = logging.getLogger("ringq")

F = TypeVar("F", bound=Callable[..., object])
H = TypeVar("H", bound=type[Handler[Any]])


class HandlerHost:
    """Mixin of ``ringq.Queue``: handler registration and the dispatcher."""

    _backend: Backend
    _config: QueueOptions | None
    _resolver: Resolver | None
    _registry: HandlerRegistry
    _dispatcher: Dispatcher | None
    _timing: bool
    #: Rate limits set by topic (``set_rate_limit``) and the handlers' buckets.
    _rate_limits: RateLimits
    #: The queue's codec: what it publishes with, and what its handlers
    #: decode with unless they name their own.
    _codec: Codec = DEFAULT_CODEC
    #: The queue's middlewares (``add_middleware``; ``ringq.middleware``).
    _middleware: Middlewares

    def _init_handlers(self, config: QueueOptions | None, resolver: Resolver | None) -> None:
        self._config = config
        self._resolver = resolver
        self._registry = HandlerRegistry()
        self._dispatcher = None
        self._timing = False
        self._rate_limits = RateLimits()
        if not hasattr(self, "_middleware"):  # a side of an AsyncQueue shares its queue's
            self._middleware = Middlewares()

    # Classes (and unions of them) name the message type; any other callable
    # is a bare ``@q.handler`` on the function itself.
    @overload
    def handler(
        self,
        message_type: type[Any] | types.UnionType | None = None,
        /,
        *,
        name: str | None = None,
        topic: str | None = None,
        timeout: float | None = None,
        max_parallelism: int | None = None,
        prefetch: int | None = None,
        retry: Retry | None = None,
        dead_letter_on: tuple[type[BaseException], ...] | None = None,
        processes: int | None = None,
        codec: Codec | None = None,
        rate_limit: str | RateLimit | None = None,
    ) -> Callable[[F], F]: ...

    @overload
    def handler(self, message_type: F, /) -> F: ...

    def handler(
        self,
        message_type: Any = None,
        /,
        *,
        name: str | None = None,
        topic: str | None = None,
        timeout: float | None = None,
        max_parallelism: int | None = None,
        prefetch: int | None = None,
        retry: Retry | None = None,
        dead_letter_on: tuple[type[BaseException], ...] | None = None,
        processes: int | None = None,
        codec: Codec | None = None,
        rate_limit: str | RateLimit | None = None,
    ) -> Any:
        """Register a function as the handler of ``message_type``'s topic.

        ``@q.handler(Order, timeout=30.0, max_parallelism=4, retry=...,
        dead_letter_on=(ValueError,))`` on ``def f(msg: Order, ctx)``; the
        type may come from the first parameter's annotation instead
        (``@q.handler()`` or bare ``@q.handler``). ``timeout`` is the lease
        in seconds. ``processes=N`` runs a module-level function in N worker
        processes (CPU-bound handlers; ``ringq.dispatch.processes``).
        ``codec`` is what it decodes messages with (default: the queue's
        ``codec``; ``ctx.publish`` encodes with the queue's).
        ``rate_limit="100/s"`` starts at most that many messages, all its
        workers (and processes of a shared queue or Redis namespace)
        together (``ringq.ratelimit``). Returns the function unchanged.
        """
        if callable(message_type) and not isinstance(message_type, type):
            # Bare @q.handler (on a function, method, partial or callable
            # object; message types are classes): the type comes from the
            # first parameter's annotation.
            func = message_type
            self._add(func, None, None, None, {}, None)
            return func
        declared = {
            "timeout": timeout,
            "max_parallelism": max_parallelism,
            "prefetch": prefetch,
            "retry": retry,
            "dead_letter_on": dead_letter_on,
            "processes": processes,
            "rate_limit": rate_limit,
        }

        def register(func: F) -> F:
            self._add(func, message_type, name, topic, declared, codec)
            return func

        return register

    def _add(
        self,
        func: Callable[..., object],
        message_type: Any,
        name: str | None,
        topic: str | None,
        declared: dict[str, Any],
        codec: Codec | None,
    ) -> None:
        if not callable(func):
            raise ConfigError(f"a handler must be callable, got {func!r}")
        name = name or getattr(func, "__name__", None)
        if not name:
            raise ConfigError(f"handler {func!r} has no __name__: pass name=")
        tp = message_type if message_type is not None else message_type_of_function(func)
        spec = build_spec(
            name=name,
            message_type=tp,
            topic=topic,
            func=func,
            cls=None,
            declared=declared,
            config=self._config,
            codec=codec,
            publish_codec=self._codec,
            middleware=self._middleware,
            limits=self._rate_limits,
        )
        self._install(spec)

    def _install(self, spec: HandlerSpec) -> None:
        """Registers ``spec``; its workers start now if handlers are running."""
        self._registry.add(spec)
        if self._dispatcher is not None and self._dispatcher.running:
            self._dispatcher.add(spec)

    def register(self, cls: H, *, name: str | None = None) -> H:
        """Register a ``ringq.Handler[M]`` subclass; built per message by the
        queue's resolver. Its options are its class attributes."""
        if not (isinstance(cls, type) and issubclass(cls, Handler)):
            raise ConfigError(f"register() takes a ringq.Handler subclass, got {cls!r}")
        declared = {
            "timeout": cls.timeout,
            "max_parallelism": cls.max_parallelism,
            "prefetch": cls.prefetch,
            "retry": cls.retry,
            "dead_letter_on": cls.dead_letter_on,
            # Refused for classes (built by the resolver here): said clearly.
            "processes": getattr(cls, "processes", None),
            "rate_limit": cls.rate_limit,
        }
        spec = build_spec(
            name=name or cls.name or cls.__name__,
            message_type=message_type_of_class(cls),
            topic=cls.topic,
            func=None,
            cls=cls,
            declared=declared,
            config=self._config,
            codec=cls.codec,
            publish_codec=self._codec,
            middleware=self._middleware,
            limits=self._rate_limits,
        )
        self._install(spec)
        return cls

    def set_rate_limit(self, topic: str, rate_limit: str | RateLimit | None) -> None:
        """The rate limit of ``topic``'s handler from now on, over the one it
        declares (code or configuration): ``"100/s"``, ``"5/m"``,
        ``"1/100ms"``, ``"100/s, burst=10"``; ``"none"`` for no limit;
        ``None`` for the handler's own limit again. It applies to a handler
        registered later too, and to running workers within
        ``ringq.ratelimit.MAX_WAIT`` seconds. Per queue object: other
        processes set their own."""
        self._rate_limits.set(topic, rate_limit)

    def rate_limit(self, topic: str) -> RateLimit | None:
        """The rate limit that applies to ``topic``'s handler (``None``: none)."""
        spec = self._registry.for_topic(topic)
        return self._rate_limits.limit(topic, None if spec is None else spec.options.rate_limit)

    def _cancelled_in_flight(self, message_id: str) -> None:
        """``cancel`` removed a message in flight: a handler running it here
        sees ``ctx.cancelled`` set."""
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.cancelled(message_id)

    @property
    def handlers(self) -> HandlerRegistry:
        """The registered handlers (by name: ``q.handlers.get("on_order")``)."""
        return self._registry

    def start(self) -> None:
        """Start worker threads for every registered handler (and for those
        registered later); ``async def`` handlers run as coroutines on an
        event loop in a thread of its own (``ringq.dispatch.aio``). Calling
        it again while running does nothing."""
        self._start(None)

    def _start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """``start``, with the async handlers on ``loop`` if given (``AsyncQueue``)."""
        self._backend.check_not_forked()
        if self._dispatcher is not None and self._dispatcher.running:
            return
        if len(self._registry) == 0:
            log.warning("start(): no handlers are registered yet")
        if self._config is not None:
            # A misspelt RINGQ_HANDLER__ON_ORDR__TIMEOUT is an error, not silence.
            self._config.check_handler_names(spec.name for spec in self._registry)
        self._dispatcher = Dispatcher(
            self._backend, self._registry, self._resolver, self._timing, loop
        )
        self._dispatcher.start()

    def stop(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop the workers, then take a snapshot. ``drain=True`` handles
        every message ready now first; ``drain=False`` finishes only the
        messages being handled. Returns False if ``timeout`` ran out first
        (those threads finish on their own; their messages come back when
        their leases run out)."""
        check_seconds("timeout", timeout, optional=True)
        self._backend.check_not_forked()
        stopped = self._stop_workers(drain, timeout)
        if not self._backend.closed:
            self._backend.snapshot()
        return stopped

    def _stop_workers(
        self, drain: bool, timeout: float | None = None, closing: bool = False
    ) -> bool:
        """``stop`` without the snapshot (``close`` writes its own; it passes
        ``closing``). In a ``fork()`` child there is nothing to stop: the
        workers are the parent's."""
        if self._dispatcher is None or self._backend.forked:
            return True
        return self._dispatcher.stop(drain, timeout, closing=closing)

    @property
    def running(self) -> bool:
        """Whether handlers are running (between ``start`` and ``stop``; never
        in a ``fork()`` child, which has none of the parent's threads)."""
        d = self._dispatcher
        return d is not None and d.running and not self._backend.forked

    def scale(self, name: str, workers: int) -> None:
        """Run ``workers`` worker threads for handler ``name`` from now on
        (0 pauses it; busy workers finish their message first)."""
        self._backend.check_not_forked()
        if self._dispatcher is None or not self._dispatcher.running:
            raise ConfigError("scale(): the queue's handlers are not running; call start()")
        self._dispatcher.scale(name, workers)

    def _enable_timing(self) -> None:
        """Have handlers fill the queue-wait and duration histograms (what
        ``ringq.metrics.register`` asks for)."""
        self._timing = True
        if self._dispatcher is not None:
            self._dispatcher.timing = True

    def handler_stats(self) -> dict[str, dict[str, Any]]:
        """Per handler: workers, active, processed, succeeded, failed,
        retried, dead_lettered, undecodable, late_acks, abandoned threads,
        ``rate_limit`` (the one that applies, as text, or ``None``) and
        ``throttled`` (how often a worker waited for a token)."""
        self._backend.check_not_forked()
        return {} if self._dispatcher is None else self._dispatcher.stats()

"""Handlers: what to do with each message type.

Two ways to declare one, both registered on a ``ringq.Queue``:

- a function, with the decorator::

      @q.handler(OrderPlaced, timeout=30.0, max_parallelism=4,
                 retry=ringq.Retry(max_attempts=5), dead_letter_on=(ValueError,))
      def on_order(msg: OrderPlaced, ctx: ringq.Context) -> None: ...

  (the message type may be left out when the first parameter is annotated;
  a function taking one parameter is called without the context);

- a class, built per message by the queue's dependency resolver
  (``ringq.di``), its options as class attributes::

      class OnOrder(ringq.Handler[OrderPlaced]):
          timeout = 10.0
          def __init__(self, repo: OrderRepo) -> None: self.repo = repo
          def handle(self, msg: OrderPlaced, ctx: ringq.Context) -> None: ...

      q.register(OnOrder)

A handler consumes exactly one topic: its message type's topic
(``ringq.codecs.topic_for``, ``@ringq.message("...")``) or ``topic=``. A
union of types sharing one topic is fine (the type tag picks the class);
a union spanning topics is refused — register one handler per topic. A topic
has at most one handler (competing workers of that handler share it).

Options resolve in this order, later wins: ``HandlerOptions`` defaults, the
decorator's keywords or the class attributes, then the queue's configuration
for that handler name (``QueueOptions.handlers[name]``), so operators can
retune a deployed handler without touching code.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import sys
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from ringq.codecs.decoding import HeaderDecoder, handler_decoder
from ringq.codecs.formats import DEFAULT_CODEC, Codec
from ringq.codecs.identity import TopicWarning, main_module_topics, topics_for
from ringq.config import HandlerOptions, QueueOptions
from ringq.context import Context
from ringq.errors import ConfigError
from ringq.middleware import Middlewares
from ringq.ratelimit import RateLimit, RateLimits, parse_rate_limit
from ringq.retry import Retry

__all__ = ["Handler", "HandlerRegistry", "HandlerSpec", "check_importable", "function_ref"]

M = TypeVar("M")


class Handler(Generic[M]):
    """Base class of class-based handlers; see the module docstring.

    Class attributes (``None`` keeps the default): ``name`` (default: the
    class name), ``topic``, ``timeout``, ``max_parallelism``, ``prefetch``,
    ``retry``, ``dead_letter_on``, ``codec`` (what it decodes messages with;
    default: the queue's), ``rate_limit`` (``"100/s"``: ``ringq.ratelimit``).
    """

    name: ClassVar[str | None] = None
    topic: ClassVar[str | None] = None
    timeout: ClassVar[float | None] = None
    max_parallelism: ClassVar[int | None] = None
    prefetch: ClassVar[int | None] = None
    retry: ClassVar[Retry | None] = None
    dead_letter_on: ClassVar[tuple[type[BaseException], ...] | None] = None
    codec: ClassVar[Codec | None] = None
    rate_limit: ClassVar[str | RateLimit | None] = None

    def handle(self, msg: M, ctx: Context) -> None:
        raise NotImplementedError(f"{type(self).__qualname__}.handle")


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler: its name, message type, topic and options."""

    name: str
    message_type: Any
    topic: str
    options: HandlerOptions
    func: Callable[..., object] | None
    cls: type[Handler[Any]] | None
    pass_context: bool
    #: ``(payload, headers or None) -> message`` (``handler_decoder``).
    decode: HeaderDecoder
    #: An ``async def`` handler: run as coroutines (``ringq.dispatch.aio``).
    is_async: bool = False
    #: What the handler decodes with (its own ``codec=``, else the queue's).
    codec: Codec = DEFAULT_CODEC
    #: What ``ctx.publish`` encodes with: the queue's codec.
    publish_codec: Codec = DEFAULT_CODEC
    #: The queue's middlewares (``ringq.middleware``; shared, added to later).
    middleware: Middlewares | None = None
    #: The queue's rate limits by topic (``q.set_rate_limit``), where the
    #: handler's workers find their bucket (``None``: a table of their own).
    limits: RateLimits | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> str:
        return "class" if self.cls is not None else "function"


class HandlerRegistry:
    """The handlers of one queue, by name and by topic."""

    __slots__ = ("_by_name", "_by_topic")

    def __init__(self) -> None:
        self._by_name: dict[str, HandlerSpec] = {}
        self._by_topic: dict[str, HandlerSpec] = {}

    def add(self, spec: HandlerSpec) -> None:
        if spec.name in self._by_name:
            raise ConfigError(f"a handler named {spec.name!r} is already registered")
        other = self._by_topic.get(spec.topic)
        if other is not None:
            raise ConfigError(
                f"topic {spec.topic!r} already has handler {other.name!r}; "
                f"a topic has one handler (raise its max_parallelism for more workers)"
            )
        self._by_name[spec.name] = spec
        self._by_topic[spec.topic] = spec

    def get(self, name: str) -> HandlerSpec:
        """The handler named ``name``; ``KeyError`` lists the known names."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise KeyError(f"no handler named {name!r} (registered: {known})") from None

    def for_topic(self, topic: str) -> HandlerSpec | None:
        return self._by_topic.get(topic)

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def message_type_of_class(cls: type[Handler[Any]]) -> Any:
    """``M`` of ``class C(ringq.Handler[M])`` (searching base classes too)."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Handler:
                args = typing.get_args(base)
                if args and not isinstance(args[0], TypeVar):
                    return args[0]
    raise ConfigError(
        f"{cls.__qualname__} must subclass ringq.Handler[MessageType] to say what it handles"
    )


def message_type_of_function(func: Callable[..., object]) -> Any:
    """The annotation of ``func``'s first parameter."""
    params = list(inspect.signature(func).parameters.values())
    if not params:
        raise ConfigError(f"handler {func!r} must take the message as a parameter")
    try:
        hints = typing.get_type_hints(func)
    except Exception as e:
        raise ConfigError(f"cannot read the annotations of handler {func!r}: {e}") from e
    tp = hints.get(params[0].name)
    if tp is None:
        raise ConfigError(
            f"handler {func!r}: give the message type, "
            f"@q.handler(MessageType), or annotate its first parameter"
        )
    return tp


def is_async_handler(func: Callable[..., object]) -> bool:
    """Whether ``func`` is an ``async def`` handler: a coroutine function,
    a ``functools.partial`` of one, or a callable object whose ``__call__``
    is one. Async generator functions are refused (a handler returns, it
    does not yield)."""
    target: object = func
    while isinstance(target, functools.partial):
        target = target.func
    plain = inspect.isfunction(target) or inspect.ismethod(target) or isinstance(target, type)
    # A callable object: look at its class's __call__.
    call = None if plain else inspect.getattr_static(type(target), "__call__", None)
    candidates = [func, target] + ([call] if call is not None else [])
    if any(inspect.isasyncgenfunction(c) for c in candidates):
        raise ConfigError(
            f"handler {func!r} is an async generator: a handler returns (or raises), "
            "it does not yield"
        )
    return any(inspect.iscoroutinefunction(c) for c in candidates)


def takes_context(func: Callable[..., object]) -> bool:
    """Whether ``func`` takes a second (context) parameter. Handlers are
    called as ``func(msg)`` or ``func(msg, ctx)``: a required keyword-only
    parameter could never be given, so it is refused here."""
    all_params = inspect.signature(func).parameters.values()
    required_kw = [p.name for p in all_params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required_kw:
        raise ConfigError(
            f"handler {func!r}: keyword-only parameters "
            f"{required_kw} are never passed; take (msg) or (msg, ctx) positionally"
        )
    params = [
        p
        for p in all_params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return len(params) >= 2


#: How ``function_ref`` names a main module run with ``python -m NAME``.
MAIN_MODULE_PREFIX = "module:"


def function_ref(func: Callable[..., object]) -> tuple[str, str, str | None]:
    """``(module, qualname, main)`` of a module-level function. ``main`` says
    where ``__main__`` comes from when the function is defined there: the
    script's path, or ``"module:NAME"`` for ``python -m NAME`` (a worker
    process runs it again under the name ``__mp_main__``, as
    ``multiprocessing`` does)."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname:
        raise ConfigError(
            f"{func!r} has no module or name: processes= needs a module-level function"
        )
    path = None
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name not in ("__main__", "__mp_main__"):
            path = MAIN_MODULE_PREFIX + spec.name
        else:
            path = getattr(main, "__file__", None)
    return module, qualname, path


def check_importable(name: str, func: Callable[..., object] | None) -> None:
    """Refuses (``ConfigError``) what a worker process could not import."""
    why = "processes= runs a module-level function in worker processes"
    if func is None:
        raise ConfigError(
            f"handler {name!r}: {why}; class handlers are built by the queue's resolver "
            "in this process: use a function"
        )
    if not (callable(func) and hasattr(func, "__code__")):
        raise ConfigError(f"handler {name!r}: {why}, not {type(func).__name__} objects")
    module, qualname, path = function_ref(func)
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(
            f"handler {name!r}: {why}; {qualname} is defined inside a function (or is a "
            "lambda), which another process cannot import: define it at module level"
        )
    if module == "__main__":
        if path is None:
            raise ConfigError(
                f"handler {name!r}: {why}; {qualname} is defined in __main__ without a "
                "file (python -c or an interactive session): move it to a module"
            )
        return
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"handler {name!r}: {why}; its module {module!r} cannot be imported")


def build_spec(
    *,
    name: str,
    message_type: Any,
    topic: str | None,
    func: Callable[..., object] | None,
    cls: type[Handler[Any]] | None,
    declared: dict[str, Any],
    config: QueueOptions | None,
    codec: Codec | None = None,
    publish_codec: Codec | None = None,
    limits: RateLimits | None = None,
    middleware: Middlewares | None = None,
) -> HandlerSpec:
    """Resolve a handler's topic, decoder and options (see the module docstring)."""
    if topic is None:
        topics = topics_for(message_type)
        if len(topics) != 1:
            raise ConfigError(
                f"handler {name!r}: {message_type!r} spans topics {topics}; "
                f"register one handler per topic (or pass topic=)"
            )
        topic = topics[0]
        if main_module_topics(topics):
            warnings.warn(
                f"handler {name!r}: its topic {topic!r} comes from a class defined in "
                "__main__; imported as a module, the same class gets another topic and "
                "messages published under one would wait for a handler of the other. Name "
                'the topic: @ringq.message("orders.placed") on the class, or topic=...',
                TopicWarning,
                stacklevel=4,
            )
    given = {k: v for k, v in declared.items() if v is not None}
    if "rate_limit" in given:
        limit = parse_rate_limit(given["rate_limit"], f"handler {name!r}")
        given["rate_limit"] = limit if isinstance(limit, RateLimit) else None
    processes = given.get("processes", 0)
    if processes:
        if given.get("max_parallelism", processes) != processes:
            raise ConfigError(
                f"handler {name!r}: processes={processes} is its parallelism; "
                f"max_parallelism={given['max_parallelism']} contradicts it (give one)"
            )
        given["max_parallelism"] = processes
    options = dataclasses.replace(HandlerOptions(), **given) if given else HandlerOptions()
    if config is not None:
        options = config.handler_options(name, options)
    if options.processes:
        check_importable(name, func if cls is None else None)
    is_async = is_async_handler(func if func is not None else cls.handle)  # type: ignore[union-attr]
    if is_async and options.processes:
        raise ConfigError(
            f"handler {name!r}: an async def handler runs on an event loop; processes= runs "
            "plain functions in worker processes (give one or the other)"
        )
    pass_context = True if func is None else takes_context(func)
    if codec is not None and not isinstance(codec, Codec):
        raise ConfigError(f"handler {name!r}: codec= takes a codec, not {type(codec).__name__}")
    decode_with = codec or publish_codec or DEFAULT_CODEC
    return HandlerSpec(
        name=name,
        message_type=message_type,
        topic=topic,
        options=options,
        func=func,
        cls=cls,
        pass_context=pass_context,
        decode=handler_decoder(message_type, decode_with),
        is_async=is_async,
        codec=decode_with,
        publish_codec=publish_codec or DEFAULT_CODEC,
        limits=limits,
        middleware=middleware,
    )

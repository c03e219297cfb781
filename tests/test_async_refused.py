"""``async def`` handlers are never silently acked.

ringq runs handlers on worker threads and never awaits what they return:
an ``async def`` handler would "succeed" at once without running its body.
So an async handler is refused when it is registered, and a plain ``def``
that returns an awaitable anyway fails its attempt (``TypeError``) instead
of being acked, without a "coroutine was never awaited" warning.
"""

from __future__ import annotations

import functools
import gc
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import ringq
from conftest import OpenQueue, wait_until

TWICE = ringq.Retry(max_attempts=2, backoff=ringq.Backoff.fixed(0.01))


@dataclass
class Ping:
    n: int


def _refused(q: ringq.Queue, register: Callable[[], object]) -> str:
    with pytest.raises(ringq.ConfigError) as info:
        register()
    message = str(info.value)
    assert "async def" in message
    assert "plain def" in message and "asyncio.run" in message, "it says what to do"
    assert len(q.handlers) == 0, "nothing was registered"
    return message


def test_async_def_function_is_refused_at_registration(open_queue: OpenQueue) -> None:
    q = open_queue()

    async def on_ping(msg: Ping) -> None:
        pass

    assert "'on_ping'" in _refused(q, lambda: q.handler(Ping)(on_ping))
    _refused(q, lambda: q.handler(on_ping))  # bare decorator, type from the annotation
    _refused(q, lambda: q.handler(Ping, name="renamed", max_parallelism=4)(on_ping))


def test_class_handler_with_async_handle_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()

    class OnPing(ringq.Handler[Ping]):
        async def handle(self, msg: Ping, ctx: ringq.Context) -> None:  # type: ignore[override]
            pass

    assert "'OnPing'" in _refused(q, lambda: q.register(OnPing))


def test_partial_of_an_async_function_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()

    async def notify(channel: str, msg: Ping) -> None:
        pass

    _refused(q, lambda: q.handler(Ping, name="notify_ops")(functools.partial(notify, "ops")))


def test_callable_object_with_async_call_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()

    class Notifier:
        async def __call__(self, msg: Ping) -> None:
            pass

    _refused(q, lambda: q.handler(Ping, name="notifier")(Notifier()))


def test_bound_async_method_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()

    class Service:
        async def on_ping(self, msg: Ping) -> None:
            pass

    _refused(q, lambda: q.handler(Ping)(Service().on_ping))


def test_async_generator_handler_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()

    async def on_ping(msg: Ping) -> Any:  # an async def that yields
        yield msg

    _refused(q, lambda: q.handler(Ping)(on_ping))


class Awaitable:
    """Not a coroutine, but awaitable all the same."""

    def __await__(self) -> Generator[None, None, None]:
        yield


async def _work(msg: object) -> None:
    raise AssertionError("the coroutine body must never run")


class _AsyncCallable:
    async def __call__(self, msg: bytes) -> None:
        raise AssertionError("the coroutine body must never run")


class _ReturnsCoroutine(ringq.Handler[bytes]):
    topic = "class"
    retry = TWICE

    def handle(self, msg: bytes, ctx: ringq.Context) -> Any:
        return _work(msg)


@pytest.fixture
def no_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Records every warning (from any thread) while the test runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
        gc.collect()


def test_a_plain_def_returning_an_awaitable_fails_its_attempts_and_is_never_acked(
    open_queue: OpenQueue, no_warnings: list[warnings.WarningMessage]
) -> None:
    q = open_queue()
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def count(name: str) -> None:
        with lock:
            calls[name] = calls.get(name, 0) + 1

    @q.handler(bytes, topic="no_ctx", retry=TWICE)
    def no_ctx(msg: bytes) -> Any:
        count("no_ctx")
        return _work(msg)

    @q.handler(bytes, topic="with_ctx", retry=TWICE)
    def with_ctx(msg: bytes, ctx: ringq.Context) -> Any:
        count("with_ctx")
        return _work(msg)

    @q.handler(bytes, topic="awaitable", retry=TWICE)
    def awaitable(msg: bytes) -> Any:
        count("awaitable")
        return Awaitable()

    # A partial of an async callable object is refused when registered too.
    with pytest.raises(ringq.ConfigError, match="async def"):
        q.handler(bytes, topic="partial", name="partial", retry=TWICE)(
            functools.partial(_AsyncCallable())
        )
    q.register(_ReturnsCoroutine)

    topics = ["no_ctx", "with_ctx", "awaitable", "class"]
    ids = {t: q.publish(t.encode(), t) for t in topics}
    q.start()
    assert wait_until(lambda: len(q.dlq) == len(topics), 10)
    q.stop()

    assert calls == {"no_ctx": 2, "with_ctx": 2, "awaitable": 2}
    assert q.stats()["acked"] == 0
    for topic, mid in ids.items():
        dead = q.dlq.get(mid)
        assert (dead.topic, dead.reason, dead.attempts) == (topic, "max_attempts", 2)
        assert dead.error_type == "TypeError", topic
        assert dead.error_message is not None and "awaitable" in dead.error_message
    for name, stats in q.handler_stats().items():
        assert (stats["succeeded"], stats["failed"], stats["retried"]) == (0, 2, 1), name
        assert stats["dead_lettered"] == 1, name
    gc.collect()
    never_awaited = [str(w.message) for w in no_warnings if "never awaited" in str(w.message)]
    assert never_awaited == []
    assert [w for w in no_warnings if issubclass(w.category, RuntimeWarning)] == []

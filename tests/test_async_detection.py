"""Which handlers are ``async def``, and a plain def that returns an
awaitable.

Every form of ``async def`` handler (a function, a class's ``handle``, a
``functools.partial`` of one, a callable object, a bound method) is run as
a coroutine and awaited (``ringq.dispatch.aio``); an async generator is
refused when registered. A plain ``def`` that returns an awaitable anyway
fails its attempt (``TypeError``) instead of being acked, without a
"coroutine was never awaited" warning.
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


def _runs_as_a_coroutine(q: ringq.Queue, register: Callable[[], object], name: str) -> None:
    register()
    assert q.handlers.get(name).is_async


def test_every_async_def_form_is_run_as_a_coroutine(open_queue: OpenQueue) -> None:
    q = open_queue()
    ran: list[str] = []
    done = threading.Event()

    def note(what: str) -> None:
        ran.append(what)
        if len(ran) == 5:
            done.set()

    async def on_ping(msg: Ping) -> None:
        note("function")

    async def notify(channel: str, msg: Ping) -> None:
        note(f"partial {channel}")

    class Notifier:
        async def __call__(self, msg: Ping) -> None:
            note("callable object")

    class Service:
        async def on_ping(self, msg: Ping) -> None:
            note("bound method")

    class OnPing(ringq.Handler[Ping]):
        topic = "class"

        async def handle(self, msg: Ping, ctx: ringq.Context) -> None:  # type: ignore[override]
            note("class")

    _runs_as_a_coroutine(q, lambda: q.handler(on_ping), "on_ping")  # type from the annotation
    _runs_as_a_coroutine(
        q,
        lambda: q.handler(Ping, name="notify_ops", topic="partial")(
            functools.partial(notify, "ops")
        ),
        "notify_ops",
    )
    _runs_as_a_coroutine(
        q, lambda: q.handler(Ping, name="notifier", topic="object")(Notifier()), "notifier"
    )
    _runs_as_a_coroutine(
        q, lambda: q.handler(Ping, name="service", topic="method")(Service().on_ping), "service"
    )
    _runs_as_a_coroutine(q, lambda: q.register(OnPing), "OnPing")
    for topic in (ringq.codecs.topic_for(Ping), "partial", "object", "method", "class"):
        q.publish(Ping(1), topic)
    q.start()
    assert done.wait(10)
    q.stop()
    assert sorted(ran) == sorted(
        ["function", "partial ops", "callable object", "bound method", "class"]
    )


def test_async_generator_handler_is_refused(open_queue: OpenQueue) -> None:
    q = open_queue()

    async def on_ping(msg: Ping) -> Any:  # an async def that yields
        yield msg

    with pytest.raises(ringq.ConfigError, match="async generator"):
        q.handler(Ping)(on_ping)
    assert len(q.handlers) == 0


class Awaitable:
    """Not a coroutine, but awaitable all the same."""

    def __await__(self) -> Generator[None, None, None]:
        yield


async def _work(msg: object) -> None:
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

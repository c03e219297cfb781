"""How the contract suite reaches a backend.

Every test takes ``harness`` (or ``q``, a queue the harness opened with the
default options), which is parametrized over ``backend_kind``: one entry of
``BACKENDS`` per backend. Adding a backend is one factory function::

    def redis(place: Path, options: dict[str, Any]) -> Opened:
        '''A queue in a Redis namespace derived from ``place``.'''
        ...
        return Opened(queue, advance)

    BACKENDS["redis"] = redis

A factory opens a queue at ``place`` (a fresh directory per test; a backend
that is not a directory derives its own name from it, e.g. a Redis
namespace) with the given queue options, and returns it as an open
``ringq.Queue`` together with the way to move its clock: ``advance(seconds)``
moves the backend's clock forward, expires the leases and releases the
delays that fell due on the way before it returns, and returns the clock's
time (epoch seconds). Called again with the same ``place`` after the first
queue was closed, it reopens that queue. Time is only ever injected through
``advance``: no test here sleeps for a lease or a delay.

A backend that cannot give an item says so in ``docs/backends.md`` and marks
exactly that test: ``@pytest.mark.not_on("redis", reason="...")``.

Every test runs twice per backend: through ``ringq.Queue`` (``api`` "sync")
and through ``ringq.AsyncQueue`` (``api`` "async"), wrapped in a blocking
facade with ``Queue``'s methods whose every call is awaited to completion
on an event loop in its own thread (``AsyncFacade``): the same cases,
awaited. A test that uses what the facade cannot give is marked
``@pytest.mark.sync_only(reason=...)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import ringq
from conftest import ManualClockQueue
from ringq.aio import AsyncQueue
from ringq.dispatch.aio import finish_tasks


@dataclass
class Opened:
    """What a backend factory returns."""

    queue: Any  # ringq.Queue, or an AsyncFacade with its methods
    #: Moves the queue's clock ``seconds`` forward (see the module docs).
    advance: Callable[[float], float]


Factory = Callable[[Path, dict[str, Any]], Opened]


def local(place: Path, options: dict[str, Any]) -> Opened:
    """The engine in this process, with a manual clock (``_manual_clock=True``)."""
    q = ManualClockQueue(place, **options)
    return Opened(q, q.advance)


class SharedClient(ringq.Queue):
    """A client of a shared queue whose owner (with a manual clock) lives in
    this process too: closing the client closes the owner, so a reopen is a
    real one (recovery included)."""

    owner: ManualClockQueue | None = None

    def close(self) -> None:
        super().close()
        if self.owner is not None and not self.owner.closed:
            self.owner.close()


def shared(place: Path, options: dict[str, Any]) -> Opened:
    """A client over the Unix socket of an owner (``shared=True``); the
    owner runs in this process (its server threads are Rust threads), with
    a manual clock."""
    owner = ManualClockQueue(place, shared=True, **options)
    assert owner.role == "owner"
    client = SharedClient(place, shared=True, **options)
    assert client.role == "client"
    client.owner = owner
    return Opened(client, owner.advance)


T = TypeVar("T")


class ManualClockAsyncQueue(AsyncQueue):
    """An ``AsyncQueue`` over a ``ManualClockQueue``."""

    def _open_queue(self, path: str | os.PathLike[str], **options: Any) -> ringq.Queue:
        return ManualClockQueue(path, **options)


class LoopThread:
    """An event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="contract-loop", daemon=True
        )
        self.thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result()

    def stop(self) -> None:
        # As asyncio.run: the tasks left on the loop end before it closes.
        asyncio.run_coroutine_threadsafe(finish_tasks(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class AsyncFacade:
    """``ringq.Queue``'s methods over an ``AsyncQueue``: each call is
    awaited to completion on the loop thread (several threads may wait in
    calls at once: each is a task on the loop)."""

    def __init__(self, aq: AsyncQueue, loop: LoopThread) -> None:
        self.aq = aq
        self._loop = loop
        self.dlq = _FacadeDLQ(self)

    def _run(self, coro: Awaitable[T]) -> T:
        return self._loop.run(coro)

    def publish(self, payload: object, topic: str | None = None, **options: Any) -> str:
        return self._run(self.aq.publish(payload, topic, **options))

    def publish_many(
        self, payloads: Iterable[object], topic: str | None = None, **kw: Any
    ) -> list[str]:
        return self._run(self.aq.publish_many(payloads, topic, **kw))

    def checkout(self, *args: Any, **kw: Any) -> list[ringq.Delivery]:
        return self._run(self.aq.checkout(*args, **kw))

    def ack(self, deliveries: Any) -> None:
        self._run(self.aq.ack(deliveries))

    def release(self, deliveries: Any) -> None:
        self._run(self.aq.release(deliveries))

    def nack(self, *args: Any, **kw: Any) -> None:
        self._run(self.aq.nack(*args, **kw))

    def extend(self, delivery: ringq.Delivery, seconds: float) -> float:
        return self._run(self.aq.extend(delivery, seconds))

    def cancel(self, message_id: str) -> str:
        return self._run(self.aq.cancel(message_id))

    def stats(self) -> dict[str, Any]:
        return self.aq.stats()

    def topic_stats(self) -> dict[str, dict[str, int]]:
        return self.aq.topic_stats()

    def snapshot(self) -> int:
        return self.aq.queue.snapshot()

    @property
    def backend(self) -> ringq.Backend:
        return self.aq.backend

    @property
    def closed(self) -> bool:
        return self.aq.closed

    def close(self) -> None:
        self._run(self.aq.aclose())

    @property
    def handler(self) -> Any:
        return self.aq.handler

    def start(self) -> None:
        async def start() -> None:
            self.aq.start()

        self._run(start())

    def stop(self, drain: bool = True, timeout: float | None = None) -> bool:
        return self._run(self.aq.stop(drain, timeout))

    def __enter__(self) -> AsyncFacade:
        self._run(self.aq.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self.aq.__aexit__(None, None, None))


class _FacadeDLQ:
    def __init__(self, f: AsyncFacade) -> None:
        self._f = f

    def list(self, *args: Any, **kw: Any) -> list[ringq.DeadLetter]:
        return self._f._run(self._f.aq.dlq.list(*args, **kw))

    def get(self, id: str) -> ringq.DeadLetter:
        return self._f._run(self._f.aq.dlq.get(id))

    def replay(self, *args: Any, **kw: Any) -> int:
        return self._f._run(self._f.aq.dlq.replay(*args, **kw))

    def purge(self, *args: Any, **kw: Any) -> int:
        return self._f._run(self._f.aq.dlq.purge(*args, **kw))

    def __len__(self) -> int:
        return self._f._run(self._f.aq.dlq.count())

    def __iter__(self) -> Any:
        return iter(self.list())


def redis(place: Path, options: dict[str, Any]) -> Opened:
    """A queue in a Redis namespace derived from ``place``, on the suite's
    own ``redis-server`` (``appendonly yes``, ``appendfsync always``), with a
    manual clock (the scripts take the client's time)."""
    from redis_servers import redis_url

    url = redis_url()
    if url is None:
        pytest.skip("redis-server is not installed (scripts/dev test installs it)")
    namespace = "contract-" + hashlib.sha1(str(place).encode()).hexdigest()[:16]
    q = ManualClockQueue(url, namespace=namespace, **options)
    return Opened(q, q.advance)


def _cluster_url() -> str:
    from redis_servers import redis_cluster_url

    url = redis_cluster_url()
    if url is None:
        pytest.skip("redis-server or redis-cli is not installed (scripts/dev test installs them)")
    return url


def redis_cluster(place: Path, options: dict[str, Any]) -> Opened:
    """As ``redis``, on the suite's three-master Redis Cluster
    (``redis+cluster://``): each test's namespace is its own hash slot, so
    the cases spread over the three masters."""
    namespace = "contract-" + hashlib.sha1(str(place).encode()).hexdigest()[:16]
    q = ManualClockQueue(_cluster_url(), namespace=namespace, **options)
    return Opened(q, q.advance)


#: Every backend the contract runs against, by kind.
BACKENDS: dict[str, Factory] = {
    "local": local,
    "shared": shared,
    "redis": redis,
    "redis_cluster": redis_cluster,
}


def local_async(place: Path, options: dict[str, Any], loop: LoopThread) -> Opened:
    """The engine in this process, through ``AsyncQueue`` (manual clock)."""
    aq = ManualClockAsyncQueue(place, **options)
    underneath: Any = aq.queue
    return Opened(AsyncFacade(aq, loop), underneath.advance)


class SharedAsyncFacade(AsyncFacade):
    """``AsyncFacade`` over a shared queue's client whose owner lives in this
    process (as ``SharedClient``): closing it closes the owner too."""

    owner: ManualClockQueue | None = None

    def close(self) -> None:
        super().close()
        self._close_owner()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._close_owner()

    def _close_owner(self) -> None:
        if self.owner is not None and not self.owner.closed:
            self.owner.close()


def shared_async(place: Path, options: dict[str, Any], loop: LoopThread) -> Opened:
    """An ``AsyncQueue`` client (its own connection, driven by the loop) of
    an owner with a manual clock in this process."""
    owner = ManualClockQueue(place, shared=True, **options)
    assert owner.role == "owner"
    aq = AsyncQueue(place, shared=True, **options)
    assert aq.role == "client"
    facade = SharedAsyncFacade(aq, loop)
    facade.owner = owner
    return Opened(facade, owner.advance)


def redis_async(place: Path, options: dict[str, Any], loop: LoopThread) -> Opened:
    """``AsyncQueue`` on a Redis namespace (see ``redis``): its calls are
    tasks driven with redis.asyncio on the loop."""
    from redis_servers import redis_url

    url = redis_url()
    if url is None:
        pytest.skip("redis-server is not installed (scripts/dev test installs it)")
    namespace = "contract-" + hashlib.sha1(str(place).encode()).hexdigest()[:16]
    aq = ManualClockAsyncQueue(url, namespace=namespace, **options)
    underneath: Any = aq.queue
    return Opened(AsyncFacade(aq, loop), underneath.advance)


def redis_cluster_async(place: Path, options: dict[str, Any], loop: LoopThread) -> Opened:
    """``AsyncQueue`` on a namespace of the suite's Redis Cluster."""
    namespace = "contract-" + hashlib.sha1(str(place).encode()).hexdigest()[:16]
    aq = ManualClockAsyncQueue(_cluster_url(), namespace=namespace, **options)
    underneath: Any = aq.queue
    return Opened(AsyncFacade(aq, loop), underneath.advance)


AsyncFactory = Callable[[Path, dict[str, Any], LoopThread], Opened]

#: The backends the contract runs against through ``AsyncQueue``, by kind;
#: a kind missing here is skipped for the async API, with the reason below.
ASYNC_BACKENDS: dict[str, AsyncFactory] = {
    "local": local_async,
    "shared": shared_async,
    "redis": redis_async,
    "redis_cluster": redis_cluster_async,
}
ASYNC_MISSING: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "not_on(kind, reason): a contract item backend `kind` does not give"
    )
    config.addinivalue_line(
        "markers", "sync_only(reason): a contract item the AsyncQueue facade cannot run yet"
    )


@pytest.fixture(params=sorted(BACKENDS))
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    for mark in request.node.iter_markers("not_on"):
        if kind in mark.args:
            pytest.skip(f"{kind}: {mark.kwargs.get('reason', 'see docs/backends.md')}")
    return kind


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, backend_kind: str) -> str:
    which: str = request.param
    if which == "async":
        for mark in request.node.iter_markers("sync_only"):
            pytest.skip(f"async API: {mark.kwargs.get('reason', '')}")
        if backend_kind not in ASYNC_BACKENDS:
            pytest.skip(f"async API on {backend_kind}: {ASYNC_MISSING[backend_kind]}")
    return which


class Harness:
    """Queues of one backend kind at one place, each with a manual clock,
    through one API (``"sync"``: ``ringq.Queue``; ``"async"``:
    ``ringq.AsyncQueue`` behind ``AsyncFacade``)."""

    def __init__(self, kind: str, place: Path, api: str = "sync") -> None:
        self.kind = kind
        self.place = place
        self.api = api
        self._factory = BACKENDS[kind]
        self._opened: list[Opened] = []
        self._loop: LoopThread | None = None

    def open(self, **options: Any) -> Any:
        """Opens the queue (again, after ``close``: a reopen) with ``options``."""
        if self.api == "async":
            if self._loop is None:
                self._loop = LoopThread()
            opened = ASYNC_BACKENDS[self.kind](self.place, options, self._loop)
        else:
            opened = self._factory(self.place, options)
        self._opened.append(opened)
        return opened.queue

    def advance(self, seconds: float) -> float:
        """Moves the clock of the queue opened last; returns its time."""
        return self._opened[-1].advance(seconds)

    def now(self) -> float:
        """The clock's time (epoch seconds) of the queue opened last."""
        return self.advance(0)

    def close_all(self) -> None:
        for opened in self._opened:
            if not opened.queue.closed:
                opened.queue.close()
        if self._loop is not None:
            self._loop.stop()


@pytest.fixture
def harness(backend_kind: str, api: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(backend_kind, tmp_path / "q", api)
    yield h
    h.close_all()


@pytest.fixture
def q(harness: Harness) -> Any:
    """A queue with the default options (lease 30 s, 5 attempts)."""
    return harness.open()


def at(t: float) -> Any:
    """Equal to the time ``t`` (epoch seconds) to the microsecond: the
    clock counts microseconds; sums of seconds round in the last bit."""
    return pytest.approx(t, abs=1e-6)


def drain(q: ringq.Queue, topic: str = "default", lease: float = 600.0) -> list[ringq.Delivery]:
    """Check out every ready message of ``topic`` (without waiting)."""
    out: list[ringq.Delivery] = []
    while batch := q.checkout(topic, max_messages=1000, lease=lease, timeout=0):
        out.extend(batch)
    return out


def dead_letter(q: ringq.Queue, payload: bytes, topic: str = "default", **publish: Any) -> str:
    """Publish one message and dead-letter it at once as non-retryable."""
    mid = q.publish(payload, topic, **publish)
    [d] = q.checkout(topic, timeout=0)
    assert d.id == mid
    q.backend.nack(d, error_message="bad", dead_letter_reason="non_retryable")
    return mid

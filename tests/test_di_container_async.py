"""ringq's own ``Container`` with async factories: ``async def`` and async
generator factories are awaited in ``Container.ascope()`` (what ringq opens per
message for a handler class whose ``handle`` is ``async def``), singletons are
made once across coroutines, threads and loops, scoped values once per scope,
cleanups run newest first (also when the handler raised, also when one of them
fails), sync and async factories depend on each other, a sync scope refuses
async-made types with a clear error, and ``aclose()`` closes async singletons."""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue, wait_until
from ringq import di

_ids = itertools.count(1)


@dataclass
class Order:
    n: int


@dataclass
class Log:
    """What factories and handlers did, in order."""

    events: list[str] = field(default_factory=list)

    def __call__(self, event: str) -> None:
        self.events.append(event)


class Settings:
    dsn = "pg://"


class Pool:
    """An application-wide async resource (a connection pool)."""

    def __init__(self, dsn: str) -> None:
        self.id = next(_ids)
        self.dsn = dsn
        self.closed = False

    async def fetch(self, n: int) -> str:
        await asyncio.sleep(0)
        return f"row {n}"


class Session:
    """A per-message async resource."""

    def __init__(self, pool: Pool) -> None:
        self.id = next(_ids)
        self.pool = pool
        self.closed = False
        self.error: BaseException | None = None


class Repo:
    """Built by the container's default factory (constructor injection)."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings


class Cache:
    """Made by a sync factory from an async-made value."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool


class Clock:
    pass


class Missing:
    pass


async def open_pool(settings: Settings, log: Log) -> AsyncIterator[Pool]:
    log("open pool")
    await asyncio.sleep(0)
    pool = Pool(settings.dsn)
    yield pool
    await asyncio.sleep(0)
    pool.closed = True
    log("close pool")


async def open_session(pool: Pool, log: Log) -> AsyncIterator[Session]:
    session = Session(pool)
    log(f"open session {session.id}")
    try:
        yield session
    except Exception as exc:  # the scope ended with an exception: remember it
        session.error = exc
        raise
    finally:
        await asyncio.sleep(0)
        session.closed = True
        log(f"close session {session.id}")


def make_container(log: Log) -> di.Container:
    c = di.Container()
    c.instance(Log, log)
    c.register(Settings, lifetime="singleton")
    c.register(Pool, open_pool, lifetime="singleton")
    c.register(Session, open_session)
    c.register(Repo)
    return c


# ----------------------------------------------------------------------------- async factories


def test_async_def_and_async_generator_factories_are_awaited_in_an_async_scope() -> None:
    log = Log()

    async def make_clock() -> Clock:
        await asyncio.sleep(0)
        return Clock()

    async def main() -> None:
        async with make_container(log) as c:
            c.register(Clock, make_clock, lifetime="transient")
            async with c.ascope() as scope:
                repo = await scope.aget(Repo)
                clock = await scope.aget(Clock)
                assert type(repo.session.pool) is Pool and type(clock) is Clock
                assert await repo.session.pool.fetch(3) == "row 3"
                assert await scope.aget(Clock) is not clock  # transient: a new one each time
                assert log.events == ["open pool", f"open session {repo.session.id}"]
            assert repo.session.closed and not repo.session.pool.closed
        assert repo.session.pool.closed  # leaving `async with` awaited aclose()

    asyncio.run(main())


def test_an_async_singleton_is_made_once_when_many_coroutines_ask_at_once() -> None:
    log = Log()
    started = 0

    async def slow_pool(settings: Settings) -> Pool:
        nonlocal started
        started += 1
        for _ in range(5):  # give every other coroutine the chance to ask meanwhile
            await asyncio.sleep(0)
        return Pool(settings.dsn)

    async def one_message() -> Pool:
        async with c.ascope() as scope:
            return (await scope.aget(Repo)).session.pool

    c = make_container(log)
    c.register(Pool, slow_pool, lifetime="singleton")

    async def main() -> list[Pool]:
        return await asyncio.gather(*(one_message() for _ in range(50)))

    pools = asyncio.run(main())
    assert started == 1
    assert len({id(p) for p in pools}) == 1


def test_an_async_singleton_is_made_once_across_threads_and_event_loops() -> None:
    started = 0
    gate = threading.Barrier(8)
    lock = threading.Lock()

    async def slow_pool(settings: Settings) -> Pool:
        nonlocal started
        with lock:
            started += 1
        await asyncio.sleep(0.05)  # the other loops ask meanwhile
        return Pool(settings.dsn)

    c = make_container(Log())
    c.register(Pool, slow_pool, lifetime="singleton")
    pools: list[Pool] = []

    def thread() -> None:
        async def main() -> Pool:
            gate.wait()
            async with c.ascope() as scope:
                return await scope.aget(Pool)

        pool = asyncio.run(main())
        with lock:
            pools.append(pool)

    threads = [threading.Thread(target=thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert started == 1
    assert len(pools) == 8 and len({id(p) for p in pools}) == 1


def test_a_singleton_whose_maker_was_cancelled_or_failed_is_made_by_the_next_asker() -> None:
    attempts = 0

    async def main() -> None:
        hold = asyncio.Event()  # never set

        async def flaky_pool(settings: Settings) -> Pool:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                await hold.wait()  # cancelled while it waits here
            if attempts == 2:
                raise ConnectionError("db down")
            return Pool(settings.dsn)

        c = make_container(Log())
        c.register(Pool, flaky_pool, lifetime="singleton")

        async def get_pool() -> Pool:
            async with c.ascope() as scope:
                return await scope.aget(Pool)

        first = asyncio.ensure_future(get_pool())
        await asyncio.sleep(0)  # the first asker is making it now
        waiters = [asyncio.ensure_future(get_pool()) for _ in range(4)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # a waiter's timeout: neither the maker nor the others notice
        await asyncio.sleep(0)
        first.cancel()  # the maker's timeout: the waiters are not cancelled with it
        results = await asyncio.gather(first, *waiters, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert isinstance(results[1], asyncio.CancelledError)
        failed = [r for r in results[2:] if isinstance(r, di.ResolutionError)]
        made = [r for r in results[2:] if isinstance(r, Pool)]
        assert len(failed) == 1 and "ConnectionError: db down" in str(failed[0])
        assert len(made) == 2 and made[0] is made[1]
        assert attempts == 3

    asyncio.run(main())


def test_a_scoped_value_is_made_once_per_scope_even_when_coroutines_ask_at_once() -> None:
    log = Log()

    async def main() -> None:
        c = make_container(log)
        async with c.ascope() as scope:
            sessions = await asyncio.gather(*(scope.aget(Session) for _ in range(10)))
            repo = await scope.aget(Repo)
        async with c.ascope() as other:
            second = await other.aget(Session)
        assert len({id(s) for s in sessions}) == 1 and repo.session is sessions[0]
        assert second is not sessions[0]
        assert sum(e.startswith("open session") for e in log.events) == 2
        await c.aclose()

    asyncio.run(main())


# ----------------------------------------------------------------------------- cleanups


def test_cleanups_run_newest_first_when_the_scope_ends_also_when_the_handler_raised() -> None:
    log = Log()

    def open_cache(pool: Pool) -> Iterator[Cache]:  # a sync generator among async ones
        log("open cache")
        try:
            yield Cache(pool)
        finally:
            log("close cache")

    async def main() -> list[str]:
        c = make_container(log)
        c.register(Cache, open_cache)
        async with c.ascope() as scope:
            await scope.aget(Session)
            await scope.aget(Cache)
        ok = log.events[:]
        log.events.clear()
        with pytest.raises(RuntimeError, match="handler failed"):
            async with c.ascope() as scope:
                session = await scope.aget(Session)
                await scope.aget(Cache)
                raise RuntimeError("handler failed")
        assert session.closed and isinstance(session.error, RuntimeError)  # could roll back
        await c.aclose()
        return ok

    ok = asyncio.run(main())
    first, second = ok[1].split()[-1], log.events[0].split()[-1]
    assert ok == [
        "open pool",
        f"open session {first}",
        "open cache",
        "close cache",
        f"close session {first}",
    ]
    assert log.events == [
        f"open session {second}",
        "open cache",
        "close cache",
        f"close session {second}",
        "close pool",
    ]


class Audit:
    pass


def test_a_failing_cleanup_does_not_skip_the_others_and_its_error_propagates() -> None:
    log = Log()

    async def broken_audit(session: Session) -> AsyncIterator[Audit]:
        yield Audit()
        raise OSError("audit log is full")

    def clock() -> Iterator[Clock]:
        yield Clock()
        log("close clock")

    async def main() -> None:
        c = make_container(log)
        c.register(Audit, broken_audit)
        c.register(Clock, clock)
        with pytest.raises(OSError, match="audit log is full"):
            async with c.ascope() as scope:
                session = await scope.aget(Session)
                await scope.aget(Audit)  # made after the session, closed before it
                await scope.aget(Clock)  # closed first, before the broken one
        assert session.closed
        assert log.events[-2:] == ["close clock", f"close session {session.id}"]
        assert isinstance(session.error, OSError)  # older cleanups see the newer one's error
        await c.aclose()

    asyncio.run(main())


def test_aclose_awaits_async_singleton_cleanups_and_close_refuses_while_they_are_open() -> None:
    log = Log()

    def open_settings() -> Iterator[Settings]:
        log("open settings")
        yield Settings()
        log("close settings")

    async def main() -> None:
        c = make_container(log)
        c.register(Settings, open_settings, lifetime="singleton")
        async with c.ascope() as scope:
            pool = await scope.aget(Pool)
        with pytest.raises(di.ResolutionError, match=r"Pool.*await container.aclose\(\)"):
            c.close()
        assert not pool.closed  # nothing was closed
        async with c.ascope() as scope:
            assert await scope.aget(Pool) is pool  # and the singleton is still there
        await c.aclose()
        assert pool.closed
        assert log.events == ["open settings", "open pool", "close pool", "close settings"]
        async with c.ascope() as scope:  # after aclose, a new singleton is made on demand
            assert await scope.aget(Pool) is not pool
        await c.aclose()
        c.close()  # nothing async is open now: close() is fine

    asyncio.run(main())


# ----------------------------------------------------------------------------- injection


def make_cache(pool: Pool) -> Cache:
    return Cache(pool)


async def make_clock(cache: Cache, settings: Settings) -> Clock:
    await asyncio.sleep(0)
    clock = Clock()
    clock.cache = cache  # type: ignore[attr-defined]
    return clock


def test_factories_parameters_are_injected_sync_on_async_and_async_on_sync() -> None:
    async def main() -> None:
        c = make_container(Log())
        c.register(Cache, make_cache, lifetime="singleton")  # sync, needs the async Pool
        c.register(Clock, make_clock)  # async, needs the sync Cache
        async with c.ascope() as scope:
            clock = await scope.aget(Clock)
            repo = await scope.aget(Repo)  # default factory: Repo(session=..., settings=...)
            pool = await scope.aget(Pool)
            assert clock.cache.pool is pool  # type: ignore[attr-defined]
            assert repo.session.pool is pool and isinstance(repo.settings, Settings)
            assert await scope.aget(Cache) is clock.cache  # type: ignore[attr-defined]
        await c.aclose()

    asyncio.run(main())


def test_async_scopes_report_missing_types_cycles_and_scoped_in_singleton_as_sync_ones_do() -> None:
    async def needs_cache(cache: Cache) -> Clock:
        return Clock()

    async def needs_clock(clock: Clock) -> Cache:
        return Cache(Pool("x"))

    async def main() -> None:
        c = make_container(Log())
        async with c.ascope() as scope:
            with pytest.raises(di.NotRegistered, match="Missing"):
                await scope.aget(Missing)
        c.register(Clock, needs_cache)
        c.register(Cache, needs_clock)
        async with c.ascope() as scope:
            with pytest.raises(di.ResolutionError, match="Clock -> Cache -> Clock"):
                await scope.aget(Clock)
        c.register(Cache, make_cache, lifetime="singleton")
        c.register(Pool, _pool_from_session, lifetime="singleton")
        async with c.ascope() as scope:
            with pytest.raises(di.ResolutionError, match="Session is scoped"):
                await scope.aget(Cache)
        with c.scope() as sync_scope, pytest.raises(di.ResolutionError, match=r"ascope\(\)"):
            await sync_scope.aget(Settings)  # aget needs an ascope()

    asyncio.run(main())


async def _pool_from_session(session: Session) -> Pool:
    return session.pool


# ----------------------------------------------------------------------------- sync scopes


class NeedsPool:
    def __init__(self, pool: Pool | None = None) -> None:
        self.pool = pool


def test_a_sync_scope_refuses_async_made_types_clearly_and_never_returns_a_coroutine() -> None:
    log = Log()

    async def make_clock() -> Clock:
        return Clock()

    c = make_container(log)
    c.register(Clock, make_clock, lifetime="transient")
    c.register(Cache, make_cache, lifetime="singleton")
    c.register(Missing, lambda: make_clock())  # type: ignore[arg-type]  # returns a coroutine
    with warnings.catch_warnings(record=True) as caught, c.scope() as scope:
        warnings.simplefilter("always")
        for tp in (Pool, Clock, Session):
            with pytest.raises(di.ResolutionError) as info:
                scope.get(tp)
            assert not isinstance(info.value, di.NotRegistered)
            message = str(info.value)
            assert tp.__name__ in message and "async def" in message, message
        with pytest.raises(di.ResolutionError, match=r"NeedsPool.*'pool'.*Pool.*async"):
            di.build(NeedsPool, scope)  # not silently the default None
        with pytest.raises(di.ResolutionError, match=r"make_cache.*'pool'.*Pool.*async factory"):
            scope.get(Cache)
        with pytest.raises(di.ResolutionError, match="returned a coroutine; declare it async"):
            scope.get(Missing)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert log.events == []  # nothing async was started

    async def made_in_an_async_scope() -> None:
        async with c.ascope() as ascope:
            await ascope.aget(Cache)  # a sync factory, made from the async Pool

    asyncio.run(made_in_an_async_scope())
    with c.scope() as scope, pytest.raises(di.ResolutionError, match=r"Cache.*async dependencies"):
        scope.get(Cache)  # the same answer as before it existed, not whichever came first
    with pytest.raises(di.ResolutionError, match="aclose"):
        c.close()
    asyncio.run(c.aclose())


def test_the_container_is_an_async_resolver() -> None:
    resolver: di.AsyncResolver = di.Container()  # mypy checks the protocol's shape
    sync_resolver: di.Resolver = di.Container()
    assert callable(resolver.ascope) and callable(sync_resolver.scope)


# ----------------------------------------------------------------------------- end to end


class OnOrder(ringq.Handler[Order]):
    """An async handler class with async-made dependencies."""

    max_parallelism = 1  # one message after the other: the log's order is fixed

    def __init__(self, repo: Repo, log: Log, done: Done) -> None:
        self.repo = repo
        self.log = log
        self.done = done

    async def handle(self, msg: Order, ctx: ringq.Context) -> None:  # type: ignore[override]
        assert not self.repo.session.closed
        row = await self.repo.session.pool.fetch(msg.n)
        self.log(f"{row} in session {self.repo.session.id} of pool {self.repo.session.pool.id}")
        self.done.count += 1
        if self.done.count == self.done.want:
            self.done.event.set()


class Done:
    def __init__(self, want: int) -> None:
        self.want = want
        self.count = 0
        self.event = asyncio.Event()


def test_an_async_queue_builds_async_handler_classes_with_async_made_dependencies(
    qdir: Path,
) -> None:
    log = Log()

    async def main() -> None:
        container = make_container(log)
        done = Done(want=2)
        container.instance(Done, done)
        async with ringq.AsyncQueue(qdir, resolver=container) as q:
            q.register(OnOrder)
            await q.publish_many([Order(1), Order(2)])
            q.start()
            await asyncio.wait_for(done.event.wait(), 10)
            assert await q.stop(drain=True)
            assert q.handler_stats()["OnOrder"]["succeeded"] == 2
        await container.aclose()

    asyncio.run(main())
    pool = next(e for e in log.events if e.startswith("row 1")).split()[-1]
    s1, s2 = (e.split()[2] for e in log.events if e.startswith("open session"))
    assert log.events == [
        "open pool",
        f"open session {s1}",
        f"row 1 in session {s1} of pool {pool}",
        f"close session {s1}",
        f"open session {s2}",
        f"row 2 in session {s2} of pool {pool}",
        f"close session {s2}",
        "close pool",
    ]


class PlainOnOrder(ringq.Handler[Order]):
    retry = ringq.Retry(max_attempts=1)

    def __init__(self, session: Session) -> None:
        self.session = session

    def handle(self, msg: Order, ctx: ringq.Context) -> None:
        raise AssertionError("never built")


def test_a_plain_handler_class_needing_an_async_made_type_is_dead_lettered_clearly(
    open_queue: OpenQueue,
) -> None:
    log = Log()
    q = open_queue(resolver=make_container(log))
    q.register(PlainOnOrder)
    mid = q.publish(Order(1))
    q.start()
    assert wait_until(lambda: len(q.dlq) == 1)
    q.stop()
    message = q.dlq.get(mid).error_message or ""
    assert "PlainOnOrder" in message and "Session" in message and "async def" in message
    assert log.events == []

"""``async def`` handlers: on ``AsyncQueue`` they run on the caller's loop,
on ``Queue`` on a loop in a thread of their own; ``max_parallelism`` is the
number of coroutines at once, ``timeout`` cancels the coroutine and retries
it by the policy, ``ctx.publish`` is committed with the ack, ``heartbeat``
moves the timeout, and sync and async handlers share one queue."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import OpenQueue, wait_until

FAST = ringq.Retry(max_attempts=2, backoff=ringq.Backoff.fixed(0.01))


@dataclass
class Order:
    n: int


@dataclass
class Shipped:
    n: int


def test_async_handlers_run_on_the_callers_loop_with_bounded_parallelism(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            running = 0
            peak = 0
            loops: set[int] = set()
            done: list[int] = []

            @q.handler(Order, max_parallelism=3)
            async def on_order(msg: Order) -> None:
                nonlocal running, peak
                loops.add(id(asyncio.get_running_loop()))
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.05)
                running -= 1
                done.append(msg.n)

            for i in range(9):
                await q.publish(Order(i))
            q.start()
            t0 = time.monotonic()
            while len(done) < 9 and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            took = time.monotonic() - t0
            assert sorted(done) == list(range(9))
            assert peak == 3
            assert took < 0.5, "three at a time: about 0.15 s"
            assert loops == {id(asyncio.get_running_loop())}
            assert await q.stop()
            stats = q.handler_stats()["on_order"]
            assert stats["succeeded"] == 9 and stats["target"] == 3 and stats["async"]
            assert q.stats()["ready"] == 0 and q.stats()["in_flight"] == 0

    asyncio.run(main())


def test_on_queue_async_handlers_run_on_a_loop_thread_beside_sync_ones(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    threads: dict[str, str] = {}
    seen: list[str] = []

    @q.handler(Order)
    async def on_order(msg: Order, ctx: ringq.Context) -> None:
        threads["async"] = threading.current_thread().name
        await asyncio.sleep(0)
        ctx.publish(Shipped(msg.n))

    @q.handler(Shipped)
    def on_shipped(msg: Shipped) -> None:
        threads["sync"] = threading.current_thread().name
        seen.append(f"shipped {msg.n}")

    q.start()
    q.publish(Order(1))
    assert wait_until(lambda: seen == ["shipped 1"])
    assert threads["async"] == "ringq-async-handlers"
    assert threads["sync"] != "ringq-async-handlers"
    assert q.stop()
    stats = q.handler_stats()
    assert stats["on_order"]["succeeded"] == 1 and stats["on_shipped"]["succeeded"] == 1


def test_the_timeout_cancels_the_coroutine_and_the_policy_retries_it(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            attempts: list[int] = []
            cancelled: list[bool] = []

            @q.handler(Order, timeout=0.1, retry=FAST)
            async def slow(msg: Order, ctx: ringq.Context) -> None:
                attempts.append(ctx.attempt)
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise

            mid = await q.publish(Order(1))
            q.start()
            t0 = time.monotonic()
            while await q.dlq.count() == 0 and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            assert attempts == [1, 2] and cancelled == [True, True]
            [dead] = await q.dlq.list()
            assert dead.id == mid and dead.error_type == "TimeoutError"
            assert "timeout" in (dead.error_message or "")
            stats = q.handler_stats()["slow"]
            assert (stats["failed"], stats["retried"], stats["dead_lettered"]) == (2, 1, 1)
            await q.stop()

    asyncio.run(main())


def test_heartbeat_extends_the_lease_and_the_timeout(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            finished: list[int] = []

            @q.handler(Order, timeout=0.2)
            async def long(msg: Order, ctx: ringq.Context) -> None:
                for _ in range(5):
                    await asyncio.sleep(0.1)
                    ctx.heartbeat()
                finished.append(ctx.attempt)

            await q.publish(Order(1))
            q.start()
            t0 = time.monotonic()
            while not finished and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            assert finished == [1]
            await q.stop()
            assert q.handler_stats()["long"]["failed"] == 0

    asyncio.run(main())


def test_a_cancelled_error_of_the_handlers_own_fails_the_attempt_and_the_worker_goes_on(
    qdir: Path,
) -> None:
    """A handler that awaits a task something else cancelled raises
    ``CancelledError`` although its worker was not cancelled: that is a failed
    attempt like any exception (retried, then dead-lettered), and the worker
    handles the next messages. It used to end the worker for good, with the
    message left to its lease: after ``max_parallelism`` of them the handler
    handled nothing more."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            seen: list[tuple[int, int]] = []

            @q.handler(Order, timeout=5, retry=FAST, max_parallelism=1)
            async def h(msg: Order, ctx: ringq.Context) -> None:
                seen.append((msg.n, ctx.attempt))
                if msg.n == 0:
                    inner = asyncio.ensure_future(asyncio.sleep(10))
                    await asyncio.sleep(0)
                    inner.cancel()
                    await inner

            mid = await q.publish(Order(0))
            for n in (1, 2):
                await q.publish(Order(n))
            q.start()
            t0 = time.monotonic()
            while len(seen) < 4 and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            assert sorted(seen) == [(0, 1), (0, 2), (1, 1), (2, 1)], seen
            assert await q.dlq.count() == 1
            [dead] = await q.dlq.list()
            assert (dead.id, dead.error_type, dead.reason) == (
                mid,
                "asyncio.exceptions.CancelledError",
                "max_attempts",
            )
            stats = q.handler_stats()["h"]
            assert (stats["workers"], stats["failed"], stats["succeeded"]) == (1, 2, 2)
            assert await q.stop(timeout=5)

    asyncio.run(main())


def test_a_heartbeat_that_shortens_the_lease_moves_the_timeout_with_it(qdir: Path) -> None:
    """``ctx.heartbeat(0.1)`` in a handler whose timeout is 10 s: the
    coroutine is cancelled when the shorter lease runs out, not 10 s later
    (while the engine retried it meanwhile: two runs of one message at once)."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            events: list[tuple[str, int, float]] = []
            t0 = time.monotonic()

            @q.handler(Order, timeout=10, retry=FAST)
            async def h(msg: Order, ctx: ringq.Context) -> None:
                events.append(("start", ctx.attempt, time.monotonic() - t0))
                if ctx.attempt == 1:
                    ctx.heartbeat(0.1)
                    try:
                        await asyncio.sleep(5)
                    except asyncio.CancelledError:
                        events.append(("cancelled", 1, time.monotonic() - t0))
                        raise

            await q.publish(Order(1))
            q.start()
            while len(events) < 3 and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            assert [e[:2] for e in events] == [("start", 1), ("cancelled", 1), ("start", 2)]
            assert events[1][2] < 2.0, events
            assert await q.stop(timeout=5)
            stats = q.handler_stats()["h"]
            assert (stats["failed"], stats["succeeded"]) == (1, 1)

    asyncio.run(main())


class _BusyOnce:
    """The handler's engine handle as it answers while another thread holds
    the engine's lock past what a call on the loop may wait (a snapshot of a
    large state, for seconds): ``WouldBlock`` from the first ``extend`` and
    ``is_superseded``; otherwise the handle itself."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.busy = {"extend", "is_superseded"}

    def __getattr__(self, name: str) -> Any:
        if name in self.busy:
            self.busy.discard(name)

            def would_block(*args: Any) -> Any:
                raise ringq.errors.WouldBlock("the engine is busy")

            return would_block
        return getattr(self.handle, name)


def test_heartbeat_and_superseded_wait_for_a_busy_engine_instead_of_raising(qdir: Path) -> None:
    """``ctx.heartbeat()`` and ``ctx.superseded`` on the loop, while the
    engine is busy (``WouldBlock``, as during a snapshot of a large state:
    reproduced with 500,000 messages and snapshots in a loop), are made as
    blocking calls. They used to raise the internal ``WouldBlock``, failing
    the attempt."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            results: list[object] = []

            @q.handler(Order, timeout=10)
            async def h(msg: Order, ctx: ringq.Context) -> None:
                busy = _BusyOnce(ctx._backend)  # type: ignore[attr-defined]
                ctx._backend = busy  # type: ignore[attr-defined]
                before = ctx.deadline
                results.append(ctx.heartbeat(30) > before + 15)
                results.append(ctx.superseded)
                results.append(sorted(busy.busy))

            await q.publish(Order(1))
            q.start()
            t0 = time.monotonic()
            while len(results) < 3 and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            assert await q.stop(timeout=5)
            assert results == [True, False, []]
            stats = q.handler_stats()["h"]
            assert (stats["failed"], stats["succeeded"]) == (0, 1)

    asyncio.run(main())


def test_a_failed_attempt_publishes_nothing_and_dead_letter_on_skips_retries(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:

            @q.handler(Order, dead_letter_on=(ValueError,))
            async def picky(msg: Order, ctx: ringq.Context) -> None:
                ctx.publish(Shipped(msg.n))
                raise ValueError("no")

            mid = await q.publish(Order(1))
            q.start()
            t0 = time.monotonic()
            while await q.dlq.count() == 0 and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            [dead] = await q.dlq.list()
            assert (dead.id, dead.reason, dead.attempts) == (mid, "non_retryable", 1)
            assert q.topic_stats().get("Shipped", {}).get("ready", 0) == 0
            await q.stop()

    asyncio.run(main())


def test_class_handlers_with_async_handle_and_stop_drains(qdir: Path) -> None:
    done: list[int] = []

    class OnOrder(ringq.Handler[Order]):
        max_parallelism = 2

        async def handle(self, msg: Order, ctx: ringq.Context) -> None:  # type: ignore[override]
            await asyncio.sleep(0.001)
            done.append(msg.n)

    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            q.register(OnOrder)
            await q.publish_many([Order(i) for i in range(20)])
            q.start()
            assert await q.stop(drain=True)
            assert sorted(done) == list(range(20))

    asyncio.run(main())


def test_run_returns_after_stop_and_cancelling_run_stops(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            seen: list[int] = []

            @q.handler(Order)
            async def on_order(msg: Order) -> None:
                seen.append(msg.n)

            runner = asyncio.create_task(q.run())
            await q.publish(Order(1))
            t0 = time.monotonic()
            while not seen and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            await q.stop()
            await asyncio.wait_for(runner, 5)
            runner = asyncio.create_task(q.run())
            await asyncio.sleep(0.01)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            assert not q.running

    asyncio.run(main())


def test_an_async_generator_and_async_with_processes_are_refused(open_queue: OpenQueue) -> None:
    q = open_queue()

    async def gen(msg: Order):  # type: ignore[no-untyped-def]
        yield

    with pytest.raises(ringq.ConfigError, match="async generator"):
        q.handler(Order)(gen)

    async def heavy(msg: Order) -> None:
        pass

    with pytest.raises(ringq.ConfigError, match="processes"):
        q.handler(Order, processes=2)(heavy)


def test_scaling_down_keeps_the_remaining_workers_and_scale_zero_then_up_still_drains(
    qdir: Path,
) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            handled: list[int] = []

            @q.handler(Order, max_parallelism=2)
            async def on_order(msg: Order) -> None:
                await asyncio.sleep(0.05)
                handled.append(msg.n)

            q.start()
            await asyncio.sleep(0.02)  # both workers wait in a checkout
            q.scale("on_order", 1)
            await asyncio.sleep(0.02)
            assert q.handler_stats()["on_order"]["workers"] == 1
            await q.publish_many([Order(i) for i in range(3)])
            t0 = time.monotonic()
            while len(handled) < 3 and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.01)
            assert sorted(handled) == [0, 1, 2]
            # Paused, resumed, then stopped with a handler running: stop waits for it.
            q.scale("on_order", 0)
            await asyncio.sleep(0.02)
            q.scale("on_order", 1)
            await q.publish(Order(9))
            t0 = time.monotonic()
            while q.handler_stats()["on_order"]["active"] == 0 and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.005)
            assert await q.stop(drain=True)
            assert 9 in handled and q.stats()["in_flight"] == 0

    asyncio.run(main())


def test_a_stop_that_times_out_lets_the_running_handler_finish_and_be_acked(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    finished = threading.Event()

    @q.handler(Order)
    async def slow(msg: Order) -> None:
        await asyncio.sleep(0.3)
        finished.set()

    q.start()
    q.publish(Order(1))
    assert wait_until(lambda: q.handler_stats()["slow"]["active"] == 1)
    assert q.stop(timeout=0.01) is False
    assert finished.wait(5)
    assert wait_until(lambda: q.stats()["acked"] == 1), "acked by the handler's own loop"


class Db:
    async def fetch(self, n: int) -> str:
        await asyncio.sleep(0)
        return f"row {n}"


class Session:
    def __init__(self, db: Db) -> None:
        self.db = db


EVENTS: list[str] = []


class OnOrderWithSession(ringq.Handler[Order]):
    def __init__(self, session: Session) -> None:
        self.session = session

    async def handle(self, msg: Order, ctx: ringq.Context) -> None:  # type: ignore[override]
        EVENTS.append(await self.session.db.fetch(msg.n))


def _async_provider() -> Any:
    dishka = pytest.importorskip("dishka")

    class Provider(dishka.Provider):  # type: ignore[misc]
        @dishka.provide(scope=dishka.Scope.APP)  # type: ignore[misc]
        async def db(self) -> Db:
            EVENTS.append("db opened")
            return Db()

        @dishka.provide(scope=dishka.Scope.REQUEST)  # type: ignore[misc]
        async def session(self, db: Db) -> AsyncIterator[Session]:
            EVENTS.append("session opened")
            yield Session(db)
            EVENTS.append("session closed")

    return Provider()


def test_async_handler_classes_get_async_dependencies_from_dishka(qdir: Path) -> None:
    dishka = pytest.importorskip("dishka")
    EVENTS.clear()

    async def main() -> None:
        container = dishka.make_async_container(_async_provider())
        resolver = ringq.di.DishkaAsyncResolver(container)
        async with ringq.AsyncQueue(qdir, resolver=resolver) as q:
            q.register(OnOrderWithSession)
            await q.publish(Order(7))
            q.start()
            t0 = time.monotonic()
            while "session closed" not in EVENTS and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.01)
            await q.stop()
            assert q.handler_stats()["OnOrderWithSession"]["succeeded"] == 1
        await container.close()

    asyncio.run(main())
    assert EVENTS == ["db opened", "session opened", "row 7", "session closed"]


def test_a_plain_handler_class_with_an_async_resolver_fails_clearly(open_queue: OpenQueue) -> None:
    dishka = pytest.importorskip("dishka")

    class Plain(ringq.Handler[Order]):
        retry = ringq.Retry(max_attempts=1)

        def handle(self, msg: Order, ctx: ringq.Context) -> None:
            pass

    container = dishka.make_async_container(dishka.Provider())
    q = open_queue(resolver=ringq.di.DishkaAsyncResolver(container))
    q.register(Plain)
    mid = q.publish(Order(1))
    q.start()
    assert wait_until(lambda: len(q.dlq) == 1)
    q.stop()
    assert "async def" in (q.dlq.get(mid).error_message or "")

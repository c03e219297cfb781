"""``async def`` handlers: on ``AsyncQueue`` they run on the caller's loop,
on ``Queue`` on a loop in a thread of their own; ``max_parallelism`` is the
number of coroutines at once, ``timeout`` cancels the coroutine and retries
it by the policy, ``ctx.publish`` is committed with the ack, ``heartbeat``
moves the timeout, and sync and async handlers share one queue."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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

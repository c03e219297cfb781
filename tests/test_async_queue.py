"""``ringq.AsyncQueue`` beyond the contract (which runs through it too,
``tests/contract``): the loop is never blocked, cancellation at every await
point leaves the queue consistent, ``durability="always"`` shares fsyncs
between concurrent tasks, and the queue belongs to one loop."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import ringq

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


async def started(coro: Awaitable[T]) -> asyncio.Task[T]:
    """A task for ``coro``, run up to its first wait: its first step runs
    in the same loop iteration as this coroutine's wake-up from
    ``sleep(0)`` (scheduled before it), before the loop looks at any
    descriptor again, so what it waits for cannot have been signalled."""
    task: asyncio.Task[T] = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    assert not task.done(), "expected the call to be waiting"
    return task


@pytest.fixture(autouse=True)
def no_turns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish gives the loop a turn every ``TURN`` seconds before it goes to
    the engine (``ringq.aio.TURN``): the cancellation tests need to know
    where the call waits, so they turn that off."""
    if "turn" not in request.node.name:
        monkeypatch.setattr(ringq.aio, "TURN", 3600.0)


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_loop_runs_while_a_publish_waits_for_room_and_a_checkout_for_a_message(
    qdir: Path,
) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, capacity=1) as q:
            await q.publish(b"first", "t")
            ticks: list[float] = []

            async def ticker() -> None:
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.001)

            tick = asyncio.create_task(ticker())
            waiting_publish = asyncio.create_task(q.publish(b"second", "t"))
            waiting_checkout = asyncio.create_task(q.checkout("other", timeout=5))
            await asyncio.sleep(0.1)
            assert not waiting_publish.done() and not waiting_checkout.done()
            assert len(ticks) > 20, "the loop kept running"
            [d] = await q.checkout("t")
            await q.ack(d)
            second = await asyncio.wait_for(waiting_publish, 5)
            [d2] = await q.checkout("t", timeout=0)
            assert (d2.id, d2.payload) == (second, b"second")
            await q.ack(d2)
            oid = await q.publish(b"o", "other")
            got = await asyncio.wait_for(waiting_checkout, 5)
            assert [x.id for x in got] == [oid]
            tick.cancel()

    run(main)


def test_a_cancelled_checkout_takes_nothing(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as q:
            task = await started(q.checkout("t", 10))
            await cancelled(task)
            mid = await q.publish(b"x", "t")
            assert q.stats()["in_flight"] == 0
            got = await q.checkout("t", 10, timeout=0)
            assert [d.id for d in got] == [mid] and got[0].attempt == 1
            # A timeout is a cancellation too.
            await q.ack(got)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await q.checkout("t", timeout=None)
            assert q.stats()["in_flight"] == 0

    run(main)


def test_a_publish_cancelled_while_waiting_for_room_published_nothing(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, capacity=1) as q:
            await q.publish(b"a", "t")
            task = await started(q.publish(b"b", "t", dedup_key="k"))
            await cancelled(task)
            [d] = await q.checkout("t", timeout=0)
            await q.ack(d)
            assert q.stats()["ready"] == 0
            # The key is free: the next publish with it is a new message.
            mid = await q.publish(b"c", "t", dedup_key="k")
            [d] = await q.checkout("t", timeout=0)
            assert (d.id, d.payload, d.version) == (mid, b"c", 1)

    run(main)


def test_a_publish_cancelled_while_waiting_for_the_fsync_was_published(qdir: Path) -> None:
    async def main() -> str:
        async with ringq.AsyncQueue(qdir, durability="always") as q:
            task = await started(q.publish(b"x", "t", dedup_key="order-1"))
            await cancelled(task)
            # Its id, from the key: publishing it again with "keep" returns it.
            mid = await q.publish(b"again", "t", dedup_key="order-1", on_duplicate="keep")
            assert q.stats()["ready"] == 1
            return mid

    mid = run(main)
    with ringq.Queue(qdir) as q:
        [d] = q.checkout("t", timeout=0)
        assert (d.id, d.payload) == (mid, b"x")


def test_an_ack_cancelled_while_waiting_for_the_fsync_took_effect(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, durability="always") as q:
            await q.publish(b"x", "t")
            ds = await q.checkout("t", timeout=0)
            task = await started(q.ack(ds))
            await cancelled(task)
            assert q.stats()["in_flight"] == 0 and q.stats()["ready"] == 0
            with pytest.raises(ringq.LeaseLost):
                await q.ack(ds)

    run(main)
    with ringq.Queue(qdir) as q:
        assert q.stats()["ready"] == 0


def test_publish_without_block_and_with_a_timeout_raise_queue_full(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, capacity=1) as q:
            await q.publish(b"a")
            with pytest.raises(ringq.QueueFull):
                await q.publish(b"b", block=False)
            t0 = time.monotonic()
            with pytest.raises(ringq.QueueFull):
                await q.publish(b"b", timeout=0.05)
            assert 0.04 < time.monotonic() - t0 < 2
            with pytest.raises(ringq.QueueFull):
                await q.publish_many([b"b", b"c"], timeout=0.05)
            assert q.stats()["ready"] == 1

    run(main)


def test_a_thousand_tasks_publishing_with_always_share_fsyncs(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, durability="always") as q:
            before = q.stats()["fsyncs"]
            ids = await asyncio.gather(*(q.publish(b"p%d" % i, "t") for i in range(1000)))
            fsyncs = q.stats()["fsyncs"] - before
            assert len(set(ids)) == 1000
            assert 1 <= fsyncs <= 100, fsyncs

    run(main)
    with ringq.Queue(qdir) as q:
        assert q.stats()["ready"] == 1000


def test_close_wakes_waiting_calls(qdir: Path) -> None:
    async def main() -> None:
        q = ringq.AsyncQueue(qdir, capacity=1)
        await q.publish(b"a")
        checkout = await started(q.checkout("t"))
        publish = await started(q.publish(b"b"))
        await q.aclose()
        for task in (checkout, publish):
            with pytest.raises(ringq.QueueClosed):
                await asyncio.wait_for(task, 5)
        with pytest.raises(ringq.QueueClosed):
            await q.publish(b"c")

    run(main)


def test_a_queue_belongs_to_the_loop_that_first_used_it(qdir: Path) -> None:
    q = ringq.AsyncQueue(qdir)
    try:
        asyncio.run(q.checkout("t", timeout=0.01))
        with pytest.raises(RuntimeError, match="event loop"):
            asyncio.run(q.checkout("t", timeout=0.01))
    finally:
        q.close()


def test_open_runs_recovery_off_the_loop_and_options_are_checked(qdir: Path) -> None:
    async def main() -> None:
        q = await ringq.AsyncQueue.open(qdir, capacity=10)
        await q.publish(b"x")
        await q.aclose()
        q = await ringq.AsyncQueue.open(qdir, capacity=10)
        assert q.stats()["ready"] == 1
        await q.aclose()
        with pytest.raises(ringq.ConfigError, match="capacity"):
            ringq.AsyncQueue(qdir, capacity=0)

    run(main)


def test_a_shared_owner_and_an_async_client_work_together(qdir: Path) -> None:
    """More on the client side: ``test_async_shared.py``."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            assert q.role == "owner"
            client = ringq.Queue(qdir, shared=True)
            try:
                client.publish(b"from a client", "t")
                [d] = await q.checkout("t", timeout=5)
                assert d.payload == b"from a client"
                await q.ack(d)
                async with ringq.AsyncQueue(qdir, shared=True) as aclient:
                    assert aclient.role == "client"
                    await aclient.publish(b"from an async client", "t")
                    [d] = await q.checkout("t", timeout=5)
                    assert d.payload == b"from an async client"
                    await q.ack(d)
            finally:
                client.close()

    run(main)


def test_the_dead_letter_queue_is_awaitable(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, max_attempts=1, durability="always") as q:
            mid = await q.publish(b"x", "t")
            [d] = await q.checkout("t", timeout=0)
            await q.nack(d, error=ValueError("bad"))
            assert await q.dlq.count() == 1
            [dead] = await q.dlq.list()
            assert (await q.dlq.get(mid)).id == dead.id == mid
            assert await q.dlq.replay(rate=1000) == 1
            [again] = await q.checkout("t", timeout=0)
            await q.nack(again)
            assert await q.dlq.purge() == 1
            assert await q.dlq.count() == 0

    run(main)


def test_a_producer_that_never_waits_still_gives_the_loop_a_turn(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, capacity=50_000) as q:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            tick = asyncio.create_task(ticker())
            t0 = time.monotonic()
            for _ in range(20_000):
                await q.publish(b"x")  # never has to wait: no room or fsync to wait for
            took = time.monotonic() - t0
            tick.cancel()
            assert ticks >= took / ringq.aio.TURN / 4, (ticks, took)  # at least 1 in 4 ms

    run(main)


def test_nack_release_and_replay_cancelled_while_waiting_for_the_fsync_took_effect(
    qdir: Path,
) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, durability="always", max_attempts=1) as q:
            for p in (b"n", b"r"):
                await q.publish(p, "t")
            nack_me, release_me = await q.checkout("t", 2, timeout=0)
            await cancelled(await started(q.nack(nack_me, error="no")))
            await cancelled(await started(q.release(release_me)))
            assert q.stats()["in_flight"] == 0
            assert await q.dlq.count() == 1  # the nack, out of attempts
            [again] = await q.checkout("t", timeout=0)
            assert (again.payload, again.attempt) == (b"r", 1)  # released: not charged
            await cancelled(await started(q.dlq.replay()))
            assert await q.dlq.count() == 0
            await q.ack(again)

    run(main)
    with ringq.Queue(qdir) as q:
        assert [d.payload for d in q.checkout("t", 5, timeout=0)] == [b"n"]


def test_calls_waiting_for_their_fsync_end_when_the_queue_closes(qdir: Path) -> None:
    async def main() -> None:
        q = ringq.AsyncQueue(qdir, durability="always")
        tasks = [asyncio.ensure_future(q.publish(b"x%d" % i)) for i in range(50)]
        await asyncio.sleep(0)
        await q.aclose()
        done, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending, f"{len(pending)} still waiting"
        for t in done:  # each either made it to disk or says the queue closed
            assert t.exception() is None or isinstance(t.exception(), ringq.QueueClosed)

    run(main)


def test_a_batch_that_can_never_fit_is_refused_at_once(qdir: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(qdir, capacity=10) as q:
            t0 = time.monotonic()
            with pytest.raises(ringq.QueueFull) as info:
                await q.publish_many([b"x"] * 11)
            assert time.monotonic() - t0 < 1
            assert (info.value.need, info.value.capacity) == (11, 10)

    run(main)


def test_closed_async_queues_leave_no_descriptor_behind(qdir: Path) -> None:
    import gc
    import os

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def cycle(i: int) -> None:
        async with ringq.AsyncQueue(qdir / str(i)) as q:
            await q.publish(b"x")
            await q.checkout(timeout=0)

    gc.disable()
    try:
        run(lambda: cycle(0))
        before = fds()
        for i in range(1, 11):
            run(lambda i=i: cycle(i))  # type: ignore[misc]
        assert fds() - before <= 2
    finally:
        gc.enable()


def test_a_busy_engine_does_not_hold_up_the_loop(qdir: Path) -> None:
    """Another thread holds the engine's lock for 0.3 s (as a snapshot copying
    a large state would): calls from the loop run in a worker thread meanwhile
    instead of waiting on the loop; the loop keeps ticking."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, durability="always") as q:
            await q.publish(b"first", "t")
            gaps: list[float] = []

            async def ticker() -> None:
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.002)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            tick = asyncio.create_task(ticker())
            holder = asyncio.ensure_future(asyncio.to_thread(q.backend._hold_lock, 0.3))  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)
            t0 = time.monotonic()
            mid = await q.publish(b"second", "t")
            got = await q.checkout("t", 10, timeout=0)
            await q.ack(got)
            took = time.monotonic() - t0
            await holder
            tick.cancel()
            assert [d.payload for d in got] == [b"first", b"second"] and got[1].id == mid
            assert took >= 0.2, "they waited for the lock (in a worker thread)"
            assert max(gaps) < 0.1, f"the loop stalled {max(gaps):.3f} s"
            assert q.stats()["in_flight"] == 0 and q.stats()["ready"] == 0

    run(main)


def test_a_publish_made_while_the_engine_was_busy_waits_for_room_on_the_loop(
    qdir: Path,
) -> None:
    """The engine busy (another thread holds its lock), a publish runs in a
    worker thread; on a full queue it waits for room back on the loop, so a
    cancelled one published nothing. The thread used to wait for room
    itself: cancelled, the call returned, and the thread published once room
    came (the caller, told it failed, would publish again: a duplicate)."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, capacity=1) as q:
            await q.publish(b"first", "t")
            hold = q.backend._hold_lock  # type: ignore[attr-defined]
            holder = asyncio.ensure_future(asyncio.to_thread(hold, 0.2))
            await asyncio.sleep(0.05)
            task = asyncio.ensure_future(q.publish(b"cancelled", "t"))
            await holder
            await asyncio.sleep(0.1)  # the thread's publish found the queue full
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            [first] = await q.checkout("t", 10, timeout=0)
            await q.ack([first])
            await asyncio.sleep(0.3)  # a thread waiting for room would publish now
            assert await q.checkout("t", 10, timeout=0) == []
            # Not cancelled, it publishes once room comes.
            await q.publish(b"second", "t")
            holder = asyncio.ensure_future(asyncio.to_thread(hold, 0.2))
            await asyncio.sleep(0.05)
            task = asyncio.ensure_future(q.publish(b"third", "t", timeout=10))
            await holder
            [second] = await q.checkout("t", 10, timeout=0)
            await q.ack([second])
            mid = await asyncio.wait_for(task, 10)
            [third] = await q.checkout("t", 10, timeout=0)
            assert (third.id, third.payload) == (mid, b"third")

    run(main)


def test_a_failed_fsync_fails_the_concurrent_publishes_it_covered_and_none_hangs(
    qdir: Path,
) -> None:
    """Many tasks' records share fsync requests (asked once per turn of the
    loop): a failed fsync reaches the tasks whose records it covered (the
    engine's heal, with fsyncs of its own, may make later ones durable: those
    succeed), none waits for good, and the queue works again after. (On a
    disk that keeps failing, every later call heals the engine first, a
    snapshot each: a few milliseconds per call, hence few calls here.)"""

    async def main() -> list[str]:
        async with ringq.AsyncQueue(qdir, durability="always") as q:
            await q.publish(b"before")
            q.backend._inject_fault("sync", errno.EIO, -1)  # type: ignore[attr-defined]
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(q.publish(b"%d" % i) for i in range(60)), return_exceptions=True),
                120,
            )
            failed = [o for o in outcomes if isinstance(o, ringq.StorageError)]
            ok = [o for o in outcomes if isinstance(o, str)]
            assert failed, "the failed fsync reached the tasks it covered"
            assert len(failed) + len(ok) == 60, outcomes
            q.backend._inject_fault("sync", 0, 0)  # type: ignore[attr-defined]
            ids = await asyncio.wait_for(
                asyncio.gather(*(q.publish(b"after %d" % i) for i in range(300))), 120
            )
            assert len(set(ids)) == 300
            return ok + ids

    confirmed = run(main)
    with ringq.Queue(qdir) as q:
        present = {d.id for d in q.checkout(max_messages=1000, timeout=0)}
    assert set(confirmed) <= present, "every confirmed publish is there after a reopen"

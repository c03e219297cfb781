"""``ringq.AsyncQueue`` as a shared queue's client: its own connection to
the owner, driven by the event loop (the contract suite runs through it
too, ``tests/contract``). The owner does the waiting; a cancelled call
withdraws its request and leaves nothing behind; the owner's death fails
the calls in flight and the next call takes the queue over."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import ringq
from conftest import Spawn, read_line

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_every_call_is_answered_by_the_owner_and_the_loop_keeps_running(qdir: Path) -> None:
    owner = ringq.Queue(qdir, shared=True, capacity=2)

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            assert q.role == "client"
            ticks: list[float] = []

            async def ticker() -> None:
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.001)

            tick = asyncio.ensure_future(ticker())
            # Waiting for a message happens at the owner; the loop runs.
            waiting = asyncio.ensure_future(q.checkout("t", timeout=10))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            n = len(ticks)
            assert n > 50, f"the loop ticked only {n} times while a checkout waited"
            mid = await q.publish({"a": 1}, "t")
            [d] = await waiting
            assert d.id == mid and d.attempt == 1
            assert not gc.is_tracked(d), "a delivery holds no cycle: off the collector"
            assert await q.extend(d, 60) > time.time()
            await q.ack(d)
            # Waiting for room too.
            await q.publish_many([b"1", b"2"], "u")
            with pytest.raises(ringq.QueueFull):
                await q.publish(b"3", "u", block=False)
            blocked = asyncio.ensure_future(q.publish(b"3", "u"))
            await asyncio.sleep(0.1)
            assert not blocked.done()
            [first] = await q.checkout("u", timeout=0)
            await q.ack(first)
            assert (await blocked).startswith("")
            got = await q.checkout("u", max_messages=5, timeout=0)
            assert [x.payload for x in got] == [b"2", b"3"]
            with pytest.raises(ringq.LeaseLost):
                await q.ack([first])
            await q.release(got)
            [again] = await q.checkout("u", timeout=0)
            assert again.attempt == 1, "a release does not count a delivery"
            await q.nack(again, error=ValueError("no"))
            tick.cancel()

    try:
        run(main)
    finally:
        owner.close()


def test_a_cancelled_checkout_takes_nothing_whenever_it_is_cancelled(qdir: Path) -> None:
    owner = ringq.Queue(qdir, shared=True)

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            # Cancelled while the owner waits: the owner stops waiting, and
            # a message published afterwards goes to the next checkout.
            waiting = asyncio.ensure_future(q.checkout("t", timeout=30))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.sleep(0.3)  # past the owner's 0.1 s slice
            owner.publish(b"later", "t")
            [d] = await q.checkout("t", timeout=5)
            assert d.payload == b"later" and d.attempt == 1
            await q.ack(d)
            # Cancelled after the owner answered with a message: the answer
            # is given back unstarted when it comes.
            owner.publish(b"ready", "t")
            task = asyncio.ensure_future(q.checkout("t", timeout=5))
            for _ in range(3):  # the task submits; the request is written
                await asyncio.sleep(0)
            # Not letting the loop read the answer until the task is cancelled.
            deadline = time.monotonic() + 10
            while owner.stats()["in_flight"] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.001)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: owner.stats()["in_flight"] == 0)
            [d] = await q.checkout("t", timeout=5)
            assert d.payload == b"ready"
            assert d.attempt == 1, "the withdrawn delivery was not counted"
            await q.ack(d)
            # Cancelled in the very turn of the loop that read the answer
            # (a timeout firing then): too late to withdraw; the deliveries
            # are given back. They stayed leased, until their lease ran out.
            owner.publish(b"answered", "t")
            answers = q._answers  # type: ignore[attr-defined]
            assert answers is not None
            expect = answers.expect

            def expect_then_cancel(ticket: int) -> asyncio.Future[Any]:
                answers.expect = expect  # the checkout's request only
                fut = expect(ticket)
                caller = asyncio.current_task()
                assert caller is not None
                fut.add_done_callback(lambda _f: caller.cancel())
                return fut

            answers.expect = expect_then_cancel
            task = asyncio.ensure_future(q.checkout("t", timeout=5))
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: owner.stats()["in_flight"] == 0)
            [d] = await q.checkout("t", timeout=5)
            assert (d.payload, d.attempt) == (b"answered", 1)
            await q.ack(d)

    try:
        run(main)
    finally:
        owner.close()


def test_a_publish_cancelled_while_waiting_for_room_is_not_published(qdir: Path) -> None:
    owner = ringq.Queue(qdir, shared=True, capacity=1)

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            await q.publish(b"fills it", "t")
            task = asyncio.ensure_future(q.publish(b"cancelled", "t", dedup_key="k"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.3)  # past the owner's 0.1 s slice
            [d] = await q.checkout("t", timeout=0)
            await q.ack(d)
            await asyncio.sleep(0.2)
            assert owner.stats()["ready"] == 0, "the withdrawn publish did not happen"

    try:
        run(main)
    finally:
        owner.close()


def test_many_tasks_share_the_connection_and_the_owners_fsyncs(qdir: Path) -> None:
    owner = ringq.Queue(qdir, shared=True, durability="always")

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            before = owner.stats()["fsyncs"]
            ids = await asyncio.gather(*(q.publish(b"%d" % i, "t") for i in range(1000)))
            assert len(set(ids)) == 1000
            fsyncs = owner.stats()["fsyncs"] - before
            assert 0 < fsyncs < 200, f"{fsyncs} fsyncs for 1000 concurrent publishes"
            got = await q.checkout("t", max_messages=1000, timeout=0)
            assert sorted(d.id for d in got) == sorted(ids)
            await q.ack(got)

    try:
        run(main)
    finally:
        owner.close()


def test_async_handlers_and_the_dead_letter_queue_on_a_client(qdir: Path) -> None:
    owner = ringq.Queue(qdir, shared=True, max_attempts=1)

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            seen: list[int] = []
            extended: list[float] = []

            @q.handler(int, topic="n", timeout=30, retry=ringq.Retry(max_attempts=1))
            async def on_n(n: int, ctx: ringq.Context) -> None:
                extended.append(ctx.heartbeat(20))
                if n < 0:
                    raise ValueError("negative")
                seen.append(n)
                ctx.publish(n * 10, topic="tens")

            q.start()
            for i in (1, 2, -3):
                await q.publish(i, "n")
            await until(lambda: len(seen) == 2 and owner.stats()["dead"] == 1)
            assert sorted(seen) == [1, 2]
            assert all(e > time.time() + 10 for e in extended)
            await q.stop()
            tens = await q.checkout("tens", max_messages=5, timeout=0)
            assert sorted(d.payload for d in tens) == [b"10", b"20"]
            await q.ack(tens)
            assert await q.dlq.count() == 1
            [dead] = await q.dlq.list()
            assert dead.error_type == "ValueError" and (await q.dlq.get(dead.id)).id == dead.id
            assert await q.dlq.replay(where=lambda d: d.topic == "n") == 1
            # The stopped pool's waiting checkout was withdrawn: if it took
            # the replayed message before the owner saw that, it gave it back.
            [d] = await q.checkout("n", timeout=5)
            assert d.attempt == 1
            await q.nack(d, error="again")  # its topic's policy: 1 attempt
            assert await q.dlq.purge() == 1
            assert await q.dlq.count() == 0

    try:
        run(main)
    finally:
        owner.close()


def test_the_owners_death_fails_the_calls_in_flight_and_the_next_call_takes_over(
    qdir: Path, spawn: Spawn
) -> None:
    owner = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1], shared=True)
        q.publish(b"before", "t")
        print(q.role, flush=True)
        time.sleep(600)
        """,
        str(qdir),
    )
    assert read_line(owner) == "owner"

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            assert q.role == "client"
            [held] = await q.checkout("t", timeout=5)
            waiting = asyncio.ensure_future(q.checkout("never", timeout=60))
            await asyncio.sleep(0.1)
            os.kill(owner.pid, signal.SIGKILL)
            with pytest.raises(ringq.OwnerGone, match="whether the call took effect is unknown"):
                await waiting
            # The next call finds nobody and takes the directory over (in a
            # worker thread); the calls after it go to the engine here.
            await q.publish(b"after", "t")
            assert q.role == "owner"
            got = await q.checkout("t", max_messages=10, timeout=0)
            assert sorted(x.payload for x in got) == [b"after", b"before"]
            with pytest.raises(ringq.LeaseLost):
                await q.ack(held)
            await q.ack(got)
            late = asyncio.ensure_future(q.checkout("t", timeout=5))
            await asyncio.sleep(0.05)
            await q.publish(b"woken by the engine here", "t")
            [d] = await late
            assert d.payload == b"woken by the engine here"
            await q.ack(d)

    run(main)


def test_a_publish_to_a_full_queue_a_new_owner_took_over_waits_its_timeout(
    qdir: Path, spawn: Spawn
) -> None:
    """The owner dies and another process takes the full queue over: the
    client's loop connection is down, so its publish goes through its
    blocking connection (``WouldBlock`` on the loop), and the new owner
    waits for room until the timeout: ``QueueFull`` after it."""
    owner_code = """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1], shared=True, capacity=1)
        print(q.role, flush=True)
        time.sleep(600)
        """
    first = spawn(owner_code, str(qdir))
    assert read_line(first) == "owner"

    async def main() -> None:
        async with ringq.AsyncQueue(qdir, shared=True) as q:
            assert q.role == "client"
            await q.publish(b"fill", "t")
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            await asyncio.sleep(0.2)  # the loop sees its connection hang up
            second = spawn(owner_code, str(qdir))
            assert read_line(second) == "owner"
            t0 = time.monotonic()
            with pytest.raises(ringq.QueueFull):
                await q.publish(b"no room", "t", timeout=0.5)
            assert time.monotonic() - t0 >= 0.4
            assert q.role == "client"

    run(main)


def test_a_cancelled_withdrawal_survives_a_closed_queue(qdir: Path) -> None:
    """Closing the client with a checkout waiting ends it with QueueClosed
    and the owner forgets the connection's requests."""
    owner = ringq.Queue(qdir, shared=True)

    async def main() -> Any:
        q = ringq.AsyncQueue(qdir, shared=True)
        waiting = asyncio.ensure_future(q.checkout("t", timeout=30))
        await asyncio.sleep(0.05)
        await q.aclose()
        with pytest.raises(ringq.QueueClosed):
            await waiting
        owner.publish(b"x", "t")
        await asyncio.sleep(0.3)
        return owner.stats()

    try:
        stats = run(main)
        assert stats["ready"] == 1 and stats["in_flight"] == 0
    finally:
        owner.close()

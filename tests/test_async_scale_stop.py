"""Async handlers: scaling a pool down gives back the messages it checked
out and had not started (they waited in the pool for a worker while their
lease ran down, and an expiry spent an attempt of a message no handler
ran), and ``AsyncQueue.run()`` returns after a stop made from another
thread (``aq.queue.stop()``, the admin endpoint's drain)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import ManualClockQueue

ONCE = ringq.Retry(max_attempts=1)


class ManualClockAsyncQueue(ringq.AsyncQueue):
    """An ``AsyncQueue`` over a ``ManualClockQueue`` (leases expire on ``advance``)."""

    def _open_queue(self, path: str | os.PathLike[str], **options: Any) -> ringq.Queue:
        return ManualClockQueue(path, **options)


def _pool(aq: ringq.AsyncQueue, name: str) -> Any:
    dispatcher = aq.queue._dispatcher
    assert dispatcher is not None and dispatcher._async is not None
    return dispatcher._async.pools[name]


async def _until(predicate: Any, timeout: float = 5.0) -> bool:
    """Awaits ``predicate()`` (polled on the loop) for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def _scaled_down_while_busy(
    aq: ringq.AsyncQueue,
    release: asyncio.Event,
    heartbeat: float | None = None,
    rate_limit: str | None = None,
) -> tuple[list[tuple[bytes, int]], asyncio.Event]:
    """A handler of four coroutines that, when its second message starts,
    is scaled down to one: two messages were checked out with the second
    (one batch for the three idle workers) and not started; the two
    running ones wait for ``release`` (after a heartbeat of ``heartbeat``
    seconds, if given)."""
    ran: list[tuple[bytes, int]] = []
    scaled = asyncio.Event()

    @aq.handler(bytes, topic="t", timeout=30, max_parallelism=4, retry=ONCE, rate_limit=rate_limit)
    async def h(m: bytes, ctx: ringq.Context) -> None:
        ran.append((m, ctx.attempt))
        if len(ran) == 2 and not scaled.is_set():
            # Before the other idle workers had a turn to take theirs.
            aq.scale("h", 1)
            scaled.set()
        if heartbeat is not None:
            ctx.heartbeat(heartbeat)
        await release.wait()

    return ran, scaled


async def _publish_four_until_scaled(aq: ringq.AsyncQueue, scaled: asyncio.Event) -> Any:
    """Once the four workers of ``_scaled_down_while_busy`` wait, publishes
    four messages and waits for the scale-down; returns the pool."""
    pool = _pool(aq, "h")
    assert await _until(lambda: pool.idle == 4)  # all four wait for messages
    await aq.publish_many([b"m0", b"m1", b"m2", b"m3"], "t")
    assert await _until(scaled.is_set)
    return pool


def test_scaling_down_gives_back_the_unstarted_messages_at_once(qdir: Path) -> None:
    """They are released (their delivery not counted), not left in the
    pool until a busy worker gets to them; each message then runs once."""

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir)
        release = asyncio.Event()
        ran, scaled = _scaled_down_while_busy(aq, release)
        aq.start()
        try:
            pool = await _publish_four_until_scaled(aq, scaled)
            assert await _until(lambda: len(pool.workers) == 2)  # the two running
            # The two not started are back in the queue, not leased in the pool.
            given_back = await _until(lambda: aq.stats()["ready"] == 2, timeout=2)
            stats = aq.stats()
            assert given_back, (stats["ready"], stats["in_flight"], len(pool.ready))
            assert stats["in_flight"] == 2 and not pool.ready
            assert len(ran) == 2
            release.set()
            assert await _until(lambda: len(ran) == 4 and aq.stats()["in_flight"] == 0)
            assert sorted(ran) == [(b"m0", 1), (b"m1", 1), (b"m2", 1), (b"m3", 1)]
            assert await aq.stop(timeout=5)
            hs = aq.handler_stats()["h"]
            assert (hs["succeeded"], hs["late_acks"], hs["failed"]) == (4, 0, 0)
            assert hs["workers"] == 0 and hs["target"] == 1
            assert await aq.dlq.count() == 0
        finally:
            release.set()
            await aq.aclose()

    asyncio.run(main())


def test_scaling_a_limited_handler_down_gives_back_the_tokens_of_what_it_releases(
    qdir: Path,
) -> None:
    """Under a rate limit each message checked out took a token: the two
    released by the scale-down give theirs back, and take them again when
    the remaining worker checks them out (kept, they cost two each, and
    with the burst of 4 spent the last two waited 15 minutes each)."""

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir)
        release = asyncio.Event()
        ran, scaled = _scaled_down_while_busy(aq, release, rate_limit="4/h, burst=4")
        aq.start()
        try:
            await _publish_four_until_scaled(aq, scaled)
            assert await _until(lambda: aq.stats()["ready"] == 2, timeout=2)
            release.set()
            assert await _until(lambda: len(ran) == 4, timeout=5), ran
            assert sorted(ran) == [(b"m0", 1), (b"m1", 1), (b"m2", 1), (b"m3", 1)]
        finally:
            release.set()
            await aq.stop(drain=False, timeout=5)
            await aq.aclose()

    asyncio.run(main())


def test_scaling_down_spends_no_attempt_of_a_message_that_never_ran(qdir: Path) -> None:
    """The leases run out (a manual clock) while the running handlers hold
    theirs with a heartbeat: with ``max_attempts=1`` a checked-out message
    left in the pool was dead-lettered (``lease_expired``) without ever
    running, then run all the same and its ack refused. Given back, it
    waits in the queue and runs once."""

    async def main() -> None:
        aq = ManualClockAsyncQueue(qdir)
        clock = aq.queue
        assert isinstance(clock, ManualClockQueue)
        release = asyncio.Event()
        ran, scaled = _scaled_down_while_busy(aq, release, heartbeat=3600)
        aq.start()
        try:
            await _publish_four_until_scaled(aq, scaled)
            # (no assertion: the test is what the leases' end does)
            await _until(lambda: aq.stats()["ready"] == 2, timeout=1)
            clock.advance(120)  # every lease of the batch has run out but the heartbeats'
            release.set()
            assert await _until(
                lambda: len(ran) == 4 and aq.stats()["in_flight"] == 0 and aq.stats()["ready"] == 0
            )
            assert await aq.stop(timeout=5)
            assert await aq.dlq.list() == []
            assert sorted(ran) == [(b"m0", 1), (b"m1", 1), (b"m2", 1), (b"m3", 1)]
            hs = aq.handler_stats()["h"]
            assert (hs["succeeded"], hs["late_acks"], hs["failed"]) == (4, 0, 0)
        finally:
            release.set()
            await aq.aclose()

    asyncio.run(main())


def test_scaling_to_zero_and_back_with_a_busy_worker_loses_nothing(qdir: Path) -> None:
    """Scaled to 0 while a handler runs and others are checked out, then
    back up: every message runs exactly once, none is left leased."""

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir)
        release = asyncio.Event()
        ran: list[tuple[bytes, int]] = []

        @aq.handler(bytes, topic="t", timeout=30, max_parallelism=3, retry=ONCE)
        async def h(m: bytes, ctx: ringq.Context) -> None:
            ran.append((m, ctx.attempt))
            if len(ran) == 2:
                aq.scale("h", 0)
            await release.wait()

        aq.start()
        try:
            pool = _pool(aq, "h")
            assert await _until(lambda: pool.idle == 3)  # all three wait for messages
            await aq.publish_many([b"a", b"b", b"c", b"d", b"e"], "t")
            assert await _until(lambda: len(ran) >= 2)
            # Nothing more starts, and nothing else is held by the pool.
            assert await _until(lambda: aq.stats()["in_flight"] == len(ran), timeout=2)
            assert not pool.ready
            release.set()
            assert await _until(lambda: not pool.workers)
            assert aq.stats()["in_flight"] == 0
            aq.scale("h", 2)
            assert await _until(lambda: len(ran) == 5 and aq.stats()["in_flight"] == 0)
            assert sorted(ran) == [(m, 1) for m in (b"a", b"b", b"c", b"d", b"e")]
            assert await aq.stop(timeout=5)
            assert await aq.dlq.count() == 0
        finally:
            release.set()
            await aq.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("how", ["stop", "admin_drain"])
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_run_returns_after_a_stop_from_another_thread(qdir: Path, kind: str, how: str) -> None:
    """``await aq.run()`` waited for ``aq.stop()`` only: a stop from
    another thread stopped the handlers and left ``run()`` waiting for
    ever. It now returns once they stopped (async and thread handlers)."""

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir)
        handled: list[bytes] = []

        if kind == "async":

            @aq.handler(bytes, topic="t", max_parallelism=2)
            async def on_async(m: bytes) -> None:
                handled.append(m)

        else:

            @aq.handler(bytes, topic="t", max_parallelism=2)
            def on_sync(m: bytes) -> None:
                handled.append(m)

        runner = asyncio.create_task(aq.run())
        try:
            await aq.publish(b"a", "t")
            assert await _until(lambda: handled == [b"a"])
            outcome: list[bool] = []

            def stop_elsewhere() -> None:
                if how == "stop":
                    outcome.append(aq.queue.stop(True, 10))
                else:
                    outcome.append(aq.queue.admin.drain(timeout=10))

            stopper = threading.Thread(target=stop_elsewhere)
            stopper.start()
            try:
                await asyncio.wait_for(asyncio.shield(runner), 10)
            except TimeoutError:
                pytest.fail(f"run() did not return after a {how} from another thread")
            finally:
                await asyncio.to_thread(stopper.join, 15)
            assert outcome == [True]
            assert not aq.running
            if kind == "async":
                assert not _pool(aq, "on_async").workers
            # Stopped for good: what is published now waits.
            await aq.publish(b"b", "t")
            for _ in range(50):
                await asyncio.sleep(0)
            assert handled == [b"a"] and aq.stats()["ready"] == 1
            # And run() starts the handlers again.
            runner = asyncio.create_task(aq.run())
            assert await _until(lambda: handled == [b"a", b"b"])
            assert await aq.stop(timeout=5)
            await asyncio.wait_for(runner, 5)
        finally:
            if not runner.done():
                runner.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await runner
            await aq.aclose()

    asyncio.run(main())


def _cancel_mid_handler(tmp_path: Path, retry: ringq.Retry) -> Any:
    """Publishes one message to a handler that never finishes, cancels its
    worker from outside mid-handler, and returns the queue's stats, the
    dead letters and the next checkout of the topic."""

    async def main() -> Any:
        aq = ringq.AsyncQueue(tmp_path / "q")
        started, never = asyncio.Event(), asyncio.Event()

        @aq.handler(bytes, topic="t", timeout=30, max_parallelism=1, retry=retry)
        async def h(m: bytes) -> None:
            started.set()
            await never.wait()

        aq.start()
        try:
            await aq.publish(b"a", "t")
            await asyncio.wait_for(started.wait(), 5)
            (w,) = _pool(aq, "h").workers
            task = w.task
            task.cancel()  # from outside, mid-handler
            done, _ = await asyncio.wait([task], timeout=5)
            assert task in done and task.cancelled()
            stats = aq.stats()
            dead = await aq.dlq.list()
            got = await aq.checkout("t", timeout=0)
            await aq.ack(got)
            return stats, dead, got
        finally:
            never.set()
            await aq.stop(drain=False, timeout=1)
            await aq.aclose()

    return asyncio.run(main())


def test_a_worker_cancelled_from_outside_mid_handler_ends_the_attempt_at_once(
    tmp_path: Path,
) -> None:
    """A worker cancelled while its handler runs (a stop that timed out,
    asyncio.run's teardown, a task group): the attempt ends now (the
    message stayed leased until its lease ran out, 30 s here) and counts,
    as the expiry's would: a handler that always outlasts a shutdown must
    not run its message for ever uncounted."""
    stats, dead, got = _cancel_mid_handler(tmp_path, ringq.Retry(max_attempts=3))
    assert (stats["in_flight"], stats["ready"]) == (0, 1)
    assert not dead
    (d,) = got
    assert d.payload == b"a" and d.attempt == 2  # the interrupted run counted


def test_a_worker_cancelled_on_the_last_attempt_dead_letters_its_message(tmp_path: Path) -> None:
    stats, dead, got = _cancel_mid_handler(tmp_path, ONCE)
    assert (stats["in_flight"], stats["ready"]) == (0, 0) and not got
    (dl,) = dead
    assert dl.reason == "max_attempts" and dl.message.payload == b"a"
    assert "cancelled" in (dl.error_type or "").lower() + (dl.error_message or "").lower()


def test_a_queues_own_handler_loop_is_closed_after_a_stop_that_timed_out(tmp_path: Path) -> None:
    """``Queue`` runs async handlers on a loop in a thread of its own. A
    stop that timed out leaves that loop to stop once its handlers end; it
    was then never closed (its epoll fd and executor stayed, and a
    ResourceWarning came when it was collected)."""
    go = threading.Event()
    with ringq.Queue(tmp_path / "q") as q:
        started = threading.Event()

        @q.handler(bytes, topic="t", timeout=30, max_parallelism=1)
        async def h(m: bytes) -> None:
            started.set()
            while not go.is_set():
                await asyncio.sleep(0.005)

        q.start()
        q.publish(b"a", "t")
        assert started.wait(5)
        handlers = q._dispatcher._async  # type: ignore[union-attr]
        assert handlers is not None
        loop, thread = handlers.loop, handlers.own_thread
        assert loop is not None and thread is not None
        assert q.stop(timeout=0.05) is False  # the handler still runs
        go.set()
        thread.join(10)
        assert not thread.is_alive()
        assert loop.is_closed()
        assert q.stats()["total"] == 0  # it finished and was acked

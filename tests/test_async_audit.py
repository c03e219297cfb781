"""Fixes from an audit of the asyncio API (``ringq.AsyncQueue`` and async
handlers): a second cancel during a timed-out handler's cleanup, publish
middleware on the loop's fast path, ``stop``'s arguments and timeout, a
queue closed under a running handler, and ``q.stop()`` from a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import ringq

SLOW_RETRY = ringq.Retry(max_attempts=5, backoff=ringq.Backoff.fixed(60))


def _pool(aq: ringq.AsyncQueue, name: str) -> object:
    dispatcher = aq.queue._dispatcher
    assert dispatcher is not None and dispatcher._async is not None
    return dispatcher._async.pools[name]


def test_a_cancel_during_a_timed_out_handlers_cleanup_ends_its_worker(qdir: Path) -> None:
    """The watchdog cancelled the handler (its timeout); while it cleans
    up, its worker is cancelled from outside (asyncio.run's teardown, a
    task group): the worker ends cancelled (it went back to checkout for
    ever: asyncio.run never returned) and the attempt's failure is
    recorded (the message is not left leased)."""

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir)
        started, cleaning, never = asyncio.Event(), asyncio.Event(), asyncio.Event()

        @aq.handler(bytes, topic="t", timeout=30, max_parallelism=1, retry=SLOW_RETRY)
        async def h(m: bytes) -> None:
            started.set()
            try:
                await never.wait()
            except asyncio.CancelledError:
                cleaning.set()
                await never.wait()  # cleanup that awaits
                raise

        aq.start()
        try:
            await aq.publish(b"a", "t")
            await asyncio.wait_for(started.wait(), 5)
            pool = _pool(aq, "h")
            (w,) = pool.workers  # type: ignore[attr-defined]
            task = w.task
            w.deadline = 0.0  # its timeout is past (no sleeping for it)
            pool._watchdog()  # type: ignore[attr-defined]
            await asyncio.wait_for(cleaning.wait(), 5)
            task.cancel()  # from outside, during the cleanup
            done, _ = await asyncio.wait([task], timeout=5)
            assert task in done, "the worker went on after a cancel from outside"
            assert task.cancelled()
            stats = aq.stats()
            assert stats["in_flight"] == 0
            assert stats["delayed"] == 1  # the failed attempt, retried by the policy
            assert aq.handler_stats()["h"]["failed"] == 1
        finally:
            never.set()
            await aq.stop(drain=False, timeout=1)
            await aq.aclose()

    asyncio.run(main())


class _Seen:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def before_publish(self, message: ringq.OutgoingMessage) -> ringq.OutgoingMessage:
        self.payloads.append(message.payload)
        return message


def test_before_publish_sees_the_bytes_an_async_queue_publishes(tmp_path: Path) -> None:
    """Bytes took the engine's frameless path on the loop, which has no room
    for hooks: ``before_publish`` (and tracing's publish spans) missed them.
    Middleware added before the AsyncQueue's loop side was made, after it,
    and after a first publish, all see them."""
    early = _Seen()

    class Hooked(ringq.AsyncQueue):
        def _open_queue(self, path: object, **options: object) -> ringq.Queue:
            q = super()._open_queue(path, **options)  # type: ignore[arg-type]
            q.add_middleware(early)
            return q

    async def main() -> None:
        async with Hooked(tmp_path / "a") as aq:
            await aq.publish(b"x", "t")
            await aq.publish_many([b"y", b"z"], "t")
        assert early.payloads == [b"x", b"y", b"z"]

        async with ringq.AsyncQueue(tmp_path / "b") as aq:
            await aq.publish(b"before", "t")  # no hooks yet: the fast path
            late = _Seen()
            aq.add_middleware(late)
            await aq.publish(b"x", "t")
            await aq.publish(b"y", topic="t")
            await aq.publish_many([b"z"], "t")
            direct = _Seen()
            aq.queue.add_middleware(direct)  # as ringq.tracing.trace_queue(aq.queue) does
            await aq.publish(b"w", "t")
            assert late.payloads == [b"x", b"y", b"z", b"w"]
            assert direct.payloads == [b"w"]

    asyncio.run(main())


def test_stop_checks_its_timeout_before_it_stops_anything(qdir: Path) -> None:
    """``stop(timeout=-1)`` raised Queue.stop's ValueError only after the
    async handlers had stopped: a half-stopped queue that still said it ran."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as aq:
            seen: list[bytes] = []
            got = asyncio.Event()

            @aq.handler(bytes, topic="t")
            async def h(m: bytes) -> None:
                seen.append(m)
                got.set()

            aq.start()
            for bad in (-1, float("nan")):
                try:
                    await aq.stop(timeout=bad)
                except ValueError as e:
                    assert "timeout" in str(e)
                else:
                    raise AssertionError(f"stop(timeout={bad}) did not raise")
            try:
                await aq.stop(timeout="1")  # type: ignore[arg-type]
            except TypeError:
                pass
            else:
                raise AssertionError("stop(timeout='1') did not raise")
            assert aq.running
            await aq.publish(b"a", "t")
            await asyncio.wait_for(got.wait(), 5)  # the async handler still runs
            assert seen == [b"a"]
            assert await aq.stop(timeout=5)

    asyncio.run(main())


def test_stop_waits_at_most_its_timeout_for_async_and_thread_handlers(qdir: Path) -> None:
    """The async handlers got ``timeout``, then the threads another one."""

    async def main() -> None:
        async with ringq.AsyncQueue(qdir) as aq:
            release_async = asyncio.Event()
            release_thread = threading.Event()
            async_running, thread_running = asyncio.Event(), threading.Event()

            @aq.handler(bytes, topic="a")
            async def ah(m: bytes) -> None:
                async_running.set()
                await release_async.wait()

            @aq.handler(bytes, topic="s")
            def sh(m: bytes) -> None:
                thread_running.set()
                release_thread.wait(10)

            aq.start()
            try:
                await aq.publish(b"x", "a")
                await aq.publish(b"x", "s")
                await asyncio.wait_for(async_running.wait(), 5)
                assert await asyncio.to_thread(thread_running.wait, 5)
                t0 = time.monotonic()
                assert not await aq.stop(timeout=2)
                took = time.monotonic() - t0
                assert 1.9 < took < 3.5, took  # it took twice the timeout (4 s)
            finally:
                release_async.set()
                release_thread.set()

    asyncio.run(main())


def test_a_queue_closed_under_a_running_async_handler_ends_its_worker_cleanly(
    qdir: Path,
) -> None:
    """With ``durability="always"`` the handler's ack is awaited; the queue
    closed meanwhile, its ``QueueClosed`` escaped the worker task ("Task
    exception was never retrieved"). The worker now ends without an error;
    the unacked message is there again at the next open."""

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir, durability="always")
        started, release = asyncio.Event(), asyncio.Event()
        done: list[bytes] = []

        @aq.handler(bytes, topic="t", timeout=30, max_parallelism=1)
        async def h(m: bytes) -> None:
            started.set()
            await release.wait()
            done.append(m)

        aq.start()
        await aq.publish(b"a", "t")
        await asyncio.wait_for(started.wait(), 5)
        pool = _pool(aq, "h")
        (w,) = pool.workers  # type: ignore[attr-defined]
        task = w.task
        assert not await aq.stop(drain=False, timeout=0)  # the handler still runs
        await aq.aclose()
        release.set()
        finished, _ = await asyncio.wait([task], timeout=5)
        assert task in finished
        assert done == [b"a"]
        assert not task.cancelled()
        assert task.exception() is None
        assert pool.ended.is_set()  # type: ignore[attr-defined]

    asyncio.run(main())
    with ringq.Queue(qdir) as q:
        stats = q.stats()
        assert (stats["ready"], stats["in_flight"]) == (1, 0)


def test_a_stop_from_another_thread_stops_the_handlers_on_the_callers_loop(qdir: Path) -> None:
    """``aq.queue.stop()`` (or the admin endpoint's drain) from a thread
    while the loop runs: the async handlers on that loop stop too (they
    were skipped: the queue said it had stopped and went on consuming).
    On the loop itself, a sync stop raises before anything stops."""
    handled: list[bytes] = []

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir)

        @aq.handler(bytes, topic="t", max_parallelism=2)
        async def h(m: bytes) -> None:
            handled.append(m)

        aq.start()
        try:
            await aq.publish(b"before", "t")
            deadline = time.monotonic() + 10
            while handled != [b"before"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            try:
                aq.queue.stop()
            except RuntimeError as e:
                assert "await" in str(e)
            else:
                raise AssertionError("a sync stop on the handlers' loop must raise")
            assert aq.running
            assert await asyncio.to_thread(aq.queue.stop, True, 10)
            assert not aq.running
            pool = _pool(aq, "h")
            assert not pool.workers  # type: ignore[attr-defined]
            await aq.publish(b"after", "t")
            for _ in range(50):
                await asyncio.sleep(0)
            assert handled == [b"before"]
            assert aq.stats()["ready"] == 1
        finally:
            await aq.aclose()

    asyncio.run(main())


def test_a_sync_close_on_the_handlers_loop_still_closes(qdir: Path) -> None:
    """``q.close()`` (or leaving ``with q:``) on the loop the async handlers
    run on cannot wait for them there: it closes as it always did (the
    handlers still running finish on their loop), it does not raise."""

    async def main() -> None:
        aq = ringq.AsyncQueue(qdir)
        started, release = asyncio.Event(), asyncio.Event()

        @aq.handler(bytes, topic="t", max_parallelism=1)
        async def h(m: bytes) -> None:
            started.set()
            await release.wait()

        aq.start()
        await aq.publish(b"a", "t")
        await asyncio.wait_for(started.wait(), 5)
        aq.queue.close()
        assert aq.closed
        release.set()
        for _ in range(50):
            await asyncio.sleep(0)

    asyncio.run(main())
    with ringq.Queue(qdir) as q:  # the lock was released
        stats = q.stats()
        assert (stats["ready"], stats["in_flight"]) == (1, 0)

"""Workload C on asyncio (``ASYNC_ROWS`` in ``peers.py``): an async producer
task and the library's own worker, in one event loop, running a trivial
``async def`` job that records the 100-byte payload it was given.

    python benches/peers/work.py '{"peer": "arq", "role": "C", "n": 5000,
                                   "dir": "/tmp/x", "out": "/tmp/x.json", "port": 6390}'

Timed as taskito's C: the worker is started and left idle for 0.3 s, then
the clock runs from the first enqueue (one awaited call per job: none of
these libraries has a batch enqueue, and ringq's row uses none either) to
the last job's run. Untimed afterwards: the run waits until the library has
recorded every job done (arq: complete; taskiq: acked; ringq: acked), stops
the worker, and checks that each payload ran exactly once (ringq, one
handler coroutine: in order too) and that nothing is left queued.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from work import Checked, payload

IDLE = 0.3  # seconds the worker runs before the clock starts
DEADLINE = 300.0  # seconds for every job to run
SETTLE = 30.0  # seconds for the library to record them done
STOP = 5.0  # seconds for a worker to stop
TOPIC = "t"


class Ran:
    """What the trivial job records: the sequence number of each payload it got."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seqs: list[int] = []
        self.all = asyncio.Event()

    def job(self, p: bytes | str) -> None:
        self.seqs.append(int(p[:8]))
        if len(self.seqs) >= self.n:
            self.all.set()

    def check(self, in_order: bool) -> None:
        counts = collections.Counter(self.seqs)
        twice = [s for s, c in counts.items() if c > 1]
        if len(counts) != self.n or twice:
            raise Checked(f"{len(counts)} distinct jobs ran of {self.n}; twice: {twice[:5]}")
        if in_order and self.seqs != list(range(self.n)):
            at = next(i for i, s in enumerate(self.seqs) if s != i)
            raise Checked(f"out of order: job {self.seqs[at]} ran at position {at}")


async def settled(done: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + SETTLE
    while not await done():
        if time.monotonic() > deadline:
            raise Checked(f"{what} not recorded within {SETTLE} s after every job ran")
        await asyncio.sleep(0.005)


async def stopped(worker: asyncio.Task[Any]) -> None:
    """Waits up to ``STOP`` s for a worker task told to stop (without
    cancelling it: a worker that does not stop is left behind, see
    ``role_c``)."""
    await asyncio.wait({worker}, timeout=STOP)
    if worker.done() and not worker.cancelled() and worker.exception() is not None:
        print(f"the worker ended with {worker.exception()!r}", file=sys.stderr)


class RingqAsync:
    """``ringq.AsyncQueue``, an ``async def`` handler on the same loop."""

    in_order = True

    async def open(self, spec: dict[str, Any], ran: Ran) -> None:
        import ringq

        self.n = spec["n"]
        self.q = ringq.AsyncQueue(spec["dir"], capacity=max(self.n, 200_000))

        @self.q.handler(bytes, topic=TOPIC)
        async def noop(msg: bytes) -> None:
            ran.job(msg)

        self.q.start()

    def arg(self, p: bytes) -> Any:
        return p

    async def put(self, p: bytes) -> None:
        await self.q.publish(p, TOPIC)

    async def settle(self) -> None:
        async def acked() -> bool:
            return bool(self.q.stats()["acked"] >= self.n)

        await settled(acked, "acks")
        await self.q.stop()
        stats = self.q.stats()
        if stats["ready"] or stats["in_flight"] or stats["acked"] != self.n:
            raise Checked(f"left after the run: {stats['ready']} ready, "
                          f"{stats['in_flight']} in flight, {stats['acked']} acked")  # fmt: skip

    async def close(self) -> None:
        await self.q.aclose()  # what ``async with`` does on the way out


class Arq:
    """arq: ``create_pool`` + ``enqueue_job``, its ``Worker`` on the same loop."""

    in_order = False  # max_jobs run at once

    async def open(self, spec: dict[str, Any], ran: Ran) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings
        from arq.worker import Worker, func

        async def noop(ctx: dict[str, Any], p: bytes) -> None:
            ran.job(p)

        self.n = spec["n"]
        settings = RedisSettings(host="127.0.0.1", port=spec["port"])
        self.pool = await create_pool(settings)
        self.worker = Worker(
            functions=[func(noop, name="noop")],
            redis_settings=settings,
            handle_signals=False,  # arq's docs: when running inside another program
            poll_delay=0.001,
        )
        self.task = asyncio.create_task(self.worker.async_run())

    def arg(self, p: bytes) -> Any:
        return p

    async def put(self, p: bytes) -> None:
        await self.pool.enqueue_job("noop", p)

    async def settle(self) -> None:
        w = self.worker

        async def complete() -> bool:
            if w.jobs_failed or w.jobs_retried:
                raise Checked(f"arq: {w.jobs_failed} jobs failed, {w.jobs_retried} retried")
            return w.jobs_complete >= self.n and all(t.done() for t in w.tasks.values())

        await settled(complete, "arq's completions")
        left = await self.pool.zcard(w.queue_name)
        if left:
            raise Checked(f"{left} jobs left in arq's queue after the run")

    async def close(self) -> None:
        self.task.cancel()
        await stopped(self.task)
        await self.worker.close()
        await self.pool.aclose()


class Taskiq:
    """taskiq with taskiq-redis's ``RedisStreamBroker``, its ``Receiver`` on the
    same loop, set up as ``taskiq worker`` sets it up."""

    in_order = False  # 100 async tasks at once

    async def open(self, spec: dict[str, Any], ran: Ran) -> None:
        from taskiq.receiver import Receiver
        from taskiq_redis import RedisStreamBroker

        self.broker = RedisStreamBroker(f"redis://127.0.0.1:{spec['port']}")

        @self.broker.task(task_name="noop")
        async def noop(p: str) -> None:
            ran.job(p)

        self.noop = noop
        self.broker.is_worker_process = True  # as the taskiq worker command does
        await self.broker.startup()  # the consumer group exists before the first kiq
        self.executor = ThreadPoolExecutor()  # for sync tasks (none here), as the command
        receiver = Receiver(self.broker, executor=self.executor, run_startup=False,
                            max_async_tasks=100)  # fmt: skip
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(receiver.listen(self.stop))

    def arg(self, p: bytes) -> Any:
        return p.decode()  # the default serializer is JSON

    async def put(self, p: str) -> None:
        await self.noop.kiq(p)

    async def settle(self) -> None:
        from redis.asyncio import Redis

        b = self.broker
        async with Redis(connection_pool=b.connection_pool) as r:

            async def acked() -> bool:
                info = await r.xinfo_groups(b.queue_name)
                name = b.consumer_group_name
                group = next(g for g in info if g["name"] in (name, name.encode()))
                return bool(group["pending"] == 0 and group["lag"] == 0)

            await settled(acked, "taskiq's acks")

    async def close(self) -> None:
        self.stop.set()
        # The receiver stops by cancelling its XREADGROUP in flight. Now and then
        # (under load) that cancellation is lost inside redis-py and the broker's
        # listen loop polls on for good (taskiq 0.13, taskiq-redis 1.2, redis-py
        # 8.1, CPython 3.11); closing the connections then ends it.
        await stopped(self.task)
        await self.broker.shutdown()
        await stopped(self.task)
        self.executor.shutdown()


PEERS = {"ringq_async": RingqAsync, "arq": Arq, "taskiq": Taskiq}


async def _role_c(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec["n"]
    ran = Ran(n)
    peer = PEERS[spec["peer"]]()
    await peer.open(spec, ran)
    failure: list[BaseException] = []
    try:
        await asyncio.sleep(IDLE)  # the worker is up and idle
        work = [peer.arg(payload(i)) for i in range(n)]
        put = peer.put

        async def produce() -> None:
            try:
                for x in work:
                    await put(x)
            except Exception as e:  # reported below
                failure.append(e)
                ran.all.set()

        gc.disable()
        t0 = time.perf_counter()
        producer = asyncio.create_task(produce())
        try:
            await asyncio.wait_for(ran.all.wait(), DEADLINE)
        except TimeoutError:
            raise Checked(f"only {len(ran.seqs)} of {n} jobs ran within {DEADLINE} s") from None
        await producer
        secs = time.perf_counter() - t0
        gc.enable()
        if failure:
            raise Checked(f"producer failed: {failure[0]!r}")
        await peer.settle()
    finally:
        gc.enable()
        await peer.close()
    ran.check(peer.in_order)
    return {"seconds": secs, "rate": n / secs}


def role_c(spec: dict[str, Any]) -> dict[str, Any]:
    # Not asyncio.run, which cancels and awaits every task left: a worker
    # that would not stop must not hold up the result.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_role_c(spec))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


ROLES = {"C": role_c}

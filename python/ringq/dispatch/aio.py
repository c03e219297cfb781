"""``async def`` handlers: coroutines on an event loop instead of threads.

An async handler's pool is one serving coroutine that checks out as many
messages as it has free places (``max_parallelism`` is the number of
handler coroutines running at once) and starts a task per message. The
loop is the caller's for ``ringq.AsyncQueue`` (``q.start()`` inside a
running loop, or ``await q.run()``) and a loop in a thread of its own
(``ringq-async-handlers``) for ``ringq.Queue``; sync and async handlers
live on one queue side by side.

Per message, as for a thread worker (``ringq.dispatch.runner``): decode,
run, then ack (staged ``ctx.publish`` messages in the same record) or give
the failure to the engine (``ringq.dispatch.failures``' rules: dead-letter
on an exception of ``dead_letter_on`` or an undecodable payload, else retry
after the backoff). Nothing here waits outside the loop: every engine call
is a deferred one (``ringq.aio.AsyncOps``).

The handler's ``timeout`` cancels it: the coroutine gets ``CancelledError``
at its current ``await``, ``ctx.cancelled`` is set, and the attempt fails
with ``TimeoutError`` (retried or dead-lettered by the policy). A
``ctx.heartbeat()`` extends the lease and moves the timeout with it. A
handler that blocks the loop (a plain ``time.sleep``) cannot be cancelled
until it yields; its lease then runs out as for a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ringq.codecs.decoding import UndecodableError
from ringq.codecs.identity import TYPE_HEADER
from ringq.context import Context
from ringq.di.injection import build
from ringq.dispatch.tallies import Counters, Histogram
from ringq.errors import LeaseLost, QueueClosed, RingqError

if TYPE_CHECKING:
    from ringq.aio import AsyncOps
    from ringq.backend import Backend, Delivery
    from ringq.di.protocol import Resolver
    from ringq.handlers import HandlerSpec

__all__ = ["AsyncContext", "AsyncHandlers", "AsyncPool"]

log = logging.getLogger("ringq.dispatch")


def grace(timeout: float) -> float:
    """How much longer than its handler's ``timeout`` an async handler's
    lease runs: the coroutine is cancelled at ``timeout`` and its failure
    recorded while the lease still holds (a nack, retried by the policy),
    rather than the lease running out under it."""
    return max(0.05, min(1.0, 0.1 * timeout))


class AsyncContext(Context):
    """``ringq.Context`` for an async handler: ``heartbeat`` (a plain call,
    it never waits) also moves the handler's timeout with the lease."""

    __slots__ = ("_grace", "_timeout")

    def __init__(self, backend: Backend, delivery: Delivery, handler: str, timeout: float) -> None:
        self._grace = grace(timeout)
        super().__init__(backend, delivery, handler, timeout + self._grace)
        self._timeout: asyncio.Timeout | None = None

    def heartbeat(self, seconds: float | None = None) -> float:
        """Renews the lease (``seconds`` of handler time from now, default
        the handler's timeout); the coroutine's timeout moves with it."""
        deadline = super().heartbeat(None if seconds is None else seconds + self._grace)
        cm = self._timeout
        if cm is not None:
            loop = asyncio.get_running_loop()
            cm.reschedule(loop.time() + (deadline - time.time()) - self._grace)
        return deadline


class AsyncPool:
    """One async handler: its serving coroutine, its running tasks, its tallies."""

    def __init__(
        self, spec: HandlerSpec, ops: AsyncOps, resolver: Resolver, bounds: tuple[float, ...]
    ):
        self.spec = spec
        self.ops = ops
        self.resolver = resolver
        self.bounds = bounds
        self.counters = Counters(bounds)
        self.target = spec.options.max_parallelism
        self.running: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.drain = True
        self.dead_base = 0
        self.timing = False
        self._room = asyncio.Event()
        self._checkout: asyncio.Future[list[Delivery]] | None = None
        self.serving: asyncio.Task[None] | None = None
        self.needs_tag = spec.message_type not in (bytes, str)
        self.needs_context = spec.cls is not None or spec.pass_context

    # -- serving -------------------------------------------------------------

    async def serve(self) -> None:
        """Checks out as many messages as there are free places, starts a
        task per message; until ``stop`` (then, draining, until nothing is
        ready), and waits for the running ones."""
        spec, ops = self.spec, self.ops
        try:
            while not (self.stopping and not self.drain):
                free = self.target - len(self.running)
                if free <= 0:
                    self._room.clear()
                    await self._room.wait()
                    continue
                wait: float | None = 0 if self.stopping else None
                lease = spec.options.timeout + grace(spec.options.timeout)
                self._checkout = asyncio.ensure_future(ops.checkout(spec.topic, free, lease, wait))
                try:
                    batch = await self._checkout
                except asyncio.CancelledError:
                    if self.stopping:  # stop() ended the wait: it took nothing
                        continue
                    raise
                except QueueClosed:
                    break
                except RingqError as e:
                    log.error("handler %s: checkout failed: %s", spec.name, e)
                    await asyncio.sleep(0.5)
                    continue
                finally:
                    self._checkout = None
                if not batch:
                    if self.stopping:
                        break
                    continue
                for d in batch:
                    task = asyncio.ensure_future(self._handle(d))
                    self.running.add(task)
                    task.add_done_callback(self._finished)
        finally:
            if self.running:
                await asyncio.gather(*self.running, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - a bug
            log.error("handler %s: unexpected error", self.spec.name, exc_info=task.exception())

    def begin_stop(self, drain: bool) -> None:
        self.stopping = True
        self.drain = drain
        if self._checkout is not None:
            self._checkout.cancel()
        self._room.set()

    # -- one message -----------------------------------------------------------

    async def _handle(self, d: Delivery) -> None:
        spec, ops, c = self.spec, self.ops, self.counters
        c.processed += 1
        try:
            msg = spec.decode(d.payload, d.headers.get(TYPE_HEADER) if self.needs_tag else None)
        except UndecodableError as e:
            c.undecodable += 1
            if await self._fail(d, e, None, "undecodable"):
                c.dead_lettered += 1
            return
        handle = ops._handle
        ctx = AsyncContext(handle, d, spec.name, spec.options.timeout)
        budget = min(spec.options.timeout, d.lease_deadline - time.time() - ctx._grace)
        started = time.perf_counter() if self.timing else 0.0
        if started:
            c.queue_wait.observe(max(0.0, time.time() - d.enqueued_at))
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(max(0.0, budget)) as cm:
                ctx._timeout = cm
                await self._call(msg, ctx)
        except TimeoutError as e:
            ctx._expire()
            failure = TimeoutError(
                f"handler {spec.name} ran past its {spec.options.timeout:g}s timeout on "
                f"message {d.id}: cancelled"
            )
            failure.__cause__ = e
        except Exception as e:
            failure = e
        finally:
            ctx._timeout = None
            if started:
                c.handler_duration.observe(time.perf_counter() - started)
        if failure is not None:
            await self._attempt_failed(d, failure)
            return
        try:
            await ops._ack_with(d, ctx._staged)
        except LeaseLost:
            c.late_acks += 1
            log.warning(
                "handler %s: late ack of message %s rejected (its lease ran out)", spec.name, d.id
            )
        except QueueClosed:
            raise
        except (RingqError, ValueError, TypeError) as e:
            await self._attempt_failed(d, e)
        else:
            c.succeeded += 1
            if started:
                c.end_to_end.observe(max(0.0, time.time() - d.enqueued_at))

    def _call(self, msg: object, ctx: AsyncContext) -> Awaitable[object]:
        spec = self.spec
        if spec.cls is not None:
            return self._call_class(msg, ctx)
        func: Callable[..., Awaitable[object]] = spec.func  # type: ignore[assignment]
        return func(msg, ctx) if spec.pass_context else func(msg)

    async def _call_class(self, msg: object, ctx: AsyncContext) -> object:
        assert self.spec.cls is not None
        with self.resolver.scope() as scope:
            handler = build(self.spec.cls, scope)
            handle: Callable[..., Any] = handler.handle
            result: object = await handle(msg, ctx)
            return result

    async def _attempt_failed(self, d: Delivery, e: BaseException) -> None:
        """``ringq.dispatch.failures.attempt_failed`` for a coroutine."""
        spec, c = self.spec, self.counters
        c.failed += 1
        if isinstance(e, spec.options.dead_letter_on):
            if await self._fail(d, e, None, "non_retryable"):
                c.dead_lettered += 1
            return
        delay = spec.options.retry.next_delay(d.attempt)
        if await self._fail(d, e, delay, None):
            if delay is None:
                c.dead_lettered += 1
            else:
                c.retried += 1

    async def _fail(
        self, d: Delivery, e: BaseException, delay: float | None, reason: str | None
    ) -> bool:
        try:
            await self.ops._record_failure(d, delay, e, self.spec.name, reason)
            return True
        except LeaseLost:
            self.counters.late_acks += 1
            log.warning(
                "handler %s: could not record the failure of message %s: its lease ran out",
                self.spec.name,
                d.id,
            )
        except QueueClosed:
            raise
        except RingqError as err:
            log.error("handler %s: nack of message %s failed: %s", self.spec.name, d.id, err)
        return False

    # -- numbers ---------------------------------------------------------------

    def stats(self, dead: int | None) -> dict[str, Any]:
        """``Pool.stats``' shape: ``workers`` is ``max_parallelism``."""
        c = self.counters
        out: dict[str, Any] = {
            "topic": self.spec.topic,
            "workers": self.target,
            "target": self.target,
            "active": len(self.running),
            "abandoned_running": 0,
            "abandoned_total": 0,
            "async": True,
        }
        for name in Counters.SCALARS:
            out[name] = getattr(c, name)
        if dead is not None:
            out["dead_lettered"] = dead - self.dead_base
        out["batch_size"] = self.target
        for name in ("queue_wait", "handler_duration", "end_to_end"):
            out[name] = Histogram.merged(self.bounds, [getattr(c, name)])
        return out


class AsyncHandlers:
    """The async pools of one dispatcher, on one loop: the caller's
    (``loop`` given) or one in a thread of its own, started on first use."""

    def __init__(
        self,
        backend: Backend,
        resolver: Resolver,
        bounds: tuple[float, ...],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.backend = backend
        self.resolver = resolver
        self.bounds = bounds
        self.loop = loop
        self.own_thread: threading.Thread | None = None
        self.ops: AsyncOps | None = None
        self.pools: dict[str, AsyncPool] = {}
        self.timing = False

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            self.own_thread = threading.Thread(target=run, name="ringq-async-handlers", daemon=True)
            self.own_thread.start()
            started.wait()
            self.loop = loop
        return self.loop

    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Runs ``make()`` on the pools' loop from outside it, waiting for it."""

        async def wrapped() -> Any:
            return await make()

        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(wrapped(), loop).result()

    def add(self, spec: HandlerSpec, dead_base: int) -> None:
        """Starts ``spec``'s pool (from any thread)."""
        if self._in_loop():
            self._add(spec, dead_base)
        else:
            loop = self._ensure_loop()
            done = threading.Event()
            error: list[BaseException] = []

            def go() -> None:
                try:
                    self._add(spec, dead_base)
                except BaseException as e:  # pragma: no cover - re-raised below
                    error.append(e)
                finally:
                    done.set()

            loop.call_soon_threadsafe(go)
            done.wait()
            if error:
                raise error[0]

    def _add(self, spec: HandlerSpec, dead_base: int) -> None:
        from ringq.aio import AsyncOps

        if self.ops is None:
            self.ops = AsyncOps(self.backend)
        pool = AsyncPool(spec, self.ops, self.resolver, self.bounds)
        pool.dead_base = dead_base
        pool.timing = self.timing
        self.pools[spec.name] = pool
        pool.serving = asyncio.ensure_future(pool.serve())

    def set_timing(self, on: bool) -> None:
        self.timing = on
        for p in list(self.pools.values()):
            p.timing = on

    def scale(self, name: str, parallelism: int) -> bool:
        pool = self.pools.get(name)
        if pool is None:
            return False
        pool.target = parallelism
        pool._room.set() if self._in_loop() else self._call_soon(pool._room.set)
        return True

    def _call_soon(self, f: Callable[[], object]) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(f)

    async def stop_async(self, drain: bool, timeout: float | None) -> bool:
        """Stops every pool (on the pools' loop); True if all ended in time."""
        pools = list(self.pools.values())
        for p in pools:
            p.begin_stop(drain)
        tasks = [p.serving for p in pools if p.serving is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                return False
        if self.ops is not None:
            self.ops._detach()
            self.ops = None
        return True

    def stop(self, drain: bool, timeout: float | None) -> bool:
        """``stop_async`` from outside the loop (``Queue.stop``); ends the
        loop's own thread."""
        if self.loop is None:
            return True
        if self._in_loop():  # pragma: no cover - AsyncQueue awaits stop_async
            raise RuntimeError("stop the async handlers with await q.stop() on their loop")
        ok: bool = self._run(lambda: self.stop_async(drain, timeout))
        if self.own_thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.own_thread.join(10)
            self.loop.close()
            self.own_thread = None
            self.loop = None
        return ok

    def stats(self, dead: dict[str, int]) -> dict[str, dict[str, Any]]:
        return {name: p.stats(dead.get(p.spec.topic)) for name, p in list(self.pools.items())}

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
until it yields; its lease then runs out as for a thread. A worker
cancelled from outside while its handler runs (a stop that timed out,
``asyncio.run``'s teardown, a task group) ends the attempt at once: the
message is ready again (the attempt counts, as a lease expiry's would) or
dead-lettered if that was its last attempt.

A rate-limited async handler takes its tokens before each checkout, as a
thread worker does (``ringq.ratelimit``), awaiting them without blocking
the loop (a Redis bucket is asked from a worker thread).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ringq.codecs.decoding import UndecodableError
from ringq.context import Context
from ringq.di.injection import abuild, build
from ringq.dispatch.outage import Outage
from ringq.dispatch.tallies import Counters, Histogram
from ringq.errors import (
    LeaseLost,
    QueueClosed,
    RingqError,
    Submitted,
    WouldBlock,
    describe_error,
)
from ringq.middleware import Outcome
from ringq.ratelimit import Gate, RateLimits, acquire_async

if TYPE_CHECKING:
    from ringq.backend import Backend, Delivery
    from ringq.codecs.formats import Codec
    from ringq.di.protocol import Resolver
    from ringq.handlers import HandlerSpec
    from ringq.middleware import Middlewares

__all__ = ["AsyncContext", "AsyncHandlers", "AsyncPool"]

log = logging.getLogger("ringq.dispatch")

#: Makes the awaitable operations a pool runs on (``ringq.aio.AsyncOps``),
#: from a backend. Set by ``ringq.aio`` when it is imported (``import
#: ringq`` does), so that this module, which ``ringq.aio`` imports through
#: ``ringq.queue``, does not import it back.
OPS_FACTORY: Callable[[Backend], Any] | None = None


def grace(timeout: float) -> float:
    """How much longer than its handler's ``timeout`` an async handler's
    lease runs: the coroutine is cancelled at ``timeout`` and its failure
    recorded while the lease still holds (a nack, retried by the policy),
    rather than the lease running out under it."""
    return max(0.05, min(1.0, 0.1 * timeout))


class AsyncContext(Context):
    """``ringq.Context`` for an async handler. ``heartbeat`` is a plain call
    (it never waits); the pool's watchdog reads the new deadline, so the
    handler's timeout moves with its lease. On a shared queue's client the
    extension is sent to the owner and the deadline is the one asked for
    until the owner's answer sets it (or, the lease lost, sets
    ``cancelled``); ``superseded`` asks the owner on the blocking
    connection (a round trip)."""

    __slots__ = ("_grace", "_ops")

    def __init__(
        self,
        ops: Any,
        delivery: Delivery,
        handler: str,
        timeout: float,
        codec: Codec | None = None,
        middleware: Middlewares | None = None,
    ) -> None:
        self._grace = grace(timeout)
        self._ops = ops
        backend: Backend = ops._thread_side.backend if ops._remote else ops._handle
        super().__init__(backend, delivery, handler, timeout + self._grace, codec, middleware)

    def heartbeat(self, seconds: float | None = None) -> float:
        """Renews the lease (``seconds`` of handler time from now, default
        the handler's timeout); the coroutine's timeout moves with it."""
        lease = None if seconds is None else seconds + self._grace
        ops = self._ops
        if not ops._remote:
            try:
                return super().heartbeat(lease)
            except WouldBlock:
                # The engine was busy (another thread held its lock longer
                # than a call may wait on the loop, e.g. a snapshot): this
                # one waits for it, as a blocking call.
                wanted = self._lease if lease is None else lease
                deadline = float(ops._thread_side.backend.extend(self._delivery, wanted))
                self._set_deadline(deadline)
                return deadline
        self.raise_if_cancelled()
        if self._before_heartbeat is not None:
            self._before_heartbeat()
        wanted = self._lease if lease is None else lease
        try:
            ops._handle.extend(self._delivery, wanted)
        except Submitted as s:
            ops._expect(s).add_done_callback(self._extended)
        except WouldBlock:  # the loop's connection is down: the blocking one
            return super().heartbeat(lease)
        self._set_deadline(time.time() + wanted)
        return self.deadline

    @property
    def superseded(self) -> bool:
        """``Context.superseded``; if the engine is busy (``WouldBlock`` on
        the loop), asked as a blocking call."""
        try:
            return super().superseded
        except WouldBlock:
            return bool(self._ops._thread_side.backend.is_superseded(self._delivery))

    def _extended(self, answer: asyncio.Future[Any]) -> None:
        if answer.cancelled():
            return
        e = answer.exception()
        if e is None:
            self._set_deadline(answer.result())
        elif isinstance(e, LeaseLost):
            self._expire()


class _Worker:
    """One handler coroutine's place: the long-lived task that runs the
    pool's messages one after another, and the message it is running."""

    __slots__ = ("ctx", "deadline", "delivery", "leaving", "taking", "task", "timed_out")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.delivery: Delivery | None = None
        self.ctx: AsyncContext | None = None
        self.deadline = 0.0
        self.timed_out = False
        self.leaving = False
        #: Idle and staying: it takes one of the pool's ``ready`` (``AsyncPool.takers``).
        self.taking = False

    def due(self) -> float:
        """When the running message times out (epoch seconds): its context's
        lease deadline less the grace (a heartbeat moves it), or the start
        plus the timeout."""
        ctx = self.ctx
        return self.deadline if ctx is None else ctx.deadline - ctx._grace


class AsyncPool:
    """One async handler: ``max_parallelism`` worker coroutines (long-lived
    tasks, so a message costs no task of its own), the messages checked out
    for them, a watchdog for their timeouts, and the pool's tallies."""

    def __init__(
        self, spec: HandlerSpec, ops: Any, resolver: Resolver, bounds: tuple[float, ...]
    ) -> None:
        self.spec = spec
        self.ops = ops
        self.resolver = resolver
        self.bounds = bounds
        self.counters = Counters(bounds)
        self.outage = Outage(spec.name)  # the pool's checkouts that fail in a row
        self._stopped = asyncio.Event()  # cuts short the wait after a failed checkout
        #: The handler's rate limit and bucket (``AsyncHandlers._add`` sets it).
        self.gate: Gate | None = None
        self._limit_wake = asyncio.Event()  # ends a wait for a token: stop, scale
        self.target = spec.options.max_parallelism
        self.workers: list[_Worker] = []
        self.stopping = False
        self.drain = True
        self.dead_base = 0
        self.timing = False
        #: Checked out, not started yet (at most one per idle worker that
        #: stays: ``_trim_ready`` gives back the rest).
        self.ready: collections.deque[Delivery] = collections.deque()
        self.idle = 0
        #: The idle workers that are not leaving: each takes one of ``ready``.
        self.takers = 0
        self._fetching = False
        self._fetched = asyncio.Event()
        self._checkout: asyncio.Future[list[Delivery]] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        self._acks: list[Delivery] = []
        self._flush_scheduled = False
        #: Acks sent from a worker thread (the engine was busy).
        self._elsewhere: set[asyncio.Task[None]] = set()
        self.needs_context = spec.cls is not None or spec.pass_context
        self.ended = asyncio.Event()

    # -- workers ---------------------------------------------------------------

    def start(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Starts or retires workers to match ``target``."""
        live = [w for w in self.workers if not w.leaving]
        for w in live[self.target :]:
            w.leaving = True
            if w.taking:  # idle: it will not take one of ``ready`` now
                w.taking = False
                self.takers -= 1
        if self.target > len(live):
            self.ended.clear()
        for _ in range(self.target - len(live)):
            w = _Worker()
            self.workers.append(w)
            w.task = asyncio.ensure_future(self._work(w))
        self._fetched.set()  # leaving idle workers notice

    async def _work(self, w: _Worker) -> None:
        ops = self.ops
        try:
            while True:
                d = await self._take(w)
                if d is None:
                    return
                try:
                    await self._handle(w, d)
                except QueueClosed:
                    # Closed under the running handler: its ack or failure
                    # was not recorded, so the message comes back as any
                    # unacked one does. This worker ends (no task error).
                    log.info(
                        "handler %s: the queue closed while message %s ran; it was not acked",
                        self.spec.name,
                        d.id,
                    )
                    return
                if ops._turn_due():
                    # Handlers that never wait would never let the loop run.
                    await asyncio.sleep(0)
        finally:
            self.workers.remove(w)
            if not self.workers:
                self._flush_acks()
                self._release_unstarted()
                if self._elsewhere:
                    await asyncio.gather(*self._elsewhere, return_exceptions=True)
                if not self.workers:
                    self.ended.set()

    async def _take(self, w: _Worker) -> Delivery | None:
        """The next message for ``w``: one already checked out, or a checkout
        (by one idle worker at a time) of as many as there are idle workers;
        ``None`` when ``w`` should end."""
        spec = self.spec
        self.idle += 1
        if not w.leaving:
            w.taking = True
            self.takers += 1
        try:
            while True:
                if len(self.ready) > self.takers or (self.stopping and self.ready):
                    # More than the idle workers that stay will take (scaled
                    # down, stopping, or a batch sized before that came in).
                    self._trim_ready()
                if w.leaving or (self.stopping and not self.drain):
                    return None
                if self.ready:
                    return self.ready.popleft()
                if self._fetching:
                    self._fetched.clear()
                    await self._fetched.wait()
                    continue
                lease = spec.options.timeout + grace(spec.options.timeout)
                want = max(1, self.takers)
                gate = self.gate
                if gate is not None and gate.limit is not None:
                    self._fetching = True
                    try:
                        if not await self._limited_fetch(w, gate, want, lease):
                            return None
                    finally:
                        self._fetching = False
                        self._fetched.set()
                    continue
                try:
                    # What is ready now, without a turn of the loop.
                    batch = self.ops._ready_now(spec.topic, want, lease)
                except QueueClosed:
                    return None
                except RingqError:
                    batch = []  # the waiting checkout below reports it (or, busy, makes it)
                if batch:
                    self.ready.extend(batch)
                    continue
                self._fetching = True
                try:
                    waited = await self._wait_checkout(spec.topic, want, lease)
                    if waited is None:
                        return None
                    self.ready.extend(waited)
                finally:
                    self._checkout = None
                    self._fetching = False
                    self._fetched.set()
        finally:
            self.idle -= 1
            if w.taking:
                w.taking = False
                self.takers -= 1

    async def _limited_fetch(self, w: _Worker, gate: Gate, want: int, lease: float) -> bool:
        """``Runner._limited_checkout`` for coroutines: tokens first (awaited),
        then what is ready now, at most one per token; when nothing is, a
        waiting checkout whose messages beyond the tokens then granted are
        released. Fills ``ready``; False when ``w`` should end."""
        topic = self.spec.topic

        draining = self.stopping

        def go_on() -> bool:
            # A draining stop after the wait began: look at what is ready first.
            return not (w.leaving or (self.stopping and (not self.drain or not draining)))

        if draining:
            # Draining: end when nothing is ready rather than wait for a
            # token first (a slow limit would hold up stop()).
            try:
                probe = await self.ops.checkout(topic, 1, lease, 0)
            except RingqError:
                return False
            if not probe:
                return False
            if (await gate.take_async(1))[0]:
                self.ready.extend(probe)
                return True
            await self._give_back(probe)
        granted = await acquire_async(gate, want, self._limit_wake, go_on)
        if not granted:
            return True  # _take looks at leaving / stopping again
        try:
            if self.ops._remote:  # a round trip, awaited: it does not wait for messages
                batch = await self.ops.checkout(topic, granted, lease, 0)
            else:
                batch = self.ops._ready_now(topic, granted, lease)
        except QueueClosed:
            return False
        except RingqError:
            batch = []  # the waiting checkout below reports it (or, busy, makes it)
        if len(batch) < granted:
            await gate.give_back_async(granted - len(batch))
        if batch:
            self.ready.extend(batch)
            return True
        waited = await self._wait_checkout(topic, want, lease)
        if waited is None:
            return False
        if not waited:
            return True
        batch = waited
        try:
            got, _ = await gate.take_async(len(batch))
        except BaseException:
            await self._give_back(batch)
            raise
        if got < len(batch):
            await self._give_back(batch[got:])
            del batch[got:]
        self.ready.extend(batch)
        return True

    async def _wait_checkout(self, topic: str, want: int, lease: float) -> list[Delivery] | None:
        """A checkout that waits for a message (not when stopping), which
        ``stop()`` and ``scale()`` can end (``self._checkout``). ``None``:
        the pool is done (the queue closed, or it is stopping and nothing
        came or the queue cannot be reached); ``[]``: look again (the wait
        was ended, or a failure's backoff passed: ``ringq.dispatch.outage``)."""
        wait: float | None = 0 if self.stopping else None
        self._checkout = asyncio.ensure_future(self.ops.checkout(topic, want, lease, wait))
        try:
            batch: list[Delivery] = await self._checkout
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this worker itself is being cancelled
            return []  # stop() or scale() ended the wait: it took nothing
        except QueueClosed:
            return None
        except RingqError as e:
            # A stopping pool does not wait for the queue to be reachable
            # again: what it did not take stays queued.
            try:
                await asyncio.wait_for(self._stopped.wait(), self.outage.failed(e))
            except TimeoutError:
                return []
            return None
        finally:
            self._checkout = None
        self.outage.worked()
        if not batch and self.stopping:
            return None
        return batch

    async def _give_back(self, rest: list[Delivery], tokens: bool = False) -> None:
        """Releases ``rest`` (unstarted, delivery not counted); if that
        fails they come back when their lease runs out. ``tokens``: each
        took a token of the rate limit, given back too (checked out again,
        it takes one again)."""
        if tokens and self.gate is not None:
            await self.gate.give_back_async(len(rest))
        try:
            await self.ops.release(rest)
        except LeaseLost:
            pass
        except RingqError as e:
            log.warning(
                "handler %s: release of %d messages failed: %s", self.spec.name, len(rest), e
            )

    def _trim_ready(self) -> None:
        """Gives back (unstarted, delivery not counted) what was checked out
        beyond one per idle worker that stays: workers were removed
        (``scale``) or are stopping without draining. Left in ``ready``, a
        message would wait for a busy worker while its lease ran down (its
        expiry counts an attempt of a message that never ran)."""
        keep = 0 if self.stopping and not self.drain else self.takers
        surplus = len(self.ready) - keep
        if surplus <= 0:
            return
        rest = [self.ready.pop() for _ in range(surplus)]
        rest.reverse()  # in checkout order: the front of the topic again
        task = asyncio.ensure_future(self._give_back(rest, tokens=True))
        # The pool's last worker waits for it (``_work``).
        self._elsewhere.add(task)
        task.add_done_callback(self._elsewhere.discard)

    def _release_unstarted(self) -> None:
        """Gives back what was checked out and not started (stop without
        draining): first in its topic again, its delivery not counted, and
        its rate-limit token if the bucket is in this process (a remote
        one is not waited for on the way out)."""
        rest = list(self.ready)
        self.ready.clear()
        if rest:
            gate = self.gate
            if gate is not None and not gate.bucket.remote:
                gate.give_back(len(rest))
            self._last_call("release", (rest,), f"release of {len(rest)} messages")

    def _interrupted_now(self, d: Delivery, e: BaseException) -> None:
        """Records, without awaiting (the worker is ending cancelled), that
        ``d``'s attempt was interrupted: retried at once (the attempt
        counts), or dead-lettered by the engine if it was the last."""
        error_type, message, tb = describe_error(e)
        message = message or "the handler's worker was cancelled"
        self.counters.failed += 1
        args = (d, 0.0, error_type, message, tb, self.spec.name, None)
        self._last_call("nack", args, f"nack of interrupted message {d.id}")

    def _last_call(self, name: str, args: tuple[Any, ...], what: str) -> None:
        """The engine's ``name(*args)`` without awaiting: its caller is
        ending (a stopped pool, a cancelled worker). If it fails, the
        messages come back when their leases run out."""
        try:
            try:
                getattr(self.ops._handle, name)(*args)
            except Submitted as s:  # sent now: this is the caller's last act
                self.ops._send_now(s)
            except WouldBlock:  # the engine is busy; this is the caller's last act
                getattr(self.ops._thread_side.backend, name)(*args)
        except (LeaseLost, QueueClosed):
            pass
        except RingqError as err:
            log.error("handler %s: %s failed: %s", self.spec.name, what, err)

    def begin_stop(self, drain: bool) -> None:
        self.stopping = True
        self.drain = drain
        self._stopped.set()
        if not drain:
            self._release_unstarted()  # the unstarted go back now, not in a task
        self._limit_wake.set()
        if self._checkout is not None:
            self._checkout.cancel()
        self._fetched.set()
        if not self.workers:
            self.ended.set()

    def scale(self, target: int) -> None:
        self.target = target
        self._limit_wake.set()
        if self._checkout is not None and target < len(self.workers):
            self._checkout.cancel()
        self._fit()
        # The idle workers removed took none of ``ready``: it goes back now
        # rather than wait for a busy worker (a batch still on its way is
        # trimmed when it comes in, ``_take``).
        self._trim_ready()

    # -- timeouts --------------------------------------------------------------

    def _watch_worker(self, w: _Worker) -> None:
        """Arms the watchdog for ``w``'s timeout if it is the earliest (one
        timer per pool, not one per message)."""
        at = w.due()
        if self._watch is not None and self._watch_at <= at:
            return
        if self._watch is not None:
            self._watch.cancel()
        loop = asyncio.get_running_loop()
        self._watch_at = at
        self._watch = loop.call_at(loop.time() + max(0.0, at - time.time()), self._watchdog)

    def _watchdog(self) -> None:
        """Cancels the handlers past their timeout; re-arms for the rest."""
        self._watch = None
        now = time.time()
        nearest: _Worker | None = None
        for w in self.workers:
            if w.delivery is None or w.timed_out:
                continue
            if w.due() <= now:
                w.timed_out = True
                if w.ctx is not None:
                    w.ctx._expire()
                assert w.task is not None
                w.task.cancel()
            elif nearest is None or w.due() < nearest.due():
                nearest = w
        if nearest is not None:
            self._watch_worker(nearest)

    # -- one message -----------------------------------------------------------

    async def _handle(self, w: _Worker, d: Delivery) -> None:
        spec, c = self.spec, self.counters
        c.processed += 1
        try:
            msg = spec.decode(d.payload, d.headers)
        except UndecodableError as e:
            c.undecodable += 1
            if await self._fail(d, e, None, "undecodable"):
                c.dead_lettered += 1
                await self._dead_lettered(d, "undecodable", e)
            return
        timeout = spec.options.timeout
        mw = spec.middleware
        hooked = mw is not None and bool(mw.before or mw.after)
        ctx = (
            AsyncContext(self.ops, d, spec.name, timeout, spec.publish_codec, mw)
            if self.needs_context or hooked
            else None
        )
        w.delivery, w.ctx, w.timed_out = d, ctx, False
        w.deadline = min(time.time() + timeout, d.lease_deadline - grace(timeout))
        if ctx is not None:
            # A heartbeat may shorten the lease: the watchdog then wakes by
            # the new timeout (from any thread the handler calls it in).
            loop = asyncio.get_running_loop()

            def rewatch(_at: float) -> None:
                loop.call_soon_threadsafe(self._watch_worker, w)

            ctx._on_deadline = rewatch
        self._watch_worker(w)
        started = time.perf_counter() if self.timing else 0.0
        if started:
            c.queue_wait.observe(max(0.0, time.time() - d.enqueued_at))
        failure: BaseException | None = None
        try:
            if hooked:
                assert mw is not None and ctx is not None
                await mw.abefore_handle(d, ctx)
            if not self.needs_context:
                plain: Callable[[object], Awaitable[object]] = spec.func  # type: ignore[assignment]
                await plain(msg)
            else:
                assert ctx is not None
                await self._call(msg, ctx)
        except asyncio.CancelledError as e:
            if not w.timed_out:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    # This worker is cancelled (a stop that timed out,
                    # asyncio.run's teardown, a task group): the attempt
                    # ends now, counted (it ran), rather than when its lease
                    # runs out; ready again at once, or dead-lettered if it
                    # was the last (a handler that always outlasts a
                    # shutdown must not run for ever uncounted).
                    self._interrupted_now(d, e)
                    raise
                # Raised by the handler's own code (it awaited a task that
                # something else cancelled): a failed attempt, as any
                # exception; the worker goes on.
                failure = e
            else:
                failure = TimeoutError(
                    f"handler {spec.name} ran past its {timeout:g}s timeout (or the deadline "
                    f"its last heartbeat set) on message {d.id}: cancelled"
                )
                failure.__cause__ = e
        except Exception as e:
            failure = e
        finally:
            w.delivery = w.ctx = None
            if started:
                c.handler_duration.observe(time.perf_counter() - started)
        leaving = False
        if w.timed_out:
            assert w.task is not None
            # This worker goes on with the next message, unless it was also
            # cancelled from outside (stop, asyncio.run's teardown, a task
            # group) while the handler cleaned up after its timeout: it then
            # records the attempt's failure (below) and ends cancelled.
            leaving = w.task.uncancel() > 0
            if failure is None:  # finished as the watchdog cancelled it: too late
                failure = TimeoutError(f"handler {spec.name} ran past its timeout on {d.id}")
        if hooked and mw is not None and mw.after:
            assert ctx is not None
            try:
                await mw.aafter_handle(d, ctx, Outcome(failure))
            except Exception as e:  # a failing hook fails the attempt
                if failure is None:
                    failure = e
                else:
                    log.exception("after_handle of message %s raised (it had failed already)", d.id)
        if ctx is not None and ctx._cancelled_by is not None:
            # q.cancel removed it while it ran: nothing to ack, nack or retry.
            log.info(
                "handler %s: message %s was cancelled while it ran; nothing sent", spec.name, d.id
            )
            if leaving:
                raise asyncio.CancelledError
            return
        if failure is not None:
            await self._attempt_failed(d, failure)
            if leaving:
                raise asyncio.CancelledError
            return
        staged = None if ctx is None else ctx._staged
        if staged is None and not self.ops._always:
            self._ack_soon(d)
            if started:
                c.end_to_end.observe(max(0.0, time.time() - d.enqueued_at))
            return
        ack_started = time.perf_counter()
        try:
            await self.ops._ack_with(d, staged)
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
            self._acked([d], (), ack_started)
            if started:
                c.end_to_end.observe(max(0.0, time.time() - d.enqueued_at))

    def _ack_soon(self, d: Delivery) -> None:
        """Acks ``d`` with the others that succeed in this turn of the loop,
        in one engine call (it never waits: nothing to await without
        ``durability="always"``)."""
        self._acks.append(d)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._flush_scheduled = False
        done, self._acks = self._acks, []
        if not done:
            return
        c = self.counters
        started = time.perf_counter()
        try:
            self.ops._handle.ack(done)
        except Submitted as s:
            # A shared queue's client: counted when the owner answers.
            task = asyncio.ensure_future(self._ack_answered(s, done))
            self._elsewhere.add(task)
            task.add_done_callback(self._elsewhere.discard)
        except WouldBlock:
            # The engine is busy: acked from a worker thread, counted then.
            task = asyncio.ensure_future(self._ack_elsewhere(done))
            self._elsewhere.add(task)
            task.add_done_callback(self._elsewhere.discard)
        except LeaseLost as e:
            c.late_acks += len(e.ids)
            c.succeeded += len(done) - len(e.ids)
            log.warning(
                "handler %s: late ack rejected for %s (their leases ran out)",
                self.spec.name,
                ", ".join(e.ids),
            )
            self._acked(done, e.ids, started)
        except RingqError as e:
            log.error("handler %s: ack of %d messages failed: %s", self.spec.name, len(done), e)
        else:
            c.succeeded += len(done)
            self._acked(done, (), started)

    def _acked(self, done: list[Delivery], lost: Iterable[str], started: float) -> None:
        """Runs the middlewares' ``on_ack`` for the accepted ones of ``done``."""
        mw = self.spec.middleware
        if mw is not None and mw.ack:
            gone = set(lost)
            mw.acked([d for d in done if d.id not in gone], time.perf_counter() - started)

    async def _ack_answered(self, s: Submitted, done: list[Delivery]) -> None:
        await self._counted_ack(self.ops._answer(s), done)

    async def _ack_elsewhere(self, done: list[Delivery]) -> None:
        await self._counted_ack(asyncio.to_thread(self.ops._thread_side.backend.ack, done), done)

    async def _counted_ack(self, ack: Awaitable[object], done: list[Delivery]) -> None:
        c = self.counters
        started = time.perf_counter()
        try:
            await ack
        except LeaseLost as e:
            c.late_acks += len(e.ids)
            c.succeeded += len(done) - len(e.ids)
            self._acked(done, e.ids, started)
        except RingqError as e:
            log.error("handler %s: ack of %d messages failed: %s", self.spec.name, len(done), e)
        else:
            c.succeeded += len(done)
            self._acked(done, (), started)

    def _call(self, msg: object, ctx: AsyncContext) -> Awaitable[object]:
        spec = self.spec
        if spec.cls is not None:
            return self._call_class(msg, ctx)
        func: Callable[..., Awaitable[object]] = spec.func  # type: ignore[assignment]
        return func(msg, ctx) if spec.pass_context else func(msg)

    async def _call_class(self, msg: object, ctx: AsyncContext) -> object:
        assert self.spec.cls is not None
        ascope = getattr(self.resolver, "ascope", None)
        if ascope is not None:
            # An async resolver (ringq.di.AsyncResolver): dependencies awaited.
            async with ascope() as ascoped:
                built = await abuild(self.spec.cls, ascoped)
                run: Callable[..., Any] = built.handle
                awaited: object = await run(msg, ctx)
                return awaited
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
                await self._dead_lettered(d, "non_retryable", e)
            return
        delay = spec.options.retry.next_delay(d.attempt)
        if await self._fail(d, e, delay, None):
            if delay is None:
                c.dead_lettered += 1
                await self._dead_lettered(d, "max_attempts", e)
            else:
                c.retried += 1

    async def _dead_lettered(self, d: Delivery, reason: str, e: BaseException) -> None:
        mw = self.spec.middleware
        if mw is not None and mw.dead:
            await mw.adead_lettered(d, reason, e)

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
        """``Pool.stats``' shape; ``workers`` are coroutines."""
        c = self.counters
        out: dict[str, Any] = {
            "topic": self.spec.topic,
            "workers": len(self.workers),
            "target": self.target,
            "active": sum(1 for w in self.workers if w.delivery is not None),
            "abandoned_running": 0,
            "abandoned_total": 0,
            "async": True,
        }
        for name in Counters.SCALARS:
            out[name] = getattr(c, name)
        if dead is not None:
            out["dead_lettered"] = dead - self.dead_base
        out["batch_size"] = self.target
        gate = self.gate
        limit = self.spec.options.rate_limit if gate is None else gate.limit
        out["rate_limit"] = None if limit is None else str(limit)
        out["throttled"] = 0 if gate is None else gate.waits
        for name in ("queue_wait", "handler_duration", "end_to_end"):
            out[name] = Histogram.merged(self.bounds, [getattr(c, name)])
        return out


#: How long the tasks left on the handlers' own loop get to end on their
#: own when it stops, before they are cancelled (see ``finish_tasks``).
FINISH_GRACE = 1.0


async def finish_tasks() -> None:
    """Before the handlers' own loop stops: what ``asyncio.run`` does before
    it closes its loop. The tasks still on it (calls that a stopped worker
    cancelled, which need a turn of the loop to end; a Redis queue closing
    its connections once they have) get ``FINISH_GRACE`` seconds to end,
    then are cancelled and get as long again to end; one that ignores its
    cancellation is left (at most ``2 * FINISH_GRACE`` seconds in all). A
    task left pending on a closed loop is destroyed later by the garbage
    collector, which runs its cleanup with no loop (a Redis call's:
    "Exception ignored in: <coroutine object RedisLoopHandle._drive>") and
    leaves its connection open."""
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me]
    if left:
        _, pending = await asyncio.wait(left, timeout=FINISH_GRACE)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=FINISH_GRACE)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.get_running_loop().shutdown_asyncgens(), FINISH_GRACE)


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
        self.ops: Any = None
        self.pools: dict[str, AsyncPool] = {}
        self.timing = False
        #: Set once every pool ended after a stop (the ops let go of then).
        self._ended_all = asyncio.Event()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                try:
                    loop.run_forever()
                finally:
                    # Also when a stop that timed out left the loop to stop
                    # once its handlers ended (``stop``): its selector and
                    # executor are let go of (closing twice is a no-op).
                    loop.close()

            self.own_thread = threading.Thread(target=run, name="ringq-async-handlers", daemon=True)
            self.own_thread.start()
            started.wait()
            self.loop = loop
        return self.loop

    def in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Runs ``make()`` on the pools' loop from outside it, waiting for it."""
        return self._run_on(self._ensure_loop(), make)

    @staticmethod
    def _run_on(
        loop: asyncio.AbstractEventLoop,
        make: Callable[[], Awaitable[Any]],
        timeout: float | None = None,
    ) -> Any:
        async def wrapped() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(wrapped(), loop).result(timeout)

    def add(self, spec: HandlerSpec, dead_base: int) -> None:
        """Starts ``spec``'s pool (from any thread)."""
        if self.in_loop():
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
        if self.ops is None:
            if OPS_FACTORY is None:  # pragma: no cover - ringq.aio sets it on import
                raise RuntimeError("ringq.aio is not imported: async handlers need it")
            self.ops = OPS_FACTORY(self.backend)
        pool = AsyncPool(spec, self.ops, self.resolver, self.bounds)
        table = spec.limits if spec.limits is not None else RateLimits()
        pool.gate = table.gate(spec.topic, spec.options.rate_limit, self.backend)
        pool.dead_base = dead_base
        pool.timing = self.timing
        self.pools[spec.name] = pool
        pool.start()

    def set_timing(self, on: bool) -> None:
        self.timing = on
        for p in list(self.pools.values()):
            p.timing = on

    def scale(self, name: str, parallelism: int) -> bool:
        pool = self.pools.get(name)
        if pool is None:
            return False
        if self.in_loop():
            pool.scale(parallelism)
        else:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(pool.scale, parallelism)
        return True

    async def stop_async(self, drain: bool, timeout: float | None) -> bool:
        """Stops every pool (on the pools' loop); True if all ended in time."""
        pools = list(self.pools.values())
        for p in pools:
            p.begin_stop(drain)
        ended = asyncio.ensure_future(self._all_ended(pools))
        done, _ = await asyncio.wait([ended], timeout=timeout)
        return bool(done)

    async def _all_ended(self, pools: list[AsyncPool]) -> None:
        """Waits for ``pools`` to end, then lets go of the engine's signals
        (also when ``stop`` stopped waiting first: the handlers still running
        finish on their own)."""
        try:
            for p in pools:
                await p.ended.wait()
        finally:
            if self.ops is not None and all(not p.workers for p in self.pools.values()):
                self.ops._detach()
                self.ops = None
            self._ended_all.set()

    def stop(self, drain: bool, timeout: float | None) -> bool:
        """``stop_async`` from outside the loop (``Queue.stop``); ends the
        loop's own thread."""
        if self.loop is None:
            return True
        if self.in_loop():  # pragma: no cover - the dispatcher checks first
            raise RuntimeError("stop the async handlers with await q.stop() on their loop")
        # Bounded: a loop that stops meanwhile never runs stop_async.
        wait = None if timeout is None else timeout + 5
        try:
            ok: bool = self._run_on(
                self._ensure_loop(), lambda: self.stop_async(drain, timeout), wait
            )
        except concurrent.futures.TimeoutError:
            ok = False
        if self.own_thread is not None:
            loop, thread = self.loop, self.own_thread
            self.own_thread = None
            self.loop = None
            if ok:
                self._run_on(loop, finish_tasks)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)  # the thread closes the loop as it ends
            else:
                # Handlers still running finish on their own: the loop (a
                # daemon thread) stops once they have.
                async def stop_when_ended() -> None:
                    await self._ended_all.wait()
                    await finish_tasks()
                    loop.stop()

                asyncio.run_coroutine_threadsafe(stop_when_ended(), loop)
        return ok

    def stats(self, dead: dict[str, int]) -> dict[str, dict[str, Any]]:
        return {name: p.stats(dead.get(p.spec.topic)) for name, p in list(self.pools.items())}

"""What a worker thread does, from checkout to ack.

A worker checks out a batch of its handler's topic in one engine call,
waiting inside the engine with the GIL released until a message arrives
(an interrupt of the topic ends the wait: ``stop`` and ``scale`` use it).
For each message it decodes the payload into the handler's type, runs the
handler (a class handler is built in a fresh scope of the resolver,
``ringq.di``), and then:

- success: acks (staged ``ctx.publish`` messages are committed in the same
  journal record as the ack; plain acks of one batch are sent together,
  ``ringq.dispatch.acks``), counted as a success once the engine accepts it;
- failure, or a payload that does not decode: ``ringq.dispatch.failures``.

A worker never dies of a handler's exception (or of a dependency that fails
to resolve: that is a failed attempt like any other). A plain def that
returns an awaitable fails its attempt: it did not run (``async def``
handlers run as coroutines: ``ringq.dispatch.aio``). A message that
waited behind its neighbours for a tenth of its lease gets a full lease
from when it starts.

A rate-limited handler's worker takes tokens first, then checks out at
most that many without waiting (``_limited_checkout``; the rules are in
``ringq.ratelimit``): a message never waits for a token under a lease.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ringq.codecs.decoding import UndecodableError
from ringq.context import Context
from ringq.di.injection import build
from ringq.dispatch.acks import flush, release_rest
from ringq.dispatch.failures import attempt_failed, undecodable
from ringq.dispatch.outage import Outage
from ringq.dispatch.processes import ProcessWorker
from ringq.errors import LeaseLost, QueueClosed, RingqError
from ringq.handlers import function_ref
from ringq.middleware import Middlewares, Outcome
from ringq.ratelimit import Gate, RateLimits, acquire

if TYPE_CHECKING:
    from ringq.backend import Backend, Delivery, OutgoingMessage
    from ringq.di.protocol import Resolver
    from ringq.dispatch.monitor import LeaseMonitor
    from ringq.dispatch.pool import Pool, Worker
    from ringq.handlers import HandlerSpec

__all__ = ["Runner"]

log = logging.getLogger("ringq.dispatch")


def _after_handle(
    mw: Middlewares, d: Delivery, ctx: Context, error: BaseException | None
) -> BaseException | None:
    """Runs the ``after_handle`` hooks; returns the attempt's error: the
    handler's, else the hook's (a failing hook fails the attempt)."""
    try:
        mw.after_handle(d, ctx, Outcome(error))
    except BaseException as e:
        if error is None:
            return e
        log.exception("after_handle of message %s raised (the attempt had failed already)", d.id)
    return error


def _was_cancelled(handler: str, d: Delivery, ctx: Context | None) -> bool:
    """``q.cancel`` removed ``d`` while the handler ran (in this process):
    there is nothing to ack, nack or retry; said at info level, not as a
    late ack."""
    if ctx is None or ctx._cancelled_by is None:
        return False
    log.info("handler %s: message %s was cancelled while it ran; nothing sent", handler, d.id)
    return True


class Runner:
    """Runs the worker threads of a dispatcher's pools (``run`` is a
    worker thread's target)."""

    def __init__(
        self, engine: Backend, monitor: LeaseMonitor, resolver: Resolver, timing: bool
    ) -> None:
        self.engine = engine
        self.monitor = monitor
        self.resolver = resolver
        #: Fill the queue-wait and handler-duration histograms (``ringq.metrics``
        #: turns this on; off, the per-message path reads no clock).
        self.timing = timing

    def run(self, w: Worker) -> None:
        """The life of worker ``w``: batch after batch until it leaves its pool."""
        pool = w.pool
        spec = pool.spec
        engine = self.engine
        topic, lease = spec.topic, spec.options.timeout
        w.hook = functools.partial(self._heartbeat, w)
        outage = Outage(spec.name)
        gate = self._gate(pool)
        try:
            while True:
                try:
                    # Read before deciding to wait: an interrupt after this
                    # point makes the checkout below return at once.
                    since = engine.interrupts(topic)
                    if pool.should_exit(w):
                        return
                    size, share = pool.batch_size(), max(1, pool.target)
                    if gate.limit is not None:
                        limited = self._limited_checkout(w, gate, size, share, since)
                        if limited is None:
                            return
                        batch = limited
                    elif pool.stopping:
                        # Draining: take what is ready, never wait.
                        batch = engine.checkout(topic, size, lease, 0, share=share)
                        if not batch:
                            with pool.lock:
                                pool.leave_locked(w)
                            return
                    else:
                        batch = engine.checkout(topic, size, lease, None, share=share, since=since)
                except QueueClosed:
                    return
                except RingqError as e:
                    # A server that is down, an owner that left (the next
                    # call reaches the new one), a storage fault: ``outage``.
                    # A stopping pool does not wait for it: what its workers
                    # did not take stays queued.
                    if pool.stopped.wait(outage.failed(e)):
                        return
                    continue
                outage.worked()
                if batch:
                    try:
                        self._handle_batch(w, batch)
                    except QueueClosed:
                        return
                    except Exception:  # pragma: no cover - a bug in ringq itself
                        log.exception("handler %s: unexpected error in the worker", spec.name)
        finally:
            if w.proc is not None:
                w.proc.close()
            pool.leave(w)

    def _gate(self, pool: Pool) -> Gate:
        """The pool's rate limit and bucket (made by its first worker)."""
        with pool.lock:
            if pool.gate is None:
                spec = pool.spec
                table = spec.limits if spec.limits is not None else RateLimits()
                pool.gate = table.gate(spec.topic, spec.options.rate_limit, self.engine)
            return pool.gate

    def _limited_checkout(
        self, w: Worker, gate: Gate, size: int, share: int, since: int
    ) -> list[Delivery] | None:
        """A checkout under a rate limit: up to ``size`` tokens (waiting for
        one, holding no lease), then at most that many messages, without
        waiting; the unused tokens go back. When nothing is ready, the
        worker waits for a message holding no token, and releases (unstarted,
        delivery not counted) what arrives beyond the tokens it then gets.
        ``[]``: look again; ``None``: the worker left its draining pool."""
        pool = w.pool
        engine = self.engine
        topic, lease = pool.spec.topic, pool.spec.options.timeout
        if pool.stopping:
            # Draining: leave when nothing is ready rather than wait for a
            # token first (a slow limit would hold up stop()).
            probe = engine.checkout(topic, 1, lease, 0, share=share)
            if not probe:
                with pool.lock:
                    pool.leave_locked(w)
                return None
            if gate.take(1)[0]:
                return probe
            self._release(pool.spec.name, probe)
        go_on = functools.partial(pool.may_take, w, pool.stopping)
        granted = acquire(gate, size, pool.wake, go_on)
        if not granted:
            return []  # stop, scale or abandon: should_exit decides
        try:
            batch = engine.checkout(topic, granted, lease, 0, share=share)
        except BaseException:
            gate.give_back(granted)
            raise
        if len(batch) < granted:
            gate.give_back(granted - len(batch))
        if batch:
            return batch
        if pool.stopping:
            with pool.lock:
                pool.leave_locked(w)
            return None
        batch = engine.checkout(topic, size, lease, None, share=share, since=since)
        if not batch:
            return batch
        try:
            got, _ = gate.take(len(batch))
        except BaseException:
            self._release(pool.spec.name, batch)
            raise
        if got < len(batch):
            self._release(pool.spec.name, batch[got:])
            del batch[got:]
        return batch

    def _release(self, handler: str, rest: list[Delivery]) -> None:
        """Gives ``rest`` back unstarted (their delivery not counted); if
        that fails they come back when their lease runs out."""
        try:
            self.engine.release(rest)
        except LeaseLost:
            pass
        except RingqError as e:
            log.warning("handler %s: release of %d messages failed: %s", handler, len(rest), e)

    def _handle_batch(self, w: Worker, batch: list[Delivery]) -> None:
        pool = w.pool
        engine = self.engine
        lease = pool.spec.options.timeout
        checked_out = time.time()
        clock = time.perf_counter()
        unstarted = w.batch
        unstarted.extend(batch)
        w.hold_until = checked_out + pool.hold
        if len(batch) > 1:
            self.monitor.watch(w.hold_until)
        started = 0
        try:
            while True:
                try:
                    d = unstarted.popleft()
                except IndexError:
                    break
                if w.abandoned or (pool.stopping and not pool.drain):
                    # Stopping (or abandoned): the unstarted ones go back,
                    # their deliveries undone.
                    unstarted.appendleft(d)
                    release_rest(engine, w)
                    break
                deadline = d.lease_deadline
                if started and time.time() - checked_out > 0.1 * lease:
                    # Waited a while behind its neighbours: a full lease from now.
                    flush(engine, w)
                    try:
                        deadline = engine.extend(d, lease)
                    except LeaseLost:
                        continue  # expired meanwhile; the engine retries it
                started += 1
                self._handle_one(w, d, deadline)
        finally:
            flush(engine, w)
            if started:
                pool.observe(time.perf_counter() - clock, started)

    def _heartbeat(self, w: Worker) -> None:
        """Before a handler renews its lease: send pending acks and release
        the batch's unstarted messages (a long handler gives its neighbours
        to free workers instead of keeping them waiting)."""
        flush(self.engine, w)
        release_rest(self.engine, w)

    def _handle_one(self, w: Worker, d: Delivery, deadline: float) -> None:
        pool = w.pool
        spec = pool.spec
        c = w.counters
        c.processed += 1
        try:
            msg = spec.decode(d.payload, d.headers)
        except UndecodableError as e:
            undecodable(self.engine, w, d, e)
            return
        ctx: Context | None = None
        mw = spec.middleware
        hooked = mw is not None and bool(mw.before or mw.after)
        if pool.needs_context or hooked:
            ctx = Context(self.engine, d, spec.name, spec.options.timeout, spec.publish_codec, mw)
            ctx.deadline = deadline
            ctx._before_heartbeat = w.hook
            ctx._on_deadline = self.monitor.watch
        # Published without a lock (see Pool.abandon); this runs for every message.
        w.deadline = deadline
        w.ctx = ctx
        w.current = d
        # LeaseMonitor.watch's own lock-free test, inline: every message of a
        # batch shares a deadline, so this is nearly always the whole cost.
        heap = self.monitor.heap
        if not heap or heap[0] > deadline:
            self.monitor.watch(deadline)
        started = 0.0
        if self.timing:  # only while metrics are collected (it costs ~0.3 us)
            c.queue_wait.observe(max(0.0, time.time() - d.enqueued_at))
            started = time.perf_counter()
        error: BaseException | None = None
        try:
            if hooked:
                assert mw is not None and ctx is not None
                mw.before_handle(d, ctx)
            if spec.options.processes:
                assert ctx is not None
                ctx._staged = self._in_process(w, spec, msg, ctx) or None
                result = None
            else:
                if pool.needs_context:
                    assert ctx is not None
                    result = self._call(spec, msg, ctx)
                else:
                    result = pool.plain(msg)
            if result is not None and inspect.isawaitable(result):
                raise _not_awaited(spec.name, result)
        except BaseException as e:  # a handler's SystemExit must not kill the worker
            error = e
        if hooked and mw is not None and mw.after:
            assert ctx is not None
            error = _after_handle(mw, d, ctx, error)
        if error is not None:
            if started:
                c.handler_duration.observe(time.perf_counter() - started)
            w.current = w.ctx = None
            if not _was_cancelled(spec.name, d, ctx):
                attempt_failed(self.engine, w, d, error)
            return
        if started:
            c.handler_duration.observe(time.perf_counter() - started)
        w.current = w.ctx = None
        if _was_cancelled(spec.name, d, ctx):
            return
        staged = None if ctx is None else ctx._staged
        if not staged:
            w.pending.append(d)
            if started:
                c.end_to_end.observe(max(0.0, time.time() - d.enqueued_at))
            return
        ack_started = time.perf_counter()
        try:
            self.engine.ack(d, publish=staged)
        except LeaseLost:
            c.late_acks += 1
            log.warning(
                "handler %s: late ack of message %s rejected (its lease ran out); "
                "its %d staged messages were not published",
                spec.name,
                d.id,
                len(staged),
            )
        except QueueClosed:
            raise
        except (RingqError, ValueError, TypeError) as e:
            # A staged message the engine refuses (too big, full queue, bad
            # option): the attempt fails as a whole and nothing is published.
            attempt_failed(self.engine, w, d, e)
        else:
            c.succeeded += 1
            if mw is not None and mw.ack:
                mw.acked([d], time.perf_counter() - ack_started)
            if started:
                c.end_to_end.observe(max(0.0, time.time() - d.enqueued_at))

    def _in_process(
        self, w: Worker, spec: HandlerSpec, msg: object, ctx: Context
    ) -> list[OutgoingMessage]:
        """Runs a process-pool handler in the worker's process; returns what it staged."""
        proc = w.proc
        if proc is None:
            assert spec.func is not None
            proc = w.proc = ProcessWorker(spec.name, function_ref(spec.func))
        return proc.run(msg, ctx, spec.pass_context)

    def _call(self, spec: HandlerSpec, msg: object, ctx: Context) -> object:
        if spec.cls is not None:
            with self.resolver.scope() as scope:
                handler = build(spec.cls, scope)
                handle: Callable[..., object] = handler.handle
                return handle(msg, ctx)
        func: Callable[..., object] = spec.func  # type: ignore[assignment]
        return func(msg, ctx)


def _not_awaited(name: str, result: object) -> TypeError:
    """A handler returned an awaitable: it did not run, so the attempt fails."""
    close = getattr(result, "close", None)
    if callable(close):
        close()  # no "never awaited" warning: this error says it
    return TypeError(
        f"handler {name} returned {type(result).__name__}, an awaitable, which ringq cannot run "
        "on a worker thread: the message was not handled. Write the handler as an async def "
        "(ringq runs those as coroutines on an event loop and awaits them)"
    )

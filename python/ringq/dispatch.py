"""The dispatcher: worker threads that run handlers.

Each handler gets a pool of worker threads (``max_parallelism`` of them, or
what ``scale`` set). A worker checks out a batch of the handler's topic in
one engine call, waiting inside the engine with the GIL released until a
message arrives: nothing polls. For each message it decodes the payload into
the handler's type, runs the handler, and then:

- success: acks (staged ``ctx.publish`` messages are committed in the same
  journal record as the ack; plain acks of one batch are sent together);
- exception listed in ``dead_letter_on``: dead letter, reason
  ``non_retryable``;
- other exception: retried after the handler's backoff (the engine's timer
  makes it visible again; no worker sleeps), or dead-lettered with reason
  ``max_attempts`` when its attempts are used up;
- undecodable payload: dead letter, reason ``undecodable``, at once.

A worker never dies of a handler's exception (or of a dependency that fails
to resolve: that is a failed attempt like any other).

**Batches (prefetch) never cost a message its attempts or its turn.** How
many messages a worker takes at once:

- never more than ``prefetch``;
- never more than a fair share of what is ready: ``ceil(ready / workers)``
  (the engine takes ``share=workers``), so ``max_parallelism=N`` runs N
  handlers at once whenever N messages are ready;
- only as many as the handler runs in about 5 ms (1/20 of the lease if
  that is less), from the average time per message measured over recent
  batches: slow handlers take one message at a time, trivial ones batch.

A message of a batch that has not started yet is *released* when its
worker holds it longer than ``hold`` (20 ms, at most 0.4 of the lease) —
its handler before it is slow — or when the handler heartbeats, the worker
is abandoned, or the queue stops: it goes back to the front of its topic
with the delivery undone (``attempt`` as before), for the next free worker.
So it is never dead-lettered, charged an attempt, or queued behind retries
because a neighbour in its batch was slow.

**Timeouts.** ``timeout`` is the lease. A lease monitor thread (one per
dispatcher, sleeping until the earliest deadline) notices a handler that ran
past its lease: it sets ``ctx.cancelled``, and the engine has already made
the message ready again (or dead-lettered it). Python threads cannot be
killed, so the overrunning thread is *abandoned*: a fresh worker replaces it
at once, keeping the handler's parallelism, and the abandoned thread exits
as soon as its handler returns (its late ack is rejected with ``LeaseLost``
and logged). ``stats()`` counts abandoned threads still running.

**Stopping.** ``stop(drain=True)`` lets workers finish what is ready, then
stop; ``drain=False`` finishes only the messages being handled and releases
the unstarted ones at once. ``timeout`` bounds the wait; workers still busy
after it are left to finish (their messages come back when their lease runs
out). Stopping and scaling wake idle workers with a sticky engine interrupt
(``checkout(since=...)``): no loop sleeps or polls.

**Counts.** ``stats()`` counts a success only once its ack is accepted (a
late ack is counted in ``late_acks``, not as a success), and takes
``dead_lettered`` from the engine's count for the handler's topic, so it
includes messages the engine dead-lettered itself (lease expiries) and agrees
with the dead-letter queue.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import functools
import heapq
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ringq.backend import Delivery
from ringq.codecs import TYPE_HEADER, UndecodableError
from ringq.context import Context
from ringq.di import Container, Resolver, build
from ringq.errors import LeaseLost, QueueClosed, RingqError, describe_error

if TYPE_CHECKING:
    from ringq.backend import Backend
    from ringq.handlers import HandlerRegistry, HandlerSpec

__all__ = ["Dispatcher"]

log = logging.getLogger("ringq.dispatch")

MAX_WORKERS = 1024

#: A batch holds about this much handler time (or 1/20 of the lease if less).
BATCH_BUDGET = 0.005
#: Unstarted messages of a batch go back after this long (at most 0.4 x lease).
HOLD = 0.02


#: Upper bounds (seconds) of the queue-wait and handler-duration histograms.
BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class _Histogram:
    """Bucket counts and a sum, owned by one worker (no lock needed)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    @staticmethod
    def merged(hs: list[_Histogram]) -> dict[str, Any]:
        counts = [sum(h.counts[i] for h in hs) for i in range(len(BUCKETS) + 1)]
        return {"buckets": BUCKETS, "counts": counts, "sum": sum(h.total for h in hs)}


class _Counters:
    """One worker's tallies (summed by ``stats``; no lock needed)."""

    SCALARS = (
        "dead_lettered",
        "failed",
        "late_acks",
        "processed",
        "retried",
        "succeeded",
        "undecodable",
    )
    __slots__ = (*SCALARS, "end_to_end", "handler_duration", "queue_wait")

    def __init__(self) -> None:
        self.processed = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.undecodable = 0
        self.late_acks = 0
        #: Publish to handler start (for a retry: since the first publish),
        #: the handler's run time, and publish to success (handler returned
        #: and its ack handed to the engine or to the batch being acked).
        self.queue_wait = _Histogram()
        self.handler_duration = _Histogram()
        self.end_to_end = _Histogram()


class _Worker:
    __slots__ = (
        "abandoned",
        "batch",
        "counters",
        "ctx",
        "current",
        "deadline",
        "finished",
        "hold_until",
        "hook",
        "pending",
        "pool",
        "thread",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        #: The unstarted messages of the batch being worked through. The
        #: worker and the lease monitor both take from its left (each
        #: ``popleft`` is atomic), so a message is either started or
        #: released, never both.
        self.batch: collections.deque[Delivery] = collections.deque()
        #: When the unstarted messages go back (epoch seconds).
        self.hold_until = 0.0
        #: Handled messages whose ack is still to be sent (one call per batch).
        #: Like ``batch``, drained with ``popleft`` by the worker or, for a
        #: batch held past its hold time, by the lease monitor.
        self.pending: collections.deque[Delivery] = collections.deque()
        #: Run by ``ctx.heartbeat()`` before it renews the lease.
        self.hook: Callable[[], None] = functools.partial(pool.d._heartbeat, self)
        #: The delivery being handled, its context (if the handler takes
        #: one) and its lease deadline (epoch seconds).
        self.current: Delivery | None = None
        self.ctx: Context | None = None
        self.deadline = 0.0
        self.abandoned = False
        #: Its thread left the pool (set last, under the dispatcher's ``done``).
        self.finished = False
        self.counters = _Counters()
        self.thread: threading.Thread | None = None


class _Pool:
    """The workers of one handler."""

    def __init__(self, dispatcher: Dispatcher, spec: HandlerSpec) -> None:
        self.d = dispatcher
        self.spec = spec
        self.lock = threading.Lock()
        self.target = spec.options.max_parallelism
        self.workers: set[_Worker] = set()
        self.retired: list[_Counters] = []
        self.abandoned_running = 0
        self.abandoned_total = 0
        self.stopping = False
        self.drain = False
        self.seq = 0
        lease = spec.options.timeout
        #: Handler time a batch should hold, and how long unstarted messages wait.
        self.budget = min(BATCH_BUDGET, lease / 20)
        self.hold = min(0.4 * lease, max(HOLD, 4 * self.budget))
        #: Average handler seconds per message over recent batches (0: none yet).
        self.per_message = 0.0
        #: The engine's dead-letter count of the topic when the pool started.
        self.dead_base = 0
        #: Acks the lease monitor sent for this pool's workers (only it writes).
        self.monitor_counters = _Counters()
        # Per message work we can skip: the type tag (bytes and str ignore
        # it) and the context (a function handler that does not take one).
        self.needs_tag = spec.message_type not in (bytes, str)
        self.needs_context = spec.cls is not None or spec.pass_context
        #: The function of a handler called without a context.
        self.plain: Callable[[object], object] = _no_plain if self.needs_context else spec.func  # type: ignore[assignment]

    # -- membership (call with self.lock held) ------------------------------

    def _spawn_locked(self) -> None:
        w = _Worker(self)
        self.seq += 1
        t = threading.Thread(
            target=self.d._run, args=(w,), name=f"ringq-{self.spec.name}-{self.seq}", daemon=True
        )
        w.thread = t
        self.workers.add(w)
        t.start()

    def fill_locked(self) -> None:
        while not self.stopping and len(self.workers) < self.target:
            self._spawn_locked()

    def should_exit(self, w: _Worker) -> bool:
        with self.lock:
            if w.abandoned:
                return True
            if self.stopping and not self.drain:
                self._leave_locked(w)
                return True
            if len(self.workers) > self.target:
                self._leave_locked(w)
                return True
            return False

    def _leave_locked(self, w: _Worker) -> None:
        if w in self.workers:
            self.workers.discard(w)
            self.retired.append(w.counters)

    def leave(self, w: _Worker) -> None:
        with self.lock:
            if w.abandoned:
                self.abandoned_running -= 1
                self.retired.append(w.counters)
            else:
                self._leave_locked(w)
        self.d._finished(w)

    def batch_size(self) -> int:
        """How many messages to take at once (see the module docstring)."""
        prefetch = self.spec.options.prefetch
        per = self.per_message
        if per <= 0.0:
            return prefetch
        return max(1, min(prefetch, int(self.budget / per)))

    def observe(self, seconds: float, messages: int) -> None:
        """A batch of ``messages`` took ``seconds`` of handler time."""
        x = seconds / messages
        per = self.per_message
        self.per_message = x if per <= 0.0 else 0.8 * per + 0.2 * x

    # -- running handlers ---------------------------------------------------------

    # Per message, the worker publishes what it handles (w.deadline, w.ctx,
    # then w.current) without a lock, and the monitor reads it under the
    # pool lock. If a handler finishes just as the monitor decides it
    # overran, the worker is abandoned one message late, which is harmless:
    # it exits after that message and a fresh worker has replaced it.

    def expire(self, w: _Worker, d: Delivery) -> None:
        """The lease monitor found ``d`` (handled by ``w``) past its deadline."""
        with self.lock:
            if w.current is not d or w.abandoned:
                return
            ctx = w.ctx
            if (ctx.deadline if ctx is not None else w.deadline) > time.time():
                return  # a heartbeat renewed it meanwhile
            w.abandoned = True
            if ctx is not None:
                ctx._expire()
            self.abandoned_running += 1
            self.abandoned_total += 1
            self.workers.discard(w)
            self.fill_locked()
        self.d._finished(w)
        self.d._release_rest(w)
        log.warning(
            "handler %s ran past its %.3gs lease on message %s (attempt %d): "
            "cancelled; the message is retried and a fresh worker took this one's place",
            self.spec.name,
            self.spec.options.timeout,
            d.id,
            d.attempt,
        )

    def stats(self, dead: int | None) -> dict[str, Any]:
        """``dead``: the engine's dead-letter count of the topic now."""
        with self.lock:
            counters = [w.counters for w in self.workers] + self.retired
            counters.append(self.monitor_counters)
            out: dict[str, Any] = {
                "topic": self.spec.topic,
                "workers": len(self.workers),
                "target": self.target,
                "active": sum(1 for w in self.workers if w.current is not None),
                "abandoned_running": self.abandoned_running,
                "abandoned_total": self.abandoned_total,
            }
        for name in _Counters.SCALARS:
            out[name] = sum(getattr(c, name) for c in counters)
        if dead is not None:
            out["dead_lettered"] = dead - self.dead_base
        out["batch_size"] = self.batch_size()
        out["queue_wait"] = _Histogram.merged([c.queue_wait for c in counters])
        out["handler_duration"] = _Histogram.merged([c.handler_duration for c in counters])
        out["end_to_end"] = _Histogram.merged([c.end_to_end for c in counters])
        return out


def _no_plain(msg: object) -> object:  # pragma: no cover - never called
    raise AssertionError("handler needs a context")


def _not_awaited(name: str, result: object) -> TypeError:
    """A handler returned an awaitable: it did not run, so the attempt fails."""
    close = getattr(result, "close", None)
    if callable(close):
        close()  # no "never awaited" warning: this error says it
    return TypeError(
        f"handler {name} returned {type(result).__name__}, an awaitable, which ringq cannot run "
        "on a worker thread: the message was not handled. Write the handler as a plain def "
        "(it may call asyncio.run(...)); async handlers are refused when registered"
    )


class _LeaseMonitor:
    """Sleeps until the earliest handler deadline (or batch hold), then
    cancels overrunners and releases messages held too long unstarted."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.cond = threading.Condition()
        self.heap: list[float] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="ringq-lease-monitor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def watch(self, deadline: float) -> None:
        """A handler started with this deadline: wake up by then."""
        # Fast path, no lock: a wake-up at or before this deadline is
        # already scheduled. (The worker published its deadline before
        # calling this, so a scan that empties the heap meanwhile sees it.)
        heap = self.heap
        try:
            if heap[0] <= deadline:
                return
        except IndexError:
            pass
        with self.cond:
            if not self.heap or deadline < self.heap[0]:
                heapq.heappush(self.heap, deadline)
                self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def _run(self) -> None:
        while True:
            try:
                if not self._wait():
                    return
                self._check()
            except Exception:  # pragma: no cover - a bug in ringq itself
                log.exception("lease monitor: unexpected error; continuing")
                time.sleep(0.1)

    def _wait(self) -> bool:
        """Sleeps until the earliest deadline passed; False once stopped."""
        with self.cond:
            while not self.stopped:
                now = time.time()
                if self.heap and self.heap[0] <= now:
                    self.heap.clear()
                    return True
                self.cond.wait(None if not self.heap else self.heap[0] - now)
            return False

    def _check(self) -> None:
        """Cancels every handler past its deadline, releases batches held
        past their hold time; schedules the next wake-up."""
        now = time.time()
        nearest = None
        for pool in self.d.pools():
            with pool.lock:
                running = []
                holding = []
                for w in pool.workers:
                    d, ctx = w.current, w.ctx
                    if d is not None:
                        running.append((w, d, ctx.deadline if ctx is not None else w.deadline))
                    if w.batch or w.pending:
                        holding.append(w)
            for w in holding:
                if w.hold_until <= now:
                    # A slow message in the batch: its unstarted neighbours go
                    # to free workers, the finished ones are acked now rather
                    # than when it ends (their leases end with its lease).
                    self.d._release_rest(w)
                    self.d._flush(w, pool.monitor_counters)
                elif (w.batch or w.pending) and (nearest is None or w.hold_until < nearest):
                    nearest = w.hold_until
            for w, d, deadline in running:
                if deadline <= now:
                    pool.expire(w, d)
                elif nearest is None or deadline < nearest:
                    nearest = deadline
        if nearest is not None:
            self.watch(nearest)


class Dispatcher:
    """Runs the handlers of a ``HandlerRegistry`` against an engine."""

    def __init__(
        self,
        backend: Backend,
        registry: HandlerRegistry,
        resolver: Resolver | None = None,
        timing: bool = False,
    ) -> None:
        self.engine = backend
        #: Fill the queue-wait and handler-duration histograms (``ringq.metrics``
        #: turns this on; off, the per-message path reads no clock).
        self.timing = timing
        self.registry = registry
        self.resolver: Resolver = resolver if resolver is not None else Container()
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        #: Notified when a worker leaves or is abandoned (``stop`` waits on it).
        self._done = threading.Condition()
        self.monitor = _LeaseMonitor(self)
        self.running = False

    def pools(self) -> list[_Pool]:
        with self._lock:
            return list(self._pools.values())

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self.running = True
        self.monitor.start()
        for spec in self.registry:
            self.add(spec)

    def add(self, spec: HandlerSpec) -> None:
        """Start the workers of a handler (registered before or after ``start``)."""
        self.engine.set_topic_policy(
            spec.topic, max_attempts=spec.options.retry.max_attempts, handler=spec.name
        )
        pool = _Pool(self, spec)
        pool.dead_base = self._dead_counts().get(spec.topic, 0)
        with self._lock:
            self._pools[spec.name] = pool
        with pool.lock:
            pool.fill_locked()

    def scale(self, name: str, workers: int) -> None:
        """Run ``workers`` workers for handler ``name`` (0 pauses it)."""
        want = f"an int in 0..={MAX_WORKERS}"
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be {want}, not {type(workers).__name__}")
        if not 0 <= workers <= MAX_WORKERS:
            from ringq.errors import ConfigError

            raise ConfigError(f"workers={workers!r} (must be {want})")
        spec = self.registry.get(name)
        with self._lock:
            pool = self._pools.get(name)
        if pool is None:
            raise RingqError(f"handler {name!r} is not running (call start() first)")
        with pool.lock:
            pool.target = workers
            pool.fill_locked()
            excess = len(pool.workers) > pool.target
        if excess:
            # Idle workers wait in checkout: the interrupt is sticky, so it
            # also stops one on its way in; each re-checks its membership
            # (busy ones leave after their batch).
            with contextlib.suppress(QueueClosed):
                self.engine.interrupt(spec.topic)
        log.info("handler %s scaled to %d workers", name, workers)

    def stop(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop every worker; True if all of them stopped within ``timeout``.

        Workers abandoned by the lease monitor are not waited for: their
        messages were already given back.
        """
        with self._lock:
            if not self.running:
                return True
            self.running = False
            pools = list(self._pools.values())
        for pool in pools:
            with pool.lock:
                pool.stopping = True
                pool.drain = drain
        deadline = None if timeout is None else time.monotonic() + timeout
        workers: list[_Worker] = []
        for pool in pools:
            with pool.lock:
                workers += list(pool.workers)
            # Sticky: also stops a worker on its way into checkout.
            with contextlib.suppress(QueueClosed):
                self.engine.interrupt(pool.spec.topic)
        with self._done:
            while any(not (w.finished or w.abandoned) for w in workers):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._done.wait(left)
        self.monitor.stop()
        busy = [w for w in workers if not w.finished]
        if busy:
            for pool in pools:
                with pool.lock:
                    pool.drain = False  # finish the current message, take no more
            if any(not w.abandoned for w in busy):
                log.warning("stop(): some handler threads were still busy after %ss", timeout)
        return all(w.abandoned for w in busy)

    def _finished(self, w: _Worker) -> None:
        """A worker left its pool, or the monitor abandoned it."""
        with self._done:
            if not w.abandoned:
                w.finished = True
            self._done.notify_all()

    def stats(self) -> dict[str, dict[str, Any]]:
        dead = self._dead_counts()
        return {p.spec.name: p.stats(dead.get(p.spec.topic)) for p in self.pools()}

    def _dead_counts(self) -> dict[str, int]:
        """Dead letters per topic since the engine opened (``{}`` once closed)."""
        try:
            return {t: s["dead_lettered"] for t, s in self.engine.topic_stats().items()}
        except RingqError:
            return {}

    # -- the worker ----------------------------------------------------------------

    def _run(self, w: _Worker) -> None:
        pool = w.pool
        spec = pool.spec
        engine = self.engine
        topic, lease = spec.topic, spec.options.timeout
        try:
            while True:
                try:
                    # Read before deciding to wait: an interrupt after this
                    # point makes the checkout below return at once.
                    since = engine.interrupts(topic)
                    if pool.should_exit(w):
                        return
                    size, share = pool.batch_size(), max(1, pool.target)
                    if pool.stopping:
                        # Draining: take what is ready, never wait.
                        batch = engine.checkout(topic, size, lease, 0, share=share)
                        if not batch:
                            with pool.lock:
                                pool._leave_locked(w)
                            return
                    else:
                        batch = engine.checkout(topic, size, lease, None, share=share, since=since)
                except QueueClosed:
                    return
                except RingqError as e:
                    # E.g. a storage fault: the engine recovers when it clears.
                    log.error("handler %s: checkout failed: %s", spec.name, e)
                    time.sleep(0.5)
                    continue
                if batch:
                    try:
                        self._handle_batch(w, batch)
                    except QueueClosed:
                        return
                    except Exception:  # pragma: no cover - a bug in ringq itself
                        log.exception("handler %s: unexpected error in the worker", spec.name)
        finally:
            pool.leave(w)

    def _handle_batch(self, w: _Worker, batch: list[Delivery]) -> None:
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
                    self._release_rest(w)
                    break
                deadline = d.lease_deadline
                if started and time.time() - checked_out > 0.1 * lease:
                    # Waited a while behind its neighbours: a full lease from now.
                    self._flush(w)
                    try:
                        deadline = engine.extend(d, lease)
                    except LeaseLost:
                        continue  # expired meanwhile; the engine retries it
                started += 1
                self._handle_one(w, d, deadline)
        finally:
            self._flush(w)
            if started:
                pool.observe(time.perf_counter() - clock, started)

    def _release_rest(self, w: _Worker) -> None:
        """Gives back the unstarted messages of ``w``'s batch (front of the
        topic, deliveries undone), whoever calls it first."""
        rest: list[Delivery] = []
        with contextlib.suppress(IndexError):
            while True:
                rest.append(w.batch.popleft())
        if not rest:
            return
        try:
            self.engine.release(rest)
        except LeaseLost:
            pass  # some had expired already: the engine retries those
        except QueueClosed:
            pass
        except RingqError as e:
            log.error(
                "handler %s: release of %d messages failed: %s", w.pool.spec.name, len(rest), e
            )

    def _flush(self, w: _Worker, counters: _Counters | None = None) -> None:
        """Sends the acks of handled messages (one engine call); counts the
        accepted ones as successes (in ``counters``, the worker's by default)."""
        done: list[Delivery] = []
        with contextlib.suppress(IndexError):
            while True:
                done.append(w.pending.popleft())
        if not done:
            return
        c = w.counters if counters is None else counters
        try:
            self.engine.ack(done)
        except LeaseLost as e:
            c.late_acks += len(e.ids)
            c.succeeded += len(done) - len(e.ids)
            log.warning(
                "handler %s: late ack rejected for %s (their leases ran out; "
                "the messages were retried)",
                w.pool.spec.name,
                ", ".join(e.ids),
            )
        except QueueClosed:
            raise
        except RingqError as e:
            # E.g. a failed fsync: the messages stay in flight and come back.
            log.error("handler %s: ack of %d messages failed: %s", w.pool.spec.name, len(done), e)
        else:
            c.succeeded += len(done)

    def _heartbeat(self, w: _Worker) -> None:
        """Before a handler renews its lease: send pending acks and release
        the batch's unstarted messages (a long handler gives its neighbours
        to free workers instead of keeping them waiting)."""
        self._flush(w)
        self._release_rest(w)

    def _handle_one(self, w: _Worker, d: Delivery, deadline: float) -> None:
        pool = w.pool
        spec = pool.spec
        c = w.counters
        c.processed += 1
        try:
            msg = spec.decode(d.payload, d.headers.get(TYPE_HEADER) if pool.needs_tag else None)
        except UndecodableError as e:
            c.undecodable += 1
            if self._nack(w, d, e, None, "undecodable"):
                c.dead_lettered += 1
            return
        ctx: Context | None = None
        if pool.needs_context:
            ctx = Context(self.engine, d, spec.name, spec.options.timeout)
            ctx.deadline = deadline
            ctx._before_heartbeat = w.hook
        # Published without a lock (see _Pool); this runs for every message.
        w.deadline = deadline
        w.ctx = ctx
        w.current = d
        self.monitor.watch(deadline)
        started = 0.0
        if self.timing:  # only while metrics are collected (it costs ~0.3 us)
            c.queue_wait.observe(max(0.0, time.time() - d.enqueued_at))
            started = time.perf_counter()
        try:
            result = pool.plain(msg) if ctx is None else self._call(spec, msg, ctx)
            if result is not None and inspect.isawaitable(result):
                raise _not_awaited(spec.name, result)
        except BaseException as e:  # a handler's SystemExit must not kill the worker
            if started:
                c.handler_duration.observe(time.perf_counter() - started)
            w.current = w.ctx = None
            self._failed(w, d, e)
            return
        if started:
            c.handler_duration.observe(time.perf_counter() - started)
        w.current = w.ctx = None
        staged = None if ctx is None else ctx._staged
        if not staged:
            w.pending.append(d)
            if started:
                c.end_to_end.observe(max(0.0, time.time() - d.enqueued_at))
            return
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
            self._failed(w, d, e)
        else:
            c.succeeded += 1
            if started:
                c.end_to_end.observe(max(0.0, time.time() - d.enqueued_at))

    def _failed(self, w: _Worker, d: Delivery, e: BaseException) -> None:
        """A failed attempt: retry after the backoff, or dead-letter."""
        spec = w.pool.spec
        c = w.counters
        c.failed += 1
        if w.abandoned:
            log.warning(
                "handler %s failed on message %s after its lease ran out: %r", spec.name, d.id, e
            )
            return
        if isinstance(e, spec.options.dead_letter_on):
            if self._nack(w, d, e, None, "non_retryable"):
                c.dead_lettered += 1
            return
        delay = spec.options.retry.next_delay(d.attempt)
        if delay is None:
            if self._nack(w, d, e, None, "max_attempts"):
                c.dead_lettered += 1
        elif self._nack(w, d, e, delay, None):
            c.retried += 1

    def _call(self, spec: HandlerSpec, msg: object, ctx: Context) -> object:
        if spec.cls is not None:
            with self.resolver.scope() as scope:
                handler = build(spec.cls, scope)
                handle: Callable[..., object] = handler.handle
                return handle(msg, ctx)
        func: Callable[..., object] = spec.func  # type: ignore[assignment]
        return func(msg, ctx)

    def _nack(
        self,
        w: _Worker,
        d: Delivery,
        error: BaseException,
        delay: float | None,
        reason: str | None,
    ) -> bool:
        """Records the failure on the message; False if the engine refused."""
        error_type, error_message, tb = describe_error(error)
        try:
            self.engine.nack(d, delay, error_type, error_message, tb, w.pool.spec.name, reason)
            return True
        except LeaseLost:
            w.counters.late_acks += 1
            log.warning(
                "handler %s: could not record the failure of message %s: its lease ran out",
                w.pool.spec.name,
                d.id,
            )
        except QueueClosed:
            raise
        except RingqError as e:
            log.error("handler %s: nack of message %s failed: %s", w.pool.spec.name, d.id, e)
        return False

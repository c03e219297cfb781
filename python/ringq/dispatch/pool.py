"""The workers of one handler: who is in the pool, how many there should
be, and how many messages each takes at once.

**Membership.** ``target`` is the number of workers the pool should have
(``max_parallelism``, or what ``scale`` set; 0 pauses the handler).
``fill_locked`` spawns the missing ones. A worker checks ``should_exit``
before each checkout and leaves when the pool has more workers than its
target or stops without draining; a draining worker leaves once nothing is
ready. A worker the lease monitor abandons (``abandon``) leaves at once,
and a fresh one takes its place in the same step, so the handler keeps its
parallelism while the abandoned thread finishes on its own. ``on_exit`` is
told of every worker that leaves (``stop`` waits for them).

**Batch size.** How many messages a worker takes at once:

- never more than ``prefetch``;
- never more than a fair share of what is ready: ``ceil(ready / workers)``
  (the engine takes ``share=target``), so ``max_parallelism=N`` runs N
  handlers at once whenever N messages are ready;
- only as many as the handler runs in about 5 ms (1/20 of the lease if
  that is less), from the average time per message measured over recent
  batches: slow handlers take one message at a time, trivial ones batch.

A message of a batch that has not started yet goes back when its worker
holds it longer than ``hold`` (20 ms, at most 0.4 of the lease): see
``ringq.dispatch.monitor``.

**Rate limit.** A rate-limited handler's workers take tokens from the
pool's ``gate`` before each checkout (``ringq.ratelimit``); a worker waiting
for one waits on ``wake``, which ``scale`` and ``stop`` notify.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ringq.backend import Delivery
from ringq.config import MAX_PARALLELISM
from ringq.context import Context
from ringq.dispatch.tallies import Counters, Histogram
from ringq.errors import ConfigError

if TYPE_CHECKING:
    from ringq.dispatch.processes import ProcessWorker
    from ringq.handlers import HandlerSpec
    from ringq.ratelimit import Gate

__all__ = ["Pool", "Worker", "check_workers"]

#: A batch holds about this much handler time (or 1/20 of the lease if less).
BATCH_BUDGET = 0.005
#: Unstarted messages of a batch go back after this long (at most 0.4 x lease).
HOLD = 0.02


class Worker:
    """One worker thread of a pool, and the messages it holds."""

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
        "proc",
        "thread",
    )

    def __init__(self, pool: Pool) -> None:
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
        #: Run by ``ctx.heartbeat()`` before it renews the lease (set by the
        #: worker's thread when it starts).
        self.hook: Callable[[], None] | None = None
        #: The delivery being handled, its context (if the handler takes
        #: one) and its lease deadline (epoch seconds).
        self.current: Delivery | None = None
        self.ctx: Context | None = None
        self.deadline = 0.0
        self.abandoned = False
        #: The worker process of a process-pool handler (started on first use).
        self.proc: ProcessWorker | None = None
        #: Its thread left the pool (set last, under the dispatcher's ``done``).
        self.finished = False
        self.counters = Counters(pool.bounds)
        self.thread: threading.Thread | None = None


def check_workers(workers: int) -> None:
    """A worker count for ``scale``: ``TypeError`` / ``ConfigError`` unless
    it is an int in ``0..=MAX_PARALLELISM``."""
    want = f"an int in 0..={MAX_PARALLELISM}"
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be {want}, not {type(workers).__name__}")
    if not 0 <= workers <= MAX_PARALLELISM:
        raise ConfigError(f"workers={workers!r} (must be {want})")


class Pool:
    """The workers of one handler.

    ``run`` is a worker thread's whole life (it returns when the worker
    leaves); ``on_exit`` is told when a worker left or was abandoned.
    """

    def __init__(
        self,
        spec: HandlerSpec,
        bounds: tuple[float, ...],
        run: Callable[[Worker], None],
        on_exit: Callable[[Worker], None],
    ) -> None:
        self.spec = spec
        #: Upper bounds of the histograms of its workers' counters.
        self.bounds = bounds
        self._run = run
        self._on_exit = on_exit
        self.lock = threading.Lock()
        #: Notified (with ``lock``) when workers may have to leave: a worker
        #: waiting for a rate limit's token waits on it.
        self.wake = threading.Condition(self.lock)
        #: The handler's rate limit and bucket (set by its first worker).
        self.gate: Gate | None = None
        self.target = spec.options.max_parallelism
        self.workers: set[Worker] = set()
        self.retired: list[Counters] = []
        self.abandoned_running = 0
        self.abandoned_total = 0
        self.stopping = False
        self.drain = False
        #: Set when the pool stops: cuts short a worker's wait between
        #: failed checkouts (``ringq.dispatch.outage``).
        self.stopped = threading.Event()
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
        self.monitor_counters = Counters(bounds)
        # Per message work we can skip: the context (a function handler that
        # does not take one). The headers are always read: their codec label
        # is checked for every handler (a bytes handler of a default-codec
        # queue was handed another codec's ciphertext as its own).
        # A process-pool handler always gets one here: its heartbeats and
        # staged messages come back through it.
        self.needs_context = spec.cls is not None or spec.pass_context or spec.options.processes > 0
        #: The function of a handler called without a context.
        self.plain: Callable[[object], object] = _no_plain if self.needs_context else spec.func  # type: ignore[assignment]

    # -- membership (call with self.lock held) ------------------------------

    def _spawn_locked(self) -> None:
        w = Worker(self)
        self.seq += 1
        t = threading.Thread(
            target=self._run, args=(w,), name=f"ringq-{self.spec.name}-{self.seq}", daemon=True
        )
        w.thread = t
        self.workers.add(w)
        t.start()

    def fill_locked(self) -> None:
        while not self.stopping and len(self.workers) < self.target:
            self._spawn_locked()

    def leave_locked(self, w: Worker) -> None:
        if w in self.workers:
            self.workers.discard(w)
            self.retired.append(w.counters)

    # -- membership ----------------------------------------------------------------

    def should_exit(self, w: Worker) -> bool:
        with self.lock:
            if w.abandoned:
                return True
            if self.stopping and not self.drain:
                self.leave_locked(w)
                return True
            if len(self.workers) > self.target:
                self.leave_locked(w)
                return True
            return False

    def may_take(self, w: Worker, draining: bool) -> bool:
        """With ``lock`` held: whether ``w`` goes on waiting for a token
        (``should_exit``'s test, without leaving). A worker that began to
        wait before a draining stop stops waiting too: it looks at what is
        ready first."""
        stopped = self.stopping and (not self.drain or not draining)
        return not (w.abandoned or stopped or len(self.workers) > self.target)

    def leave(self, w: Worker) -> None:
        with self.lock:
            if w.abandoned:
                self.abandoned_running -= 1
                self.retired.append(w.counters)
            else:
                self.leave_locked(w)
        self._on_exit(w)

    def scale(self, workers: int) -> bool:
        """Sets the target and spawns the missing workers; True if some must
        leave (each does at its next ``should_exit``)."""
        with self.lock:
            self.target = workers
            self.fill_locked()
            self.wake.notify_all()
            return len(self.workers) > self.target

    def begin_stop(self, drain: bool) -> None:
        """No more workers are spawned; with ``drain`` they finish what is
        ready, without it only their current message."""
        with self.lock:
            self.stopping = True
            self.drain = drain
            self.wake.notify_all()
        self.stopped.set()

    def members(self) -> list[Worker]:
        with self.lock:
            return list(self.workers)

    def stop_draining(self) -> None:
        """Workers finish their current message and take no more."""
        with self.lock:
            self.drain = False
            self.wake.notify_all()

    # Per message, the worker publishes what it handles (w.deadline, w.ctx,
    # then w.current) without a lock, and the monitor reads it under the
    # pool lock. If a handler finishes just as the monitor decides it
    # overran, the worker is abandoned one message late, which is harmless:
    # it exits after that message and a fresh worker has replaced it.

    def abandon(self, w: Worker, d: Delivery) -> bool:
        """``d`` (handled by ``w``) ran past its deadline: its handler is
        cancelled and ``w`` leaves, replaced by a fresh worker. False if it
        finished, or a heartbeat renewed its lease, meanwhile."""
        with self.lock:
            if w.current is not d or w.abandoned:
                return False
            ctx = w.ctx
            if (ctx.deadline if ctx is not None else w.deadline) > time.time():
                return False  # a heartbeat renewed it meanwhile
            w.abandoned = True
            if ctx is not None:
                ctx._expire()
            self.abandoned_running += 1
            self.abandoned_total += 1
            self.workers.discard(w)
            self.fill_locked()
        self._on_exit(w)
        return True

    # -- batch size -----------------------------------------------------------------

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

    # -- counts ---------------------------------------------------------------------

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
        for name in Counters.SCALARS:
            out[name] = sum(getattr(c, name) for c in counters)
        if dead is not None:
            out["dead_lettered"] = dead - self.dead_base
        out["batch_size"] = self.batch_size()
        gate = self.gate
        limit = self.spec.options.rate_limit if gate is None else gate.limit
        out["rate_limit"] = None if limit is None else str(limit)
        out["throttled"] = 0 if gate is None else gate.waits
        bounds = self.bounds
        out["queue_wait"] = Histogram.merged(bounds, [c.queue_wait for c in counters])
        out["handler_duration"] = Histogram.merged(bounds, [c.handler_duration for c in counters])
        out["end_to_end"] = Histogram.merged(bounds, [c.end_to_end for c in counters])
        return out


def _no_plain(msg: object) -> object:  # pragma: no cover - never called
    raise AssertionError("handler needs a context")

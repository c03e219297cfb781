"""The lease monitor: one thread per dispatcher that notices handlers past
their lease and batches held too long.

**Timeouts.** A handler's ``timeout`` is its lease. The monitor sleeps until
the earliest deadline it was told of (``watch``: each handler start, each
batch's hold time); nothing polls. A handler that ran past its lease gets
``ctx.cancelled`` set, and the engine has already made the message ready
again (or dead-lettered it). Python threads cannot be killed, so the
overrunning thread is *abandoned* (``Pool.abandon``): a fresh worker
replaces it at once, keeping the handler's parallelism, and the abandoned
thread exits as soon as its handler returns (its late ack is rejected with
``LeaseLost`` and logged). ``stats()`` counts abandoned threads still
running.

**Held batches.** When a worker holds the unstarted messages of its batch
past their hold time (the handler before them is slow), the monitor
releases them to free workers and sends the acks of the finished ones now
rather than when the slow one ends (their leases end with its lease).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ringq.dispatch.acks import flush, release_rest

if TYPE_CHECKING:
    from ringq.backend import Backend, Delivery
    from ringq.dispatch.pool import Pool, Worker

__all__ = ["LeaseMonitor"]

log = logging.getLogger("ringq.dispatch")


class LeaseMonitor:
    """Sleeps until the earliest handler deadline (or batch hold), then
    cancels overrunners and releases messages held too long unstarted.
    ``pools`` lists the pools to look at."""

    def __init__(self, engine: Backend, pools: Callable[[], list[Pool]]) -> None:
        self.engine = engine
        self.pools = pools
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
        for pool in self.pools():
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
                    release_rest(self.engine, w)
                    flush(self.engine, w, pool.monitor_counters)
                elif (w.batch or w.pending) and (nearest is None or w.hold_until < nearest):
                    nearest = w.hold_until
            for w, d, deadline in running:
                if deadline <= now:
                    self._expire(pool, w, d)
                elif nearest is None or deadline < nearest:
                    nearest = deadline
        if nearest is not None:
            self.watch(nearest)

    def _expire(self, pool: Pool, w: Worker, d: Delivery) -> None:
        """``d`` (handled by ``w``) is past its deadline."""
        if not pool.abandon(w, d):
            return
        release_rest(self.engine, w)
        log.warning(
            "handler %s ran past its lease on message %s (attempt %d; timeout %.3gs, "
            "or the deadline its last heartbeat set): cancelled; the message is retried and "
            "a fresh worker took this one's place",
            pool.spec.name,
            d.id,
            d.attempt,
            pool.spec.options.timeout,
        )

"""``Dispatcher``: starts, scales and stops the worker pools of a queue's
handlers.

``start`` starts the lease monitor and a pool per registered handler; ``add``
starts one more (a handler registered while running). Each handler's topic
gets the handler's ``max_attempts`` and name as its engine policy first, so
the engine dead-letters its messages (on nacks and lease expiries alike)
after the handler's attempts and records the handler on them.

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

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ringq.di.container import Container
from ringq.dispatch.aio import AsyncHandlers
from ringq.dispatch.monitor import LeaseMonitor
from ringq.dispatch.pool import Pool, Worker, check_workers
from ringq.dispatch.runner import Runner
from ringq.dispatch.tallies import histogram_bounds
from ringq.errors import QueueClosed, RingqError

if TYPE_CHECKING:
    from ringq.backend import Backend
    from ringq.di.protocol import Resolver
    from ringq.handlers import HandlerRegistry, HandlerSpec

__all__ = ["Dispatcher"]

log = logging.getLogger("ringq.dispatch")


class Dispatcher:
    """Runs the handlers of a ``HandlerRegistry`` against an engine."""

    def __init__(
        self,
        backend: Backend,
        registry: HandlerRegistry,
        resolver: Resolver | None = None,
        timing: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.engine = backend
        self.registry = registry
        self._pools: dict[str, Pool] = {}
        #: ``async def`` handlers: on ``loop`` (an ``AsyncQueue``'s caller's),
        #: else on a loop in a thread of their own, made when one is added.
        self._loop = loop
        self._async: AsyncHandlers | None = None
        self._lock = threading.Lock()
        #: Notified when a worker leaves or is abandoned (``stop`` waits on it).
        self._done = threading.Condition()
        self.monitor = LeaseMonitor(backend, self.pools)
        self.resolver = resolver if resolver is not None else Container()
        self.runner = Runner(backend, self.monitor, self.resolver, timing)
        self.running = False
        #: Set once a ``stop`` (from any thread) stopped the handlers.
        self._stop_done = False
        self._on_stopped: list[Callable[[], None]] = []

    @property
    def timing(self) -> bool:
        """Whether handlers fill the queue-wait and duration histograms."""
        return self.runner.timing

    @timing.setter
    def timing(self, on: bool) -> None:
        self.runner.timing = on
        if self._async is not None:
            self._async.set_timing(on)

    def async_handlers(self) -> AsyncHandlers:
        """The async pools (made on first use)."""
        with self._lock:
            if self._async is None:
                self._async = AsyncHandlers(
                    self.engine, self.resolver, histogram_bounds(self.engine), self._loop
                )
                self._async.set_timing(self.runner.timing)
            return self._async

    def pools(self) -> list[Pool]:
        with self._lock:
            return list(self._pools.values())

    def cancelled(self, message_id: str) -> bool:
        """Message ``message_id`` was cancelled while in flight: sets the
        ``cancelled`` of the context of the worker running it here, if one
        is (True then). Its ack is refused and nothing retries it."""
        found = False
        for pool in self.pools():
            for w in pool.members():
                d, ctx = w.current, w.ctx
                if d is not None and ctx is not None and d.id == message_id:
                    ctx._cancel("cancelled (q.cancel)")
                    found = True
        asynchronous = self._async
        if asynchronous is not None:
            for apool in list(asynchronous.pools.values()):
                for aw in list(apool.workers):
                    d, actx = aw.delivery, aw.ctx
                    if d is not None and actx is not None and d.id == message_id:
                        actx._cancel("cancelled (q.cancel)")
                        found = True
        return found

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
        if spec.is_async:
            self.async_handlers().add(spec, self._dead_counts().get(spec.topic, 0))
            return
        pool = Pool(spec, histogram_bounds(self.engine), self.runner.run, self._finished)
        pool.dead_base = self._dead_counts().get(spec.topic, 0)
        with self._lock:
            self._pools[spec.name] = pool
        with pool.lock:
            pool.fill_locked()

    def scale(self, name: str, workers: int) -> None:
        """Run ``workers`` workers for handler ``name`` (0 pauses it)."""
        check_workers(workers)
        spec = self.registry.get(name)
        with self._lock:
            pool = self._pools.get(name)
            asynchronous = self._async
        if pool is None and asynchronous is not None and asynchronous.scale(name, max(workers, 0)):
            log.info("handler %s scaled to %d coroutines", name, workers)
            return
        if pool is None:
            raise RingqError(f"handler {name!r} is not running (call start() first)")
        if pool.scale(workers):
            # Idle workers wait in checkout: the interrupt is sticky, so it
            # also stops one on its way in; each re-checks its membership
            # (busy ones leave after their batch).
            with contextlib.suppress(QueueClosed):
                self.engine.interrupt(spec.topic)
        log.info("handler %s scaled to %d workers", name, workers)

    def when_stopped(self, callback: Callable[[], None]) -> None:
        """Calls ``callback()`` once a ``stop`` stopped the handlers, in the
        thread that stopped them (at once if they are stopped already): an
        ``AsyncQueue.run()`` returns after a stop made from another thread."""
        with self._lock:
            if not self._stop_done:
                self._on_stopped.append(callback)
                return
        callback()

    def _notify_stopped(self) -> None:
        with self._lock:
            self._stop_done = True
            callbacks, self._on_stopped = self._on_stopped, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a callback of the handlers' stop failed")

    def stop(
        self, drain: bool = True, timeout: float | None = None, *, closing: bool = False
    ) -> bool:
        """Stop every worker; True if all of them stopped within ``timeout``.

        Workers abandoned by the lease monitor are not waited for: their
        messages were already given back. Async handlers on a caller's loop
        are stopped by ``AsyncQueue.stop`` (awaited) before this; called
        from another thread (``q.stop()``, the admin endpoint's drain) while
        that loop runs, this stops them on it. On the loop itself an
        explicit stop raises (``await q.stop()`` is the way there) and a
        close (``closing``) leaves them to finish there; a loop no longer
        running runs no handler. Then the ``when_stopped`` callbacks run.
        """
        try:
            return self._stop(drain, timeout, closing)
        finally:
            if not self.running:  # not when it raised before stopping anything
                self._notify_stopped()

    def _stop(self, drain: bool, timeout: float | None, closing: bool) -> bool:
        started = time.monotonic()
        asynchronous = self._async
        async_ok = True
        if asynchronous is not None:
            if self._loop is None:
                async_ok = asynchronous.stop(drain, timeout)
            elif self.running and self._loop.is_running():
                # Not once stopped: a close after a stop that timed out
                # leaves the handlers still running to finish on their loop.
                if not asynchronous.in_loop():
                    async_ok = asynchronous.stop(drain, timeout)
                elif not closing:
                    raise RuntimeError(
                        "q.stop() was called on the event loop its async handlers run on: "
                        "await the AsyncQueue's stop() there instead"
                    )
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - started))
        with self._lock:
            if not self.running:
                return async_ok
            self.running = False
            pools = list(self._pools.values())
        for pool in pools:
            pool.begin_stop(drain)
        deadline = None if timeout is None else time.monotonic() + timeout
        workers: list[Worker] = []
        for pool in pools:
            workers += pool.members()
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
                pool.stop_draining()  # finish the current message, take no more
            if any(not w.abandoned for w in busy):
                log.warning("stop(): some handler threads were still busy after %ss", timeout)
        return async_ok and all(w.abandoned for w in busy)

    def _finished(self, w: Worker) -> None:
        """A worker left its pool, or the monitor abandoned it."""
        with self._done:
            if not w.abandoned:
                w.finished = True
            self._done.notify_all()

    def stats(self) -> dict[str, dict[str, Any]]:
        dead = self._dead_counts()
        out = {p.spec.name: p.stats(dead.get(p.spec.topic)) for p in self.pools()}
        if self._async is not None:
            out.update(self._async.stats(dead))
        return out

    def _dead_counts(self) -> dict[str, int]:
        """Dead letters per topic since the engine opened (``{}`` once closed)."""
        try:
            return {t: s["dead_lettered"] for t, s in self.engine.topic_stats().items()}
        except RingqError:
            return {}

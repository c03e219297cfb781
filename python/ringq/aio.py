"""``ringq.AsyncQueue``: the queue for asyncio code.

The same operations, arguments, return values and exceptions as
``ringq.Queue``, awaited, and none of them blocks the event loop. Each call
goes to the engine without waiting (``Engine._deferred``: a full queue
raises at once, a checkout returns what is ready, an fsync is not waited
for) and takes microseconds. When it must wait (for room, for a message,
for an fsync with ``durability="always"``), it arms what it waits for, tries
once more, and awaits a future that the queue's eventfd completes: the
engine writes the eventfd when something armed happens, and the loop
watches it (``loop.add_reader``). No thread per call, no polling loop.
If the engine is busy (another thread holds its lock longer than a call may
wait on the loop, e.g. a snapshot copying a large state, or a failed fsync
to heal), the call runs in a worker thread instead (``WouldBlock``), with
``Queue``'s waiting semantics, except that a publish waits for room back on
the loop; that is the one case a call uses a thread.

Cancelling a call (``task.cancel()``, ``asyncio.timeout``) leaves the
queue consistent:

- ``checkout``: cancelled while it waits, it took nothing (no lease).
- ``publish``/``publish_many``: cancelled while waiting for room (or
  while giving the loop its turn, ``TURN``), nothing was published (room
  is always waited for on the loop, also when the engine was busy);
  cancelled while the engine was busy and a worker thread was making the
  call, it may still happen: a thread cannot be stopped;
  cancelled while waiting for the fsync
  (``durability="always"``), it *was* published and is durable once the
  fsync completes, but its id is not returned (publish with a
  ``dedup_key`` to find the message again: publishing the same key again
  with ``on_duplicate="keep"`` returns its id).
- ``ack``/``nack``/``release``/``dlq.replay``/``dlq.purge``: they never wait
  except for the fsync, so a cancelled one took effect.

On a shared queue's client (``shared=True`` where another process owns
the directory), the ``AsyncQueue`` has a connection of its own to the
owner, watched by the loop: each call sends its request (the requests of
one turn of the loop leave in one write) and awaits the owner's answer;
the owner does the waiting (for room, a message, the fsync). Cancelled, a
call withdraws its request: the owner stops waiting for it within 0.1 s.
A withdrawn checkout takes nothing (what it took meanwhile is given back
unstarted, its delivery not counted). A cancelled ``publish`` was sent
all the same: it happened, unless it was waiting for room and the owner
saw the withdrawal before room came (publish with a ``dedup_key`` to find
out); an ``ack``, ``nack`` or ``release`` took effect. If the owner goes
away, the calls in flight raise ``ringq.OwnerGone`` (whether each took
effect is unknown) and the next call connects to the new owner, or takes
the queue over (in a worker thread: recovery runs), as ``Queue`` does.

An ``AsyncQueue`` belongs to the event loop that first awaits one of its
calls. Opening runs recovery (about 0.2 s per million messages): open it
at startup (a FastAPI lifespan), or ``await AsyncQueue.open(...)`` to run
that in a worker thread. Closing takes a final snapshot: ``await
q.aclose()`` (or ``async with``) runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import heapq
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack

from ringq.backend import Backend, DeadLetter, Delivery, OutgoingMessage
from ringq.codecs.formats import Codec
from ringq.config import Durability, QueueOptions
from ringq.core import QueueCore, check_publish_call
from ringq.dispatch import aio as _dispatch_aio
from ringq.dlq import DeadLetterPredicate, DeadLetterQueue
from ringq.errors import (
    ConfigError,
    OwnerGone,
    QueueClosed,
    QueueFull,
    RingqError,
    Submitted,
    WouldBlock,
    describe_error,
)
from ringq.middleware import Middlewares
from ringq.queue import Queue
from ringq.retry import check_seconds

if TYPE_CHECKING:
    from ringq.core import PublishOptions
    from ringq.di import Resolver
    from ringq.handlers import HandlerRegistry

__all__ = ["AsyncDeadLetterQueue", "AsyncOps", "AsyncQueue"]

T = TypeVar("T")

# What a deferred handle's eventfd signals (``src/engine/wake.rs``).
READY, ROOM, DURABLE, CLOSED = 1, 2, 4, 8

#: A publish that has not waited for this long first gives the loop a turn
#: (``asyncio.sleep(0)``): a producer that never has to wait (room, batch
#: durability) would otherwise starve every other task of the loop.
TURN = 0.0005
_monotonic = time.monotonic


class _Signals:
    """The queue's eventfd, watched by one event loop, and the futures
    waiting for each kind of signal."""

    def __init__(
        self, handle: Any, loop: asyncio.AbstractEventLoop, on_durable: Callable[[bool], None]
    ) -> None:
        self.handle = handle
        self.loop = loop
        self.on_durable = on_durable
        self.fd: int = handle._async_fd()
        self.waiting: dict[int, set[asyncio.Future[None]]] = {
            READY: set(),
            ROOM: set(),
            DURABLE: set(),
        }
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        bits = self.handle._async_take()
        if bits & CLOSED:
            bits |= READY | ROOM | DURABLE
        if bits & DURABLE:
            self.on_durable(bool(bits & CLOSED))
        for kind, futures in self.waiting.items():
            if bits & kind and futures:
                for f in futures:
                    if not f.done():
                        f.set_result(None)
                futures.clear()

    async def wait(self, kind: int, deadline: float | None) -> bool:
        """Until ``kind`` is signalled (``True``) or the loop's clock passes
        ``deadline`` (``False``). The caller armed ``kind`` and tried again first."""
        fut: asyncio.Future[None] = self.loop.create_future()
        waiting = self.waiting[kind]
        waiting.add(fut)
        try:
            if deadline is None:
                await fut
                return True
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                return False
            return True
        finally:
            waiting.discard(fut)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.on_durable(True)
        for futures in self.waiting.values():
            for f in futures:
                if not f.done():
                    f.set_result(None)
            futures.clear()


class _Answers:
    """A shared queue's client for one event loop (a ``"socket"`` handle):
    its own connection to the owner, watched by the loop, and the futures
    waiting for answers. Requests submitted in one turn of the loop leave
    together (one write, ``_flush``); answers are taken when the socket is
    readable (``_readable``)."""

    def __init__(self, handle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = handle
        self.loop = loop
        self.futures: dict[int, asyncio.Future[Any]] = {}
        self.fd: int | None = None
        self.writing = False
        self.flush_due = False
        self.watch()

    def watch(self) -> None:
        """Watches the handle's socket (again, after a reconnect)."""
        fd = self.handle._loop_fd()
        if fd is not None and fd != self.fd:
            self.unwatch()
            self.fd = fd
            self.loop.add_reader(fd, self._readable)

    def unwatch(self) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            if self.writing:
                self.loop.remove_writer(self.fd)
                self.writing = False
            self.fd = None

    def expect(self, ticket: int) -> asyncio.Future[Any]:
        """The future of request ``ticket``'s answer (sent in this turn)."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.futures[ticket] = fut
        self.kick()
        return fut

    def kick(self) -> None:
        """Writes what was submitted once this turn of the loop is over."""
        if not self.flush_due and not self.writing:
            self.flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_due = False
        if self.handle._loop_flush() and self.fd is not None and not self.writing:
            self.writing = True
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        if not self.handle._loop_flush() and self.writing:
            self.writing = False
            if self.fd is not None:
                self.loop.remove_writer(self.fd)

    def withdraw(self, ticket: int) -> None:
        """Request ``ticket`` is no longer awaited: the owner stops waiting
        for it; a checkout's messages that still come are given back."""
        self.futures.pop(ticket, None)
        self.handle._loop_cancel(ticket)
        self.kick()

    def _readable(self) -> None:
        for ticket, ok, value in self.handle._loop_pump():
            fut = self.futures.pop(ticket, None)
            if fut is None or fut.done():
                if ok:
                    self._unwanted(value)
            elif ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if self.handle._loop_fd() is None:
            # Broken: every request in flight was answered with OwnerGone;
            # the next call connects again (``AsyncOps._reconnect``).
            self.unwatch()

    def _unwanted(self, value: object) -> None:
        """The answer to a withdrawn request: messages a withdrawn checkout
        took go back unstarted (their delivery not counted)."""
        if isinstance(value, list) and value and isinstance(value[0], Delivery):
            try:
                self.handle.release(value)
            except Submitted:
                self.kick()
            except RingqError:
                pass  # gone meanwhile: the owner ends the connection's leases

    def close(self) -> None:
        self.unwatch()
        futures, self.futures = self.futures, {}
        for f in futures.values():
            if not f.done():
                f.set_exception(QueueClosed("the queue was closed"))


class _LoopSide(QueueCore):
    """``QueueCore``'s methods (encoding, options, errors) over the queue's
    deferred handle: they never wait."""

    def __init__(
        self, handle: Backend, codec: Codec | None = None, middleware: Middlewares | None = None
    ) -> None:
        self._handle = handle
        if middleware is not None:
            self._middleware = middleware
        super().__init__(handle.path, codec=codec)

    def _open_backend(self, path: str | os.PathLike[str], settings: dict[str, object]) -> Backend:
        return self._handle

    def _hooked(self) -> _LoopSide:
        """This side, without the frameless publish path once the queue's
        middlewares have ``before_publish`` hooks (added before or after
        this side was made: ``Queue.add_middleware`` only knows its own)."""
        mw = self._middleware
        if mw.publish and "publish" in vars(self):
            vars(self).pop("publish", None)
            vars(self).pop("publish_many", None)
        return self


class _ThreadSide(QueueCore):
    """``QueueCore``'s methods over the blocking engine, for a call the loop
    cannot make now (``WouldBlock``): run in a worker thread, they wait as
    ``ringq.Queue``'s do (for the engine, room, the fsync)."""

    _fast_path = False

    def __init__(
        self, backend: Backend, codec: Codec | None = None, middleware: Middlewares | None = None
    ) -> None:
        self._given = backend
        if middleware is not None:
            self._middleware = middleware
        super().__init__(backend.path, codec=codec)

    def _open_backend(self, path: str | os.PathLike[str], settings: dict[str, object]) -> Backend:
        return self._given

    def close(self) -> None:  # pragma: no cover - never: the queue closes its engine
        raise AssertionError("the thread side does not own the engine")


class AsyncOps:
    """The awaitable operations on a backend whose engine runs in this
    process: ``AsyncQueue``'s, and what async handlers run on (a ``Queue``'s
    async handlers get their own, on their loop). ``backend`` stays open
    when this is detached."""

    def __init__(
        self,
        backend: Backend,
        path: str | os.PathLike[str] | None = None,
        codec: Codec | None = None,
        middleware: Middlewares | None = None,
    ) -> None:
        deferred = getattr(backend, "_deferred", None)
        if deferred is None:
            raise ConfigError(
                f"AsyncQueue on {backend.path!r} is not built yet for its backend "
                f"({backend.role}): use ringq.Queue there"
            )
        #: What ``publish`` encodes with (``AsyncQueue``: the queue's codec).
        self._codec = codec
        #: The queue's middlewares (``before_publish`` sees what is published).
        self._shared_middleware = middleware
        self._thread_side = _ThreadSide(backend, codec, middleware)
        self._detached = False
        self._use(deferred())

    def _use(self, handle: Any) -> None:
        """Makes ``handle`` (``Engine._deferred()``) the one calls go to:
        the engine in this process (``"engine"``: signals on its eventfd) or
        a shared queue's owner (``"socket"``: answers on a connection of
        this loop's own)."""
        self._handle = handle
        self._side = _LoopSide(handle, self._codec, self._shared_middleware)
        #: A shared queue's client: every call is answered by the owner.
        kind = handle._async_kind()
        self._socket = kind == "socket"
        #: A Redis queue: every call is a task driven with redis.asyncio
        #: (``ringq.backends.redis.RedisLoopHandle``).
        self._tasks = kind == "task"
        #: Calls are answered later (a shared queue's owner, Redis).
        self._remote = self._socket or self._tasks
        self._always = handle.durability == "always" and not self._remote
        self._bound = False
        self._task_loop: asyncio.AbstractEventLoop | None = None
        self._signals: _Signals | None = None
        self._answers: _Answers | None = None
        #: When a call last gave the loop a turn (``TURN``).
        self._turn_at = _monotonic()
        #: ``durability="always"``: on disk up to here; an fsync was asked
        #: for up to ``_requested`` (in round ``_asked_at``); the last failure.
        self._durable_upto = 0
        self._requested = 0
        self._asked_at: int | None = None
        self._durable_failed: tuple[int, RingqError] | None = None
        self._durable_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._durable_closed = False
        self._seq = 0
        #: Records of this turn of the loop to ask an fsync for at its end.
        self._to_ask = 0
        self._ask_due = False

    def _detach(self) -> None:
        """Stops the signals (the backend stays open); later waits raise
        ``QueueClosed``."""
        self._detached = True
        if self._signals is not None:
            self._signals.close()
            self._signals = None
        if self._answers is not None:
            self._answers.close()
            self._answers = None
        if self._remote or not self._handle.closed:
            self._handle._async_detach()

    # -- waiting ------------------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        """The running loop, which this queue belongs to from its first call."""
        loop = asyncio.get_running_loop()
        if self._detached:
            raise QueueClosed("the queue is closed")
        bound, self._bound = self._bound, True
        if self._tasks:
            first = self._task_loop
            if first is None:
                self._task_loop = loop
            elif first is not loop:
                self._bound = bound
                raise self._other_loop()
            return loop
        if self._socket:
            a = self._answers
            if a is None:
                self._answers = _Answers(self._handle, loop)
            elif a.loop is not loop:
                raise self._other_loop()
            return loop
        s = self._signals
        if s is None:
            self._signals = _Signals(self._handle, loop, self._durable_signalled)
            self._handle._bind_loop_thread()
        elif s.loop is not loop:
            raise self._other_loop()
        return loop

    @staticmethod
    def _other_loop() -> RuntimeError:
        return RuntimeError(
            "this AsyncQueue belongs to the event loop that first used it; "
            "open one AsyncQueue per loop (or use ringq.Queue from threads)"
        )

    def _loop_signals(self) -> _Signals:
        """The engine's signals for this loop (the engine runs here)."""
        self._bind()
        assert self._signals is not None
        return self._signals

    def _expect(self, s: Submitted) -> asyncio.Future[Any]:
        """The future of a submitted request's answer."""
        if self._tasks:
            if not self._bound:
                self._bind()
            task: asyncio.Future[Any] = self._handle._take(s.ticket)
            return task
        if self._answers is None:
            self._bind()
        assert self._answers is not None
        return self._answers.expect(s.ticket)

    async def _answer(self, s: Submitted, taken: bool = False) -> Any:
        """The owner's answer to a request this call sent (a shared queue's
        client). Cancelled meanwhile, the request is withdrawn: the owner
        stops waiting for it (within 0.1 s) and what a checkout took is
        given back unstarted. ``taken``: the answer is a checkout's; if it
        came in the same turn of the loop as the cancellation (too late to
        withdraw), its deliveries are given back here."""
        fut = self._expect(s)
        try:
            # A task is shielded: whether it may stop is the handle's call.
            return await (asyncio.shield(fut) if self._tasks else fut)
        except asyncio.CancelledError:
            if self._tasks:
                self._handle._withdraw(s.ticket, fut)
            elif self._answers is not None:
                self._answers.withdraw(s.ticket)
                if taken and fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._release_taken(fut.result())
            raise

    def _release_taken(self, deliveries: list[Delivery]) -> None:
        """Gives back ``deliveries`` (taken by a checkout whose caller was
        cancelled) as a withdrawn checkout's are, written now: the loop may
        not turn again for this call."""
        answers = self._answers
        if answers is not None:
            answers._unwanted(deliveries)
            self._handle._loop_flush()

    def _send_now(self, s: Submitted) -> None:
        """A request nobody will await (a last act: the loop may not turn
        again): written now (a shared queue's client) or left to run (Redis)."""
        if self._socket and self._answers is not None:
            self._handle._loop_flush()
        elif self._tasks:
            self._handle._forget(s.ticket)

    async def _reconnect(self) -> None:
        """After a call made elsewhere because the loop's connection was
        down (``WouldBlock``): connects it again, or, if this process took
        the queue over meanwhile, goes on with the engine here."""
        backend = self._thread_side.backend
        if backend.role == "owner":
            self._take_over(backend)
            return
        try:
            await asyncio.to_thread(self._handle._loop_reconnect)
        except OwnerGone:
            return  # the next call tries again
        if self._answers is not None:
            self._answers.watch()

    def _take_over(self, backend: Backend) -> None:
        """This process now owns the shared queue: calls go to its engine."""
        if self._answers is not None:
            self._answers.close()
        self._handle._async_detach()
        deferred: Callable[[], Any] = backend._deferred  # type: ignore[attr-defined]
        self._use(deferred())

    async def _durable(self) -> None:
        """Waits until the calls made since the last wait are on disk
        (``durability="always"``; at once otherwise). Many tasks waiting
        share the engine's fsyncs and this queue's polls of them: a task asks
        for an fsync only when its record is past what was asked for, and
        one poll per signal (``_durable_signalled``) wakes exactly the tasks
        whose records are now on disk."""
        if not self._always:
            return
        lsn = self._handle._take_lsn()
        if lsn is None or lsn <= self._durable_upto:
            return
        await self._durable_wait(lsn)

    async def _durable_wait(self, lsn: int) -> None:
        if self._signals is None:
            self._loop_signals()
        while lsn > self._durable_upto:
            if self._durable_closed:
                # The queue closed (its last fsync may have covered this
                # record): one last look, then the closed queue's answer.
                done, _, _ = self._handle._poll_durable(lsn, self._asked_at)
                if done:
                    return
                raise QueueClosed(f"the queue was closed before record {lsn} was fsynced")
            failed = self._durable_failed
            if failed is not None and lsn <= failed[0]:
                raise failed[1]
            if lsn > self._requested:
                if self._requested <= self._durable_upto:
                    # Nothing asked for is pending: ask now.
                    if self._ask(lsn):
                        return
                elif lsn > self._to_ask:
                    # A round is pending: the records of this turn of the
                    # loop are asked for together, once, when it ends.
                    self._to_ask = lsn
                    if not self._ask_due:
                        self._ask_due = True
                        asyncio.get_running_loop().call_soon(self._ask_later)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._seq += 1
            heapq.heappush(self._durable_waiters, (lsn, self._seq, fut))
            await fut

    def _ask(self, lsn: int) -> bool:
        """Asks for an fsync covering ``lsn``; ``True`` if it is on disk already."""
        self._handle._async_arm(DURABLE)
        done, asked, upto = self._handle._poll_durable(lsn, None)
        self._durable_upto = max(self._durable_upto, upto, lsn if done else 0)
        if not done:
            self._requested, self._asked_at = lsn, asked
        return bool(done)

    def _ask_later(self) -> None:
        """The end of a turn in which tasks' records joined a pending round
        (``_durable_wait``): one request for all of them."""
        self._ask_due = False
        lsn = self._to_ask
        if lsn <= self._requested or self._durable_closed or self._detached:
            return
        try:
            self._ask(lsn)
        except RingqError as e:
            # As a failed round (``_durable_signalled``): these waiters get the error.
            self._durable_failed = (lsn, e)
        self._wake_durable()

    def _durable_signalled(self, closed: bool) -> None:
        """An fsync round ended (or failed), or the queue closed: one poll,
        then the waiters whose records are on disk (or failed) go on."""
        if closed:
            self._durable_closed = True
        else:
            if self._requested > self._durable_upto:
                self._handle._async_arm(DURABLE)
                try:
                    done, self._asked_at, on_disk = self._handle._poll_durable(
                        self._requested, self._asked_at
                    )
                    if not done:
                        # The round ended short of it (it started before
                        # these records; a failed one drops its request):
                        # ask again, or no round would come for them.
                        done, self._asked_at, on_disk = self._handle._poll_durable(
                            self._requested, None
                        )
                    self._durable_upto = max(
                        self._durable_upto, on_disk, self._requested if done else 0
                    )
                except RingqError as e:
                    # Every record asked for so far may not be on disk: its
                    # waiters get the error, as a waiting call would; later
                    # ones ask anew.
                    self._durable_failed = (self._requested, e)
                    self._requested = self._durable_upto
        self._wake_durable(float("inf") if closed else None)

    def _wake_durable(self, upto: float | None = None) -> None:
        """The waiters whose records are on disk (or failed) go on."""
        if upto is None:
            failed = self._durable_failed
            upto = max(self._durable_upto, failed[0] if failed is not None else 0)
        waiters = self._durable_waiters
        while waiters and waiters[0][0] <= upto:
            f = heapq.heappop(waiters)[2]
            if not f.done():
                f.set_result(None)

    async def _busy(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``name`` on the blocking engine, in a worker thread: the engine
        was busy (``WouldBlock``: another thread held its lock longer than a
        call may wait on the loop, e.g. a snapshot copying a large state)."""
        result = await asyncio.to_thread(getattr(self._thread_side, name), *args, **kwargs)
        if self._socket:
            await self._reconnect()
        return result

    async def _busy_backend(self, name: str, *args: Any) -> Any:
        """``_busy`` for a method of the backend itself."""
        result = await asyncio.to_thread(getattr(self._thread_side.backend, name), *args)
        if self._socket:
            await self._reconnect()
        return result

    async def _backend_call(self, name: str, *args: Any) -> Any:
        """One call of the backend's ``name`` from the loop: answered at
        once, by the owner (a shared queue's client), or in a worker thread
        (``WouldBlock``)."""
        try:
            return getattr(self._side.backend, name)(*args)
        except Submitted as s:
            return await self._answer(s)
        except WouldBlock:
            return await self._busy_backend(name, *args)

    def _turn_due(self) -> bool:
        """Whether a coroutine that has not waited should give the loop a
        turn now (at most every ``TURN`` seconds); it is then counted as given."""
        now = _monotonic()
        if now - self._turn_at >= TURN:
            self._turn_at = now
            return True
        return False

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else asyncio.get_running_loop().time() + timeout

    # -- publishing ---------------------------------------------------------

    async def publish(
        self, payload: object, topic: str | None = None, **options: Unpack[PublishOptions]
    ) -> str:
        """``Queue.publish``, awaited: waits for room (unless ``block=False``;
        ``timeout`` bounds the wait) and, with ``durability="always"``, for
        the fsync, without blocking the loop."""
        if self._turn_due():
            # A producer that never waits would never let the loop run.
            await asyncio.sleep(0)
        if not self._bound:
            self._bind()
        side = self._side._hooked()
        try:
            try:
                mid = side.publish(payload, topic, **options)
            except Submitted as s:
                mid = await self._answer(s)
            except WouldBlock:
                mid = await self._busy_publish(
                    "publish",
                    (payload, topic),
                    options,
                    lambda: side.publish(payload, topic, **options),
                )
            except QueueFull as e:
                if options.get("block") is False or (e.need or 0) > (e.capacity or 0):
                    raise
                mid = await self._when_room(
                    lambda: side.publish(payload, topic, **options),
                    options.get("timeout"),
                    lambda: self._busy("publish", payload, topic, **{**options, "block": False}),
                )
        finally:
            if self._always:
                lsn = self._handle._take_lsn()
                if lsn is not None and lsn > self._durable_upto:
                    await self._durable_wait(lsn)
        return mid

    async def publish_many(
        self,
        payloads: Iterable[object],
        topic: str | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> list[str]:
        """``Queue.publish_many``, awaited (all or none)."""
        check_publish_call("AsyncQueue.publish_many", topic, payloads=payloads)
        if self._turn_due():
            await asyncio.sleep(0)
        if not self._bound:
            self._bind()
        side = self._side._hooked()
        items = payloads if isinstance(payloads, list) else list(payloads)
        waits: dict[str, Any] = {"block": block, "timeout": timeout}
        try:
            try:
                ids = side.publish_many(items, topic, **waits)
            except Submitted as s:
                ids = await self._answer(s)
            except WouldBlock:
                ids = await self._busy_publish(
                    "publish_many",
                    (items, topic),
                    waits,
                    lambda: side.publish_many(items, topic, **waits),
                )
            except QueueFull as e:
                if block is False or (e.need or 0) > (e.capacity or 0):
                    raise
                ids = await self._when_room(
                    lambda: side.publish_many(items, topic, **waits),
                    timeout,
                    lambda: self._busy("publish_many", items, topic, block=False),
                )
        finally:
            await self._durable()
        return ids

    async def _busy_publish(
        self, name: str, args: tuple[Any, ...], options: Mapping[str, Any], call: Callable[[], T]
    ) -> T:
        """A publish (``name``) the engine was too busy to take on the loop,
        made in a worker thread (``_busy``). On this process's engine the
        thread does not wait for room: a thread's wait cannot be called off
        when the call is cancelled, so a full queue sends it back here to
        wait for room on the loop (``_when_room``, retrying ``call``). A
        shared queue's client (its loop connection down) lets the owner wait."""
        if self._remote:
            result: T = await self._busy(name, *args, **options)
            return result
        try:
            result = await self._busy(name, *args, **{**options, "block": False})
            return result
        except QueueFull as e:
            if options.get("block") is False or (e.need or 0) > (e.capacity or 0):
                raise
        return await self._when_room(
            call,
            options.get("timeout"),
            lambda: self._busy(name, *args, **{**options, "block": False}),
        )

    async def _when_room(
        self, call: Callable[[], T], timeout: float | None, busy: Callable[[], Awaitable[T]]
    ) -> T:
        """Retries ``call`` (which raised ``QueueFull``) whenever room is
        freed, until it fits or ``timeout`` passes (then its last
        ``QueueFull`` is raised); ``busy`` makes it elsewhere if the engine
        is busy, without waiting for room there (a ``QueueFull`` of its
        waits here too; see ``_busy_publish``)."""
        signals = self._loop_signals()
        deadline = self._deadline(timeout)
        while True:
            self._handle._async_arm(ROOM)
            try:
                try:
                    return call()
                except WouldBlock:
                    return await busy()
            except QueueFull as e:
                if (e.need or 0) > (e.capacity or 0) or not await signals.wait(ROOM, deadline):
                    raise  # it can never fit, or the time is up

    # -- consuming ----------------------------------------------------------

    async def checkout(
        self,
        topic: str = "default",
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float | None = None,
    ) -> list[Delivery]:
        """``Queue.checkout``, awaited: waits up to ``timeout`` seconds for
        the first message (``None``: no limit, ``0``: never) and returns
        ``[]`` if none came. Cancelled while waiting, it took nothing."""
        if self._remote:
            return await self._checkout_remote(topic, max_messages, lease, timeout)
        side = self._side
        signals = self._loop_signals()
        try:
            got = side.checkout(topic, max_messages, lease, timeout)
        except WouldBlock:
            got = await self._busy_checkout(topic, max_messages, lease)
        if got or timeout == 0:
            return got
        deadline = self._deadline(timeout)
        handle = self._handle
        while True:
            handle._async_arm(READY)
            try:
                handle._arm_topic(topic)
                got = side.checkout(topic, max_messages, lease, 0)
            except WouldBlock:
                await asyncio.to_thread(handle._arm_topic, topic)
                got = await self._busy_checkout(topic, max_messages, lease)
            if got or not await signals.wait(READY, deadline):
                return got

    async def _checkout_remote(
        self, topic: str, max_messages: int, lease: float | None, timeout: float | None
    ) -> list[Delivery]:
        """``checkout`` on a shared queue's client: the owner waits."""
        loop = self._bind()
        deadline = self._deadline(timeout)
        while True:
            try:
                self._side.checkout(topic, max_messages, lease, timeout)
            except Submitted as s:
                got: list[Delivery] = await self._answer(s, taken=True)
                return got
            except WouldBlock:
                # The loop's connection is down: once in a worker thread
                # (which connects, or takes the queue over), then again.
                got = await self._busy_checkout(topic, max_messages, lease)
                await self._reconnect()
                if got or timeout == 0:
                    return got
                if deadline is not None:
                    timeout = max(0.0, deadline - loop.time())
                if not self._socket:
                    return await self.checkout(topic, max_messages, lease, timeout)
            else:  # pragma: no cover - a socket handle always submits
                raise AssertionError("a shared queue's client answered at once")

    def _ready_now(self, topic: str, max_messages: int, lease: float) -> list[Delivery]:
        """What is ready now, without waiting or giving the loop a turn
        (``[]`` on a shared queue's client or Redis: asking is a round trip)."""
        if self._remote:
            return []
        return self._side.checkout(topic, max_messages, lease, 0)

    async def _busy_checkout(
        self, topic: str, max_messages: int, lease: float | None
    ) -> list[Delivery]:
        """A checkout that does not wait, in a worker thread (the engine is
        busy). Cancelled meanwhile, what it took is given back."""
        call = asyncio.ensure_future(
            asyncio.to_thread(self._thread_side.checkout, topic, max_messages, lease, 0)
        )
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(self._give_back)
            raise

    def _give_back(self, call: asyncio.Future[list[Delivery]]) -> None:
        if call.cancelled() or call.exception() is not None or not call.result():
            return
        with contextlib.suppress(RingqError):
            self._thread_side.release(call.result())

    async def ack(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """``Queue.ack``, awaited (the fsync, with ``durability="always"``)."""
        try:
            try:
                self._side.ack(deliveries)
            except Submitted as s:
                await self._answer(s)
            except WouldBlock:
                await self._busy("ack", deliveries)
        finally:
            if self._always:
                await self._durable()

    async def release(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """``Queue.release``, awaited."""
        try:
            try:
                self._side.release(deliveries)
            except Submitted as s:
                await self._answer(s)
            except WouldBlock:
                await self._busy("release", deliveries)
        finally:
            if self._always:
                await self._durable()

    async def nack(
        self,
        delivery: Delivery,
        delay: float | None = None,
        error: str | BaseException | None = None,
    ) -> None:
        """``Queue.nack``, awaited."""
        try:
            try:
                self._side.nack(delivery, delay, error)
            except Submitted as s:
                await self._answer(s)
            except WouldBlock:
                await self._busy("nack", delivery, delay, error)
        finally:
            if self._always:
                await self._durable()

    async def extend(self, delivery: Delivery, seconds: float) -> float:
        """``Queue.extend``, awaited (it never waits: a lease lives in memory)."""
        try:
            return self._side.extend(delivery, seconds)
        except Submitted as s:
            deadline: float = await self._answer(s)
            return deadline
        except WouldBlock:
            extended: float = await self._busy("extend", delivery, seconds)
            return extended

    async def cancel(self, message_id: str) -> str:
        """``Queue.cancel``, awaited (in a worker thread: it writes a record
        and may wait for its fsync)."""
        queue = getattr(self, "_queue", None)
        target = self._thread_side if queue is None else queue
        outcome: str = await asyncio.to_thread(target.cancel, message_id)
        return outcome

    # -- for async handlers (ringq.dispatch.aio) ------------------------------

    async def _ack_with(self, delivery: Delivery, publish: list[OutgoingMessage] | None) -> None:
        """Acks ``delivery``, committing ``publish`` in the same record."""
        try:
            try:
                self._handle.ack(delivery, publish=publish)
            except Submitted as s:
                await self._answer(s)
            except WouldBlock:
                await asyncio.to_thread(self._thread_side.backend.ack, delivery, publish)
        finally:
            await self._durable()

    async def _record_failure(
        self,
        delivery: Delivery,
        delay: float | None,
        error: BaseException,
        handler: str,
        reason: str | None,
    ) -> None:
        """A handler's failed attempt (see ``ringq.dispatch.failures``)."""
        error_type, message, tb = describe_error(error)
        args = (delivery, delay, error_type, message, tb, handler, reason)
        try:
            try:
                self._handle.nack(*args)
            except Submitted as s:
                await self._answer(s)
            except WouldBlock:
                await asyncio.to_thread(self._thread_side.backend.nack, *args)
        finally:
            await self._durable()


class AsyncQueue(AsyncOps):
    """A durable queue in one directory, for asyncio code: ``ringq.Queue``'s
    options and operations, awaited (see the module's docs for waiting and
    cancellation). ``stats()``, ``topic_stats()`` and the properties are
    plain calls; ``q.queue`` is the ``ringq.Queue`` underneath (``admin``,
    ``serve_admin``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        capacity: int = 100_000,
        durability: Durability = "batch",
        fsync_interval: float = 0.05,
        max_attempts: int = 5,
        lease: float = 30.0,
        segment_size: int | None = None,
        recycle_segments: bool = True,
        snapshot_every: int | None = None,
        snapshot_interval: float | None = None,
        max_payload: int | None = None,
        max_key: int | None = None,
        max_headers: int | None = None,
        dlq_capacity: int | None = None,
        shared: bool = False,
        namespace: str | None = None,
        options: QueueOptions | None = None,
        resolver: Resolver | None = None,
        codec: Codec | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if k not in ("self", "path", "__class__")}
        queue = self._open_queue(path, **given)
        try:
            super().__init__(queue.backend, path, codec, queue._middleware)
        except BaseException:
            queue.close()
            raise
        self._queue = queue
        #: Set once the handlers ``run()`` started are stopped (from anywhere).
        self._stopped: asyncio.Event | None = None
        #: The dispatcher whose stop sets ``_stopped`` (``start``), and how
        #: many ``stop`` calls of this queue are under way (they set it when
        #: they return, after the snapshot).
        self._watched: object = None
        self._own_stops = 0
        #: ``Queue.handler``: registers a handler (``async def`` ones run on
        #: this queue's loop, plain ones on worker threads).
        self.handler = queue.handler
        #: ``Queue.add_middleware`` (``ringq.middleware``): the queue's hooks.
        self.add_middleware = queue.add_middleware
        #: ``Queue.set_rate_limit`` / ``Queue.rate_limit``: a topic's rate limit.
        self.set_rate_limit = queue.set_rate_limit
        self.rate_limit = queue.rate_limit
        #: ``Queue.register``: a ``ringq.Handler`` subclass (its ``handle``
        #: may be ``async def``).
        self.register = queue.register

    def _open_queue(self, path: str | os.PathLike[str], **options: Any) -> Queue:
        """Opens the ``ringq.Queue`` underneath (a seam for tests: the
        contract suite opens one with a manual clock)."""
        return Queue(path, **options)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], **options: Any) -> AsyncQueue:
        """Opens the queue in a worker thread (recovery does not hold up the loop)."""
        return await asyncio.to_thread(cls, path, **options)

    # -- handlers -------------------------------------------------------------

    @property
    def handlers(self) -> HandlerRegistry:
        return self._queue.handlers

    def start(self) -> None:
        """Starts the handlers: async ones as tasks of the running loop
        (call it inside one), plain ones on worker threads."""
        loop = asyncio.get_running_loop()
        self._bind()  # the queue now belongs to this loop
        self._queue._start(loop)
        dispatcher = self._queue._dispatcher
        stopped = self._stopped
        if stopped is None or stopped.is_set() or dispatcher is not self._watched:
            stopped = self._stopped = asyncio.Event()
            self._watched = dispatcher
            if dispatcher is not None:
                # A stop from another thread (``q.queue.stop()``, the admin
                # endpoint's drain, a close) ends ``run()`` too.
                dispatcher.when_stopped(functools.partial(self._stopped_from, loop, stopped))

    def _stopped_from(self, loop: asyncio.AbstractEventLoop, stopped: asyncio.Event) -> None:
        """The dispatcher's stop ended the handlers (in the thread that
        stopped them): ``stopped`` is set on ``loop`` (nothing if the loop
        is closed: nobody awaits it any more)."""

        def wake() -> None:
            if not self._own_stops:  # else ``stop`` sets it as it returns
                stopped.set()

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake)

    async def run(self) -> None:
        """Starts the handlers and returns once they are stopped: by
        ``stop``, or from another thread (``q.queue.stop()``, the admin
        endpoint's drain, a close). Cancelled, it stops them without
        draining."""
        self.start()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            await self.stop(drain=False)
            raise

    async def stop(self, drain: bool = True, timeout: float | None = None) -> bool:
        """``Queue.stop``, awaited: the async handlers end on this loop
        (``drain``: after what is ready now), the threads in a worker thread.
        ``timeout`` bounds the whole wait (the threads get what the async
        handlers left of it); a bad one raises before anything stops."""
        # Checked first (as Queue.stop does): a bad argument stops nothing.
        check_seconds("timeout", timeout, optional=True)
        self._queue.backend.check_not_forked()
        ok = True
        started = time.monotonic()
        dispatcher = self._queue._dispatcher
        asynchronous = None if dispatcher is None else dispatcher._async
        self._own_stops += 1
        stopped = False
        try:
            if asynchronous is not None:
                ok = await asynchronous.stop_async(drain, timeout)
            if timeout is not None:  # one timeout for both: the threads get what is left
                timeout = max(0.0, timeout - (time.monotonic() - started))
            ok = await asyncio.to_thread(self._queue.stop, drain, timeout) and ok
            stopped = True
        finally:
            self._own_stops -= 1
            # ``run()`` returns (also if the snapshot after the stop failed).
            if self._stopped is not None and (stopped or not self._queue.running):
                self._stopped.set()
        return ok

    @property
    def running(self) -> bool:
        return self._queue.running

    def scale(self, name: str, workers: int) -> None:
        """``Queue.scale``: for an async handler, how many coroutines run at once."""
        self._queue.scale(name, workers)

    def handler_stats(self) -> dict[str, dict[str, Any]]:
        return self._queue.handler_stats()

    # -- administration -----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return self._queue.stats()

    def topic_stats(self) -> dict[str, dict[str, int]]:
        return self._queue.topic_stats()

    @property
    def dlq(self) -> AsyncDeadLetterQueue:
        """The dead-letter queue, with awaitable methods."""
        return AsyncDeadLetterQueue(self)

    @property
    def queue(self) -> Queue:
        """The ``ringq.Queue`` underneath (its calls may block: not for the loop)."""
        return self._queue

    @property
    def backend(self) -> Backend:
        return self._queue.backend

    @property
    def path(self) -> str:
        return self._queue.path

    @property
    def closed(self) -> bool:
        return self._queue.closed

    @property
    def role(self) -> str:
        return self._queue.role

    def close(self) -> None:
        """Closes the queue now (a final snapshot: blocking; in a coroutine,
        ``await aclose()``)."""
        # Closing first: the engine wakes every waiting call, which then
        # finds the queue closed; the signals go after.
        self._queue.close()
        self._detach()

    async def aclose(self) -> None:
        """Stops running handlers (without draining) and closes the queue,
        its final snapshot in a worker thread."""
        if self._queue.running and not self._queue.closed:
            await self.stop(drain=False)
        await asyncio.to_thread(self._queue.close)
        self._detach()
        closing = getattr(self._handle, "closing", None)
        if closing is not None:  # a Redis queue's connections
            await closing

    async def __aenter__(self) -> AsyncQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving ``async with q:`` closes without draining what is ready
        (unlike ``with Queue``): an app's lifespan ends when its server
        stops, which should not wait for a backlog. Running handlers
        finish; what is ready waits for the next start. ``await q.stop()``
        first drains."""
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ringq.AsyncQueue {self.path!r} {state}>"

    # -- periodic messages (ringq.schedules) -----------------------------------

    async def every(
        self,
        interval_or_cron: object,
        message: object,
        *,
        topic: str | None = None,
        name: str,
        catch_up: Literal["none", "one", "all"] = "one",
        headers: dict[str, str] | None = None,
        tz: str = "UTC",
    ) -> str:
        """``Queue.every``, awaited (see ``ringq.schedules``; it publishes, in
        a worker thread); its ticks are handled by the queue's handlers."""
        every = functools.partial(
            self._queue.every, interval_or_cron, message, topic=topic, name=name,
            catch_up=catch_up, headers=headers, tz=tz,
        )  # fmt: skip
        return await asyncio.to_thread(every)

    async def unschedule(self, name: str) -> None:
        """``Queue.unschedule``, awaited (in a worker thread)."""
        await asyncio.to_thread(self._queue.unschedule, name)


class AsyncDeadLetterQueue:
    """``Queue.dlq`` for an ``AsyncQueue``: the same methods, awaited."""

    __slots__ = ("_dlq", "_q")

    def __init__(self, q: AsyncQueue) -> None:
        self._q = q
        self._dlq: DeadLetterQueue = q._side.dlq

    async def list(
        self, topic: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        found: builtins.list[DeadLetter] = await self._q._backend_call(
            "dlq_list", topic, reason, limit
        )
        return found

    async def get(self, id: str) -> DeadLetter:
        found: DeadLetter = await self._q._backend_call("dlq_get", id)
        return found

    async def _listing(
        self, ids: Iterable[str] | None, where: DeadLetterPredicate | None, rate: float | None
    ) -> builtins.list[DeadLetter] | None:
        """Every dead letter, if the selection needs them."""
        if not self._dlq._needs_listing(ids, where, rate):
            return None
        return await self.list()

    async def replay(
        self,
        ids: Iterable[str] | None = None,
        where: DeadLetterPredicate | None = None,
        rate: float | None = None,
    ) -> int:
        """``DeadLetterQueue.replay``; a ``rate`` paces it with ``asyncio.sleep``."""
        done = 0
        ids = builtins.list(ids) if ids is not None and not isinstance(ids, str) else ids
        listing = await self._listing(ids, where, rate)
        for due, batch in self._dlq._replay_plan(ids, where, rate, listing):
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                done += await self._q._backend_call("dlq_replay", batch)
            finally:
                await self._q._durable()
        return done

    async def purge(
        self, ids: Iterable[str] | None = None, where: DeadLetterPredicate | None = None
    ) -> int:
        ids = builtins.list(ids) if ids is not None and not isinstance(ids, str) else ids
        selected = self._dlq._select(ids, where, await self._listing(ids, where, None))
        if selected == []:
            return 0
        try:
            purged: int = await self._q._backend_call("dlq_purge", selected)
        finally:
            await self._q._durable()
        return purged

    async def count(self) -> int:
        """How many dead letters there are (``len(q.dlq)`` of ``Queue``)."""
        stats = await self._q._backend_call("stats")
        return int(stats["dead"])

    def __repr__(self) -> str:
        return f"<ringq.AsyncDeadLetterQueue of {self._q.path!r}>"


# The async handler pools make their operations with this (see there).
_dispatch_aio.OPS_FACTORY = AsyncOps

"""``Container`` is ringq's own resolver (the default of ``ringq.Queue``)::

    def open_session(db: Database) -> Iterator[Session]:    # factories are injected too
        session = db.session()
        try:
            yield session                                   # the value
            session.commit()                                # runs when the scope closes
        except Exception:
            session.rollback()                              # the handler raised
            raise
        finally:
            session.close()

    container = ringq.di.Container()
    container.instance(Settings, Settings.from_env())             # a ready-made value
    container.register(Database, lifetime="singleton")            # built once, by build()
    container.register(Session, open_session)                     # per message (the default)
    container.register(Clock, SystemClock, lifetime="transient")  # a new one at every get
    container.register(Repository, SqlRepository)                 # abstract type, concrete class
    container.register(Pool, open_pool, lifetime="singleton")     # async def / async generator
    ...
    container.close()                                             # singletons' cleanups
    await container.aclose()                                      # ... also async ones

- Lifetimes: ``"singleton"`` - one instance per container, created on first
  use, exactly once even when many threads or coroutines ask at the same
  time; its own dependencies must be singletons or transients (asking a
  singleton for a scoped dependency is a :class:`ResolutionError`, not a
  silently shared per-message object). ``"scoped"`` - one instance per scope
  (per message), also when coroutines ask for it at once. ``"transient"`` - a
  new instance at every ``get``.
- The factory defaults to ``build(tp, scope)``, so constructor injection is
  recursive. An explicit factory is called the same way: its annotated
  parameters are resolved from the scope.
- Cleanup convention: a factory that is a *generator function* is run up to
  its ``yield``; the yielded value is the service, and the rest of the
  generator runs when the owning scope closes (transient and scoped: the
  scope in which it was created; singleton: :meth:`Container.close`). As with
  :func:`contextlib.contextmanager`, an exception that ends the scope is
  thrown into the generator at the ``yield`` (so it can roll back), but a
  cleanup can never swallow it: the handler's exception always propagates.
  Cleanups run in reverse creation order; one that raises does not skip the
  others (:class:`contextlib.ExitStack`'s rules). Objects returned by
  ordinary factories are not entered even if they are context managers -
  wrap them in a generator (``with Thing() as t: yield t``) to get that.
- Async factories: an ``async def`` factory is awaited, an *async generator*
  factory is the async form of the generator convention (its cleanup is
  awaited when the scope closes). They are made only in the scopes of
  :meth:`Container.ascope` (``await scope.aget(tp)``), which is what ringq
  opens for a handler class whose ``handle`` is ``async def``; there sync and
  async factories may depend on each other either way. A sync scope
  (:meth:`Container.scope`, a plain ``def handle``) raises a
  :class:`ResolutionError` for a type made by an async factory, and for a
  singleton that an async scope made from async dependencies: it never hands
  out a coroutine. Async singletons' cleanups are awaited by
  :meth:`Container.aclose`; :meth:`Container.close` refuses to run (and
  closes nothing) while any are pending.
- Unregistered types are an error (:class:`NotRegistered`), also for concrete
  classes: no auto-building. Auto-building would quietly turn a forgotten
  registration (say, a database pool) into a new object per message, and it
  would make parameter defaults dead code. Register each dependency, even if
  it is just ``register(Clock)``.
- A later ``register``/``instance`` for the same type replaces the earlier one
  (handy for tests). Dependency cycles are reported as a
  :class:`ResolutionError` listing the cycle.

Thread-safety: :class:`Container` creates each singleton exactly once, also
across event loops and threads: the first to ask creates it, holding no lock
while it does; the others wait for it (threads block, coroutines await) and,
if it failed, one of them tries again. Registering while scopes are open is
safe, but call :meth:`Container.close` / :meth:`Container.aclose` only after
the workers have stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

from ringq.di.injection import Param, plan, resolve_args
from ringq.di.protocol import NotRegistered, ResolutionError, name_of

if TYPE_CHECKING:
    # TypeForm (PEP 747) lets register()/instance() take abstract classes and Protocols,
    # which type[T] refuses under mypy ([type-abstract]). Type-checking only: no runtime need.
    from typing_extensions import TypeForm

__all__ = ["Container", "ContainerScope", "Lifetime"]

T = TypeVar("T")

Lifetime = Literal["singleton", "scoped", "transient"]
_LIFETIMES: Final = ("singleton", "scoped", "transient")

#: A value as a scope caches it: ``(value, needs_async)``, where ``needs_async``
#: says an async factory made it or one of its dependencies.
_Made = tuple[Any, bool]


def _kind(factory: Callable[..., Any]) -> tuple[bool, bool]:
    """``(asynchronous, generator)``: what calling ``factory`` returns (a
    callable object is judged by its ``__call__``)."""
    target: Any = factory
    if not (isinstance(factory, (type, functools.partial)) or inspect.isroutine(factory)):
        target = type(factory).__call__
    asyncgen = inspect.isasyncgenfunction(target)
    return (
        asyncgen or inspect.iscoroutinefunction(target),
        asyncgen or inspect.isgeneratorfunction(target),
    )


class _Registration:
    __slots__ = ("asynchronous", "factory", "generator", "lifetime", "plan", "tp", "value")

    def __init__(
        self,
        tp: Any,
        factory: Callable[..., Any] | None,
        lifetime: Lifetime,
        value: Any = None,
    ) -> None:
        self.tp = tp
        self.factory = factory
        self.lifetime = lifetime
        self.asynchronous, self.generator = (False, False) if factory is None else _kind(factory)
        self.plan: tuple[Param, ...] = () if factory is None else plan(factory)
        self.value = value  # instance() registrations only


def _cycle_error(reg: _Registration) -> ResolutionError:
    return ResolutionError(
        f"dependency cycle: {name_of(reg.tp)} is being created by threads that each wait "
        "for what another one creates",
        tp=reg.tp,
    )


class _Pending:
    """A creation under way in a scope. The others that want the value wait
    for ``done`` (a thread-safe future, awaitable from any loop; made by the
    first of them, under the scope's lock), then look again: the value is
    cached, or the creation failed and one of them tries."""

    __slots__ = ("done", "thread")

    def __init__(self) -> None:
        self.done: concurrent.futures.Future[None] | None = None
        self.thread = threading.get_ident()


class _Prefetched:
    """Dependencies an async scope has awaited (or failed to), as the sync
    ``Scope`` that ``resolve_args`` reads."""

    def __init__(self, got: dict[Any, Any], failed: dict[Any, Exception]) -> None:
        self.got = got
        self.failed = failed

    def get(self, tp: type[T]) -> T:
        if tp in self.failed:
            raise self.failed[tp]
        value: T = self.got[tp]
        return value


class ContainerScope:
    """A scope of a :class:`Container`: caches scoped objects, owns their cleanups.

    ``get`` serves sync scopes (:meth:`Container.scope`); ``aget`` is for the
    scopes of :meth:`Container.ascope`, where async factories are awaited.
    """

    def __init__(
        self, container: Container, *, root: bool = False, asynchronous: bool = False
    ) -> None:
        self._container = container
        self._root = root
        self._async = asynchronous
        self._lock = threading.Lock()
        self._cache: dict[_Registration, _Made] = {}
        self._pending: dict[_Registration, _Pending] = {}
        #: The cleanups, oldest first: (context manager, is async, type).
        self._exits: list[tuple[Any, bool, Any]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _lookup(self, tp: Any, path: list[Any] | tuple[Any, ...]) -> _Registration:
        """``tp``'s registration, asked for by the chain ``path``."""
        if self._closed:
            raise ResolutionError(f"cannot get {name_of(tp)}: the scope is closed", tp=tp)
        reg = self._container._lookup(tp)
        if reg is None:
            raise NotRegistered(tp, f"{name_of(tp)} is not registered in the container")
        if tp in path:
            cycle = " -> ".join(name_of(t) for t in [*path[path.index(tp) :], tp])
            raise ResolutionError(f"dependency cycle: {cycle}", tp=tp)
        return reg

    def _owner(self, reg: _Registration) -> ContainerScope:
        """The scope that caches ``reg``'s value (singletons: the root)."""
        if reg.lifetime == "singleton":
            return self._container._root
        if self._root:
            raise ResolutionError(
                f"{name_of(reg.tp)} is scoped (one per message) and cannot be a dependency "
                "of a singleton; make it transient or the dependent scoped",
                tp=reg.tp,
            )
        return self

    def _claim(self, reg: _Registration) -> _Made | _Pending | None:
        """``reg``'s cached value; or the creation under way, to wait for
        (its ``done`` is set); or ``None``: the caller is to create it now,
        then :meth:`_settle`."""
        made = self._cache.get(reg)  # without the lock: a value is published once made
        if made is not None:
            return made
        with self._lock:
            made = self._cache.get(reg)
            if made is not None:
                return made
            pending = self._pending.get(reg)
            if pending is None:
                self._pending[reg] = _Pending()
            elif pending.done is None:
                pending.done = concurrent.futures.Future()
            return pending

    def _settle(self, reg: _Registration, made: _Made | None) -> None:
        """Ends the creation of ``reg`` (``made`` is None if it failed)."""
        with self._lock:
            if made is not None:
                self._cache[reg] = made
            done = self._pending.pop(reg).done
        if done is not None:
            done.set_result(None)

    # -- sync ------------------------------------------------------------------

    def get(self, tp: type[T]) -> T:
        """Return the instance of ``tp`` for this scope (see the lifetimes)."""
        resolving = self._container._resolving()
        reg = self._lookup(tp, resolving)
        resolving.append(tp)
        try:
            return cast(T, self._get(reg))
        finally:
            resolving.pop()

    def _get(self, reg: _Registration) -> Any:
        if reg.factory is None:
            return reg.value
        if reg.asynchronous:
            raise _needs_async(reg, "is made by an async factory")
        if reg.lifetime == "transient":
            return self._create(reg)
        owner = self if reg.lifetime == "scoped" and not self._root else self._owner(reg)
        made = owner._cache.get(reg)  # the common case, without a lock
        if made is None:
            made = owner._once(reg)
        if made[1]:
            raise _needs_async(reg, "was made from async dependencies (in an async scope)")
        return made[0]

    def _once(self, reg: _Registration) -> _Made:
        while (claim := self._claim(reg)) is not None:
            if not isinstance(claim, _Pending):
                return claim
            if claim.thread == threading.get_ident():
                raise ResolutionError(
                    f"cannot get {name_of(reg.tp)}: a coroutine on this thread is creating "
                    "it, and a sync get would wait for it forever; use await scope.aget()",
                    tp=reg.tp,
                )
            assert claim.done is not None  # _claim made it
            self._container._wait_for(claim, reg)
        made: _Made | None = None
        try:
            made = (self._create(reg), False)
            return made
        finally:
            self._settle(reg, made)

    def _create(self, reg: _Registration) -> Any:
        assert reg.factory is not None  # instance() registrations are never created
        args, kwargs = resolve_args(reg.factory, reg.plan, self)
        try:
            if not reg.generator:
                return _not_a_coroutine(reg, reg.factory(*args, **kwargs))
            cm = contextlib.contextmanager(reg.factory)(*args, **kwargs)
            value = cm.__enter__()
        except ResolutionError:
            raise
        except Exception as exc:
            raise _factory_failed(reg, exc) from exc
        self._push(cm, False, reg)
        return value

    def _push(self, cm: Any, is_async: bool, reg: _Registration) -> None:
        with self._lock:
            self._exits.append((cm, is_async, reg.tp))

    def _take_exits(self) -> list[tuple[Any, bool, Any]]:
        with self._lock:
            self._closed = True
            self._cache.clear()
            exits, self._exits = self._exits, []
        return exits

    def _close(self, exc: BaseException | None) -> None:
        """Run the cleanups (newest first); never suppresses ``exc``."""
        exits = self._take_exits()
        if not exits:
            return
        stack = contextlib.ExitStack()
        for cm, _, _ in exits:
            stack.push(cm)
        if exc is None:
            stack.close()
        else:
            stack.__exit__(type(exc), exc, exc.__traceback__)

    # -- async -----------------------------------------------------------------

    async def aget(self, tp: type[T]) -> T:
        """Return the instance of ``tp`` for this scope, awaiting async
        factories (a scope of :meth:`Container.ascope`)."""
        if not self._async:
            raise ResolutionError(
                f"cannot await {name_of(tp)}: this scope was opened by Container.scope(); "
                "open it with Container.ascope() to await dependencies",
                tp=tp,
            )
        value, _ = await self._aget(tp, ())
        return cast(T, value)

    async def _aget(self, tp: Any, path: tuple[Any, ...]) -> _Made:
        reg = self._lookup(tp, path)
        path = (*path, tp)
        if reg.factory is None:
            return reg.value, False
        if reg.lifetime == "transient":
            return await self._acreate(reg, path)
        return await self._owner(reg)._aonce(reg, path)

    async def _aonce(self, reg: _Registration, path: tuple[Any, ...]) -> _Made:
        while (claim := self._claim(reg)) is not None:
            if not isinstance(claim, _Pending):
                return claim
            assert claim.done is not None  # _claim made it
            # shielded: a waiter's cancellation must not cancel the shared future
            await asyncio.shield(asyncio.wrap_future(claim.done))
        made: _Made | None = None
        try:
            made = await self._acreate(reg, path)
            return made
        finally:
            self._settle(reg, made)

    async def _acreate(self, reg: _Registration, path: tuple[Any, ...]) -> _Made:
        factory = reg.factory
        assert factory is not None  # instance() registrations are never created
        got: dict[Any, Any] = {}
        failed: dict[Any, Exception] = {}
        needs_async = reg.asynchronous
        for p in reg.plan:
            if p.tp in got or p.tp in failed:
                continue
            try:
                got[p.tp], dependency_async = await self._aget(p.tp, path)
            except Exception as exc:
                failed[p.tp] = exc
            else:
                needs_async = needs_async or dependency_async
        args, kwargs = resolve_args(factory, reg.plan, _Prefetched(got, failed))
        try:
            if not reg.generator:
                value = factory(*args, **kwargs)
                if reg.asynchronous:
                    return await cast(Awaitable[Any], value), True
                return _not_a_coroutine(reg, value), needs_async
            if reg.asynchronous:
                acm = contextlib.asynccontextmanager(factory)(*args, **kwargs)
                value = await acm.__aenter__()
                self._push(acm, True, reg)
                return value, True
            cm = contextlib.contextmanager(factory)(*args, **kwargs)
            value = cm.__enter__()
        except ResolutionError:
            raise
        except Exception as exc:
            raise _factory_failed(reg, exc) from exc
        self._push(cm, False, reg)
        return value, needs_async

    async def _aclose(self, exc: BaseException | None) -> None:
        """:meth:`_close` for async and sync cleanups alike."""
        exits = self._take_exits()
        if not exits:
            return
        stack = contextlib.AsyncExitStack()
        for cm, is_async, _ in exits:
            if is_async:
                stack.push_async_exit(cm)
            else:
                stack.push(cm)
        if exc is None:
            await stack.aclose()
        else:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)

    def _async_exits(self) -> list[Any]:
        with self._lock:
            return [tp for _, is_async, tp in self._exits if is_async]


def _factory_failed(reg: _Registration, exc: Exception) -> ResolutionError:
    return ResolutionError(
        f"cannot create {name_of(reg.tp)}: factory {name_of(reg.factory)} raised "
        f"{type(exc).__name__}: {exc}",
        target=reg.factory,
        tp=reg.tp,
    )


def _not_a_coroutine(reg: _Registration, value: Any) -> Any:
    if inspect.iscoroutine(value):
        value.close()  # no "never awaited" warning: this error says it
        raise ResolutionError(
            f"cannot create {name_of(reg.tp)}: factory {name_of(reg.factory)} returned a "
            "coroutine; declare it async def so that the container awaits it",
            target=reg.factory,
            tp=reg.tp,
        )
    return value


def _needs_async(reg: _Registration, why: str) -> ResolutionError:
    return ResolutionError(
        f"cannot get {name_of(reg.tp)} in a sync scope: it {why}; use it from an async "
        "handler (a handler class whose handle is async def), which ringq builds in "
        "Container.ascope(), or give it a sync factory",
        tp=reg.tp,
        target=reg.factory,
    )


class Container:
    """ringq's own resolver: registrations by type with three lifetimes.

    See ``ringq.di.container`` for the conventions (generator factories
    clean up at scope exit, async factories are awaited in :meth:`ascope`,
    unregistered types are errors, singletons are created once across
    threads and coroutines).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Thread -> the creation (in any scope) it waits for: a wait that
        #: would close a loop of threads (each creating what the next one
        #: needs, a cycle across threads) is refused instead of hanging.
        self._waits: dict[int, _Pending] = {}
        self._registrations: dict[Any, _Registration] = {}
        self._local = threading.local()
        self._root = ContainerScope(self, root=True)

    def register(
        self,
        tp: TypeForm[T],
        factory: Callable[..., T]
        | Callable[..., Iterator[T]]
        | Callable[..., Awaitable[T]]
        | Callable[..., AsyncIterator[T]]
        | None = None,
        *,
        lifetime: Lifetime = "scoped",
    ) -> None:
        """Register how to make ``tp``.

        ``factory`` defaults to building ``tp`` itself (its ``__init__``
        parameters resolved from the scope); an explicit factory's annotated
        parameters are resolved the same way. A generator function factory
        yields the value and cleans up after the ``yield`` when the owning
        scope closes. An ``async def`` or async generator factory is awaited
        in the scopes of :meth:`ascope` only.
        """
        if lifetime not in _LIFETIMES:
            raise ValueError(f"lifetime must be one of {_LIFETIMES}, not {lifetime!r}")
        if factory is None:
            if not isinstance(tp, type):
                raise TypeError(f"{tp!r} is not a class: give a factory")
            if inspect.isabstract(tp) or getattr(tp, "_is_protocol", False):
                raise TypeError(f"{name_of(tp)} is abstract: give a factory for it")
            factory = tp
        if not callable(factory):
            raise TypeError(f"factory for {name_of(tp)} is not callable: {factory!r}")
        self._set(_Registration(tp, factory, lifetime))

    def instance(self, tp: TypeForm[T], obj: T) -> None:
        """Register ``obj`` as the (singleton) instance of ``tp``."""
        self._set(_Registration(tp, None, "singleton", obj))

    def __contains__(self, tp: object) -> bool:
        return tp in self._registrations

    def _set(self, reg: _Registration) -> None:
        with self._lock:  # copy on write: lookups never lock
            registrations = dict(self._registrations)
            registrations[reg.tp] = reg
            self._registrations = registrations

    def _lookup(self, tp: object) -> _Registration | None:
        return self._registrations.get(tp)

    def _wait_for(self, claim: _Pending, reg: _Registration) -> None:
        """Waits for ``claim`` (``reg``'s creation by another thread), unless
        that thread waits, through others, for a creation this one is under
        way with: then none could ever go on, and this one gives up."""
        me = threading.get_ident()
        with self._lock:
            owner = claim.thread
            for _ in range(len(self._waits) + 1):
                if owner == me:
                    raise _cycle_error(reg)
                waited = self._waits.get(owner)
                if waited is None or (waited.done is not None and waited.done.done()):
                    break  # not waiting, or its wait is over (it goes on)
                owner = waited.thread
            self._waits[me] = claim
        try:
            assert claim.done is not None
            claim.done.result()
        finally:
            with self._lock:
                self._waits.pop(me, None)

    def _resolving(self) -> list[Any]:
        stack: list[Any] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextlib.contextmanager
    def scope(self) -> Iterator[ContainerScope]:
        """A new scope; its scoped/transient cleanups run when the block ends."""
        scope = ContainerScope(self)
        try:
            yield scope
        except BaseException as exc:
            scope._close(exc)
            raise
        else:
            scope._close(None)

    @contextlib.asynccontextmanager
    async def ascope(self) -> AsyncIterator[ContainerScope]:
        """A new scope whose ``aget`` awaits async factories; its cleanups
        (sync and async, newest first) are awaited when the block ends. ringq
        opens one per message for a handler class whose ``handle`` is
        ``async def`` (the :class:`ringq.di.AsyncResolver` protocol)."""
        scope = ContainerScope(self, asynchronous=True)
        try:
            yield scope
        except BaseException as exc:
            await scope._aclose(exc)
            raise
        else:
            await scope._aclose(None)

    def _reset(self) -> ContainerScope:
        """Forgets the singletons built so far; returns the scope that owns
        their cleanups. ``instance()`` values are kept."""
        with self._lock:
            root, self._root = self._root, ContainerScope(self, root=True)
        return root

    def close(self) -> None:
        """Run the singletons' cleanups and forget the singletons built so far.

        ``instance()`` values are kept; the next use builds new singletons.
        Raises :class:`ResolutionError` (and closes nothing) if an async
        generator singleton is open: use :meth:`aclose` then.
        """
        pending = self._root._async_exits()
        if pending:
            names = ", ".join(name_of(tp) for tp in pending)
            raise ResolutionError(
                f"Container.close() cannot run the async cleanups of the singletons {names}; "
                "await container.aclose() instead (nothing was closed)"
            )
        self._reset()._close(None)

    async def aclose(self) -> None:
        """:meth:`close` for async singletons too: their cleanups are awaited
        (with the sync ones, newest first)."""
        await self._reset()._aclose(None)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Container:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

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
    ...
    container.close()                                             # singletons' cleanups

- Lifetimes: ``"singleton"`` - one instance per container, created on first
  use, exactly once even when many threads ask at the same time; its own
  dependencies must be singletons or transients (asking a singleton for a
  scoped dependency is a :class:`ResolutionError`, not a silently shared
  per-message object). ``"scoped"`` - one instance per scope (per message).
  ``"transient"`` - a new instance at every ``get``.
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
  Cleanups run in reverse creation order. Objects returned by ordinary
  factories are not entered even if they are context managers - wrap them in
  a generator (``with Thing() as t: yield t``) to get that.
- Unregistered types are an error (:class:`NotRegistered`), also for concrete
  classes: no auto-building. Auto-building would quietly turn a forgotten
  registration (say, a database pool) into a new object per message, and it
  would make parameter defaults dead code. Register each dependency, even if
  it is just ``register(Clock)``.
- A later ``register``/``instance`` for the same type replaces the earlier one
  (handy for tests). Dependency cycles are reported as a
  :class:`ResolutionError` listing the cycle.

Thread-safety: :class:`Container` creates each singleton exactly once;
registering while scopes are open is safe, but call :meth:`Container.close`
only after the workers have stopped.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
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


class _Registration:
    __slots__ = ("factory", "generator", "lifetime", "lock", "plan", "ready", "tp", "value")

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
        self.generator = factory is not None and inspect.isgeneratorfunction(factory)
        self.plan: tuple[Param, ...] = () if factory is None else plan(factory)
        self.lock = threading.RLock()
        self.ready = factory is None  # instance() registrations are ready at once
        self.value = value


class ContainerScope:
    """A scope of a :class:`Container`: caches scoped objects, owns their cleanups."""

    def __init__(self, container: Container, *, root: bool = False) -> None:
        self._container = container
        self._root = root
        self._lock = threading.RLock()
        self._cache: dict[_Registration, Any] = {}
        self._stack = contextlib.ExitStack()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, tp: type[T]) -> T:
        """Return the instance of ``tp`` for this scope (see the lifetimes)."""
        if self._closed:
            raise ResolutionError(f"cannot get {name_of(tp)}: the scope is closed", tp=tp)
        reg = self._container._lookup(tp)
        if reg is None:
            raise NotRegistered(tp, f"{name_of(tp)} is not registered in the container")
        resolving = self._container._resolving()
        for i, t in enumerate(resolving):
            if t == tp:
                cycle = " -> ".join(name_of(t) for t in [*resolving[i:], tp])
                raise ResolutionError(f"dependency cycle: {cycle}", tp=tp)
        resolving.append(tp)
        try:
            return cast(T, self._get(reg))
        finally:
            resolving.pop()

    def _get(self, reg: _Registration) -> Any:
        if reg.lifetime == "singleton":
            if not reg.ready:  # double-checked: the value is published after ready
                with reg.lock:
                    if not reg.ready:
                        reg.value = self._container._root._create(reg)
                        reg.ready = True
            return reg.value
        if reg.lifetime == "transient":
            return self._create(reg)
        if self._root:
            raise ResolutionError(
                f"{name_of(reg.tp)} is scoped (one per message) and cannot be a dependency "
                "of a singleton; make it transient or the dependent scoped",
                tp=reg.tp,
            )
        with self._lock:
            if reg in self._cache:
                return self._cache[reg]
            value = self._create(reg)
            self._cache[reg] = value
            return value

    def _create(self, reg: _Registration) -> Any:
        if reg.factory is None:  # pragma: no cover - instance() registrations are ready
            return reg.value
        args, kwargs = resolve_args(reg.factory, reg.plan, self)
        try:
            if not reg.generator:
                return reg.factory(*args, **kwargs)
            cm = contextlib.contextmanager(reg.factory)(*args, **kwargs)
            value = cm.__enter__()
        except ResolutionError:
            raise
        except Exception as exc:
            raise ResolutionError(
                f"cannot create {name_of(reg.tp)}: factory {name_of(reg.factory)} raised "
                f"{type(exc).__name__}: {exc}",
                target=reg.factory,
                tp=reg.tp,
            ) from exc
        with self._lock:
            self._stack.push(cm)
        return value

    def _close(self, exc: BaseException | None) -> None:
        """Run the cleanups (newest first); never suppresses ``exc``."""
        with self._lock:
            self._closed = True
            self._cache.clear()
            stack, self._stack = self._stack, contextlib.ExitStack()
        if exc is None:
            stack.close()
        else:
            stack.__exit__(type(exc), exc, exc.__traceback__)


class Container:
    """ringq's own resolver: registrations by type with three lifetimes.

    See ``ringq.di.container`` for the conventions (generator factories
    clean up at scope exit, unregistered types are errors, singletons are
    created once across threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registrations: dict[Any, _Registration] = {}
        self._local = threading.local()
        self._root = ContainerScope(self, root=True)

    def register(
        self,
        tp: TypeForm[T],
        factory: Callable[..., T] | Callable[..., Iterator[T]] | None = None,
        *,
        lifetime: Lifetime = "scoped",
    ) -> None:
        """Register how to make ``tp``.

        ``factory`` defaults to building ``tp`` itself (its ``__init__``
        parameters resolved from the scope); an explicit factory's annotated
        parameters are resolved the same way. A generator function factory
        yields the value and cleans up after the ``yield`` when the owning
        scope closes.
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
        if inspect.iscoroutinefunction(factory) or inspect.isasyncgenfunction(factory):
            raise TypeError(
                f"factory for {name_of(tp)} is async: the container builds dependencies with "
                "sync factories only (an async handler can await what it needs in its handle)"
            )
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

    def close(self) -> None:
        """Run the singletons' cleanups and forget the singletons built so far.

        ``instance()`` values are kept; the next use builds new singletons.
        """
        with self._lock:
            for reg in self._registrations.values():
                if reg.factory is not None and reg.lifetime == "singleton":
                    with reg.lock:
                        reg.ready = False
                        reg.value = None
            root, self._root = self._root, ContainerScope(self, root=True)
        root._close(None)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

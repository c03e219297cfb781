"""Dependency injection for handler classes: one scope per message.

A handler class declares what it needs as annotated ``__init__`` parameters.
The dispatcher builds a fresh handler for every message inside a fresh scope::

    with resolver.scope() as scope:               # one scope per handler invocation
        handler = ringq.di.build(OnOrder, scope)  # __init__ parameters come from the scope
        handler.handle(msg, ctx)
    # leaving the block closes everything the scope created (also when handle raised)

Anything with ``scope()`` returning a context manager of a :class:`Scope`
(``get(tp) -> instance``) is a :class:`Resolver`. ringq ships its own
:class:`Container` and adapters for svcs, dishka and dependency-injector; the
adapters import their package only when used, so none of them is a dependency
of ringq.

``build(cls, scope)``
    Calls ``cls`` with one argument per ``__init__`` parameter, resolved with
    ``scope.get(annotation)``. Annotations are evaluated with
    :func:`typing.get_type_hints`, so string annotations and
    ``from __future__ import annotations`` work (the names must be globals of
    the module that defines ``__init__``). ``Annotated[X, ...]`` asks for
    ``X``; ``X | None`` asks for ``X`` and gets ``None`` if nothing provides ``X``.
    A parameter with a default keeps the default when the scope has no provider
    for its type (:class:`NotRegistered`); any other failure is an error.
    ``*args``/``**kwargs`` are left alone, and a class without ``__init__``
    parameters is simply called. The analysis of each class is cached.
    Everything that goes wrong is a :class:`ResolutionError` (a
    ``ringq.RingqError``) naming the class, the parameter and the type, with the
    original exception chained as ``__cause__``.

The built-in :class:`Container`::

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

svcs - :class:`SvcsResolver`::

    registry = svcs.Registry()
    registry.register_value(Settings, settings)          # shared by every scope
    registry.register_factory(Session, open_session)     # generator: cleanup at scope exit
    resolver = ringq.di.SvcsResolver(registry)

  Each scope is a new ``svcs.Container(registry)``, closed when the scope ends
  (svcs enters context managers and generator factories and exits them then;
  svcs logs cleanup errors instead of raising them). Factories that take a
  ``svcs.Container`` get the scope's container.

dishka - :class:`DishkaResolver`::

    class AppProvider(dishka.Provider):
        @dishka.provide(scope=dishka.Scope.APP)
        def db(self) -> Database: ...
        @dishka.provide(scope=dishka.Scope.REQUEST)
        def session(self, db: Database) -> Iterator[Session]:
            yield db.session()                           # finalizer runs at scope exit
    resolver = ringq.di.DishkaResolver(dishka.make_container(AppProvider()))

  Each scope enters the REQUEST scope of the (sync) container,
  ``with container(scope=Scope.REQUEST) as request_container``; leaving it runs
  the request finalizers (dishka raises ``ExitError`` if one fails). Pass
  ``scope=`` to enter a different dishka scope. dishka's root container
  (``make_container``'s default ``lock_factory=threading.Lock``) creates APP
  objects once across threads.

dependency-injector - :class:`DependencyInjectorResolver`::

    class Services(containers.DeclarativeContainer):
        settings = providers.Singleton(Settings)
        repo = providers.Factory(Repo, settings=settings)
        session = providers.ContextLocalResource(open_session)   # per message
    resolver = ringq.di.DependencyInjectorResolver(Services())

  dependency-injector looks providers up by name, so the adapter builds a
  type -> provider index when it is created: every ``Factory``,
  ``Singleton`` (and their variants), ``Callable`` or resource provider whose
  ``provides`` is a class is indexed under that class (a generator function
  or other callable is indexed under its return annotation when it has one).
  ``types={Tp: container.provider}`` adds or overrides entries; a type
  offered by two providers must be disambiguated that way (asking for it is
  a :class:`ResolutionError` naming both). Provider semantics are kept:
  ``Factory`` makes a new object at every ``get``, ``Singleton`` is shared.
  Each scope runs its providers inside its own copy of the current
  :mod:`contextvars` context, so ``ContextLocalSingleton`` and
  ``ContextLocalResource`` become per-scope (per-message) objects, and at
  scope exit ``container.shutdown_resources(ContextLocalResource)`` runs in
  that context: a generator resource's cleanup runs then. (An object created
  in the *opening* thread's own context before the scope - by calling the
  provider directly - would be inherited by the copy; don't do that.) Plain
  ``Resource`` providers stay application-wide: use ``init_resources()`` /
  ``shutdown_resources()`` at application start and stop.

Thread-safety: scopes may be opened and used concurrently from any number of
worker threads; a scope itself belongs to one message and is meant to be used
by one thread at a time (the built-in container's scopes tolerate more, the
adapters follow their package). :class:`Container` creates each singleton
exactly once; registering while scopes are open is safe, but call
:meth:`Container.close` only after the workers have stopped.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import threading
import types
import typing
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol, TypeVar, cast

from ringq.errors import RingqError

if TYPE_CHECKING:
    import dependency_injector.containers
    import dependency_injector.providers
    import dishka
    import svcs

    # TypeForm (PEP 747) lets register()/instance() take abstract classes and Protocols,
    # which type[T] refuses under mypy ([type-abstract]). Type-checking only: no runtime need.
    from typing_extensions import TypeForm

__all__ = [
    "Container",
    "ContainerScope",
    "DependencyInjectorResolver",
    "DishkaResolver",
    "Lifetime",
    "NotRegistered",
    "ResolutionError",
    "Resolver",
    "Scope",
    "SvcsResolver",
    "build",
]

T = TypeVar("T")

Lifetime = Literal["singleton", "scoped", "transient"]
_LIFETIMES: Final = ("singleton", "scoped", "transient")


# --------------------------------------------------------------------------- errors


class ResolutionError(RingqError):
    """A dependency could not be provided, or building an object failed.

    ``target`` is the class (or factory) being built, ``parameter`` the
    ``__init__`` parameter and ``tp`` the type that could not be resolved,
    where known. The underlying exception, if any, is ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        target: object = None,
        parameter: str | None = None,
        tp: object = None,
    ) -> None:
        super().__init__(message)
        self.target = target
        self.parameter = parameter
        self.tp = tp


class NotRegistered(ResolutionError, LookupError):
    """The scope has no provider for ``tp`` at all.

    Scopes raise exactly this (and only for the type that was asked for, not
    for a missing dependency further down) so that :func:`build` can fall back
    to a parameter's default.
    """

    def __init__(self, tp: object, message: str | None = None) -> None:
        super().__init__(message or f"{_name(tp)} is not registered", tp=tp)


# --------------------------------------------------------------------------- protocols


class Scope(Protocol):
    """Provides instances by type for the duration of one message."""

    def get(self, tp: type[T]) -> T:
        """Return an instance of ``tp``.

        Raises :class:`NotRegistered` if nothing provides ``tp``, and
        :class:`ResolutionError` if providing it failed.
        """
        ...


class Resolver(Protocol):
    """Opens per-message scopes; leaving the context manager closes the scope."""

    def scope(self) -> contextlib.AbstractContextManager[Scope]: ...


# --------------------------------------------------------------------------- build


_NO_DEFAULT: Final[Any] = inspect.Parameter.empty
_NO_ANNOTATION: Final[Any] = object()


class _Param(NamedTuple):
    name: str
    positional_only: bool
    tp: Any  # the type to ask the scope for, or _NO_ANNOTATION
    optional: bool  # annotated ``X | None``: None when X is not provided
    default: Any  # _NO_DEFAULT if none


def _name(obj: object) -> str:
    if isinstance(obj, type):
        return obj.__qualname__
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str) and callable(obj):
        return qualname
    return repr(obj)


def _hint_source(target: Callable[..., Any]) -> Callable[..., Any] | None:
    """The function whose annotations describe ``target``'s parameters."""
    if isinstance(target, type):
        cls: Any = target
        if cls.__init__ is not object.__init__:
            return cast(Callable[..., Any], cls.__init__)
        if cls.__new__ is not object.__new__:
            return cast(Callable[..., Any], cls.__new__)
        return None
    if isinstance(target, functools.partial):
        return _hint_source(target.func)
    if inspect.isroutine(target):
        return target
    return type(target).__call__  # a callable object


def _requested_type(hint: Any) -> tuple[Any, bool]:
    """``(type to ask for, optional)`` for an annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if type(None) in args:
            rest = tuple(a for a in args if a is not type(None))
            if len(rest) == 1:
                return rest[0], True
            return typing.Union[rest], True  # noqa: UP007 (building a union from a tuple)
    return hint, False


def _analyze(target: Callable[..., Any]) -> tuple[_Param, ...]:
    source = _hint_source(target)
    if source is None:  # a class without __init__ or __new__ of its own
        return ()
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature: call without arguments
        return ()
    try:
        hints = typing.get_type_hints(source)
    except Exception as exc:
        raise ResolutionError(
            f"cannot build {_name(target)}: cannot evaluate the annotations of "
            f"{_name(source)}: {type(exc).__name__}: {exc}",
            target=target,
        ) from exc
    params: list[_Param] = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in hints:
            tp, optional = _requested_type(hints[p.name])
        else:
            tp, optional = _NO_ANNOTATION, False
        params.append(_Param(p.name, p.kind is p.POSITIONAL_ONLY, tp, optional, p.default))
    return tuple(params)


_analyze_cached = functools.lru_cache(maxsize=4096)(_analyze)


def _plan(target: Callable[..., Any]) -> tuple[_Param, ...]:
    try:
        hash(target)
    except TypeError:  # an unhashable callable object: analyze it every time
        return _analyze(target)
    return _analyze_cached(target)


def _resolve_args(
    target: Callable[..., Any], plan: tuple[_Param, ...], scope: Scope
) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in plan:
        if p.tp is _NO_ANNOTATION:
            if p.default is _NO_DEFAULT:
                raise ResolutionError(
                    f"cannot build {_name(target)}: parameter {p.name!r} has no type "
                    "annotation and no default",
                    target=target,
                    parameter=p.name,
                )
            use_default = True
        else:
            use_default = False
            try:
                value = scope.get(p.tp)
            except NotRegistered as exc:
                if exc.tp != p.tp:  # something further down is missing: a real failure
                    raise _param_error(target, p, exc) from exc
                if p.default is not _NO_DEFAULT:
                    use_default = True
                elif p.optional:
                    value = None
                else:
                    raise _param_error(target, p, exc) from exc
            except Exception as exc:
                raise _param_error(target, p, exc) from exc
        if p.positional_only:
            args.append(p.default if use_default else value)
        elif not use_default:
            kwargs[p.name] = value
    return args, kwargs


def _param_error(target: object, p: _Param, exc: Exception) -> ResolutionError:
    detail = str(exc) if isinstance(exc, ResolutionError) else f"{type(exc).__name__}: {exc}"
    return ResolutionError(
        f"cannot build {_name(target)}: parameter {p.name!r} ({_name(p.tp)}): {detail}",
        target=target,
        parameter=p.name,
        tp=p.tp,
    )


def _call(target: Callable[..., T], scope: Scope) -> T:
    """Call ``target`` with its annotated parameters resolved from ``scope``."""
    args, kwargs = _resolve_args(target, _plan(target), scope)
    try:
        return target(*args, **kwargs)
    except ResolutionError:
        raise
    except Exception as exc:
        raise ResolutionError(
            f"cannot build {_name(target)}: it raised {type(exc).__name__}: {exc}",
            target=target,
        ) from exc


def build(cls: type[T], scope: Scope) -> T:
    """Instantiate ``cls``, resolving each ``__init__`` parameter from ``scope``.

    Parameters are resolved by their type annotation; one with a default keeps
    it when the scope has no provider for its type. Raises
    :class:`ResolutionError` naming the class, parameter and type on failure
    (also when ``__init__`` itself raises).
    """
    return _call(cls, scope)


# --------------------------------------------------------------------------- Container


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
        self.plan: tuple[_Param, ...] = () if factory is None else _plan(factory)
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
            raise ResolutionError(f"cannot get {_name(tp)}: the scope is closed", tp=tp)
        reg = self._container._lookup(tp)
        if reg is None:
            raise NotRegistered(tp, f"{_name(tp)} is not registered in the container")
        resolving = self._container._resolving()
        for i, t in enumerate(resolving):
            if t == tp:
                cycle = " -> ".join(_name(t) for t in [*resolving[i:], tp])
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
                f"{_name(reg.tp)} is scoped (one per message) and cannot be a dependency "
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
        args, kwargs = _resolve_args(reg.factory, reg.plan, self)
        try:
            if not reg.generator:
                return reg.factory(*args, **kwargs)
            cm = contextlib.contextmanager(reg.factory)(*args, **kwargs)
            value = cm.__enter__()
        except ResolutionError:
            raise
        except Exception as exc:
            raise ResolutionError(
                f"cannot create {_name(reg.tp)}: factory {_name(reg.factory)} raised "
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

    See the module documentation for the conventions (generator factories
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
                raise TypeError(f"{_name(tp)} is abstract: give a factory for it")
            factory = tp
        if not callable(factory):
            raise TypeError(f"factory for {_name(tp)} is not callable: {factory!r}")
        if inspect.iscoroutinefunction(factory) or inspect.isasyncgenfunction(factory):
            raise TypeError(f"factory for {_name(tp)} is async; ringq handlers are sync")
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


# --------------------------------------------------------------------------- svcs


class _SvcsScope:
    def __init__(self, container: svcs.Container) -> None:
        self.container = container

    def get(self, tp: type[T]) -> T:
        from svcs.exceptions import ServiceNotFoundError

        try:
            return self.container.get(tp)
        except ServiceNotFoundError as exc:
            if exc.args and exc.args[0] == tp:
                raise NotRegistered(tp, f"{_name(tp)} is not registered in svcs") from exc
            raise _get_error(tp, exc) from exc
        except Exception as exc:
            raise _get_error(tp, exc) from exc


def _get_error(tp: object, exc: Exception) -> ResolutionError:
    return ResolutionError(f"cannot get {_name(tp)}: {type(exc).__name__}: {exc}", tp=tp, target=tp)


class SvcsResolver:
    """Scopes are ``svcs.Container(registry)`` objects, closed at scope exit."""

    def __init__(self, registry: svcs.Registry) -> None:
        self.registry = registry

    @contextlib.contextmanager
    def scope(self) -> Iterator[Scope]:
        import svcs

        with svcs.Container(self.registry) as container:
            yield _SvcsScope(container)


# --------------------------------------------------------------------------- dishka


class _DishkaScope:
    def __init__(self, container: dishka.Container) -> None:
        self.container = container

    def get(self, tp: type[T]) -> T:
        from dishka.exceptions import NoFactoryError

        try:
            return self.container.get(tp)
        except NoFactoryError as exc:
            if not exc.path and exc.requested.type_hint == tp:
                raise NotRegistered(tp, f"dishka has no factory for {_name(tp)}") from exc
            raise _get_error(tp, exc) from exc
        except Exception as exc:
            raise _get_error(tp, exc) from exc


class DishkaResolver:
    """Scopes enter the REQUEST scope (or ``scope=``) of a sync dishka container."""

    def __init__(
        self, container: dishka.Container, *, scope: dishka.BaseScope | None = None
    ) -> None:
        self.container = container
        self._scope = scope

    @contextlib.contextmanager
    def scope(self) -> Iterator[Scope]:
        import dishka

        target = dishka.Scope.REQUEST if self._scope is None else self._scope
        with self.container(scope=target) as request_container:
            yield _DishkaScope(request_container)


# --------------------------------------------------------------------------- dependency-injector


class _DependencyInjectorScope:
    def __init__(self, resolver: DependencyInjectorResolver) -> None:
        self._resolver = resolver
        self.context = contextvars.copy_context()

    def get(self, tp: type[T]) -> T:
        providers = self._resolver.index.get(tp)
        if not providers:
            raise NotRegistered(tp, f"no dependency-injector provider is indexed for {_name(tp)}")
        if len(providers) > 1:
            names = ", ".join(self._resolver.provider_name(p) for p in providers)
            raise ResolutionError(
                f"{_name(tp)} is provided by several providers ({names}); "
                "choose one with DependencyInjectorResolver(types={...})",
                tp=tp,
            )
        try:
            return cast(T, self.context.run(providers[0]))
        except Exception as exc:
            raise _get_error(tp, exc) from exc

    def close(self) -> None:
        from dependency_injector import providers

        self.context.run(
            self._resolver.container.shutdown_resources, providers.ContextLocalResource
        )


class DependencyInjectorResolver:
    """Resolves types through a dependency-injector container's providers.

    ``index`` maps each type to its provider(s): built from the container's
    providers whose ``provides`` is a class (or a callable with a return
    annotation), then updated with ``types``.
    """

    def __init__(
        self,
        container: dependency_injector.containers.Container,
        types: Mapping[Any, dependency_injector.providers.Provider[Any]] | None = None,
    ) -> None:
        from dependency_injector import providers

        if isinstance(container, type):
            raise TypeError(f"pass a container instance ({container.__name__}()), not the class")
        self.container = container
        index: dict[Any, list[providers.Provider[Any]]] = {}
        indexable = (
            providers.Factory,
            providers.BaseSingleton,
            providers.Callable,
            providers.BaseResource,
        )
        for provider in container.providers.values():
            if isinstance(provider, indexable):
                tp = _provided_type(provider.provides)
                if tp is not None:
                    index.setdefault(tp, []).append(provider)
        for tp, provider in (types or {}).items():
            index[tp] = [provider]
        self.index: Mapping[Any, list[providers.Provider[Any]]] = index

    def provider_name(self, provider: dependency_injector.providers.Provider[Any]) -> str:
        for name, candidate in self.container.providers.items():
            if candidate is provider:
                return name
        return repr(provider)

    @contextlib.contextmanager
    def scope(self) -> Iterator[Scope]:
        scope = _DependencyInjectorScope(self)
        try:
            yield scope
        finally:
            scope.close()


def _provided_type(provides: object) -> Any:
    """The type a provider's ``provides`` makes: the class itself or a return annotation."""
    if isinstance(provides, type):
        return provides
    if not callable(provides):
        return None
    func = getattr(provides, "__wrapped__", provides)  # contextmanager() wraps generators
    try:
        ret = typing.get_type_hints(func).get("return")
    except Exception:
        return None
    if ret is None:
        return None
    if typing.get_origin(ret) in (Iterator, Generator, contextlib.AbstractContextManager):
        ret = typing.get_args(ret)[0]
    return ret if isinstance(ret, type) else None

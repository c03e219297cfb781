"""Adapters: svcs, dishka and dependency-injector containers as ringq resolvers.

Each adapter imports its package only when used, so none of them is a
dependency of ringq. Scopes follow their package's thread-safety.

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

  For async providers, ``DishkaAsyncResolver(dishka.make_async_container(...))``
  serves handler classes whose ``handle`` is ``async def``: their scopes are
  ``async with container(scope=Scope.REQUEST)`` and dependencies are awaited.

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
"""

from __future__ import annotations

import contextlib
import contextvars
import typing
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ringq.di.protocol import AsyncScope, NotRegistered, ResolutionError, Scope, name_of

if TYPE_CHECKING:
    import dependency_injector.containers
    import dependency_injector.providers
    import dishka
    import svcs

__all__ = [
    "DependencyInjectorResolver",
    "DishkaAsyncResolver",
    "DishkaResolver",
    "SvcsResolver",
]

T = TypeVar("T")


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
                raise NotRegistered(tp, f"{name_of(tp)} is not registered in svcs") from exc
            raise _get_error(tp, exc) from exc
        except Exception as exc:
            raise _get_error(tp, exc) from exc


def _get_error(tp: object, exc: Exception) -> ResolutionError:
    return ResolutionError(
        f"cannot get {name_of(tp)}: {type(exc).__name__}: {exc}", tp=tp, target=tp
    )


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
        try:
            return self.container.get(tp)
        except Exception as exc:
            raise _dishka_error(tp, exc) from exc


class _DishkaAsyncScope:
    def __init__(self, container: dishka.AsyncContainer) -> None:
        self.container = container

    async def aget(self, tp: type[T]) -> T:
        try:
            return await self.container.get(tp)
        except Exception as exc:
            raise _dishka_error(tp, exc) from exc


def _dishka_error(tp: object, exc: Exception) -> ResolutionError:
    """dishka's error for ``tp`` as ringq's (``NotRegistered`` when dishka
    has no factory for ``tp`` itself)."""
    from dishka.exceptions import NoFactoryError

    if isinstance(exc, NoFactoryError) and not exc.path and exc.requested.type_hint == tp:
        return NotRegistered(tp, f"dishka has no factory for {name_of(tp)}")
    return _get_error(tp, exc)


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


class DishkaAsyncResolver:
    """Scopes enter the REQUEST scope (or ``scope=``) of an async dishka
    container (``make_async_container``): async providers are awaited. For
    ``async def handle`` handler classes (``ringq.dispatch.aio`` opens
    ``ascope()``); a plain ``def handle`` class cannot use it (``scope()``
    says so)."""

    def __init__(
        self, container: dishka.AsyncContainer, *, scope: dishka.BaseScope | None = None
    ) -> None:
        self.container = container
        self._scope = scope

    @contextlib.asynccontextmanager
    async def ascope(self) -> AsyncIterator[AsyncScope]:
        import dishka

        target = dishka.Scope.REQUEST if self._scope is None else self._scope
        async with self.container(scope=target) as request_container:
            yield _DishkaAsyncScope(request_container)

    @contextlib.contextmanager
    def scope(self) -> Iterator[Scope]:
        raise ResolutionError(
            "an async dishka container (DishkaAsyncResolver) builds handler classes whose "
            "handle is async def; for a plain def handle use DishkaResolver with make_container"
        )
        yield  # pragma: no cover - never reached


# --------------------------------------------------------------------------- dependency-injector


class _DependencyInjectorScope:
    def __init__(self, resolver: DependencyInjectorResolver) -> None:
        self._resolver = resolver
        self.context = contextvars.copy_context()

    def get(self, tp: type[T]) -> T:
        providers = self._resolver.index.get(tp)
        if not providers:
            raise NotRegistered(tp, f"no dependency-injector provider is indexed for {name_of(tp)}")
        if len(providers) > 1:
            names = ", ".join(self._resolver.providername_of(p) for p in providers)
            raise ResolutionError(
                f"{name_of(tp)} is provided by several providers ({names}); "
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

    def providername_of(self, provider: dependency_injector.providers.Provider[Any]) -> str:
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

"""Dependency injection: build(), the built-in Container and the svcs/dishka/dependency-injector
adapters, each used exactly the way the dispatcher uses them (one scope per message)."""

from __future__ import annotations

import itertools
import threading
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import dishka
import pytest
import ringq
import svcs
from dependency_injector import containers, providers
from ringq import di

# ----------------------------------------------------------------------------- test types

M = TypeVar("M")
_ids = itertools.count(1)


class Handler(Generic[M]):
    """Stand-in for ringq.Handler[M]: a generic base without __init__ of its own."""

    def handle(self, msg: M, ctx: object) -> None:
        raise NotImplementedError


@dataclass
class Order:
    order_id: str


class Settings:
    def __init__(self, dsn: str = "sqlite://") -> None:
        self.dsn = dsn


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


class Session:
    """A per-message resource that records its own lifecycle."""

    def __init__(self) -> None:
        self.id = next(_ids)
        self.closed = False
        self.error: BaseException | None = None


class Repo:
    def __init__(self, session: Session, db: Database) -> None:
        self.session = session
        self.db = db


class Clock:
    pass


class Missing:
    pass


class Cache:
    def __init__(self, backend: Missing) -> None:
        self.backend = backend


class OnOrder(Handler[Order]):
    def __init__(self, repo: Repo, session: Session, *, clock: Clock | None = None) -> None:
        self.repo = repo
        self.session = session
        self.clock = clock
        self.seen: list[str] = []

    def handle(self, msg: Order, ctx: object) -> None:
        assert not self.session.closed
        self.seen.append(msg.order_id)


class WithDefaults:
    def __init__(self, settings: Settings, cache: Cache | None = None, retries: int = 3) -> None:
        self.settings = settings
        self.cache = cache
        self.retries = retries


class NoInit(Handler[Order]):
    pass


def uses_missing(repo: Missing) -> None:  # a factory with an unregistrable dependency
    raise AssertionError("never called")


# ----------------------------------------------------------------------------- helpers


class DictScope:
    """A minimal Scope: a dict of instances; anything else is NotRegistered."""

    def __init__(self, values: dict[Any, Any]) -> None:
        self.values = values
        self.asked: list[Any] = []

    def get(self, tp: type[Any]) -> Any:
        self.asked.append(tp)
        if tp not in self.values:
            raise di.NotRegistered(tp)
        value = self.values[tp]
        if isinstance(value, Exception):
            raise value
        return value


def dispatch(resolver: di.Resolver, handler_cls: type[OnOrder], order_id: str) -> OnOrder:
    """Exactly what the dispatcher does for one message."""
    with resolver.scope() as scope:
        handler = di.build(handler_cls, scope)
        handler.handle(Order(order_id), ctx=None)
    return handler


def open_session() -> Iterator[Session]:
    session = Session()
    try:
        yield session
    except Exception as exc:  # the scope ended with an exception: remember it, swallow it
        session.error = exc
    finally:
        session.closed = True


# ----------------------------------------------------------------------------- build


def test_build_resolves_constructor_params_by_annotation() -> None:
    settings, db, session = Settings(), Database(Settings()), Session()
    scope = DictScope({Settings: settings, Database: db, Session: session, Clock: Clock()})
    repo = di.build(Repo, scope)
    assert repo.session is session and repo.db is db
    # string annotations (this module uses `from __future__ import annotations`) were evaluated
    assert scope.asked == [Session, Database]
    clock = scope.values[Clock]
    handler = di.build(OnOrder, DictScope({Repo: repo, Session: session, Clock: clock}))
    assert handler.repo is repo and handler.clock is clock


def test_build_handles_positional_only_keyword_only_annotated_and_dataclass() -> None:
    class Odd:
        def __init__(
            self, a: Settings, /, b: Annotated[Session, "meta"], *args: int, c: Clock, **kw: str
        ) -> None:
            self.a, self.b, self.c, self.args, self.kw = a, b, c, args, kw

    @dataclass
    class Data:
        settings: Settings
        tags: list[str] = field(default_factory=list)

    settings, session, clock = Settings(), Session(), Clock()
    scope = DictScope({Settings: settings, Session: session, Clock: clock})
    odd = di.build(Odd, scope)
    assert (odd.a, odd.b, odd.c, odd.args, odd.kw) == (settings, session, clock, (), {})
    data = di.build(Data, scope)
    assert data.settings is settings and data.tags == []


def test_build_calls_class_without_init_params() -> None:
    scope = DictScope({})
    assert isinstance(di.build(NoInit, scope), NoInit)
    assert isinstance(di.build(Clock, scope), Clock)
    assert scope.asked == []


def test_build_keeps_defaults_when_type_unresolvable() -> None:
    settings = Settings()
    built = di.build(WithDefaults, DictScope({Settings: settings}))
    assert built.settings is settings
    assert built.cache is None
    assert built.retries == 3
    # ... but a provided value wins over the default
    cache = Cache(Missing())
    built = di.build(WithDefaults, DictScope({Settings: settings, Cache: cache, int: 7}))
    assert built.cache is cache and built.retries == 7


def test_build_optional_annotation_without_default_gets_none() -> None:
    class Opt:
        def __init__(self, clock: Clock | None) -> None:
            self.clock = clock

    assert di.build(Opt, DictScope({})).clock is None
    clock = Clock()
    assert di.build(Opt, DictScope({Clock: clock})).clock is clock


def test_missing_dependency_raises_resolution_error_naming_class_and_type() -> None:
    with pytest.raises(di.ResolutionError) as info:
        di.build(Repo, DictScope({Session: Session()}))
    err = info.value
    assert isinstance(err, ringq.RingqError)
    assert "Repo" in str(err) and "'db'" in str(err) and "Database" in str(err)
    assert (err.target, err.parameter, err.tp) == (Repo, "db", Database)
    assert isinstance(err.__cause__, di.NotRegistered)


def test_build_failure_further_down_is_an_error_even_with_a_default() -> None:
    """A default stands in only when the scope has no provider for that type at all."""
    boom = di.ResolutionError("Cache: backend is down")
    with pytest.raises(di.ResolutionError, match="cache") as info:
        di.build(WithDefaults, DictScope({Settings: Settings(), Cache: boom}))
    assert info.value.__cause__ is boom
    # a NotRegistered for another type (a missing dependency of Cache) is not "Cache missing"
    deeper = di.NotRegistered(Missing)
    with pytest.raises(di.ResolutionError, match="Missing"):
        di.build(WithDefaults, DictScope({Settings: Settings(), Cache: deeper}))


def test_build_wraps_scope_and_constructor_exceptions_with_cause() -> None:
    class Explodes:
        def __init__(self, settings: Settings) -> None:
            raise ValueError("bad settings")

    with pytest.raises(di.ResolutionError, match=r"Explodes.*ValueError: bad settings") as info:
        di.build(Explodes, DictScope({Settings: Settings()}))
    assert isinstance(info.value.__cause__, ValueError)

    with pytest.raises(di.ResolutionError, match=r"Repo.*'session'.*OSError") as info:
        di.build(Repo, DictScope({Session: OSError("no connection")}))
    assert isinstance(info.value.__cause__, OSError)


def test_build_unannotated_parameter_without_default_is_an_error() -> None:
    class Bare:
        def __init__(self, thing, other: int = 1) -> None:  # type: ignore[no-untyped-def]
            self.thing = thing

    with pytest.raises(di.ResolutionError, match=r"Bare.*'thing'.*no type annotation"):
        di.build(Bare, DictScope({}))


def test_build_unevaluable_string_annotation_is_an_error() -> None:
    class Broken:
        def __init__(self, x: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
            self.x = x

    with pytest.raises(di.ResolutionError, match=r"Broken.*NameError") as info:
        di.build(Broken, DictScope({}))
    assert isinstance(info.value.__cause__, NameError)


def test_build_caches_the_signature_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    class Cached:
        def __init__(self, settings: Settings) -> None:
            self.settings = settings

    calls: list[object] = []
    real = typing.get_type_hints

    def counting(obj: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)
    scope = DictScope({Settings: Settings()})
    for _ in range(5):
        di.build(Cached, scope)
    assert calls.count(Cached.__init__) == 1


# ----------------------------------------------------------------------------- Container


def test_container_singleton_shared_across_scopes() -> None:
    c = di.Container()
    c.register(Settings, lifetime="singleton")
    c.register(Database, lifetime="singleton")
    seen = []
    for _ in range(3):
        with c.scope() as scope:
            seen.append((scope.get(Database), scope.get(Database), scope.get(Settings)))
    assert len({id(db) for db, _, _ in seen} | {id(db) for _, db, _ in seen}) == 1
    assert all(db.settings is settings for db, _, settings in seen)


def test_container_scoped_shared_within_scope_fresh_per_scope() -> None:
    c = di.Container()
    c.register(Settings, lifetime="singleton")
    c.register(Database, lifetime="singleton")
    c.register(Session)  # scoped is the default lifetime
    c.register(Repo)
    with c.scope() as first:
        a1, a2, repo = first.get(Session), first.get(Session), first.get(Repo)
    with c.scope() as second:
        b = second.get(Session)
    assert a1 is a2 is repo.session
    assert b is not a1


def test_container_transient_fresh_every_get() -> None:
    c = di.Container()
    c.register(Clock, lifetime="transient")
    with c.scope() as scope:
        clocks = [scope.get(Clock) for _ in range(3)]
    assert len({id(x) for x in clocks}) == 3


def test_container_instance_is_the_registered_object() -> None:
    c = di.Container()
    settings = Settings("postgres://")
    c.instance(Settings, settings)
    c.register(Database, lifetime="singleton")
    with c.scope() as scope:
        assert scope.get(Settings) is settings
        assert scope.get(Database).settings is settings
    assert Settings in c and Clock not in c


def test_container_injects_explicit_factory_parameters_recursively() -> None:
    c = di.Container()
    c.instance(Settings, Settings("x://"))

    def make_db(settings: Settings) -> Database:
        return Database(settings)

    c.register(Database, make_db, lifetime="singleton")
    c.register(Session, open_session)
    c.register(Repo)
    handler = dispatch(c, OnOrder, "o-1")
    assert handler.repo.db.settings.dsn == "x://"
    assert handler.repo.session is handler.session
    assert handler.clock is None  # Clock is not registered: the default None is kept
    assert handler.seen == ["o-1"]


def test_container_scoped_cleanup_runs_at_scope_exit_in_reverse_order() -> None:
    log: list[str] = []

    def session() -> Iterator[Session]:
        log.append("open session")
        yield Session()
        log.append("close session")

    def clock(s: Session) -> Iterator[Clock]:
        log.append("open clock")
        yield Clock()
        log.append("close clock")

    c = di.Container()
    c.register(Session, session)
    c.register(Clock, clock, lifetime="transient")
    with c.scope() as scope:
        scope.get(Clock)
        scope.get(Session)
        assert log == ["open session", "open clock"]
    assert log == ["open session", "open clock", "close clock", "close session"]


def test_container_scoped_cleanup_runs_when_body_raises() -> None:
    c = di.Container()
    c.register(Session, open_session)
    with pytest.raises(RuntimeError, match="handler failed"), c.scope() as scope:
        session = scope.get(Session)
        raise RuntimeError("handler failed")
    assert session.closed
    # the cleanup saw the exception (it could roll back) ...
    assert isinstance(session.error, RuntimeError)
    # ... and although it swallowed it, the exception still propagated (checked by pytest.raises)


def test_container_scope_is_closed_after_exit() -> None:
    c = di.Container()
    c.register(Session)
    with c.scope() as scope:
        scope.get(Session)
    assert scope.closed
    with pytest.raises(di.ResolutionError, match="closed"):
        scope.get(Session)


def test_container_singleton_cleanup_runs_at_container_close() -> None:
    log: list[str] = []

    def db(settings: Settings) -> Iterator[Database]:
        yield Database(settings)
        log.append("closed db")

    with di.Container() as c:
        c.register(Settings, lifetime="singleton")
        c.register(Database, db, lifetime="singleton")
        with c.scope() as scope:
            first = scope.get(Database)
        assert log == []
    assert log == ["closed db"]
    with c.scope() as scope:  # after close, a new singleton is built on demand
        assert scope.get(Database) is not first


def test_container_unregistered_concrete_class_is_not_auto_built() -> None:
    c = di.Container()
    c.register(Repo)
    c.register(Session)
    with c.scope() as scope:
        with pytest.raises(di.NotRegistered, match="Clock"):
            scope.get(Clock)
        with pytest.raises(di.ResolutionError, match=r"Repo.*'db'.*Database") as info:
            scope.get(Repo)
        assert not isinstance(info.value, di.NotRegistered)


def test_container_singleton_depending_on_scoped_is_rejected() -> None:
    c = di.Container()
    c.register(Session)  # scoped
    c.register(Settings, lifetime="singleton")
    c.register(Database, lifetime="singleton")
    c.register(Repo, lifetime="singleton")
    with c.scope() as scope, pytest.raises(di.ResolutionError, match=r"Session is scoped"):
        scope.get(Repo)


def test_container_dependency_cycle_is_reported() -> None:
    c = di.Container()
    c.register(Settings, _settings_needs_clock)
    c.register(Clock, _clock_needs_settings)
    with c.scope() as scope, pytest.raises(di.ResolutionError, match="cycle") as info:
        scope.get(Clock)
    assert "Clock -> Settings -> Clock" in str(info.value)


class _Left:
    pass


class _Right:
    pass


def test_a_dependency_cycle_first_met_by_two_threads_at_once_is_reported_to_both() -> None:
    """Singletons that need each other, first asked for by two threads at
    once: each creates one and waits for the other's. Each thread gets the
    cycle error (they waited for each other forever)."""
    both = threading.Barrier(2)
    lock = threading.Lock()
    first = [True, True]

    def settings() -> Settings:
        # Needed first by both: both creations are under way before either
        # asks for the other (only the first time each: a retry goes on).
        with lock:
            meet = first.pop() if first else False
        if meet:
            both.wait(5)
        return Settings()

    def make_left(s: Settings, r: _Right) -> _Left:
        return _Left()

    def make_right(s: Settings, l_: _Left) -> _Right:
        return _Right()

    c = di.Container()
    c.register(Settings, settings, lifetime="transient")
    c.register(_Left, make_left, lifetime="singleton")
    c.register(_Right, make_right, lifetime="singleton")
    errors: dict[str, BaseException] = {}

    def resolve(tp: type) -> None:
        try:
            with c.scope() as scope:
                scope.get(tp)
        except BaseException as e:
            errors[tp.__name__] = e

    threads = [threading.Thread(target=resolve, args=(tp,), daemon=True) for tp in (_Left, _Right)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert set(errors) == {"_Left", "_Right"}, errors
    assert all(isinstance(e, di.ResolutionError) and "cycle" in str(e) for e in errors.values()), (
        errors
    )


def _settings_needs_clock(clock: Clock) -> Settings:
    return Settings()


def _clock_needs_settings(settings: Settings) -> Clock:
    return Clock()


def test_container_factory_failure_is_resolution_error() -> None:
    def broken() -> Session:
        raise ConnectionError("db down")

    c = di.Container()
    c.register(Session, broken)
    c.register(Repo)
    with c.scope() as scope, pytest.raises(di.ResolutionError) as info:
        di.build(OnOrder, scope)
    msg = str(info.value)
    assert "OnOrder" in msg and "Repo" in msg and "ConnectionError: db down" in msg


def test_container_register_rejects_bad_arguments() -> None:
    c = di.Container()
    with pytest.raises(ValueError, match="lifetime"):
        c.register(Clock, lifetime="forever")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="abstract"):
        c.register(di.Scope)  # abstract (a Protocol) and no factory
    # async factories are accepted (tests/test_di_container_async.py)


def test_container_reregistration_replaces_the_previous_one() -> None:
    c = di.Container()
    c.instance(Settings, Settings("a://"))
    c.instance(Settings, Settings("b://"))
    with c.scope() as scope:
        assert scope.get(Settings).dsn == "b://"


def test_container_thread_safety_many_threads_open_scopes_singleton_built_once() -> None:
    built: list[Database] = []
    closed = 0
    lock = threading.Lock()

    def slow_db(settings: Settings) -> Database:
        time.sleep(0.05)  # widen the race window
        db = Database(settings)
        with lock:
            built.append(db)
        return db

    def session() -> Iterator[Session]:
        nonlocal closed
        yield Session()
        with lock:
            closed += 1

    c = di.Container()
    c.register(Settings, lifetime="singleton")
    c.register(Database, slow_db, lifetime="singleton")
    c.register(Session, session)
    c.register(Repo)
    threads_n, per_thread = 16, 25
    start = threading.Barrier(threads_n)
    results: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                handler = dispatch(c, OnOrder, "o")
                with lock:
                    results.append(
                        (id(handler.repo.db), handler.session.id, handler.repo.session.id)
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(built) == 1
    assert {db for db, _, _ in results} == {id(built[0])}
    assert all(s1 == s2 for _, s1, s2 in results)  # scoped: one Session per message
    assert len({s for _, s, _ in results}) == threads_n * per_thread  # fresh for every message
    assert closed == threads_n * per_thread


# ----------------------------------------------------------------------------- adapters


def svcs_repo(svcs_container: svcs.Container) -> Repo:
    return Repo(svcs_container.get(Session), svcs_container.get(Database))


def make_svcs() -> tuple[di.SvcsResolver, Settings]:
    settings = Settings("svcs://")
    registry = svcs.Registry()
    registry.register_value(Settings, settings)
    registry.register_value(Database, Database(settings))
    registry.register_factory(Session, open_session)  # generator: cleanup when the scope closes
    registry.register_factory(Repo, svcs_repo)
    return di.SvcsResolver(registry), settings


class DishkaProvider(dishka.Provider):
    database = dishka.provide(Database, scope=dishka.Scope.APP)
    repo = dishka.provide(Repo, scope=dishka.Scope.REQUEST)

    @dishka.provide(scope=dishka.Scope.APP)
    def settings(self) -> Settings:
        return Settings("dishka://")

    @dishka.provide(scope=dishka.Scope.REQUEST)
    def session(self) -> Iterator[Session]:
        session = Session()
        yield session
        session.closed = True


def make_dishka() -> tuple[di.DishkaResolver, dishka.Container]:
    container = dishka.make_container(DishkaProvider())
    return di.DishkaResolver(container), container


def open_context_session() -> Iterator[Session]:
    session = Session()
    yield session
    session.closed = True


class DIServices(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings, dsn="di://")
    database = providers.Singleton(Database, settings=settings)
    session = providers.ContextLocalResource(open_context_session)
    repo = providers.Factory(Repo, session=session, db=database)
    clock = providers.Factory(Clock)


def make_dependency_injector() -> tuple[di.DependencyInjectorResolver, DIServices]:
    services = DIServices()
    return di.DependencyInjectorResolver(services), services


def make_container() -> di.Container:
    c = di.Container()
    c.instance(Settings, Settings())
    c.register(Database, lifetime="singleton")
    c.register(Session, open_session)
    c.register(Repo)
    return c


RESOLVERS: dict[str, Callable[[], di.Resolver]] = {
    "container": make_container,
    "svcs": lambda: make_svcs()[0],
    "dishka": lambda: make_dishka()[0],
    "dependency-injector": lambda: make_dependency_injector()[0],
}


@pytest.mark.parametrize("name", list(RESOLVERS))
def test_every_resolver_gives_each_message_a_fresh_scoped_dependency_and_closes_it(
    name: str,
) -> None:
    resolver = RESOLVERS[name]()
    first = dispatch(resolver, OnOrder, "o-1")
    second = dispatch(resolver, OnOrder, "o-2")
    assert first.seen == ["o-1"] and second.seen == ["o-2"]
    assert first.session is first.repo.session  # one Session per message...
    assert second.session is not first.session  # ... and a new one for the next message
    assert first.session.closed and second.session.closed  # cleaned up at scope exit
    # Clock is only provided by the dependency-injector setup; elsewhere the default None stays
    assert isinstance(first.clock, Clock) if name == "dependency-injector" else first.clock is None
    assert type(first.repo.db) is Database


@pytest.mark.parametrize("name", list(RESOLVERS))
def test_every_resolver_reports_a_missing_dependency_as_resolution_error(name: str) -> None:
    resolver = RESOLVERS[name]()
    with resolver.scope() as scope:
        with pytest.raises(di.NotRegistered, match="Missing"):
            scope.get(Missing)
        with pytest.raises(di.ResolutionError, match=r"Cache.*'backend'.*Missing"):
            di.build(Cache, scope)
        # a default survives an unknown type
        assert di.build(WithDefaults, scope).cache is None


def test_svcs_adapter_scoped_factory_cleanup_and_shared_value() -> None:
    resolver, settings = make_svcs()
    with resolver.scope() as scope:
        session = scope.get(Session)
        assert scope.get(Session) is session  # svcs caches per container (= per scope)
        assert scope.get(Settings) is settings
        assert not session.closed
    assert session.closed
    with resolver.scope() as scope:
        assert scope.get(Session) is not session
        assert scope.get(Settings) is settings


def test_svcs_adapter_closes_container_when_body_raises() -> None:
    resolver, _ = make_svcs()
    with pytest.raises(KeyError), resolver.scope() as scope:
        session = scope.get(Session)
        raise KeyError("handler failed")
    assert session.closed


def test_svcs_adapter_factory_error_is_resolution_error() -> None:
    registry = svcs.Registry()
    registry.register_factory(Clock, lambda: 1 / 0)
    with (
        di.SvcsResolver(registry).scope() as scope,
        pytest.raises(di.ResolutionError, match="ZeroDivisionError") as info,
    ):
        scope.get(Clock)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_dishka_adapter_request_scope_fresh_and_finalized_app_scope_shared() -> None:
    resolver, container = make_dishka()
    with resolver.scope() as scope:
        session, repo = scope.get(Session), scope.get(Repo)
        assert repo.session is session
        db = scope.get(Database)
        assert not session.closed
    assert session.closed  # the generator finalizer ran at scope exit
    with resolver.scope() as scope:
        assert scope.get(Session) is not session
        assert scope.get(Database) is db  # APP scope: shared by every message
    assert container.get(Database) is db
    container.close()


def test_dishka_adapter_finalizer_runs_when_body_raises() -> None:
    resolver, container = make_dishka()
    with pytest.raises(RuntimeError), resolver.scope() as scope:
        session = scope.get(Session)
        raise RuntimeError("handler failed")
    assert session.closed
    container.close()


def test_dishka_adapter_app_scope_built_once_across_threads() -> None:
    resolver, container = make_dishka()
    seen: set[int] = set()
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(20):
            handler = dispatch(resolver, OnOrder, "o")
            with lock:
                seen.add(id(handler.repo.db))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 1
    container.close()


def test_dependency_injector_factory_fresh_singleton_shared() -> None:
    resolver, services = make_dependency_injector()
    with resolver.scope() as scope:
        clock1, clock2 = scope.get(Clock), scope.get(Clock)
        db1 = scope.get(Database)
    with resolver.scope() as scope:
        db2 = scope.get(Database)
        assert scope.get(Settings).dsn == "di://"
    assert clock1 is not clock2  # Factory: a new object at every get
    assert db1 is db2 is services.database()  # Singleton: one for the application


def test_dependency_injector_context_local_resource_is_per_scope_and_shut_down() -> None:
    resolver, services = make_dependency_injector()
    with resolver.scope() as scope:
        session = scope.get(Session)
        repo = scope.get(Repo)
        assert repo.session is session  # same context: the same resource
        assert not session.closed
    assert session.closed  # shutdown_resources(ContextLocalResource) ran in the scope's context
    with pytest.raises(ValueError), resolver.scope() as scope:
        other = scope.get(Session)
        raise ValueError("handler failed")
    assert other is not session and other.closed
    assert not services.session.initialized  # nothing leaked into the caller's context


def test_dependency_injector_context_local_singleton_is_per_scope() -> None:
    class PerMessage(containers.DeclarativeContainer):
        clock = providers.ContextLocalSingleton(Clock)

    resolver = di.DependencyInjectorResolver(PerMessage())
    with resolver.scope() as scope:
        first = scope.get(Clock)
        assert scope.get(Clock) is first
    with resolver.scope() as scope:
        assert scope.get(Clock) is not first


def test_dependency_injector_explicit_types_and_ambiguity() -> None:
    class Two(containers.DeclarativeContainer):
        fast = providers.Factory(Clock)
        slow = providers.Singleton(Clock)

    services = Two()
    with (
        di.DependencyInjectorResolver(services).scope() as scope,
        pytest.raises(di.ResolutionError, match=r"Clock.*fast.*slow"),
    ):
        scope.get(Clock)
    resolver = di.DependencyInjectorResolver(services, types={Clock: services.slow})
    with resolver.scope() as scope:
        assert scope.get(Clock) is services.slow()


def test_resolvers_satisfy_the_protocols() -> None:
    resolvers: list[di.Resolver] = [factory() for factory in RESOLVERS.values()]
    for resolver in resolvers:
        with resolver.scope() as scope:
            scope_: di.Scope = scope
            assert callable(scope_.get)

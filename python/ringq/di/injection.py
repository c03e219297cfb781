"""Constructor injection: ``build(cls, scope)`` makes an object from what a
``Scope`` provides.

``build`` calls ``cls`` with one argument per ``__init__`` parameter,
resolved with ``scope.get(annotation)``. Annotations are evaluated with
:func:`typing.get_type_hints`, so string annotations and
``from __future__ import annotations`` work (the names must be globals of
the module that defines ``__init__``). ``Annotated[X, ...]`` asks for ``X``;
``X | None`` asks for ``X`` and gets ``None`` if nothing provides ``X``. A
parameter with a default keeps the default when the scope has no provider
for its type (:class:`NotRegistered`); any other failure is an error.
``*args``/``**kwargs`` are left alone, and a class without ``__init__``
parameters is simply called. The analysis of each class is cached (``plan``;
the container resolves its factories' parameters with it too). Everything
that goes wrong is a :class:`ResolutionError` (a ``ringq.RingqError``)
naming the class, the parameter and the type, with the original exception
chained as ``__cause__``.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Final, NamedTuple, TypeVar, cast

from ringq.di.protocol import AsyncScope, NotRegistered, ResolutionError, Scope, name_of

__all__ = ["Param", "abuild", "build", "plan", "resolve_args"]

T = TypeVar("T")

_NO_DEFAULT: Final[Any] = inspect.Parameter.empty
_NO_ANNOTATION: Final[Any] = object()


class Param(NamedTuple):
    name: str
    positional_only: bool
    tp: Any  # the type to ask the scope for, or _NO_ANNOTATION
    optional: bool  # annotated ``X | None``: None when X is not provided
    default: Any  # _NO_DEFAULT if none


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


def _analyze(target: Callable[..., Any]) -> tuple[Param, ...]:
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
            f"cannot build {name_of(target)}: cannot evaluate the annotations of "
            f"{name_of(source)}: {type(exc).__name__}: {exc}",
            target=target,
        ) from exc
    params: list[Param] = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in hints:
            tp, optional = _requested_type(hints[p.name])
        else:
            tp, optional = _NO_ANNOTATION, False
        params.append(Param(p.name, p.kind is p.POSITIONAL_ONLY, tp, optional, p.default))
    return tuple(params)


_analyze_cached = functools.lru_cache(maxsize=4096)(_analyze)


def plan(target: Callable[..., Any]) -> tuple[Param, ...]:
    """The parameters of ``target`` to resolve (cached per callable)."""
    try:
        hash(target)
    except TypeError:  # an unhashable callable object: analyze it every time
        return _analyze(target)
    return _analyze_cached(target)


def resolve_args(
    target: Callable[..., Any], params: tuple[Param, ...], scope: Scope
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments to call ``target`` with, from ``scope``."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.tp is _NO_ANNOTATION:
            if p.default is _NO_DEFAULT:
                raise ResolutionError(
                    f"cannot build {name_of(target)}: parameter {p.name!r} has no type "
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


def _param_error(target: object, p: Param, exc: Exception) -> ResolutionError:
    detail = str(exc) if isinstance(exc, ResolutionError) else f"{type(exc).__name__}: {exc}"
    return ResolutionError(
        f"cannot build {name_of(target)}: parameter {p.name!r} ({name_of(p.tp)}): {detail}",
        target=target,
        parameter=p.name,
        tp=p.tp,
    )


def build(cls: type[T], scope: Scope) -> T:
    """Instantiate ``cls``, resolving each ``__init__`` parameter from ``scope``.

    Parameters are resolved by their type annotation; one with a default keeps
    it when the scope has no provider for its type. Raises
    :class:`ResolutionError` naming the class, parameter and type on failure
    (also when ``__init__`` itself raises).
    """
    args, kwargs = resolve_args(cls, plan(cls), scope)
    return _instantiate(cls, args, kwargs)


async def abuild(cls: type[T], scope: AsyncScope) -> T:
    """:func:`build` from an :class:`AsyncScope`: each parameter's type is
    awaited from the scope (once per type), then resolved as ``build``
    would (defaults, optionals and errors alike)."""
    params = plan(cls)
    got: dict[Any, Any] = {}
    failed: dict[Any, Exception] = {}
    for p in params:
        if p.tp is _NO_ANNOTATION or p.tp in got or p.tp in failed:
            continue
        try:
            got[p.tp] = await scope.aget(p.tp)
        except Exception as exc:
            failed[p.tp] = exc
    args, kwargs = resolve_args(cls, params, _Awaited(got, failed))
    return _instantiate(cls, args, kwargs)


class _Awaited:
    """What an async scope gave (or raised), as a sync ``Scope``."""

    def __init__(self, got: dict[Any, Any], failed: dict[Any, Exception]) -> None:
        self.got = got
        self.failed = failed

    def get(self, tp: type[T]) -> T:
        if tp in self.failed:
            raise self.failed[tp]
        value: T = self.got[tp]
        return value


def _instantiate(cls: type[T], args: list[Any], kwargs: dict[str, Any]) -> T:
    try:
        return cls(*args, **kwargs)
    except ResolutionError:
        raise
    except Exception as exc:
        raise ResolutionError(
            f"cannot build {name_of(cls)}: it raised {type(exc).__name__}: {exc}",
            target=cls,
        ) from exc

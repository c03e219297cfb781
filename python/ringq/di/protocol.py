"""What a dependency resolver is: ``Resolver`` opens per-message scopes, a
``Scope`` provides instances by type, and these are the errors it raises.

Anything with ``scope()`` returning a context manager of a ``Scope``
(``get(tp) -> instance``) is a ``Resolver``: ringq's own ``Container``
(``ringq.di.container``) and the adapters (``ringq.di.adapters``) are.

Thread-safety: scopes may be opened and used concurrently from any number of
worker threads; a scope itself belongs to one message and is meant to be used
by one thread at a time (the built-in container's scopes tolerate more, the
adapters follow their package).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, TypeVar

from ringq.errors import RingqError

__all__ = [
    "AsyncResolver",
    "AsyncScope",
    "NotRegistered",
    "ResolutionError",
    "Resolver",
    "Scope",
    "name_of",
]

T = TypeVar("T")


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
    for a missing dependency further down) so that ``build`` can fall back
    to a parameter's default.
    """

    def __init__(self, tp: object, message: str | None = None) -> None:
        super().__init__(message or f"{name_of(tp)} is not registered", tp=tp)


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


class AsyncScope(Protocol):
    """A :class:`Scope` whose providers may be async (awaited ``aget``)."""

    async def aget(self, tp: type[T]) -> T:
        """As :meth:`Scope.get`, awaited."""
        ...


class AsyncResolver(Protocol):
    """A resolver whose scopes are async context managers: async handler
    classes are built in one (``ringq.dispatch.aio``)."""

    def ascope(self) -> contextlib.AbstractAsyncContextManager[AsyncScope]: ...


def name_of(obj: object) -> str:
    """A type, function or object as error messages name it (``QualName``)."""
    if isinstance(obj, type):
        return obj.__qualname__
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str) and callable(obj):
        return qualname
    return repr(obj)

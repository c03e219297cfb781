"""Dependency injection for handler classes: one scope per message.

A handler class declares what it needs as annotated ``__init__`` parameters.
The dispatcher builds a fresh handler for every message inside a fresh scope::

    with resolver.scope() as scope:               # one scope per handler invocation
        handler = ringq.di.build(OnOrder, scope)  # __init__ parameters come from the scope
        handler.handle(msg, ctx)
    # leaving the block closes everything the scope created (also when handle raised)

Anything with ``scope()`` returning a context manager of a :class:`Scope`
(``get(tp) -> instance``) is a :class:`Resolver`. For a handler class whose
``handle`` is ``async def``, a resolver that also has ``ascope()`` (an
:class:`AsyncResolver`: ``async with resolver.ascope() as scope``, ``await
scope.aget(tp)``, ``abuild``) is used that way, so dependencies can be made by
async factories. ringq ships its own
:class:`Container` and adapters for svcs, dishka and dependency-injector; the
adapters import their package only when used, so none of them is a dependency
of ringq. The modules, each importing only those above it in this list:

- ``protocol``: ``Scope``, ``Resolver``, and the errors (``ResolutionError``,
  ``NotRegistered``);
- ``injection``: ``build(cls, scope)``, constructor injection from any scope
  (``abuild(cls, scope)`` from an ``AsyncScope``: async handler classes);
- ``container``: the built-in ``Container`` (lifetimes, generator cleanups,
  ``async def`` and async generator factories in ``ascope()``);
- ``adapters``: ``SvcsResolver``, ``DishkaResolver``, ``DishkaAsyncResolver``,
  ``DependencyInjectorResolver``.

Everything public is importable from ``ringq.di`` itself.
"""

from ringq.di.adapters import (
    DependencyInjectorResolver,
    DishkaAsyncResolver,
    DishkaResolver,
    SvcsResolver,
)
from ringq.di.container import Container, ContainerScope, Lifetime
from ringq.di.injection import abuild, build
from ringq.di.protocol import (
    AsyncResolver,
    AsyncScope,
    NotRegistered,
    ResolutionError,
    Resolver,
    Scope,
)

__all__ = [
    "AsyncResolver",
    "AsyncScope",
    "Container",
    "ContainerScope",
    "DependencyInjectorResolver",
    "DishkaAsyncResolver",
    "DishkaResolver",
    "Lifetime",
    "NotRegistered",
    "ResolutionError",
    "Resolver",
    "Scope",
    "SvcsResolver",
    "abuild",
    "build",
]

# Users meet these as ``ringq.di.<Name>`` (reprs, pickles, a dead letter's
# error_type): that is where they live publicly.
for _cls in (
    Container,
    ContainerScope,
    DependencyInjectorResolver,
    DishkaResolver,
    NotRegistered,
    ResolutionError,
    Resolver,
    Scope,
    SvcsResolver,
):
    _cls.__module__ = __name__
del _cls

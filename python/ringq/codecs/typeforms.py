"""Reading type expressions: the classes a message type names.

A handler's message type may be a class, a generic alias (``Envelope[int]``),
``Annotated[...]``, a union, or a builtin or ``typing`` type that names no
class of its own. Topics, type tags, codecs and decoders all ask the same
few questions of it; they are answered here, once.

Pydantic is optional and never imported here: a class can only be a pydantic
model if pydantic has been imported already, so detection looks for
``pydantic.main.BaseModel`` in ``sys.modules``.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any

from ringq.errors import qualified_name

__all__ = [
    "describe",
    "is_pydantic_model",
    "is_untyped_class",
    "strip_annotated",
    "target_class",
    "union_members",
]

_UNTYPED_MODULES = frozenset({"builtins", "typing", "collections", "collections.abc"})


def is_untyped_class(cls: type) -> bool:
    """Builtin types (dict, list, str, int, NoneType, Any, Mapping, ...) carry no identity."""
    return cls.__module__ in _UNTYPED_MODULES


def _pydantic_base() -> type | None:
    """``pydantic.BaseModel`` if pydantic is loaded; never imports it."""
    main = sys.modules.get("pydantic.main")
    base = getattr(main, "BaseModel", None) if main is not None else None
    return base if isinstance(base, type) else None


def is_pydantic_model(cls: object) -> bool:
    base = _pydantic_base()
    return base is not None and isinstance(cls, type) and issubclass(cls, base)


def strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def union_members(tp: Any) -> tuple[Any, ...] | None:
    tp = strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def target_class(tp: Any) -> type | None:
    """The class behind a target type (``Envelope[int]`` -> ``Envelope``), if any."""
    tp = strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is not None:
        tp = origin
    return tp if isinstance(tp, type) else None


def describe(tp: Any) -> str:
    """A type as error messages name it: ``module.QualName`` (``int`` for builtins)."""
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return qualified_name(tp)
    return repr(tp)

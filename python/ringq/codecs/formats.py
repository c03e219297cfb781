"""The codecs: turning objects into payload bytes and back.

``JsonCodec`` (msgspec JSON) is the default; ``MsgpackCodec`` (msgspec
MessagePack) is smaller and faster. Both handle dataclasses, msgspec
Structs, TypedDicts and dicts (and whatever else msgspec encodes: attrs
classes, NamedTuples, enums, lists, datetimes, ...). Pydantic (v2) models are
encoded with ``model_dump_json()`` (JSON) or ``model_dump(mode="json")``
(MessagePack) and decoded with their own validation. Types a codec cannot
decode at all (e.g. a plain class for the msgspec codecs) are refused with
``TypeError`` when its decoder is built, i.e. when the handler is
registered.

Pickle is never used unless the user constructs a ``PickleCodec``, which warns
(``PickleWarning``): unpickling runs code chosen by whoever wrote the payload.

``bytes`` and ``str`` payloads never reach a codec (``ringq.codecs.encoding``,
``ringq.codecs.decoding``).
"""

from __future__ import annotations

import dataclasses
import pickle
import typing
import warnings
import weakref
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import msgspec

from ringq.codecs.typeforms import (
    describe,
    is_pydantic_model,
    strip_annotated,
    target_class,
    union_members,
)

__all__ = [
    "DEFAULT_CODEC",
    "BuiltinCodec",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "PickleCodec",
    "PickleWarning",
]


class PickleWarning(UserWarning):
    """Emitted when a ``PickleCodec`` is constructed: unpickling runs arbitrary code."""


@runtime_checkable
class Codec(Protocol):
    """Turns objects into payload bytes and back.

    ``encode`` is only given objects (``bytes``/``str`` payloads never reach
    a codec); ``decode`` returns a value of type ``tp`` and raises any
    exception when it cannot (``decoder_for`` reports it as
    ``UndecodableError``).
    """

    name: str

    def encode(self, obj: object) -> bytes: ...

    def decode(self, data: bytes, tp: Any) -> Any: ...


class BuiltinCodec:
    """Shared machinery of the built-in codecs: a per-type decoder cache."""

    name: str = ""

    def __init__(self) -> None:
        self._decoders: dict[Any, Callable[[bytes], Any]] = {}

    def _decoder(self, tp: Any) -> Callable[[bytes], Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def cached_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        """The function decoding payloads into ``tp``, built once per type."""
        try:
            return self._decoders[tp]
        except KeyError:
            dec = self._decoders[tp] = self._decoder(tp)
            return dec
        except TypeError:  # an unhashable type expression: build it every time
            return self._decoder(tp)

    def decode(self, data: bytes, tp: Any) -> Any:
        """Decode ``data`` into ``tp``; raises the underlying library's error on failure."""
        return self.cached_decoder(tp)(data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_MSGSPEC_MODULES = frozenset(
    {"builtins", "collections", "collections.abc", "datetime", "decimal", "typing", "uuid"}
)


def _msgspec_supports(cls: type) -> bool:
    """Whether msgspec can decode into ``cls`` without a ``dec_hook``.

    (msgspec accepts any class when building a decoder and then fails on
    every message; this catches plain classes at handler registration.)
    """
    return (
        cls.__module__ in _MSGSPEC_MODULES
        or cls.__module__.partition(".")[0] == "msgspec"
        or issubclass(cls, msgspec.Struct | tuple | Enum)
        or dataclasses.is_dataclass(cls)
        or typing.is_typeddict(cls)
        or hasattr(cls, "__attrs_attrs__")
    )


# Whether a class is a pydantic model, per class (it never changes). Weak,
# so that classes created at run time are not kept alive.
_pydantic: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _is_pydantic_class(cls: type) -> bool:
    known = _pydantic.get(cls)
    if known is None:
        known = _pydantic[cls] = is_pydantic_model(cls)
    return known


class _MsgspecCodec(BuiltinCodec):
    def __init__(self) -> None:
        super().__init__()
        self._encode: Callable[[object], bytes] = self._make_encoder()

    def _make_encoder(self) -> Callable[[object], bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _make_decoder(self, tp: Any) -> Callable[[bytes], Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pydantic_encode(self, obj: Any) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pydantic_decoder(self, cls: Any) -> Callable[[bytes], Any]:  # pragma: no cover
        raise NotImplementedError

    def encode(self, obj: object) -> bytes:
        if _is_pydantic_class(type(obj)):
            return self._pydantic_encode(obj)
        return self._encode(obj)

    def _decoder(self, tp: Any) -> Callable[[bytes], Any]:
        inner = strip_annotated(tp)
        if is_pydantic_model(inner):
            return self._pydantic_decoder(inner)
        for member in union_members(tp) or (tp,):
            cls = target_class(member)
            if cls is not None and not _msgspec_supports(cls):
                raise TypeError(
                    f"the {self.name} codec cannot decode {describe(member)}: use a dataclass, "
                    f"msgspec Struct, TypedDict, dict, pydantic model, bytes or str"
                )
        return self._make_decoder(tp)


class JsonCodec(_MsgspecCodec):
    """msgspec JSON: the default codec."""

    name = "json"

    def _make_encoder(self) -> Callable[[object], bytes]:
        return msgspec.json.Encoder().encode

    def _make_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        return msgspec.json.Decoder(tp).decode

    def _pydantic_encode(self, obj: Any) -> bytes:
        data: str = obj.model_dump_json()
        return data.encode()

    def _pydantic_decoder(self, cls: Any) -> Callable[[bytes], Any]:
        validate: Callable[[bytes], Any] = cls.model_validate_json
        return validate


class MsgpackCodec(_MsgspecCodec):
    """msgspec MessagePack: smaller and faster than JSON, not human-readable."""

    name = "msgpack"

    def _make_encoder(self) -> Callable[[object], bytes]:
        return msgspec.msgpack.Encoder().encode

    def _make_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        return msgspec.msgpack.Decoder(tp).decode

    def _pydantic_encode(self, obj: Any) -> bytes:
        return self._encode(obj.model_dump(mode="json"))

    def _pydantic_decoder(self, cls: Any) -> Callable[[bytes], Any]:
        read = msgspec.msgpack.Decoder().decode
        validate: Callable[[Any], Any] = cls.model_validate

        def decode(data: bytes) -> Any:
            return validate(read(data))

        return decode


class PickleCodec(BuiltinCodec):
    """Python pickle. UNSAFE: only for payloads from fully trusted producers.

    Decoding a payload runs whatever code its author chose, so anyone able to
    publish to the queue (or write its directory) can run code in every
    consumer. Constructing one emits ``PickleWarning``; ringq never uses
    pickle otherwise. Decoded values are checked against the target class.
    """

    name = "pickle"

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        super().__init__()
        self.protocol = protocol
        warnings.warn(
            "PickleCodec: unpickling a payload executes arbitrary code chosen by whoever "
            "wrote it; anyone who can publish to this queue (or write its directory) can "
            "run code in your consumers. Use it only with fully trusted producers; prefer "
            "JsonCodec or MsgpackCodec.",
            PickleWarning,
            stacklevel=2,
        )

    def encode(self, obj: object) -> bytes:
        return pickle.dumps(obj, protocol=self.protocol)

    def _decoder(self, tp: Any) -> Callable[[bytes], Any]:
        cls = target_class(tp)
        if cls is not None and typing.is_typeddict(cls):
            cls = dict
        if cls is None or cls is object or cls.__module__ == "typing":  # e.g. Any
            return pickle.loads
        expected = cls

        def decode(data: bytes) -> Any:
            value = pickle.loads(data)
            if not isinstance(value, expected):
                raise TypeError(f"unpickled a {type(value).__qualname__}, not a {describe(tp)}")
            return value

        return decode


#: The codec of ``encode_message`` and ``decoder_for`` when none is given.
DEFAULT_CODEC = JsonCodec()

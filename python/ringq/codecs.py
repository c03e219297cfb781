"""Messages and codecs: turning Python objects into payload bytes and back.

The engine stores bytes only; this module decides what they are.

Publishing (``encode`` / ``encode_message``):

- ``bytes`` pass through unchanged (``bytearray`` / ``memoryview`` are copied
  to ``bytes``) and ``str`` is UTF-8, whatever the codec. They go to
  ``DEFAULT_TOPIC`` and carry no type tag.
- Any other object is encoded by the codec: msgspec JSON by default
  (``JsonCodec``), or msgspec MessagePack (``MsgpackCodec``). Both handle
  dataclasses, msgspec Structs, TypedDicts and dicts (and whatever else
  msgspec encodes: attrs classes, NamedTuples, enums, lists, datetimes, ...).
  Pydantic (v2) models are encoded with ``model_dump_json()`` (JSON) or
  ``model_dump(mode="json")`` (MessagePack).
- An object of a class gets that class's topic (``topic_for``: the topic given
  to ``@ringq.message``, else ``module.QualName``) and its type tag
  (``type_tag``: the ``tag`` given to ``@ringq.message``, else
  ``module.QualName``). The Queue writes the tag in the ``TYPE_HEADER``
  header, which is what lets several types share one topic.
- Values of builtin types (``dict``, ``list``, ``int``, ``None``, the
  ``collections`` containers) carry no class identity: they go to
  ``DEFAULT_TOPIC`` without a tag. A TypedDict value *is* a plain ``dict`` at
  run time, so it is published the same way; publish it with
  ``topic=topic_for(MyTypedDict)`` (or the topic given to ``@ringq.message``)
  to reach a handler typed with that TypedDict.

Registration (``@ringq.message``) applies to exactly the decorated class:
subclasses are not registered through their base (a subclass is another type
with its own default topic and tag). Applying it again replaces the earlier
registration. Registrations are kept in a weak mapping, so classes are never
modified nor kept alive.

Consuming (``decoder_for(tp)``, built once per handler) turns
``(payload, type tag from the headers)`` back into ``tp``:

- ``bytes``: the payload itself; ``str``: UTF-8 (strict).
- dataclass, msgspec Struct, pydantic model (any class with a type tag): the
  payload is decoded with the codec, after checking the tag. A payload that
  carries *another* tag is undecodable even if its fields would fit: on a
  topic shared by several types, a handler for one of them must not silently
  read the others (type the handler with a union instead). A payload without
  a tag (raw bytes published with ``topic=``, another producer) is decoded by
  shape. Default tags are ``module.QualName``, so renaming or moving a class
  changes them; pin them with ``@ringq.message(tag="...")`` when producers
  and consumers are deployed separately.
- ``dict``, ``dict[str, Any]``, a TypedDict, other msgspec types (``list[int]``,
  ``Any``...): decoded by shape; the tag is ignored (these values never carry
  one).
- A union ``A | B | ...``: with a tag, the member carrying that tag is tried,
  then the members decoded by shape (``dict``, TypedDicts, ``bytes``, ...) in
  declaration order; a tag that none of them accepts (in particular a tag no
  member carries, when all members are classes) is undecodable. Without a
  tag, each member is tried in declaration order and the first that accepts
  the payload wins. msgspec ignores unknown fields, so for untagged payloads
  list the most specific member first. Two members with the same tag are
  refused (``TypeError``) when the decoder is built.

Every decoding failure (invalid JSON/MessagePack, wrong shape, failed pydantic
validation, unknown or mismatched tag, invalid UTF-8) raises
``UndecodableError`` naming the target type, the tag and the cause, with the
original exception chained; the dispatcher dead-letters such messages with
reason ``"undecodable"``. Types a codec cannot decode at all (e.g. a plain
class for the msgspec codecs) are refused with ``TypeError`` when the decoder
is built, i.e. when the handler is registered.

Pydantic is optional and never imported here: a class can only be a pydantic
model if pydantic has been imported already, so detection looks for
``pydantic.main.BaseModel`` in ``sys.modules``.

Pickle is never used unless the user constructs a ``PickleCodec``, which warns
(``PickleWarning``): unpickling runs code chosen by whoever wrote the payload.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
import sys
import types
import typing
import warnings
import weakref
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

from ringq.errors import RingqError

__all__ = [
    "DEFAULT_TOPIC",
    "TYPE_HEADER",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "PickleCodec",
    "PickleWarning",
    "UndecodableError",
    "decoder_for",
    "encode",
    "encode_message",
    "message",
    "topic_for",
    "topics_for",
    "type_tag",
]

DEFAULT_TOPIC = "default"
TYPE_HEADER = "ringq-type"

T = TypeVar("T")

Decoder = Callable[[bytes, str | None], Any]


# -- errors and warnings ------------------------------------------------------


class UndecodableError(RingqError):
    """A payload could not be decoded into the handler's message type.

    ``target`` names that type and ``type_tag`` is the tag the message
    carried (``None`` if none); the original exception is ``__cause__``.
    """

    def __init__(self, message: str, *, target: str = "", type_tag: str | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.type_tag = type_tag

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = functools.partial(type(self), target=self.target, type_tag=self.type_tag)
        return rebuild, self.args


class PickleWarning(UserWarning):
    """Emitted when a ``PickleCodec`` is constructed: unpickling runs arbitrary code."""


# -- registration: topics and type tags ---------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Registration:
    topic: str | None
    tag: str | None


_registry: weakref.WeakKeyDictionary[type, _Registration] = weakref.WeakKeyDictionary()


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_UNTYPED_MODULES = frozenset({"builtins", "typing", "collections", "collections.abc"})


def _is_untyped_class(cls: type) -> bool:
    """Builtin types (dict, list, str, int, NoneType, Any, Mapping, ...) carry no identity."""
    return cls.__module__ in _UNTYPED_MODULES


def message(topic: str | None = None, *, tag: str | None = None) -> Callable[[type[T]], type[T]]:
    """Class decorator: give a message type its topic and/or type tag.

    ``@ringq.message("orders.placed")`` publishes objects of the class to
    ``orders.placed`` instead of ``module.QualName``; ``tag="..."`` replaces
    the type tag (default ``module.QualName``) written in ``TYPE_HEADER``,
    which tells apart several types sharing a topic. Returns the class itself.
    """
    if topic is not None and (not isinstance(topic, str) or not topic):
        if isinstance(topic, type):
            raise TypeError("use @ringq.message() with parentheses (or with a topic)")
        raise TypeError(f"message topic must be a non-empty str, got {topic!r}")
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise TypeError(f"message tag must be a non-empty str, got {tag!r}")

    def register(cls: type[T]) -> type[T]:
        if not isinstance(cls, type):
            raise TypeError(f"@ringq.message decorates classes, not {cls!r}")
        if _is_untyped_class(cls):
            raise TypeError(f"cannot register the builtin type {_describe(cls)}")
        _registry[cls] = _Registration(topic, tag)
        _plans.pop(cls, None)
        return cls

    return register


def topic_for(cls: type) -> str:
    """The topic of objects of ``cls``: its ``@ringq.message`` topic, else ``module.QualName``."""
    reg = _registry.get(cls)
    if reg is not None and reg.topic is not None:
        return reg.topic
    return f"{cls.__module__}.{cls.__qualname__}"


def type_tag(cls: type) -> str:
    """The tag written in ``TYPE_HEADER`` for objects of ``cls``.

    Its ``@ringq.message`` tag, else ``module.QualName``. (Values of builtin
    types, TypedDicts included, are published without a tag.)
    """
    reg = _registry.get(cls)
    if reg is not None and reg.tag is not None:
        return reg.tag
    return f"{cls.__module__}.{cls.__qualname__}"


# -- type inspection ----------------------------------------------------------


def _pydantic_base() -> type | None:
    """``pydantic.BaseModel`` if pydantic is loaded; never imports it."""
    main = sys.modules.get("pydantic.main")
    base = getattr(main, "BaseModel", None) if main is not None else None
    return base if isinstance(base, type) else None


def _is_pydantic_model(cls: object) -> bool:
    base = _pydantic_base()
    return base is not None and isinstance(cls, type) and issubclass(cls, base)


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _target_class(tp: Any) -> type | None:
    """The class behind a target type (``Envelope[int]`` -> ``Envelope``), if any."""
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is not None:
        tp = origin
    return tp if isinstance(tp, type) else None


def _expected_tag(tp: Any) -> str | None:
    """The tag a target's payloads carry, or ``None`` for targets decoded by shape."""
    cls = _target_class(tp)
    if cls is None or _is_untyped_class(cls) or typing.is_typeddict(cls):
        return None
    return type_tag(cls)


def _describe(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__qualname__ if tp.__module__ == "builtins" else _qualified_name(tp)
    return repr(tp)


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


# -- codecs -------------------------------------------------------------------


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


class _BaseCodec:
    """Shared machinery of the built-in codecs: a per-type decoder cache."""

    name: str = ""

    def __init__(self) -> None:
        self._decoders: dict[Any, Callable[[bytes], Any]] = {}

    def _decoder(self, tp: Any) -> Callable[[bytes], Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cached_decoder(self, tp: Any) -> Callable[[bytes], Any]:
        try:
            return self._decoders[tp]
        except KeyError:
            dec = self._decoders[tp] = self._decoder(tp)
            return dec
        except TypeError:  # an unhashable type expression: build it every time
            return self._decoder(tp)

    def decode(self, data: bytes, tp: Any) -> Any:
        """Decode ``data`` into ``tp``; raises the underlying library's error on failure."""
        return self._cached_decoder(tp)(data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _MsgspecCodec(_BaseCodec):
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
        cls = type(obj)
        plan = _plans.get(cls) or _plan_for(cls)
        return self._pydantic_encode(obj) if plan.pydantic else self._encode(obj)

    def _decoder(self, tp: Any) -> Callable[[bytes], Any]:
        inner = _strip_annotated(tp)
        if _is_pydantic_model(inner):
            return self._pydantic_decoder(inner)
        for member in _union_members(tp) or (tp,):
            cls = _target_class(member)
            if cls is not None and not _msgspec_supports(cls):
                raise TypeError(
                    f"the {self.name} codec cannot decode {_describe(member)}: use a dataclass, "
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


class PickleCodec(_BaseCodec):
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
        cls = _target_class(tp)
        if cls is not None and typing.is_typeddict(cls):
            cls = dict
        if cls is None or cls is object or cls.__module__ == "typing":  # e.g. Any
            return pickle.loads
        expected = cls

        def decode(data: bytes) -> Any:
            value = pickle.loads(data)
            if not isinstance(value, expected):
                raise TypeError(f"unpickled a {type(value).__qualname__}, not a {_describe(tp)}")
            return value

        return decode


_DEFAULT_CODEC = JsonCodec()
_default_encode = _DEFAULT_CODEC._encode


# -- publishing ---------------------------------------------------------------


def encode(obj: object) -> tuple[str, bytes]:
    """Return ``(default_topic, payload)`` for ``obj`` with the default codec.

    ``bytes`` are returned as given, ``str`` as UTF-8, ``bytearray`` and
    ``memoryview`` copied to ``bytes``, all on ``DEFAULT_TOPIC``; objects as
    msgspec JSON on their type's topic (see ``encode_message``).
    """
    if isinstance(obj, bytes):
        return DEFAULT_TOPIC, obj if type(obj) is bytes else bytes(obj)
    if isinstance(obj, str):
        return DEFAULT_TOPIC, obj.encode()
    if isinstance(obj, (bytearray, memoryview)):
        return DEFAULT_TOPIC, bytes(obj)
    cls = type(obj)
    plan = _plans.get(cls) or _plan_for(cls)
    try:
        data = _default_encode(obj) if not plan.pydantic else _DEFAULT_CODEC._pydantic_encode(obj)
    except Exception as e:
        e.add_note(f"ringq: while encoding a {_describe(cls)} with the json codec")
        raise
    return plan.topic, data


def encode_message(obj: object, codec: Codec | None = None) -> tuple[str, bytes, str | None]:
    """Return ``(default_topic, payload, type_tag)`` for ``obj``.

    ``bytes``/``str``/``bytearray``/``memoryview`` follow ``encode``'s rules
    and have no tag, whatever the codec. Other objects are encoded with
    ``codec`` (default: JSON); an object of a class gets ``topic_for`` and
    ``type_tag`` of its class, a value of a builtin type (``dict``, ``list``,
    ...) gets ``DEFAULT_TOPIC`` and no tag. Encoding errors (e.g.
    ``TypeError`` for an unsupported type) propagate with a note.
    """
    if isinstance(obj, bytes):
        return DEFAULT_TOPIC, obj if type(obj) is bytes else bytes(obj), None
    if isinstance(obj, str):
        return DEFAULT_TOPIC, obj.encode(), None
    if isinstance(obj, (bytearray, memoryview)):
        return DEFAULT_TOPIC, bytes(obj), None
    return _encode_object(obj, _DEFAULT_CODEC if codec is None else codec)


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """How objects of one class are published (cached per class)."""

    topic: str
    tag: str | None
    pydantic: bool


# Weak, so that classes created at run time are not kept alive; entries are
# dropped when @message (re)registers a class.
_plans: weakref.WeakKeyDictionary[type, _Plan] = weakref.WeakKeyDictionary()


def _plan_for(cls: type) -> _Plan:
    plan = _plans.get(cls)
    if plan is None:
        if _is_untyped_class(cls):
            plan = _Plan(DEFAULT_TOPIC, None, pydantic=False)
        else:
            plan = _Plan(topic_for(cls), type_tag(cls), pydantic=_is_pydantic_model(cls))
        _plans[cls] = plan
    return plan


def _encode_object(obj: object, codec: Codec) -> tuple[str, bytes, str | None]:
    cls = type(obj)
    plan = _plans.get(cls) or _plan_for(cls)
    try:
        data = codec.encode(obj)
    except Exception as e:
        e.add_note(f"ringq: while encoding a {_describe(cls)} with the {codec.name} codec")
        raise
    return plan.topic, data, plan.tag


# -- consuming ----------------------------------------------------------------


def topics_for(tp: Any) -> list[str]:
    """The topics a handler for ``tp`` consumes.

    A class: ``[topic_for(cls)]``; a union: the distinct topics of its
    members, in order; ``bytes``, ``str``, ``dict`` and other builtin or
    non-class types: ``[DEFAULT_TOPIC]``.
    """
    topics: list[str] = []
    for member in _union_members(tp) or (tp,):
        cls = _target_class(member)
        topic = DEFAULT_TOPIC if cls is None or _is_untyped_class(cls) else topic_for(cls)
        if topic not in topics:
            topics.append(topic)
    return topics


def _undecodable(target: str, tag: str | None, cause: str | BaseException) -> UndecodableError:
    tagged = "" if tag is None else f" (type tag {tag!r})"
    if isinstance(cause, BaseException):
        cause = f"{type(cause).__name__}: {cause}"
    return UndecodableError(
        f"cannot decode payload as {target}{tagged}: {cause}", target=target, type_tag=tag
    )


def _body_decoder(tp: Any, codec: Codec) -> Callable[[bytes], Any]:
    if isinstance(codec, _BaseCodec):
        return codec._cached_decoder(tp)
    decode = codec.decode

    def body(data: bytes) -> Any:
        return decode(data, tp)

    return body


def _single_decoder(tp: Any, codec: Codec) -> Decoder:
    inner = _strip_annotated(tp)
    target = _describe(tp)
    if inner is bytes:

        def identity(data: bytes, tag: str | None) -> Any:
            return data

        return identity
    if inner is str:

        def utf8(data: bytes, tag: str | None) -> Any:
            try:
                return str(data, "utf-8")
            except UnicodeDecodeError as e:
                raise _undecodable(target, tag, e) from e

        return utf8
    body = _body_decoder(tp, codec)
    expected = _expected_tag(inner)
    if expected is None:

        def by_shape(data: bytes, tag: str | None) -> Any:
            try:
                return body(data)
            except Exception as e:
                raise _undecodable(target, tag, e) from e

        return by_shape

    def tagged(data: bytes, tag: str | None) -> Any:
        if tag is not None and tag != expected:
            raise _undecodable(target, tag, f"tagged as another type; {target} is {expected!r}")
        try:
            return body(data)
        except Exception as e:
            raise _undecodable(target, tag, e) from e

    return tagged


def _union_decoder(tp: Any, members: tuple[Any, ...], codec: Codec) -> Decoder:
    target = _describe(tp)
    by_tag: dict[str, Decoder] = {}
    untagged: list[Decoder] = []
    in_order: list[Decoder] = []
    for member in members:
        dec = _single_decoder(member, codec)
        in_order.append(dec)
        tag = _expected_tag(member)
        if tag is None:
            untagged.append(dec)
        elif tag in by_tag:
            raise TypeError(
                f"{target}: two members have the type tag {tag!r}; "
                f"give them distinct tags with @ringq.message(tag=...)"
            )
        else:
            by_tag[tag] = dec
    known = ", ".join(repr(t) for t in by_tag)

    def union(data: bytes, tag: str | None) -> Any:
        if tag is None:
            candidates = in_order
        else:
            found = by_tag.get(tag)
            candidates = untagged if found is None else [found, *untagged]
            if not candidates:
                raise _undecodable(target, tag, f"unknown type tag; expected one of {known}")
        if len(candidates) == 1:
            return candidates[0](data, tag)
        errors: list[UndecodableError] = []
        for dec in candidates:
            try:
                return dec(data, tag)
            except UndecodableError as e:
                errors.append(e)
        reasons = "; ".join(str(e) for e in errors)
        error = _undecodable(target, tag, f"no member accepted the payload: {reasons}")
        raise error from errors[-1]

    return union


def decoder_for(tp: Any, codec: Codec | None = None) -> Decoder:
    """Build the function ``(payload, type_tag) -> value of tp`` for a handler.

    ``tp`` is ``bytes``, ``str``, ``dict``/``dict[str, Any]``, a TypedDict, a
    dataclass, a msgspec Struct, a pydantic model, another type the codec
    supports, or a union of these (see the module docstring for how tags are
    used). Decoding failures raise ``UndecodableError``; a type the codec
    cannot handle raises ``TypeError`` here, at build time.
    """
    if codec is None:
        codec = _DEFAULT_CODEC
    members = _union_members(tp)
    if members is not None:
        return _union_decoder(tp, members, codec)
    return _single_decoder(tp, codec)

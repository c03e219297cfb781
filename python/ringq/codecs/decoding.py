"""Decoder planning: the function a handler decodes its messages with.

``decoder_for(tp)``, built once per handler, turns ``(payload, type tag from
the headers)`` back into ``tp``:

- ``bytes``: the payload itself; ``str``: UTF-8 (strict).
- dataclass, msgspec Struct, pydantic model (any class with a type tag): the
  payload is decoded with the codec, after checking the tag. A payload that
  carries *another* tag is undecodable even if its fields would fit: on a
  topic shared by several types, a handler for one of them must not silently
  read the others (type the handler with a union instead). A payload without
  a tag (raw bytes published with ``topic=``, another producer) is decoded by
  shape.
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
reason ``"undecodable"``. A type the codec cannot decode at all raises
``TypeError`` when the decoder is built, i.e. when the handler is registered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ringq.codecs.formats import DEFAULT_CODEC, BuiltinCodec, Codec
from ringq.codecs.identity import expected_tag
from ringq.codecs.typeforms import describe, strip_annotated, union_members
from ringq.errors import RingqError

__all__ = ["Decoder", "UndecodableError", "decoder_for"]

Decoder = Callable[[bytes, str | None], Any]


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


def _undecodable(target: str, tag: str | None, cause: str | BaseException) -> UndecodableError:
    tagged = "" if tag is None else f" (type tag {tag!r})"
    if isinstance(cause, BaseException):
        cause = f"{type(cause).__name__}: {cause}"
    return UndecodableError(
        f"cannot decode payload as {target}{tagged}: {cause}", target=target, type_tag=tag
    )


def _body_decoder(tp: Any, codec: Codec) -> Callable[[bytes], Any]:
    if isinstance(codec, BuiltinCodec):
        return codec.cached_decoder(tp)
    decode = codec.decode

    def body(data: bytes) -> Any:
        return decode(data, tp)

    return body


def _single_decoder(tp: Any, codec: Codec) -> Decoder:
    inner = strip_annotated(tp)
    target = describe(tp)
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
    expected = expected_tag(inner)
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
    target = describe(tp)
    by_tag: dict[str, Decoder] = {}
    untagged: list[Decoder] = []
    in_order: list[Decoder] = []
    for member in members:
        dec = _single_decoder(member, codec)
        in_order.append(dec)
        tag = expected_tag(member)
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
        codec = DEFAULT_CODEC
    members = union_members(tp)
    if members is not None:
        return _union_decoder(tp, members, codec)
    return _single_decoder(tp, codec)

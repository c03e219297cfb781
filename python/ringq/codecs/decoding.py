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

With an ``Encrypted`` codec the payload is opened first (every payload,
``bytes`` and ``str`` handlers' too); one that does not open (not sealed, an
unknown key, altered) is undecodable. ``handler_decoder`` is what the
dispatcher calls: it also refuses a payload whose ``CODEC_HEADER`` names
another codec than the handler's (a payload without one is decoded with
the handler's codec).

Every decoding failure (invalid JSON/MessagePack, wrong shape, failed pydantic
validation, unknown or mismatched tag, invalid UTF-8) raises
``UndecodableError`` naming the target type, the tag and the cause, with the
original exception chained; the dispatcher dead-letters such messages with
reason ``"undecodable"``. A type the codec cannot decode at all raises
``TypeError`` when the decoder is built, i.e. when the handler is registered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from ringq.codecs.envelope import Encrypted, SealError
from ringq.codecs.formats import DEFAULT_CODEC, BuiltinCodec, Codec
from ringq.codecs.identity import CODEC_HEADER, TYPE_HEADER, expected_tag
from ringq.codecs.typeforms import describe, strip_annotated, union_members
from ringq.errors import RingqError

__all__ = ["Decoder", "HeaderDecoder", "UndecodableError", "decoder_for", "handler_decoder"]

Decoder = Callable[[bytes, str | None], Any]
#: ``(payload, headers or None) -> value``: ``None`` when the dispatcher
#: skips reading the headers (``bytes``/``str`` handlers of the default codec).
HeaderDecoder = Callable[[bytes, Mapping[str, str] | None], Any]


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
    if isinstance(codec, Encrypted):
        return _opening(tp, codec)
    members = union_members(tp)
    if members is not None:
        return _union_decoder(tp, members, codec)
    return _single_decoder(tp, codec)


def _opening(tp: Any, codec: Encrypted) -> Decoder:
    """``decoder_for(tp, codec.inner)`` on what ``codec`` opens."""
    inner = decoder_for(tp, codec.inner)
    target = describe(tp)
    open_ = codec.open

    def opened(data: bytes, tag: str | None) -> Any:
        try:
            plain = open_(data)
        except SealError as e:
            raise _undecodable(target, tag, e) from e
        try:
            return inner(plain, tag)
        except UndecodableError as e:
            # A decoder's message may quote the decrypted payload (pydantic's
            # input_value=..., an enum's value), and dead letters are stored
            # unsealed: only the kind of failure is kept, with no chained
            # exception (raised outside this block: no context either).
            cause = e.__cause__
            kind = type(cause).__name__ if cause is not None else type(e).__name__
        raise _undecodable(
            target,
            tag,
            f"{kind} (its message is withheld: it may quote the decrypted payload)",
        )

    return opened


def handler_decoder(tp: Any, codec: Codec | None = None) -> HeaderDecoder:
    """``decoder_for(tp, codec)`` taking the message's headers: their type tag,
    and their ``CODEC_HEADER``, which must name ``codec`` if present."""
    base = decoder_for(tp, codec)
    want = (codec or DEFAULT_CODEC).name
    target = describe(tp)

    def decode(data: bytes, headers: Mapping[str, str] | None) -> Any:
        if headers is None:
            return base(data, None)
        tag = headers.get(TYPE_HEADER)
        got = headers.get(CODEC_HEADER)
        if got is not None and got != want:
            raise _undecodable(
                target, tag, f"encoded with the {got} codec; this handler decodes {want}"
            )
        return base(data, tag)

    return decode

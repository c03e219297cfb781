"""Publishing: an object as the payload bytes, topic and type tag it is
published with.

- ``bytes`` pass through unchanged (``bytearray`` / ``memoryview`` are copied
  to ``bytes``) and ``str`` is UTF-8, whatever the codec. They go to
  ``DEFAULT_TOPIC`` and carry no type tag.
- Any other object is encoded by the codec (JSON by default) and gets the
  identity of its class (``ringq.codecs.identity``): its topic and type tag,
  or ``DEFAULT_TOPIC`` and no tag for values of builtin types.

``outgoing_message`` is the one place where an encoded object's tag joins
its headers: what a handler's ``ctx.publish`` stages, as the backend takes it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ringq.backend import OutgoingMessage
from ringq.codecs.formats import DEFAULT_CODEC, Codec
from ringq.codecs.identity import DEFAULT_TOPIC, TYPE_HEADER, identity_of
from ringq.codecs.typeforms import describe

__all__ = ["encode", "encode_message", "outgoing_message"]


def encode(obj: object) -> tuple[str, bytes]:
    """Return ``(default_topic, payload)`` for ``obj`` with the default codec.

    ``bytes`` are returned as given, ``str`` as UTF-8, ``bytearray`` and
    ``memoryview`` copied to ``bytes``, all on ``DEFAULT_TOPIC``; objects as
    msgspec JSON on their type's topic (see ``encode_message``).
    """
    topic, data, _ = encode_message(obj)
    return topic, data


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
    if codec is None:
        codec = DEFAULT_CODEC
    cls = type(obj)
    ident = identity_of(cls)
    try:
        data = codec.encode(obj)
    except Exception as e:
        e.add_note(f"ringq: while encoding a {describe(cls)} with the {codec.name} codec")
        raise
    return ident.topic, data, ident.tag


def outgoing_message(
    payload: object,
    topic: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    dedup_key: str | None = None,
    delay: float | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> OutgoingMessage:
    """``payload`` encoded (``encode_message``, default codec) for the
    backend: on ``topic``, else its type's; its type tag added to a copy of
    ``headers``."""
    default_topic, data, tag = encode_message(payload)
    hdrs: dict[str, str] | None = dict(headers) if headers else None
    if tag is not None:
        hdrs = {**(hdrs or {}), TYPE_HEADER: tag}
    return OutgoingMessage(
        default_topic if topic is None else topic,
        data,
        dedup_key=dedup_key,
        delay=delay,
        headers=hdrs,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )

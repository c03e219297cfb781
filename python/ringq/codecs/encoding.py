"""Publishing: an object as the payload bytes, topic and type tag it is
published with.

- ``bytes`` pass through unchanged (``bytearray`` / ``memoryview`` are copied
  to ``bytes``) and ``str`` is UTF-8, whatever the codec. They go to
  ``DEFAULT_TOPIC`` and carry no type tag.
- Any other object is encoded by the codec (JSON by default) and gets the
  identity of its class (``ringq.codecs.identity``): its topic and type tag,
  or ``DEFAULT_TOPIC`` and no tag for values of builtin types.

With an ``Encrypted`` codec every payload is sealed, ``bytes`` and ``str``
too. A payload gets the ``CODEC_HEADER`` header naming its codec unless it
is the default JSON (or raw ``bytes``/``str`` under a codec that does not
encrypt: those are the bytes given, whatever the codec).

``outgoing_message`` is the one place where an encoded object's tag joins
its headers: what a handler's ``ctx.publish`` stages, as the backend takes it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ringq.backend import OutgoingMessage
from ringq.codecs.envelope import Encrypted
from ringq.codecs.formats import DEFAULT_CODEC, Codec
from ringq.codecs.identity import CODEC_HEADER, DEFAULT_TOPIC, TYPE_HEADER, identity_of
from ringq.codecs.typeforms import describe

__all__ = ["codec_label", "encode", "encode_message", "outgoing_message"]


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
    and have no tag, whatever the codec (sealed by an ``Encrypted`` one).
    Other objects are encoded with
    ``codec`` (default: JSON); an object of a class gets ``topic_for`` and
    ``type_tag`` of its class, a value of a builtin type (``dict``, ``list``,
    ...) gets ``DEFAULT_TOPIC`` and no tag. Encoding errors (e.g.
    ``TypeError`` for an unsupported type) propagate with a note.
    """
    raw = _raw(obj)
    if raw is not None:
        return DEFAULT_TOPIC, codec.seal(raw) if isinstance(codec, Encrypted) else raw, None
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


def _raw(obj: object) -> bytes | None:
    """The bytes of a ``bytes``/``str``/``bytearray``/``memoryview`` payload."""
    if isinstance(obj, bytes):
        return obj if type(obj) is bytes else bytes(obj)
    if isinstance(obj, str):
        return obj.encode()
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    return None


def codec_label(codec: Codec | None, raw: bool) -> str | None:
    """The ``CODEC_HEADER`` of a payload encoded with ``codec`` (``raw``: it
    was ``bytes``/``str``); ``None``: no header (default JSON, or raw bytes
    that no codec touched)."""
    if codec is None:
        return None
    if isinstance(codec, Encrypted):
        return codec.name
    if raw or codec.name == DEFAULT_CODEC.name:
        return None
    return codec.name


def outgoing_message(
    payload: object,
    topic: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    dedup_key: str | None = None,
    delay: float | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    priority: int | None = None,
    ordering_key: str | None = None,
    dedup_window: float | None = None,
    codec: Codec | None = None,
) -> OutgoingMessage:
    """``payload`` encoded (``encode_message`` with ``codec``, default JSON)
    for the backend: on ``topic``, else its type's; its type tag and codec
    label added to a copy of ``headers``."""
    default_topic, data, tag = encode_message(payload, codec)
    hdrs: dict[str, str] | None = dict(headers) if headers else None
    if tag is not None:
        hdrs = {**(hdrs or {}), TYPE_HEADER: tag}
    label = codec_label(codec, isinstance(payload, bytes | str | bytearray | memoryview))
    if label is not None:
        hdrs = {**(hdrs or {}), CODEC_HEADER: label}
    return OutgoingMessage(
        default_topic if topic is None else topic,
        data,
        dedup_key=dedup_key,
        delay=delay,
        headers=hdrs,
        correlation_id=correlation_id,
        causation_id=causation_id,
        priority=priority,
        ordering_key=ordering_key,
        dedup_window=dedup_window,
    )

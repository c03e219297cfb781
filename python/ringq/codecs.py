"""Turning Python objects into payload bytes.

The engine stores bytes only. ``bytes`` pass through, ``str`` is UTF-8, and
any other object is JSON-encoded with msgspec (dataclasses, msgspec Structs,
TypedDicts, dicts, lists, ...). An encoded object's default topic is its
type's qualified name, so each message type gets its own topic unless the
caller names one.
"""

import msgspec

__all__ = ["DEFAULT_TOPIC", "encode", "topic_for"]

DEFAULT_TOPIC = "default"

_json_encode = msgspec.json.Encoder().encode


def topic_for(cls: type) -> str:
    """The default topic of objects of type ``cls``: ``module.QualName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def encode(obj: object) -> tuple[str, bytes]:
    """Return ``(default_topic, payload)`` for ``obj``."""
    if isinstance(obj, bytes):
        return DEFAULT_TOPIC, obj if type(obj) is bytes else bytes(obj)
    if isinstance(obj, str):
        return DEFAULT_TOPIC, obj.encode()
    if isinstance(obj, bytearray | memoryview):
        return DEFAULT_TOPIC, bytes(obj)
    return topic_for(type(obj)), _json_encode(obj)

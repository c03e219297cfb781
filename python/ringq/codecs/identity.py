"""Message identity: the topic and the type tag of a message type.

- An object of a class is published to that class's topic (``topic_for``:
  the topic given to ``@ringq.message``, else ``module.QualName``) with its
  type tag (``type_tag``: the ``tag`` given to ``@ringq.message``, else
  ``module.QualName``) in the ``TYPE_HEADER`` header, which is what lets
  several types share one topic.
- Values of builtin types (``bytes``, ``str``, ``dict``, ``list``, ``int``,
  ``None``, the ``collections`` containers) carry no class identity: they go
  to ``DEFAULT_TOPIC`` without a tag. A TypedDict value *is* a plain
  ``dict`` at run time, so it is published the same way; publish it with
  ``topic=topic_for(MyTypedDict)`` (or the topic given to ``@ringq.message``)
  to reach a handler typed with that TypedDict.
- A handler consumes the topics of its message type (``topics_for``) and
  expects the tag of its class (``expected_tag``; ``None`` for types decoded
  by shape).

Default tags are ``module.QualName``, so renaming or moving a class changes
them; pin them with ``@ringq.message(tag="...")`` when producers and
consumers are deployed separately.

Registration (``@ringq.message``) applies to exactly the decorated class:
subclasses are not registered through their base (a subclass is another type
with its own default topic and tag). Applying it again replaces the earlier
registration. Registrations are kept in a weak mapping, so classes are never
modified nor kept alive.
"""

from __future__ import annotations

import dataclasses
import typing
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ringq.codecs.typeforms import describe, is_untyped_class, target_class, union_members

__all__ = [
    "CODEC_HEADER",
    "DEFAULT_TOPIC",
    "TYPE_HEADER",
    "Identity",
    "TopicWarning",
    "expected_tag",
    "identity_of",
    "message",
    "topic_for",
    "topics_for",
    "type_tag",
]

DEFAULT_TOPIC = "default"
TYPE_HEADER = "ringq-type"
#: The codec a payload was encoded with, when it is not the default JSON
#: (``msgpack``, ``pickle``, ``encrypted+json``, ...): a handler whose codec
#: differs finds the payload undecodable instead of misreading it.
CODEC_HEADER = "ringq-codec"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class _Registration:
    topic: str | None
    tag: str | None


_registry: weakref.WeakKeyDictionary[type, _Registration] = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """What objects of one class are published as: ``topic`` and ``tag``
    (``None`` for builtin types)."""

    topic: str
    tag: str | None


# Weak, so that classes created at run time are not kept alive; entries are
# dropped when @message (re)registers a class.
_identities: weakref.WeakKeyDictionary[type, Identity] = weakref.WeakKeyDictionary()


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
        if is_untyped_class(cls):
            raise TypeError(f"cannot register the builtin type {describe(cls)}")
        _registry[cls] = _Registration(topic, tag)
        _identities.pop(cls, None)
        return cls

    return register


class TopicWarning(UserWarning):
    """A handler's topic comes from a class defined in ``__main__`` (a
    script): the same class imported as a module has another topic
    (``module.QualName``), so messages published under one name would wait
    forever for a handler of the other. Name the topic:
    ``@ringq.message("orders.placed")`` on the class, or ``topic=``."""


def main_module_topics(topics: list[str]) -> list[str]:
    """The topics of ``topics`` that are derived from ``__main__`` classes."""
    return [t for t in topics if t.startswith("__main__.")]


def _default_name(cls: type) -> str:
    """``module.QualName``: a class's topic and tag unless registered otherwise."""
    return f"{cls.__module__}.{cls.__qualname__}"


def topic_for(cls: type) -> str:
    """The topic of objects of ``cls``: its ``@ringq.message`` topic, else ``module.QualName``."""
    reg = _registry.get(cls)
    if reg is not None and reg.topic is not None:
        return reg.topic
    return _default_name(cls)


def type_tag(cls: type) -> str:
    """The tag written in ``TYPE_HEADER`` for objects of ``cls``.

    Its ``@ringq.message`` tag, else ``module.QualName``. (Values of builtin
    types, TypedDicts included, are published without a tag.)
    """
    reg = _registry.get(cls)
    if reg is not None and reg.tag is not None:
        return reg.tag
    return _default_name(cls)


def identity_of(cls: type) -> Identity:
    """How objects of ``cls`` are published (cached per class)."""
    ident = _identities.get(cls)
    if ident is None:
        if is_untyped_class(cls):
            ident = Identity(DEFAULT_TOPIC, None)
        else:
            ident = Identity(topic_for(cls), type_tag(cls))
        _identities[cls] = ident
    return ident


def topics_for(tp: Any) -> list[str]:
    """The topics a handler for ``tp`` consumes.

    A class: ``[topic_for(cls)]``; a union: the distinct topics of its
    members, in order; ``bytes``, ``str``, ``dict`` and other builtin or
    non-class types: ``[DEFAULT_TOPIC]``.
    """
    topics: list[str] = []
    for member in union_members(tp) or (tp,):
        cls = target_class(member)
        topic = DEFAULT_TOPIC if cls is None or is_untyped_class(cls) else topic_for(cls)
        if topic not in topics:
            topics.append(topic)
    return topics


def expected_tag(tp: Any) -> str | None:
    """The tag a target's payloads carry, or ``None`` for targets decoded by shape."""
    cls = target_class(tp)
    if cls is None or is_untyped_class(cls) or typing.is_typeddict(cls):
        return None
    return type_tag(cls)

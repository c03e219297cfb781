"""Messages and codecs: turning Python objects into payload bytes and back.

The engine stores bytes only; this package decides what they are. Its
modules, each importing only those above it in this list:

- ``typeforms``: reading type expressions (unions, ``Annotated``, the class
  behind a generic, builtin types, pydantic models);
- ``identity``: a message type's topic and type tag (``@ringq.message``,
  ``topic_for``, ``type_tag``, ``topics_for``, ``DEFAULT_TOPIC``,
  ``TYPE_HEADER``);
- ``formats``: the codecs (``JsonCodec``, the default; ``MsgpackCodec``;
  ``PickleCodec``, which warns) behind the ``Codec`` protocol;
- ``envelope``: ``Encrypted``, AES-GCM around another codec, with key
  rotation;
- ``encoding``: publishing: an object as payload, topic and tag
  (``encode_message``);
- ``decoding``: a handler's decoder, built once per handler
  (``decoder_for``), and ``UndecodableError``.

Everything public is importable from ``ringq.codecs`` itself.
"""

from ringq.codecs.decoding import UndecodableError, decoder_for, handler_decoder
from ringq.codecs.encoding import encode, encode_message
from ringq.codecs.envelope import Encrypted, SealError
from ringq.codecs.formats import Codec, JsonCodec, MsgpackCodec, PickleCodec, PickleWarning
from ringq.codecs.identity import (
    CODEC_HEADER,
    DEFAULT_TOPIC,
    TYPE_HEADER,
    TopicWarning,
    message,
    topic_for,
    topics_for,
    type_tag,
)

__all__ = [
    "CODEC_HEADER",
    "DEFAULT_TOPIC",
    "TYPE_HEADER",
    "Codec",
    "Encrypted",
    "JsonCodec",
    "MsgpackCodec",
    "PickleCodec",
    "PickleWarning",
    "SealError",
    "TopicWarning",
    "UndecodableError",
    "decoder_for",
    "encode",
    "encode_message",
    "handler_decoder",
    "message",
    "topic_for",
    "topics_for",
    "type_tag",
]

# Users meet these as ``ringq.codecs.<Name>`` (reprs, pickles, a dead
# letter's error_type): that is where they live publicly.
for _cls in (
    Codec,
    Encrypted,
    JsonCodec,
    MsgpackCodec,
    PickleCodec,
    PickleWarning,
    SealError,
    TopicWarning,
    UndecodableError,
):
    _cls.__module__ = __name__
del _cls

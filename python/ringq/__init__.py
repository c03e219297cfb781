"""ringq: a durable, crash-safe message queue inside your Python process.

>>> import ringq
>>> with ringq.Queue("data/orders") as q:            # doctest: +SKIP
...     q.publish(b"hello")
...     [d] = q.checkout()
...     q.ack(d)
"""

from ringq import codecs, di
from ringq.aio import AsyncDeadLetterQueue, AsyncQueue
from ringq.backend import Backend, DeadLetter, Delivery, OutgoingMessage
from ringq.backends.local import ENGINE_VERSION as __version__
from ringq.codecs import (
    Codec,
    JsonCodec,
    MsgpackCodec,
    PickleCodec,
    PickleWarning,
    TopicWarning,
    UndecodableError,
    message,
)
from ringq.config import HandlerOptions, QueueOptions
from ringq.context import Cancelled, Context
from ringq.di import ResolutionError
from ringq.dlq import DeadLetterQueue
from ringq.errors import (
    BackendUnavailable,
    ConfigError,
    CorruptionError,
    ForeignDelivery,
    LeaseLost,
    LimitExceeded,
    NotFound,
    OwnerGone,
    QueueClosed,
    QueueForked,
    QueueFull,
    QueueLocked,
    RingqError,
    StorageError,
    VersionConflict,
)
from ringq.handlers import Handler
from ringq.queue import Message, Queue
from ringq.retry import Backoff, Retry

__all__ = [
    "AsyncDeadLetterQueue",
    "AsyncQueue",
    "Backend",
    "BackendUnavailable",
    "Backoff",
    "Cancelled",
    "Codec",
    "ConfigError",
    "Context",
    "CorruptionError",
    "DeadLetter",
    "DeadLetterQueue",
    "Delivery",
    "ForeignDelivery",
    "Handler",
    "HandlerOptions",
    "JsonCodec",
    "LeaseLost",
    "LimitExceeded",
    "Message",
    "MsgpackCodec",
    "NotFound",
    "OutgoingMessage",
    "OwnerGone",
    "PickleCodec",
    "PickleWarning",
    "Queue",
    "QueueClosed",
    "QueueForked",
    "QueueFull",
    "QueueLocked",
    "QueueOptions",
    "ResolutionError",
    "Retry",
    "RingqError",
    "StorageError",
    "TopicWarning",
    "UndecodableError",
    "VersionConflict",
    "__version__",
    "codecs",
    "di",
    "message",
]

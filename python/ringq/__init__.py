"""ringq: a durable, crash-safe message queue inside your Python process.

>>> import ringq
>>> with ringq.Queue("data/orders") as q:            # doctest: +SKIP
...     q.publish(b"hello")
...     [d] = q.checkout()
...     q.ack(d)
"""

from ringq._core import DeadLetter, Delivery
from ringq._core import __version__ as __version__
from ringq.dlq import DeadLetterQueue
from ringq.errors import (
    ConfigError,
    CorruptionError,
    LeaseLost,
    LimitExceeded,
    NotFound,
    QueueClosed,
    QueueFull,
    QueueLocked,
    RingqError,
    StorageError,
    VersionConflict,
)
from ringq.queue import Message, Queue

__all__ = [
    "ConfigError",
    "CorruptionError",
    "DeadLetter",
    "DeadLetterQueue",
    "Delivery",
    "LeaseLost",
    "LimitExceeded",
    "Message",
    "NotFound",
    "Queue",
    "QueueClosed",
    "QueueFull",
    "QueueLocked",
    "RingqError",
    "StorageError",
    "VersionConflict",
    "__version__",
]

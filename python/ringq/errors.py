"""The exceptions ringq raises.

They are defined in the Rust engine (``ringq._core``) so that the engine can
raise them directly; this module re-exports them under a stable name.

Hierarchy::

    RingqError                      root of every ringq error
    ├── QueueLocked                 another process owns the directory (.pid, .path)
    ├── QueueFull                   capacity reached (block=False or timeout ran out)
    ├── QueueClosed                 the queue was closed
    │   └── QueueForked             used in a fork() child of the process that opened it (.pid)
    ├── LeaseLost                   stale lease token on ack/nack/extend/release (.ids)
    │   └── ForeignDelivery         a delivery of another queue (or an earlier one at this path)
    ├── VersionConflict             expected_version mismatch (.expected, .actual)
    ├── LimitExceeded (ValueError)  payload, key, topic or headers too large
    ├── ConfigError (ValueError)    an option has an invalid value
    ├── CorruptionError             damaged journal/snapshot before valid data (.path, .offset)
    ├── StorageError (OSError)      write, fsync or file creation failed (.errno)
    └── NotFound (KeyError)         no message or dead letter with that id
"""

from ringq._core import (
    ConfigError,
    CorruptionError,
    ForeignDelivery,
    LeaseLost,
    LimitExceeded,
    NotFound,
    QueueClosed,
    QueueForked,
    QueueFull,
    QueueLocked,
    RingqError,
    StorageError,
    VersionConflict,
)

__all__ = [
    "ConfigError",
    "CorruptionError",
    "ForeignDelivery",
    "LeaseLost",
    "LimitExceeded",
    "NotFound",
    "QueueClosed",
    "QueueForked",
    "QueueFull",
    "QueueLocked",
    "RingqError",
    "StorageError",
    "VersionConflict",
]

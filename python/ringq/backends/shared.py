"""A queue directory shared by processes (``Queue(path, shared=True)``).

The first process to open the directory owns it: it runs the engine and
serves a Unix socket in the directory (``ringq.sock``, mode 0600; a Linux
abstract socket when the directory's path is too long for a socket
address), recorded in the file ``SOCKET``. Every later process that opens
it with ``shared=True`` is a client of the owner with the same operations;
only processes of the owner's user are served. The owner runs every request
in Rust, without Python's lock, so a busy owner's handlers are not slowed
by its clients.

A client that exits (or is killed) gives its leases back at once (the
messages are ready again, the delivery counted). When the owner exits, the
calls its clients have in flight raise ``ringq.OwnerGone`` (whether they
took effect is unknown, as with any lost connection); each client's next
call connects to the new owner or, if nobody owns the directory, takes it
over (recovery runs as for any open). The protocol: ``docs/protocol.md``.
"""

from __future__ import annotations

from typing import Any

from ringq import _core
from ringq.backend import Backend

__all__ = ["open_shared"]


def open_shared(path: str, **options: Any) -> Backend:
    """Opens ``path`` as its owner, or as a client of the process owning it.
    A client's options other than ``lease`` are the owner's: the owner's
    ``capacity``, ``durability`` and limits apply."""
    backend: Backend = _core.Engine(path, shared=True, **options)
    return backend

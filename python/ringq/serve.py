"""``ringq serve PATH``: a dedicated owner for a shared queue.

It opens ``PATH`` with ``shared=True``, refuses if another process already
owns it, logs where it listens, a stats line now and then, and closes the
queue cleanly on SIGTERM or SIGINT (clients' calls in flight then raise
``ringq.OwnerGone``; a restarted ``ringq serve`` recovers the directory and
they carry on).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from ringq.errors import CorruptionError, RingqError

__all__ = ["EXIT_DAMAGED", "EXIT_ERROR", "EXIT_OK", "EXIT_OWNED", "keeping_dead_letters", "serve"]

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_ERROR = 2
EXIT_OWNED = 3

log = logging.getLogger("ringq.serve")

#: The dead-letter capacity a queue opens with when none is given.
DEFAULT_DLQ_CAPACITY = 10_000


def keeping_dead_letters(path: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` with a ``dlq_capacity`` that holds every dead letter
    the directory at ``path`` has, and as many again as the default holds
    (unless one is given). The capacity is not stored in the directory: a
    tool that opened it with the default (10,000) made recovery drop the
    oldest dead letters past it, for good, as soon as anything was written.
    Give the application's own (``ringq serve --dlq-capacity``) to keep its
    bound."""
    out = dict(options or {})
    if out.get("dlq_capacity") is None and (Path(path) / "MANIFEST").is_file():
        from ringq.backends.local import inspect

        try:
            dead = int(inspect(path)["dead"])
        except (RingqError, ValueError, OSError):
            return out  # the open says what is wrong
        # Room for as many again as the default holds: dead letters that
        # come while it is open (in-flight messages judged at the open, a
        # long-running serve's clients) do not push the oldest out either.
        out["dlq_capacity"] = dead + DEFAULT_DLQ_CAPACITY
    return out


def serve(path: str, options: dict[str, Any], stats_every: float = 60.0) -> int:
    """Serves ``path`` until SIGTERM/SIGINT; returns the exit code."""
    from ringq.queue import Queue

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    if _locked_by_another(path):
        # Owned already: said at once (opening would wait up to 10 s for a
        # socket that a process without shared=True never writes).
        if (Path(path) / "SOCKET").is_file():
            log.error("%s is already served by another process (pid %s)", path, _owner(path))
        else:
            log.error(
                "%s is owned by another process (pid %s) that serves no socket (opened "
                "without shared=True, or still starting): stop it first",
                path,
                _owner(path),
            )
        return EXIT_OWNED
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            q = Queue(path, shared=True, **keeping_dead_letters(path, options))
        except CorruptionError as e:
            log.error("cannot open %s: %s", path, e)
            return EXIT_DAMAGED
        except (RingqError, ValueError, OSError) as e:
            log.error("cannot open %s: %s", path, e)
            return EXIT_ERROR
        try:
            if q.role != "owner":
                log.error("%s is already served by another process (pid %s)", path, _owner(path))
                return EXIT_OWNED
            log.info(
                "serving %s at %s (pid %d, durability %s)",
                path,
                q.backend.address,
                os.getpid(),
                q.backend.durability,
            )
            while not stop.wait(stats_every if stats_every > 0 else None):
                st = q.stats()
                log.info(
                    "clients %s, ready %s, in flight %s, delayed %s, dead %s",
                    st.get("shared_clients"),
                    st.get("ready"),
                    st.get("in_flight"),
                    st.get("delayed"),
                    st.get("dead"),
                )
        finally:
            q.close()
        log.info("closed %s", path)
        return EXIT_OK
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _locked_by_another(path: str) -> bool:
    """Whether another process holds the directory's ``LOCK`` (as the
    engine's ``lock::locked_by`` tests it: a shared ``flock`` refused)."""
    try:
        f = open(Path(path) / "LOCK", "rb")  # noqa: SIM115 - closed below
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _owner(path: str) -> str:
    """The pid in the directory's ``LOCK`` file (the owner's), or "unknown"."""
    try:
        return (Path(path) / "LOCK").read_text().strip() or "unknown"
    except OSError:
        return "unknown"

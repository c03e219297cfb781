"""What a handler's workers do when their checkout fails: wait, longer
each time, and try again, saying once that it went and once that it came
back.

A checkout fails when the queue cannot be reached (a Redis server that is
down or restarting, ``BackendUnavailable``; a shared queue's owner that
left, ``OwnerGone``, which the next call usually mends at once) or when the
engine reports a fault (a disk that refuses writes). None of these is the
handler's doing, so no message's attempt is spent on them: the worker
waits ``FIRST`` seconds, then twice as long after each failure in a row, at
most ``LONGEST``, and starts again at ``FIRST`` after a checkout that works.
The first failure of a run is logged as a warning (the error names the
server or directory); the ones after it only at debug level, so a server
that is down for an hour writes two lines, not seventy thousand. Messages
a worker holds when the server goes away come back after their lease, as
after any crash.
"""

from __future__ import annotations

import logging
import time

__all__ = ["FIRST", "LONGEST", "Outage"]

log = logging.getLogger("ringq.dispatch")

#: Seconds before the first retry of a failed checkout.
FIRST = 0.05
#: The longest wait between two retries, in seconds.
LONGEST = 5.0


class Outage:
    """The failures in a row of one worker's checkouts (a handler's name
    for the log)."""

    def __init__(self, handler: str) -> None:
        self.handler = handler
        self.failures = 0
        self.since = 0.0

    def failed(self, e: BaseException) -> float:
        """Records a failed checkout; returns how long to wait before the next."""
        if self.failures == 0:
            self.since = time.monotonic()
            log.warning(
                "handler %s: checkout failed (%s: %s); retrying with backoff (%.2g s to %.2g s)",
                self.handler,
                type(e).__name__,
                e,
                FIRST,
                LONGEST,
            )
        else:
            log.debug("handler %s: checkout failed again: %s", self.handler, e)
        wait = min(LONGEST, FIRST * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return wait

    def worked(self) -> None:
        """A checkout worked: the next failure starts a new run."""
        if self.failures:
            log.warning(
                "handler %s: checkout works again after %d failure(s) over %.1f s",
                self.handler,
                self.failures,
                time.monotonic() - self.since,
            )
            self.failures = 0

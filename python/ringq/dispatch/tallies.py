"""Per-worker tallies: what ``handler_stats()`` counts, and its histograms.

Each worker owns its ``Counters`` (and the lease monitor its own, for the
acks it sends for held batches), so the per-message path takes no lock;
``Pool.stats`` adds up those of the current workers and of the ones that
left. The histogram bounds are the engine's (``Backend.histograms()``), so
handler and engine histograms share their buckets and are defined once.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringq.backend import Backend

__all__ = ["Counters", "Histogram", "histogram_bounds"]


def histogram_bounds(backend: Backend) -> tuple[float, ...]:
    """The upper bounds (seconds) of the backend's histograms: every engine
    histogram has the same ones, the handler histograms take them too."""
    return tuple(backend.histograms()["fsync"]["buckets"])


class Histogram:
    """Bucket counts and a sum, owned by one worker (no lock needed)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @staticmethod
    def merged(bounds: tuple[float, ...], hs: list[Histogram]) -> dict[str, Any]:
        counts = [sum(h.counts[i] for h in hs) for i in range(len(bounds) + 1)]
        return {"buckets": bounds, "counts": counts, "sum": sum(h.total for h in hs)}


class Counters:
    """One worker's tallies (summed by ``stats``; no lock needed)."""

    SCALARS = (
        "dead_lettered",
        "failed",
        "late_acks",
        "processed",
        "retried",
        "succeeded",
        "undecodable",
    )
    __slots__ = (*SCALARS, "end_to_end", "handler_duration", "queue_wait")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.processed = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.undecodable = 0
        self.late_acks = 0
        #: Publish to handler start (for a retry: since the first publish),
        #: the handler's run time, and publish to success (handler returned
        #: and its ack handed to the engine or to the batch being acked).
        self.queue_wait = Histogram(bounds)
        self.handler_duration = Histogram(bounds)
        self.end_to_end = Histogram(bounds)

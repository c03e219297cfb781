"""The handler part of ``ringq demo``: order -> ship -> notify.

Three handlers chain through ``ctx.publish`` (committed with each ack). The
ship handler fails now and then: transient errors are retried with backoff,
a few orders fail for good (``ValueError``, listed in ``dead_letter_on``)
and land in the dead-letter queue. The queue directory is left behind for
``ringq inspect`` / ``ringq dlq list``.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import ringq

__all__ = ["ShopResult", "run_shop"]

TRANSIENT_FAILURE = 0.05  # share of ship attempts that fail and are retried
PERMANENT_FAILURE = 0.01  # share of orders that can never ship


@dataclass
class OrderPlaced:
    order_id: int
    amount: float


@dataclass
class ShipOrder:
    order_id: int


@dataclass
class NotifyCustomer:
    order_id: int
    placed_at: float


class TransientError(RuntimeError):
    """The carrier's API timed out (retried)."""


@dataclass
class ShopResult:
    orders: int
    notified: int = 0
    dead: int = 0
    retries: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(len(s) * p))]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


def run_shop(directory: Path, orders: int, console: Console, seed: int = 7) -> ShopResult:
    rng = random.Random(seed)
    doomed = {i for i in range(orders) if rng.random() < PERMANENT_FAILURE}
    result = ShopResult(orders)
    done = threading.Event()
    lock = threading.Lock()
    fast = ringq.Retry(max_attempts=4, backoff=ringq.Backoff.exponential(0.01, cap=0.1))

    def finished() -> None:
        if result.notified + result.dead >= orders:
            done.set()

    with ringq.Queue(directory, capacity=orders * 3 + 100) as q:

        @q.handler(OrderPlaced, max_parallelism=2)
        def on_order(msg: OrderPlaced, ctx: ringq.Context) -> None:
            ctx.publish(ShipOrder(msg.order_id))

        @q.handler(ShipOrder, max_parallelism=2, retry=fast, dead_letter_on=(ValueError,))
        def on_ship(msg: ShipOrder, ctx: ringq.Context) -> None:
            if msg.order_id in doomed:
                with lock:
                    result.dead += 1
                    finished()
                raise ValueError(f"order {msg.order_id}: no such address")
            if ctx.attempt == 1 and rng.random() < TRANSIENT_FAILURE:
                with lock:
                    result.retries += 1
                raise TransientError("carrier timed out")
            ctx.publish(NotifyCustomer(msg.order_id, ctx.enqueued_at))

        @q.handler(NotifyCustomer)
        def on_notify(msg: NotifyCustomer) -> None:
            with lock:
                result.latencies.append(time.time() - msg.placed_at)
                result.notified += 1
                finished()

        q.start()
        columns = (
            TextColumn("{task.description:10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("handlers", total=orders)
            t0 = time.perf_counter()
            for i in range(orders):
                q.publish(OrderPlaced(i, round(rng.uniform(5, 500), 2)))
            while not done.wait(0.1):
                bar.update(task, completed=result.notified + result.dead)
            result.seconds = time.perf_counter() - t0
            bar.update(task, completed=result.notified + result.dead)
        q.stop()
    return result

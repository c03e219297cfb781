"""A FastAPI app on ``ringq.AsyncQueue``: endpoints publish without blocking
the event loop, and ``async def`` handlers run beside the app on the same
loop.

    RINGQ_PATH=./data/shop uvicorn examples.fastapi_app.app:app

The lifespan opens the queue when the app starts and closes it when the app
stops. Closing stops the handlers: the running ones finish and are acked,
and the rest stay queued for the next start. ``POST /orders`` publishes an
``OrderPlaced`` (deduplicated by its order id). It waits for room when the
queue is full, and only that request waits: every other endpoint keeps
answering. The ``on_order`` handler stages a ``Receipt``, which is committed
with its ack; ``POST /receipts/take`` hands the receipts out (and acks them).

Settings (environment): ``RINGQ_PATH`` (required), ``RINGQ_CAPACITY``
(default 10000), ``RINGQ_DURABILITY`` (default ``always``),
``HANDLER_DELAY`` (seconds each order takes, default 0) and
``HANDLER_PARALLELISM`` (default 50; 0 starts with the handler paused).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import ringq
from fastapi import FastAPI, Request

__all__ = ["OrderPlaced", "Receipt", "app"]


@dataclass
class OrderPlaced:
    order_id: str
    amount: float


@dataclass
class Receipt:
    order_id: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    delay = float(os.environ.get("HANDLER_DELAY", "0"))
    parallelism = int(os.environ.get("HANDLER_PARALLELISM", "50"))
    q = await ringq.AsyncQueue.open(
        os.environ["RINGQ_PATH"],
        capacity=int(os.environ.get("RINGQ_CAPACITY", "10000")),
        durability=os.environ.get("RINGQ_DURABILITY", "always"),  # type: ignore[arg-type]
    )
    async with q:

        @q.handler(OrderPlaced, max_parallelism=max(1, parallelism))
        async def on_order(order: OrderPlaced, ctx: ringq.Context) -> None:
            await asyncio.sleep(delay)  # an HTTP call, a database write...
            ctx.publish(Receipt(order.order_id))  # committed with this message's ack

        q.start()
        if parallelism == 0:
            q.scale("on_order", 0)
        app.state.queue = q
        yield


app = FastAPI(lifespan=lifespan)


def queue_of(request: Request) -> ringq.AsyncQueue:
    q: ringq.AsyncQueue = request.app.state.queue
    return q


@app.post("/orders")
async def place_order(order: dict[str, Any], request: Request) -> dict[str, Any]:
    q = queue_of(request)
    msg = OrderPlaced(str(order["order_id"]), float(order["amount"]))
    # Waits (without blocking the loop) while the queue is full.
    mid = await q.publish(msg, dedup_key=msg.order_id, on_duplicate="keep", timeout=30)
    return {"id": mid}


@app.post("/receipts/take")
async def take_receipts(request: Request, limit: int = 100) -> dict[str, Any]:
    """Hands out the receipts made so far (a mailer would send them): each
    is acked, so it leaves the queue and frees its place."""
    q = queue_of(request)
    got = await q.checkout(ringq.codecs.topic_for(Receipt), max_messages=limit, timeout=0)
    if got:
        await q.ack(got)
    return {"receipts": [d.payload.decode() for d in got]}


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"ok": True}


@app.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    q = queue_of(request)
    handled = q.handler_stats().get("on_order", {})
    return {
        "queue": q.stats(),
        "topics": q.topic_stats(),
        "handled": {k: handled.get(k) for k in ("succeeded", "failed", "active", "workers")},
    }


@app.post("/handlers/{parallelism}")
async def scale(parallelism: int, request: Request) -> dict[str, Any]:
    queue_of(request).scale("on_order", parallelism)
    return {"on_order": parallelism}

"""A FastAPI app whose workers share one ringq queue.

Run it with several workers; every worker opens the same directory with
``shared=True`` (the first to start owns it and serves the others, or all of
them are clients of ``ringq serve``)::

    RINGQ_PATH=/var/lib/myapp/queue uvicorn examples.fastapi_shared:app --workers 4

``POST /orders`` publishes an ``OrderPlaced`` message to the topic
``orders`` and answers with its id; a separate process (or the same app's handlers) consumes them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import ringq
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool


@dataclass
class OrderPlaced:
    order_id: str
    amount: float


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    q = ringq.Queue(os.environ["RINGQ_PATH"], shared=True)
    app.state.queue = q
    try:
        yield
    finally:
        q.close()


app = FastAPI(lifespan=lifespan)


@app.post("/orders")
async def place_order(order: dict[str, Any], request: Request) -> dict[str, Any]:
    q: ringq.Queue = request.app.state.queue
    # publish may wait for the disk (or the owner): keep it off the event loop
    msg = OrderPlaced(str(order["order_id"]), float(order["amount"]))
    for tries_left in reversed(range(3)):
        try:
            mid = await run_in_threadpool(
                q.publish, msg, "orders", dedup_key=msg.order_id, on_duplicate="keep"
            )
            break
        except ringq.OwnerGone:
            # The worker that owned the queue went away mid-call (uvicorn
            # restarts a worker that misses its health check). Whether the
            # publish took effect is unknown; with the order id as dedup key
            # and on_duplicate="keep", publishing again keeps the first copy
            # while it is still queued (once consumed, the order is queued
            # again: at least once). The next call reaches the new owner.
            if not tries_left:
                raise
    return {"id": mid, "pid": os.getpid(), "role": q.role}


@app.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    q: ringq.Queue = request.app.state.queue
    return await run_in_threadpool(q.stats)

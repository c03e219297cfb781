"""A FastAPI app with ringq's admin endpoint mounted under /admin (served
by ``tests/test_asgi_admin.py`` under uvicorn)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import ringq
import ringq.asgi
from fastapi import FastAPI

queue = ringq.Queue(os.environ["RINGQ_PATH"])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    queue.close()


app = FastAPI(lifespan=lifespan)
app.mount("/admin", ringq.asgi.admin_app(queue, token=os.environ["ADMIN_TOKEN"]))


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}

"""A module that opens its queue at import and registers a process-pool
handler on it (the usual shape of an app module): in the worker process the
queue is inert."""

from __future__ import annotations

import os

import ringq
from proc_handlers import Job

q = ringq.Queue(os.environ.get("RINGQ_PROC_TEST_QDIR", "/nonexistent/only-for-the-test"))


@q.handler(Job, processes=1, retry=ringq.Retry(max_attempts=1))
def publishes_directly(job: Job, ctx: ringq.Context) -> None:
    q.publish(b"not from a worker process", "elsewhere")

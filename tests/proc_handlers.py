"""Module-level handlers for the process-pool tests (worker processes import
this module by name, so it must not be a test module with fixtures)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import ringq


@dataclass
class Job:
    n: int
    action: str = "ok"


class NotRetryable(Exception):
    """Listed in dead_letter_on."""


class Unpicklable(Exception):
    def __init__(self, lock: object) -> None:
        super().__init__("carries a lock")
        self.lock = lock

    def __reduce__(self) -> object:
        raise TypeError("cannot pickle this exception")


def spin(ms: float) -> int:
    """About ``ms`` of pure-Python CPU work."""
    end = time.perf_counter() + ms / 1000
    x = 0
    while time.perf_counter() < end:
        x += 1
    return x


def work(job: Job, ctx: ringq.Context) -> None:
    """Reports its process, and misbehaves as the job asks."""
    if job.action == "spin":
        spin(0.5)
    elif job.action == "crash" and ctx.attempt == 1:
        os._exit(7)
    elif job.action == "crash-always":
        os._exit(9)
    elif job.action == "hang" and ctx.attempt == 1:
        time.sleep(60)
    elif job.action == "heartbeat":
        for _ in range(6):
            time.sleep(0.3)
            ctx.heartbeat()
    elif job.action == "fail":
        raise ValueError(f"job {job.n} failed on attempt {ctx.attempt}")
    elif job.action == "dead":
        raise NotRetryable(f"job {job.n} is hopeless")
    elif job.action == "unpicklable":
        import threading

        raise Unpicklable(threading.Lock())
    elif job.action == "publish-mutated":
        # Changed after each publish: each message is as it was published.
        result = {"n": 0}
        for n in range(3):
            result["n"] = n
            ctx.publish(result, "results")
        return
    elif job.action == "publish-lock":
        import threading

        ctx.publish(threading.Lock(), "results")  # cannot reach the queue's process
        return
    elif job.action == "cancelled":
        # Waits for the lease to run out without a heartbeat, then notices.
        ctx.cancelled.wait(10)
        ctx.raise_if_cancelled()
    ctx.publish(
        {"n": job.n, "pid": os.getpid(), "attempt": ctx.attempt, "id": ctx.message_id},
        "results",
    )


def plain(job: Job) -> None:
    """Takes no context: nothing to stage."""
    spin(0.1)


def not_a_function_handler() -> object:
    return lambda job: None


@dataclass
class Sealed:
    """A message that decodes but cannot be pickled for a worker process."""

    n: int

    def __reduce__(self) -> object:
        raise TypeError("a Sealed message stays in its process")


def sealed_work(msg: Sealed) -> None:
    """Never runs: the message cannot reach a worker process."""

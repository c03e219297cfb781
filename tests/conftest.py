"""Shared fixtures: queues in temporary directories (on the wall clock or a
manual one) and real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ringq
from ringq.backend import Backend
from ringq.backends import open_backend

OpenQueue = Callable[..., ringq.Queue]
Spawn = Callable[..., subprocess.Popen[str]]


class ManualClockQueue(ringq.Queue):
    """A ``ringq.Queue`` whose engine reads a manual clock (test-only).

    The clock stands at the time the queue was opened until ``advance``
    moves it; ``advance`` also expires the leases and releases the delays
    that fell due on the way before it returns, so expiry and delays are
    tested without sleeping. A call's own ``timeout`` still counts real time.
    """

    def _open_backend(self, path: str | os.PathLike[str], settings: dict[str, object]) -> Backend:
        return open_backend(path, _manual_clock=True, **settings)

    def advance(self, seconds: float) -> float:
        """Moves the clock ``seconds`` forward; returns its time (epoch seconds)."""
        engine: Any = self.backend
        return float(engine._advance_clock(seconds))

    def now(self) -> float:
        """The clock's time (epoch seconds)."""
        return self.advance(0)


OpenManualQueue = Callable[..., ManualClockQueue]


@pytest.fixture
def qdir(tmp_path: Path) -> Path:
    """A queue directory that does not exist yet (the engine creates it)."""
    return tmp_path / "q"


@pytest.fixture
def open_queue(qdir: Path) -> Iterator[OpenQueue]:
    """Open ``ringq.Queue`` objects (default: on ``qdir``); all are closed at teardown."""
    opened: list[ringq.Queue] = []

    def _open(path: Path | str | None = None, **options: Any) -> ringq.Queue:
        q = ringq.Queue(qdir if path is None else path, **options)
        opened.append(q)
        return q

    yield _open
    for q in opened:
        if not q.closed:
            q.close()


@pytest.fixture
def open_manual_queue(qdir: Path) -> Iterator[OpenManualQueue]:
    """Like ``open_queue``, with a manual clock (``ManualClockQueue``)."""
    opened: list[ManualClockQueue] = []

    def _open(path: Path | str | None = None, **options: Any) -> ManualClockQueue:
        q = ManualClockQueue(qdir if path is None else path, **options)
        opened.append(q)
        return q

    yield _open
    for q in opened:
        if not q.closed:
            q.close()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``python -c CODE ARGS...`` with a text stdout pipe; killed at teardown."""
    children: list[subprocess.Popen[str]] = []

    def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        return child

    yield _spawn
    for child in children:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def read_line(child: subprocess.Popen[str]) -> str:
    """The child's next stdout line; fails the test if it exited instead."""
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.endswith("\n"), f"child exited (rc={child.wait()}) without printing"
    return line.rstrip("\n")


def kill_and_collect(child: subprocess.Popen[str]) -> list[str]:
    """SIGKILL the child and return the complete lines still in its pipe."""
    assert child.stdout is not None
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    return [line.rstrip("\n") for line in child.stdout if line.endswith("\n")]


def drain(q: ringq.Queue, topic: str = "default", lease: float = 600.0) -> list[ringq.Delivery]:
    """Check out every ready message of ``topic`` (without waiting)."""
    out: list[ringq.Delivery] = []
    while batch := q.checkout(topic, max_messages=1000, lease=lease, timeout=0):
        out.extend(batch)
    return out


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true or ``timeout``; for state changed by engine timers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def dir_size(path: Path) -> int:
    """Total size of the files under ``path`` (files the engine deletes meanwhile count 0)."""
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total

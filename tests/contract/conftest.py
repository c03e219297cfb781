"""How the contract suite reaches a backend.

Every test takes ``harness`` (or ``q``, a queue the harness opened with the
default options), which is parametrized over ``backend_kind``: one entry of
``BACKENDS`` per backend. Adding a backend is one factory function::

    def redis(place: Path, options: dict[str, Any]) -> Opened:
        '''A queue in a Redis namespace derived from ``place``.'''
        ...
        return Opened(queue, advance)

    BACKENDS["redis"] = redis

A factory opens a queue at ``place`` (a fresh directory per test; a backend
that is not a directory derives its own name from it, e.g. a Redis
namespace) with the given queue options, and returns it as an open
``ringq.Queue`` together with the way to move its clock: ``advance(seconds)``
moves the backend's clock forward, expires the leases and releases the
delays that fell due on the way before it returns, and returns the clock's
time (epoch seconds). Called again with the same ``place`` after the first
queue was closed, it reopens that queue. Time is only ever injected through
``advance``: no test here sleeps for a lease or a delay.

A backend that cannot give an item says so in ``docs/backends.md`` and marks
exactly that test: ``@pytest.mark.not_on("redis", reason="...")``.

Through ``ringq.AsyncQueue`` (when it lands): add an ``api`` parameter
(``"sync"``, ``"async"``) to ``harness`` below, and for ``"async"`` have
``Harness.open`` wrap the ``AsyncQueue`` in a blocking facade with
``Queue``'s methods (each awaitable run to completion on a loop thread).
Every test then runs through both APIs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import ManualClockQueue


@dataclass
class Opened:
    """What a backend factory returns."""

    queue: ringq.Queue
    #: Moves the queue's clock ``seconds`` forward (see the module docs).
    advance: Callable[[float], float]


Factory = Callable[[Path, dict[str, Any]], Opened]


def local(place: Path, options: dict[str, Any]) -> Opened:
    """The engine in this process, with a manual clock (``_manual_clock=True``)."""
    q = ManualClockQueue(place, **options)
    return Opened(q, q.advance)


class SharedClient(ringq.Queue):
    """A client of a shared queue whose owner (with a manual clock) lives in
    this process too: closing the client closes the owner, so a reopen is a
    real one (recovery included)."""

    owner: ManualClockQueue | None = None

    def close(self) -> None:
        super().close()
        if self.owner is not None and not self.owner.closed:
            self.owner.close()


def shared(place: Path, options: dict[str, Any]) -> Opened:
    """A client over the Unix socket of an owner (``shared=True``); the
    owner runs in this process (its server threads are Rust threads), with
    a manual clock."""
    owner = ManualClockQueue(place, shared=True, **options)
    assert owner.role == "owner"
    client = SharedClient(place, shared=True, **options)
    assert client.role == "client"
    client.owner = owner
    return Opened(client, owner.advance)


#: Every backend the contract runs against, by kind.
BACKENDS: dict[str, Factory] = {
    "local": local,
    "shared": shared,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "not_on(kind, reason): a contract item backend `kind` does not give"
    )


@pytest.fixture(params=sorted(BACKENDS))
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    for mark in request.node.iter_markers("not_on"):
        if kind in mark.args:
            pytest.skip(f"{kind}: {mark.kwargs.get('reason', 'see docs/backends.md')}")
    return kind


class Harness:
    """Queues of one backend kind at one place, each with a manual clock."""

    def __init__(self, kind: str, place: Path) -> None:
        self.kind = kind
        self.place = place
        self._factory = BACKENDS[kind]
        self._opened: list[Opened] = []

    def open(self, **options: Any) -> ringq.Queue:
        """Opens the queue (again, after ``close``: a reopen) with ``options``."""
        opened = self._factory(self.place, options)
        self._opened.append(opened)
        return opened.queue

    def advance(self, seconds: float) -> float:
        """Moves the clock of the queue opened last; returns its time."""
        return self._opened[-1].advance(seconds)

    def now(self) -> float:
        """The clock's time (epoch seconds) of the queue opened last."""
        return self.advance(0)

    def close_all(self) -> None:
        for opened in self._opened:
            if not opened.queue.closed:
                opened.queue.close()


@pytest.fixture
def harness(backend_kind: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(backend_kind, tmp_path / "q")
    yield h
    h.close_all()


@pytest.fixture
def q(harness: Harness) -> ringq.Queue:
    """A queue with the default options (lease 30 s, 5 attempts)."""
    return harness.open()


def at(t: float) -> Any:
    """Equal to the time ``t`` (epoch seconds) to the microsecond: the
    clock counts microseconds; sums of seconds round in the last bit."""
    return pytest.approx(t, abs=1e-6)


def drain(q: ringq.Queue, topic: str = "default", lease: float = 600.0) -> list[ringq.Delivery]:
    """Check out every ready message of ``topic`` (without waiting)."""
    out: list[ringq.Delivery] = []
    while batch := q.checkout(topic, max_messages=1000, lease=lease, timeout=0):
        out.extend(batch)
    return out


def dead_letter(q: ringq.Queue, payload: bytes, topic: str = "default", **publish: Any) -> str:
    """Publish one message and dead-letter it at once as non-retryable."""
    mid = q.publish(payload, topic, **publish)
    [d] = q.checkout(topic, timeout=0)
    assert d.id == mid
    q.backend.nack(d, error_message="bad", dead_letter_reason="non_retryable")
    return mid

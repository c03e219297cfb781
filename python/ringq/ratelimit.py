"""Rate limits: how fast a handler takes messages, as a token bucket.

``@q.handler(T, rate_limit="100/s")`` (or ``rate_limit = "100/s"`` on a
``ringq.Handler`` class, or ``RINGQ_HANDLER__<NAME>__RATE_LIMIT`` /
``rate_limit`` in a ``[handlers.<name>]`` table) lets that handler take at
most 100 messages a second, in bursts of up to 100. ``q.set_rate_limit(topic,
"10/s")`` sets the limit of a topic's handler at run time, over what the
handler declared (``"none"``: no limit; ``None``: the handler's own again).

A limit is ``"<count>/<period>"``: ``"100/s"``, ``"5/m"``, ``"1000/h"``,
``"1/100ms"``, ``"3/2s"`` (units ``ms``, ``s``, ``m`` or ``min``, ``h``; the
period's number is optional), with an optional ``", burst=<n>"``. The bucket
holds up to ``burst`` tokens (default: the count) and gains ``count /
period`` tokens a second; a worker checks a message out only with a token.
In any window of ``T`` seconds a topic's handler takes at most ``burst +
rate * T`` messages (and starts them within its batch time, ~5 ms: see
``ringq.dispatch.pool``). A ``q.checkout`` of your own is not limited.

**Where the tokens are taken.** A worker takes tokens *before* it checks
messages out: up to its batch size, waiting (without holding any lease)
until at least one is due, then checks out at most that many without
waiting and gives back the tokens it did not use. When nothing is ready it
gives them all back and waits for a message as usual; a message that arrives
while the bucket is empty is released (``Backend.release``: first in its
topic again, its delivery not counted) and the worker waits for a token. So
a rate-limited message never spends an attempt or a lease on the wait. A
token wait ends at once on ``stop()``, ``scale()`` down or when the worker
is abandoned, and looks at the limit again at least every ``MAX_WAIT``
seconds (a ``set_rate_limit`` applies within that). ``async def`` handlers
do the same, awaiting their tokens (``acquire_async``).

**Whose bucket.** One per topic, shared by every worker of the topic's
handler, and by every process where the backend allows:

- a queue directory owned by one process: a bucket in memory;
- a shared directory (``shared=True``): a 16-byte file ``ratelimit-<hash of
  the topic>`` in the directory (tokens and the time of the last refill, on
  ``CLOCK_MONOTONIC``), updated under ``fcntl.flock``, so every process of
  the directory (on one machine: the directory's socket already requires
  it) draws from one bucket;
- any backend with the optional method ``take_tokens(name, rate, burst, n)
  -> (granted, wait_seconds)`` (Redis: a Lua script on the key
  ``ringq:{ns}:rl:<topic>``, on the server's clock, which expires once the
  bucket would be full again): every client of the namespace shares it.
  ``n < 0`` gives ``-n`` tokens back. Backends without it get the bucket in
  memory (per process).

Every process of a topic should declare the same limit: each refills the
shared bucket at its own rate when it takes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ringq.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from ringq.backend import Backend

__all__ = [
    "MAX_WAIT",
    "NO_LIMIT",
    "FileBucket",
    "Gate",
    "MemoryBucket",
    "RateLimit",
    "RateLimits",
    "acquire",
    "acquire_async",
    "bucket_for",
    "parse_rate_limit",
    "take",
]

#: The longest single wait for a token, in seconds: a waiting worker looks
#: at the limit (and the shared bucket) again at least this often.
MAX_WAIT: Final = 0.5
#: Counts and bursts are at most this (a larger bucket is no limit at all).
MAX_COUNT: Final = 1_000_000_000
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SYNTAX: Final = re.compile(
    r"\s*(?P<count>\d+)\s*/\s*(?P<every>\d+(?:\.\d+)?)?\s*(?P<unit>ms|s|min|m|h)"
    r"\s*(?:,\s*burst\s*=\s*(?P<burst>\d+)\s*)?",
)
_FORMAT: Final = (
    'must be "<count>/<period>" like "100/s", "5/m", "1000/h" or "1/100ms", '
    'optionally with ", burst=<n>"; or "none"'
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` tokens a second, at most ``burst`` at once; ``text`` is how
    it was written (``str()`` gives it back)."""

    rate: float
    burst: int
    text: str

    def __str__(self) -> str:
        return self.text


class _NoLimit:
    """The explicit "no limit" (``"none"``), over a limit declared elsewhere."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_LIMIT"

    def __str__(self) -> str:
        return "none"


#: ``"none"``: no limit, even over one the handler declares.
NO_LIMIT: Final = _NoLimit()


def rate_limit_problem(value: object) -> tuple[RateLimit | _NoLimit | None, str | None]:
    """``(limit, None)`` for a valid ``value`` (a ``RateLimit``, a string, or
    ``None``), else ``(None, why)``."""
    if value is None or isinstance(value, RateLimit | _NoLimit):
        return value, None
    if not isinstance(value, str):
        return None, f"{_FORMAT}, not {type(value).__name__}"
    if value.strip().lower() in ("none", "off", "unlimited"):
        return NO_LIMIT, None
    m = _SYNTAX.fullmatch(value)
    if m is None:
        return None, _FORMAT
    count = int(m["count"])
    every = float(m["every"]) if m["every"] else 1.0
    burst = int(m["burst"]) if m["burst"] else count
    seconds = every * _UNITS[m["unit"]]
    if not 1 <= count <= MAX_COUNT:
        return None, f"the count must be 1..={MAX_COUNT:_}"
    if not 1 <= burst <= MAX_COUNT:
        return None, f"burst must be 1..={MAX_COUNT:_}"
    if not (math.isfinite(seconds) and 0.001 <= seconds <= 366 * 86400.0):
        return None, "the period must be 1 ms to a year"
    return RateLimit(count / seconds, burst, " ".join(value.split())), None


def parse_rate_limit(value: object, where: str) -> RateLimit | _NoLimit | None:
    """``value`` as a limit; ``ConfigError`` naming ``where`` (e.g.
    ``"handler 'on_order'"``) if it is not one."""
    limit, why = rate_limit_problem(value)
    if why is not None:
        raise ConfigError(f"{where}: rate_limit={value!r} ({why})")
    return limit


# -- the bucket ---------------------------------------------------------------


def take(
    tokens: float, last: float, now: float, rate: float, burst: float, n: int
) -> tuple[float, float, int, float]:
    """The token bucket, one step: ``(tokens, last)`` refilled from ``last``
    to ``now`` at ``rate`` up to ``burst``, then up to ``n`` whole tokens
    taken (``n < 0``: ``-n`` given back). Returns the new ``(tokens, last)``,
    how many were granted and, if none, how long until one is due. A clock
    that went back (a reboot under a shared file) restarts from ``now``."""
    if now > last:
        tokens = min(burst, tokens + (now - last) * rate)
    last = now
    if n < 0:
        return min(burst, tokens - n), last, 0, 0.0
    granted = max(0, min(n, math.floor(tokens + 1e-9)))
    tokens -= granted
    wait = 0.0 if granted or n == 0 else max(0.0, (1.0 - tokens) / rate)
    return tokens, last, granted, wait


class Bucket(Protocol):
    """Where a topic's tokens are kept."""

    #: Whether ``take`` may wait on the network (then async handlers run it
    #: in a worker thread).
    remote: bool

    def take(self, rate: float, burst: int, n: int) -> tuple[int, float]: ...


class MemoryBucket:
    """A bucket in this process (``clock``: seconds, monotonic)."""

    remote = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: float | None = None
        self._last = 0.0

    def take(self, rate: float, burst: int, n: int) -> tuple[int, float]:
        with self._lock:
            now = self._clock()
            if self._tokens is None:  # a new bucket is full
                self._tokens, self._last = float(burst), now
            self._tokens, self._last, granted, wait = take(
                self._tokens, self._last, now, rate, burst, n
            )
            return granted, wait


_STATE: Final = struct.Struct("<dd")


class FileBucket:
    """A bucket in a 16-byte file (tokens, last refill on ``clock``),
    updated under ``flock``: shared by the processes that open the same
    file. A file that is missing, short or holds nonsense is a full bucket
    (nothing is fsynced: after a power cut the bucket is full again)."""

    remote = False

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()  # flock does not exclude this process's threads
        self._fd: int | None = None

    def take(self, rate: float, burst: int, n: int) -> tuple[int, float]:
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fd = self._fd
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    raw = os.pread(fd, _STATE.size, 0)
                    now = self._clock()
                    tokens, last = _STATE.unpack(raw) if len(raw) == _STATE.size else (-1.0, 0.0)
                    if not (0.0 <= tokens <= MAX_COUNT and math.isfinite(last)):
                        tokens, last = float(burst), now
                    tokens, last, granted, wait = take(tokens, last, now, rate, burst, n)
                    os.pwrite(fd, _STATE.pack(tokens, last), 0)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as e:
                raise StorageError(
                    e.errno, f"rate limit bucket {self.path}: {e.strerror or e}"
                ) from e
            return granted, wait

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _BackendBucket:
    """A bucket the backend keeps (``take_tokens``)."""

    remote = True

    def __init__(self, take_tokens: Callable[[str, float, int, int], Any], name: str) -> None:
        self._take_tokens = take_tokens
        self._name = name

    def take(self, rate: float, burst: int, n: int) -> tuple[int, float]:
        granted, wait = self._take_tokens(self._name, rate, burst, n)
        return int(granted), float(wait)


def bucket_for(backend: Backend, topic: str) -> Bucket:
    """The bucket of ``topic`` on ``backend`` (see the module docstring)."""
    take_tokens = getattr(backend, "take_tokens", None)
    if callable(take_tokens):
        return _BackendBucket(take_tokens, topic)
    if backend.role in ("owner", "client"):
        digest = hashlib.sha256(topic.encode("utf-8", "surrogatepass")).hexdigest()[:24]
        path = os.path.join(os.path.realpath(backend.path), f"ratelimit-{digest}")
        return FileBucket(path)
    return MemoryBucket()


# -- a topic's limit and bucket -------------------------------------------------


class Gate:
    """The rate limit of one topic's handler in a queue: its bucket and
    its effective limit (a ``set_rate_limit`` over the declared one)."""

    def __init__(
        self, table: RateLimits, topic: str, declared: RateLimit | None, bucket: Bucket
    ) -> None:
        self._table = table
        self.topic = topic
        self.declared = declared
        self.bucket = bucket
        #: How many times a worker found no token and waited.
        self.waits = 0

    @property
    def limit(self) -> RateLimit | None:
        """What applies now (``None``: no limit)."""
        return self._table.limit(self.topic, self.declared)

    def take(self, n: int) -> tuple[int, float]:
        """Up to ``n`` tokens now: ``(granted, seconds until one is due)``."""
        limit = self.limit
        if limit is None:
            return n, 0.0
        return self.bucket.take(limit.rate, limit.burst, n)

    def give_back(self, n: int) -> None:
        """Returns ``n`` unused tokens (best effort: a failure is ignored)."""
        limit = self.limit
        if n > 0 and limit is not None:
            with contextlib.suppress(Exception):
                self.bucket.take(limit.rate, limit.burst, -n)

    async def take_async(self, n: int) -> tuple[int, float]:
        if self.bucket.remote and self.limit is not None:
            return await asyncio.to_thread(self.take, n)
        return self.take(n)

    async def give_back_async(self, n: int) -> None:
        if self.bucket.remote:
            await asyncio.to_thread(self.give_back, n)
        else:
            self.give_back(n)


class RateLimits:
    """A queue's rate limits by topic: what ``set_rate_limit`` set, and the
    gates of its handlers (``Queue._rate_limits``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, RateLimit | _NoLimit] = {}
        self._gates: dict[str, Gate] = {}

    def set(self, topic: str, value: object) -> None:
        """``topic``'s limit from now on (``"none"``: none; ``None``: the
        handler's declared one again)."""
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"set_rate_limit: topic must be a non-empty str, not {topic!r}")
        limit = parse_rate_limit(value, f"set_rate_limit({topic!r})")
        with self._lock:
            if limit is None:
                self._overrides.pop(topic, None)
            else:
                self._overrides[topic] = limit

    def limit(self, topic: str, declared: RateLimit | None) -> RateLimit | None:
        """What applies to ``topic``'s handler, whose own limit is
        ``declared`` (``None``: no limit)."""
        found = self._overrides.get(topic)
        if found is None:
            return declared
        return found if isinstance(found, RateLimit) else None

    def gate(self, topic: str, declared: RateLimit | _NoLimit | None, backend: Backend) -> Gate:
        """The gate of ``topic``'s handler (one per topic; ``declared`` is
        the handler's own limit)."""
        own = declared if isinstance(declared, RateLimit) else None
        with self._lock:
            gate = self._gates.get(topic)
            if gate is None:
                gate = self._gates[topic] = Gate(self, topic, own, bucket_for(backend, topic))
            else:
                gate.declared = own
            return gate


def acquire(gate: Gate, n: int, wake: threading.Condition, go_on: Callable[[], bool]) -> int:
    """Up to ``n`` tokens, waiting until at least one is due; 0 as soon as
    ``go_on()`` (checked with ``wake``'s lock held) is false. ``wake`` is
    notified on ``stop`` and ``scale``."""
    counted = False
    while True:
        granted, wait = gate.take(n)
        if granted:
            return granted
        if not counted:
            gate.waits += 1
            counted = True
        with wake:
            if not go_on():
                return 0
            wake.wait(min(MAX_WAIT, max(wait, 0.0005)))
            if not go_on():
                return 0


async def acquire_async(gate: Gate, n: int, wake: asyncio.Event, go_on: Callable[[], bool]) -> int:
    """``acquire`` on an event loop: waits without blocking it; ``wake`` is
    set on ``stop`` and ``scale``."""
    counted = False
    while True:
        granted, wait = await gate.take_async(n)
        if granted:
            return granted
        if not counted:
            gate.waits += 1
            counted = True
        if not go_on():
            return 0
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), min(MAX_WAIT, max(wait, 0.0005)))
        if not go_on():
            return 0

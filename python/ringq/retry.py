"""Retry policies: how long to wait before a failed message is delivered again.

A handler's ``Retry`` says how many deliveries a message gets
(``max_attempts``, counting the first) and how long it waits between them
(``backoff``). ``Retry.next_delay(attempt)`` is what the dispatcher asks
after the ``attempt``-th delivery failed: a delay in seconds, or ``None`` once
the attempts are used up. The engine holds the same ``max_attempts`` (the
dispatcher sets it as the topic's policy) and dead-letters the message itself,
as it does when a lease runs out (see ``ringq.dispatch.failures``).

Policies are immutable, hashable values, validated when they are built: a bad
field raises ``ringq.ConfigError`` naming every bad field at once.

>>> Retry(max_attempts=3, backoff=Backoff.fixed(2.0)).next_delay(1)
2.0
>>> Backoff.exponential(0.5, jitter=False).delay(4)      # 0.5 * 2**3
4.0
>>> Retry(max_attempts=3).next_delay(3) is None          # third delivery was the last
True
"""

from __future__ import annotations

import abc
import math
import random
from dataclasses import dataclass
from typing import Any, Final

from ringq.errors import ConfigError

__all__ = [
    "DEFAULT_BACKOFF",
    "MAX_SECONDS",
    "Backoff",
    "ExponentialBackoff",
    "FixedBackoff",
    "Retry",
]

MAX_SECONDS: Final = 365 * 24 * 3600.0
"""The longest duration, in seconds, that any ringq option or delay may have (365 days).

The engine keeps deadlines as microseconds since the epoch; this bound keeps
every deadline far inside that range, so a computed delay can always be handed
to the engine. An exponential backoff without a cap stops growing here.
"""

_RNG: Final = random.Random()
"""Jitter source when the caller passes no ``rng``."""


class _Problems:
    """Collects every bad field of one validation so the error can list them all.

    Shared with ``ringq.config``. ``labels`` renames dotted paths for display
    (``ringq.config`` uses it to name environment variables): the longest
    dotted prefix of a path found in ``labels`` is replaced by its label.
    """

    __slots__ = ("items", "labels")

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.items: list[str] = []
        self.labels: dict[str, str] = {} if labels is None else labels

    def label(self, path: str) -> str:
        head, rest = path, ""
        while True:
            if head in self.labels:
                return self.labels[head] + rest
            dot = head.rfind(".")
            if dot < 0:
                return path
            head, rest = head[:dot], head[dot:] + rest

    def add(self, path: str, value: object, reason: str) -> None:
        """Record ``path=value (reason)``."""
        self.items.append(f"{self.label(path)}={value!r} ({reason})")

    def note(self, path: str, reason: str) -> None:
        """Record ``path (reason)``: for problems that have no value (unknown, missing)."""
        self.items.append(f"{self.label(path)} ({reason})")

    def raise_if_any(self, what: str) -> None:
        if self.items:
            raise ConfigError(f"invalid {what}: " + "; ".join(self.items))

    def number(
        self,
        path: str,
        value: object,
        *,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = MAX_SECONDS,
        optional: bool = False,
        what: str = "a number of seconds",
    ) -> float | None:
        """``value`` as a finite float within the bounds, or ``None`` (and a problem).

        ``int`` and ``float`` are accepted; ``bool`` is not (``True`` is not a duration).
        With ``optional``, ``None`` is a valid value and is returned as is.
        """
        if value is None and optional:
            return None
        want = _number_range(ge, gt, le, what, optional)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(path, value, f"must be {want}, not {type(value).__name__}")
            return None
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        ok = (
            math.isfinite(v)
            and (ge is None or v >= ge)
            and (gt is None or v > gt)
            and (le is None or v <= le)
        )
        if ok:
            return v
        self.add(path, value, f"must be {want}")
        return None

    def integer(
        self,
        path: str,
        value: object,
        *,
        ge: int,
        le: int = 2**63 - 1,
        optional: bool = False,
    ) -> int | None:
        """``value`` as an ``int`` in ``ge..=le``, or ``None`` (and a problem).

        ``bool`` and ``float`` (even ``5.0``) are refused: a count is an integer.
        """
        if value is None and optional:
            return None
        want = ("None or " if optional else "") + (
            f"an int >= {ge}" if le == 2**63 - 1 else f"an int in {ge}..={le}"
        )
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, value, f"must be {want}, not {type(value).__name__}")
            return None
        if not ge <= value <= le:
            self.add(path, value, f"must be {want}")
            return None
        return int(value)

    def boolean(self, path: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.add(path, value, f"must be true or false, not {type(value).__name__}")
            return None
        return value


def _fmt(x: float) -> str:
    """``60`` rather than ``60.0``; ``31536000`` rather than ``3.1536e+07``."""
    return str(int(x)) if x.is_integer() else repr(x)


def _number_range(
    ge: float | None, gt: float | None, le: float | None, what: str, optional: bool
) -> str:
    """``"a number of seconds in 0..=31536000"`` and the like: the range a
    number must be in, phrased as the engine's argument checks phrase it."""
    lead = ("None or " if optional else "") + what
    if ge is not None and le is not None:
        return f"{lead} in {_fmt(ge)}..={_fmt(le)}"
    low = f">= {_fmt(ge)}" if ge is not None else f"> {_fmt(gt)}" if gt is not None else ""
    high = f"<= {_fmt(le)}" if le is not None else ""
    return " ".join(x for x in (lead, low, "and" if low and high else "", high) if x)


def check_seconds(
    name: str, value: object, *, optional: bool = False, positive: bool = False
) -> float | None:
    """A duration argument of a call, checked as the engine checks its own:
    ``TypeError`` for a non-number (``bool`` included), ``ValueError`` for
    NaN, infinities, negative (with ``positive``: 0 too) or more than
    ``MAX_SECONDS``."""
    if value is None and optional:
        return None
    p = _Problems()
    if positive:
        v = p.number(name, value, gt=0.0, optional=optional)
    else:
        v = p.number(name, value, ge=0.0, optional=optional)
    if v is None:
        msg = p.items[0]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(msg.replace(f"{name}={value!r} (", f"{name} ", 1).rstrip(")"))
        raise ValueError(msg)
    return v


def _check_fixed(p: _Problems, prefix: str, seconds: object) -> float | None:
    return p.number(prefix + "seconds", seconds, ge=0.0)


def _check_exponential(
    p: _Problems, prefix: str, initial: object, factor: object, cap: object, jitter: object
) -> tuple[float, float, float | None, bool] | None:
    """The normalized fields of an exponential backoff, or ``None`` if any is bad."""
    before = len(p.items)
    i = p.number(prefix + "initial", initial, ge=0.0)
    f = p.number(prefix + "factor", factor, ge=1.0, le=None, what="a number")
    c = p.number(prefix + "cap", cap, gt=0.0, optional=True)
    j = p.boolean(prefix + "jitter", jitter)
    if i is not None and c is not None and c < i:
        p.add(prefix + "cap", cap, f"must be >= initial={_fmt(i)}")
    if len(p.items) > before or i is None or f is None or j is None:
        return None
    return i, f, c, j


def _check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, not {type(attempt).__name__}")
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1 (deliveries are counted from 1), got {attempt}")


class Backoff(abc.ABC):
    """How long to wait before redelivering a message whose delivery failed.

    Build one with ``Backoff.fixed(seconds)`` or ``Backoff.exponential(initial,
    factor=2.0, cap=60.0, jitter=True)``. Backoffs are frozen, hashable values
    that compare by their fields. ``delay(attempt)`` is always finite, ``>= 0``
    and ``<= MAX_SECONDS``.
    """

    __slots__ = ()

    @staticmethod
    def fixed(seconds: float) -> FixedBackoff:
        """The same ``seconds`` (``>= 0``) before every redelivery."""
        return FixedBackoff(seconds)

    @staticmethod
    def exponential(
        initial: float, factor: float = 2.0, cap: float | None = 60.0, jitter: bool = True
    ) -> ExponentialBackoff:
        """``initial * factor**(attempt - 1)`` seconds, at most ``cap``, with equal jitter.

        ``initial >= 0``; ``factor >= 1``; ``cap >= initial`` and ``> 0``, or
        ``None`` for no cap of your own (the delay still stops at
        ``MAX_SECONDS``). See ``ExponentialBackoff`` for the jitter.
        """
        return ExponentialBackoff(initial, factor, cap, jitter)

    @abc.abstractmethod
    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before redelivery after the ``attempt``-th delivery failed.

        ``attempt`` counts deliveries from 1. ``rng`` is the source of jitter
        (default: a module-level ``random.Random``); pass a seeded one for
        reproducible delays.
        """

    @abc.abstractmethod
    def to_mapping(self) -> dict[str, Any]:
        """The mapping form of configuration files: ``{"kind": "fixed", "seconds": 1.0}``."""


@dataclass(frozen=True, slots=True, repr=False)
class FixedBackoff(Backoff):
    """``seconds`` before every redelivery, whatever the attempt."""

    seconds: float

    def __post_init__(self) -> None:
        p = _Problems()
        seconds = _check_fixed(p, "", self.seconds)
        p.raise_if_any("backoff options")
        object.__setattr__(self, "seconds", seconds)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        _check_attempt(attempt)
        return self.seconds

    def to_mapping(self) -> dict[str, Any]:
        return {"kind": "fixed", "seconds": self.seconds}

    def __repr__(self) -> str:
        return f"Backoff.fixed({self.seconds!r})"


@dataclass(frozen=True, slots=True, repr=False)
class ExponentialBackoff(Backoff):
    """Delays that grow by ``factor`` per attempt, up to ``cap``.

    Without jitter the delay after the ``attempt``-th failed delivery is
    ``d = min(initial * factor**(attempt - 1), cap)`` (``cap=None``: the limit
    is ``MAX_SECONDS``); it never decreases from one attempt to the next and
    huge attempts simply give the limit.

    With ``jitter=True`` it is **equal jitter**: uniform in ``[d / 2, d]``.
    Half the delay is kept, so a retry never comes back at once, while
    messages that failed together spread over the other half instead of
    returning in lockstep. (Full jitter, uniform in ``[0, d]``, spreads
    further but can retry immediately.)
    """

    initial: float
    factor: float = 2.0
    cap: float | None = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        p = _Problems()
        fields = _check_exponential(p, "", self.initial, self.factor, self.cap, self.jitter)
        p.raise_if_any("backoff options")
        assert fields is not None
        for name, value in zip(("initial", "factor", "cap", "jitter"), fields, strict=True):
            object.__setattr__(self, name, value)

    def ceiling(self, attempt: int) -> float:
        """The delay without jitter (the upper bound of the jittered delay)."""
        _check_attempt(attempt)
        limit = MAX_SECONDS if self.cap is None else self.cap
        n = attempt - 1
        if n == 0 or self.initial == 0.0 or self.factor == 1.0:
            return self.initial  # <= limit: validation keeps cap >= initial
        # Growth reaches the limit after `reach` steps. Comparing before
        # computing keeps huge attempts (10**6, 10**400) from overflowing.
        # (Logs of each side: `limit / initial` overflows for tiny initials.)
        reach = (math.log(limit) - math.log(self.initial)) / math.log(self.factor)
        if n >= reach:
            return limit
        try:
            d = self.initial * self.factor**n
        except OverflowError:  # only for initials near the float minimum
            d = math.exp(math.log(self.initial) + n * math.log(self.factor))
        return min(d, limit)  # `reach` may round up past the step that crosses the cap

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        d = self.ceiling(attempt)
        if not self.jitter:
            return d
        half = d / 2
        return min(d, half + half * (_RNG if rng is None else rng).random())

    def to_mapping(self) -> dict[str, Any]:
        return {
            "kind": "exponential",
            "initial": self.initial,
            "factor": self.factor,
            "cap": self.cap,
            "jitter": self.jitter,
        }

    def __repr__(self) -> str:
        return (
            f"Backoff.exponential({self.initial!r}, factor={self.factor!r}, "
            f"cap={self.cap!r}, jitter={self.jitter!r})"
        )


DEFAULT_BACKOFF: Final = Backoff.exponential(0.5, cap=60.0)
"""``Retry``'s default backoff: 0.5 s, 1 s, 2 s, ... up to 60 s, equal jitter."""


@dataclass(frozen=True, slots=True)
class Retry:
    """A handler's retry policy.

    ``max_attempts`` counts deliveries, the first included: ``1`` never
    retries, ``5`` (the default) means one delivery and up to four retries.
    ``backoff`` spaces the retries (default: exponential from 0.5 s, doubling,
    capped at 60 s, equal jitter).
    """

    max_attempts: int = 5
    backoff: Backoff = DEFAULT_BACKOFF

    def __post_init__(self) -> None:
        p = _Problems()
        p.integer("max_attempts", self.max_attempts, ge=1)
        if not isinstance(self.backoff, Backoff):
            p.add(
                "backoff",
                self.backoff,
                "must be a ringq.Backoff, e.g. Backoff.fixed(1.0) or Backoff.exponential(0.5)",
            )
        p.raise_if_any("retry options")

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float | None:
        """Seconds before the next delivery after the ``attempt``-th one failed.

        ``None`` when ``attempt >= max_attempts``: the message has had all its
        deliveries and goes to the dead-letter queue.
        """
        _check_attempt(attempt)
        if attempt >= self.max_attempts:
            return None
        return self.backoff.delay(attempt, rng)

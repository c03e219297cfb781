"""Periodic messages: ``q.every(interval_or_cron, message, name=...)``.

A schedule is one message on the internal topic ``ringq.schedules`` (a
*tick*), published with ``dedup_key=name`` (so a name has one tick) and
delayed until the fire time it stands for. Its payload (msgspec JSON) holds
the definition (an interval in microseconds or a cron string and its time
zone, the user's message already encoded: topic, payload bytes, headers, the
``catch_up`` policy) and that fire time. Nothing else is stored and nothing
polls: the backend's delay timers make the tick ready when it is due.

The queue's handlers include an internal one, named ``ringq.schedules``
(``q.handler_stats()`` shows it under that name), registered by the first
``every`` on a queue and run by ``q.start()`` like any other. When a tick
is delivered it is acked with follow-ups committed atomically with the ack
(``Backend.ack(..., publish=[...])``): the user's message(s) for this tick
and the next tick (same dedup key, delayed until the next fire time). A
crash before the ack publishes nothing and the tick comes back when its
lease runs out; after the ack both exist. So each fire time is published
exactly once, across restarts and crashes, on every backend.

Fire times and ``catch_up`` (when the tick is handled more than one period
after its fire time, e.g. the queue was down):

- ``"one"`` (default): one message stands for all the fire times that
  passed; its ``ringq-scheduled-for`` header is the latest of them and
  ``ringq-missed`` counts the earlier ones folded into it;
- ``"all"``: one message per fire time that passed, oldest first (at most
  ``CATCH_UP_LIMIT``, the most recent ones; ``ringq-missed`` on the first
  says how many older ones were left out);
- ``"none"``: nothing is published for them (the late tick included); the
  next fire time is the first one in the future.

A tick handled late by less than one period fires normally under every
policy. Each message carries the headers ``ringq-schedule`` (the name) and
``ringq-scheduled-for`` (ISO 8601, UTC) and the dedup key
``"<name>@<scheduled-for>"``.

**The first fire time** is set when the handler first sees the tick that
``every`` published (the engine's clock, not the caller's): an interval
fires one interval later, a cron string at its next match.

**Calling ``every`` again** with the same name (at every start) keeps the
pending tick and its fire time (``on_duplicate="keep"``). A *changed*
definition (another interval, cron, message, topic or policy) takes effect
at that pending fire time: that tick publishes the new message and the
fire times after it follow the new definition. It cannot take effect
sooner: a replace keeps a delayed message's due time and no backend can
move or remove a delayed message. Several processes may register the same
name: the newest registration (by wall-clock time of the ``every`` call)
wins, so a process still running old code does not undo a new one.

**``unschedule(name)``** removes the pending tick at once: it replaces it
with a tombstone (which supersedes a tick in flight: that one still
publishes its fire time, but no next tick) and cancels that (``q.cancel``).
A later ``every`` with that name brings it back.

Cron strings use croniter (5 fields, or 6 with seconds) in ``tz``
(default ``"UTC"``, any IANA name).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from ringq.backend import OutgoingMessage
from ringq.codecs.encoding import outgoing_message
from ringq.codecs.formats import DEFAULT_CODEC
from ringq.retry import MAX_SECONDS, Backoff, Retry

if TYPE_CHECKING:
    from ringq.context import Context
    from ringq.core import QueueCore

__all__ = [
    "CATCH_UP_LIMIT",
    "HANDLER_NAME",
    "MISSED_HEADER",
    "SCHEDULED_FOR_HEADER",
    "SCHEDULE_HEADER",
    "SCHEDULE_TOPIC",
    "CatchUp",
    "ScheduleInfo",
    "describe",
    "every",
    "unschedule",
]

log = logging.getLogger("ringq.schedules")

#: The internal topic that holds one tick per schedule.
SCHEDULE_TOPIC: Final = "ringq.schedules"
#: The internal handler's name (``q.handler_stats()``).
HANDLER_NAME: Final = "ringq.schedules"
#: On every message a schedule publishes: its fire time (ISO 8601, UTC).
SCHEDULED_FOR_HEADER: Final = "ringq-scheduled-for"
#: On every message a schedule publishes: the schedule's name.
SCHEDULE_HEADER: Final = "ringq-schedule"
#: Earlier fire times folded into this message (``catch_up="one"``) or left
#: out before it (``"all"`` past ``CATCH_UP_LIMIT``); absent when none.
MISSED_HEADER: Final = "ringq-missed"
#: At most this many messages for the fire times of one late tick (``"all"``).
CATCH_UP_LIMIT: Final = 1000
#: The internal handler's lease (seconds).
LEASE: Final = 60.0
#: Longest name (its per-tick dedup key adds about 35 characters).
MAX_NAME: Final = 512
#: The longest delay a tick is published with (``MAX_SECONDS``).
_MAX_DELAY_US: Final = round(MAX_SECONDS * 1e6)
#: A tick handled more than this before its fire time came early on
#: purpose (its fire time was past ``_MAX_DELAY_US``): it is staged again.
_EARLY_US: Final = 1_000_000

CatchUp = Literal["none", "one", "all"]
_POLICIES: Final = ("none", "one", "all")
_REGISTRY_ATTR: Final = "_ringq_schedules"


class Definition(msgspec.Struct, frozen=True, kw_only=True):
    """What a schedule publishes, and when."""

    every_us: int | None = None
    cron: str | None = None
    tz: str = "UTC"
    topic: str
    payload: bytes
    headers: dict[str, str] = {}
    catch_up: str = "one"


class Tick(msgspec.Struct, kw_only=True):
    """The payload of a schedule's message on ``SCHEDULE_TOPIC``."""

    v: int = 1
    name: str
    #: ``None``: a tombstone (``unschedule``).
    spec: Definition | None
    #: Wall-clock time of the ``every`` (or ``unschedule``) that set ``spec``.
    since: float
    #: The fire time this tick stands for (epoch microseconds); ``None``: the
    #: first tick, whose fire time is set when the handler first sees it.
    fire_at_us: int | None = None


_encode = msgspec.json.Encoder().encode
_decode_tick = msgspec.json.Decoder(Tick).decode


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One schedule as ``ringq schedules`` lists it."""

    name: str
    spec: str
    topic: str
    catch_up: str
    #: The next fire time (epoch seconds); ``None`` until the handler first
    #: sees the schedule, and for a removed one.
    next_fire: float | None
    state: str
    message_id: str


# -- the definition --------------------------------------------------------


def _parse_when(when: object) -> tuple[int | None, str | None]:
    """``(every_us, cron)`` from an interval (seconds or ``timedelta``) or a cron string."""
    if isinstance(when, str):
        from croniter import croniter  # type: ignore[import-untyped]

        expr = when.strip()
        fields = len(expr.split())
        if not expr or not croniter.is_valid(expr) or not (expr[0] == "@" or 5 <= fields <= 6):
            raise ValueError(
                f"every: {when!r} is not a cron expression (5 fields, or 6 with seconds) "
                "nor an interval in seconds"
            )
        return None, expr
    if isinstance(when, timedelta):
        seconds = when.total_seconds()
    elif isinstance(when, int | float) and not isinstance(when, bool):
        seconds = float(when)
    else:
        raise TypeError(
            f"every: the interval is seconds (a number or a timedelta) or a cron string, "
            f"not {type(when).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0.001 or seconds > 100 * 365 * 86400:
        raise ValueError(
            f"every: interval={seconds!r} (must be between 0.001 seconds and 100 years)"
        )
    return round(seconds * 1e6), None


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or "\0" in name:
        raise ValueError(
            f"every: name={name!r} (must be a non-empty str of at most {MAX_NAME} "
            "characters without NUL)"
        )
    return name


def definition(
    when: object,
    message: object,
    *,
    topic: str | None,
    catch_up: str,
    headers: dict[str, str] | None,
    tz: str,
    codec: Any,
) -> Definition:
    """Checks the arguments of ``every`` and encodes ``message`` as the
    queue would publish it (its codec, its type's topic and tag)."""
    every_us, cron = _parse_when(when)
    if catch_up not in _POLICIES:
        raise ValueError(f"every: catch_up={catch_up!r} (must be one of {', '.join(_POLICIES)})")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as e:
        raise ValueError(f"every: tz={tz!r} is not a time zone name ({e})") from e
    out = outgoing_message(message, topic, headers=headers, codec=codec)
    if out.topic == SCHEDULE_TOPIC:
        raise ValueError(f"every: topic {SCHEDULE_TOPIC!r} is ringq's own")
    d = Definition(
        every_us=every_us,
        cron=cron,
        tz=tz,
        topic=out.topic,
        payload=out.payload,
        headers=dict(out.headers),
        catch_up=catch_up,
    )
    if cron is not None:
        # A valid expression may name no date at all ("0 0 30 2 *"): said
        # here, not by every tick of a schedule that can never fire.
        from croniter import CroniterError

        try:
            first_fire(d, round(time.time() * 1e6))
        except CroniterError as e:
            raise ValueError(f"every: {cron!r} names no time that ever comes ({e})") from e
    return d


def spec_text(d: Definition) -> str:
    """The definition's timing as a person reads it."""
    if d.cron is not None:
        return d.cron if d.tz == "UTC" else f"{d.cron} ({d.tz})"
    assert d.every_us is not None
    return f"every {d.every_us / 1e6:g}s"


# -- fire times ------------------------------------------------------------


def _cron_iter(d: Definition, at_us: int) -> Any:
    from croniter import croniter

    assert d.cron is not None
    start = datetime.fromtimestamp(at_us / 1e6, ZoneInfo(d.tz))
    return croniter(d.cron, start)


def _to_us(dt: datetime) -> int:
    return round(dt.timestamp() * 1e6)


def first_fire(d: Definition, now_us: int) -> int:
    """The first fire time of a new schedule, handled at ``now_us``."""
    if d.every_us is not None:
        return now_us + d.every_us
    return _to_us(_cron_iter(d, now_us).get_next(datetime))


def due_fires(d: Definition, fire_us: int, now_us: int, limit: int) -> tuple[list[int], int, int]:
    """For a tick standing for ``fire_us`` handled at ``now_us``: the fire
    times due (``fire_us`` and those after it up to ``now_us``; the most
    recent ``limit`` of them, oldest first), how many due ones were left
    out, and the next fire time (the first after ``now_us``)."""
    if now_us < fire_us:  # handled early (another clock): it stands for itself
        now_us = fire_us
    if d.every_us is not None:
        step = d.every_us
        count = (now_us - fire_us) // step + 1
        last = fire_us + (count - 1) * step
        kept = min(count, limit)
        return [last - k * step for k in range(kept - 1, -1, -1)], count - kept, last + step
    it = _cron_iter(d, now_us)
    nxt = _to_us(it.get_next(datetime))
    # Walk back from the next fire time: the due ones, newest first.
    back = _cron_iter(d, nxt)
    due: list[int] = []
    while True:
        t = _to_us(back.get_prev(datetime))
        if t < fire_us:
            break
        if len(due) == limit:
            # There are more: count them only roughly (at least one more).
            return [*reversed(due)], 1, nxt
        due.append(t)
    if (not due or due[-1] != fire_us) and len(due) < limit:
        # The tick's own time is off the grid (a changed definition): it counts too.
        due.append(fire_us)
    return [*reversed(due)], 0, nxt


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


# -- the handler -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Registered:
    spec: Definition
    since: float


class _Registry:
    """The schedules this process registered on one queue (newest wins)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_name: dict[str, _Registered] = {}
        #: Names this process removed, with when (wall clock).
        self.removed: dict[str, float] = {}


def _registry(q: QueueCore) -> _Registry:
    """The queue's registry; the first call registers the internal handler."""
    reg: _Registry | None = q.__dict__.get(_REGISTRY_ATTR)
    if reg is not None:
        return reg
    reg = _Registry()
    handler = _make_handler(reg)
    if HANDLER_NAME not in q.handlers:
        q.handler(
            bytes,
            name=HANDLER_NAME,
            topic=SCHEDULE_TOPIC,
            timeout=LEASE,
            # A tick that cannot be published (a full queue, a server that is
            # down) is tried again for a long while: dead-lettered, the
            # schedule would stop (``dlq replay`` brings it back).
            retry=Retry(max_attempts=1000, backoff=Backoff.exponential(0.5, cap=60.0)),
            dead_letter_on=(msgspec.DecodeError,),
            codec=DEFAULT_CODEC,
        )(handler)
    q.__dict__[_REGISTRY_ATTR] = reg
    return reg


def _now_us(ctx: Context) -> int:
    """The backend's time now: the lease deadline less the lease (the
    engine's clock, which tests move by hand)."""
    lease = getattr(ctx, "_lease", LEASE)
    return round((ctx.deadline - lease) * 1e6)


def _capacity(ctx: Context) -> int | None:
    """The queue's capacity (``None`` if its backend does not say)."""
    try:
        capacity = ctx._backend.stats().get("capacity")
    except Exception:  # the tick goes on as if unbounded (its ack says what is wrong)
        return None
    return capacity if isinstance(capacity, int) and capacity > 0 else None


def _stage(ctx: Context, items: list[OutgoingMessage]) -> None:
    """Stages already encoded messages with the ack (``ctx.publish`` would
    encode them again)."""
    if not items:
        return
    if ctx._staged is None:
        ctx._staged = list(items)
    else:
        ctx._staged.extend(items)


def _next_tick(
    name: str, spec: Definition, since: float, fire_us: int, now_us: int
) -> OutgoingMessage:
    """The tick for ``fire_us``. A fire time past the longest delay (365
    days: a long interval, a cron date years apart) is reached in steps:
    the tick comes early and is staged again (``_EARLY_US``)."""
    tick = Tick(name=name, spec=spec, since=since, fire_at_us=fire_us)
    return OutgoingMessage(
        SCHEDULE_TOPIC,
        _encode(tick),
        dedup_key=name,
        delay=min(max(fire_us - now_us, 1), _MAX_DELAY_US) / 1e6,
    )


def _messages(
    name: str, spec: Definition, fires: list[int], missed: int, cause: str
) -> list[OutgoingMessage]:
    out: list[OutgoingMessage] = []
    for i, us in enumerate(fires):
        iso = _iso(us)
        headers = {**spec.headers, SCHEDULE_HEADER: name, SCHEDULED_FOR_HEADER: iso}
        if missed and i == 0:
            headers[MISSED_HEADER] = str(missed)
        out.append(
            OutgoingMessage(
                spec.topic,
                spec.payload,
                dedup_key=f"{name}@{iso}",
                headers=headers,
                causation_id=cause,
            )
        )
    return out


def _make_handler(reg: _Registry) -> Any:
    def on_tick(payload: bytes, ctx: Context) -> None:
        tick = _decode_tick(payload)
        name = tick.name
        now_us = _now_us(ctx)
        with reg.lock:
            mine = reg.by_name.get(name)
        spec, since = tick.spec, tick.since
        fresh = tick.fire_at_us is None
        if mine is not None and mine.since > since and mine.spec != spec:
            if spec is None:
                fresh = True  # registered again after it was removed
            else:
                log.info("schedule %s: definition changed, in effect from this tick", name)
            spec, since = mine.spec, mine.since
        if spec is None:
            return  # removed: ack, publish nothing
        if fresh:
            _stage(ctx, [_next_tick(name, spec, since, first_fire(spec, now_us), now_us)])
            return
        assert tick.fire_at_us is not None
        if tick.fire_at_us - now_us > _EARLY_US:
            # Its fire time was past the longest delay: the next step.
            if not ctx.superseded:
                _stage(ctx, [_next_tick(name, spec, since, tick.fire_at_us, now_us)])
            return
        policy = spec.catch_up
        limit = 1 if policy == "none" else CATCH_UP_LIMIT
        fires, left_out, nxt = due_fires(spec, tick.fire_at_us, now_us, limit)
        if policy == "one":
            missed = len(fires) - 1 + left_out
            out = _messages(name, spec, fires[-1:], missed, ctx.message_id)
        elif policy == "all":
            capacity = _capacity(ctx) if len(fires) > 1 else None
            if capacity is not None and len(fires) + 1 > capacity:
                # More than the queue can ever hold with the next tick (the
                # ack frees the tick's own place): the newest that fit, the
                # rest counted, as past ``CATCH_UP_LIMIT``. All of them made
                # an ack that could never fit, retried until dead-lettered.
                keep = max(1, capacity - 1)
                left_out += len(fires) - keep
                fires = fires[-keep:]
            out = _messages(name, spec, fires, left_out, ctx.message_id)
        else:  # "none": only an on-time tick fires
            on_time = len(fires) == 1 and left_out == 0
            out = _messages(name, spec, fires, 0, ctx.message_id) if on_time else []
        if not ctx.superseded:
            # Superseded: a newer message holds the name (``unschedule``) and
            # carries on from here. Superseded after this check, before the
            # ack: the backend drops the next tick (an ack's follow-up that
            # repeats the key of the superseded message it acks).
            out.append(_next_tick(name, spec, since, nxt, now_us))
        _stage(ctx, out)

    on_tick.__name__ = on_tick.__qualname__ = "ringq_schedules"
    return on_tick


# -- the API ---------------------------------------------------------------


def _register(
    q: QueueCore,
    when: object,
    message: object,
    *,
    topic: str | None,
    name: str,
    catch_up: str,
    headers: dict[str, str] | None,
    tz: str,
) -> bytes:
    _check_name(name)
    spec = definition(
        when,
        message,
        topic=topic,
        catch_up=catch_up,
        headers=headers,
        tz=tz,
        codec=getattr(q, "_codec", None),
    )
    reg = _registry(q)
    since = time.time()
    with reg.lock:
        reg.by_name[name] = _Registered(spec, since)
        reg.removed.pop(name, None)
    return _encode(Tick(name=name, spec=spec, since=since))


def every(
    q: QueueCore,
    when: object,
    message: object,
    *,
    topic: str | None = None,
    name: str,
    catch_up: str = "one",
    headers: dict[str, str] | None = None,
    tz: str = "UTC",
) -> str:
    """``QueueCore.every``: see the module docs. Returns the id of the
    message that holds the schedule."""
    payload = _register(
        q, when, message, topic=topic, name=name, catch_up=catch_up, headers=headers, tz=tz
    )
    return q.backend.publish(payload, SCHEDULE_TOPIC, dedup_key=name, on_duplicate="keep")


def _tombstone(q: QueueCore, name: str) -> bytes:
    _check_name(name)
    reg = _registry(q)
    since = time.time()
    with reg.lock:
        reg.by_name.pop(name, None)
        reg.removed[name] = since
    return _encode(Tick(name=name, spec=None, since=since))


def unschedule(q: QueueCore, name: str) -> None:
    """``QueueCore.unschedule``: the pending tick of ``name`` is removed and
    no message of it is published after a tick in flight now (see the
    module docs)."""
    q.cancel(q.backend.publish(_tombstone(q, name), SCHEDULE_TOPIC, dedup_key=name))


# -- listing ---------------------------------------------------------------


def describe(message_id: str, state: str, payload: bytes) -> ScheduleInfo:
    """A tick (as ``ringq peek`` reads it) as ``ringq schedules`` lists it."""
    tick = _decode_tick(payload)
    if tick.spec is None:
        return ScheduleInfo(tick.name, "", "", "", None, "removed", message_id)
    nxt = None if tick.fire_at_us is None else tick.fire_at_us / 1e6
    shown = state if tick.fire_at_us is not None else "new"
    if state == "in_flight":
        shown = "firing"
    return ScheduleInfo(
        tick.name,
        spec_text(tick.spec),
        tick.spec.topic,
        tick.spec.catch_up,
        nxt,
        shown,
        message_id,
    )

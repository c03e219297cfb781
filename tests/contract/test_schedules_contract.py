"""Periodic messages (``q.every``, ``ringq.schedules``): a schedule is one
delayed message on ``ringq.schedules`` keyed by its name; the queue's
handlers ack each tick with the tick's message(s) and the next tick as
follow-ups, so each fire time is published exactly once; ticks handled more
than a period late follow ``catch_up``; calling ``every`` again keeps the
pending fire time; ``unschedule`` ends it. Time only moves by ``advance``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import ringq
from conftest import wait_until
from ringq import schedules
from ringq.schedules import (
    MISSED_HEADER,
    SCHEDULE_HEADER,
    SCHEDULE_TOPIC,
    SCHEDULED_FOR_HEADER,
)

from .conftest import AsyncFacade, Harness, at, drain


def every(q: Any, *args: Any, **kw: Any) -> str:
    """``q.every`` through the API under test (awaited for ``AsyncQueue``)."""
    if isinstance(q, AsyncFacade):
        mid: str = q._run(q.aq.every(*args, **kw))
        return mid
    mid = q.every(*args, **kw)
    return mid


def unschedule(q: Any, name: str) -> None:
    if isinstance(q, AsyncFacade):
        q._run(q.aq.unschedule(name))
    else:
        q.unschedule(name)


def settled(q: Any, pending: int = 1) -> bool:
    """The schedules' ticks wait for their fire times (none being handled)."""
    s = q.topic_stats().get(SCHEDULE_TOPIC, {})
    return (s.get("ready", 0), s.get("in_flight", 0), s.get("delayed", 0)) == (0, 0, pending)


def wait_settled(q: Any, pending: int = 1) -> None:
    assert wait_until(lambda: settled(q, pending), 10), q.topic_stats()


def ready(q: Any, topic: str) -> int:
    n: int = q.topic_stats().get(topic, {}).get("ready", 0)
    return n


def fired_at(d: ringq.Delivery) -> float:
    return datetime.fromisoformat(d.headers[SCHEDULED_FOR_HEADER]).timestamp()


def test_an_interval_publishes_once_per_period(harness: Harness) -> None:
    q = harness.open()
    every(q, 10.0, b"tick", topic="ticks", name="t")
    q.start()
    wait_settled(q)
    t0 = harness.now()  # the first fire time is one interval after the handler saw it
    for k in (1, 2, 3):
        harness.advance(10.0)
        assert wait_until(lambda k=k: ready(q, "ticks") == k and settled(q), 10)
    harness.advance(5.0)
    wait_settled(q)
    q.stop()
    ds = drain(q, "ticks")
    assert [fired_at(d) for d in ds] == [at(t0 + 10), at(t0 + 20), at(t0 + 30)]
    assert {d.payload for d in ds} == {b"tick"}
    assert {d.headers[SCHEDULE_HEADER] for d in ds} == {"t"}
    assert [d.dedup_key for d in ds] == [f"t@{d.headers[SCHEDULED_FOR_HEADER]}" for d in ds]
    assert "ringq.schedules" in (
        q.aq.handler_stats() if isinstance(q, AsyncFacade) else q.handler_stats()
    )


@pytest.mark.parametrize("policy", ["none", "one", "all"])
def test_ticks_missed_while_no_handler_ran_follow_catch_up(harness: Harness, policy: str) -> None:
    q = harness.open()
    every(q, 10.0, b"tick", topic="ticks", name="t", catch_up=policy)
    q.start()
    wait_settled(q)
    t0 = harness.now()
    q.stop()
    harness.advance(35.0)  # fire times t0+10, +20, +30 pass while nothing runs
    q.start()
    wait_settled(q)
    ds = drain(q, "ticks")
    if policy == "all":
        assert [fired_at(d) for d in ds] == [at(t0 + 10), at(t0 + 20), at(t0 + 30)]
        assert all(MISSED_HEADER not in d.headers for d in ds)
    elif policy == "one":
        assert [fired_at(d) for d in ds] == [at(t0 + 30)]
        assert ds[0].headers[MISSED_HEADER] == "2"
    else:
        assert ds == []
    harness.advance(5.0)  # t0 + 40: on time again, under every policy
    assert wait_until(lambda: ready(q, "ticks") == 1 and settled(q), 10)
    q.stop()
    assert [fired_at(d) for d in drain(q, "ticks")] == [at(t0 + 40)]


def test_the_schedule_survives_a_reopen_and_every_again_keeps_its_fire_time(
    harness: Harness,
) -> None:
    q = harness.open()
    first = every(q, 10.0, b"tick", topic="ticks", name="t")
    q.start()
    wait_settled(q)
    t0 = harness.now()
    q.close()
    q = harness.open()
    again = every(q, 10.0, b"tick", topic="ticks", name="t")  # as at every start
    assert again != first, "the handler's tick replaced the first one"
    assert settled(q), "kept: still one pending tick"
    q.start()
    lag = harness.now() - t0  # the reopened queue's clock starts at its own time
    harness.advance(10.0 - lag if lag < 10.0 else 0.0)
    assert wait_until(lambda: ready(q, "ticks") == 1 and settled(q), 10)
    q.stop()
    [d] = drain(q, "ticks")
    assert fired_at(d) == at(t0 + 10), "the fire time set before the reopen"


def test_catch_up_all_past_the_queues_capacity_publishes_the_newest_that_fit(
    harness: Harness,
) -> None:
    """60 fire times missed on a queue of 20: the newest 19 go out with the
    next tick (20 places, the tick's own freed by its ack), the first
    counting the 41 left out. All 60 made an ack that could never fit: it
    was retried for hours, then the tick was dead-lettered (the schedule
    stopped)."""
    q = harness.open(capacity=20)
    every(q, 1.0, b"tick", topic="ticks", name="t", catch_up="all")
    q.start()
    wait_settled(q)
    t0 = harness.now()
    q.stop()
    harness.advance(60.5)
    q.start()
    assert wait_until(lambda: ready(q, "ticks") == 19 and settled(q), 10), q.topic_stats()
    q.stop()
    ds = drain(q, "ticks")
    assert [fired_at(d) for d in ds] == [at(t0 + k) for k in range(42, 61)]
    assert ds[0].headers[MISSED_HEADER] == "41"
    assert all(MISSED_HEADER not in d.headers for d in ds[1:])
    assert len(q.dlq) == 0


def test_a_changed_definition_applies_from_the_pending_tick(harness: Harness) -> None:
    q = harness.open()
    every(q, 10.0, b"v1", topic="ticks", name="t")
    q.start()
    wait_settled(q)
    t0 = harness.now()
    every(q, 20.0, b"v2", topic="ticks", name="t")
    assert settled(q)
    harness.advance(10.0)
    assert wait_until(lambda: ready(q, "ticks") == 1 and settled(q), 10)
    harness.advance(10.0)  # t0 + 20: the old interval would fire here
    wait_settled(q)
    assert ready(q, "ticks") == 1
    harness.advance(10.0)  # t0 + 30: the new one does
    assert wait_until(lambda: ready(q, "ticks") == 2 and settled(q), 10)
    q.stop()
    ds = drain(q, "ticks")
    assert [(d.payload, fired_at(d)) for d in ds] == [(b"v2", at(t0 + 10)), (b"v2", at(t0 + 30))]


def test_unschedule_ends_the_schedule(harness: Harness) -> None:
    q = harness.open()
    every(q, 10.0, b"tick", topic="ticks", name="t")
    every(q, 10.0, b"other", topic="ticks", name="u")
    q.start()
    wait_settled(q, 2)
    unschedule(q, "t")
    harness.advance(10.0)
    assert wait_until(lambda: ready(q, "ticks") == 1 and settled(q, 1), 10)
    harness.advance(10.0)
    assert wait_until(lambda: ready(q, "ticks") == 2 and settled(q, 1), 10)
    q.stop()
    assert [d.payload for d in drain(q, "ticks")] == [b"other", b"other"]


def test_unschedule_while_a_tick_is_handled_ends_the_schedule(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``unschedule`` between a tick handler's check that its tick is still
    current and its ack: the tick's message goes out, the next tick does
    not (the backend drops an ack's follow-up that repeats the key of the
    superseded message it acks). The next tick took the key the cancelled
    tombstone had freed, and the schedule went on for good."""
    q = harness.open()
    every(q, 10.0, b"tick", topic="ticks", name="t")
    q.start()
    wait_settled(q)
    staged, go = threading.Event(), threading.Event()
    real_stage = schedules._stage

    def stage_then_wait(ctx: Any, items: list[Any]) -> None:
        real_stage(ctx, items)
        if not staged.is_set():
            staged.set()
            go.wait(10)

    monkeypatch.setattr(schedules, "_stage", stage_then_wait)
    harness.advance(10.0)
    assert staged.wait(10)
    unschedule(q, "t")
    go.set()
    assert wait_until(lambda: ready(q, "ticks") == 1 and settled(q, 0), 10), q.topic_stats()
    harness.advance(10.0)
    wait_settled(q, 0)
    assert ready(q, "ticks") == 1
    q.stop()


def test_a_tick_whose_handler_died_is_published_once(harness: Harness) -> None:
    q = harness.open()
    every(q, 10.0, b"tick", topic="ticks", name="t")
    q.start()
    wait_settled(q)
    t0 = harness.now()
    q.stop()
    harness.advance(10.0)
    # A handler took the tick and died before its ack: nothing was published.
    [tick] = q.checkout(SCHEDULE_TOPIC, lease=5.0, timeout=0)
    assert ready(q, "ticks") == 0
    harness.advance(5.0)  # its lease runs out: the tick comes back
    q.start()
    assert wait_until(lambda: ready(q, "ticks") == 1 and settled(q), 10)
    q.stop()
    with pytest.raises(ringq.LeaseLost):
        q.ack(tick)
    assert [fired_at(d) for d in drain(q, "ticks")] == [at(t0 + 10)]


def test_a_cron_schedule_fires_at_its_matches(harness: Harness) -> None:
    from croniter import croniter  # type: ignore[import-untyped]

    q = harness.open()
    every(q, "*/5 * * * *", b"cron", topic="crons", name="c", catch_up="all")
    q.start()
    wait_settled(q)
    now = harness.now()
    it = croniter("*/5 * * * *", datetime.fromtimestamp(now, UTC))
    first = it.get_next(float)
    second = it.get_next(float)
    harness.advance(first - now)
    assert wait_until(lambda: ready(q, "crons") == 1 and settled(q), 10)
    harness.advance(second - first)
    assert wait_until(lambda: ready(q, "crons") == 2 and settled(q), 10)
    q.stop()
    assert [fired_at(d) for d in drain(q, "crons")] == [at(first), at(second)]


def test_a_fire_time_past_the_longest_delay_is_reached_in_steps(harness: Harness) -> None:
    """An interval of two years: its tick cannot be delayed that long (365
    days at most), so it waits in steps and fires once, on time. The tick
    was published with the whole delay, which every backend refused: the
    ack failed on each retry and nothing was ever published."""
    year = 365 * 86400.0
    q = harness.open()
    every(q, 2 * year, b"far", topic="far", name="far")
    q.start()
    wait_settled(q)
    t0 = harness.now()
    harness.advance(year)
    wait_settled(q)
    assert ready(q, "far") == 0, "a year in: not yet"
    harness.advance(year - 1)
    wait_settled(q)
    assert ready(q, "far") == 0, "a second before its time: not yet"
    harness.advance(1)
    assert wait_until(lambda: ready(q, "far") == 1 and settled(q), 10)
    q.stop()
    [d] = drain(q, "far")
    assert fired_at(d) == at(t0 + 2 * year)
    handler_stats = q.aq.handler_stats() if isinstance(q, AsyncFacade) else q.handler_stats()
    assert handler_stats["ringq.schedules"]["failed"] == 0


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 1 1 * 0 2099", "* * * * * * *"])
def test_a_cron_that_never_fires_or_has_seven_fields_is_refused_by_every(
    harness: Harness, cron: str
) -> None:
    q = harness.open()
    with pytest.raises(ValueError, match=r"cron|names no time"):
        every(q, cron, b"x", topic="t", name="never")
    assert q.stats()["total"] == 0

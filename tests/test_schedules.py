"""``ringq.schedules`` (``q.every``): fire-time arithmetic, argument checks,
``ringq schedules``, a real process SIGKILLed while its schedule ticks, and
the idle benchmark. The contract on every backend is in
``tests/contract/test_schedules_contract.py``."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import ringq
from click.testing import CliRunner
from ringq.cli import main as cli
from ringq.schedules import (
    SCHEDULE_TOPIC,
    SCHEDULED_FOR_HEADER,
    Definition,
    due_fires,
    first_fire,
)

S = 1_000_000  # microseconds per second


def interval(seconds: float) -> Definition:
    return Definition(every_us=round(seconds * S), topic="t", payload=b"")


def cron(expr: str, tz: str = "UTC") -> Definition:
    return Definition(cron=expr, tz=tz, topic="t", payload=b"")


def us(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * S)


# -- fire times ----------------------------------------------------------------


def test_an_interval_tick_on_time_fires_itself_and_schedules_the_next() -> None:
    d = interval(10)
    assert due_fires(d, 100 * S, 100 * S, 1000) == ([100 * S], 0, 110 * S)
    assert due_fires(d, 100 * S, 109 * S, 1000) == ([100 * S], 0, 110 * S)


def test_an_interval_tick_late_by_periods_lists_every_missed_fire_time() -> None:
    d = interval(10)
    assert due_fires(d, 100 * S, 135 * S, 1000) == (
        [100 * S, 110 * S, 120 * S, 130 * S],
        0,
        140 * S,
    )
    # Capped: the most recent ones, and how many older ones were left out.
    assert due_fires(d, 100 * S, 135 * S, 2) == ([120 * S, 130 * S], 2, 140 * S)


def test_the_first_fire_time() -> None:
    assert first_fire(interval(2.5), 100 * S) == 102_500_000
    at = us("2025-01-01T03:02:00+00:00")
    assert first_fire(cron("*/5 * * * *"), at) == us("2025-01-01T03:05:00+00:00")
    # In a time zone: 09:00 in Paris is 08:00 UTC in winter.
    assert first_fire(cron("0 9 * * *", "Europe/Paris"), at) == us("2025-01-01T08:00:00+00:00")


def test_a_cron_tick_late_by_matches_lists_them() -> None:
    d = cron("*/5 * * * *")
    fire = us("2025-01-01T03:05:00+00:00")
    on_time = due_fires(d, fire, fire + 60 * S, 1000)
    assert on_time == ([fire], 0, us("2025-01-01T03:10:00+00:00"))
    late = due_fires(d, fire, us("2025-01-01T03:21:00+00:00"), 1000)
    assert late[0] == [fire + k * 300 * S for k in range(4)]
    assert late[1:] == (0, us("2025-01-01T03:25:00+00:00"))
    capped = due_fires(d, fire, us("2025-01-01T03:21:00+00:00"), 2)
    assert capped[0] == [fire + 2 * 300 * S, fire + 3 * 300 * S] and capped[1] >= 1


def test_a_year_down_with_a_minutely_cron_is_bounded() -> None:
    d = cron("* * * * *")
    fire = us("2024-01-01T00:00:00+00:00")
    started = time.perf_counter()
    fires, left_out, nxt = due_fires(d, fire, fire + 366 * 86400 * S, 1000)
    assert len(fires) == 1000 and left_out >= 1
    assert nxt == fire + (366 * 1440 + 1) * 60 * S
    assert time.perf_counter() - started < 5


# -- arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "kw", "error"),
    [
        ("not cron", {}, ValueError),
        ("61 * * * *", {}, ValueError),
        (True, {}, TypeError),
        (None, {}, TypeError),
        (0, {}, ValueError),
        (-1.0, {}, ValueError),
        (float("nan"), {}, ValueError),
        (10, {"catch_up": "some"}, ValueError),
        (10, {"tz": "Mars/Olympus"}, ValueError),
        (10, {"name": ""}, ValueError),
        (10, {"topic": SCHEDULE_TOPIC}, ValueError),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_published(
    tmp_path: Path, when: object, kw: dict[str, object], error: type[Exception]
) -> None:
    with ringq.Queue(tmp_path / "q") as q:
        args: dict[str, object] = {"name": "n", **kw}
        with pytest.raises(error):
            q.every(when, b"x", **args)  # type: ignore[arg-type]
        assert q.stats()["total"] == 0


def test_a_timedelta_and_an_object_message(tmp_path: Path) -> None:
    import msgspec

    class Nightly(msgspec.Struct):
        kind: str

    with ringq.Queue(tmp_path / "q") as q:
        q.every(timedelta(milliseconds=50), Nightly("full"), name="n")
        q.start()
        deadline = time.monotonic() + 10
        got: list[ringq.Delivery] = []
        while not got and time.monotonic() < deadline:
            got = q.checkout(ringq.codecs.topic_for(Nightly), timeout=0.2)
        assert got, "an object message goes to its type's topic"
        assert msgspec.json.decode(got[0].payload) == {"kind": "full"}
        assert got[0].headers[ringq.codecs.TYPE_HEADER]
        q.stop(drain=False)


# -- the command line -------------------------------------------------------------


def test_ringq_schedules_lists_them(tmp_path: Path) -> None:
    path = tmp_path / "q"
    with ringq.Queue(path) as q:
        q.every(3600, b"x", topic="hourly", name="hourly")
        q.every("0 3 * * *", b"y", topic="nightly", name="nightly", catch_up="all")
        q.every(60, b"z", topic="gone", name="gone")
        q.start()
        deadline = time.monotonic() + 10
        while q.topic_stats()[SCHEDULE_TOPIC]["delayed"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        q.unschedule("gone")
        q.every(60, b"new", topic="fresh", name="fresh")  # not seen by a handler yet
        q.stop(drain=False)
    result = CliRunner().invoke(cli, ["schedules", str(path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == {"hourly", "nightly", "fresh"}, "unschedule removed 'gone' at once"
    assert (rows["hourly"]["spec"], rows["hourly"]["topic"]) == ("every 3600s", "hourly")
    assert rows["hourly"]["next_fire"] > time.time() + 3500
    assert (rows["nightly"]["spec"], rows["nightly"]["catch_up"]) == ("0 3 * * *", "all")
    assert datetime.fromtimestamp(rows["nightly"]["next_fire"], UTC).hour == 3
    assert (rows["fresh"]["state"], rows["fresh"]["next_fire"]) == ("new", None)
    table = CliRunner().invoke(cli, ["schedules", str(path)])
    assert table.exit_code == 0 and "nightly" in table.output and "0 3 * * *" in table.output


# -- a real process killed while its schedule ticks -----------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time, ringq
    q = ringq.Queue(sys.argv[1], durability="batch")
    q.every(0.05, b"t", topic="ticks", name="t", catch_up="all")
    q.start()
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_a_tick_across_sigkill_is_neither_lost_nor_doubled(tmp_path: Path) -> None:
    path = tmp_path / "q"
    rng = random.Random(16)
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.2, 0.7))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        assert child.returncode == -signal.SIGKILL
        time.sleep(rng.uniform(0.05, 0.4))  # down: fire times pass meanwhile
    with ringq.Queue(path) as q:
        got = []
        while batch := q.checkout("ticks", max_messages=1000, timeout=0):
            got.extend(batch)
        fired = [us(d.headers[SCHEDULED_FOR_HEADER]) for d in got]
        assert len(fired) > 40
        assert len(set(fired)) == len(fired), "no fire time published twice"
        fired.sort()
        gaps = {b - a for a, b in itertools.pairwise(fired)}
        assert gaps == {50_000}, f"no fire time lost between {fired[0]} and {fired[-1]}: {gaps}"
        assert (
            q.topic_stats()[SCHEDULE_TOPIC]["delayed"] + q.topic_stats()[SCHEDULE_TOPIC]["ready"]
            == 1
        ), "one pending tick"


# -- the benchmark -----------------------------------------------------------------


def test_the_idle_benchmark_runs() -> None:
    from ringq.bench_schedules import idle_cpu

    out = idle_cpu(200, 0.5)
    assert out["schedules"] == 200 and out["fired_during_window"] == 0
    assert out["cpu_percent"] >= 0

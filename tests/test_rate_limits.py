"""Rate limits (``ringq.ratelimit``): parsing and configuration, the token
bucket on a manual clock, and handlers limited on every backend: thread and
async handlers, one process and several (a shared directory, Redis), with
the attempts of a rate-limited message left alone."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import OpenQueue, Spawn, read_line, wait_until
from redis_servers import redis_url
from ringq.config import HandlerOptions, QueueOptions
from ringq.ratelimit import (
    NO_LIMIT,
    FileBucket,
    MemoryBucket,
    RateLimit,
    RateLimits,
    acquire,
    parse_rate_limit,
    take,
)


class Clock:
    """A manual clock for the buckets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- parsing and configuration ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate", "burst"),
    [
        ("100/s", 100.0, 100),
        ("5/m", 5 / 60, 5),
        ("5/min", 5 / 60, 5),
        ("1000/h", 1000 / 3600, 1000),
        ("1/100ms", 10.0, 1),
        ("3/2s", 1.5, 3),
        (" 100 / s , burst = 10 ", 100.0, 10),
        ("1/0.5s", 2.0, 1),
    ],
)
def test_limits_parse(text: str, rate: float, burst: int) -> None:
    limit = parse_rate_limit(text, "here")
    assert isinstance(limit, RateLimit)
    assert limit.rate == pytest.approx(rate) and limit.burst == burst
    assert str(limit) == " ".join(text.split())


@pytest.mark.parametrize(
    "bad", ["fast", "100", "100/d", "0/s", "-1/s", "1.5/s", "10/s, burst=0", "1/0s", 100, 1.5]
)
def test_a_bad_limit_is_a_config_error_naming_the_handler(open_queue: OpenQueue, bad: Any) -> None:
    q = open_queue()
    with pytest.raises(ringq.ConfigError, match=r"handler 'on_job': rate_limit=") as e:

        @q.handler(bytes, topic="jobs", rate_limit=bad)
        def on_job(m: bytes) -> None: ...

    assert "must" in str(e.value)  # says what a limit looks like

    class OnJob(ringq.Handler[bytes]):
        topic = "jobs2"
        rate_limit = bad

        def handle(self, msg: bytes, ctx: ringq.Context) -> None: ...

    with pytest.raises(ringq.ConfigError, match=r"handler 'OnJob': rate_limit="):
        q.register(OnJob)
    with pytest.raises(ringq.ConfigError, match="rate_limit="):
        HandlerOptions(rate_limit=bad)
    with pytest.raises(ringq.ConfigError, match=r"set_rate_limit\('jobs'\): rate_limit="):
        q.set_rate_limit("jobs", bad)


def test_the_limit_comes_from_code_or_configuration(open_queue: OpenQueue, tmp_path: Path) -> None:
    env = {
        "RINGQ_HANDLER__ON_JOB__RATE_LIMIT": "5/s, burst=2",
        "RINGQ_HANDLER__OFF__RATE_LIMIT": "none",
    }
    q = open_queue(options=QueueOptions.from_env(environ=env))

    @q.handler(bytes, topic="jobs", rate_limit="100/s")
    def on_job(m: bytes) -> None: ...

    @q.handler(bytes, topic="other", rate_limit="1/s")
    def off(m: bytes) -> None: ...

    class Limited(ringq.Handler[bytes]):
        topic = "third"
        rate_limit = "7/m"

        def handle(self, msg: bytes, ctx: ringq.Context) -> None: ...

    q.register(Limited)
    assert q.handlers.get("on_job").options.rate_limit == RateLimit(5.0, 2, "5/s, burst=2")
    assert q.handlers.get("off").options.rate_limit is None  # "none" lifts the declared one
    limited = q.handlers.get("Limited").options.rate_limit
    assert limited is not None and limited.rate == pytest.approx(7 / 60)

    toml = tmp_path / "ringq.toml"
    toml.write_text('[handlers.on_job]\nrate_limit = "2/100ms"\n')
    assert QueueOptions.from_toml(toml).handler_options(
        "on_job", HandlerOptions()
    ).rate_limit == RateLimit(20.0, 2, "2/100ms")
    with pytest.raises(ringq.ConfigError, match="RINGQ_HANDLER__ON_JOB__RATE_LIMIT='5 a second'"):
        QueueOptions.from_env(environ={"RINGQ_HANDLER__ON_JOB__RATE_LIMIT": "5 a second"})
    with pytest.raises(ringq.ConfigError, match=r"handlers\.on_job\.rate_limit=3"):
        QueueOptions.from_mapping({"handlers": {"on_job": {"rate_limit": 3}}})


def test_set_rate_limit_overrides_the_declared_limit_per_topic(open_queue: OpenQueue) -> None:
    q = open_queue()

    @q.handler(bytes, topic="jobs", rate_limit="100/s")
    def on_job(m: bytes) -> None: ...

    assert str(q.rate_limit("jobs")) == "100/s"
    q.set_rate_limit("jobs", "1/s")
    assert str(q.rate_limit("jobs")) == "1/s"
    q.set_rate_limit("jobs", "none")
    assert q.rate_limit("jobs") is None
    q.set_rate_limit("jobs", None)  # the handler's own again
    assert str(q.rate_limit("jobs")) == "100/s"
    q.set_rate_limit("later", "3/s")  # a topic without a handler yet
    assert str(q.rate_limit("later")) == "3/s"
    with pytest.raises(ValueError, match="topic"):
        q.set_rate_limit("", "1/s")


# -- the bucket, on a manual clock ----------------------------------------------------


def test_the_bucket_grants_its_burst_then_its_rate() -> None:
    clock = Clock()
    b = MemoryBucket(clock)
    assert b.take(10.0, 5, 3) == (3, 0.0)
    assert b.take(10.0, 5, 3) == (2, 0.0)  # a full bucket holds the burst
    granted, wait = b.take(10.0, 5, 1)
    assert granted == 0 and wait == pytest.approx(0.1)
    clock.now += 0.05
    granted, wait = b.take(10.0, 5, 1)
    assert granted == 0 and wait == pytest.approx(0.05)
    clock.now += 0.05
    assert b.take(10.0, 5, 4) == (1, 0.0)
    clock.now += 10.0
    assert b.take(10.0, 5, 100) == (5, 0.0)  # never more than the burst at once
    b.take(10.0, 5, -3)  # three given back
    assert b.take(10.0, 5, 10) == (3, 0.0)
    b.take(10.0, 5, -100)  # never above the burst
    assert b.take(10.0, 5, 10) == (5, 0.0)


def test_no_window_admits_more_than_burst_plus_rate_times_its_length() -> None:
    rng = __import__("random").Random(7)
    rate, burst = 25.0, 4
    clock = Clock()
    b = MemoryBucket(clock)
    grants: list[tuple[float, int]] = []
    for _ in range(5000):
        clock.now += rng.choice([0.0, 0.001, 0.01, 0.03, 0.2])
        n = rng.randint(-1, 6)
        got, wait = b.take(rate, burst, n)
        assert got <= max(n, 0)
        if got:
            grants.append((clock.now, got))
        elif n > 0:
            assert 0 < wait <= 1 / rate + 1e-9
    for i in range(0, len(grants), 17):
        admitted = 0
        for t, g in grants[i:]:
            admitted += g
            # Given-back tokens may be taken again: at most the burst more.
            assert admitted <= burst + rate * (t - grants[i][0]) + burst + 1e-6


def test_the_pure_step_handles_a_clock_that_went_back() -> None:
    tokens, last, granted, wait = take(0.0, 100.0, 50.0, 1.0, 3, 1)  # rebooted: restarts at now
    assert (tokens, last, granted) == (0.0, 50.0, 0) and wait == pytest.approx(1.0)
    tokens, last, granted, _ = take(tokens, last, 52.0, 1.0, 3, 5)
    assert granted == 2 and last == 52.0


def test_file_buckets_on_one_file_share_their_tokens(tmp_path: Path) -> None:
    clock = Clock()
    path = str(tmp_path / "ratelimit-x")
    a, b = FileBucket(path, clock), FileBucket(path, clock)  # two processes, in effect
    assert a.take(2.0, 4, 3) == (3, 0.0)
    assert b.take(2.0, 4, 3) == (1, 0.0)
    assert a.take(2.0, 4, 1)[0] == 0
    clock.now += 1.0
    assert b.take(2.0, 4, 5) == (2, 0.0)
    assert os.stat(path).st_mode & 0o777 == 0o600
    Path(path).write_bytes(b"\xff" * 16)  # nonsense: a full bucket
    assert a.take(2.0, 4, 9) == (4, 0.0)
    a.close()
    b.close()


def test_a_wait_for_a_token_ends_when_told(open_queue: OpenQueue) -> None:
    clock = Clock()
    table = RateLimits()
    q = open_queue()
    gate = table.gate("t", parse_rate_limit("1/h", "x"), q.backend)  # type: ignore[arg-type]
    gate.bucket = MemoryBucket(clock)
    assert gate.take(5) == (1, 0.0)
    cond = threading.Condition()
    stay = [True]
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(acquire(gate, 1, cond, lambda: stay[0])))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.05)
    with cond:
        stay[0] = False
        cond.notify_all()
    waiter.join(2)
    assert got == [0] and time.monotonic() - started < 1.0
    assert gate.waits == 1
    table.set("t", "none")
    assert gate.take(1000) == (1000, 0.0)
    assert NO_LIMIT is parse_rate_limit("off", "x")


# -- handlers, in one process -----------------------------------------------------------


def assert_paced(starts: list[float], rate: float, burst: int, slack: int = 2) -> None:
    """Every prefix of the sorted ``starts`` is within the bucket's bound."""
    starts = sorted(starts)
    for i, t in enumerate(starts):
        allowed = burst + rate * (t - starts[0]) + slack
        assert i + 1 <= allowed, (
            f"{i + 1} started within {t - starts[0]:.3f}s (limit {allowed:.1f})"
        )


def test_a_limited_handler_runs_at_its_rate_across_its_workers(open_queue: OpenQueue) -> None:
    q = open_queue()
    starts: list[float] = []

    @q.handler(bytes, topic="jobs", rate_limit="20/s, burst=5", max_parallelism=4)
    def on_job(m: bytes) -> None:
        starts.append(time.time())

    q.publish_many([b"x"] * 30, topic="jobs")
    began = time.time()
    q.start()
    assert wait_until(lambda: len(starts) == 30, timeout=10)
    assert_paced(starts, 20.0, 5)
    assert max(starts) - began >= (30 - 5) / 20 * 0.9
    stats = q.handler_stats()["on_job"]
    assert stats["rate_limit"] == "20/s, burst=5" and stats["throttled"] > 0
    assert stats["succeeded"] == 30


def test_a_rate_limited_message_does_not_spend_an_attempt(open_queue: OpenQueue) -> None:
    q = open_queue()
    attempts: list[int] = []

    # A lease far shorter than the wait for a token: a message held while
    # waiting would expire and, with one attempt, be dead-lettered.
    @q.handler(
        bytes,
        topic="jobs",
        rate_limit="5/s, burst=1",
        max_parallelism=3,
        timeout=0.1,
        retry=ringq.Retry(max_attempts=1),
    )
    def on_job(m: bytes, ctx: ringq.Context) -> None:
        attempts.append(ctx.attempt)

    q.publish_many([b"x"] * 6, topic="jobs")
    q.start()
    assert wait_until(lambda: len(attempts) == 6, timeout=10)
    q.stop()
    assert attempts == [1] * 6
    assert q.stats()["dead"] == 0 and len(q.dlq.list()) == 0


def test_a_batch_given_back_unstarted_gives_back_its_tokens(open_queue: OpenQueue) -> None:
    """A handler's heartbeat gives its batch's unstarted messages back to
    the queue (``release_rest``; so does the batch's hold running out);
    checked out again, each takes a token again. The tokens the batch held
    go back with them: kept, each released message cost two, and with
    the burst spent the rest waited for new tokens (ten minutes each at
    6/h)."""
    q = open_queue()
    ran: list[bytes] = []

    @q.handler(bytes, topic="jobs", rate_limit="6/h, burst=6", max_parallelism=1, timeout=30)
    def on_job(m: bytes, ctx: ringq.Context) -> None:
        ran.append(m)
        ctx.heartbeat()  # its neighbours in the batch are released

    q.publish_many([b"%d" % i for i in range(6)], topic="jobs")
    q.start()
    try:
        assert wait_until(lambda: len(ran) == 6, timeout=10), ran
    finally:
        q.stop(drain=False)  # a regression must not wait ten minutes a token
    assert sorted(ran) == [b"%d" % i for i in range(6)]


def test_a_message_arriving_while_the_bucket_is_empty_waits_unleased(open_queue: OpenQueue) -> None:
    q = open_queue()
    seen: list[int] = []

    @q.handler(bytes, topic="jobs", rate_limit="4/s, burst=1", max_parallelism=2, timeout=0.1,
               retry=ringq.Retry(max_attempts=1))  # fmt: skip
    def on_job(m: bytes, ctx: ringq.Context) -> None:
        seen.append(ctx.attempt)

    q.start()
    for _ in range(4):  # one at a time, to idle workers
        q.publish(b"x", topic="jobs")
        time.sleep(0.02)
    assert wait_until(lambda: len(seen) == 4, timeout=10)
    assert seen == [1, 1, 1, 1] and len(q.dlq.list()) == 0


def test_stop_and_scale_end_a_wait_for_a_token(open_queue: OpenQueue) -> None:
    q = open_queue()
    done: list[bytes] = []

    @q.handler(bytes, topic="jobs", rate_limit="1/h", max_parallelism=2)
    def on_job(m: bytes) -> None:
        done.append(m)

    q.publish_many([b"1", b"2", b"3"], topic="jobs")
    q.start()
    assert wait_until(lambda: len(done) == 1)
    time.sleep(0.1)
    started = time.monotonic()
    q.scale("on_job", 0)
    assert wait_until(lambda: q.handler_stats()["on_job"]["workers"] == 0, timeout=2)
    q.scale("on_job", 2)
    time.sleep(0.1)
    assert q.stop(drain=False, timeout=5)
    assert time.monotonic() - started < 2.0
    assert len(done) == 1
    rest = q.checkout("jobs", max_messages=10, timeout=0)
    assert [d.attempt for d in rest] == [1, 1]  # never delivered while waiting


def test_a_draining_stop_runs_the_rest_at_the_rate(open_queue: OpenQueue) -> None:
    q = open_queue()
    done: list[float] = []

    @q.handler(bytes, topic="jobs", rate_limit="20/s, burst=2")
    def on_job(m: bytes) -> None:
        done.append(time.time())

    q.publish_many([b"x"] * 8, topic="jobs")
    q.start()
    assert q.stop(drain=True, timeout=10)
    assert len(done) == 8
    assert_paced(done, 20.0, 2)


def test_set_rate_limit_applies_to_running_workers(open_queue: OpenQueue) -> None:
    q = open_queue()
    done: list[bytes] = []

    @q.handler(bytes, topic="jobs")
    def on_job(m: bytes) -> None:
        done.append(m)

    q.set_rate_limit("jobs", "2/h")  # before the handler starts: two, then nothing
    q.publish_many([b"x"] * 5, topic="jobs")
    q.start()
    assert wait_until(lambda: len(done) == 2)
    time.sleep(0.3)
    assert len(done) == 2
    assert q.handler_stats()["on_job"]["rate_limit"] == "2/h"
    q.set_rate_limit("jobs", None)  # the handler declares none
    assert wait_until(lambda: len(done) == 5, timeout=3)


def test_an_async_handler_is_limited_without_blocking_its_loop(open_queue: OpenQueue) -> None:
    q = open_queue()
    starts: list[float] = []
    attempts: list[int] = []

    @q.handler(bytes, topic="jobs", rate_limit="20/s, burst=4", max_parallelism=4, timeout=0.2,
               retry=ringq.Retry(max_attempts=1))  # fmt: skip
    async def on_job(m: bytes, ctx: ringq.Context) -> None:
        starts.append(time.time())
        attempts.append(ctx.attempt)
        await asyncio.sleep(0.001)

    q.publish_many([b"x"] * 20, topic="jobs")
    q.start()
    assert wait_until(lambda: len(starts) == 20, timeout=10)
    assert_paced(starts, 20.0, 4)
    assert attempts == [1] * 20 and len(q.dlq.list()) == 0
    stats = q.handler_stats()["on_job"]
    assert stats["rate_limit"] == "20/s, burst=4" and stats["throttled"] > 0
    q.set_rate_limit("jobs", "1/h")
    time.sleep(0.6)  # the workers took the bucket's last token meanwhile, at most
    q.publish_many([b"y"] * 3, topic="jobs")
    time.sleep(0.3)
    started = time.monotonic()
    assert q.stop(drain=False, timeout=5)
    assert time.monotonic() - started < 2.0
    assert len(starts) <= 21


def test_an_asyncqueue_handler_is_limited() -> None:
    async def main(path: str) -> list[float]:
        starts: list[float] = []
        async with ringq.AsyncQueue(path) as aq:

            @aq.handler(bytes, topic="jobs", rate_limit="10/s, burst=2")
            async def on_job(m: bytes) -> None:
                starts.append(time.time())

            await aq.publish_many([b"x"] * 6, topic="jobs")
            aq.start()
            for _ in range(300):
                if len(starts) == 6:
                    break
                await asyncio.sleep(0.01)
            await aq.stop()
        return starts

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        starts = asyncio.run(main(os.path.join(d, "q")))
    assert len(starts) == 6
    assert_paced(starts, 10.0, 2)


# -- several processes --------------------------------------------------------------------

CHILD = """
import sys, threading, time
import ringq

target, ns, rate = sys.argv[1], sys.argv[2], sys.argv[3]
q = ringq.Queue(target, shared=True) if ns == "-" else ringq.Queue(target, namespace=ns)
lock = threading.Lock()

@q.handler(bytes, topic="jobs", rate_limit=rate, max_parallelism=2)
def on_job(m: bytes, ctx: ringq.Context) -> None:
    with lock:
        sys.stdout.write(f"{time.time()!r} {ctx.attempt}\\n")
        sys.stdout.flush()

q.start()
print("ready", flush=True)
time.sleep(120)
"""


def run_two_processes(spawn: Spawn, q: ringq.Queue, target: str, ns: str) -> list[float]:
    """Two processes run the limited handler; ``q`` publishes 50 jobs;
    returns every start time (both processes)."""
    children = [spawn(CHILD, target, ns, "20/s, burst=10") for _ in range(2)]
    for child in children:
        assert read_line(child) == "ready"
    lines: list[str] = []
    lock = threading.Lock()

    def collect(child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            with lock:
                lines.append(line)

    readers = [threading.Thread(target=collect, args=(c,), daemon=True) for c in children]
    for r in readers:
        r.start()
    q.publish_many([b"x"] * 50, topic="jobs")
    assert wait_until(lambda: len(lines) >= 50, timeout=20), len(lines)
    time.sleep(0.2)
    assert len(lines) == 50
    starts = [float(line.split()[0]) for line in lines]
    assert all(line.split()[1] == "1" for line in lines)  # no attempt spent on waiting
    return starts


def check_combined(starts: list[float]) -> None:
    assert_paced(starts, 20.0, 10)
    # One bucket per process would run the 40 beyond the burst in 1 s, not 2.
    assert max(starts) - min(starts) >= (50 - 10) / 20 * 0.85


def test_processes_of_a_shared_directory_share_the_bucket(
    open_queue: OpenQueue, qdir: Path, spawn: Spawn
) -> None:
    q = open_queue(qdir, shared=True)
    assert q.role == "owner"
    starts = run_two_processes(spawn, q, str(qdir), "-")
    check_combined(starts)
    assert [p.name for p in qdir.iterdir() if p.name.startswith("ratelimit-")]


@pytest.fixture
def redis_target() -> Iterator[tuple[str, str]]:
    url = redis_url()
    if url is None:
        pytest.skip("redis-server is not installed")
    yield url, "rl-" + secrets.token_hex(4)


def test_clients_of_a_redis_namespace_share_the_bucket(
    redis_target: tuple[str, str], spawn: Spawn
) -> None:
    url, ns = redis_target
    with ringq.Queue(url, namespace=ns) as q:
        starts = run_two_processes(spawn, q, url, ns)
        check_combined(starts)
        assert len(q.dlq.list()) == 0


def test_redis_take_tokens_is_one_bucket_for_every_client(redis_target: tuple[str, str]) -> None:
    url, ns = redis_target
    with ringq.Queue(url, namespace=ns) as a, ringq.Queue(url, namespace=ns) as b:
        ba: Any = a.backend
        bb: Any = b.backend
        assert ba.take_tokens("t", 1.0, 3, 2) == (2, 0.0)
        assert bb.take_tokens("t", 1.0, 3, 5) == (1, 0.0)
        granted, wait = ba.take_tokens("t", 1.0, 3, 1)
        assert granted == 0 and 0.5 < wait <= 1.0
        bb.take_tokens("t", 1.0, 3, -2)  # given back
        assert ba.take_tokens("t", 1.0, 3, 5)[0] == 2
        import redis

        r = redis.Redis.from_url(url)
        key = f"ringq:{{{ns}}}:rl:t"
        assert 0 < r.pttl(key) <= 4000  # gone once it would be full again
        assert ba.take_tokens("other", 1000.0, 1000, 0) == (0, 0.0)


def test_a_limited_handler_on_redis_keeps_its_attempts(redis_target: tuple[str, str]) -> None:
    url, ns = redis_target
    attempts: list[int] = []
    with ringq.Queue(url, namespace=ns) as q:

        @q.handler(bytes, topic="jobs", rate_limit="10/s, burst=1", max_parallelism=2,
                   timeout=0.1, retry=ringq.Retry(max_attempts=1))  # fmt: skip
        def on_job(m: bytes, ctx: ringq.Context) -> None:
            attempts.append(ctx.attempt)

        q.publish_many([b"x"] * 5, topic="jobs")
        q.start()
        assert wait_until(lambda: len(attempts) == 5, timeout=10)
        q.stop()
        assert attempts == [1] * 5 and len(q.dlq.list()) == 0


def run_async_limited(target: str | Path, **options: Any) -> tuple[list[float], list[int]]:
    """An ``async def`` handler limited to 20/s (burst 4) on a queue at
    ``target`` runs 16 messages; their start times and attempts."""
    starts: list[float] = []
    attempts: list[int] = []
    with ringq.Queue(target, **options) as q:

        @q.handler(bytes, topic="jobs", rate_limit="20/s, burst=4", max_parallelism=3,
                   timeout=0.2, retry=ringq.Retry(max_attempts=1))  # fmt: skip
        async def on_job(m: bytes, ctx: ringq.Context) -> None:
            starts.append(time.time())
            attempts.append(ctx.attempt)

        q.publish_many([b"x"] * 16, topic="jobs")
        q.start()
        assert wait_until(lambda: len(starts) == 16, timeout=10)
        assert q.stop(timeout=5)
        assert len(q.dlq.list()) == 0
    return starts, attempts


def test_an_async_handler_on_a_shared_queues_client_is_limited(qdir: Path) -> None:
    with ringq.Queue(qdir, shared=True) as owner:
        assert owner.role == "owner"
        starts, attempts = run_async_limited(qdir, shared=True)
    assert_paced(starts, 20.0, 4)
    assert attempts == [1] * 16


def test_an_async_handler_on_redis_is_limited(redis_target: tuple[str, str]) -> None:
    url, ns = redis_target
    starts, attempts = run_async_limited(url, namespace=ns)
    assert_paced(starts, 20.0, 4)
    assert attempts == [1] * 16


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_draining_stop_does_not_wait_for_tokens_it_does_not_need(
    open_queue: OpenQueue, kind: str
) -> None:
    q = open_queue()
    done: list[bytes] = []
    options: dict[str, Any] = {"topic": "jobs", "rate_limit": "1/h", "max_parallelism": 2}
    if kind == "thread":

        @q.handler(bytes, **options)
        def on_job(m: bytes) -> None:
            done.append(m)

    else:

        @q.handler(bytes, **options)
        async def on_async_job(m: bytes) -> None:
            done.append(m)

    q.publish(b"1", topic="jobs")
    q.start()
    assert wait_until(lambda: len(done) == 1)
    started = time.monotonic()
    assert q.stop(drain=True, timeout=10)  # nothing ready: no token needed
    assert time.monotonic() - started < 2.0

    q.publish_many([b"2", b"3"], topic="jobs")
    q.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert not q.stop(drain=True, timeout=0.3)  # ready, but no token within the timeout
    assert time.monotonic() - started < 2.0
    assert wait_until(lambda: q.topic_stats()["jobs"]["in_flight"] == 0, timeout=3)
    rest = q.checkout("jobs", max_messages=10, timeout=0)
    assert len(done) == 1 and [d.attempt for d in rest] == [1, 1]

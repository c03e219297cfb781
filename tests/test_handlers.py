"""Handlers and dispatch (seed plan phases 4-6): registry, signalling,
enqueue -> dispatch -> ack, parallelism, timeouts, retries, dead letters,
heartbeats, DI failures, undecodable payloads, scaling, stopping. (Chaining,
atomic with the ack, is part of the contract: ``tests/contract``.)"""

from __future__ import annotations

import functools
import itertools
import logging
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ringq
from conftest import OpenManualQueue, OpenQueue, wait_until
from ringq.di import Container


@dataclass
class Order:
    order_id: str
    amount: float


@dataclass
class Ship:
    order_id: str


@dataclass
class Note:
    text: str


FAST = ringq.Retry(max_attempts=3, backoff=ringq.Backoff.fixed(0.01))


def test_registry_lookup_by_name_and_topic_with_config_overrides(open_queue: OpenQueue) -> None:
    config = ringq.QueueOptions.from_mapping({"handlers": {"on_order": {"timeout": 5.0}}})
    q = open_queue(options=config)

    @q.handler(Order, timeout=30.0, max_parallelism=3)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        pass

    @q.handler()
    def on_ship(msg: Ship) -> None:
        pass

    spec = q.handlers.get("on_order")
    assert spec.topic == ringq.codecs.topic_for(Order)
    assert spec.options.timeout == 5.0, "configuration overrides the decorator"
    assert spec.options.max_parallelism == 3, "what config leaves alone stays"
    assert q.handlers.get("on_ship").message_type is Ship
    assert not q.handlers.get("on_ship").pass_context
    with pytest.raises(KeyError, match="on_order, on_ship"):
        q.handlers.get("nope")
    with pytest.raises(ringq.ConfigError, match="already has handler"):
        q.handler(Order, name="other")(lambda m, c: None)
    with pytest.raises(ringq.ConfigError, match="already registered"):

        @q.handler(Note, name="on_order")
        def dup(msg: Note) -> None:
            pass

    with pytest.raises(ringq.ConfigError, match="annotate"):

        @q.handler()
        def untyped(msg, ctx):  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(ringq.ConfigError, match="keyword-only"):

        @q.handler(Note)
        def kw_ctx(msg: Note, *, ctx: ringq.Context) -> None:
            pass

    def shared(prefix: str, msg: Note) -> None:
        pass

    with pytest.raises(ringq.ConfigError, match="name="):
        q.handler(functools.partial(shared, "p"))
    assert "kw_ctx" not in q.handlers and len(q.handlers) == 2


def test_enqueue_dispatch_ack_runs_each_message_once_in_order(open_queue: OpenQueue) -> None:
    q = open_queue()
    seen: list[tuple[str, int, str]] = []
    done = threading.Event()

    @q.handler(Order)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        seen.append((msg.order_id, ctx.attempt, ctx.message_id))
        if len(seen) == 100:
            done.set()

    ids = [q.publish(Order(f"o-{i}", i * 1.5)) for i in range(100)]
    q.start()
    assert done.wait(10)
    assert q.stop()
    assert [s[0] for s in seen] == [f"o-{i}" for i in range(100)], "one worker: FIFO"
    assert [s[2] for s in seen] == ids
    assert all(s[1] == 1 for s in seen)
    stats = q.stats()
    assert stats["ready"] == 0 and stats["in_flight"] == 0
    assert q.handler_stats()["on_order"]["succeeded"] == 100


def test_a_ready_message_wakes_only_its_handler_and_idle_workers_do_not_poll(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    got: dict[str, float] = {}
    event = threading.Event()

    @q.handler(Order, max_parallelism=4)
    def on_order(msg: Order) -> None:
        got["order"] = time.monotonic()
        event.set()

    @q.handler(Ship, max_parallelism=4)
    def on_ship(msg: Ship) -> None:
        got["ship"] = time.monotonic()

    q.start()
    time.sleep(0.2)  # all 8 workers are now waiting in the engine
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(1.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.05, f"8 idle workers used {cpu:.3f}s of CPU in 1s: something polls"
    sent = time.monotonic()
    q.publish(Order("o-1", 1.0))
    assert event.wait(5)
    assert got["order"] - sent < 0.5
    assert "ship" not in got
    assert q.handler_stats()["on_ship"]["processed"] == 0
    q.stop()


def test_max_parallelism_is_reached_and_never_exceeded(open_queue: OpenQueue) -> None:
    q = open_queue()
    lock = threading.Lock()
    running = 0
    peak = 0

    @q.handler(Order, max_parallelism=4, prefetch=1)
    def on_order(msg: Order) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    q.publish_many([Order(f"o-{i}", 1.0) for i in range(60)])
    q.start()
    assert wait_until(lambda: q.handler_stats()["on_order"]["succeeded"] == 60, 20)
    q.stop()
    assert peak == 4


def test_retry_until_max_attempts_then_dead_letter_with_metadata(open_queue: OpenQueue) -> None:
    q = open_queue()
    attempts: list[int] = []

    @q.handler(Order, retry=FAST)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"boom on {msg.order_id}")

    mid = q.publish(Order("o-1", 2.0), correlation_id="corr-9")
    q.start()
    assert wait_until(lambda: len(q.dlq) == 1, 10)
    q.stop()
    assert attempts == [1, 2, 3]
    dead = q.dlq.get(mid)
    assert dead.reason == "max_attempts"
    assert dead.attempts == 3
    assert dead.handler == "on_order"
    assert dead.error_type == "RuntimeError"
    assert dead.error_message == "boom on o-1"
    assert dead.traceback is not None and "boom on" in dead.traceback
    assert dead.first_failed_at is not None and dead.first_failed_at <= dead.dead_lettered_at
    assert dead.message.correlation_id == "corr-9"
    stats = q.handler_stats()["on_order"]
    assert (stats["failed"], stats["retried"], stats["dead_lettered"]) == (3, 2, 1)


def test_backoff_waits_in_the_engine_timer_between_attempts(
    open_manual_queue: OpenManualQueue,
) -> None:
    q = open_manual_queue()
    started: list[float] = []
    done = threading.Event()

    retry = ringq.Retry(max_attempts=3, backoff=ringq.Backoff.fixed(30.0))

    @q.handler(Order, retry=retry)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        started.append(q.now())
        if ctx.attempt < 3:
            raise ValueError("again")
        done.set()

    q.publish(Order("o-1", 1.0))
    q.start()
    for attempt in (1, 2):
        assert wait_until(lambda: q.stats()["delayed"] == 1), f"attempt {attempt} failed"
        q.advance(29.9)
        assert q.stats()["delayed"] == 1 and len(started) == attempt, "not before the backoff"
        q.advance(0.1)
    assert done.wait(10)
    q.stop()
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert gaps == [pytest.approx(30.0, abs=1e-6)] * 2
    assert len(q.dlq) == 0


def test_dead_letter_on_skips_retries(open_queue: OpenQueue) -> None:
    q = open_queue()
    calls = 0

    @q.handler(Order, retry=FAST, dead_letter_on=(KeyError,))
    def on_order(msg: Order) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("no such customer")

    mid = q.publish(Order("o-1", 1.0))
    q.start()
    assert wait_until(lambda: len(q.dlq) == 1)
    q.stop()
    assert calls == 1
    assert q.dlq.get(mid).reason == "non_retryable"
    assert q.dlq.get(mid).error_type == "KeyError"


def test_undecodable_payload_goes_to_the_dead_letters_at_once_and_the_worker_survives(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    good = threading.Event()

    @q.handler(Order, retry=FAST)
    def on_order(msg: Order) -> None:
        good.set()

    topic = ringq.codecs.topic_for(Order)
    bad = q.publish(b"{not json", topic=topic)
    wrong = q.publish(msgspec.json.encode({"order_id": 5}), topic=topic)
    q.publish(Order("o-1", 1.0))
    q.start()
    assert good.wait(5)
    assert wait_until(lambda: len(q.dlq) == 2)
    q.stop()
    for mid in (bad, wrong):
        d = q.dlq.get(mid)
        assert d.reason == "undecodable"
        assert d.attempts == 1
        assert d.handler == "on_order"
        assert d.error_type == "ringq.codecs.UndecodableError", "named where users import it"
    assert q.handler_stats()["on_order"]["undecodable"] == 2


def test_timeout_cancels_the_handler_requeues_the_message_and_rejects_the_late_ack(
    open_queue: OpenQueue, caplog: pytest.LogCaptureFixture
) -> None:
    q = open_queue()
    release = threading.Event()
    cancelled_seen = threading.Event()
    attempts: list[int] = []

    @q.handler(Order, timeout=0.3, retry=FAST)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            assert ctx.cancelled.wait(5), "the lease ran out: cancelled must be set"
            cancelled_seen.set()
            release.wait(5)  # overrun: keep the thread busy past its lease
            with pytest.raises(ringq.Cancelled):
                ctx.raise_if_cancelled()

    q.publish(Order("o-1", 1.0))
    with caplog.at_level(logging.WARNING, logger="ringq"):
        q.start()
        assert cancelled_seen.wait(5)
        # The retry ran on a fresh worker while the first thread was stuck.
        assert wait_until(lambda: attempts == [1, 2])
        stats = q.handler_stats()["on_order"]
        assert stats["abandoned_running"] == 1
        assert stats["workers"] == 1, "parallelism kept: a replacement worker"
        release.set()
        assert wait_until(lambda: q.handler_stats()["on_order"]["late_acks"] == 1)
        assert wait_until(lambda: q.handler_stats()["on_order"]["abandoned_running"] == 0)
        q.stop()
    assert any("ran past its" in r.getMessage() for r in caplog.records)
    assert any("late ack" in r.getMessage() for r in caplog.records)
    assert q.stats()["ready"] == 0 and q.stats()["in_flight"] == 0
    assert len(q.dlq) == 0


def test_a_heartbeat_that_shortens_the_lease_is_watched(open_queue: OpenQueue) -> None:
    """``ctx.heartbeat(0.1)`` in a handler whose timeout is 10 s: the lease
    monitor wakes by the shorter deadline, sets ``ctx.cancelled`` and gives
    the worker's place to a fresh one. It used to sleep until the handler's
    first deadline, 10 s on: the engine retried the message on another worker
    meanwhile, with the first run never told."""
    q = open_queue()
    waited: list[tuple[bool, float]] = []
    attempts: list[int] = []

    @q.handler(bytes, topic="t", timeout=10, retry=FAST)
    def h(msg: bytes, ctx: ringq.Context) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            ctx.heartbeat(0.1)
            t0 = time.monotonic()
            waited.append((ctx.cancelled.wait(5), time.monotonic() - t0))

    q.publish(b"x", "t")
    q.start()
    assert wait_until(lambda: len(waited) == 1 and attempts == [1, 2], 10)
    [(cancelled, after)] = waited
    assert cancelled and after < 2.0, waited
    assert wait_until(lambda: q.handler_stats()["h"]["abandoned_running"] == 0)
    q.stop()


def test_heartbeat_extends_the_lease_of_a_long_running_handler(open_queue: OpenQueue) -> None:
    q = open_queue()
    results: list[tuple[int, bool]] = []

    @q.handler(Order, timeout=0.3)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        for _ in range(8):  # 0.8 s of work under a 0.3 s lease
            time.sleep(0.1)
            ctx.heartbeat()
        results.append((ctx.attempt, ctx.cancelled.is_set()))

    q.publish(Order("o-1", 1.0))
    q.start()
    assert wait_until(lambda: len(results) == 1, 10)
    time.sleep(0.4)
    q.stop()
    assert results == [(1, False)], "completed on the first attempt, never cancelled"
    s = q.handler_stats()["on_order"]
    assert (s["succeeded"], s["late_acks"], s["abandoned_total"]) == (1, 0, 0)


class Repo:
    instances = 0
    closed = 0

    def __init__(self) -> None:
        Repo.instances += 1


class OnOrder(ringq.Handler[Order]):
    timeout = 10.0
    retry = FAST

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    def handle(self, msg: Order, ctx: ringq.Context) -> None:
        assert isinstance(self.repo, Repo)
        if msg.order_id == "fail":
            raise ValueError("fails")


def test_class_handler_is_built_per_message_with_a_fresh_scoped_dependency(
    open_queue: OpenQueue,
) -> None:
    container = Container()
    container.register(Repo, lifetime="scoped")
    q = open_queue(resolver=container)
    q.register(OnOrder)
    assert q.handlers.get("OnOrder").options.timeout == 10.0
    before = Repo.instances
    q.publish_many([Order(f"o-{i}", 1.0) for i in range(5)])
    q.start()
    assert wait_until(lambda: q.handler_stats()["OnOrder"]["succeeded"] == 5)
    q.stop()
    assert Repo.instances - before == 5


class NeedsMissing:
    def __init__(self, dep: Path) -> None:
        self.dep = dep


class OnShip(ringq.Handler[Ship]):
    retry = FAST

    def __init__(self, thing: NeedsMissing) -> None:
        self.thing = thing

    def handle(self, msg: Ship, ctx: ringq.Context) -> None:
        pass


def test_a_dependency_that_fails_to_resolve_is_a_failed_attempt_and_the_worker_survives(
    open_queue: OpenQueue,
) -> None:
    container = Container()
    container.register(NeedsMissing, lambda: (_ for _ in ()).throw(RuntimeError("db down")))
    q = open_queue(resolver=container)
    q.register(OnShip)
    mid = q.publish(Ship("s-1"))
    q.start()
    assert wait_until(lambda: len(q.dlq) == 1)
    # The worker is still there and takes new work.
    assert q.handler_stats()["OnShip"]["workers"] == 1
    q.stop()
    dead = q.dlq.get(mid)
    assert dead.reason == "max_attempts" and dead.attempts == 3
    assert dead.error_message is not None and "db down" in (dead.traceback or "")
    assert dead.error_type == "ringq.di.ResolutionError", "named where users import it"


def test_superseded_message_is_visible_to_its_handler_and_dropped_when_it_fails(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    entered = threading.Event()
    go = threading.Event()
    seen: list[tuple[float, bool]] = []

    @q.handler(Order, retry=FAST)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        if msg.amount == 1.0:
            entered.set()
            go.wait(5)
            seen.append((msg.amount, ctx.superseded))
            raise RuntimeError("old version fails")
        seen.append((msg.amount, ctx.superseded))

    q.publish(Order("o-1", 1.0), dedup_key="o-1")
    q.start()
    assert entered.wait(5)
    q.publish(Order("o-1", 2.0), dedup_key="o-1")
    go.set()
    assert wait_until(lambda: len(seen) == 2)
    q.stop()
    assert seen == [(1.0, True), (2.0, False)]
    assert len(q.dlq) == 0, "a superseded message that fails is dropped, not retried"
    assert q.stats()["superseded_dropped"] == 1


def test_scale_up_and_down_at_run_time(open_queue: OpenQueue) -> None:
    q = open_queue()
    gate = threading.Semaphore(0)

    @q.handler(Order, max_parallelism=1, prefetch=1)
    def on_order(msg: Order) -> None:
        gate.acquire(timeout=5)

    q.start()
    q.scale("on_order", 3)
    assert q.handler_stats()["on_order"]["workers"] == 3
    q.publish_many([Order(f"o-{i}", 1.0) for i in range(3)])
    assert wait_until(lambda: q.handler_stats()["on_order"]["active"] == 3)
    q.scale("on_order", 1)
    for _ in range(3):
        gate.release()
    assert wait_until(lambda: q.handler_stats()["on_order"]["workers"] == 1)
    q.scale("on_order", 0)
    assert wait_until(lambda: q.handler_stats()["on_order"]["workers"] == 0)
    q.publish(Order("paused", 1.0))
    time.sleep(0.2)
    assert q.stats()["ready"] == 1, "scaled to 0: paused"
    q.scale("on_order", 1)
    gate.release()
    assert wait_until(lambda: q.stats()["ready"] == 0)
    with pytest.raises(KeyError):
        q.scale("nope", 1)
    with pytest.raises(ringq.ConfigError):
        q.scale("on_order", -1)
    q.stop()


def test_stop_with_drain_handles_everything_ready_then_snapshots(open_queue: OpenQueue) -> None:
    q = open_queue()
    count = 0

    @q.handler(Order, max_parallelism=2)
    def on_order(msg: Order) -> None:
        nonlocal count
        count += 1
        time.sleep(0.001)

    q.publish_many([Order(f"o-{i}", 1.0) for i in range(200)])
    q.start()
    assert q.stop(drain=True, timeout=30)
    assert count == 200
    assert q.stats()["ready"] == 0 and q.stats()["in_flight"] == 0
    assert not q.running


def test_stop_without_drain_finishes_the_current_message_and_gives_the_rest_back(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    entered = threading.Event()
    finished: list[str] = []

    @q.handler(Order, prefetch=16)
    def on_order(msg: Order) -> None:
        entered.set()
        time.sleep(0.3)
        finished.append(msg.order_id)

    q.publish_many([Order(f"o-{i}", 1.0) for i in range(10)])
    q.start()
    assert entered.wait(5)
    assert q.stop(drain=False, timeout=10)
    assert finished == ["o-0"]
    s = q.stats()
    assert s["ready"] == 9 and s["in_flight"] == 0, "prefetched messages are given back"


def test_dead_letters_from_handlers_survive_a_restart(qdir: Path) -> None:
    with ringq.Queue(qdir) as q:

        @q.handler(Order, retry=ringq.Retry(max_attempts=1))
        def on_order(msg: Order) -> None:
            raise RuntimeError("nope")

        mid = q.publish(Order("o-1", 1.0))
        q.start()
        assert wait_until(lambda: len(q.dlq) == 1)
    with ringq.Queue(qdir) as q:
        dead = q.dlq.get(mid)
        assert (dead.reason, dead.handler, dead.attempts) == ("max_attempts", "on_order", 1)
        assert q.dlq.replay() == 1
        [d] = q.checkout(ringq.codecs.topic_for(Order), timeout=0)
        assert d.attempt == 1, "replay resets attempts"


def test_with_block_stops_handlers_and_closes(qdir: Path) -> None:
    seen: list[str] = []
    with ringq.Queue(qdir) as q:

        @q.handler(Order)
        def on_order(msg: Order) -> None:
            seen.append(msg.order_id)

        q.start()
        q.publish_many([Order(f"o-{i}", 1.0) for i in range(50)])
    assert q.closed
    assert len(seen) == 50, "leaving the block drains what was published"


def test_handler_context_logger_carries_the_message_ids(
    open_queue: OpenQueue, caplog: pytest.LogCaptureFixture
) -> None:
    q = open_queue()

    @q.handler(Order)
    def on_order(msg: Order, ctx: ringq.Context) -> None:
        ctx.log.info("handling %s", msg.order_id)

    mid = q.publish(Order("o-1", 1.0))
    with caplog.at_level(logging.INFO, logger="ringq.handler"):
        q.start()
        assert wait_until(lambda: q.handler_stats()["on_order"]["succeeded"] == 1)
        q.stop()
    [rec] = [r for r in caplog.records if r.getMessage() == "handling o-1"]
    extra: Any = rec
    assert (extra.message_id, extra.attempt, extra.handler) == (mid, 1, "on_order")


def test_queue_options_configure_the_engine_and_refuse_mixed_keywords(qdir: Path) -> None:
    env = {"RINGQ_CAPACITY": "3", "RINGQ_LEASE": "7.5", "RINGQ_HANDLER__ON_ORDER__TIMEOUT": "2"}
    options = ringq.QueueOptions.from_env(environ=env)
    with ringq.Queue(qdir, options=options) as q:
        assert q.stats()["capacity"] == 3
        q.publish(b"x")
        [d] = q.checkout(timeout=0)
        assert 7.0 < d.lease_deadline - time.time() <= 7.5

        @q.handler(Order)
        def on_order(msg: Order) -> None:
            pass

        assert q.handlers.get("on_order").options.timeout == 2.0
    with pytest.raises(ringq.ConfigError, match="capacity"):
        ringq.Queue(qdir, options=options, capacity=10)


# -- regressions from review ----------------------------------------------------------


def test_a_heartbeating_handler_keeps_its_batch_neighbours_alive_and_acks_the_done_ones(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    handled: list[str] = []

    @q.handler(str, topic="t", timeout=0.5, prefetch=3, retry=ringq.Retry(max_attempts=1))
    def h(msg: str, ctx: ringq.Context) -> None:
        handled.append(msg)
        if msg == "slow":
            for _ in range(12):  # 1.2 s under a 0.5 s lease
                time.sleep(0.1)
                ctx.heartbeat()

    q.publish_many(["fast", "slow", "after"], topic="t")
    q.start()
    assert wait_until(lambda: len(handled) == 3, 10)
    time.sleep(0.6)
    q.stop()
    assert handled == ["fast", "slow", "after"], "each exactly once"
    s = q.handler_stats()["h"]
    assert (s["succeeded"], s["late_acks"]) == (3, 0)
    assert len(q.dlq) == 0


def test_stop_without_drain_never_dead_letters_a_message_that_did_not_run(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    started = threading.Event()
    seen: list[str] = []

    @q.handler(str, topic="t", prefetch=5, retry=ringq.Retry(max_attempts=1))
    def h(msg: str) -> None:
        seen.append(msg)
        started.set()
        time.sleep(0.05)

    q.publish_many([f"m{i}" for i in range(5)], topic="t")
    q.start()
    assert started.wait(5)
    assert q.stop(drain=False, timeout=10)
    assert len(q.dlq) == 0, [d.message.payload for d in q.dlq.list()]
    assert q.stats()["in_flight"] == 0
    assert len(seen) + q.stats()["ready"] == 5


def test_a_staged_publish_the_engine_refuses_fails_the_attempt_and_the_worker_survives(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(max_payload=1000)

    @q.handler(str, topic="t", max_parallelism=2, retry=FAST)
    def h(msg: str, ctx: ringq.Context) -> None:
        ctx.publish(b"x" * (2000 if msg == "big" else 10), topic="out")

    big = q.publish("big", topic="t")
    q.start()
    assert wait_until(lambda: len(q.dlq) == 1)
    assert q.dlq.get(big).error_type == "ringq.LimitExceeded"
    q.publish("small", topic="t")
    assert wait_until(lambda: q.stats()["ready"] == 1, 5), "the small message chained one"
    assert q.handler_stats()["h"]["workers"] == 2
    q.stop()
    assert [d.payload for d in q.checkout("out", max_messages=5, timeout=0)] == [b"x" * 10]


def test_stop_does_not_wait_for_handler_threads_the_monitor_abandoned(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    started = threading.Event()
    release = threading.Event()

    @q.handler(str, topic="t", timeout=0.5, retry=ringq.Retry(max_attempts=1))
    def h(msg: str) -> None:
        started.set()
        release.wait(10)

    q.publish("stuck", topic="t")
    q.start()
    assert started.wait(5)
    t0 = time.monotonic()
    # stop() starts waiting for the busy worker; its lease runs out meanwhile.
    assert q.stop()
    took = time.monotonic() - t0
    release.set()
    assert took < 3.0, f"stop() waited {took:.1f}s for an abandoned thread"
    assert q.handler_stats()["h"]["abandoned_total"] == 1


def test_a_handler_raising_system_exit_is_a_failed_attempt_and_the_worker_survives(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()

    @q.handler(str, topic="t", max_parallelism=2, retry=ringq.Retry(max_attempts=1))
    def h(msg: str) -> None:
        raise SystemExit(3)

    mid = q.publish("x", topic="t")
    q.start()
    assert wait_until(lambda: len(q.dlq) == 1)
    assert q.handler_stats()["h"]["workers"] == 2
    q.stop()
    assert q.dlq.get(mid).error_type == "SystemExit"
    assert q.stats()["in_flight"] == 0


def test_after_a_drain_timeout_workers_take_no_new_messages(open_queue: OpenQueue) -> None:
    q = open_queue()
    count = 0

    @q.handler(str, topic="t", prefetch=1)
    def h(msg: str) -> None:
        nonlocal count
        time.sleep(0.1)
        count += 1

    q.publish_many([f"m{i}" for i in range(20)], topic="t")
    q.start()
    time.sleep(0.05)
    assert not q.stop(drain=True, timeout=0.2)
    after_stop = count
    time.sleep(0.5)
    assert count <= after_stop + 1, "only the message being handled finishes"

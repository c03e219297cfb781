"""Publish, checkout, ack: the round trip, ordering, blocking and lifecycle."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue, drain

ID = re.compile(r"^[0-9a-f]{16}$")


def test_round_trip_fills_every_delivery_field(open_queue: OpenQueue) -> None:
    q = open_queue(lease=7.0)
    before = time.time()
    mid = q.publish(
        b"hello",
        "orders",
        dedup_key="k-1",
        headers={"h": "v", "trace": "abc"},
        correlation_id="corr-1",
        causation_id="cause-1",
    )
    assert ID.match(mid)
    [d] = q.checkout("orders", timeout=0)
    after = time.time()
    assert d.id == mid
    assert d.topic == "orders"
    assert d.payload == b"hello"
    assert d.attempt == 1
    assert d.dedup_key == "k-1"
    assert d.version == 1
    assert d.correlation_id == "corr-1"
    assert d.causation_id == "cause-1"
    assert d.headers == {"h": "v", "trace": "abc"}
    assert before - 0.01 <= d.enqueued_at <= after + 0.01
    assert before + 7.0 - 0.01 <= d.lease_deadline <= after + 7.0 + 0.5
    assert isinstance(d.lease_token, int)
    assert q.stats()["in_flight"] == 1
    q.ack(d)
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["total"], s["acked"]) == (0, 0, 0, 1)


def test_plain_message_has_empty_optional_fields(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.publish(b"x")
    [d] = q.checkout(timeout=0)
    assert d.topic == "default"
    assert d.dedup_key is None
    assert d.correlation_id is None
    assert d.causation_id is None
    assert d.headers == {}


def test_str_payload_is_utf8_and_objects_are_json_on_their_type_topic(
    open_queue: OpenQueue,
) -> None:
    @dataclass
    class OrderPlaced:
        order_id: str
        amount: float

    q = open_queue()
    q.publish("héllo")
    q.publish(OrderPlaced("o-1", 9.5))
    [d] = q.checkout(timeout=0)
    assert d.payload == "héllo".encode()
    topic = f"{OrderPlaced.__module__}.{OrderPlaced.__qualname__}"
    [o] = q.checkout(topic, timeout=0)
    assert o.payload == b'{"order_id":"o-1","amount":9.5}'
    q.publish(OrderPlaced("o-2", 1.0), topic="explicit")
    assert q.checkout("explicit", timeout=0)[0].payload == b'{"order_id":"o-2","amount":1.0}'


def test_ids_increase_in_publish_order(open_queue: OpenQueue) -> None:
    q = open_queue()
    ids = [q.publish(b"%d" % i, f"t{i % 3}") for i in range(200)]
    ids += q.publish_many([b"a", b"b", "c", ringq.Message(b"d", topic="other")])
    assert all(ID.match(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_fifo_per_topic(open_queue: OpenQueue) -> None:
    q = open_queue()
    ids = [q.publish(b"%d" % i) for i in range(50)]
    got = [d.id for d in q.checkout(max_messages=7, timeout=0)]
    got += [d.id for d in drain(q)]
    assert got == ids


def test_topics_are_independent(open_queue: OpenQueue) -> None:
    q = open_queue()
    a = [q.publish(b"a%d" % i, "a") for i in range(5)]
    b = [q.publish(b"b%d" % i, "b") for i in range(5)]
    assert [d.id for d in q.checkout("b", max_messages=10, timeout=0)] == b
    assert q.checkout("b", timeout=0) == []
    assert q.checkout("nothing-here", timeout=0) == []
    assert [d.id for d in q.checkout("a", max_messages=10, timeout=0)] == a


def test_publish_many_mixes_bytes_str_objects_and_messages(open_queue: OpenQueue) -> None:
    q = open_queue()
    ids = q.publish_many(
        [
            b"raw",
            "text",
            {"k": 1},
            ringq.Message(b"m", dedup_key="key", headers={"a": "b"}, correlation_id="c"),
            ringq.Message(b"elsewhere", topic="other"),
        ],
        topic="batch",
    )
    assert len(ids) == 5
    ds = q.checkout("batch", max_messages=10, timeout=0)
    assert [d.payload for d in ds] == [b"raw", b"text", b'{"k":1}', b"m"]
    assert ds[3].dedup_key == "key"
    assert ds[3].headers == {"a": "b"}
    assert ds[3].correlation_id == "c"
    [other] = q.checkout("other", timeout=0)
    assert other.id == ids[4]
    assert q.publish_many([]) == []


def test_checkout_with_timeout_zero_returns_immediately(open_queue: OpenQueue) -> None:
    q = open_queue()
    t0 = time.monotonic()
    assert q.checkout(timeout=0) == []
    assert q.checkout("other", max_messages=100, timeout=0) == []
    assert time.monotonic() - t0 < 0.1


def test_checkout_timeout_returns_empty_after_waiting(open_queue: OpenQueue) -> None:
    q = open_queue()
    t0 = time.monotonic()
    assert q.checkout(timeout=0.2) == []
    assert 0.15 <= time.monotonic() - t0 < 2.0


def test_blocking_checkout_is_woken_by_publish_and_releases_the_gil(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    got: list[list[ringq.Delivery]] = []
    woke_at: list[float] = []

    def consumer() -> None:
        got.append(q.checkout("wake", timeout=10))
        woke_at.append(time.monotonic())

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    time.sleep(0.1)
    # The consumer waits inside the engine; this thread must keep running Python.
    spins = 0
    spin_until = time.monotonic() + 0.2
    while time.monotonic() < spin_until:
        spins += 1
    assert spins > 1000
    assert t.is_alive()
    published_at = time.monotonic()
    mid = q.publish(b"wake up", "wake")
    t.join(timeout=5)
    assert not t.is_alive()
    assert [d.id for d in got[0]] == [mid]
    assert woke_at[0] - published_at < 0.5


def test_blocking_checkout_with_no_timeout_waits_for_publish(open_queue: OpenQueue) -> None:
    q = open_queue()
    got: list[list[ringq.Delivery]] = []
    t = threading.Thread(target=lambda: got.append(q.checkout(max_messages=5)), daemon=True)
    t.start()
    time.sleep(0.2)
    assert t.is_alive()
    ids = q.publish_many([b"1", b"2"])
    t.join(timeout=5)
    assert not t.is_alive()
    assert [d.id for d in got[0]] == ids[: len(got[0])]
    assert len(got[0]) >= 1


def test_with_block_closes_the_queue(qdir: Path) -> None:
    with ringq.Queue(qdir) as q:
        q.publish(b"x")
        assert not q.closed
        assert "open" in repr(q)
    assert q.closed
    assert "closed" in repr(q)
    # the lock is released: the directory opens again
    with ringq.Queue(qdir) as again:
        assert again.stats()["ready"] == 1


def test_calls_after_close_raise_queue_closed(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.close()
    assert q.closed
    calls = {
        "publish": lambda: q.publish(b"y"),
        "publish(str)": lambda: q.publish("str"),
        "publish_many": lambda: q.publish_many([b"a"]),
        "checkout": lambda: q.checkout(timeout=0),
        "ack": lambda: q.ack(d),
        "nack": lambda: q.nack(d),
        "extend": lambda: q.extend(d, 1.0),
        "stats": lambda: q.stats(),
        "snapshot": lambda: q.snapshot(),
        "dlq.list": lambda: q.dlq.list(),
        "dlq.replay": lambda: q.dlq.replay(),
    }
    did_not_raise = []
    for name, call in calls.items():
        try:
            call()
        except ringq.QueueClosed:
            continue
        did_not_raise.append(name)
    assert did_not_raise == []
    q.close()  # closing twice is harmless


def test_close_wakes_a_blocked_consumer(open_queue: OpenQueue) -> None:
    q = open_queue()
    outcome: list[object] = []

    def consumer() -> None:
        try:
            outcome.append(q.checkout(timeout=10))
        except ringq.QueueClosed as exc:
            outcome.append(exc)

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    time.sleep(0.1)
    q.close()
    t.join(timeout=3)
    assert not t.is_alive()
    assert outcome and (outcome[0] == [] or isinstance(outcome[0], ringq.QueueClosed))


def test_path_accepts_pathlike_and_str(tmp_path: Path, open_queue: OpenQueue) -> None:
    a = open_queue(tmp_path / "a")
    b = open_queue(str(tmp_path / "b"))
    assert Path(a.path) == tmp_path / "a"
    assert Path(b.path) == tmp_path / "b"


@pytest.mark.parametrize(
    "options",
    [
        {"durability": "sometimes"},
        {"capacity": 0},
        {"fsync_interval": -1.0},
        {"lease": 0},
        {"lease": -5.0},
        {"max_attempts": 0},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_invalid_config_raises_config_error(qdir: Path, options: dict[str, object]) -> None:
    with pytest.raises(ringq.ConfigError) as info:
        ringq.Queue(qdir, **options)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ringq.RingqError)
    # a refused configuration leaves the directory free for a valid one
    ringq.Queue(qdir).close()


def test_exceptions_form_one_hierarchy() -> None:
    for exc in (
        ringq.QueueLocked,
        ringq.QueueFull,
        ringq.QueueClosed,
        ringq.LeaseLost,
        ringq.VersionConflict,
        ringq.LimitExceeded,
        ringq.ConfigError,
        ringq.CorruptionError,
        ringq.StorageError,
        ringq.NotFound,
    ):
        assert issubclass(exc, ringq.RingqError)
    assert issubclass(ringq.StorageError, OSError)
    assert issubclass(ringq.NotFound, KeyError)
    assert issubclass(ringq.LimitExceeded, ValueError)
    assert set(ringq.__all__) >= {"Queue", "Delivery", "DeadLetter", "Message", "__version__"}
    assert isinstance(ringq.__version__, str)

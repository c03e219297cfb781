"""The local queue's own behaviour around the contract: encoding payloads,
batches of mixed items, waits in real time (a checkout's timeout, waking a
blocked checkout with the GIL released), paths, options and the exception
hierarchy. The contract itself (delivery fields, ordering, closing, ...) is
``tests/contract``."""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue, wait_until


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


def test_deliveries_stay_off_the_cyclic_garbage_collector(open_queue: OpenQueue) -> None:
    """A ``Delivery`` refers to no Python object but its payload ``bytes``,
    and its class takes no attributes, weak references or subclasses, so it
    can never be part of a reference cycle: a checkout's deliveries are not
    tracked by ``gc`` (tracked, the ones a consumer keeps made every
    collection walk all of them). They stay whole through collections."""
    q = open_queue()
    q.publish_many([b"a", b"b", b"c"], "t")
    got = q.checkout("t", max_messages=3, timeout=0)
    assert [gc.is_tracked(d) for d in got] == [False, False, False]
    assert all(type(d.payload) is bytes for d in got), "exact bytes: untracked, no cycle"
    with pytest.raises(AttributeError):
        got[0].note = "x"  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        type("Sub", (ringq.Delivery,), {})
    assert ringq.Delivery.__weakrefoffset__ == 0
    gc.collect()
    assert [d.payload for d in got] == [b"a", b"b", b"c"]
    q.ack(got)


def test_untrack_deliveries_leaves_what_could_be_in_a_cycle_tracked() -> None:
    """``ringq.backend.untrack_deliveries`` (for backends written in Python)
    untracks a delivery of exact ``bytes``; one whose payload is a ``bytes``
    subclass (which may hold a ``__dict__``) stays tracked, and other items
    are left alone."""
    from ringq.backend import untrack_deliveries

    class Tagged(bytes):
        pass

    plain = ringq.Delivery("0000000000000001", "t", b"x")
    tagged = ringq.Delivery("0000000000000002", "t", Tagged(b"y"))
    other: list[object] = ["not a delivery"]
    assert gc.is_tracked(plain) and gc.is_tracked(tagged)
    untrack_deliveries([plain, tagged, other])  # type: ignore[list-item]
    assert (gc.is_tracked(plain), gc.is_tracked(tagged), gc.is_tracked(other)) == (
        False,
        True,
        True,
    )


def test_always_threads_publishing_at_once_share_fsyncs(open_queue: OpenQueue) -> None:
    """``durability="always"``: every publish returns after an fsync that
    covers it, and 8 threads publishing at once share them (group commit):
    fewer fsyncs than publishes, and every confirmed record is durable."""
    q = open_queue(durability="always")
    start = threading.Barrier(8)
    per_thread = 50

    early: list[tuple[int, int]] = []

    def publisher(n: int) -> None:
        start.wait(10)
        for i in range(per_thread):
            before = q.stats()["lsn"]  # this publish's record comes after
            q.publish(b"%d-%d" % (n, i), "t")
            if q.stats()["durable_lsn"] <= before:
                early.append((n, i))

    fsyncs = q.stats()["fsyncs"]
    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    s = q.stats()
    assert s["total"] == 8 * per_thread
    assert early == [], "publishes that returned before their fsync"
    assert s["durable_lsn"] == s["lsn"]
    assert s["fsyncs"] - fsyncs < 8 * per_thread, "no fsync was shared"


def test_batch_durability_fsyncs_within_its_interval(open_queue: OpenQueue) -> None:
    """``durability="batch"``: a publish returns at once and the flusher's
    fsync covers it within ``fsync_interval`` (50 ms here; the check allows
    a loaded machine 40 times that)."""
    q = open_queue(durability="batch", fsync_interval=0.05)
    for i in range(5):
        q.publish(b"%d" % i, "t")
        lsn = q.stats()["lsn"]
        started = time.monotonic()
        assert wait_until(lambda lsn=lsn: q.stats()["durable_lsn"] >= lsn, 2.0)
        assert time.monotonic() - started < 2.0


def test_a_delivery_reads_an_empty_correlation_or_causation_id_as_none() -> None:
    """A message stored with an empty id before the engine stored it as none
    (or made by a backend written in Python) reads the same as one without."""
    d = ringq.Delivery("0000000000000001", "t", b"x", correlation_id="", causation_id="")
    assert (d.correlation_id, d.causation_id) == (None, None)
    e = ringq.Delivery("0000000000000002", "t", b"y", correlation_id="c", causation_id="z")
    assert (e.correlation_id, e.causation_id) == ("c", "z")

"""Dead letters: error details, listing, replay, purge, persistence, bound."""

from __future__ import annotations

import time

import pytest
import ringq
from conftest import OpenQueue


class PaymentDeclined(Exception):
    pass


def dead_letter(q: ringq.Queue, payload: bytes, topic: str = "default", **publish: object) -> str:
    """Publish one message and dead-letter it at once as non-retryable."""
    mid = q.publish(payload, topic, **publish)  # type: ignore[arg-type]
    [d] = q.checkout(topic, timeout=0)
    assert d.id == mid
    q._backend.nack(d, error_message="bad", dead_letter_reason="non_retryable")
    return mid


def fail_with_traceback() -> None:
    raise PaymentDeclined("card 4242 declined")


def test_nack_with_exception_records_error_details(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=2)
    mid = q.publish(b"order", "orders", correlation_id="corr-9", headers={"h": "1"})
    t0 = time.time()
    for _ in range(2):
        [d] = q.checkout("orders", timeout=0)
        try:
            fail_with_traceback()
        except PaymentDeclined as exc:
            q.nack(d, error=exc)
    t1 = time.time()
    [dead] = q.dlq.list()
    assert dead.id == mid
    assert dead.reason == "max_attempts"
    assert dead.error_type == f"{__name__}.PaymentDeclined"
    assert dead.error_message == "card 4242 declined"
    assert dead.traceback is not None
    assert "fail_with_traceback" in dead.traceback
    assert "PaymentDeclined: card 4242 declined" in dead.traceback
    assert dead.attempts == 2
    assert dead.handler is None
    assert dead.first_failed_at is not None
    assert t0 - 0.01 <= dead.first_failed_at <= dead.dead_lettered_at <= t1 + 0.01
    msg = dead.message
    assert (msg.id, msg.topic, msg.payload) == (mid, "orders", b"order")
    assert (msg.correlation_id, msg.headers) == ("corr-9", {"h": "1"})


def test_nack_with_builtin_exception_and_with_string(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=1)
    a = q.publish(b"a")
    b = q.publish(b"b")
    [da, db] = q.checkout(max_messages=2, timeout=0)
    q.nack(da, error=ValueError("bad value"))
    q.nack(db, error="plain message")
    dead_a, dead_b = q.dlq.get(a), q.dlq.get(b)
    assert (dead_a.error_type, dead_a.error_message) == ("ValueError", "bad value")
    assert (dead_b.error_type, dead_b.error_message, dead_b.traceback) == (
        None,
        "plain message",
        None,
    )


def test_list_filters_by_topic_reason_and_limit(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=1)
    a1 = dead_letter(q, b"a1", "a")
    b1 = dead_letter(q, b"b1", "b")
    a2 = dead_letter(q, b"a2", "a")
    m = q.publish(b"m", "a")
    [d] = q.checkout("a", timeout=0)
    q.nack(d)
    assert [x.id for x in q.dlq.list()] == [a1, b1, a2, m]
    assert [x.id for x in q.dlq.list(topic="a")] == [a1, a2, m]
    assert [x.id for x in q.dlq.list(reason="non_retryable")] == [a1, b1, a2]
    assert [x.id for x in q.dlq.list(reason="max_attempts")] == [m]
    assert [x.id for x in q.dlq.list(topic="b", reason="max_attempts")] == []
    assert len(q.dlq.list(limit=2)) == 2
    assert [x.id for x in q.dlq] == [a1, b1, a2, m]
    assert len(q.dlq) == 4


def test_get_returns_dead_letter_or_raises_not_found(open_queue: OpenQueue) -> None:
    q = open_queue()
    mid = dead_letter(q, b"x")
    assert q.dlq.get(mid).message.payload == b"x"
    with pytest.raises(ringq.NotFound):
        q.dlq.get("ffffffffffffffff")
    live = q.publish(b"live")
    with pytest.raises(KeyError):
        q.dlq.get(live)


def test_replay_resets_attempts_and_keeps_correlation(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=2)
    mid = q.publish(b"x", "t", dedup_key="k", correlation_id="corr", causation_id="cause")
    for _ in range(2):
        [d] = q.checkout("t", timeout=0)
        q.nack(d)
    assert len(q.dlq) == 1
    assert q.dlq.replay() == 1
    assert len(q.dlq) == 0
    s = q.stats()
    assert (s["ready"], s["dead"]) == (1, 0)
    [again] = q.checkout("t", timeout=0)
    assert again.id != mid
    assert again.id > mid
    assert again.attempt == 1
    assert (again.payload, again.dedup_key) == (b"x", "k")
    assert (again.correlation_id, again.topic) == ("corr", "t")


def test_replay_by_ids_and_by_predicate(open_queue: OpenQueue) -> None:
    q = open_queue()
    a = dead_letter(q, b"a", "a")
    b = dead_letter(q, b"b", "b")
    c = dead_letter(q, b"c", "a")
    assert q.dlq.replay(ids=[b]) == 1
    assert [x.id for x in q.dlq.list()] == [a, c]
    assert q.dlq.replay(where=lambda x: x.message.payload == b"c") == 1
    assert [x.id for x in q.dlq.list()] == [a]
    assert q.dlq.replay(where=lambda x: False) == 0
    assert q.dlq.replay(ids=[a], where=lambda x: x.message.topic == "b") == 0
    assert [x.id for x in q.dlq.list()] == [a]
    assert [d.payload for d in q.checkout("a", max_messages=5, timeout=0)] == [b"c"]
    assert [d.payload for d in q.checkout("b", max_messages=5, timeout=0)] == [b"b"]


def test_replay_with_a_rate_paces_the_messages_and_keeps_their_order(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    ids = [dead_letter(q, f"m{i}".encode(), "t") for i in range(30)]
    t0 = time.monotonic()
    assert q.dlq.replay(rate=100.0) == 30
    took = time.monotonic() - t0
    assert took >= 0.25, f"30 messages at 100/s took only {took:.3f}s"
    assert len(q.dlq) == 0
    got = q.checkout("t", max_messages=100, timeout=0)
    assert [d.payload for d in got] == [f"m{i}".encode() for i in range(30)]
    assert all(d.id not in ids for d in got)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ringq.ConfigError, match="rate"):
            q.dlq.replay(rate=bad)


def test_purge_by_ids_predicate_and_all(open_queue: OpenQueue) -> None:
    q = open_queue()
    ids = [dead_letter(q, b"%d" % i) for i in range(5)]
    assert q.dlq.purge(ids=[ids[0]]) == 1
    assert q.dlq.purge(where=lambda x: x.message.payload == b"1") == 1
    assert [x.id for x in q.dlq] == ids[2:]
    assert q.dlq.purge() == 3
    assert len(q.dlq) == 0
    s = q.stats()
    assert (s["dead"], s["ready"], s["total"]) == (0, 0, 0)


def test_dead_letters_replay_and_purge_survive_reopen(open_queue: OpenQueue) -> None:
    q = open_queue(max_attempts=1)
    mid = q.publish(b"x", "t", correlation_id="c", headers={"a": "b"})
    [d] = q.checkout("t", timeout=0)
    try:
        raise PaymentDeclined("nope")
    except PaymentDeclined as exc:
        q.nack(d, error=exc)
    purged = dead_letter(q, b"purged", "t")
    replayed = dead_letter(q, b"replayed", "t")
    before = q.dlq.get(mid)
    q.dlq.purge(ids=[purged])
    q.dlq.replay(ids=[replayed])
    q.close()

    q = open_queue(max_attempts=1)
    assert [x.id for x in q.dlq.list()] == [mid]
    after = q.dlq.get(mid)
    for field in (
        "reason",
        "error_type",
        "error_message",
        "traceback",
        "attempts",
        "first_failed_at",
        "dead_lettered_at",
    ):
        assert getattr(after, field) == getattr(before, field), field
    assert (after.message.payload, after.message.correlation_id) == (b"x", "c")
    assert after.message.headers == {"a": "b"}
    [again] = q.checkout("t", timeout=0)
    assert (again.payload, again.attempt) == (b"replayed", 1)


def test_dlq_capacity_evicts_the_oldest(open_queue: OpenQueue) -> None:
    q = open_queue(dlq_capacity=3)
    ids = [dead_letter(q, b"%d" % i) for i in range(5)]
    assert [x.id for x in q.dlq.list()] == ids[2:]
    s = q.stats()
    assert (s["dead"], s["dlq_evicted"], s["dead_lettered"]) == (3, 2, 5)
    with pytest.raises(ringq.NotFound):
        q.dlq.get(ids[0])

"""Dead letters: the original message plus reason, last error (type,
message, traceback), handler, attempts and timestamps; listed, read,
replayed (attempts reset, correlation kept) and purged; bounded."""

from __future__ import annotations

import pytest
import ringq

from .conftest import Harness, at, dead_letter


class PaymentDeclined(Exception):
    pass


def fail_with_traceback() -> None:
    raise PaymentDeclined("card 4242 declined")


def test_a_nack_with_an_exception_records_its_details(harness: Harness) -> None:
    q = harness.open(max_attempts=2)
    published_at = harness.now()
    mid = q.publish(b"order", "orders", correlation_id="corr-9", headers={"h": "1"})
    failed_at = []
    for _ in range(2):
        [d] = q.checkout("orders", timeout=0)
        failed_at.append(harness.advance(3))
        try:
            fail_with_traceback()
        except PaymentDeclined as exc:
            q.nack(d, error=exc)
    [dead] = q.dlq.list()
    assert dead.id == mid
    assert dead.topic == "orders"
    assert dead.reason == "max_attempts"
    assert dead.error_type == f"{__name__}.PaymentDeclined"
    assert dead.error_message == "card 4242 declined"
    assert dead.traceback is not None
    assert "fail_with_traceback" in dead.traceback
    assert "PaymentDeclined: card 4242 declined" in dead.traceback
    assert dead.attempts == 2
    assert dead.handler is None
    assert dead.first_failed_at == at(failed_at[0])
    assert dead.dead_lettered_at == at(failed_at[1])
    msg = dead.message
    assert (msg.id, msg.topic, msg.payload) == (mid, "orders", b"order")
    assert (msg.correlation_id, msg.headers) == ("corr-9", {"h": "1"})
    assert msg.enqueued_at == at(published_at)


def test_a_nack_with_a_builtin_exception_or_a_string(harness: Harness) -> None:
    q = harness.open(max_attempts=1)
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


def test_the_handler_named_on_the_failure_is_recorded(harness: Harness) -> None:
    q = harness.open(max_attempts=1)
    mid = q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q.backend.nack(d, error_type="E", error_message="m", traceback="tb", handler="on_x")
    dead = q.dlq.get(mid)
    assert (dead.handler, dead.error_type, dead.error_message, dead.traceback) == (
        "on_x",
        "E",
        "m",
        "tb",
    )


def test_list_filters_by_topic_reason_and_limit(harness: Harness) -> None:
    q = harness.open(max_attempts=1)
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


def test_get_returns_a_dead_letter_or_raises_not_found(q: ringq.Queue) -> None:
    mid = dead_letter(q, b"x")
    assert q.dlq.get(mid).message.payload == b"x"
    with pytest.raises(ringq.NotFound):
        q.dlq.get("ffffffffffffffff")
    live = q.publish(b"live")
    with pytest.raises(KeyError):
        q.dlq.get(live)


def test_replay_resets_attempts_and_keeps_key_and_correlation(harness: Harness) -> None:
    q = harness.open(max_attempts=2)
    mid = q.publish(b"x", "t", dedup_key="k", correlation_id="corr", causation_id="cause")
    for _ in range(2):
        [d] = q.checkout("t", timeout=0)
        q.nack(d)
    assert len(q.dlq) == 1
    replayed_at = harness.advance(5)
    assert q.dlq.replay() == 1
    assert len(q.dlq) == 0
    s = q.stats()
    assert (s["ready"], s["dead"]) == (1, 0)
    [again] = q.checkout("t", timeout=0)
    assert again.id != mid
    assert again.id > mid
    assert again.attempt == 1
    assert (again.payload, again.dedup_key) == (b"x", "k")
    assert (again.correlation_id, again.causation_id, again.topic) == ("corr", "cause", "t")
    assert again.enqueued_at == at(replayed_at)


def test_replay_leaves_an_entry_whose_key_is_live_or_taken_and_those_past_the_room(
    harness: Harness,
) -> None:
    """A dead letter whose dedup key is live in the queue again (or taken by
    an earlier entry of the same replay) stays a dead letter: replayed, two
    live messages would hold one key. With too little room, the oldest
    entries are replayed and the rest stay. The version is kept. (The Redis
    backend replayed over a live key, refused the whole replay for want of
    room and reset the version.)"""
    q = harness.open(capacity=3)
    held = dead_letter(q, b"held v1", "k", dedup_key="k")
    q.publish(b"held v2", "k", dedup_key="k")  # the key is live again
    twice = dead_letter(q, b"twice v1", "j", dedup_key="j")
    later = dead_letter(q, b"twice v2", "j", dedup_key="j")
    versioned = q.publish(b"v1", "u", dedup_key="v")
    q.publish(b"v2", "u", dedup_key="v")  # version 2
    [d] = q.checkout("u", timeout=0)
    assert (d.id, d.version) == (versioned, 2)
    q.backend.nack(d, error_message="bad", dead_letter_reason="non_retryable")
    extra = [dead_letter(q, b"extra %d" % i, "w") for i in range(2)]
    # Room for 2 (one live message): "held v1" stays (its key is live),
    # "twice v1" goes, "twice v2" stays (its key was just taken), the
    # versioned one goes; the rest finds no room.
    assert q.dlq.replay() == 2
    assert [x.id for x in q.dlq.list()] == [held, later, *extra]
    assert [x.payload for x in q.checkout("j", max_messages=5, timeout=0)] == [b"twice v1"]
    [u] = q.checkout("u", timeout=0)
    assert (u.payload, u.version, u.dedup_key) == (b"v2", 2, "v")
    assert twice != later
    assert q.stats()["ready"] == 1  # "held v2"


def test_replay_by_ids_and_by_predicate(q: ringq.Queue) -> None:
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


def test_purge_by_ids_by_predicate_and_all(q: ringq.Queue) -> None:
    ids = [dead_letter(q, b"%d" % i) for i in range(5)]
    assert q.dlq.purge(ids=[ids[0]]) == 1
    assert q.dlq.purge(where=lambda x: x.message.payload == b"1") == 1
    assert [x.id for x in q.dlq] == ids[2:]
    assert q.dlq.purge() == 3
    assert len(q.dlq) == 0
    s = q.stats()
    assert (s["dead"], s["ready"], s["total"]) == (0, 0, 0)


def test_dead_letters_replays_and_purges_survive_a_reopen(harness: Harness) -> None:
    q = harness.open(max_attempts=1)
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

    q = harness.open(max_attempts=1)
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


def test_the_dead_letter_queue_is_bounded_and_evicts_the_oldest(harness: Harness) -> None:
    q = harness.open(dlq_capacity=3)
    ids = [dead_letter(q, b"%d" % i) for i in range(5)]
    assert [x.id for x in q.dlq.list()] == ids[2:]
    s = q.stats()
    assert (s["dead"], s["dlq_evicted"], s["dead_lettered"]) == (3, 2, 5)
    with pytest.raises(ringq.NotFound):
        q.dlq.get(ids[0])


def test_listing_limits_and_ids_that_are_not_ids_are_treated_alike(harness: Harness) -> None:
    """``limit=0`` lists nothing and a negative one is refused; an id that
    is not one (16 hex digits) is ``NotFound`` for replay and purge (Redis
    listed one entry for both limits and purged nothing without a word)."""
    q = harness.open(max_attempts=1)
    q.publish(b"x", "t")
    [d] = q.checkout("t", timeout=0)
    q.nack(d, error="bad")
    assert q.dlq.list(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        q.dlq.list(limit=-1)
    for call in (q.dlq.purge, q.dlq.replay):
        with pytest.raises(ringq.NotFound):
            call(["zz"])
    assert len(q.dlq) == 1

"""Dedup keys: a ready or delayed holder is replaced in place (same id and
position, version + 1); an in-flight holder is superseded by a new message
(dropped, not retried, if it then fails); ``on_duplicate="keep"`` keeps the
live one; ``publish`` returns the id now carrying the key's payload;
``expected_version`` makes a publish conditional."""

from __future__ import annotations

import pytest
import ringq

from .conftest import Harness, drain


def test_replace_in_place_keeps_id_and_position_and_bumps_the_version(q: ringq.Queue) -> None:
    first = q.publish(b"before", dedup_key="k")
    other = q.publish(b"other")
    again = q.publish(b"after", dedup_key="k")
    assert again == first
    s = q.stats()
    assert (s["ready"], s["total"], s["replaced"]) == (2, 2, 1)
    ds = drain(q)
    assert [d.id for d in ds] == [first, other]
    assert (ds[0].payload, ds[0].version, ds[0].dedup_key) == (b"after", 2, "k")
    assert ds[1].version == 1


def test_a_replace_keeps_the_priority_and_ordering_key_within_a_batch_too(
    q: ringq.Queue,
) -> None:
    """A key published twice in one ``publish_many`` behaves as two publishes
    would: the second replaces the first in place, which keeps its priority
    and ordering key (the engine took the second item's, none, there)."""
    for batched in (False, True):
        first = ringq.Message(b"v1", topic="t", dedup_key="k", ordering_key="o", priority=5)
        second = ringq.Message(b"v2", topic="t", dedup_key="k")
        if batched:
            q.publish_many([first, second])
        else:
            q.publish_many([first])
            q.publish_many([second])
        q.publish(b"w", "t", ordering_key="o")
        got = q.checkout("t", max_messages=5, timeout=0)
        assert [(d.payload, d.ordering_key, d.priority) for d in got] == [(b"v2", "o", 5)], batched
        q.ack(got)
        [w] = q.checkout("t", max_messages=5, timeout=0)
        assert (w.payload, w.ordering_key) == (b"w", "o")
        q.ack(w)


def test_each_replace_bumps_the_version(q: ringq.Queue) -> None:
    ids = {q.publish(b"v%d" % i, dedup_key="k") for i in range(5)}
    assert len(ids) == 1
    [d] = q.checkout(timeout=0)
    assert (d.version, d.payload) == (5, b"v4")


def test_dedup_keys_are_per_topic(q: ringq.Queue) -> None:
    a = q.publish(b"a", "a", dedup_key="k")
    b = q.publish(b"b", "b", dedup_key="k")
    assert a != b
    assert q.stats()["ready"] == 2


def test_replacing_a_delayed_message_keeps_it_delayed_until_its_due_time(
    harness: Harness,
) -> None:
    q = harness.open()
    first = q.publish(b"old", dedup_key="k", delay=60.0)
    harness.advance(30)
    assert q.publish(b"new", dedup_key="k", delay=60.0) == first
    s = q.stats()
    assert (s["delayed"], s["ready"], s["total"]) == (1, 0, 1)
    harness.advance(30)
    [d] = q.checkout(timeout=0)
    assert (d.id, d.payload, d.version) == (first, b"new", 2)


def test_keep_returns_the_live_id_and_ignores_the_new_payload(q: ringq.Queue) -> None:
    first = q.publish(b"original", dedup_key="k")
    assert q.publish(b"ignored", dedup_key="k", on_duplicate="keep") == first
    s = q.stats()
    assert (s["kept"], s["replaced"], s["total"]) == (1, 0, 1)
    [d] = q.checkout(timeout=0)
    assert (d.id, d.payload, d.version) == (first, b"original", 1)
    # keep also applies while the holder is in flight
    assert q.publish(b"ignored again", dedup_key="k", on_duplicate="keep") == first
    assert q.stats()["total"] == 1
    assert not q.backend.is_superseded(d)


def test_keep_applies_to_a_delayed_holder_too(q: ringq.Queue) -> None:
    first = q.publish(b"original", dedup_key="k", delay=60)
    assert q.publish(b"ignored", dedup_key="k", on_duplicate="keep") == first
    assert q.stats()["total"] == 1


def test_replacing_an_in_flight_holder_queues_a_new_message_and_supersedes_the_old(
    q: ringq.Queue,
) -> None:
    first = q.publish(b"v1", dedup_key="k")
    [held] = q.checkout(timeout=0)
    assert not q.backend.is_superseded(held)
    second = q.publish(b"v2", dedup_key="k")
    assert second != first
    assert second > first
    assert q.backend.is_superseded(held)
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["superseded"]) == (1, 1, 1)
    # further publishes replace the queued successor in place
    assert q.publish(b"v3", dedup_key="k") == second
    [d] = q.checkout(timeout=0)
    assert (d.id, d.payload, d.attempt, d.version) == (second, b"v3", 1, 3)


def test_a_superseded_message_that_fails_is_dropped_not_retried(q: ringq.Queue) -> None:
    first = q.publish(b"v1", dedup_key="k")
    [held] = q.checkout(timeout=0)
    second = q.publish(b"v2", dedup_key="k")
    q.nack(held, error="failed")
    s = q.stats()
    assert (s["superseded_dropped"], s["dead"]) == (1, 0)
    assert (s["ready"], s["in_flight"], s["total"]) == (1, 0, 1)
    ds = drain(q)
    assert [d.id for d in ds] == [second]
    assert first not in {d.id for d in ds}
    assert len(q.dlq) == 0


def test_the_ack_of_a_superseded_message_is_fine_and_leaves_the_successor(q: ringq.Queue) -> None:
    q.publish(b"v1", dedup_key="k")
    [held] = q.checkout(timeout=0)
    second = q.publish(b"v2", dedup_key="k")
    q.ack(held)
    [d] = q.checkout(timeout=0)
    assert (d.id, d.payload) == (second, b"v2")


def test_expected_version_zero_means_must_not_exist(q: ringq.Queue) -> None:
    first = q.publish(b"v1", dedup_key="k", expected_version=0)
    with pytest.raises(ringq.VersionConflict) as info:
        q.publish(b"v1 again", dedup_key="k", expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert q.publish(b"v2", dedup_key="k", expected_version=1) == first
    with pytest.raises(ringq.VersionConflict) as info:
        q.publish(b"stale", dedup_key="k", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(ringq.VersionConflict) as info:
        q.publish(b"future", dedup_key="k", expected_version=5)
    assert (info.value.expected, info.value.actual) == (5, 2)
    # conflicts change nothing
    s = q.stats()
    assert (s["total"], s["replaced"]) == (1, 1)
    [d] = q.checkout(timeout=0)
    assert (d.id, d.payload, d.version) == (first, b"v2", 2)


def test_expected_version_of_a_missing_key_conflicts(q: ringq.Queue) -> None:
    with pytest.raises(ringq.VersionConflict) as info:
        q.publish(b"x", dedup_key="k", expected_version=3)
    assert (info.value.expected, info.value.actual) == (3, 0)
    assert q.stats()["total"] == 0


def test_expected_version_applies_to_an_in_flight_holder(q: ringq.Queue) -> None:
    q.publish(b"v1", dedup_key="k")
    [held] = q.checkout(timeout=0)
    with pytest.raises(ringq.VersionConflict):
        q.publish(b"v2", dedup_key="k", expected_version=2)
    assert not q.backend.is_superseded(held)
    successor = q.publish(b"v2", dedup_key="k", expected_version=1)
    assert successor != held.id
    assert q.backend.is_superseded(held)


def test_the_key_is_free_again_after_the_ack(q: ringq.Queue) -> None:
    first = q.publish(b"v1", dedup_key="k")
    [d] = q.checkout(timeout=0)
    q.ack(d)
    second = q.publish(b"v2", dedup_key="k", expected_version=0)
    assert second > first
    [d2] = q.checkout(timeout=0)
    assert (d2.id, d2.version, d2.payload) == (second, 1, b"v2")

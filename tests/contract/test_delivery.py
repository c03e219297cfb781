"""A delivery carries the message as published; first deliveries follow
publish order per topic; topics are independent; ids grow in publish order."""

from __future__ import annotations

import gc
import re

import ringq

from .conftest import Harness, at, drain

ID = re.compile(r"^[0-9a-f]{16}$")


def test_an_empty_correlation_or_causation_id_reads_back_as_none(harness: Harness) -> None:
    """The same on every backend: a Redis hash cannot keep an empty field
    apart from a missing one, so the engine stores an empty id as none."""
    q = harness.open()
    q.publish(b"a", "t", correlation_id="", causation_id="")
    q.publish(b"b", "t", correlation_id="", causation_id="c-1", headers={"h": "v"})
    q.publish(b"c", "t", correlation_id="r-1", causation_id="")
    a, b, c = q.checkout("t", max_messages=3, timeout=0)
    assert (a.correlation_id, a.causation_id) == (None, None)
    assert (b.correlation_id, b.causation_id, b.headers) == (None, "c-1", {"h": "v"})
    assert (c.correlation_id, c.causation_id) == ("r-1", None)


def test_round_trip_fills_every_delivery_field(harness: Harness) -> None:
    q = harness.open(lease=7.0)
    published_at = harness.now()
    mid = q.publish(
        b"hello",
        "orders",
        dedup_key="k-1",
        headers={"h": "v", "trace": "abc"},
        correlation_id="corr-1",
        causation_id="cause-1",
    )
    assert ID.match(mid)
    checked_out_at = harness.advance(2.0)
    [d] = q.checkout("orders", timeout=0)
    assert d.id == mid
    assert d.topic == "orders"
    assert d.payload == b"hello"
    assert d.attempt == 1
    assert d.dedup_key == "k-1"
    assert d.version == 1
    assert d.correlation_id == "corr-1"
    assert d.causation_id == "cause-1"
    assert d.headers == {"h": "v", "trace": "abc"}
    assert d.enqueued_at == published_at
    assert d.lease_deadline == at(checked_out_at + 7.0)
    assert isinstance(d.lease_token, int)
    assert q.stats()["in_flight"] == 1
    q.ack(d)
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["total"]) == (0, 0, 0)


def test_plain_message_has_empty_optional_fields(q: ringq.Queue) -> None:
    q.publish(b"x")
    [d] = q.checkout(timeout=0)
    assert d.topic == "default"
    assert d.dedup_key is None
    assert d.correlation_id is None
    assert d.causation_id is None
    assert d.headers == {}


def test_ids_increase_in_publish_order(q: ringq.Queue) -> None:
    ids = [q.publish(b"%d" % i, f"t{i % 3}") for i in range(200)]
    ids += q.publish_many([b"a", b"b", "c", ringq.Message(b"d", topic="other")])
    assert all(ID.match(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_first_deliveries_follow_publish_order_per_topic(q: ringq.Queue) -> None:
    ids = [q.publish(b"%d" % i) for i in range(50)]
    got = [d.id for d in q.checkout(max_messages=7, timeout=0)]
    got += [d.id for d in drain(q)]
    assert got == ids


def test_topics_are_independent(q: ringq.Queue) -> None:
    a = [q.publish(b"a%d" % i, "a") for i in range(5)]
    b = [q.publish(b"b%d" % i, "b") for i in range(5)]
    assert [d.id for d in q.checkout("b", max_messages=10, timeout=0)] == b
    assert q.checkout("b", timeout=0) == []
    assert q.checkout("nothing-here", timeout=0) == []
    assert [d.id for d in q.checkout("a", max_messages=10, timeout=0)] == a


def test_a_message_that_comes_back_reenters_at_the_back(q: ringq.Queue) -> None:
    first, second, third = q.publish_many([b"1", b"2", b"3"])
    [d1] = q.checkout(timeout=0)
    q.nack(d1)
    later = q.publish(b"4")
    assert [(d.id, d.attempt) for d in drain(q)] == [
        (second, 1),
        (third, 1),
        (first, 2),
        (later, 1),
    ]


def test_ack_takes_one_delivery_or_several(q: ringq.Queue) -> None:
    q.publish_many([b"%d" % i for i in range(4)])
    ds = q.checkout(max_messages=4, timeout=0)
    q.ack(ds[0])
    q.ack(ds[1:3])
    q.ack(d for d in ds[3:])
    s = q.stats()
    assert (s["total"], s["in_flight"]) == (0, 0)


def test_deliveries_are_kept_off_the_cyclic_garbage_collector(q: ringq.Queue) -> None:
    """A delivery refers to no Python object but its payload ``bytes``, so
    it can be part of no cycle: every backend hands it out untracked by
    ``gc`` (deliveries a consumer keeps cost no collector walks)."""
    q.publish_many([b"a", b"b"], "t")
    got = q.checkout("t", max_messages=2, timeout=0)
    assert [(type(d.payload), gc.is_tracked(d)) for d in got] == [(bytes, False)] * 2
    q.ack(got)

"""A handle must never act on a queue it does not belong to.

Every queue directory has an instance id (in its manifest); each delivery
carries the id of the queue that delivered it, and ack, nack, extend and
release refuse a delivery of another queue with ``ForeignDelivery`` (a
``LeaseLost``) before looking at its id or token, which another queue may
well have given out too.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import OpenQueue, Spawn, kill_and_collect, read_line

#: The counters a refused call must leave alone (``lsn``: nothing journaled).
STATE = (
    "ready",
    "in_flight",
    "delayed",
    "dead",
    "total",
    "delivered",
    "released",
    "acked",
    "nacked",
    "expired",
    "dead_lettered",
    "lsn",
)

OPS: dict[str, Callable[[ringq.Queue, ringq.Delivery], Any]] = {
    "ack": lambda q, d: q.ack(d),
    "ack_list": lambda q, d: q.ack([d]),
    "nack": lambda q, d: q.nack(d, error="boom"),
    "nack_retry_later": lambda q, d: q.nack(d, delay=5.0),
    "extend": lambda q, d: q.extend(d, 60.0),
    "release": lambda q, d: q.release(d),
}


def _state(q: ringq.Queue) -> dict[str, Any]:
    s = q.stats()
    return {k: s[k] for k in STATE}


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_delivery_of_queue_a_is_refused_by_queue_b_and_b_is_unchanged(
    open_queue: OpenQueue, tmp_path: Path, op: str
) -> None:
    a = open_queue(tmp_path / "a", max_attempts=1)
    b = open_queue(tmp_path / "b", max_attempts=1)
    a.publish_many([b"a-1", b"a-2"])
    b.publish_many([b"b-1", b"b-2"])
    [da] = a.checkout(timeout=0)
    [db] = b.checkout(timeout=0)
    # Same id in both queues: only the instance id tells them apart.
    assert da.id == db.id
    assert da.queue_id != db.queue_id
    before_b, before_a = _state(b), _state(a)

    with pytest.raises(ringq.ForeignDelivery) as info:
        OPS[op](b, da)
    assert isinstance(info.value, ringq.LeaseLost)
    assert info.value.ids == [da.id]
    assert da.queue_id in str(info.value) and db.queue_id in str(info.value)

    assert _state(b) == before_b, "the refused call changed queue B"
    assert _state(a) == before_a, "nor does it touch queue A"
    assert b.dlq.list() == []
    # B's own message with that id is still in flight under its lease.
    assert b.extend(db, 30.0) > db.lease_deadline - 1
    b.ack(db)
    [rest] = b.checkout(timeout=0)
    assert rest.payload == b"b-2"
    a.ack(da)  # and A's delivery still works where it belongs


def test_a_batch_with_one_foreign_delivery_is_refused_whole(
    open_queue: OpenQueue, tmp_path: Path
) -> None:
    a = open_queue(tmp_path / "a")
    b = open_queue(tmp_path / "b")
    a.publish(b"a")
    b.publish_many([b"b-1", b"b-2"])
    [da] = a.checkout(timeout=0)
    mine = b.checkout(max_messages=2, timeout=0)
    before = _state(b)
    for call in (b.ack, b.release):
        with pytest.raises(ringq.ForeignDelivery) as info:
            call([mine[0], da, mine[1]])
        assert info.value.ids == [da.id]
        assert _state(b) == before
    b.ack(mine)
    assert b.stats()["total"] == 0


def test_a_delivery_from_a_deleted_and_recreated_queue_at_the_same_path_is_refused(
    open_queue: OpenQueue, qdir: Path
) -> None:
    old = open_queue()
    old.publish(b"old")
    [stale] = old.checkout(timeout=0)
    old.close()
    shutil.rmtree(qdir)

    q = open_queue()
    assert q.stats()["instance_id"] != stale.queue_id
    new_id = q.publish(b"new")
    assert new_id == stale.id, "the fresh queue hands out the same ids again"
    [fresh] = q.checkout(timeout=0)
    before = _state(q)
    for op in sorted(OPS):
        with pytest.raises(ringq.ForeignDelivery):
            OPS[op](q, stale)
    assert _state(q) == before
    assert q.extend(fresh, 30.0) > 0
    q.ack(fresh)
    assert q.stats()["total"] == 0
    # ...and a message that is merely ready is not touched either.
    q.publish(b"ready")
    with pytest.raises(ringq.ForeignDelivery):
        q.release(stale)
    [d] = q.checkout(timeout=0)
    assert (d.payload, d.attempt) == (b"ready", 1)


def test_queue_id_is_the_instance_id_which_survives_reopen_and_differs_between_directories(
    open_queue: OpenQueue, qdir: Path, tmp_path: Path
) -> None:
    q = open_queue()
    instance = q.stats()["instance_id"]
    assert isinstance(instance, str) and instance
    assert q._backend.instance_id == instance
    q.publish(b"x")
    [d] = q.checkout(timeout=0)
    assert d.queue_id == instance
    q.close()

    q = open_queue()
    assert q.stats()["instance_id"] == instance
    [d2] = q.checkout(timeout=0)  # the in-flight message came back after reopen
    assert d2.queue_id == instance
    with pytest.raises(ringq.LeaseLost) as info:
        q.ack(d)  # same queue, stale lease: a plain LeaseLost
    assert not isinstance(info.value, ringq.ForeignDelivery)
    q.ack(d2)

    other = open_queue(tmp_path / "other")
    assert other.stats()["instance_id"] != instance
    other.publish(b"y")
    [o] = other.checkout(timeout=0)
    assert o.queue_id == other.stats()["instance_id"]


CRASHER = """
import sys, time, ringq
q = ringq.Queue(sys.argv[1])
q.publish(b"x")
print(q.stats()["instance_id"], flush=True)
time.sleep(60)
"""


def test_instance_id_survives_a_crash_of_the_owner(
    spawn: Spawn, qdir: Path, open_queue: OpenQueue
) -> None:
    child = spawn(CRASHER, str(qdir))
    instance = read_line(child)
    kill_and_collect(child)
    q = open_queue()
    assert q.stats()["instance_id"] == instance
    [d] = q.checkout(timeout=0)
    assert d.queue_id == instance

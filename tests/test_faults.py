"""Storage faults (disk full, I/O errors) fail the call cleanly; the queue recovers.

Faults come from the engine's private test hook
``Engine._inject_fault(kind, errno, count)``: the next ``count`` operations of
that kind fail with ``errno`` (``-1``: until cleared with ``count=0``).
"""

from __future__ import annotations

import errno
import random
import time

import pytest
import ringq
from conftest import OpenQueue, drain

SEGMENT = 256 * 1024
# a segment must hold the largest possible record: shrink the limits with it
SMALL = {"segment_size": SEGMENT, "max_payload": 64 * 1024, "max_headers": 4096}
UNCHANGED = ("published", "total", "ready", "lsn", "journal_segments")


def test_enospc_creating_next_segment_fails_publish_and_changes_nothing(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(**SMALL)
    payload = b"s" * (32 * 1024)
    published: list[str] = []
    q._backend._inject_fault("segment_create", errno.ENOSPC, -1)
    for i in range(4 * SEGMENT // len(payload)):
        before = q.stats()
        try:
            published.append(q.publish(payload + b"%d" % i))
        except ringq.StorageError as exc:
            error = exc
            break
    else:
        pytest.fail("publishing 4 segments' worth never needed a new segment")
    assert isinstance(error, OSError)
    assert error.errno == errno.ENOSPC
    after = q.stats()
    for key in UNCHANGED:
        assert after[key] == before[key], key
    # still failing while the disk is "full"; batches too
    with pytest.raises(ringq.StorageError):
        q.publish(payload)
    with pytest.raises(ringq.StorageError):
        q.publish_many([payload, payload])
    assert q.stats()["published"] == before["published"]

    q._backend._inject_fault("segment_create", 0, 0)
    published.append(q.publish(b"after the fault"))
    published += q.publish_many([payload] * 40)
    q.close()

    q = open_queue(**SMALL)
    assert [d.id for d in drain(q)] == published


def test_eio_on_fsync_with_durability_always_raises_storage_error(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(durability="always")
    first = q.publish(b"before")
    q._backend._inject_fault("sync", errno.EIO, 1)
    with pytest.raises(ringq.StorageError) as info:
        q.publish(b"during")
    assert info.value.errno == errno.EIO
    # the fault is over: the queue works again
    second = q.publish(b"after")
    [d] = q.checkout(timeout=0)
    assert d.id == first
    q.ack(d)
    q.close()

    q = open_queue(durability="always")
    ids = [d.id for d in drain(q)]
    assert first not in ids
    assert second in ids
    assert ids == sorted(ids)


def id_runs(ids: list[str]) -> int:
    """How many runs the journal's writer splits ``ids`` into
    (``record::id_runs``: each run takes its step from its first two ids)."""
    n = [int(i, 16) for i in ids]
    runs, i = 0, 0
    while i < len(n):
        runs += 1
        if i + 1 == len(n):
            break
        step, j = n[i + 1] - n[i], i + 1
        while j + 1 < len(n) and n[j + 1] - n[j] == step:
            j += 1
        i = j + 1
    return runs


@pytest.mark.parametrize("durability", ["batch", "always"])
def test_a_failed_journal_write_fails_the_batch_and_loses_nothing(
    open_queue: OpenQueue, durability: str
) -> None:
    # Large records (batches, checkouts and acks of many) are written with
    # pwrite; the injected fault strikes after half of the record, and the
    # journal writes zeros over it again. The 1000 messages are published
    # among 0 to 7 of a second topic each, at random: their ids make too
    # few runs, so a checkout or ack of many of them is written as a list
    # of ids (tag 3 or 4, 8 KB), not as runs (tag 11 or 12; in FIFO order
    # on a topic of its own, 24 bytes, which goes through the mapping).
    q = open_queue(durability=durability)
    rnd = random.Random(7)
    items = []
    for i in range(1000):
        items += [ringq.Message(b"o", topic="other")] * rnd.randrange(8)
        items.append(ringq.Message(b"a%d" % i, topic="default"))
    ids = q.publish_many(items)
    first = [i for i, m in zip(ids, items, strict=True) if m.topic == "default"]
    assert 20 * id_runs(first) >= 8 * len(first), "written as runs: not the pwrite path"
    before = q.stats()
    q._backend._inject_fault("journal_write", errno.EIO, 1)
    with pytest.raises(ringq.StorageError) as info:
        q.publish_many([b"b%d" % i for i in range(100)])
    assert info.value.errno == errno.EIO
    after = q.stats()
    for key in UNCHANGED:
        assert after[key] == before[key], key
    # a single message's record goes through the mapping: never affected
    q._backend._inject_fault("journal_write", errno.EIO, 1)
    second = q.publish(b"single")
    # the record of a checkout of many: refused, nothing leased
    ready = q.stats()["ready"]
    with pytest.raises(ringq.StorageError):
        q.checkout(max_messages=1000, timeout=0)
    assert q.stats()["ready"] == ready
    # an ack of many deliveries: refused, still leased
    batch = q.checkout(max_messages=1000, timeout=0)
    assert len(batch) == 1000
    q._backend._inject_fault("journal_write", errno.EIO, 1)
    with pytest.raises(ringq.StorageError):
        q.ack(batch)
    assert q.stats()["acked"] == before["acked"]
    q.release(batch)
    third = q.publish_many([b"c%d" % i for i in range(100)])
    # last: a failed batch followed by one small record only
    q._backend._inject_fault("journal_write", errno.EIO, 1)
    with pytest.raises(ringq.StorageError):
        q.publish_many([b"d%d" % i for i in range(100)])
    fourth = q.publish(b"last")
    q.close()

    q = open_queue(durability=durability)
    got = drain(q)
    assert [d.id for d in got] == [*first, second, *third, fourth]
    assert [d.payload for d in got[-101:]] == [b"c%d" % i for i in range(100)] + [b"last"]
    assert q.stats()["torn_tail_bytes"] == 0
    q.close()


def test_a_failed_journal_write_that_cannot_be_undone_refuses_writes_until_reopened(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    first = q.publish_many([b"a%d" % i for i in range(100)])
    # the record's write fails, and so does the write of zeros over it
    q._backend._inject_fault("journal_write", errno.ENOSPC, 2)
    with pytest.raises(ringq.StorageError):
        q.publish_many([b"b%d" % i for i in range(100)])
    for call in (lambda: q.publish(b"x"), lambda: q.publish_many([b"y"] * 100)):
        with pytest.raises(ringq.StorageError, match="reopen the queue"):
            call()
    q.close()

    q = open_queue()
    assert [d.id for d in drain(q)] == first
    assert q.stats()["torn_tail_bytes"] > 0  # the half record, removed
    q.publish(b"works again")
    q.close()


def test_eio_on_fsync_fails_ack_until_cleared(open_queue: OpenQueue) -> None:
    q = open_queue(durability="always")
    q.publish(b"x")
    [d] = q.checkout(timeout=0)
    q._backend._inject_fault("sync", errno.EIO, -1)
    with pytest.raises(ringq.StorageError):
        q.ack(d)
    with pytest.raises(ringq.StorageError):
        q.publish(b"y")
    q._backend._inject_fault("sync", 0, 0)
    q.publish(b"z")
    assert q.stats()["fsyncs"] > 0


def test_enospc_writing_snapshot_fails_snapshot_only(open_queue: OpenQueue) -> None:
    q = open_queue()
    ids = q.publish_many([b"%d" % i for i in range(100)])
    good = q.snapshot()
    ids.append(q.publish(b"not in the good snapshot"))
    q._backend._inject_fault("snapshot_write", errno.ENOSPC, 1)
    with pytest.raises(ringq.StorageError) as info:
        q.snapshot()
    assert info.value.errno == errno.ENOSPC
    assert q.stats()["snapshot_lsn"] == good
    ids.append(q.publish(b"after"))
    [d] = q.checkout(timeout=0)
    q.ack(d)
    assert q.snapshot() > good
    q.close()

    q = open_queue()
    assert [x.id for x in drain(q)] == ids[1:]


def test_failing_automatic_snapshots_do_not_fail_publishes_or_lose_data(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(snapshot_every=50)
    start = q.stats()["snapshot_lsn"]
    q._backend._inject_fault("snapshot_write", errno.ENOSPC, -1)
    try:
        ids = [q.publish(b"%d" % i) for i in range(200)]
        time.sleep(0.3)  # the background snapshotter has tried (and failed) by now
        # the journal is healthy: the queue keeps working without snapshots
        ids += [q.publish(b"more %d" % i) for i in range(200)]
        [d] = q.checkout(timeout=0)
        q.ack(d)
        assert q.stats()["snapshot_lsn"] == start
    finally:
        q._backend._inject_fault("snapshot_write", 0, 0)
    ids.append(q.publish(b"last"))
    q.close()
    q = open_queue()
    assert [x.id for x in drain(q)] == ids[1:]

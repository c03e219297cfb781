"""The local engine's recovery: in-flight messages at close come back (or
are dead-lettered, or dropped if superseded), snapshot + journal replay
reproduce the state, disk use stays bounded. (That a reopen keeps what was
published is part of the contract: ``tests/contract/test_close.py``.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue, Spawn, dir_size, drain, kill_and_collect, read_line, wait_until
from ringq.backends.local import inspect


def test_in_flight_at_close_comes_back_ready_with_attempt_kept(open_queue: OpenQueue) -> None:
    q = open_queue()
    ids = q.publish_many([b"a", b"b", b"c"])
    held = q.checkout(max_messages=2, timeout=0)
    assert [d.attempt for d in held] == [1, 1]
    q.close()

    q = open_queue()
    s = q.stats()
    assert (s["ready"], s["in_flight"]) == (3, 0)
    got = {d.id: d.attempt for d in drain(q)}
    assert got == {ids[0]: 2, ids[1]: 2, ids[2]: 1}
    # A delivery of the queue before the reopen holds no lease any more.
    with pytest.raises(ringq.LeaseLost):
        q.ack(held[0])


def test_in_flight_at_close_with_attempts_exhausted_is_dead_lettered(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(max_attempts=1)
    mid = q.publish(b"x")
    q.checkout(timeout=0)
    q.close()
    q = open_queue(max_attempts=1)
    assert q.checkout(timeout=0) == []
    assert q.dlq.get(mid).reason == "lease_expired"


def test_superseded_in_flight_at_close_is_dropped(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.publish(b"v1", dedup_key="k")
    q.checkout(timeout=0)
    newer = q.publish(b"v2", dedup_key="k")
    q.close()
    q = open_queue()
    assert [(d.id, d.payload) for d in drain(q)] == [(newer, b"v2")]


def test_snapshot_then_more_ops_then_reopen_reproduces_state(open_queue: OpenQueue) -> None:
    q = open_queue()
    ids = q.publish_many([b"%d" % i for i in range(10)])
    lsn = q.snapshot()
    assert isinstance(lsn, int)
    assert q.stats()["snapshot_lsn"] == lsn
    acked = q.checkout(max_messages=3, timeout=0)
    q.ack(acked)
    more = q.publish_many([b"more%d" % i for i in range(3)])
    assert q.stats()["lsn"] > lsn
    q.close()
    q = open_queue()
    assert [d.id for d in drain(q)] == ids[3:] + more


CRASH_AFTER_SNAPSHOT = """
import json, sys, time, ringq
q = ringq.Queue(sys.argv[1])
ids = q.publish_many([b"%d" % i for i in range(10)])
keyed = q.publish(b"v1", "keys", dedup_key="k")
snap = q.snapshot()
acked = q.checkout(max_messages=3, timeout=0)
q.ack(acked)
more = q.publish_many([b"more%d" % i for i in range(3)])
q.publish(b"v2", "keys", dedup_key="k")
[held] = q.checkout(timeout=0)
[dead] = q.checkout(timeout=0)
q._backend.nack(dead, error_message="boom", dead_letter_reason="non_retryable")
delayed = q.publish(b"later", "delayed", delay=30)
print(json.dumps({
    "ids": ids, "keyed": keyed, "snap": snap, "acked": [d.id for d in acked],
    "more": more, "held": held.id, "dead": dead.id, "delayed": delayed,
    "stats": q.stats(),
}), flush=True)
time.sleep(60)
"""


def test_crash_after_snapshot_replays_the_journal_tail(
    spawn: Spawn, qdir: Path, open_queue: OpenQueue
) -> None:
    child = spawn(CRASH_AFTER_SNAPSHOT, str(qdir))
    info = json.loads(read_line(child))
    kill_and_collect(child)
    assert info["stats"]["snapshot_lsn"] == info["snap"]
    assert info["stats"]["lsn"] > info["snap"]

    q = open_queue()
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["delayed"], s["dead"]) == (
        info["stats"]["ready"] + 1,  # the held message is ready again
        0,
        1,
        1,
    )
    assert q.dlq.get(info["dead"]).error_message == "boom"
    got = drain(q)
    ids, held = info["ids"], info["held"]
    assert held == ids[3]
    # first deliveries in publish order; the held one is back with its attempt kept
    assert [d.id for d in got if d.attempt == 1] == [*ids[5:], *info["more"]]
    assert [(d.id, d.attempt) for d in got if d.attempt != 1] == [(held, 2)]
    [k] = q.checkout("keys", timeout=0)
    assert (k.id, k.payload, k.version) == (info["keyed"], b"v2", 2)
    assert q.publish(b"next") > info["delayed"]


def test_disk_use_stays_bounded_over_a_long_run(open_queue: OpenQueue, qdir: Path) -> None:
    segment = 1024 * 1024
    # a segment must hold the largest possible record: shrink the limits with it
    small = {"segment_size": segment, "max_payload": 256 * 1024, "max_headers": 4096}
    q = open_queue(snapshot_every=2000, durability="os", **small)
    payload = b"p" * 256
    rounds, per_round = 480, 500
    peak = 0
    for r in range(rounds):
        for _ in range(per_round):
            q.publish(payload)
        batch = q.checkout(max_messages=per_round, timeout=0)
        assert len(batch) == per_round
        q.ack(batch)
        if r % 5 == 4:
            # Snapshots run on their own thread: on a busy machine give it a
            # moment to catch up, so what is measured is what it leaves behind,
            # not how far the scheduler let it fall behind.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                st = q.stats()
                if st["lsn"] - st["snapshot_lsn"] <= 2 * 2000:
                    break
                time.sleep(0.01)
            peak = max(peak, dir_size(qdir))
    history = rounds * per_round * len(payload)
    s = q.stats()
    assert s["total"] == 0
    assert s["published"] == rounds * per_round
    assert s["snapshot_lsn"] > 0
    # Live data is at most one round. Snapshots run in the background, so a few
    # segments may wait for the next one; the bound is far below the history.
    bound = 16 * segment
    assert history > 3 * bound
    assert peak <= bound, (peak, s["journal_segments"])
    q.close()
    # close snapshots: what is left is about one segment and a small snapshot
    assert dir_size(qdir) <= 2 * segment
    q = open_queue(snapshot_every=2000, **small)
    assert q.stats()["total"] == 0


def file_bytes(qdir: Path, pattern: str = "*") -> dict[str, bytes]:
    """Name -> bytes of the files in ``qdir``; one the preparer thread
    renames while they are read is left out."""
    out = {}
    for p in sorted(qdir.glob(pattern)):
        try:
            out[p.name] = p.read_bytes()
        except FileNotFoundError:
            continue
    return out


def segment_bytes(qdir: Path) -> list[bytes]:
    """The bytes of every journal segment in ``qdir`` (see ``file_bytes``)."""
    return list(file_bytes(qdir, "*.log").values())


def segment_format(segment: bytes) -> int:
    """A journal segment's format (the u32 at offset 8 of its header,
    ``docs/format.md``): 3 for a recycled one."""
    return int.from_bytes(segment[8:12], "little")


def segment_formats(qdir: Path) -> list[int]:
    """The format of every journal segment in ``qdir``."""
    return sorted(segment_format(b) for b in segment_bytes(qdir))


def publish_and_ack(q: ringq.Queue, marker: bytes, n: int) -> None:
    for _ in range(n):
        q.publish(marker + bytes(1000))
    q.ack(drain(q))


@pytest.mark.parametrize("recycle", [True, False], ids=["recycled", "deleted"])
def test_recycle_segments_decides_whether_covered_segments_are_reused_or_deleted(
    open_queue: OpenQueue, qdir: Path, recycle: bool
) -> None:
    """``recycle_segments`` reaches the engine: by default a snapshot's
    covered segments become the next spares (format 3), old bytes and all;
    with ``False`` they are deleted, so no acknowledged payload stays in the
    directory's files (the reason to turn recycling off)."""
    q = open_queue(segment_size=65_536, recycle_segments=recycle)
    # About two 64 KiB segments of messages acknowledged at once, then more
    # than one segment's worth, so that the active segment holds none of the
    # first ones but the newest covered segments (those recycled) do.
    publish_and_ack(q, b"first-acked ", 120)
    publish_and_ack(q, b"later-acked ", 80)
    q.snapshot()
    if recycle:
        # The preparer thread recycles them after snapshot() returns, newest
        # first: one of those holds first-acked payloads, kept as they were.
        def recycled_with_old_payloads() -> bool:
            return any(segment_format(b) == 3 and b"first-acked " in b for b in segment_bytes(qdir))

        assert wait_until(recycled_with_old_payloads, timeout=10.0), segment_formats(qdir)
    else:
        # Deleted by snapshot() itself, before it returns; and after close.
        for when in ("snapshot", "close"):
            if when == "close":
                q.close()
            assert 3 not in segment_formats(qdir), when
            for name, b in file_bytes(qdir).items():
                assert b"first-acked " not in b, (when, name)
    q.close()
    q = open_queue(segment_size=65_536, recycle_segments=recycle)
    assert q.stats()["ready"] == 0
    q.publish(b"after")
    assert [d.payload for d in drain(q)] == [b"after"]


def test_close_writes_a_final_snapshot_that_covers_the_whole_journal(
    open_queue: OpenQueue, qdir: Path
) -> None:
    """A graceful close leaves a snapshot of everything: the next open
    replays no record (what the journal held is all in the snapshot)."""
    q = open_queue(snapshot_every=1 << 40, snapshot_interval=3600)
    q.publish_many([b"%d" % i for i in range(100)], topic="t")
    [d] = q.checkout("t", timeout=0)
    q.ack(d)
    before = q.stats()
    assert before["snapshot_lsn"] < before["lsn"], "records the last snapshot does not cover"
    q.close()
    info = inspect(str(qdir))
    assert info["snapshot_lsn"] == info["last_lsn"] == before["lsn"]
    assert info["records_replayed"] == 0 and info["ready"] == 99

"""``q.admin``: stats, pause/resume/scale, snapshot, dead letters and drain,
each action logged."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import ringq
from conftest import OpenQueue, wait_until


def test_admin_pauses_and_resumes_a_handler_and_logs_every_action(
    open_queue: OpenQueue, caplog: pytest.LogCaptureFixture
) -> None:
    q = open_queue()
    seen: list[bytes] = []

    @q.handler(bytes, topic="t", max_parallelism=2)
    def h(msg: bytes) -> None:
        seen.append(msg)

    q.start()
    with caplog.at_level(logging.INFO, logger="ringq.admin"):
        q.admin.pause("h")
        assert q.admin.paused == ["h"]
        assert wait_until(lambda: q.handler_stats()["h"]["workers"] == 0)
        q.publish(b"while paused", topic="t")
        time.sleep(0.2)
        assert seen == [] and q.stats()["ready"] == 1
        q.admin.resume("h")
        assert wait_until(lambda: seen == [b"while paused"])
        assert q.handler_stats()["h"]["workers"] == 2, "resumed with the count from before"
        q.admin.scale("h", 3)
        assert q.handler_stats()["h"]["workers"] == 3
        lsn = q.admin.snapshot()
        assert lsn == q.stats()["snapshot_lsn"]
    messages = [r.getMessage() for r in caplog.records if r.name == "ringq.admin"]
    assert any("paused" in m for m in messages)
    assert any("resumed with 2 workers" in m for m in messages)
    assert any("scaled to 3" in m for m in messages)
    assert any(f"snapshot written at LSN {lsn}" in m for m in messages)
    stats = q.admin.stats()
    assert stats["topics"]["t"]["ready"] == 0
    assert stats["handlers"]["h"]["succeeded"] == 1
    assert stats["queue"]["acked"] == 1


def test_admin_dead_letters_replay_purge_and_drain(
    open_queue: OpenQueue, caplog: pytest.LogCaptureFixture
) -> None:
    q = open_queue()
    fail = threading.Event()
    fail.set()
    done: list[bytes] = []

    @q.handler(bytes, topic="t", retry=ringq.Retry(max_attempts=1))
    def h(msg: bytes) -> None:
        if fail.is_set():
            raise RuntimeError(f"cannot {msg.decode()}")
        done.append(msg)

    q.publish_many([b"a", b"b", b"c"], topic="t")
    q.start()
    assert wait_until(lambda: len(q.admin.dead_letters()) == 3)
    assert [d.error_message for d in q.admin.dead_letters(limit=1)] == ["cannot a"]
    with caplog.at_level(logging.INFO, logger="ringq.admin"):
        assert q.admin.purge(where=lambda d: d.message.payload == b"c") == 1
        fail.clear()
        assert q.admin.replay(rate=50.0) == 2
        assert wait_until(lambda: sorted(done) == [b"a", b"b"])
        q.publish_many([b"d", b"e"], topic="t")
        assert q.admin.drain(timeout=10)
    assert not q.running
    assert sorted(done) == [b"a", b"b", b"d", b"e"]
    messages = [r.getMessage() for r in caplog.records if r.name == "ringq.admin"]
    assert any("purged 1" in m for m in messages)
    assert any("replayed 2 dead letters at 50.0/s" in m for m in messages)
    assert any("drained" in m for m in messages)

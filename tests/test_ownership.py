"""One owner per directory; a dead owner's lock does not block; private files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue, Spawn, kill_and_collect, read_line

OWNER = """
import sys, time, ringq
q = ringq.Queue(sys.argv[1])
q.publish(b"from child")
print("ready", flush=True)
time.sleep(60)
"""


def test_second_open_in_same_process_raises_queue_locked(open_queue: OpenQueue, qdir: Path) -> None:
    q = open_queue()
    with pytest.raises(ringq.QueueLocked) as info:
        ringq.Queue(qdir)
    assert info.value.pid == os.getpid()
    assert str(os.getpid()) in str(info.value)
    # the failed open did not disturb the owner
    q.publish(b"still works")
    assert q.stats()["ready"] == 1


def test_other_process_owner_is_named_and_dead_owner_does_not_block(
    spawn: Spawn, qdir: Path, open_queue: OpenQueue
) -> None:
    child = spawn(OWNER, str(qdir))
    assert read_line(child) == "ready"
    with pytest.raises(ringq.QueueLocked) as info:
        ringq.Queue(qdir)
    assert info.value.pid == child.pid
    assert str(child.pid) in str(info.value)
    assert Path(info.value.path).resolve() == qdir.resolve()
    kill_and_collect(child)
    q = open_queue()
    [d] = q.checkout(timeout=0)
    assert d.payload == b"from child"


def test_a_shared_opener_of_a_queue_owned_without_shared_gets_queue_locked(
    spawn: Spawn, qdir: Path
) -> None:
    """The owner opened it without ``shared=True`` (it serves no socket):
    ``shared=True`` waits for a socket as long as a starting owner may take
    (10 s), then raises ``QueueLocked`` naming the owner, as any second
    opener is told (it raised ``OwnerGone``, "no process serves" it)."""
    child = spawn(OWNER, str(qdir))
    assert read_line(child) == "ready"
    with pytest.raises(ringq.QueueLocked) as info:
        ringq.Queue(qdir, shared=True)
    assert info.value.pid == child.pid
    kill_and_collect(child)


def test_directory_is_0700_and_files_are_0600(open_queue: OpenQueue, qdir: Path) -> None:
    q = open_queue(dlq_capacity=10)
    q.publish_many([b"x" * 100] * 100)
    [d] = q.checkout(timeout=0)
    q._backend.nack(d, dead_letter_reason="non_retryable")
    q.snapshot()
    q.publish(b"after snapshot")

    def check() -> None:
        assert stat.S_IMODE(qdir.stat().st_mode) == 0o700
        entries = list(qdir.rglob("*"))
        assert any(p.is_file() for p in entries)
        for p in entries:
            want = 0o700 if p.is_dir() else 0o600
            assert stat.S_IMODE(p.stat().st_mode) == want, p

    check()
    q.close()
    check()


def test_files_stay_private_under_a_permissive_umask(qdir: Path) -> None:
    old = os.umask(0)
    try:
        with ringq.Queue(qdir) as q:
            q.publish(b"x")
            q.snapshot()
    finally:
        os.umask(old)
    assert stat.S_IMODE(qdir.stat().st_mode) == 0o700
    for p in qdir.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p

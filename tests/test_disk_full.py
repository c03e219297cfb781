"""Full-disk periods on a real, small filesystem (a tmpfs CI mounts as root).

A queue with the default 16 MiB segments works through full-disk periods
with little live data: a publish that finds no room for a new segment fails
with ``StorageError`` (ENOSPC) and changes nothing; a snapshot of a small
queue fits in a few kilobytes and lets the active segment start over; disk
use stays bounded by live data however many periods pass; once space is
back, the queue reopens with default options and nothing confirmed is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import ringq
from conftest import dir_size, wait_until

MIB = 1024 * 1024
SEGMENT = 16 * MIB
PAYLOAD = bytes(4096)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs: room for two default segments and a little more."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path, leave: int) -> None:
    """Writes ``path`` until only about ``leave`` bytes are free."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    with path.open("wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave))


def retry_on_full(q: ringq.Queue, call: object) -> int:
    """Runs ``call()``; on ENOSPC takes a snapshot and runs it again.
    Returns how many times the disk was full."""
    assert callable(call)
    for attempt in range(3):
        try:
            call()
            return attempt
        except ringq.StorageError as e:
            assert e.errno == errno.ENOSPC, e
            q.snapshot()
    raise AssertionError("still no room after snapshots")


def test_full_disk_periods_keep_a_small_queue_working_in_bounded_space(small_fs: Path) -> None:
    qdir = small_fs / "q"
    filler = small_fs / "filler"
    kept: list[str] = []
    fulls = 0
    for period in range(3):
        with ringq.Queue(qdir) as q:
            assert wait_until(lambda: q.stats()["journal_spares"] == 1)
            fill(filler, leave=256 * 1024)
            # Far more than fits in the free space and both segments,
            # with a few messages kept live each period.
            for i in range(9000):
                fulls += retry_on_full(q, lambda: q.publish(PAYLOAD, topic="t"))
                [d] = q.checkout("t", timeout=0)
                fulls += retry_on_full(q, lambda d=d: q.ack(d))
                if i % 3000 == 0:
                    kept.append(q.publish(f"keep {period}-{i}".encode(), topic="kept"))
            assert dir_size(qdir) <= 2 * SEGMENT + 256 * 1024, "bounded by segments, not history"
            # A record bigger than any free segment still works once the
            # journal is covered: the active segment starts over for it.
            fulls += retry_on_full(q, lambda: q.publish(bytes(900 * 1024), topic="big"))
            [big] = q.checkout("big", timeout=0)
            fulls += retry_on_full(q, lambda big=big: q.ack(big))
            # The disk is still full: a snapshot may find no room (it
            # failed with ENOSPC writing the MANIFEST in two loaded CI
            # runs; the cause is not established) and says so.
            fulls += retry_on_full(q, q.snapshot)
        filler.unlink()
    assert fulls >= 3, "the disk was full in every period"
    # Space is back: default options, nothing confirmed lost.
    with ringq.Queue(qdir) as q:
        got = [d.id for d in q.checkout("kept", max_messages=100, timeout=0)]
        assert got == kept
        assert q.stats()["ready"] == 0
    assert dir_size(qdir) <= 2 * SEGMENT + 256 * 1024

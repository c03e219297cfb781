"""Many processes on one directory: ``Queue(path, shared=True)``.

Real processes: the owner (this test's process or a child) serves a Unix
socket in the directory; clients are other Python processes. Kills are
SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue, Spawn, read_line

CLIENT_PUBLISH = """
import sys, ringq
q = ringq.Queue(sys.argv[1], shared=True)
print(q.role, flush=True)
for i in range(int(sys.argv[2])):
    q.publish(b"c-%d" % i, "t")
print("done", flush=True)
q.close()
"""

HOLD_LEASES = """
import sys, time, ringq
q = ringq.Queue(sys.argv[1], shared=True)
got = q.checkout("t", max_messages=int(sys.argv[2]), lease=600, timeout=5)
print(q.role, len(got), flush=True)
time.sleep(600)
"""


def wait_until(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_without_shared_a_second_process_is_refused(open_queue: OpenQueue, qdir: Path) -> None:
    open_queue()
    code = (
        "import sys, ringq\n"
        "try:\n"
        "    ringq.Queue(sys.argv[1])\n"
        "except ringq.QueueLocked:\n"
        "    print('locked')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(qdir)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "locked", out.stderr


def test_a_client_process_publishes_and_the_owner_consumes(
    open_queue: OpenQueue, qdir: Path, spawn: Spawn
) -> None:
    q = open_queue(shared=True)
    assert q.role == "owner"
    assert (qdir / "SOCKET").read_text() == "unix ringq.sock\n"
    assert (qdir / "ringq.sock").stat().st_mode & 0o777 == 0o600
    child = spawn(CLIENT_PUBLISH, str(qdir), "500")
    assert read_line(child) == "client"
    assert read_line(child) == "done"
    assert child.wait(30) == 0
    got = q.checkout("t", max_messages=1000, timeout=0)
    assert [d.payload for d in got] == [b"c-%d" % i for i in range(500)]
    q.ack(got)
    assert q.stats()["total"] == 0


def test_a_client_has_the_same_api(open_queue: OpenQueue, qdir: Path) -> None:
    """Within one process a second shared open is a client of the first."""
    owner = open_queue(shared=True)
    client = open_queue(shared=True)
    assert (owner.role, client.role) == ("owner", "client")
    assert client.backend.instance_id == owner.backend.instance_id
    mid = client.publish({"n": 1}, "t", dedup_key="k", headers={"h": "v"})
    [d] = client.checkout("t", lease=5, timeout=0)
    assert (d.id, d.payload, d.dedup_key, d.headers) == (mid, b'{"n":1}', "k", {"h": "v"})
    assert client.extend(d, 60) >= time.time() + 59
    client.nack(d, delay=0, error=ValueError("boom"))
    [d2] = client.checkout("t", timeout=0)
    assert d2.attempt == 2
    with pytest.raises(ringq.LeaseLost):
        client.ack(d)
    client.ack(d2)
    assert len(client.publish_many([b"a", b"b"], "m")) == 2
    assert [x.payload for x in owner.checkout("m", 5, timeout=0)] == [b"a", b"b"]
    s = client.stats()
    assert s["shared_role"] == "client"
    assert owner.stats()["shared_clients"] == 1
    assert client.topic_stats()["m"]["in_flight"] == 2
    assert client.snapshot() > 0


def test_a_killed_clients_leases_come_back_at_once(
    open_queue: OpenQueue, qdir: Path, spawn: Spawn
) -> None:
    q = open_queue(shared=True, lease=600)
    q.publish_many([b"x%d" % i for i in range(10)], "t")
    child = spawn(HOLD_LEASES, str(qdir), "7")
    assert read_line(child) == "client 7"
    assert q.stats()["in_flight"] == 7
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # Not after the 600 s lease: as soon as the owner sees the connection close.
    assert wait_until(lambda: q.stats()["in_flight"] == 0, 5.0)
    got = q.checkout("t", max_messages=10, timeout=0)
    assert sorted(d.attempt for d in got) == [1] * 3 + [2] * 7, (
        "the killed client's deliveries count"
    )


def test_the_owners_death_fails_calls_in_flight_and_the_next_call_takes_over(
    qdir: Path, spawn: Spawn
) -> None:
    owner = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1], shared=True)
        q.publish(b"before", "t")
        print(q.role, flush=True)
        time.sleep(600)
        """,
        str(qdir),
    )
    assert read_line(owner) == "owner"
    q = ringq.Queue(qdir, shared=True)
    try:
        assert q.role == "client"
        [d] = q.checkout("t", timeout=0)
        assert d.payload == b"before"
        failed: list[BaseException] = []

        def wait_for_more() -> None:
            try:
                q.checkout("never", timeout=60)
            except BaseException as e:
                failed.append(e)

        t = threading.Thread(target=wait_for_more)
        t.start()
        time.sleep(0.2)
        os.kill(owner.pid, signal.SIGKILL)
        t.join(10)
        assert not t.is_alive()
        assert len(failed) == 1 and isinstance(failed[0], ringq.OwnerGone), failed
        assert "whether the call took effect is unknown" in str(failed[0])
        # The next call finds nobody and takes the directory over.
        q.publish(b"after", "t")
        assert q.role == "owner"
        got = q.checkout("t", max_messages=10, timeout=0)
        assert sorted(x.payload for x in got) == [b"after", b"before"], (
            "the dead owner's lease ended with it"
        )
        with pytest.raises(ringq.LeaseLost):
            q.ack(d)
    finally:
        q.close()


def test_a_client_that_takes_over_keeps_the_queues_durability_capacity_and_attempts(
    qdir: Path, spawn: Spawn
) -> None:
    """A client opened with the defaults takes over an ``always`` queue of
    capacity 3 and ``max_attempts=1``: it goes on as that queue, not with
    the client's own options (an ``always`` queue went on as ``batch``,
    its calls answered before their fsync)."""
    owner = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1], shared=True, durability="always", capacity=3, max_attempts=1)
        print(q.role, flush=True)
        time.sleep(600)
        """,
        str(qdir),
    )
    assert read_line(owner) == "owner"
    q = ringq.Queue(qdir, shared=True)
    try:
        assert q.role == "client"
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        for i in range(3):
            q.publish(b"%d" % i, "t")  # the first one takes the directory over
        assert q.role == "owner"
        st = q.stats()
        assert (st["durability"], st["capacity"]) == ("always", 3)
        with pytest.raises(ringq.QueueFull):
            q.publish(b"no room", "t", block=False)
        [d] = q.checkout("t", timeout=0)
        q.nack(d)
        assert [x.id for x in q.dlq.list()] == [d.id], "max_attempts=1: the nack dead-letters"
    finally:
        q.close()


def test_a_client_that_takes_over_keeps_the_queues_limits_and_dead_letters(
    qdir: Path, spawn: Spawn
) -> None:
    """The owner's other options go on too: a client opened with a smaller
    ``dlq_capacity`` and the default ``max_payload`` took over with its
    own, so the open cut the oldest dead letters for good and a payload the
    queue took before was refused."""
    owner = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(
            sys.argv[1], shared=True, dlq_capacity=50, max_payload=3_000_000, max_attempts=1
        )
        q.publish_many([b"%d" % i for i in range(30)], "t")
        for d in q.checkout("t", max_messages=30, timeout=0):
            q.nack(d)
        print(q.role, len(q.dlq.list(limit=100)), flush=True)
        time.sleep(600)
        """,
        str(qdir),
    )
    assert read_line(owner) == "owner 30"
    q = ringq.Queue(qdir, shared=True, dlq_capacity=10)
    try:
        assert q.role == "client"
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        q.publish(b"x" * 2_000_000, "big")  # takes the directory over
        assert q.role == "owner"
        assert len(q.dlq.list(limit=100)) == 30
        with pytest.raises(ringq.LimitExceeded):
            q.publish(b"x" * 3_000_001, "big")
    finally:
        q.close()


OWNER = """
import sys, time, ringq
q = ringq.Queue(sys.argv[1], shared=True)
print(q.role, flush=True)
time.sleep(600)
"""


def test_copies_of_a_deep_queue_never_reach_each_others_owner(tmp_path: Path, spawn: Spawn) -> None:
    """Two copies of a queue (a backup restored beside it: the same
    identity) too deep for a socket file: their abstract sockets were named
    after the identity only, so a client of one copy whose owner died
    published into the other copy, and a copy made while the queue was
    served connected to the original's owner."""
    deep = tmp_path / ("x" * 100)
    a, b, c = deep / "A", deep / "B", deep / "C"
    ringq.Queue(a).close()
    shutil.copytree(a, b)
    owner_b = spawn(OWNER, str(b))
    assert read_line(owner_b) == "owner"
    qb = ringq.Queue(b, shared=True)
    try:
        assert qb.role == "client"
        os.kill(owner_b.pid, signal.SIGKILL)
        owner_b.wait()
        owner_a = spawn(OWNER, str(a))
        assert read_line(owner_a) == "owner"
        qb.publish(b"meant for B", "t")
        assert qb.role == "owner", "B's client takes B over, not A's owner's socket"
        assert qb.topic_stats()["t"]["ready"] == 1
        # A copy made while A is served holds A's SOCKET file. (A's owner
        # may be preparing a spare segment meanwhile: its temporary file
        # can be renamed between the listing and the copy; a copy without
        # it is a whole queue, as a backup tool skipping *.tmp would make.)
        shutil.copytree(a, c, ignore=shutil.ignore_patterns("*.tmp"))
        qc = ringq.Queue(c, shared=True)
        try:
            assert qc.role == "owner"
        finally:
            qc.close()
    finally:
        qb.close()
    os.kill(owner_a.pid, signal.SIGKILL)
    owner_a.wait()
    qa = ringq.Queue(a)
    try:
        assert "t" not in qa.topic_stats()
    finally:
        qa.close()


def test_a_deep_directory_uses_an_abstract_socket(tmp_path: Path, spawn: Spawn) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "q"
    assert len(str(deep / "ringq.sock")) > 107
    q = ringq.Queue(deep, shared=True)
    try:
        assert (deep / "SOCKET").read_text().startswith("abstract ringq/")
        assert not (deep / "ringq.sock").exists()
        child = spawn(CLIENT_PUBLISH, str(deep), "3")
        assert read_line(child) == "client"
        assert read_line(child) == "done"
        assert len(q.checkout("t", max_messages=5, timeout=0)) == 3
    finally:
        q.close()
    assert not (deep / "SOCKET").exists(), "a closed owner forgets its address"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_another_user_is_refused() -> None:
    # Outside pytest's private tmp tree, so the other user can reach it; an
    # abstract socket (a deep path) has no file permissions to stop anyone.
    base = Path(tempfile.mkdtemp(prefix="ringq-uid-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        deep = base / ("d" * 120) / "q"
        q = ringq.Queue(deep, shared=True)
        try:
            for p in (deep.parent, deep):
                os.chmod(p, 0o755)
            os.chmod(deep / "SOCKET", 0o644)
            code = (
                # Everything imported first: the other user cannot read root's Python.
                "import os, sys, ringq, ringq.errors, ringq.backends.shared\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "try:\n"
                "    ringq.Queue(sys.argv[1], shared=True)\n"
                "except Exception as e:\n"
                "    print(type(e).__name__, e)\n"
            )
            out = subprocess.run(
                [sys.executable, "-c", code, str(deep)], capture_output=True, text=True, timeout=60
            )
            assert "serves only processes of its owner's user" in out.stdout, (
                out.stdout,
                out.stderr,
            )
            assert out.stdout.startswith("RingqError"), out.stdout
            assert q.stats()["shared_clients"] == 0
        finally:
            q.close()
    finally:
        shutil.rmtree(base)


def test_a_dead_owners_socket_does_not_confuse_the_next_open(qdir: Path, spawn: Spawn) -> None:
    owner = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1], shared=True)
        q.publish(b"kept", "t")
        print("ready", flush=True)
        time.sleep(600)
        """,
        str(qdir),
    )
    assert read_line(owner) == "ready"
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert (qdir / "SOCKET").exists()
    q = ringq.Queue(qdir)  # not shared: owns it, and forgets the dead owner's socket
    try:
        assert not (qdir / "SOCKET").exists() and not (qdir / "ringq.sock").exists()
        assert [d.payload for d in q.checkout("t", timeout=0)] == [b"kept"]
    finally:
        q.close()


def test_ringq_serve_of_a_queue_another_process_owns_unshared_exits_3_at_once(
    qdir: Path,
) -> None:
    """The queue is open in a process without ``shared=True``: ``ringq
    serve`` says so and exits 3 (another process owns it) at once. It
    waited 10 s for a socket nobody writes, then exited 2 telling the
    operator to run ``ringq serve``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ringq.cli", "serve", str(qdir), "--stats-every", "0"]
    with ringq.Queue(qdir):
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert f"pid {os.getpid()}" in done.stderr and "shared=True" in done.stderr, done.stderr
    assert took < 5, took


def test_ringq_serve_owns_until_sigterm(qdir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ringq.cli", "serve", str(qdir), "--stats-every", "0.2"]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        assert "serving" in first and str(qdir) in first, first
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert second.returncode == 3 and "already served" in second.stderr
        q = ringq.Queue(qdir, shared=True)
        try:
            assert q.role == "client"
            q.publish(b"via serve", "t")
        finally:
            q.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        rest = server.stderr.read()
        assert "SIGTERM received" in rest and "closed" in rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    q = ringq.Queue(qdir)
    try:
        assert [d.payload for d in q.checkout("t", timeout=0)] == [b"via serve"]
    finally:
        q.close()


def test_ringq_serve_takes_every_queue_option_as_a_flag(qdir: Path) -> None:
    """The owner ``ringq serve`` runs gets the queue options given as flags
    (one per row of ``QUEUE_OPTIONS``); its clients see their effects."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ringq.cli", "serve", str(qdir), "--stats-every", "0"]
    bad = subprocess.run([*cmd, "--capacity", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--capacity" in bad.stderr, bad.stderr
    assert not qdir.exists(), "a refused flag creates nothing"
    flags = ["--capacity", "300", "--durability", "always", "--max-attempts", "1"]
    flags += ["--segment-size", "65536", "--no-recycle-segments"]
    server = subprocess.Popen([*cmd, *flags], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline()
        q = ringq.Queue(qdir, shared=True)
        try:
            assert q.role == "client"
            st = q.stats()
            assert (st["capacity"], st["durability"]) == (300, "always")
            # Messages of 1 KiB in segments of 64 KiB, acked: a snapshot
            # deletes the segments it covers (not recycled, old payloads
            # and all). The later ones fill more than the active segment.
            for marker, n in ((b"first-acked", 120), (b"later-acked", 80)):
                for _ in range(n):
                    q.publish(marker + bytes(1024), "t")
                while got := q.checkout("t", max_messages=100, timeout=0):
                    q.ack(got)
            assert q.stats()["journal_segments"] > 2
            q.snapshot()
            for seg in qdir.glob("*.log"):
                try:
                    assert b"first-acked" not in seg.read_bytes(), seg.name
                except FileNotFoundError:
                    continue  # renamed by the preparer meanwhile
            q.publish(b"fails once", "t")
            [d] = q.checkout("t", timeout=0)
            q.nack(d)
            assert q.stats()["dead"] == 1, "--max-attempts 1: the first failure is the last"
        finally:
            q.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


PRODUCER = """
import sys, ringq
q = ringq.Queue(sys.argv[1], shared=True, capacity=100_000)
name, n = sys.argv[2], int(sys.argv[3])
i = 0
while i < n:
    batch = [f"{name}-{j}".encode() for j in range(i, min(n, i + 7))]
    q.publish_many(batch, "work") if i % 2 else [q.publish(b, "work") for b in batch]
    i += len(batch)
print("published", flush=True)
q.close()
"""

CONSUMER = """
import sys, ringq
q = ringq.Queue(sys.argv[1], shared=True, capacity=100_000)
idle = 0
while idle < 20:
    got = q.checkout("work", max_messages=int(sys.argv[2]), timeout=0.1)
    if not got:
        idle += 1
        continue
    idle = 0
    q.ack(got)
    sys.stdout.write("".join(d.payload.decode() + "\\n" for d in got))
    sys.stdout.flush()
q.close()
"""


def test_producers_and_consumers_in_many_processes_ack_each_message_once(
    qdir: Path, open_queue: OpenQueue
) -> None:
    q = open_queue(shared=True, capacity=100_000)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(qdir), f"p{i}", "3000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    consumers = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, str(qdir), str(m)], stdout=subprocess.PIPE, text=True
        )
        for m in (1, 16, 64)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "published"
    seen: list[str] = []
    for c in consumers:
        out, _ = c.communicate(timeout=120)
        assert c.returncode == 0
        seen.extend(out.split())
    expected = {f"p{i}-{j}" for i in range(3) for j in range(3000)}
    assert len(seen) == len(expected), "every message acked exactly once"
    assert set(seen) == expected
    assert q.stats()["total"] == 0


HANDLER_CLIENT = """
import sys, ringq
q = ringq.Queue(sys.argv[1], shared=True)

@q.handler(bytes, topic="jobs")
def on_job(payload: bytes, ctx: ringq.Context) -> None:
    print(q.role, payload.decode(), flush=True)

q.start()
print("started", q.role, flush=True)
import time
time.sleep(600)
"""


def test_handlers_run_in_a_client_and_survive_the_owner_leaving(qdir: Path, spawn: Spawn) -> None:
    owner = ringq.Queue(qdir, shared=True)
    child = spawn(HANDLER_CLIENT, str(qdir))
    assert read_line(child) == "started client"
    owner.publish_many([b"a%d" % i for i in range(20)], "jobs")
    got = sorted(read_line(child) for _ in range(20))
    assert got == sorted(f"client a{i}" for i in range(20))
    assert wait_until(lambda: owner.stats()["total"] == 0, 10.0), "the client's handler acked them"
    # The owner leaves: the client's workers find nobody and take over.
    owner.close()

    def child_owns() -> bool:
        lock = (qdir / "LOCK").read_text().strip()
        return lock == str(child.pid) and (qdir / "SOCKET").exists()

    assert wait_until(child_owns, 10.0)
    late = ringq.Queue(qdir, shared=True)
    try:
        assert late.role == "client"
        late.publish_many([b"b%d" % i for i in range(5)], "jobs")
        got = sorted(read_line(child) for _ in range(5))
        assert got == sorted(f"owner b{i}" for i in range(5)), "served by the child, now the owner"
    finally:
        late.close()

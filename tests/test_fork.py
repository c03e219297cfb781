"""fork() is detected: a child never uses (or breaks) its parent's queue.

A queue belongs to the process that opened it (its threads and its
directory lock stay in that process). In a ``fork()`` child every call on
the inherited queue raises ``QueueForked`` (a ``QueueClosed``) saying to
open the queue after the fork; ``close()`` there only marks the copy
closed. A child that outlives its parent does not keep the directory
locked, and a child can open the queue itself once the parent closed it.

The forks here are real ``os.fork()`` calls of the test process: the child
runs one function, sends its JSON result through a pipe and leaves with
``os._exit`` whatever happens.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import ringq
from conftest import OpenQueue, Spawn, kill_and_collect, read_line, wait_until

FORKED = "after the fork"
#: Counters the child's refused calls must leave alone (``lsn``: nothing journaled).
STATE = (
    "ready",
    "in_flight",
    "delayed",
    "dead",
    "total",
    "published",
    "delivered",
    "released",
    "acked",
    "nacked",
    "dead_lettered",
    "dlq_replayed",
    "dlq_purged",
    "snapshots",
    "lsn",
)


class Child:
    """A ``fork()`` child running one function; ``wait`` collects it."""

    #: Children not collected yet (killed at the end of each test).
    live: ClassVar[set[int]] = set()

    def __init__(self, fn: Callable[[], Any]) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 2
            try:
                os.close(r)
                out = json.dumps({"ok": fn()})
                code = 0
            except BaseException:
                out = json.dumps({"error": traceback.format_exc()})
            finally:
                try:
                    data = out.encode()
                    while data:
                        data = data[os.write(w, data) :]
                finally:
                    os._exit(code)
        os.close(w)
        self.pid, self.pipe = pid, r
        Child.live.add(pid)

    def wait(self, timeout: float = 10.0) -> dict[str, Any]:
        """``{"ok": result}``, ``{"error": traceback}``, or ``{"hung": timeout}``
        (then the child was killed)."""
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        hung = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.pipe], [], [], left)[0]:
                    os.kill(self.pid, signal.SIGKILL)
                    hung = True
                    break
                chunk = os.read(self.pipe, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self.pipe)
            _, status = os.waitpid(self.pid, 0)
            Child.live.discard(self.pid)
        if hung:
            return {"hung": timeout}
        out: dict[str, Any] = json.loads(b"".join(chunks) or b'{"error": "no result"}')
        if "ok" in out:
            assert os.waitstatus_to_exitcode(status) == 0
        return out

    def result(self, timeout: float = 10.0) -> Any:
        """The child's JSON result; the test fails if it raised or hung."""
        out = self.wait(timeout)
        assert "hung" not in out, f"the fork child hung for {timeout}s"
        assert "error" not in out, f"the fork child failed:\n{out['error']}"
        return out["ok"]


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    yield
    for pid in list(Child.live):
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        Child.live.discard(pid)


def in_child(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run ``fn`` in a ``fork()`` child and return its JSON result."""
    return Child(fn).result(timeout)


def outcome(call: Callable[[], Any]) -> dict[str, Any]:
    """What a call did, as JSON: returned, or raised what (and how fast)."""
    started = time.monotonic()
    try:
        value = call()
    except BaseException as e:
        return {
            "raised": type(e).__name__,
            "forked": isinstance(e, ringq.QueueForked),
            "closed": isinstance(e, ringq.QueueClosed),
            "pid": getattr(e, "pid", None),
            "message": str(e),
            "seconds": time.monotonic() - started,
        }
    return {"returned": repr(value), "seconds": time.monotonic() - started}


OPEN_PROBE = """
import sys, ringq
try:
    ringq.Queue(sys.argv[1]).close()
    print("opened", flush=True)
except ringq.QueueLocked as e:
    print("locked", e.pid, flush=True)
"""


def test_every_call_on_an_inherited_queue_in_a_fork_child_raises_queue_forked(
    open_queue: OpenQueue, qdir: Path, spawn: Spawn
) -> None:
    q = open_queue(max_attempts=1)
    ids = q.publish_many([b"p-1", b"p-2", b"p-3"])
    [d, dead] = q.checkout(max_messages=2, lease=60, timeout=0)
    q.nack(dead, error="to have a dead letter")
    before = q.stats()

    def child() -> dict[str, Any]:
        calls: dict[str, Callable[[], Any]] = {
            "publish": lambda: q.publish(b"child"),
            "publish object": lambda: q.publish({"from": "child"}, "t"),
            "publish via class": lambda: ringq.Queue.publish(q, b"child"),
            "publish_many": lambda: q.publish_many([b"child-1", b"child-2"]),
            "checkout": lambda: q.checkout(timeout=0),
            "checkout waiting": lambda: q.checkout(timeout=5),
            "ack": lambda: q.ack(d),
            "nack": lambda: q.nack(d),
            "extend": lambda: q.extend(d, 60),
            "release": lambda: q.release(d),
            "stats": q.stats,
            "snapshot": q.snapshot,
            "dlq.list": q.dlq.list,
            "dlq.get": lambda: q.dlq.get(dead.id),
            "dlq.replay": q.dlq.replay,
            "dlq.purge": q.dlq.purge,
            "len(dlq)": lambda: len(q.dlq),
            "admin.stats": q.admin.stats,
        }
        out: dict[str, Any] = {name: outcome(call) for name, call in calls.items()}
        out["close"] = outcome(q.close)
        out["closed after close"] = q.closed
        out["publish after close"] = outcome(lambda: q.publish(b"child"))
        return out

    result = in_child(child)
    assert result.pop("close") == {"returned": "None", "seconds": pytest.approx(0, abs=1)}
    assert result.pop("closed after close") is True
    for name, got in result.items():
        assert got.get("raised") == "QueueForked", (name, got)
        assert got["forked"] and got["closed"], (name, got)
        assert got["pid"] == os.getpid(), (name, got)
        assert FORKED in got["message"] and "open the queue" in got["message"], (name, got)
        assert got["seconds"] < 1, (name, "waited instead of refusing at once")

    # The parent's queue is untouched and still locked by the parent.
    assert not q.closed
    assert {k: q.stats()[k] for k in STATE} == {k: before[k] for k in STATE}
    probe = spawn(OPEN_PROBE, str(qdir))
    assert read_line(probe) == f"locked {os.getpid()}"
    fresh = q.publish(b"p-4")
    assert fresh not in ids
    assert q.stats()["published"] == before["published"] + 1
    assert q.extend(d, 60) > 0
    q.ack(d)
    q.close()

    q = open_queue()
    left = [x.payload for x in q.checkout(max_messages=100, timeout=0)]
    assert left == [b"p-3", b"p-4"], "nothing the child tried exists"
    assert [x.id for x in q.dlq.list()] == [dead.id]
    assert q.stats()["total"] == 2


def test_handler_calls_in_a_fork_child_refuse_at_once_instead_of_waiting_for_parent_workers(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    handled: list[bytes] = []

    @q.handler(bytes, topic="t", max_parallelism=2)
    def work(msg: bytes) -> None:
        handled.append(msg)

    q.start()
    q.publish(b"before", "t")
    assert wait_for(lambda: handled == [b"before"])

    def with_block() -> Any:
        with q:
            pass
        return q.closed

    calls: dict[str, Callable[[], Any]] = {
        "start": q.start,
        "stop": q.stop,
        "stop(drain=False)": lambda: q.stop(drain=False),
        "scale": lambda: q.scale("work", 4),
        "leaving with q:": with_block,
    }
    allowed = {name: {"QueueForked"} for name in calls}
    allowed["leaving with q:"].add("returned True")  # like close(): marks the copy closed
    # One child per call, all at once: a call that hangs must not hide the others.
    children = {name: Child(functools.partial(outcome, call)) for name, call in calls.items()}
    deadline = time.monotonic() + 3
    results = {name: verdict(child, deadline) for name, child in children.items()}
    wrong = {name: got for name, got in results.items() if got not in allowed[name]}
    assert wrong == {}, "in the child, these neither refused at once nor finished"

    # The parent's handlers never noticed.
    assert q.running
    q.publish(b"after", "t")
    assert wait_for(lambda: handled == [b"before", b"after"])
    assert q.handler_stats()["work"]["workers"] == 2
    assert q.stop(timeout=5)


def verdict(child: Child, deadline: float) -> str:
    """What a child's call did, in brief: ``QueueForked`` if it raised that
    at once, else what it did instead (returned, hung, raised late)."""
    out = child.wait(max(0.1, deadline - time.monotonic()))
    assert "error" not in out, out["error"]
    if "hung" in out:
        return "hung"
    got = out["ok"]
    if "returned" in got:
        return f"returned {got['returned']}"
    if got["seconds"] >= 1:
        return f"{got['raised']} after {got['seconds']:.1f}s"
    return str(got["raised"])


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


PARENT = """
import os, sys, time, ringq
q = ringq.Queue(sys.argv[1])
q.publish(b"from the parent")
pid = os.fork()
if pid == 0:
    # The child keeps the inherited queue object but not the test's pipe.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    time.sleep(60)
    os._exit(0)
print(os.getpid(), pid, flush=True)
time.sleep(60)
"""


def test_a_fork_child_that_outlives_its_killed_parent_does_not_keep_the_directory_locked(
    spawn: Spawn, qdir: Path, open_queue: OpenQueue
) -> None:
    parent = spawn(PARENT, str(qdir))
    parent_pid, child_pid = map(int, read_line(parent).split())
    try:
        with pytest.raises(ringq.QueueLocked) as info:
            ringq.Queue(qdir)
        assert info.value.pid == parent_pid
        kill_and_collect(parent)
        os.kill(child_pid, 0)  # the child is still alive
        try:
            q = open_queue()
        except ringq.QueueLocked as e:
            assert e.pid != parent_pid and str(parent_pid) not in str(e), (
                f"QueueLocked names the dead parent: {e}"
            )
            pytest.fail(f"the fork child {child_pid} keeps the directory locked: {e}")
        os.kill(child_pid, 0)
        [d] = q.checkout(timeout=0)
        assert d.payload == b"from the parent"
        q.ack(d)
        q.publish(b"mine now")
        assert q.stats()["total"] == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child_pid, signal.SIGKILL)


SHARED_OWNER = """
import gc, os, sys, time, ringq
q = ringq.Queue(sys.argv[1], shared=True)
q.publish(b"from the owner", "t")
print(q.role, flush=True)
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    if sys.argv[2] == "drop":
        del q
        gc.collect()
        sys.exit(0)
    time.sleep(60)
    os._exit(0)
print(os.getpid(), pid, flush=True)
time.sleep(60)
"""


def test_a_fork_child_that_drops_a_shared_owners_queue_leaves_the_owner_serving(
    spawn: Spawn, qdir: Path
) -> None:
    """The child lets its copy go (``del q``, then a normal exit): the
    owner's socket and its clients' connections are the parent's too. The
    child used to shut the listener down (the owner then served nobody) and
    could have cut every client off."""
    owner = spawn(SHARED_OWNER, str(qdir), "drop")
    assert read_line(owner) == "owner"
    _, child_pid = map(int, read_line(owner).split())
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    q = ringq.Queue(qdir, shared=True)
    try:
        assert q.role == "client"
        [d] = q.checkout("t", timeout=5)
        assert d.payload == b"from the owner"
        q.ack(d)
    finally:
        q.close()


def test_a_fork_child_of_a_shared_owner_does_not_keep_its_clients_waiting_after_it_died(
    spawn: Spawn, qdir: Path
) -> None:
    """The owner is killed while a fork child of it lives on: its clients
    see the hang-up and the next call takes the queue over. The child held
    copies of the owner's listener and connections: no hang-up reached the
    clients, and calls waited forever."""
    owner = spawn(SHARED_OWNER, str(qdir), "live")
    assert read_line(owner) == "owner"
    owner_pid, child_pid = map(int, read_line(owner).split())
    q = ringq.Queue(qdir, shared=True)
    try:
        assert q.role == "client"
        kill_and_collect(owner)
        os.kill(child_pid, 0)  # the child is still alive
        done: list[object] = []

        def call() -> None:
            for _ in range(3):
                try:
                    done.append(q.checkout("t", timeout=0))
                    return
                except ringq.OwnerGone as e:
                    done.append(e)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), f"the client waited for the dead owner {owner_pid}: {done}"
        assert q.role == "owner"
        got = done[-1]
        assert isinstance(got, list) and [d.payload for d in got] == [b"from the owner"], done
    finally:
        q.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child_pid, signal.SIGKILL)


SHARED_CLIENT = """
import os, sys, time, ringq
q = ringq.Queue(sys.argv[1], shared=True)
got = q.checkout("t", max_messages=3, lease=600, timeout=5)
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    time.sleep(60)
    os._exit(0)
print(q.role, len(got), pid, flush=True)
time.sleep(600)
"""


def test_a_fork_child_of_a_killed_client_does_not_keep_its_leases(
    spawn: Spawn, qdir: Path, open_queue: OpenQueue
) -> None:
    """A client holding leases forks, and is killed while the child lives
    on: the owner ends the leases at once, as for any client that died. The
    child held copies of the client's connection: the owner saw no hang-up,
    and the leases stayed until their deadline (600 s here)."""
    q = open_queue(shared=True, lease=600)
    q.publish_many([b"x%d" % i for i in range(5)], "t")
    client = spawn(SHARED_CLIENT, str(qdir))
    role, held, child = read_line(client).split()
    child_pid = int(child)
    try:
        assert (role, held) == ("client", "3")
        assert q.stats()["in_flight"] == 3
        kill_and_collect(client)
        os.kill(child_pid, 0)  # the child is still alive
        assert wait_until(lambda: q.stats()["in_flight"] == 0, 10.0), (
            "the fork child kept the dead client's leases"
        )
        got = q.checkout("t", max_messages=5, timeout=0)
        assert sorted(d.attempt for d in got) == [1, 1, 2, 2, 2]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child_pid, signal.SIGKILL)


def test_a_fork_child_opens_the_queue_itself_after_the_parent_closed_it(
    open_queue: OpenQueue, qdir: Path
) -> None:
    q = open_queue()
    q.publish(b"for the child")
    instance = q.stats()["instance_id"]
    tried_r, tried_w = os.pipe()
    go_r, go_w = os.pipe()

    def child() -> dict[str, Any]:
        out: dict[str, Any] = {"while parent owns it": outcome(lambda: ringq.Queue(qdir))}
        os.write(tried_w, b"t")
        assert os.read(go_r, 1) == b"g"  # the parent closed its queue
        with ringq.Queue(qdir) as mine:
            [d] = mine.checkout(timeout=0)
            out["got"] = [d.payload.decode(), d.attempt, d.queue_id]
            mine.ack(d)
            mine.publish(b"from the child")
            out["total"] = mine.stats()["total"]
        out["inherited close"] = outcome(q.close)
        return out

    forked = Child(child)
    try:
        os.close(tried_w)
        os.close(go_r)
        assert os.read(tried_r, 1) == b"t"
        q.close()
        os.write(go_w, b"g")
    finally:
        os.close(tried_r)
        os.close(go_w)
    result = forked.result()

    locked = result["while parent owns it"]
    assert locked.get("raised") == "QueueLocked" and locked["pid"] == os.getpid(), locked
    assert result["got"] == ["for the child", 1, instance]
    assert result["total"] == 1
    assert result["inherited close"].get("returned") == "None"

    q = open_queue()
    [d] = q.checkout(timeout=0)
    assert d.payload == b"from the child"
    assert q.stats()["total"] == 1

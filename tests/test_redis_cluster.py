"""A queue on a Redis Cluster of three masters (``tests/redis_servers.py``):
``ringq.Queue("redis+cluster://host:port", namespace=...)``.

Every key of a namespace carries the hash tag ``{namespace}``, so a
namespace lives in one slot of one master and its scripts run there. Real
processes produce and consume (``python -c``, as in ``test_shared.py``); the
ids producers got from ``publish`` are compared with the ids consumers
acked: each exactly once. A slot handed to another master during a run
loses and duplicates nothing, whether it moves in one step or key by key
as ``redis-cli --cluster reshard`` moves it (clients get ``ASK`` while it
moves, ``MOVED`` after).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ringq
import ringq.backends.redis as redis_backend
from conftest import Spawn
from redis.crc import key_slot
from redis_servers import ClusterNode, RedisCluster, redis_cluster

# Publishes argv[4] messages (the first half one by one, the rest in
# batches of 10); prints [[id, payload], ...].
PRODUCE = """
import json, sys, ringq
url, ns, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
q = ringq.Queue(url, namespace=ns)
bodies = [f"{name}-{i}".encode() for i in range(n)]
ids = [q.publish(b, "t") for b in bodies[: n // 2]]
for i in range(n // 2, n, 10):
    ids += q.publish_many(bodies[i : i + 10], "t")
q.close()
print(json.dumps([[i, b.decode()] for i, b in zip(ids, bodies, strict=True)]))
"""

# Publishes until the file argv[3] exists; prints [[id, payload], ...].
PRODUCE_UNTIL_STOPPED = """
import json, os, sys, ringq
url, ns, stop = sys.argv[1:4]
q = ringq.Queue(url, namespace=ns)
out = []
while not os.path.exists(stop):
    body = f"m-{len(out)}"
    out.append([q.publish(body.encode(), "t"), body])
q.close()
print(json.dumps(out))
"""

# Acks what it checks out until a checkout finds nothing after the file
# argv[3] exists (made once every producer has exited); the lease outlasts
# the test, so nothing is delivered twice unless the backend does it.
# Prints [[id, payload, attempt], ...].
CONSUME = """
import json, os, sys, ringq
url, ns, done = sys.argv[1:4]
q = ringq.Queue(url, namespace=ns)
acked = []
while True:
    got = q.checkout("t", max_messages=10, lease=120, timeout=0.2)
    if not got:
        if os.path.exists(done):
            break
        continue
    q.ack(got)
    acked += [[d.id, d.payload.decode(), d.attempt] for d in got]
q.close()
print(json.dumps(acked))
"""


@pytest.fixture(scope="module")
def cluster() -> RedisCluster:
    found = redis_cluster()
    if found is None:
        pytest.skip("redis-server / redis-cli are not installed (scripts/dev test installs them)")
    return found


@pytest.fixture
def opened() -> Iterator[list[ringq.Queue]]:
    queues: list[ringq.Queue] = []
    yield queues
    for q in queues:
        q.close()


def slot_of(ns: str) -> int:
    """The slot of every key of namespace ``ns`` (hash tag ``{ns}``)."""
    return key_slot(f"ringq:{{{ns}}}:meta".encode())


def namespace_on(cluster: RedisCluster, master: ClusterNode) -> str:
    """A fresh namespace whose slot ``master`` serves."""
    while True:
        ns = "c-" + uuid.uuid4().hex[:10]
        if cluster.owner(slot_of(ns)) is master:
            return ns


def keys_per_node(cluster: RedisCluster, ns: str) -> dict[int, int]:
    """How many of ``ns``'s keys each node holds, by port."""
    pattern = f"ringq:{{{ns}}}:*"
    return {n.port: sum(1 for _ in n.client().scan_iter(match=pattern)) for n in cluster.nodes}


def refusals(node: ClusterNode) -> dict[str, int]:
    """Error replies ``node`` has sent (``INFO errorstats``): ``MOVED``, and
    all ``other`` ones (``ASK``, ``TRYAGAIN``, a script's refusal...)."""
    counts = {k: int(v["count"]) for k, v in node.client().info("errorstats").items()}
    moved = counts.pop("errorstat_MOVED", 0)
    return {"MOVED": moved, "other": sum(counts.values())}


def output(child: subprocess.Popen[str], timeout: float = 30) -> list[list[Any]]:
    out, _ = child.communicate(timeout=timeout)
    assert child.returncode == 0, f"child exited with {child.returncode} (its stderr is above)"
    return list(json.loads(out))


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "no progress within the time limit"
        time.sleep(0.01)


def assert_each_acked_once(published: list[list[Any]], acked: list[list[Any]]) -> None:
    pub_ids = [i for i, _ in published]
    ack_ids = [i for i, *_ in acked]
    assert len(set(pub_ids)) == len(pub_ids), "publish returned an id twice"
    duplicates = sorted({i for i in ack_ids if ack_ids.count(i) > 1})
    assert not duplicates, f"acked more than once: {duplicates[:10]}"
    missing = sorted(set(pub_ids) - set(ack_ids))
    assert not missing, f"{len(missing)} published but never acked: {missing[:10]}"
    assert set(ack_ids) == set(pub_ids), "acked ids nobody published"
    bodies = {i: b for i, b in published}
    assert all(bodies[i] == b for i, b, _ in acked), "an id came with another payload"
    assert all(a == 1 for *_, a in acked), "a message was delivered twice"


def test_two_namespaces_on_two_masters_each_id_acked_exactly_once(
    cluster: RedisCluster, spawn: Spawn, tmp_path: Path, opened: list[ringq.Queue]
) -> None:
    masters = cluster.nodes[:2]
    spaces = [namespace_on(cluster, m) for m in masters]
    url, per_producer = cluster.url(), 200
    done = tmp_path / "done"
    producers = {
        ns: [spawn(PRODUCE, url, ns, f"p{k}", str(per_producer)) for k in range(2)] for ns in spaces
    }
    consumers = {ns: [spawn(CONSUME, url, ns, str(done)) for _ in range(2)] for ns in spaces}
    published = {ns: [row for p in producers[ns] for row in output(p)] for ns in spaces}
    done.touch()
    acked = {ns: [row for c in consumers[ns] for row in output(c)] for ns in spaces}

    for ns, master in zip(spaces, masters, strict=True):
        assert len(published[ns]) == 2 * per_producer
        assert_each_acked_once(published[ns], acked[ns])
        held = keys_per_node(cluster, ns)
        assert held[master.port] > 0 and sum(held.values()) == held[master.port], (
            f"every key of {ns} is on its master 127.0.0.1:{master.port}: {held}"
        )
        q = ringq.Queue(url, namespace=ns)
        opened.append(q)
        s = q.stats()
        assert (s["total"], s["acked"], s["published"]) == (0, 2 * per_producer, 2 * per_producer)


@pytest.mark.parametrize("batch", [None, 10], ids=["in_one_step", "key_by_key"])
def test_a_slot_moved_during_the_run_loses_and_duplicates_nothing(
    cluster: RedisCluster,
    spawn: Spawn,
    tmp_path: Path,
    opened: list[ringq.Queue],
    batch: int | None,
) -> None:
    """The namespace's slot goes from the first master to the second and on
    to the third while a producer and a consumer run: in one step, or
    ``batch`` keys at a time as ``redis-cli --cluster reshard`` does (calls
    then meet the slot half moved)."""
    first = cluster.nodes[0]
    ns = namespace_on(cluster, first)
    slot, url = slot_of(ns), cluster.url()
    watcher = ringq.Queue(url, namespace=ns)
    opened.append(watcher)
    backlog = [b"old-%d" % i for i in range(300)]  # keys enough for 30 batches
    watcher.publish_many(backlog, "backlog")
    stop, done = tmp_path / "stop", tmp_path / "done"
    producer = spawn(PRODUCE_UNTIL_STOPPED, url, ns, str(stop))
    consumer = spawn(CONSUME, url, ns, str(done))

    def acked() -> int:
        return int(watcher.stats()["acked"])

    def acked_at_least(n: int) -> Callable[[], bool]:
        return lambda: acked() >= n

    wait_until(acked_at_least(100))
    before = {n.port: refusals(n) for n in cluster.nodes}
    for source, target in zip(cluster.nodes, cluster.nodes[1:], strict=False):
        assert cluster.owner(slot) is source
        refused = refusals(source)["other"] + refusals(target)["other"]
        cluster.move_slot(slot, target, batch)
        if batch is not None:
            assert refusals(source)["other"] + refusals(target)["other"] > refused, (
                "no call met the slot half moved: the reshard was too quick to test anything"
            )
        at_move = acked()
        # Both processes go on against the new master: they followed MOVED.
        wait_until(acked_at_least(at_move + 100))
        assert watcher.stats()["published"] > at_move + 100
    stop.touch()
    published = output(producer)
    done.touch()
    got = output(consumer)

    assert len(published) > 300
    assert_each_acked_once(published, got)
    old = watcher.checkout("backlog", max_messages=1000, timeout=0)
    assert [(d.payload, d.attempt) for d in old] == [(b, 1) for b in backlog]
    watcher.ack(old)
    last = cluster.nodes[2]
    held = keys_per_node(cluster, ns)
    assert held[last.port] > 0 and sum(held.values()) == held[last.port], held
    for source in cluster.nodes[:2]:
        assert refusals(source)["MOVED"] > before[source.port]["MOVED"], (
            f"127.0.0.1:{source.port} answered no MOVED: the slot did not move under the clients"
        )
    s = watcher.stats()
    assert s["total"] == 0
    assert s["acked"] == s["published"] == len(published) + len(backlog)


def test_a_reshard_stopped_half_way_fails_calls_clearly_and_a_waiting_call_goes_through(
    cluster: RedisCluster, opened: list[ringq.Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot stays ``MIGRATING``/``IMPORTING`` (a reshard that stopped):
    a call waits ``RESHARD_WAIT``, then fails naming the namespace, having
    written nothing; a call still waiting when the reshard is called off
    (``SETSLOT STABLE``) goes through, once."""
    monkeypatch.setattr(redis_backend, "RESHARD_WAIT", 0.5)
    source, target = cluster.nodes[0], cluster.nodes[1]
    ns = namespace_on(cluster, source)
    slot = slot_of(ns)
    q = ringq.Queue(cluster.url(), namespace=ns)
    opened.append(q)
    q.publish(b"before", "t")
    target.client().execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id())
    source.client().execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id())
    waiting = threading.Thread(target=lambda: q.publish(b"after", "t"))
    try:
        with pytest.raises(ringq.BackendUnavailable, match=f"{ns}.*moving"):
            q.publish(b"never", "t")
        monkeypatch.setattr(redis_backend, "RESHARD_WAIT", 30.0)
        refused = refusals(source)["other"]
        waiting.start()
        wait_until(lambda: refusals(source)["other"] > refused + 2)
    finally:
        for node in (source, target):
            node.client().execute_command("CLUSTER SETSLOT", slot, "STABLE")
    waiting.join(10)
    assert not waiting.is_alive()
    got = q.checkout("t", max_messages=10, timeout=0)
    assert [d.payload for d in got] == [b"before", b"after"]
    q.ack(got)
    assert q.stats()["published"] == 2


def test_the_api_round_trip_on_the_cluster(
    cluster: RedisCluster, opened: list[ringq.Queue]
) -> None:
    ns = namespace_on(cluster, cluster.nodes[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every master fsyncs always: no durability warning
        q = ringq.Queue(cluster.url(), namespace=ns, max_attempts=2, durability="always")
    opened.append(q)
    assert q.stats()["redis_appendfsync"] == "always"

    mid = q.publish(b"one", "orders", dedup_key="k1", headers={"h": "v"})
    [d] = q.checkout("orders", lease=30, timeout=0)
    assert (d.id, d.payload, d.attempt) == (mid, b"one", 1)
    assert (d.dedup_key, d.headers) == ("k1", {"h": "v"})
    q.ack(d)
    with pytest.raises(ringq.LeaseLost):
        q.ack(d)

    bad = q.publish(b"bad", "orders")
    [d1] = q.checkout("orders", timeout=0)
    q.nack(d1, delay=0, error=ValueError("first"))
    [d2] = q.checkout("orders", timeout=0)
    assert (d2.id, d2.attempt) == (bad, 2)
    q.nack(d2, error=ValueError("second"))
    [dead] = q.dlq.list()
    assert (dead.id, dead.reason, dead.attempts) == (bad, "max_attempts", 2)
    assert (dead.error_type, dead.error_message) == ("ValueError", "second")
    assert q.dlq.get(bad).message.payload == b"bad"
    assert q.dlq.replay() == 1
    assert len(q.dlq) == 0
    [again] = q.checkout("orders", timeout=0)
    assert (again.payload, again.attempt) == (b"bad", 1)
    q.ack(again)

    handled: list[bytes] = []
    all_in = threading.Event()

    @q.handler(bytes, topic="mail")
    def send(body: bytes) -> None:
        handled.append(body)
        if len(handled) == 3:
            all_in.set()

    q.publish_many([b"a", b"b", b"c"], "mail")
    q.start()
    try:
        assert all_in.wait(10)
    finally:
        q.stop()
    assert sorted(handled) == [b"a", b"b", b"c"]
    s = q.stats()
    assert (s["total"], s["dead"], s["acked"], s["dead_lettered"]) == (0, 0, 5, 1)
    held = keys_per_node(cluster, ns)
    assert sum(held.values()) == held[cluster.nodes[1].port] > 0, held


class _ReplyDropper:
    """A TCP proxy in front of one node: once armed, the next request that
    holds ``marker`` is forwarded, the server's reply is read and thrown
    away, and the client's connection closed (the call ran; its answer was
    lost on the way, as when a connection or a node fails)."""

    def __init__(self, upstream: int) -> None:
        import socket

        self.upstream = upstream
        self.armed: bytes | None = None
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()

    def _up(self, client: Any, server: Any) -> None:
        drop = threading.Event()
        threading.Thread(target=self._down, args=(server, client, drop), daemon=True).start()
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.armed is not None and self.armed in data:
                    self.armed = None
                    drop.set()  # before the request goes: its reply is the next
                server.sendall(data)

    def _down(self, server: Any, client: Any, drop: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if drop.is_set():
                    self.dropped += 1
                    break
                client.sendall(data)
        for s in (client, server):
            with contextlib.suppress(OSError):
                s.shutdown(2)
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_script_whose_reply_is_lost_is_not_run_again(tmp_path: Path) -> None:
    """redis-py's cluster client retries a command after a connection error
    (10 times by default), ``EVALSHA`` included: a publish whose reply was
    lost ran twice and returned as if once (a duplicate), a checkout took a
    second batch while nobody held the first. As a standalone client does,
    the call now fails with ``BackendUnavailable`` (whether it took effect
    is unknown) and nothing runs twice."""
    if redis_cluster() is None:
        pytest.skip("redis-server / redis-cli are not installed (scripts/dev test installs them)")
    node = ClusterNode(tmp_path / "node", "always")
    node.start()
    proxy = _ReplyDropper(node.port)
    try:
        admin = node.client()
        # One master with every slot, announced at the proxy's port: the
        # cluster client reaches it only through the proxy.
        admin.execute_command("CONFIG SET", "cluster-announce-port", proxy.port)
        admin.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 30
        while admin.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "the one-node cluster did not come up"
            time.sleep(0.02)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = ringq.Queue(f"redis+cluster://127.0.0.1:{proxy.port}", namespace="lost-reply")
        try:
            q.publish(b"warm", "w")  # the scripts are loaded
            proxy.armed = b"EVALSHA"
            with pytest.raises(ringq.BackendUnavailable):
                q.publish(b"once", "t")
            assert proxy.dropped == 1
            got = q.checkout("t", max_messages=10, timeout=0)
            assert [d.payload for d in got] == [b"once"], "the publish ran once"
            q.ack(got)
            q.publish(b"c1", "c")
            q.publish(b"c2", "c")
            proxy.armed = b"EVALSHA"
            with pytest.raises(ringq.BackendUnavailable):
                q.checkout("c", max_messages=1, timeout=0)
            st = q.topic_stats()["c"]
            assert (st["in_flight"], st["ready"]) == (1, 1), "one checkout ran, not two"
        finally:
            q.close()
    finally:
        proxy.close()
        node.stop()

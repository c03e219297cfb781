"""The test suite's own ``redis-server`` processes (the Debian package), on
127.0.0.1 with ``appendonly yes`` and ``appendfsync always``: one server and
one three-master Redis Cluster per test process, each started on first use
and stopped at exit. The server class is the peer suite's
(``benches/peers/redisd.py``)."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches" / "peers"))

from redisd import RedisServer, free_port

__all__ = [
    "ClusterNode",
    "RedisCluster",
    "RedisServer",
    "redis_cluster",
    "redis_cluster_url",
    "redis_url",
]

_lock = threading.Lock()
_server: RedisServer | None = None


def redis_url() -> str | None:
    """``redis://127.0.0.1:<port>/0`` of this process's server, or ``None``
    when redis-server is not installed."""
    global _server
    if shutil.which("redis-server") is None:
        return None
    with _lock:
        if _server is None:
            place = Path(tempfile.mkdtemp(prefix="ringq-redis-"))
            server = RedisServer(place, "always")
            server.start()
            atexit.register(server.stop)
            atexit.register(shutil.rmtree, place, True)
            _server = server
        return f"redis://127.0.0.1:{_server.port}/0"


class ClusterNode(RedisServer):
    """A ``RedisServer`` with ``cluster-enabled yes`` (its ``nodes.conf`` in
    its directory) and its cluster bus on a second free port (not port +
    10000, which may be taken or over 65535)."""

    def __init__(self, directory: Path, fsync: str) -> None:
        super().__init__(directory, fsync)
        self.bus_port = free_port()
        self._client: Any = None

    def repick_ports(self) -> None:
        super().repick_ports()
        self.bus_port = free_port()

    def flags(self) -> list[str]:
        return [
            *super().flags(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
        ]  # fmt: skip

    def client(self) -> Any:
        """A plain redis-py client of this node alone (no redirections)."""
        import redis

        if self._client is None:
            self._client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        return self._client

    def node_id(self) -> str:
        return str(self.client().execute_command("CLUSTER MYID").decode())


#: Run on a slot's master: ``SETSLOT MIGRATING`` and ``MIGRATE`` of every key
#: of slot ARGV[1] to node ARGV[2] (127.0.0.1:ARGV[3]), as one atomic step
#: (listed inside it too: a key made between listing and moving would stay
#: behind).
MOVE_OUT = """
redis.call('CLUSTER', 'SETSLOT', ARGV[1], 'MIGRATING', ARGV[2])
local moved = 0
while true do
  local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', ARGV[1], 1000)
  if #keys == 0 then return moved end
  redis.call('MIGRATE', '127.0.0.1', ARGV[3], '', 0, 10000, 'KEYS', unpack(keys))
  moved = moved + #keys
end
"""


class RedisCluster:
    """Three masters (``ClusterNode``, ``appendfsync always``) on free
    loopback ports, joined by ``redis-cli --cluster create`` without
    replicas. ``move_slot`` hands one slot to another master the way a
    reshard does (``MIGRATING``/``IMPORTING``, ``MIGRATE``, ``SETSLOT NODE``)."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.dir = directory
        self.nodes = [ClusterNode(directory / f"node{i}", "always") for i in range(masters)]

    def start(self, timeout: float = 60.0) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: apt-get install redis-tools")
        try:
            for node in self.nodes:
                node.start(timeout)
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
            made = subprocess.run(
                [*create, "--cluster-yes"], capture_output=True, text=True, timeout=timeout
            )
            if made.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{made.stdout}{made.stderr}"
                )
            self.wait_until_agreed(timeout)
        except BaseException:
            self.stop()
            raise

    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<first node's port>``."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def owner(self, slot: int) -> ClusterNode:
        """The master that serves ``slot`` (by ``CLUSTER SLOTS`` of the first node)."""
        for start, end, master, *_ in self.nodes[0].client().execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return self.node(int(master[1]))
        raise LookupError(f"no master serves slot {slot}")

    def wait_until_agreed(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` and all of them give
        the same ``CLUSTER SLOTS``."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                n.client().execute_command("CLUSTER INFO")["cluster_state"] for n in self.nodes
            ]
            maps = [_slot_map(n.client().execute_command("CLUSTER SLOTS")) for n in self.nodes]
            if all(s == "ok" for s in states) and all(m == maps[0] for m in maps):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cluster did not agree within {timeout} s: states {states}, slots {maps}"
                )
            time.sleep(0.02)

    def move_slot(self, slot: int, to: ClusterNode, batch: int | None = None) -> None:
        """Hands ``slot`` and every key in it to master ``to``, the way a
        reshard does: the target ``IMPORTING``, the source ``MIGRATING``, the
        keys ``MIGRATE``d, then ``SETSLOT NODE`` on every node. Clients get
        ``ASK`` while it moves and ``MOVED`` after.

        ``batch=None``: the source's part is one Lua script (``MOVE_OUT``),
        so no client command runs there while the slot is half moved.
        ``batch=N``: as ``redis-cli --cluster reshard`` does it, ``N`` keys
        per ``MIGRATE`` with clients' commands in between, which meet some
        keys on one node and some on the other."""
        source = self.owner(slot)
        if source is to:
            raise ValueError(f"slot {slot} is already on 127.0.0.1:{to.port}")
        src = source.client()
        to.client().execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id())
        if batch is None:
            src.eval(MOVE_OUT, 0, slot, to.node_id(), to.port)
        else:
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", to.node_id())
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, batch):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 10_000, "KEYS", *keys)
        for node in [to, source, *(n for n in self.nodes if n not in (to, source))]:
            node.client().execute_command("CLUSTER SETSLOT", slot, "NODE", to.node_id())
        self.wait_until_agreed()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _slot_map(slots: Any) -> list[tuple[int, int, int]]:
    return sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)


_cluster: RedisCluster | None = None


def redis_cluster_url() -> str | None:
    """``redis+cluster://127.0.0.1:<port>`` of this process's three-master
    cluster, or ``None`` when redis-server or redis-cli is not installed."""
    return None if (c := redis_cluster()) is None else c.url()


def redis_cluster() -> RedisCluster | None:
    """This process's cluster (started on first use, stopped at exit), or
    ``None`` when redis-server or redis-cli is not installed."""
    global _cluster
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return None
    with _lock:
        if _cluster is None:
            place = Path(tempfile.mkdtemp(prefix="ringq-redis-cluster-"))
            atexit.register(shutil.rmtree, place, True)
            cluster = RedisCluster(place)
            cluster.start()  # stops what it started if it fails
            atexit.register(cluster.stop)
            _cluster = cluster
        return _cluster

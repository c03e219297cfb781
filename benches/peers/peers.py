"""One adapter per peer, all with the same small surface, so every workload
runs the same loop against each of them.

``put(items)`` stores a list (one item for the one-per-call variants, 100
for the batched ones) and returns once the peer says it is stored.
``get(n, timeout)`` returns up to ``n`` ``(handle, payload)`` pairs, waiting
up to ``timeout`` seconds for the first (peers with no blocking read are
polled every 0.1 ms, the best case a user would write). ``ack(handles)``
confirms them (a no-op where reading deletes). ``close()`` closes cleanly.

taskito is a task queue, not a message queue: it has its own workloads in
``work_taskito.py`` and only its facts live here; so do the asyncio rows
(``ASYNC_ROWS``: ringq's ``AsyncQueue``, arq and taskiq, workload C only, in
``work_async.py``) and the Redis job queues (``JOB_ROWS``: jobs on Redis,
end to end, with the libraries' own worker processes, in ``work_jobs.py``).
"""

from __future__ import annotations

import importlib.metadata
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLL = 0.0001  # seconds between polls for peers with no blocking read


@dataclass(frozen=True)
class PeerInfo:
    """What the results table says about a peer variant."""

    key: str
    label: str
    package: str  # distribution name for the version ("" = stdlib / ours)
    durability: str  # what a put survives, in words
    batch: int  # items per put / get call
    fsync_per_op: bool  # every put waits for an fsync
    consume: str  # "ack" (lease + ack), "delete" (read removes), "task" (a job runs)
    #: Rows of ``PROCESS_ROWS`` only (workload C with real processes, ``work_procs.py``):
    producers: int = 0  # producer processes (the consumer is one more process)
    versus: str = ""  # the ``INFOS`` peer run right after it in every repetition
    notes: str = ""  # how the row is run, for the page (process and asyncio rows)
    #: A venv of its own, for a peer whose pins conflict with the suite's:
    #: ``requirements-<venv>.txt`` installed into ``<the suite's venv>-<venv>``.
    venv: str = ""


class MissingVenv(RuntimeError):
    """A peer's own venv is not there (``benches/peers/install`` makes it)."""


def python_for(info: PeerInfo) -> str:
    """The interpreter a run of this peer starts with."""
    if not info.venv:
        return sys.executable
    python = Path(f"{sys.prefix}-{info.venv}") / "bin" / "python"
    if not python.exists():
        raise MissingVenv(
            f"{info.key} runs in a venv of its own, {python.parent.parent}, which is missing: "
            f"benches/peers/install makes it from benches/peers/requirements-{info.venv}.txt"
        )
    return str(python)


def uses_redis(key: str) -> bool:
    """The run needs a fresh ``redis-server`` (``redisd.py``)."""
    return key.startswith(("redis", "ringq_redis")) or key in ("arq", "taskiq", *JOB_ROWS)


#: Packages named beside a peer's own in its version.
ALSO = {"taskiq": ("taskiq-redis",), "celery": ("kombu",)}


def _versions(info: PeerInfo, names: list[str]) -> list[str]:
    if not info.venv:
        return [importlib.metadata.version(x) for x in names]
    code = "import importlib.metadata as m, sys; print(*(m.version(x) for x in sys.argv[1:]))"
    out = subprocess.run([python_for(info), "-c", code, *names], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return out.split()


def version_of(info: PeerInfo) -> str:
    if info.key.startswith("ringq"):
        import ringq

        if not uses_redis(info.key):
            return str(ringq.__version__)
        import redis
        from redisd import version

        return f"{ringq.__version__} (redis-py {redis.__version__}, redis-server {version()})"
    if not info.package:
        import platform

        return f"Python {platform.python_version()}"
    also = ALSO.get(info.key, ())
    names = [info.package, *also]
    if uses_redis(info.key) and info.package != "redis":
        names.append("redis")
    try:
        found = dict(zip(names, _versions(info, names), strict=True))
    except MissingVenv:
        return "not installed"
    if not uses_redis(info.key):
        return found[info.package]
    from redisd import version

    client = f"redis-py {found['redis']}, redis-server {version()}"
    if info.package == "redis":
        return client
    return ", ".join([found[info.package], *(f"{n} {found[n]}" for n in also)]) + f" ({client})"


class Peer:
    """The common surface. Most peers store and confirm one item per call and
    have no blocking read: they give ``put_one`` / ``pop_one`` / ``ack_one``
    and get ``put`` / ``get`` (polled every ``POLL`` s) / ``ack`` from here.
    Peers with batch calls or a blocking read override those instead."""

    info: PeerInfo

    def put_one(self, item: bytes) -> None:
        raise NotImplementedError

    def pop_one(self) -> tuple[Any, bytes] | None:
        """The next ``(handle, payload)``, or None when there is none now."""
        raise NotImplementedError

    def ack_one(self, handle: Any) -> None:
        pass  # reading deleted it

    def put(self, items: list[bytes]) -> None:
        for x in items:
            self.put_one(x)

    def pop(self, n: int) -> list[tuple[Any, bytes]]:
        out: list[tuple[Any, bytes]] = []
        while len(out) < n:
            m = self.pop_one()
            if m is None:
                break
            out.append(m)
        return out

    def get(self, n: int, timeout: float) -> list[tuple[Any, bytes]]:
        got = self.pop(n)
        if got or timeout <= 0:
            return got
        deadline = time.perf_counter() + timeout
        while True:
            time.sleep(POLL)
            got = self.pop(n)
            if got or time.perf_counter() >= deadline:
                return got

    def ack(self, handles: list[Any]) -> None:
        for h in handles:
            self.ack_one(h)

    def size(self) -> int:
        """Items stored and not yet read (checks a produce run)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _BlockingGet(Peer):
    """``queue.Queue``-style peers: ``get(timeout=)`` blocks, ``task_done``
    confirms; ``self.empty`` is the exception an empty ``get`` raises."""

    q: Any
    empty: type[Exception]

    def put_one(self, item: bytes) -> None:
        self.q.put(item)

    def get(self, n: int, timeout: float) -> list[tuple[Any, bytes]]:
        try:
            first = self.q.get(timeout=timeout) if timeout > 0 else self.q.get(block=False)
        except self.empty:
            return []
        out = [(None, first)]
        while len(out) < n:
            try:
                out.append((None, self.q.get(block=False)))
            except self.empty:
                break
        return out

    def ack_one(self, handle: Any) -> None:
        self.q.task_done()

    def size(self) -> int:
        return int(self.q.qsize())


class StdQueue(_BlockingGet):
    """``queue.Queue``: the in-memory ceiling; a new process finds it empty."""

    def __init__(self, info: PeerInfo, path: Path, **_: Any) -> None:
        self.info = info
        self.empty = queue.Empty
        self.q = queue.Queue()


class Ringq(Peer):
    """``shared=True``: the first process to open the directory owns it, the
    others are its clients over a Unix socket (``ringq_shared``)."""

    def __init__(
        self,
        info: PeerInfo,
        path: Path,
        durability: str = "batch",
        capacity: int = 0,
        shared: bool = False,
    ) -> None:
        import ringq

        self.info = info
        self.q = ringq.Queue(
            path, durability=durability, capacity=max(capacity, 200_000), shared=shared
        )

    @property
    def role(self) -> str:
        """``"local"``, or ``"owner"`` / ``"client"`` for a shared queue."""
        return str(self.q.role)

    def put(self, items: list[bytes]) -> None:
        if len(items) == 1:
            self.q.publish(items[0], topic="t")
        else:
            self.q.publish_many(items, topic="t")

    def get(self, n: int, timeout: float) -> list[tuple[Any, bytes]]:
        return [(d, d.payload) for d in self.q.checkout("t", max_messages=n, timeout=timeout)]

    def ack(self, handles: list[Any]) -> None:
        self.q.ack(handles[0] if len(handles) == 1 else handles)

    def size(self) -> int:
        return int(self.q.stats()["ready"])

    def close(self) -> None:
        self.q.close()


class RingqRedis(Ringq):
    """ringq's Redis backend: ``ringq.Queue("redis://...", namespace=...)`` on
    the run's fresh redis-server (the same calls as a directory queue; the
    server's ``appendfsync`` is the durability)."""

    def __init__(self, info: PeerInfo, path: Path, port: int = 0, capacity: int = 0) -> None:
        import ringq

        self.info = info
        self.q = ringq.Queue(
            f"redis://127.0.0.1:{port}/0", namespace="bench", capacity=max(capacity, 200_000)
        )


class PersistQueue(_BlockingGet):
    """``persistqueue.Queue`` (files), defaults (``autosave=False``)."""

    def __init__(self, info: PeerInfo, path: Path, **_: Any) -> None:
        import persistqueue

        self.info = info
        self.empty = persistqueue.Empty
        self.q = persistqueue.Queue(str(path), tempdir=str(path.parent))

    def close(self) -> None:
        del self.q  # persistqueue.Queue has no close(); this closes its files


class SQLiteAck(Peer):
    """``persistqueue.SQLiteAckQueue`` (``multithreading=True`` so a consumer
    thread may share it; SQLite ``synchronous=FULL``: an fsync per commit)."""

    def __init__(self, info: PeerInfo, path: Path, **_: Any) -> None:
        import persistqueue

        self.info = info
        self.empty = persistqueue.Empty
        self.q = persistqueue.SQLiteAckQueue(str(path), multithreading=True)

    def put_one(self, item: bytes) -> None:
        self.q.put(item)

    def pop_one(self) -> tuple[Any, bytes] | None:
        try:
            item = self.q.get(block=False, raw=True)
        except self.empty:
            return None
        return item["pqid"], item["data"]

    def ack_one(self, handle: Any) -> None:
        self.q.ack(id=handle)

    def size(self) -> int:
        return int(self.q.qsize())

    def close(self) -> None:
        self.q.close()


class Lite(Peer):
    """``litequeue.LiteQueue``: pop locks a row, ``done`` finishes it."""

    def __init__(self, info: PeerInfo, path: Path, **_: Any) -> None:
        from litequeue import LiteQueue

        self.info = info
        path.mkdir(parents=True, exist_ok=True)
        self.q = LiteQueue(str(path / "q.db"))

    def put_one(self, item: bytes) -> None:
        self.q.put(item)

    def pop_one(self) -> tuple[Any, bytes] | None:
        m = self.q.pop()
        if m is None:
            return None
        return m.message_id, m.data if isinstance(m.data, bytes) else str(m.data).encode()

    def ack_one(self, handle: Any) -> None:
        self.q.done(handle)

    def size(self) -> int:
        return int(self.q.qsize())

    def close(self) -> None:
        self.q.close()


class Huey(Peer):
    """huey's ``SqliteStorage`` (storage level: dequeue deletes)."""

    def __init__(self, info: PeerInfo, path: Path, **_: Any) -> None:
        from huey.storage import SqliteStorage

        self.info = info
        path.mkdir(parents=True, exist_ok=True)
        self.q = SqliteStorage(name="bench", filename=str(path / "huey.db"))

    def put_one(self, item: bytes) -> None:
        self.q.enqueue(item)

    def pop_one(self) -> tuple[Any, bytes] | None:
        x = self.q.dequeue()
        return None if x is None else (None, bytes(x))

    def size(self) -> int:
        return int(self.q.queue_size())

    def close(self) -> None:
        self.q.close()


class DiskDeque(Peer):
    """``diskcache.Deque`` (``popleft`` deletes)."""

    def __init__(self, info: PeerInfo, path: Path, **_: Any) -> None:
        from diskcache import Deque

        self.info = info
        self.q = Deque(directory=str(path))

    def put_one(self, item: bytes) -> None:
        self.q.append(item)

    def pop_one(self) -> tuple[Any, bytes] | None:
        try:
            return None, self.q.popleft()
        except IndexError:
            return None

    def size(self) -> int:
        return len(self.q)

    def close(self) -> None:
        self.q.cache.close()


class RocksQ(Peer):
    """rocksq's blocking ``PersistentQueueWithCapacity`` (pop deletes; both
    calls take a list, so one call per put / get, polled like the others)."""

    def __init__(self, info: PeerInfo, path: Path, **_: Any) -> None:
        from rocksq.blocking import PersistentQueueWithCapacity

        self.info = info
        self.q = PersistentQueueWithCapacity(str(path), max_elements=10_000_000)

    def put(self, items: list[bytes]) -> None:
        self.q.push(items)

    def pop(self, n: int) -> list[tuple[Any, bytes]]:
        return [(None, x) for x in self.q.pop(max_elements=n)]

    def size(self) -> int:
        return int(self.q.len)

    def close(self) -> None:
        del self.q  # no close(): dropping it closes RocksDB and its LOCK


class RedisStreams(Peer):
    """A stream with one consumer group: XADD, XREADGROUP, XACK (pipelined
    when the batch is larger than one)."""

    STREAM, GROUP, CONSUMER = "s", "g", "c"

    def __init__(self, info: PeerInfo, path: Path, port: int = 0, **_: Any) -> None:
        import redis

        self.info = info
        self.r = redis.Redis(host="127.0.0.1", port=port)
        # A second connection for reads, so a blocked XREADGROUP never holds up a put.
        self.reader = redis.Redis(host="127.0.0.1", port=port)
        try:
            self.r.xgroup_create(self.STREAM, self.GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self.pending_first = True  # after a restart: deliveries never acked come first

    def put(self, items: list[bytes]) -> None:
        if len(items) == 1:
            self.r.xadd(self.STREAM, {"d": items[0]})
            return
        p = self.r.pipeline(transaction=False)
        for x in items:
            p.xadd(self.STREAM, {"d": x})
        p.execute()

    def get(self, n: int, timeout: float) -> list[tuple[Any, bytes]]:
        if self.pending_first:
            resp = self.reader.xreadgroup(self.GROUP, self.CONSUMER, {self.STREAM: "0"}, count=n)
            got = [(mid, f[b"d"]) for _s, entries in resp for mid, f in entries]
            if got:
                return got
            self.pending_first = False
        block = int(timeout * 1000) if timeout > 0 else None
        if block == 0:
            block = 1
        resp = self.reader.xreadgroup(
            self.GROUP, self.CONSUMER, {self.STREAM: ">"}, count=n, block=block
        )
        return [(mid, f[b"d"]) for _s, entries in resp for mid, f in entries]

    def ack(self, handles: list[Any]) -> None:
        self.r.xack(self.STREAM, self.GROUP, *handles)

    def size(self) -> int:
        return int(self.r.xlen(self.STREAM))

    def close(self) -> None:
        self.r.close()
        self.reader.close()


def _i(key: str, label: str, package: str, durability: str, batch: int = 1,
       fsync: bool = False, consume: str = "delete") -> PeerInfo:  # fmt: skip
    return PeerInfo(key, label, package, durability, batch, fsync, consume)


#: Every variant the suite runs, in table order.
INFOS: dict[str, PeerInfo] = {
    p.key: p
    for p in (
        _i("ringq", "ringq", "", "batch: fsync every 50 ms", consume="ack"),
        _i(
            "ringq_b100",
            "ringq, batches of 100",
            "",
            "batch: fsync every 50 ms",
            100,
            consume="ack",
        ),
        _i(
            "ringq_always",
            "ringq always",
            "",
            "always: fsync before put returns",
            fsync=True,
            consume="ack",
        ),
        _i("ringq_os", "ringq os", "", "os: no explicit fsync", consume="ack"),
        _i(
            "ringq_always_b100",
            "ringq always, batches of 100",
            "",
            "always: fsync before put returns",
            100,
            True,
            "ack",
        ),
        _i("queue", "queue.Queue", "", "none (memory)", consume="ack"),
        _i(
            "persistqueue",
            "persistqueue.Queue",
            "persist-queue",
            "page cache; fsync per 100-item chunk",
        ),
        _i(
            "sqliteack",
            "persistqueue.SQLiteAckQueue",
            "persist-queue",
            "SQLite synchronous=FULL",
            fsync=True,
            consume="ack",
        ),
        _i("litequeue", "litequeue", "litequeue", "SQLite WAL, synchronous=NORMAL", consume="ack"),
        _i("huey", "huey SqliteStorage", "huey", "SQLite synchronous=FULL", fsync=True),
        _i("diskcache", "diskcache.Deque", "diskcache", "SQLite WAL, synchronous=NORMAL"),
        _i("rocksq", "rocksq", "rocksq", "RocksDB WAL, no fsync"),
        _i("rocksq_b100", "rocksq, batches of 100", "rocksq", "RocksDB WAL, no fsync", 100),
        _i(
            "taskito",
            "taskito (defaults)",
            "taskito",
            "SQLite WAL, synchronous=NORMAL",
            consume="task",
        ),
        _i(
            "taskito_tuned",
            "taskito (1 ms poll)",
            "taskito",
            "SQLite WAL, synchronous=NORMAL",
            consume="task",
        ),
        _i("redis", "Redis Streams everysec", "redis", "AOF, fsync every second", consume="ack"),
        _i(
            "redis_b100",
            "Redis Streams everysec, pipelined 100",
            "redis",
            "AOF, fsync every second",
            100,
            consume="ack",
        ),
        _i(
            "ringq_redis_b100",
            "ringq on Redis, batches of 100",
            "",
            "AOF, fsync every second",
            100,
            consume="ack",
        ),
        _i(
            "redis_always",
            "Redis Streams always",
            "redis",
            "AOF, fsync per write",
            fsync=True,
            consume="ack",
        ),
        _i(
            "redis_always_b100",
            "Redis Streams always, pipelined 100",
            "redis",
            "AOF, fsync per write",
            100,
            True,
            "ack",
        ),
        PeerInfo(
            "ringq_async",
            "ringq AsyncQueue (async handler)",
            "",
            "batch: fsync every 50 ms",
            1,
            False,
            "ack",
            notes=(
                "`ringq.AsyncQueue` with its defaults (durability batch); one "
                "`await q.publish(payload)` per message; the trivial job is an `async def` "
                "handler registered with `@q.handler(bytes)` (default `max_parallelism`, 1: "
                "so the order is checked too) and started with `q.start()` on the same loop."
            ),
        ),
        PeerInfo(
            "arq",
            "arq (1 ms poll)",
            "arq",
            "AOF, fsync every second",
            1,
            False,
            "task",
            notes=(
                "`create_pool` and one `enqueue_job` per job (arq has no batch enqueue); the "
                "job, `async def noop(ctx, payload)`, runs on arq's `Worker` on the same loop "
                "(`async_run`, `handle_signals=False` as its docs say inside another "
                "program), defaults (`max_jobs=10`, pickled arguments, results kept 1 h) "
                "except `poll_delay=0.001`: the default 0.5 s caps this run at about 200 "
                "jobs/s. arq 0.28 requires redis-py < 6 and the Redis rows pin 8.1, so arq "
                "runs in a venv of its own (`requirements-arq.txt`: redis-py 5.3.1 and the "
                "hiredis parser its `redis[hiredis]` requirement brings)."
            ),
            venv="arq",
        ),
        PeerInfo(
            "taskiq",
            "taskiq + taskiq-redis streams",
            "taskiq",
            "AOF, fsync every second",
            1,
            False,
            "task",
            notes=(
                "taskiq-redis's `RedisStreamBroker` (consumer group, acked: XADD per job, "
                "XREADGROUP COUNT 100, XACK per job) and one `kiq` per job (taskiq has no "
                "batch kiq); the job, `async def noop(payload: str)`, runs on taskiq's "
                "`Receiver` on the same loop, set up as the `taskiq worker` command does with "
                "its defaults (100 async tasks at once, ack once the result is saved, no "
                "result backend). The payload goes as a 100-character str: the default JSON "
                "serializer takes no bytes. taskiq stands in for saq: saq 0.26's Redis extra "
                "requires redis-py < 8, and the Redis rows pin 8.1."
            ),
        ),
    )
}

#: Workload C on asyncio (``work_async.py``): an async producer task and the
#: library's own worker running a trivial ``async def`` job, on one event
#: loop. These rows run C only.
ASYNC_ROWS = ("ringq_async", "arq", "taskiq")


#: Jobs on Redis, end to end (``work_jobs.py``): a producer enqueues N trivial
#: jobs while 2 worker processes of the library run them, on one fresh
#: redis-server (AOF everysec). These rows run C only; each repetition runs
#: them one after the other (order reversed every other repetition).
JOB_ROWS = ("ringq_redis_jobs", "ringq_redis_jobs_b100", "celery", "rq", "rq_simple",
            "dramatiq", "arq_jobs")  # fmt: skip

_JOB_RECORD = (
    " The job appends its payload's sequence number (9 bytes) to one file opened "
    "`O_APPEND` (one `write` per job)."
)


def _job(key: str, label: str, package: str, batch: int, notes: str, venv: str = "") -> PeerInfo:
    return PeerInfo(key, label, package, "AOF, fsync every second", batch, False, "task",
                    notes=notes + _JOB_RECORD, venv=venv)  # fmt: skip


INFOS.update(
    (p.key, p)
    for p in (
        _job(
            "ringq_redis_jobs",
            "ringq on Redis, handlers (2 processes)",
            "",
            1,
            '`ringq.Queue("redis://...", namespace="bench")`; the producer publishes one '
            'job per `q.publish(payload, "t")` call; 2 worker processes each open the same '
            'queue, register the job with `@q.handler(bytes, topic="t")` (ringq\'s defaults: '
            "1 worker thread, checkouts of up to 16, the batch's acks sent together) and run "
            "it with `q.start()`.",
        ),
        _job(
            "ringq_redis_jobs_b100",
            "ringq on Redis, handlers (2 processes), publish_many 100",
            "",
            100,
            "As the row above, except that the producer publishes `q.publish_many` of 100 "
            "jobs per call (one message each).",
        ),
        _job(
            "celery",
            "Celery (2 worker processes, -P solo)",
            "celery",
            100,
            "Redis broker (kombu's Redis transport, JSON); the producer sends `group` of 100 "
            "task signatures per `apply_async` (one producer and connection for the 100, one "
            "message each; Celery has no pipelined enqueue, and `group` was no faster than "
            "`delay` per call here); no result backend and `task_ignore_result=True` (the "
            "Tasks guide: ignore results you do not want); `worker_prefetch_multiplier=128` "
            '(the Optimizing guide, for many short tasks: "say 64, or 128"); acks on '
            "receipt (the default, not `acks_late`); 2 `celery worker -P solo` processes "
            "(the task runs in the worker process: faster here for a trivial task than one "
            "worker with the default prefork pool and `-c 2`, about 0.71k against 0.92k "
            "jobs/s in a trial), log level WARNING (the default). Celery runs in a venv of "
            "its own (`requirements-celery.txt`: Celery pins python-dateutil 2.9 and "
            "kombu[redis] packaging 26.3, older than the suite's; redis-py 8.1 with hiredis "
            "as the other rows).",
            venv="celery",
        ),
        _job(
            "rq",
            "RQ (2 Worker processes, fork per job)",
            "rq",
            100,
            "The producer enqueues with `Queue.enqueue_many` of 100 `Queue.prepare_data` "
            "jobs in one pipeline (RQ's bulk enqueue), `result_ttl=0` (no result kept); 2 "
            "processes each run RQ's default `Worker` (what `rq worker` runs: it forks a "
            "work horse per job), started from a script that has the job's module loaded "
            "(RQ's performance notes: preload what jobs import), logging at WARNING as "
            "`rq worker --quiet` (the default INFO logs two lines per job).",
        ),
        _job(
            "rq_simple",
            "RQ (2 SimpleWorker processes)",
            "rq",
            100,
            "As the row above, with RQ's `SimpleWorker` (`rq worker -w rq.SimpleWorker`: "
            "the job runs in the worker process, no fork).",
        ),
        _job(
            "dramatiq",
            "Dramatiq (2 processes, 8 threads each)",
            "dramatiq",
            1,
            "`RedisBroker` with the default middleware; the producer calls `actor.send` per "
            "job (Dramatiq has no batch enqueue: `group(...).run()` sends one by one); the "
            "`dramatiq` command with its defaults: one worker process per CPU (2) with 8 "
            "threads each (prefetch 16 per process; `--threads 1` ran at about a seventh of "
            "the rate in a trial); an idle consumer backs off up to the default 1 s worker "
            "timeout, so the first fetch may come that late. Payloads go as 100-character "
            "str (JSON).",
        ),
        _job(
            "arq_jobs",
            "arq (2 worker processes)",
            "arq",
            1,
            "`create_pool` and one `enqueue_job` per job (arq has no batch enqueue); 2 "
            "processes each run arq's `run_worker` (what the `arq` command runs, without "
            "its INFO log line per job) with `max_jobs=10` (the default), `poll_delay=0.001` "
            "(the default 0.5 s caps each worker at 10 jobs per poll) and `keep_result=0` (no "
            "result kept). In arq's own venv (`requirements-arq.txt`: redis-py 5.3.1, "
            "hiredis).",
            venv="arq",
        ),
    )
)


#: Workload C with real processes (``work_procs.py``): rows the suite runs
#: for C only, each paired with its ``versus`` peer (run right after it in
#: every repetition). Kept apart from ``INFOS``: they have no A/B/D/E/F.
PROCESS_ROWS: dict[str, PeerInfo] = {
    p.key: p
    for p in (
        PeerInfo(
            "ringq_shared",
            "ringq shared (2 producer processes + 1 consumer process)",
            "",
            "batch: fsync every 50 ms",
            100,
            False,
            "ack",
            producers=2,
            versus="redis_b100",
            notes=(
                "Four processes: the run's own process opens the queue first with "
                "`shared=True` (durability batch, fsync every 50 ms) and owns it; while "
                "timed it only serves the Unix socket (in Rust) and waits, as redis-server "
                "does for the Redis rows. 2 producer processes each publish half of N with "
                "`publish_many` of 100 (the Redis row pipelines 100 XADDs per round trip), "
                "1 consumer process checks out up to 100 and acks them in one call (the "
                "Redis row: XREADGROUP COUNT 100, one XACK); all three are clients of the "
                "owner. Timed like the other C rows: from the start signal, sent once "
                "every worker has opened the queue and built its batches (process start "
                "and connecting are not timed, as opening is not for the others), to the "
                "consumer's last ack; checked: N read, none twice, each producer's "
                "messages in its order, none left. Unlike the one-process rows (a producer "
                "thread and a consumer thread under one GIL, Redis included) the three "
                "workers here are separate interpreters."
            ),
        ),
    )
}


def info_of(key: str) -> PeerInfo:
    return INFOS[key] if key in INFOS else PROCESS_ROWS[key]


def open_peer(key: str, path: Path, port: int = 0, capacity: int = 0) -> Peer:
    info = info_of(key)
    if key.startswith("ringq_redis"):
        return RingqRedis(info, path, port, capacity)
    if key.startswith("ringq"):
        durability = "always" if "always" in key else "os" if key == "ringq_os" else "batch"
        return Ringq(info, path, durability, capacity, shared=key == "ringq_shared")
    cls: dict[str, Callable[..., Peer]] = {
        "queue": StdQueue,
        "persistqueue": PersistQueue,
        "sqliteack": SQLiteAck,
        "litequeue": Lite,
        "huey": Huey,
        "diskcache": DiskDeque,
        "rocksq": RocksQ,
        "rocksq_b100": RocksQ,
        "redis": RedisStreams,
        "redis_b100": RedisStreams,
        "redis_always": RedisStreams,
        "redis_always_b100": RedisStreams,
    }
    return cls[key](info, path, port=port)

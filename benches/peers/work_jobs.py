"""Jobs on Redis, end to end (``JOB_ROWS`` in ``peers.py``): a producer
enqueues N trivial jobs while the library's own worker processes run them,
all on one fresh redis-server (AOF, fsync every second, as the Redis rows).

    python benches/peers/work_jobs.py '{"peer": "celery", "role": "C", "n": 5000,
                                        "dir": "/tmp/x", "out": "/tmp/x.json", "port": 6390}'

This process is the driver and the producer. It starts ``WORKERS`` worker
processes (the library's own: ``celery worker``, RQ's ``Worker`` /
``SimpleWorker``, the ``dramatiq`` command, arq's ``run_worker``, ringq's
handlers started with ``q.start()``), waits until each says it is consuming
(a file in ``ready/``, written from the library's own hook) and leaves them
idle for ``IDLE`` s. The clock runs from the first enqueue to the moment
the last job's record is there. A job is ``noop(payload)``: the 100-byte
payload of ``work.payload`` (sequence number first) whose job appends its
sequence number, 9 bytes, to one file opened ``O_APPEND`` (one ``write``
per job, no lock: the kernel appends each whole; the driver polls the
file's size every ``POLL`` s). Untimed afterwards: the run waits until the
library has recorded every job done, stops the workers (SIGTERM, the warm
shutdown of each), and checks that each sequence number ran exactly once
and that the library's queue is empty (nothing queued, in progress, failed
or dead-lettered).

Worker processes run ``python work_jobs.py worker '<spec>'`` (ringq, RQ,
arq) or the library's command line with ``work_jobs`` as its app module
(``celery -A work_jobs:app``, ``dramatiq work_jobs:dramatiq_setup``); they
find the run's spec in ``RINGQ_JOBS_SPEC``. Only the standard library is
imported at the top: RQ's forking worker runs jobs in a fork of a process
that has this module loaded (RQ's docs: preload what the jobs import).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SPEC_ENV = "RINGQ_JOBS_SPEC"
WORKERS = 2  # worker processes (jobs run in them) for every row: the machine has 2 cores
IDLE = 0.5  # seconds the workers wait, consuming, before the clock starts
DEADLINE = 300.0  # seconds for every job to run
SETTLE = 30.0  # seconds for the library to record every job done
STOP = 30.0  # seconds for the workers to stop after SIGTERM
POLL = 0.0005  # seconds between looks at the record file
RECORD = 9  # bytes a job appends: b"%08d\n"
TOPIC = "t"  # ringq's topic
BATCH = 100  # jobs per enqueue call for the batched rows

_fd: int | None = None


def record(p: bytes | str) -> None:
    """The trivial job: append the payload's sequence number to the record."""
    global _fd
    if _fd is None:
        _fd = os.open(_spec()["record"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if p:
        os.write(_fd, (p[:8] if isinstance(p, bytes) else p[:8].encode()) + b"\n")


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(os.environ[SPEC_ENV])
    return spec


def _ready(tag: str) -> None:
    """Tells the driver this worker consumes (from the library's own hook)."""
    d = Path(_spec()["ready"])
    (d / f"{tag}-{os.getpid()}").write_text("")


# -- the libraries' jobs and apps (module level: their workers import them) ---


def noop(p: bytes | str) -> None:
    """RQ's job (``work_jobs.noop``)."""
    record(p)


_apps: dict[str, Any] = {}


def _celery_app() -> Any:
    if "celery" in _apps:
        return _apps["celery"]
    from celery import Celery
    from celery.signals import worker_ready

    spec = _spec()
    app = Celery("work_jobs", broker=f"redis://127.0.0.1:{spec['port']}/0")
    app.conf.update(
        # The Optimizing guide: for many short tasks a large prefetch multiplier
        # ("say 64, or 128"); the Tasks guide: ignore results you do not want.
        worker_prefetch_multiplier=128,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="noop")
    def celery_noop(p: str) -> None:
        record(p)

    @worker_ready.connect(weak=False)  # a local function: keep it
    def ready(**_: Any) -> None:
        _ready("celery")

    _apps["celery"] = app
    return app


def dramatiq_setup() -> None:
    """``dramatiq work_jobs:dramatiq_setup``: the broker and the actor."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import Middleware

    if "dramatiq" in _apps:
        return

    class Ready(Middleware):  # type: ignore[misc]
        def after_worker_boot(self, broker: Any, worker: Any) -> None:
            _ready("dramatiq")

    broker = RedisBroker(url=f"redis://127.0.0.1:{_spec()['port']}/0")
    broker.add_middleware(Ready())
    dramatiq.set_broker(broker)
    _apps["dramatiq"] = dramatiq.actor(record, actor_name="noop")


def _arq_settings() -> type:
    from arq.connections import RedisSettings
    from arq.worker import func

    async def arq_noop(ctx: dict[str, Any], p: bytes) -> None:
        record(p)

    async def startup(ctx: dict[str, Any]) -> None:
        _ready("arq")

    class ArqSettings:
        functions = (func(arq_noop, name="noop"),)
        redis_settings = RedisSettings(host="127.0.0.1", port=_spec()["port"])
        poll_delay = 0.001  # the default 0.5 s caps a worker at max_jobs per 0.5 s
        keep_result = 0  # results are not kept (none is read)
        on_startup = startup

    return ArqSettings


def __getattr__(name: str) -> Any:
    """``celery -A work_jobs:app`` (built on first use, for the run's port)."""
    if name == "app":
        return _celery_app()
    raise AttributeError(name)


# -- the worker processes -----------------------------------------------------


def _until_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def worker_main(spec: dict[str, Any]) -> int:
    """One worker process of ringq, RQ or arq (Celery and Dramatiq: their CLI)."""
    peer = spec["peer"]
    if peer.startswith("ringq"):
        import ringq

        q = ringq.Queue(_url(spec), namespace="bench", capacity=max(spec["n"], 200_000))

        @q.handler(bytes, topic=TOPIC)
        def on_job(msg: bytes) -> None:
            record(msg)

        q.start()
        _ready("ringq")
        _until_sigterm()
        q.stop(drain=False, timeout=STOP)
        q.close()
        return 0
    if peer.startswith("rq"):
        import redis
        from rq import Queue, SimpleWorker, Worker

        r = redis.Redis.from_url(_url(spec))
        cls = SimpleWorker if peer == "rq_simple" else Worker
        w = cls([Queue("default", connection=r)], connection=r)
        record(b"")  # open the record now: the forked work horses inherit it
        _ready("rq")  # next: register, then BLPOP on the queue
        # As ``rq worker --quiet`` (its default INFO logs two lines per job).
        w.work(logging_level="WARNING")
        return 0
    if peer == "arq_jobs":
        import logging

        from arq.worker import run_worker

        logging.basicConfig(level=logging.WARNING)  # the arq command logs each job at INFO
        run_worker(_arq_settings())  # what the arq command runs; SIGTERM stops it
        return 0
    raise SystemExit(f"no worker for {peer}")


def _url(spec: dict[str, Any]) -> str:
    return f"redis://127.0.0.1:{spec['port']}/0"


def _commands(spec: dict[str, Any]) -> list[list[str]]:
    py, peer = sys.executable, spec["peer"]
    if peer == "celery":
        # 2 workers, each the solo pool (runs the task in the worker process):
        # faster here for a trivial task than one worker with the prefork pool
        # (Celery's default) and 2 child processes.
        return [[py, "-m", "celery", "-A", "work_jobs:app", "worker", "-P", "solo",
                 "--loglevel", "WARNING", "-n", f"w{i}@%h"] for i in range(WORKERS)]  # fmt: skip
    if peer == "dramatiq":
        # The dramatiq command's defaults: one process per CPU (2), 8 threads each.
        return [[py, "-m", "dramatiq", "work_jobs:dramatiq_setup", "--processes",
                 str(WORKERS), "--threads", "8", "--path", str(HERE)]]  # fmt: skip
    me = json.dumps(spec)
    return [[py, str(Path(__file__).resolve()), "worker", me] for _ in range(WORKERS)]


# -- the producers ------------------------------------------------------------


class Producer:
    """Made untimed (connected, payloads built); ``run()`` is timed."""

    def __init__(self, spec: dict[str, Any], work: list[bytes]) -> None:
        self.spec, self.n = spec, len(work)
        self.run: Callable[[], None]
        getattr(self, "_" + spec["peer"])(work)

    def _ringq(self, work: list[bytes], batch: int = 1) -> None:
        import ringq

        self.q = ringq.Queue(_url(self.spec), namespace="bench", capacity=max(self.n, 200_000))
        if batch == 1:
            publish = self.q.publish

            def run() -> None:
                for p in work:
                    publish(p, TOPIC)

        else:
            many = self.q.publish_many
            batches = [work[i : i + batch] for i in range(0, len(work), batch)]

            def run() -> None:
                for b in batches:
                    many(b, TOPIC)

        self.run = run

    def _ringq_redis_jobs(self, work: list[bytes]) -> None:
        self._ringq(work)

    def _ringq_redis_jobs_b100(self, work: list[bytes]) -> None:
        self._ringq(work, BATCH)

    def _celery(self, work: list[bytes]) -> None:
        from celery import group

        app = _celery_app()
        sig = app.tasks["noop"].s
        batches = [[p.decode() for p in work[i : i + BATCH]] for i in range(0, len(work), BATCH)]

        def run() -> None:
            # A group publishes its 100 messages with one producer (one
            # connection); each is its own task message.
            for b in batches:
                group(sig(p) for p in b).apply_async()

        self.run = run

    def _rq(self, work: list[bytes]) -> None:
        import redis
        from rq import Queue

        r = redis.Redis.from_url(_url(self.spec))
        q = Queue("default", connection=r)
        batches = [work[i : i + BATCH] for i in range(0, len(work), BATCH)]
        prepare = Queue.prepare_data

        def run() -> None:
            # RQ's bulk enqueue: enqueue_many of prepared jobs in one pipeline.
            for b in batches:
                with r.pipeline() as pipe:
                    q.enqueue_many(
                        [prepare("work_jobs.noop", (p,), result_ttl=0) for p in b], pipeline=pipe
                    )
                    pipe.execute()

        self.run = run

    def _rq_simple(self, work: list[bytes]) -> None:
        self._rq(work)

    def _dramatiq(self, work: list[bytes]) -> None:
        dramatiq_setup()
        send = _apps["dramatiq"].send
        payloads = [p.decode() for p in work]

        def run() -> None:
            for p in payloads:  # no batch enqueue in dramatiq: one send per job
                send(p)

        self.run = run

    def _arq_jobs(self, work: list[bytes]) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        loop = asyncio.new_event_loop()
        self.loop = loop
        pool = loop.run_until_complete(
            create_pool(RedisSettings(host="127.0.0.1", port=self.spec["port"]))
        )
        self.pool = pool

        async def produce() -> None:
            for p in work:  # arq has no batch enqueue: one enqueue_job per job
                await pool.enqueue_job("noop", p)

        self.run = lambda: loop.run_until_complete(produce())

    def close(self) -> None:
        if hasattr(self, "q"):
            self.q.close()
        if hasattr(self, "pool"):
            self.loop.run_until_complete(self.pool.aclose())
            self.loop.close()


# -- settled, and left: each library's own account ----------------------------


def _redis(spec: dict[str, Any]) -> Any:
    import redis

    return redis.Redis.from_url(_url(spec))


def _count(r: Any, pattern: str) -> int:
    return sum(1 for _ in r.scan_iter(match=pattern, count=1000))


def library_state(spec: dict[str, Any], prod: Producer) -> dict[str, int]:
    """What the library still holds: every value must be 0 once it is done."""
    peer, r = spec["peer"], _redis(spec)
    try:
        if peer.startswith("ringq"):
            st = prod.q.stats()
            return {"total": st["total"], "dead": st["dead"],
                    "not_acked": spec["n"] - st["acked"],
                    "redelivered": st["delivered"] - spec["n"]}  # fmt: skip
        if peer == "celery":  # kombu's Redis transport: the list, and unacked
            return {"queued": r.llen("celery"), "unacked": r.hlen("unacked")}
        if peer.startswith("rq"):
            from rq import Queue
            from rq.registry import FailedJobRegistry, StartedJobRegistry

            q = Queue("default", connection=r)
            return {"queued": q.count, "started": StartedJobRegistry(queue=q).count,
                    "failed": FailedJobRegistry(queue=q).count,
                    "job_keys": _count(r, "rq:job:*")}  # fmt: skip
        if peer == "dramatiq":
            acks = sum(r.scard(k) for k in r.scan_iter(match="dramatiq:__acks__.*"))
            return {"queued": r.llen("dramatiq:default"),
                    "messages": r.hlen("dramatiq:default.msgs"),
                    "unacked": acks, "dead": r.zcard("dramatiq:default.XQ")}  # fmt: skip
        if peer == "arq_jobs":
            return {"queued": r.zcard("arq:queue"), "jobs": _count(r, "arq:job:*"),
                    "in_progress": _count(r, "arq:in-progress:*"),
                    "retries": _count(r, "arq:retry:*")}  # fmt: skip
        raise ValueError(peer)
    finally:
        r.close()


# -- the run --------------------------------------------------------------------


def _start(cmd: list[str], spec: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, SPEC_ENV: json.dumps(spec)}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _tail(logs: list[Path]) -> str:
    return " | ".join(p.read_text(errors="replace")[-600:] for p in logs if p.exists())


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
    codes = [p.poll() for p in procs]
    for p in procs:  # each started in a session of its own: its group is its pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        if p.poll() is None:
            p.wait(10)
    return codes


def _ran(path: Path) -> int:
    try:
        return path.stat().st_size // RECORD
    except FileNotFoundError:
        return 0


def role_c(spec: dict[str, Any]) -> dict[str, Any]:
    from work import Checked, payload

    n, d = spec["n"], Path(spec["dir"])
    ready, rec = d / "ready", d / "ran"
    ready.mkdir(parents=True)
    spec = {**spec, "record": str(rec), "ready": str(ready)}
    os.environ[SPEC_ENV] = json.dumps(spec)  # the producer side reads it too
    prod = Producer(spec, [payload(i) for i in range(n)])
    logs = [d / f"worker{i}.log" for i in range(len(_commands(spec)))]
    procs = [_start(cmd, spec, log) for cmd, log in zip(_commands(spec), logs, strict=True)]
    try:
        want, deadline = WORKERS, time.monotonic() + 60
        while len(list(ready.iterdir())) < want:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise Checked(f"the workers did not start: {_tail(logs)}")
            time.sleep(0.01)
        time.sleep(IDLE)
        if _ran(rec):
            raise Checked("a job ran before any was enqueued")
        gc.disable()
        t0 = time.perf_counter()
        prod.run()
        enqueued = time.perf_counter() - t0
        last = time.monotonic() + DEADLINE
        while _ran(rec) < n:
            if time.monotonic() > last:
                raise Checked(f"only {_ran(rec)} of {n} jobs ran within {DEADLINE} s")
            time.sleep(POLL)
        secs = time.perf_counter() - t0
        gc.enable()
        deadline = time.monotonic() + SETTLE
        while any(library_state(spec, prod).values()):
            if time.monotonic() > deadline:
                raise Checked(f"not settled {SETTLE} s after the last job: "
                              f"{library_state(spec, prod)}")  # fmt: skip
            time.sleep(0.01)
    finally:
        gc.enable()
        codes = _stop(procs)
    left = library_state(spec, prod)
    prod.close()
    seqs = [int(x) for x in rec.read_bytes().split()]
    counts = collections.Counter(seqs)
    twice = sorted(s for s, c in counts.items() if c > 1)
    missing = n - sum(1 for s in counts if 0 <= s < n)
    if missing or twice or any(left.values()):
        raise Checked(f"{missing} of {n} jobs never ran, {len(twice)} ran more than once "
                      f"(first {twice[:5]}); left in the library: {left}")  # fmt: skip
    return {"seconds": secs, "rate": n / secs, "enqueue_seconds": enqueued, "workers": WORKERS,
            "exit_codes": codes}  # fmt: skip


def main() -> int:
    if sys.argv[1] == "worker":
        # Under its own name, as the jobs' workers import it (RQ: "work_jobs.noop").
        sys.path.insert(0, str(HERE))
        import work_jobs

        return int(work_jobs.worker_main(json.loads(sys.argv[2])))
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, str(HERE))
    import work  # noqa: F401  (its Checked is the one caught here)
    from work import Checked

    try:
        result = role_c(spec)
    except Checked as e:
        result = {"error": str(e)}
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

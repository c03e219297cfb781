"""ringq on Redis Cluster: aggregate throughput of three namespaces on three
masters, beside the same workload on one standalone master, with the CPU
each process used, so that a per-core ceiling and a paper estimate for N
hosts can be stated.

    .venv/bin/python benches/redis_cluster.py [--n N] [--repeat R] [--json out.json]
                                              [--fsync everysec|always|both] [--wait-quiet S]

Servers (all on 127.0.0.1, in a temporary directory, stopped at the end even
on error): one standalone ``redis-server`` and a three-master Redis Cluster
(``tests/redis_servers.py``'s ``RedisCluster``, no replicas), every one with
``appendonly yes``. The whole matrix runs with ``appendfsync everysec`` (as
the peer suite's Redis rows), then again with ``always`` (the default
``--fsync both``; ``everysec`` or ``always`` runs one), switched on every
server with ``CONFIG SET appendfsync`` (checked with ``CONFIG GET`` and with
ringq's ``stats()`` in each consumer). Defaults (N=50000 per namespace, 3
repetitions, both settings) take about two minutes on a quiet 2-core
machine.

Workload C per namespace: a producer process (``publish_many`` of batches of
100 payloads of 100 bytes) and a consumer process (``checkout(topic,
max_messages=100)`` then ``ack`` of the batch), N messages, both started
with ``subprocess`` from this file (``--worker``). Each worker opens its
queue, builds its batches, says ``ready`` and waits for ``go`` on stdin; the
clock starts when every worker of the run is ready and ``go`` is sent, and
stops at the last consumer's last ack (workers report ``time.monotonic()``,
one clock for every process on Linux). Each consumer checks that it read
every sequence number exactly once and in order, that nothing more is there
to read, and that the namespace holds nothing afterwards.

Cases, interleaved in each repetition: (i) one namespace on the standalone
server, (ii) three namespaces on it at once, (iii) one namespace on the
cluster, (iv) three namespaces on the cluster at once, one per master (their
hash slots ``{ns}`` are picked with redis-py's ``key_slot`` and the
cluster's ``CLUSTER SLOTS``, and checked with ``CLUSTER KEYSLOT`` and the
meta key being on the expected master). Between runs every server is
emptied (``FLUSHALL``) and its AOF rewritten (``BGREWRITEAOF``, waited for),
untimed, so each run starts from the same small AOF.

CPU: each redis-server's ``utime + stime + cutime + cstime`` from
``/proc/<pid>/stat`` (all its threads, and any AOF-rewrite child reaped in
the window) between ``go`` and the last result; each worker's
``time.process_time()`` between ``go`` and its last call; and the whole
machine's busy time from ``/proc/stat``: processes' user + system time beyond
ours is ``other_cpu_s`` (other work on the machine at the time), and
irq + softirq time (loopback networking, mostly) is reported apart.
``--wait-quiet S`` waits up to S seconds before each run for the machine to
be quiet; how busy it was is recorded either way.

The summary (printed as JSON, written with ``--json``) gives msg/s medians
with min-max over the repetitions, server and client CPU-seconds per million
messages, hence the msg/s one core sustains for a master and for clients,
and a paper estimate for N hosts: N * min(per-master ceiling, client ceiling
per core * client cores per host), the derivation spelled out in a text
field.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from redis_servers import ClusterNode, RedisCluster, RedisServer  # noqa: E402

TOPIC = "t"
BATCH = 100
PAYLOAD = 100
STALL = 30.0  # seconds with nothing to read (or no room to publish) before a worker gives up
HZ = os.sysconf("SC_CLK_TCK")
CASES = {
    "i": "one namespace, standalone server",
    "ii": "three namespaces, standalone server (aggregate)",
    "iii": "one namespace, cluster (one master)",
    "iv": "three namespaces, cluster, one per master (aggregate)",
}
#: Candidate namespace names, taken in this order until the masters are covered.
NAMES = [
    "shop", "billing", "mail", "search", "audit", "orders", "stock", "users",
    "media", "notify", "ledger", "report",
]  # fmt: skip
#: The standalone server's three namespaces (one server: their slots do not matter).
STANDALONE_NAMES = ["shop", "billing", "mail"]


# -- workers (run as ``redis_cluster.py --worker producer|consumer '<json>'``) --


def payload(seq: int) -> bytes:
    return b"%08d" % seq + b"x" * (PAYLOAD - 8)


def _say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _wait_go() -> bool:
    return sys.stdin.readline().strip() == "go"


def _open(spec: dict[str, Any]) -> Any:
    import ringq

    return ringq.Queue(spec["url"], namespace=spec["ns"], capacity=spec["capacity"])


def producer(spec: dict[str, Any]) -> dict[str, Any]:
    q = _open(spec)
    n = int(spec["n"])
    work = [[payload(i) for i in range(j, min(j + BATCH, n))] for j in range(0, n, BATCH)]
    gc.disable()
    _say({"ready": True, "pid": os.getpid()})
    if not _wait_go():
        return {"error": "no start signal"}
    c0, t0 = time.process_time(), time.monotonic()
    for b in work:
        q.publish_many(b, topic=TOPIC, timeout=STALL)
    t1, c1 = time.monotonic(), time.process_time()
    gc.enable()
    q.close()
    return {"t0": t0, "t1": t1, "cpu": c1 - c0, "published": n}


def consumer(spec: dict[str, Any]) -> dict[str, Any]:
    q = _open(spec)
    n = int(spec["n"])
    fsync = str(q.stats().get("redis_appendfsync"))
    seen = bytearray(n)
    got = distinct = duplicates = out_of_order = 0
    expect = 0
    first_problem = ""
    gc.disable()
    _say({"ready": True, "pid": os.getpid()})
    if not _wait_go():
        return {"error": "no start signal"}
    c0, t0 = time.process_time(), time.monotonic()
    while distinct < n:
        ds = q.checkout(TOPIC, max_messages=BATCH, timeout=STALL)
        if not ds:
            break
        for d in ds:
            s = int(d.payload[:8])
            got += 1
            if not 0 <= s < n:
                out_of_order += 1
                first_problem = first_problem or f"read {s}, outside 0..{n - 1}"
                continue
            if seen[s]:
                duplicates += 1
                first_problem = first_problem or f"read {s} twice"
                continue
            seen[s] = 1
            distinct += 1
            if s != expect:
                out_of_order += 1
                first_problem = first_problem or f"read {s}, expected {expect}"
            expect = s + 1
        q.ack(ds)
    t1, c1 = time.monotonic(), time.process_time()
    gc.enable()
    extra = q.checkout(TOPIC, max_messages=1, timeout=0) if distinct == n else []
    left = int(q.stats()["total"])
    q.close()
    return {"t0": t0, "t1": t1, "cpu": c1 - c0, "read": got, "lost": n - distinct,
            "duplicates": duplicates, "out_of_order": out_of_order, "extra": len(extra),
            "left": left, "first_problem": first_problem, "appendfsync": fsync}  # fmt: skip


def worker_main(role: str, spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        result = {"producer": producer, "consumer": consumer}[role](spec)
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    _say(result)
    return 0


# -- measuring --------------------------------------------------------------


def _ticks(path: str, first: int, last: int) -> float:
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return sum(int(x) for x in fields[first - 3 : last - 2]) / HZ


def proc_cpu(pid: int) -> float:
    """CPU-seconds of ``pid`` (all its threads: utime, stime) and of its
    reaped children (cutime, cstime: an AOF rewrite's fork)."""
    return _ticks(f"/proc/{pid}/stat", 14, 17)


def main_thread_cpu(pid: int) -> float:
    """CPU-seconds of ``pid``'s main thread alone (Redis runs commands there)."""
    return _ticks(f"/proc/{pid}/task/{pid}/stat", 14, 15)


def machine_cpu() -> dict[str, float]:
    """CPU-seconds since boot of every core, by kind (``/proc/stat``)."""
    with open("/proc/stat") as f:
        parts = [int(x) / HZ for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (parts + [0.0] * 8)[:8]
    return {"processes": user + nice + system, "irq": irq + softirq, "steal": steal}


def cores_busy(seconds: float) -> float:
    """Cores busy on the whole machine over the next ``seconds``."""
    before = sum(machine_cpu().values())
    time.sleep(seconds)
    return (sum(machine_cpu().values()) - before) / seconds


def wait_quiet(most: float, below: float) -> tuple[float, float]:
    """Up to ``most`` seconds until a half-second sample has fewer than
    ``below`` cores busy (other work on the machine); returns (the last
    sample, seconds waited)."""
    t0 = time.monotonic()
    while True:
        busy = cores_busy(0.5)
        waited = time.monotonic() - t0
        if busy < below or waited >= most:
            return busy, waited


class Failed(Exception):
    """A run's own check failed: no figure is kept."""


@dataclass
class Target:
    """One namespace of a run: where it lives."""

    url: str
    ns: str
    server: str  # name of the server (its key in the run's server list)


@dataclass
class Server:
    name: str
    node: RedisServer


def _client(node: RedisServer) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=60)


def reset(servers: Sequence[Server]) -> None:
    """Untimed: every server emptied and its AOF rewritten (waited for)."""
    for s in servers:
        r = _client(s.node)
        r.flushall()
        _wait_rewrite(r)
        r.bgrewriteaof()
        _wait_rewrite(r, started=True)
        r.close()


def _wait_rewrite(r: Any, started: bool = False) -> None:
    deadline = time.monotonic() + 60
    while True:
        p = r.info("persistence")
        busy = p["aof_rewrite_in_progress"] or p["aof_rewrite_scheduled"]
        if not busy and not (started and p.get("aof_last_bgrewrite_status") != "ok"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"AOF rewrite did not finish: {p}")
        time.sleep(0.01)


def forks(servers: Sequence[Server]) -> dict[str, int]:
    out = {}
    for s in servers:
        r = _client(s.node)
        out[s.name] = int(r.info("stats")["total_forks"])
        r.close()
    return out


def set_fsync(servers: Sequence[Server], fsync: str) -> None:
    for s in servers:
        r = _client(s.node)
        r.config_set("appendfsync", fsync)
        got = r.config_get("appendfsync")["appendfsync"]
        r.close()
        if got != fsync:
            raise RuntimeError(f"{s.name}: appendfsync is {got!r} after CONFIG SET {fsync!r}")


def _start(role: str, spec: dict[str, Any], log: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", role, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def _line(proc: subprocess.Popen[str], name: str, log: Path) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        err = log.read_text(errors="replace")[-800:]
        raise Failed(f"{name} exited {proc.returncode} without a word: {err}")
    msg: dict[str, Any] = json.loads(line)
    if "error" in msg:
        raise Failed(f"{name}: {msg['error']}")
    return msg


def run_once(
    targets: Sequence[Target],
    servers: Sequence[Server],
    n: int,
    fsync: str,
    work_dir: Path,
) -> dict[str, Any]:
    """One run: a producer and a consumer process per target at once."""
    import ringq

    capacity = max(n, 200_000)
    for t in targets:  # untimed: the namespace made with its options before the workers
        ringq.Queue(t.url, namespace=t.ns, capacity=capacity).close()
    log_path = work_dir / "workers.log"
    procs: list[tuple[str, Target, subprocess.Popen[str]]] = []
    with open(log_path, "w") as log:
        try:
            for t in targets:
                spec = {"url": t.url, "ns": t.ns, "n": n, "capacity": capacity}
                procs.append((f"consumer {t.ns}", t, _start("consumer", spec, log)))
                procs.append((f"producer {t.ns}", t, _start("producer", spec, log)))
            for name, _t, proc in procs:
                _line(proc, name, log_path)  # ready: opened, connected, batches built
            forks0 = forks(servers)
            pids = {s.name: s.node.proc.pid for s in servers if s.node.proc}
            cpu0 = {k: proc_cpu(pid) for k, pid in pids.items()}
            main0 = {k: main_thread_cpu(pid) for k, pid in pids.items()}
            machine0 = machine_cpu()
            t0 = time.monotonic()
            for _name, _t, proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            done = {name: _line(proc, name, log_path) for name, _t, proc in procs}
            t_read = time.monotonic()
            machine1 = machine_cpu()
            cpu1 = {k: proc_cpu(pid) for k, pid in pids.items()}
            main1 = {k: main_thread_cpu(pid) for k, pid in pids.items()}
            forks1 = forks(servers)
            for _name, _t, proc in procs:
                proc.wait(60)
        finally:
            for _name, _t, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    per_ns: dict[str, dict[str, Any]] = {}
    for t in targets:
        c = done[f"consumer {t.ns}"]
        p = done[f"producer {t.ns}"]
        bad = {k: c[k] for k in ("lost", "duplicates", "out_of_order", "extra", "left") if c[k]}
        if bad:
            raise Failed(f"namespace {t.ns}: {bad}; first: {c['first_problem']}")
        if c["appendfsync"] != fsync:
            raise Failed(f"namespace {t.ns}: stats() says appendfsync {c['appendfsync']!r}")
        per_ns[t.ns] = {
            "server": t.server,
            "seconds": c["t1"] - t0,
            "rate": n / (c["t1"] - t0),
            "producer_seconds": p["t1"] - t0,
            "consumer_cpu_s": c["cpu"],
            "producer_cpu_s": p["cpu"],
        }
    secs = max(r["t1"] for r in done.values()) - t0
    window = t_read - t0
    messages = n * len(targets)
    server_cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    server_main = {k: main1[k] - main0[k] for k in main0}
    client_cpu = sum(r["cpu"] for r in done.values())
    machine = {k: machine1[k] - machine0[k] for k in machine0}
    busy = sum(machine.values())
    used = {s.name for s in servers if any(t.server == s.name for t in targets)}
    return {
        "messages": messages,
        "seconds": secs,
        "rate": messages / secs,
        "start_lag_ms": (max(r["t0"] for r in done.values()) - t0) * 1000,
        "namespaces": per_ns,
        "server_cpu_s": server_cpu,
        "server_cpu_s_used": sum(v for k, v in server_cpu.items() if k in used),
        "server_main_thread_cpu_s": server_main,
        "server_main_thread_cpu_s_used": sum(v for k, v in server_main.items() if k in used),
        "server_cpu_s_idle_servers": sum(v for k, v in server_cpu.items() if k not in used),
        "client_cpu_s": client_cpu,
        "machine_busy_cpu_s": busy,
        "machine_irq_softirq_cpu_s": machine["irq"],
        "machine_steal_cpu_s": machine["steal"],
        "window_s": window,
        "busy_cores": busy / window,
        # user + system time of processes that are not this run's (other work on
        # the machine; the orchestrator's own few reads are in it too)
        "other_cpu_s": machine["processes"] - sum(server_cpu.values()) - client_cpu,
        "forks": {k: forks1[k] - forks0[k] for k in forks0 if forks1[k] != forks0[k]},
    }


# -- servers and namespaces -------------------------------------------------


class Cluster(RedisCluster):
    """``RedisCluster`` with the given ``appendfsync`` (the tests' is ``always``)."""

    def __init__(self, directory: Path, fsync: str, masters: int = 3) -> None:
        super().__init__(directory, masters)
        self.nodes = [ClusterNode(directory / f"node{i}", fsync) for i in range(masters)]


def pick_namespaces(cluster: RedisCluster) -> list[dict[str, Any]]:
    """One namespace per master: the first of ``NAMES`` whose slot ``{ns}``
    falls on a master not yet covered."""
    from redis.crc import key_slot

    picked: dict[int, dict[str, Any]] = {}
    for ns in NAMES:
        slot = key_slot(f"ringq:{{{ns}}}:meta".encode())
        port = cluster.owner(slot).port
        if port not in picked:
            picked[port] = {"ns": ns, "slot": slot, "master_port": port}
        if len(picked) == len(cluster.nodes):
            break
    if len(picked) != len(cluster.nodes):
        raise RuntimeError(f"no names for every master among {NAMES}: {picked}")
    out = sorted(picked.values(), key=lambda p: p["master_port"])
    for p in out:  # the server agrees on the slot
        ks = int(cluster.nodes[0].client().execute_command("CLUSTER KEYSLOT", f"{{{p['ns']}}}"))
        if ks != p["slot"]:
            raise RuntimeError(f"{p['ns']}: key_slot says {p['slot']}, CLUSTER KEYSLOT {ks}")
    return out


def verify_placement(cluster: RedisCluster, picked: Sequence[dict[str, Any]]) -> None:
    """Each namespace's keys (made by opening it) are on its master alone."""
    import ringq

    for p in picked:
        ringq.Queue(cluster.url(), namespace=p["ns"]).close()
        count = "CLUSTER COUNTKEYSINSLOT"
        holders = [n.port for n in cluster.nodes if n.client().execute_command(count, p["slot"])]
        if holders != [p["master_port"]]:
            raise RuntimeError(f"{p['ns']}: keys on {holders}, expected {p['master_port']}")


# -- summary ----------------------------------------------------------------


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize_case(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    per_m = [r["messages"] / 1e6 for r in runs]
    server = [r["server_cpu_s_used"] / m for r, m in zip(runs, per_m, strict=True)]
    main = [r["server_main_thread_cpu_s_used"] / m for r, m in zip(runs, per_m, strict=True)]
    client = [r["client_cpu_s"] / m for r, m in zip(runs, per_m, strict=True)]
    irq = [r["machine_irq_softirq_cpu_s"] / m for r, m in zip(runs, per_m, strict=True)]
    return {
        "rate": _spread([r["rate"] for r in runs]),
        "rates": [round(r["rate"]) for r in runs],
        "messages": runs[0]["messages"],
        "seconds": _spread([r["seconds"] for r in runs]),
        "server_cpu_s_per_million": _spread(server),
        "server_main_thread_cpu_s_per_million": _spread(main),
        "client_cpu_s_per_million": _spread(client),
        "irq_softirq_cpu_s_per_million": _spread(irq),
        "busy_cores": _spread([r["busy_cores"] for r in runs]),
        "other_cpu_s": _spread([r["other_cpu_s"] for r in runs]),
        "cores_busy_before": _spread([r["cores_busy_before"] for r in runs]),
        "server_cores_busy": _spread([r["server_cpu_s_used"] / r["seconds"] for r in runs]),
        "client_cores_busy": _spread([r["client_cpu_s"] / r["seconds"] for r in runs]),
        "per_namespace_rate": {
            ns: _spread([r["namespaces"][ns]["rate"] for r in runs]) for ns in runs[0]["namespaces"]
        },
        "forks_during_runs": sum(sum(r["forks"].values()) for r in runs),
        "runs": list(runs),
    }


def _per_second(us_per_message: float) -> float | None:
    """Messages per second one core sustains at ``us_per_message`` CPU-us each;
    None when the CPU figure is zero, i.e. below one clock tick (1/HZ s) of
    /proc accounting, which happens at small --n."""
    return 1e6 / us_per_message if us_per_message > 0 else None


def _rate(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "unknown (CPU below one clock tick)"


def paper_estimate(
    case: dict[str, Any], host_cores: int, hosts: Sequence[int], fsync: str
) -> dict[str, Any]:
    server_us = case["server_cpu_s_per_million"]["median"]  # CPU-s per 1e6 msgs = µs per msg
    main_us = case["server_main_thread_cpu_s_per_million"]["median"]
    client_us = case["client_cpu_s_per_million"]["median"]
    master = _per_second(server_us)
    main_only = _per_second(main_us)
    client_core = _per_second(client_us)
    machine_us = server_us + client_us
    client_cores = max(host_cores - 1, 1)
    per_host: float | None = None
    bound = "unknown: a CPU figure was below one clock tick; run with a larger --n"
    if master is not None and client_core is not None:
        per_host = min(master, client_core * client_cores)
        bound = "the master (server CPU)" if master <= client_core * client_cores else "the clients"
    machine = host_cores * 1e6 / machine_us if machine_us > 0 else None
    text = (
        f"From case iv (three namespaces on three masters), medians over the repetitions: "
        f"the masters used {server_us:.1f} CPU-s per million messages ({server_us:.1f} us "
        f"per message, published + checked out + acked; {main_us:.1f} of it on the main "
        f"thread), the client processes {client_us:.1f} CPU-s per million. A Redis master "
        f"executes commands on one thread, so one master sustains at most "
        f"1e6/{server_us:.1f} = {_rate(master)} msg/s on one core (1e6/{main_us:.1f} = "
        f"{_rate(main_only)} if its other threads had a core of their own); one client "
        f"core sustains 1e6/{client_us:.1f} = {_rate(client_core)} msg/s. A host of "
        f"{host_cores} cores with one master and its clients on the other {client_cores} "
        f"core(s): min({_rate(master)}, {_rate(client_core)} x {client_cores}) = "
        f"{_rate(per_host)} msg/s, bound by {bound}. Namespaces share nothing (one slot each, "
        f"no cross-slot calls), so N such hosts, each with its own namespaces: "
        f"N x {_rate(per_host)} msg/s. Check against this machine: all processes together "
        f"need {machine_us:.1f} CPU-us per message, so {host_cores} fully busy "
        f"cores give at most {_rate(machine)} msg/s; case iv measured "
        f"{case['rate']['median']:,.0f} msg/s. Paper figure: it assumes CPU is the only "
        f"limit (no network beyond loopback-like costs, no disk limit with appendfsync "
        f"{fsync}) and that CPU per message stays as measured here, with more "
        f"busy processes than cores (context switches inflate it)."
    )
    return {
        "from_case": "iv",
        "appendfsync": fsync,
        "server_us_per_message": server_us,
        "server_main_thread_us_per_message": main_us,
        "client_us_per_message": client_us,
        "per_master_ceiling_msg_s": master,
        "client_ceiling_per_core_msg_s": client_core,
        "host_cores": host_cores,
        "client_cores_per_host": client_cores,
        "per_host_msg_s": per_host,
        "bound_by": bound,
        "this_machine_cpu_ceiling_msg_s": machine,
        "hosts": {str(h): None if per_host is None else h * per_host for h in hosts},
        "derivation": text,
    }


def _table(summary: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| case | msg/s median (min-max) | server CPU-s / M msgs (main thread) | "
        "client CPU-s / M msgs | cores busy: servers + clients = machine | other CPU-s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, c in summary.items():
        r = c["rate"]
        m = {k: v["median"] for k, v in c.items() if isinstance(v, dict) and "median" in v}
        rows.append(
            f"| {key}: {CASES[key]} | {r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f}) | "
            f"{m['server_cpu_s_per_million']:.1f} ({m['server_main_thread_cpu_s_per_million']:.1f})"
            f" | {m['client_cpu_s_per_million']:.1f} | {m['server_cores_busy']:.2f} + "
            f"{m['client_cores_busy']:.2f} = {m['busy_cores']:.2f} | {m['other_cpu_s']:.2f} |"
        )
    return "\n".join(rows)


def _versions() -> dict[str, str]:
    import redis
    import ringq
    from redisd import version

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "ringq": str(ringq.__version__),
        "redis_py": str(redis.__version__),
        "redis_server": version(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "platform": platform.platform(),
    }


# -- main -------------------------------------------------------------------


def _sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(143)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=50_000, help="messages per namespace per run")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of every case")
    ap.add_argument("--json", type=Path, help="write the summary here too")
    ap.add_argument("--fsync", choices=["everysec", "always", "both"], default="both")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be quiet "
        "(fewer than --quiet-cores cores busy over half a second); default 0: "
        "just record how busy it was",
    )
    ap.add_argument("--quiet-cores", type=float, default=0.3)
    ap.add_argument(
        "--host-cores",
        type=int,
        default=os.cpu_count() or 2,
        help="cores per host for the paper estimate (default: this machine's)",
    )
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        ap.error("--n and --repeat must be at least 1")
    fsyncs = ["everysec", "always"] if args.fsync == "both" else [args.fsync]
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    load_before = cores_busy(1.0)
    print(f"cores busy before starting (1 s sample): {load_before:.2f}", file=sys.stderr)
    work_dir = Path(tempfile.mkdtemp(prefix="ringq-redis-cluster-bench-"))
    standalone = RedisServer(work_dir / "standalone", fsyncs[0])
    cluster = Cluster(work_dir / "cluster", fsyncs[0])
    try:
        standalone.start()
        cluster.start()
        picked = pick_namespaces(cluster)
        verify_placement(cluster, picked)
        s_url = f"redis://127.0.0.1:{standalone.port}/0"
        c_url = cluster.url()
        s_servers = [Server("standalone", standalone)]
        c_servers = [Server(f"master:{node.port}", node) for node in cluster.nodes]
        by_port = {node.port: f"master:{node.port}" for node in cluster.nodes}
        cases: dict[str, tuple[list[Target], list[Server]]] = {
            "i": ([Target(s_url, STANDALONE_NAMES[0], "standalone")], s_servers),
            "ii": ([Target(s_url, ns, "standalone") for ns in STANDALONE_NAMES], s_servers),
            "iii": ([Target(c_url, picked[0]["ns"], by_port[picked[0]["master_port"]])], c_servers),
            "iv": (
                [Target(c_url, p["ns"], by_port[p["master_port"]]) for p in picked],
                c_servers,
            ),
        }
        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for fsync in fsyncs:
            set_fsync([*s_servers, *c_servers], fsync)
            results[fsync] = {k: [] for k in cases}
            for rep in range(args.repeat):
                for key, (targets, servers) in cases.items():
                    reset(servers)
                    busy, waited = wait_quiet(args.wait_quiet, args.quiet_cores)
                    r = run_once(targets, servers, args.n, fsync, work_dir)
                    r["cores_busy_before"], r["waited_for_quiet_s"] = busy, waited
                    results[fsync][key].append(r)
                    print(
                        f"[{fsync}] rep {rep + 1}/{args.repeat} case {key:>3}: "
                        f"{r['rate']:>9,.0f} msg/s  {r['seconds']:.2f} s  "
                        f"server {r['server_cpu_s_used']:.2f} CPU-s  "
                        f"clients {r['client_cpu_s']:.2f} CPU-s  "
                        f"busy cores {r['busy_cores']:.2f}  other {r['other_cpu_s']:.2f} CPU-s "
                        f"(before: {busy:.2f} cores busy, waited {waited:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        cluster.stop()
        standalone.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    summary = {f: {k: summarize_case(v) for k, v in cs.items()} for f, cs in results.items()}
    out: dict[str, Any] = {
        "tool": "benches/redis_cluster.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": _versions(),
        "settings": {
            "n_per_namespace": args.n,
            "repetitions": args.repeat,
            "appendfsync": fsyncs,
            "appendonly": "yes",
            "batch": BATCH,
            "payload_bytes": PAYLOAD,
            "topic": TOPIC,
            "workers_per_namespace": "1 producer process + 1 consumer process",
        },
        "cases": CASES,
        "namespaces": {"standalone": STANDALONE_NAMES, "cluster": picked},
        "tables": {f: _table(s) for f, s in summary.items()},
        "results": summary,
        "paper_estimate": {
            f: paper_estimate(s["iv"], args.host_cores, [1, 3, 10], f) for f, s in summary.items()
        },
        "cores_busy_before_start": load_before,
        "wall_seconds": time.monotonic() - started,
    }
    text = json.dumps(out, indent=2)
    print(text)
    for f, t in out["tables"].items():
        print(f"\nappendfsync {f}, N={args.n} per namespace, {args.repeat} runs:\n{t}",
              file=sys.stderr)  # fmt: skip
    for f, est in out["paper_estimate"].items():
        print(f"\npaper estimate, appendfsync {f}: {est['derivation']}", file=sys.stderr)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())

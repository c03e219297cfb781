"""ringq against the queues users would pick instead, on this machine, in one run.

    benches/peers/run                 # installs the peers, then runs this (~10 min)
    python benches/peers/suite.py [--smoke] [--only ringq,rocksq] [--workloads ABCDEF]
                                  [--reps 3] [--results FILE] [--page FILE] [--chart FILE]
                                  [--merge]

Every run is a fresh process on a fresh directory (``work.py``); Redis
runs get a fresh ``redis-server`` that this process starts on 127.0.0.1 and
stops by pid. Workloads (100-byte payloads):

- A produce N; B consume + ack N (pre-filled); C a producer thread and a
  consumer thread at once; figures are messages (or jobs) per second. The
  rows of ``PROCESS_ROWS`` (``ringq_shared``) run C only, with producer
  processes and a consumer process (``work_procs.py``), each repetition
  right before or after (alternating) their ``versus`` peer's C, so the
  ratio is paired. The rows of ``ASYNC_ROWS`` (``ringq_async``, ``arq``,
  ``taskiq``) run C only, on asyncio (``work_async.py``): an async producer
  task enqueues one job per call while the library's own worker runs a
  trivial ``async def`` job on the same loop. ``ringq_redis_b100`` (ringq's
  Redis backend on a fresh redis-server, as the Redis rows) runs A, B and C
  only. The rows of ``JOB_ROWS`` (ringq on Redis with its handlers, Celery,
  RQ, Dramatiq, arq) run C only as jobs on Redis, end to end
  (``work_jobs.py``): a producer enqueues N trivial jobs while 2 worker
  processes of the library run them, on a fresh redis-server; in every
  repetition they run one right after the other, in reverse order every
  other repetition, so their ratios are paired;
- D crash: SIGKILL a producer 0.3 s after its first confirmed put, reopen
  in a new process, count confirmed puts that are gone; then SIGKILL a
  consumer 0.05 s after its first confirmed ack on a pre-filled queue,
  reopen, count confirmed acks delivered again, and messages neither acked
  (ack begun) nor delivered again (lost). A run whose stream ended before
  the kill is an error, not a figure. For Redis the
  server is SIGKILLed at the same moment (the process holding the data
  dies, as it does for the in-process queues) and restarted on its AOF;
- E reopen with 1M queued messages (open + first read, in a new process);
- F publish -> consumer receives on an idle queue, p50 / p99.

Every timed run checks its result (count, and FIFO order except for the
parallel workers of taskito, arq and taskiq) and is reported as an error
instead of a figure when the check fails. Medians of ``--reps``
repetitions, interleaved (rep 1 of every peer, then rep 2, ...) so machine
noise spreads across peers. ``--smoke``
runs every peer and workload at tiny sizes once (CI uses it: the figures
mean nothing, the checks do). ``--merge`` runs what ``--only`` /
``--workloads`` select and puts the figures into the existing ``--results``
file in place of the same peer's same workload, keeping every other figure
and noting what was merged when (the page says so under the table).
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import (  # noqa: E402
    ASYNC_ROWS,
    INFOS,
    JOB_ROWS,
    PROCESS_ROWS,
    MissingVenv,
    info_of,
    python_for,
    uses_redis,
    version_of,
)
from redisd import RedisServer  # noqa: E402

ROOT = HERE.parent.parent
WORKLOADS = "ABCDEF"
#: Peers the D (crash) workload runs for and the others do not.
CRASH_ONLY = {"ringq_os"}
#: Peers that run A, B and C only: ringq on Redis is measured for its
#: throughput against the Redis Streams rows (issue #14); its crash behaviour
#: is the server's (AOF everysec), as for those rows, and is not rerun here.
ABC_ONLY = {"ringq_redis_b100"}
#: E needs 1M messages in the peer first; filling the others takes minutes.
REOPEN_PEERS = ("ringq", "rocksq_b100", "redis_b100")


@dataclass(frozen=True)
class Sizes:
    fast: int = 100_000  # A/B/C for peers doing >= ~50k msg/s
    slow: int = 5_000  # ... for the others (fsync per op, or SQLite per item)
    taskito: int = 200  # jobs, defaults (~75 jobs/s)
    taskito_tuned: int = 1_000  # jobs, 1 ms poll (~600 jobs/s)
    reopen: int = 1_000_000
    latency: int = 300  # F samples
    latency_taskito: int = 40
    crash_fast: int = 2_000_000  # D: puts available before the kill
    crash_slow: int = 50_000
    crash_fill_fast: int = 200_000  # D: pre-filled for the consumer crash
    crash_fill_slow: int = 5_000
    kill_after: float = 0.3  # D: seconds after the first confirmed put
    kill_after_ack: float = 0.05  # D: seconds after the first confirmed ack


SMOKE = Sizes(
    fast=2000,
    slow=300,
    taskito=30,
    taskito_tuned=100,
    reopen=5000,
    latency=10,
    latency_taskito=3,
    crash_fast=1_000_000,  # ringq in batches of 100 puts ~1M/s: the kill must come first
    crash_slow=20_000,
    crash_fill_fast=100_000,
    crash_fill_slow=1000,
    kill_after=0.1,
    kill_after_ack=0.02,
)

FAST = {"ringq", "ringq_b100", "ringq_always_b100", "ringq_os", "queue", "rocksq",
        "rocksq_b100", "redis_b100", "redis_always_b100", "ringq_shared",
        "ringq_async", "ringq_redis_b100"}  # fmt: skip


#: Jobs per run of each ``JOB_ROWS`` row (a few seconds each; RQ's forking
#: worker does ~100 jobs/s), and at ``--smoke``. Kept out of ``Sizes``, which
#: ``--merge`` requires equal to the kept run's.
JOB_N = {"ringq_redis_jobs": 20_000, "ringq_redis_jobs_b100": 100_000, "celery": 5_000,
         "rq": 500, "rq_simple": 2_000, "dramatiq": 20_000, "arq_jobs": 5_000}  # fmt: skip
JOB_N_SMOKE = {k: 50 if k == "rq" else 300 for k in JOB_N}


def n_for(key: str, sizes: Sizes) -> int:
    if key in JOB_N:
        return (JOB_N_SMOKE if sizes == SMOKE else JOB_N)[key]
    if key == "taskito":
        return sizes.taskito
    if key == "taskito_tuned":
        return sizes.taskito_tuned
    return sizes.fast if key in FAST else sizes.slow


class Runner:
    def __init__(self, tmp: Path, timeout: float) -> None:
        self.tmp = tmp
        self.timeout = timeout
        self.seq = 0

    def fresh(self, tag: str) -> Path:
        self.seq += 1
        return self.tmp / f"{self.seq:04d}-{tag}"

    def child(self, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        script = "work_jobs.py" if spec["peer"] in JOB_ROWS else "work.py"
        return subprocess.Popen(
            [python_for(info_of(spec["peer"])), str(HERE / script), json.dumps(spec)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        out = Path(spec["dir"] + ".json")
        spec = {**spec, "out": str(out)}
        try:
            proc = self.child(spec)
        except MissingVenv as e:
            return {"error": str(e)}
        try:
            _, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"timed out after {self.timeout} s"}
        if not out.exists():
            tail = err.decode(errors="replace")[-800:]
            return {"error": f"exit {proc.returncode} without a result: {tail}"}
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def with_redis(self, key: str, d: Path) -> RedisServer | None:
        if not uses_redis(key):
            return None
        server = RedisServer(
            d.with_name(d.name + "-redis"), "always" if "always" in key else "everysec"
        )
        server.start()
        return server

    # -- workloads ------------------------------------------------------------

    def timed(self, key: str, role: str, n: int, **extra: Any) -> dict[str, Any]:
        d = self.fresh(f"{key}-{role}")
        server = self.with_redis(key, d)
        try:
            return self.run({"peer": key, "role": role, "n": n, "dir": str(d),
                             "port": server.port if server else 0, **extra})  # fmt: skip
        finally:
            if server:
                server.stop()

    def reopen(self, key: str, n: int) -> dict[str, Any]:
        d = self.fresh(f"{key}-E")
        server = self.with_redis(key, d)
        spec = {"peer": key, "n": n, "dir": str(d), "port": server.port if server else 0}
        try:
            filled = self.run({**spec, "role": "fill"})
            if "error" in filled:
                return filled
            extra = 0.0
            if server:  # the server is what reopens: restart it on its AOF
                server.stop()
                extra = server.start(timeout=300)
            res = self.run({**spec, "role": "reopen", "dir": str(d)})
            if "seconds" in res:
                res["seconds"] += extra
                res["server_restart_seconds"] = extra
            return res
        finally:
            if server:
                server.stop()

    def crash(self, key: str, part: str, sizes: Sizes) -> dict[str, Any]:
        """``part`` is ``put`` or ``ack``: kill, reopen, compare with the log."""
        fast = key in FAST
        d = self.fresh(f"{key}-D{part}")
        log = d.with_name(d.name + ".log")
        server = self.with_redis(key, d)
        task = INFOS[key].consume == "task"
        n_fill = (sizes.crash_fill_fast if fast else sizes.crash_fill_slow) if part == "ack" else 0
        if part == "ack" and key.startswith("redis"):
            n_fill = min(n_fill, sizes.crash_fill_fast // 10)  # ~70k/s at best: plenty
        if task and part == "ack":
            n_fill = n_for(key, sizes)
        n = n_fill or (sizes.crash_fast if fast else sizes.crash_slow)
        spec = {"peer": key, "n": n, "dir": str(d), "port": server.port if server else 0}
        try:
            if part == "ack":
                filled = self.run({**spec, "role": "fill"})
                if "error" in filled:
                    return filled
            proc = self.child({**spec, "role": f"crash_{part}", "log": str(log),
                               "out": str(d) + ".crash.json"})  # fmt: skip
            # Mid-stream: a moment after the first confirmation is logged.
            deadline = time.monotonic() + 60
            while not (log.exists() and log.stat().st_size > 0):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    err = proc.communicate()[1].decode(errors="replace")[-800:]
                    return {"error": f"the {part} child never got going: {err}"}
                time.sleep(0.001)
            time.sleep(sizes.kill_after if part == "put" else sizes.kill_after_ack)
            if server:
                server.kill()
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            if server:
                server.start(timeout=300)
            lines = log.read_text().split() if log.exists() else []
            drained = self.run({**spec, "role": "drain", "after": f"crash_{part}"})
        finally:
            if server:
                server.stop()
        if "error" in drained:
            return drained
        started = {int(x[1:]) for x in lines if x.startswith("r")}
        confirmed = [int(x[1:]) for x in lines if x.startswith("a")]
        done = len(confirmed) if part == "ack" else max(confirmed, default=-1) + 1
        if done >= n:
            return {"error": f"the kill came after the whole stream ({done:,} of {n:,} confirmed)"}
        res = judge(part, confirmed, started, drained, n_fill)
        if "left" in drained:  # taskito: jobs still pending / running after the drain
            res["left"] = drained["left"]
        return res


def judge(
    part: str, confirmed: list[int], started: set[int], drained: dict[str, Any], n_fill: int
) -> dict[str, Any]:
    """``confirmed``: puts (or acks) that returned before the kill; ``started``:
    messages whose ack had begun (gone afterwards is fine: the ack may have
    landed)."""
    if part == "put":
        # One producer, in order: every sequence up to the last confirmed one.
        n = max(confirmed) + 1 if confirmed else 0
        if "count" in drained:  # taskito: queued jobs are counted, not read back
            return {"confirmed": n, "lost": max(0, n - drained["count"]), "redelivered": 0}
        present = set(drained["seqs"])
        lost = sum(1 for s in range(n) if s not in present)
        return {"confirmed": n, "lost": lost, "redelivered": 0}
    acked = set(confirmed)
    again = set(drained["seqs"])
    redelivered = len(again & acked)
    lost = n_fill - len(acked | started | again)
    return {"confirmed": len(acked), "lost": lost, "redelivered": redelivered}


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def plan(keys: list[str], workloads: str) -> list[tuple[str, str]]:
    steps = []
    for key in keys:
        if key in PROCESS_ROWS or key in ASYNC_ROWS or key in JOB_ROWS:
            if "C" in workloads:
                steps.append((key, "C"))  # a process row: and its versus peer's C (``paired``)
            continue
        for w in workloads:
            if key in CRASH_ONLY and w != "D":
                continue
            if key in ABC_ONLY and w not in "ABC":
                continue
            if w == "E" and key not in REOPEN_PEERS:
                continue
            if w == "D":
                steps.append((key, "Dput"))
                if key != "queue":  # in memory: a new process has nothing to read
                    steps.append((key, "Dack"))
            else:
                steps.append((key, w))
    return steps


def in_rep_order(steps: list[tuple[str, str]], rep: int) -> list[tuple[str, str]]:
    """The steps of repetition ``rep``: the ``JOB_ROWS`` rows run back to back
    (where the first of them is), reversed every other repetition."""
    jobs = [s for s in steps if s[0] in JOB_ROWS]
    if not jobs:
        return steps
    at = steps.index(jobs[0])
    rest = [s for s in steps if s[0] not in JOB_ROWS]
    return rest[:at] + (jobs if rep % 2 == 0 else jobs[::-1]) + rest[at:]


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    sizes = SMOKE if args.smoke else Sizes()
    reps = 1 if args.smoke else args.reps
    known = [*INFOS, *PROCESS_ROWS]
    keys = known if not args.only else [k.strip() for k in args.only.split(",")]
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; known: {', '.join(known)}")
    steps = plan(keys, args.workloads)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {k: {} for k in keys}
    tmp = Path(tempfile.mkdtemp(prefix="ringq-peers-", dir=args.tmpdir))
    runner = Runner(tmp, timeout=600)
    started = time.perf_counter()
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    try:
        with Progress(*columns, transient=False) as progress:
            bar = progress.add_task("peers", total=len(steps) * reps)
            for rep in range(reps):
                for key, w in in_rep_order(steps, rep):
                    progress.update(bar, description=f"rep {rep + 1}/{reps} {key} {w}")
                    n = n_for(key, sizes)
                    t0 = time.perf_counter()
                    if key in PROCESS_ROWS:
                        paired(runner, key, sizes, rep, raw, progress.console)
                        progress.advance(bar)
                        continue
                    if w in "ABC":
                        res = runner.timed(key, w, n)
                    elif w == "F":
                        samples = (
                            sizes.latency_taskito if key.startswith("taskito") else sizes.latency
                        )
                        res = runner.timed(key, "F", samples)
                    elif w == "E":
                        res = runner.reopen(key, sizes.reopen)
                    else:
                        res = runner.crash(key, w[1:], sizes)
                    res["rep"] = rep
                    res["n"] = n
                    res["wall"] = time.perf_counter() - t0
                    raw[key].setdefault(w, []).append(res)
                    if "error" in res:
                        progress.console.print(f"[red]{key} {w}: {res['error']}[/red]")
                    progress.advance(bar)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "tool": "benches/peers/suite.py",
        "command": " ".join(["python", "benches/peers/suite.py", *sys.argv[1:]]),
        "smoke": args.smoke,
        "repetitions": reps,
        "sizes": sizes.__dict__,
        "machine": machine(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peers": {k: entry(k, sizes, raw[k]) for k in keys if k in INFOS},
    }
    rows = [k for k in keys if k in PROCESS_ROWS]
    if rows:
        report["processes"] = {k: process_entry(k, sizes, raw[k]) for k in rows}
    return report


def entry(key: str, sizes: Sizes, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    info = info_of(key)
    out = {
        "label": info.label,
        "version": version_of(info),
        "durability": info.durability,
        "batch": info.batch,
        "consume": info.consume,
        "n": n_for(key, sizes),
        "results": aggregate(runs),
    }
    if key in ASYNC_ROWS:
        out |= {"asyncio": True, "notes": info.notes}
    if key in JOB_ROWS:
        runs_c = runs.get("C", [])
        out |= {"jobs": True, "notes": info.notes, "workers": 2}
        if "C" in out["results"]:
            out["results"]["C"]["rates"] = [r.get("rate") for r in runs_c]
            out["results"]["C"]["enqueue_seconds"] = [r.get("enqueue_seconds") for r in runs_c]
    return out


def paired(
    runner: Runner,
    key: str,
    sizes: Sizes,
    rep: int,
    raw: dict[str, dict[str, list[dict[str, Any]]]],
    console: Any,
) -> None:
    """One repetition of a ``PROCESS_ROWS`` row's C and of its versus peer's
    C, one right after the other (which goes first alternates by rep)."""
    versus = PROCESS_ROWS[key].versus
    order = [(key, "C"), (versus, "C_versus")]
    for k, w in order if rep % 2 == 0 else order[::-1]:
        t0 = time.perf_counter()
        role = "C_processes" if k in PROCESS_ROWS else "C"
        res = runner.timed(k, role, n_for(k, sizes))
        res |= {"rep": rep, "n": n_for(k, sizes), "wall": time.perf_counter() - t0}
        raw[key].setdefault(w, []).append(res)
        if "error" in res:
            console.print(f"[red]{k} C ({w}): {res['error']}[/red]")


def process_entry(key: str, sizes: Sizes, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    info = PROCESS_ROWS[key]
    mine = {w: r for w, r in runs.items() if w != "C_versus"}
    out = entry(key, sizes, mine)
    out |= {"producers": info.producers, "consumers": 1, "notes": info.notes}
    if "C" in mine:
        out["results"]["C"]["rates"] = [r.get("rate") for r in mine["C"]]
        out["results"]["C"]["checks"] = [
            {k: r[k] for k in ("read", "lost", "duplicates", "out_of_order", "extra") if k in r}
            for r in mine["C"]
        ]
    if "C_versus" in runs:
        out["versus"] = entry(info.versus, sizes, {"C": runs["C_versus"]})
        out["versus"]["key"] = info.versus
        out["versus"]["results"]["C"]["rates"] = [r.get("rate") for r in runs["C_versus"]]
    return out


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (a partial run) into ``old`` (a kept run): each peer's
    workloads replace the same ones, the rest stays; ``merged`` says what
    came from which run."""
    for k in ("smoke", "sizes"):
        if old.get(k) != new.get(k):
            raise SystemExit(f"--merge: the kept run's {k} differ from this run's; run it all")
    what = []
    for section in ("peers", "processes"):
        for key, e in new.get(section, {}).items():
            kept = old.setdefault(section, {}).get(key)
            if kept is None:
                old[section][key] = e
            else:
                results = {**kept["results"], **e["results"]}
                old[section][key] = {**kept, **e, "results": results}
            what += [f"{e['label']} {w}" for w in e["results"]]
            if "versus" in e:
                what.append(f"{e['versus']['label']} C (paired with {e['label']})")
    earlier = []
    for m in old.get("merged", []):  # what this run measured again is no longer theirs
        m["entries"] = [x for x in m["entries"] if x not in what]
        if m["entries"]:
            earlier.append(m)
    old["merged"] = earlier
    old["merged"].append(
        {
            "date": new["machine"]["date"],
            "command": new["command"],
            "repetitions": new["repetitions"],
            "wall_seconds": new["wall_seconds"],
            "machine": new["machine"],
            "entries": what,
        }
    )
    old.pop("targets", None)
    return old


def aggregate(by_w: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w, runs in by_w.items():
        good = [r for r in runs if "error" not in r]
        errors = [r["error"] for r in runs if "error" in r]
        wall = round(sum(r["wall"] for r in runs), 1)
        entry: dict[str, Any] = {"runs": len(runs), "errors": errors, "wall_seconds": wall}
        if w in "ABC" and good:
            entry |= summarize([r["rate"] for r in good])
        elif w == "E" and good:
            entry |= summarize([r["seconds"] for r in good])
            entry["rss_mb"] = statistics.median(r["rss_mb"] for r in good)
        elif w == "F" and good:
            entry |= {"p50_us": statistics.median(r["p50_us"] for r in good),
                      "p99_us": statistics.median(r["p99_us"] for r in good)}  # fmt: skip
        elif w.startswith("D") and good:
            entry |= {k: sum(r[k] for r in good) for k in ("confirmed", "lost", "redelivered")}
            if any("left" in r for r in good):
                entry["left_after_drain"] = [r.get("left") for r in good]
        out[w] = entry
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benches/peers/suite.py", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (CI)")
    p.add_argument("--only", metavar="PEERS", help=f"comma-separated: {', '.join(INFOS)}")
    p.add_argument("--workloads", default=WORKLOADS, help="subset of ABCDEF (default: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tmpdir", help="where the fresh directories go (default: $TMPDIR)")
    p.add_argument(
        "--results",
        help="JSON written here (default: benches/peers/results.json; with --smoke, "
        "$TMPDIR/ringq-peers-smoke.json, so a smoke run never replaces a full run's figures)",
    )
    p.add_argument("--page", help="rewrite the peers section of this Markdown page")
    p.add_argument("--chart", help="write the throughput chart (PNG) here")
    p.add_argument(
        "--merge",
        action="store_true",
        help="put this run's figures into the existing --results file in place of the same "
        "peers' same workloads, keeping the rest (and the page's other rows)",
    )
    p.add_argument(
        "--render",
        metavar="RESULTS",
        help="run nothing: redo the verdicts, page and chart from a results.json of a past run",
    )
    args = p.parse_args(argv)
    if not set(args.workloads) <= set(WORKLOADS) or not args.workloads:
        p.error(f"--workloads takes letters of {WORKLOADS}")
    if args.results is None:
        smoke = Path(args.tmpdir or tempfile.gettempdir()) / "ringq-peers-smoke.json"
        args.results = str(smoke if args.smoke else HERE / "results.json")
    if args.render:
        try:
            report = json.loads(Path(args.render).read_text())
        except (OSError, ValueError) as e:
            p.error(f"--render {args.render}: {e}")
        args.results = args.render
    else:
        kept = None
        if args.merge:
            try:
                kept = json.loads(Path(args.results).read_text())
            except (OSError, ValueError) as e:
                p.error(f"--merge into {args.results}: {e}")
        report = run_suite(args)
        if kept is not None:
            report = merge(kept, report)
        Path(args.results).write_text(json.dumps(report, indent=2) + "\n")
    import page

    verdicts = page.targets(report)
    report["targets"] = verdicts
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n")
    if args.chart:
        page.chart(report, Path(args.chart))
    if args.page:
        # A merge without --chart keeps the page's link to the chart it had.
        link = args.chart or (page.chart_link(Path(args.page)) if args.merge else None)
        page.rewrite(Path(args.page), report, link)
    print(page.summary(report))
    rows = [*report["peers"].items(), *report.get("processes", {}).items()]
    rows += [(f"{v['versus']['key']} (paired with {k})", v["versus"])
             for k, v in report.get("processes", {}).items() if "versus" in v]  # fmt: skip
    errors = [(k, w, e) for k, v in rows for w, r in v["results"].items() for e in r["errors"]]
    for k, w, e in errors:
        print(f"error: {k} {w}: {e}", file=sys.stderr)
    ringq_errors = [x for x in errors if x[0].startswith("ringq")]
    return 1 if ringq_errors else 0


if __name__ == "__main__":
    sys.exit(main())

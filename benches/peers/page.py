"""Turns the suite's JSON into the results page section, the chart and the
verdict on each target of issues #4, #13 and #14."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN = "<!-- peers:begin (written by benches/peers/suite.py; edits here are overwritten) -->"
END = "<!-- peers:end -->"
DASH, TIMES = "\u2013", "\u00d7"  # for the page (en dash, multiplication sign)

#: (workload, ringq variant, peer, minimum ratio, how it is compared); the
#: peer may be a tuple of peers: the target is then against the best of them.
RATIO_TARGETS: tuple[tuple[str, str, str | tuple[str, ...], float, str], ...] = (
    ("C", "ringq_b100", "queue", 1.5, "durable, and faster than the in-memory queue"),
    ("C", "ringq_b100", "rocksq_b100", 1.2, "both in batches of 100"),
    ("B", "ringq", "rocksq", 2.0, "one message per checkout + ack vs one pop per call"),
    ("C", "ringq_b100", "redis_b100", 4.0, "both in batches of 100, Redis AOF everysec"),
    ("C", "ringq", "taskito_tuned", 100.0, "one message per call vs one job per call"),
    ("C", "ringq", "sqliteack", 50.0, "both one message per call"),
    (
        "C",
        "ringq_shared",
        "redis_b100",
        3.0,
        "2 producer processes (publish_many of 100) + 1 consumer process (checkout and ack "
        "of 100), clients of an owner process, vs Redis pipelined 100 (one process: a "
        "producer and a consumer thread); paired: run one right after the other",
    ),
    ("C", "ringq_async", ("arq", "taskiq"), 20.0, "async producer + trivial async job"),
    (
        "C",
        "ringq_redis_b100",
        "redis_b100",
        0.7,
        "ringq's Lua scripts (leases, dedup, DLQ bookkeeping) vs raw Streams, both batches "
        "of 100, same server setup",
    ),
    (
        "C",
        "ringq_redis_jobs_b100",
        ("celery", "rq", "rq_simple", "dramatiq", "arq_jobs"),
        5.0,
        "jobs on Redis, end to end: a trivial job, 2 worker processes each, the same "
        "redis-server setup; ringq publish_many of 100 and its handlers vs each library's "
        "recommended enqueue and worker; paired: run one right after the other",
    ),
    (
        "C",
        "ringq_redis_jobs",
        ("celery", "rq", "rq_simple", "dramatiq", "arq_jobs"),
        5.0,
        "as the row above, with ringq publishing one job per call (as Dramatiq and arq "
        "must: they have no batch enqueue); each publish is a round trip to the server",
    ),
)


def _row(report: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A peer's entry, or a process row's (``report["processes"]``)."""
    row: dict[str, Any] | None = report["peers"].get(key)
    return row if row is not None else report.get("processes", {}).get(key)


def _res(report: dict[str, Any], key: str, w: str) -> dict[str, Any] | None:
    peer = _row(report, key)
    return None if peer is None else peer["results"].get(w)


def _versus(report: dict[str, Any], ours: str, theirs: str, w: str) -> dict[str, Any] | None:
    """``theirs`` as measured beside process row ``ours`` (paired), if it was."""
    v = report.get("processes", {}).get(ours, {}).get("versus")
    return v["results"].get(w) if v and v.get("key") == theirs else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    peers = {**report["peers"], **report.get("processes", {})}
    for w, ours, against, need, how in RATIO_TARGETS:
        group = (against,) if isinstance(against, str) else against
        labels = [peers.get(k, {}).get("label", k) for k in group]
        name = f"{w}: {peers.get(ours, {}).get('label', ours)} >= {need:g}x " + (
            labels[0] if len(group) == 1 else f"the best of {', '.join(labels)}"
        )
        a = _res(report, ours, w)
        bs = {k: _versus(report, ours, k, w) or _res(report, k, w) for k in group}
        # Every peer of a group must have a figure: the best of some is not the best.
        if not a or "median" not in a or any(not b or "median" not in b for b in bs.values()):
            out.append({"target": name, "how": how, "status": "not run"})
            continue
        best = max(group, key=lambda k: bs[k]["median"])
        ratio = a["median"] / bs[best]["median"]
        verdict = {"target": name, "how": how, "ratio": ratio,
                   "status": "met" if ratio >= need else "missed"}  # fmt: skip
        if len(group) > 1:
            verdict["versus"] = peers[best]["label"]
        out.append(verdict)
    crash = []
    for key, p in peers.items():
        if key.startswith("ringq"):
            for part in ("Dput", "Dack"):
                r = p["results"].get(part)
                if r and "lost" in r:
                    crash.append((key, part, r["lost"], r["redelivered"]))
    if crash:
        bad = [c for c in crash if c[2] or c[3]]
        out.append({"target": "D: zero lost and zero acked-then-redelivered, every ringq mode",
                    "how": f"{len(crash)} crash workloads, {report['repetitions']} runs each",
                    "status": "missed" if bad else "met", "detail": bad})  # fmt: skip
    else:
        out.append({"target": "D: zero lost, zero redelivered", "status": "not run"})
    ours_f = _res(report, "ringq", "F")
    durable = {k: _res(report, k, "F") for k in peers if k != "queue" and not k.startswith("ringq")}
    durable_p50 = {k: r["p50_us"] for k, r in durable.items() if r and "p50_us" in r}
    if ours_f and "p50_us" in ours_f and durable_p50:
        best = min(durable_p50, key=lambda k: durable_p50[k])
        out.append(
            {
                "target": "F: ringq p50 below every durable peer's",
                "how": f"ringq {_us(ours_f['p50_us'])}; best durable peer {peers[best]['label']} "
                f"{_us(durable_p50[best])}",
                "status": "met" if ours_f["p50_us"] < durable_p50[best] else "missed",
            }
        )
    else:
        out.append({"target": "F: ringq p50 below every durable peer's", "status": "not run"})
    return out


def _rate(r: dict[str, Any] | None) -> str:
    if not r:
        return DASH
    if r.get("errors") and "median" not in r:
        return "error"
    v = r["median"]
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _crash(r: dict[str, Any] | None, ack: bool) -> str:
    if not r:
        return DASH
    if "lost" not in r:
        return "error"
    if ack:
        return f"{r['redelivered']} / {r['lost']}"
    return f"{r['lost']:,} of {r['confirmed']:,}"


def table(report: dict[str, Any]) -> str:
    head = (
        "| peer | version | durability | N | A produce | B consume+ack | C prod+cons | "
        "D lost of confirmed puts | D acked-redelivered / lost | E reopen 1M | F p50 / p99 |"
    )
    lines = [head, "|" + " --- |" * 11]
    for key, p in report["peers"].items():
        r = p["results"]
        e = r.get("E")
        e_txt = (f"{e['median']:.2f} s ({e['rss_mb']:.0f} MB)" if e and "median" in e
                 else "error" if e else DASH)  # fmt: skip
        f = r.get("F")
        f_txt = (f"{_us(f['p50_us'])} / {_us(f['p99_us'])}" if f and "p50_us" in f
                 else "error" if f else DASH)  # fmt: skip
        n = DASH if key == "ringq_os" else f"{p['n']:,}"
        label = f"{p['label']} ²" if p.get("asyncio") else p["label"]
        label = f"{label} ³" if p.get("jobs") else label
        lines.append(
            f"| {label} | {p['version']} | {p['durability']} | {n} | {_rate(r.get('A'))} | "
            f"{_rate(r.get('B'))} | {_rate(r.get('C'))} | {_crash(r.get('Dput'), False)} | "
            f"{_crash(r.get('Dack'), True)} | {e_txt} | {f_txt} |"
        )
    for p in report.get("processes", {}).values():  # C only
        label = f"{p['label']} ¹"
        lines.append(
            f"| {label} | {p['version']} | {p['durability']} | {p['n']:,} | {DASH} | {DASH} | "
            f"{_rate(p['results'].get('C'))} | {DASH} | {DASH} | {DASH} | {DASH} |"
        )
    return "\n".join(lines)


def process_notes(report: dict[str, Any]) -> list[str]:
    """What the table's process rows are and their paired figures."""
    out = []
    for p in report.get("processes", {}).values():
        c, v = p["results"].get("C"), p.get("versus")
        text = f"¹ {p['label']}: {p['notes']}"
        vc = v["results"].get("C") if v else None
        if c and "median" in c and vc and "median" in vc:
            text += (
                f" Each of its {len(c.get('rates', [])) or c['runs']} repetitions ran right "
                f"before or after (alternating) one of {v['label']} C, for a paired ratio: "
                f"{_rate(c)} ({_rate({'median': c['min']})}{DASH}{_rate({'median': c['max']})}) "
                f"against {_rate(vc)} ({_rate({'median': vc['min']})}{DASH}"
                f"{_rate({'median': vc['max']})}), {c['median'] / vc['median']:.2f}{TIMES}."
            )
        out.append(text)
    return out


def async_notes(report: dict[str, Any]) -> list[str]:
    """What the asyncio rows (C only) are."""
    rows = [p for p in report["peers"].values() if p.get("asyncio")]
    if not rows:
        return []
    out = [
        "² The asyncio rows (C only): one process, one event loop. An async producer task "
        "enqueues N jobs, one awaited call each (none of these libraries has a batch enqueue), "
        "while the library's own worker, started 0.3 s before on the same loop, runs a "
        "trivial `async def` job that records the 100-byte payload it got. Timed from the "
        "first enqueue to the last job's run; then, untimed, the run waits until the library "
        "has recorded every job done (arq: complete, taskiq and ringq: acked), and checks "
        "that each job ran once (ringq: in order too) and that none is left. arq and taskiq "
        "use a fresh redis-server started as for the Redis rows (AOF, fsync every second)."
    ]
    out += [f"{p['label']}: {p['notes']}" for p in rows]
    return out


def job_notes(report: dict[str, Any]) -> list[str]:
    """What the Redis job-queue rows (C only) are, with their spread."""
    rows = [p for p in report["peers"].values() if p.get("jobs")]
    if not rows:
        return []
    out = [
        "³ Jobs on Redis, end to end (C only, `benches/peers/work_jobs.py`): one fresh "
        "redis-server per run (AOF, fsync every second, as the Redis rows). The run's process "
        "starts 2 worker processes of the library (its own worker: jobs run in 2 processes "
        "for every row, the machine's core count), waits until each says it consumes (a hook "
        "of the library's) and 0.5 s more, then enqueues N trivial jobs, each with a 100-byte "
        "payload. Timed from the first enqueue until the last job has recorded that it ran; "
        "then, untimed, the run waits until the library has recorded every job done, stops "
        "the workers (SIGTERM: each library's warm shutdown) and checks that each job ran "
        "exactly once and that nothing is left in the library's keys (queued, unacked or in "
        "progress, failed, dead). In every repetition these rows run one right after the "
        "other (the order reversed every other repetition)."
    ]
    for p in rows:
        c = p["results"].get("C")
        fig = ""
        if c and "median" in c:
            fig = (f" {_rate(c)} jobs/s ({_rate({'median': c['min']})}{DASH}"
                   f"{_rate({'median': c['max']})}), N = {p['n']:,}.")  # fmt: skip
        out.append(f"{p['label']}: {p['notes']}{fig}")
    return out


def merged_notes(report: dict[str, Any]) -> list[str]:
    return [
        f"Merged from a later run ({m['date']}, {m['repetitions']} repetitions, "
        f"`{m['command']}`): " + "; ".join(m["entries"]) + ". Every other figure is from "
        "the run above."
        for m in report.get("merged", [])
    ]


def chart_link(page: Path) -> str | None:
    """The chart the page's peers section links to, if it has one."""
    text = page.read_text() if page.exists() else ""
    section = text.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in text and END in text else ""
    mark = "![throughput per peer]("
    return section.split(mark, 1)[1].split(")", 1)[0] if mark in section else None


def _us(v: float) -> str:
    return f"{v / 1000:.1f} ms" if v >= 1000 else f"{v:.0f} µs"


def spread(report: dict[str, Any]) -> str:
    worst = (1.0, "")
    ratios = []
    for p in report["peers"].values():
        for w in "ABC":
            r = p["results"].get(w)
            if r and "median" in r and r["min"] > 0:
                x = r["max"] / r["min"]
                ratios.append(x)
                if x > worst[0]:
                    worst = (x, f"{p['label']} {w}")
    if not ratios:
        return ""
    ratios.sort()
    mid = ratios[len(ratios) // 2]
    return (
        f"Noise: max/min across the repetitions of one A/B/C figure is {mid:.2f}{TIMES} at the "
        f"median and {worst[0]:.2f}{TIMES} at worst ({worst[1]})."
    )


def summary(report: dict[str, Any]) -> str:
    lines = [f"peers suite: {len(report['peers'])} peers, {report['wall_seconds']} s"]
    for t in report.get("targets", []):
        fig = f" ({t['ratio']:.2f}x)" if "ratio" in t else ""
        best = f" (best: {t['versus']})" if "versus" in t else ""
        lines.append(f"  {t['status']:>7}: {t['target']}{fig}{best}")
    return "\n".join(lines)


def section(report: dict[str, Any], chart: str | None) -> str:
    m = report["machine"]
    s = report["sizes"]
    parts = [
        BEGIN,
        "## Against the peers: `benches/peers/run`",
        "",
        f"Measured {m['date']} on {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, "
        f"{m['platform']}, CPython {m['python']}; {report['repetitions']} repetitions "
        f"(medians), wall time {report['wall_seconds'] / 60:.1f} min. Command: "
        "`benches/peers/run` (installs the peers and redis-server, then runs "
        f"`{report['command']}`).",
        "",
        "Throughput in messages (taskito, arq, taskiq and the ³ rows: jobs) per second, "
        "100-byte payloads, "
        "a fresh process and directory per run. N is the count per A/B/C run: "
        f"{s['fast']:,} for peers doing roughly 50k/s or more, {s['slow']:,} for the "
        "others (an fsync per operation, SQLite per item, or a job), fewer for taskito "
        "(the ³ rows: each its own, in the table). "
        "D sums its repetitions: the producer is SIGKILLed "
        f"{s['kill_after']} s after its first confirmed put (every put confirmed before "
        "the kill must be there after a reopen), then a consumer is SIGKILLed "
        f"{s['kill_after_ack']} s after its first confirmed ack on a pre-filled queue "
        '(acks confirmed before the kill must not be delivered again; "lost" counts '
        "messages neither acked, nor with an ack begun, nor delivered again: a peer whose "
        "read deletes loses what it handed out and the consumer had not finished). "
        "For taskito a job having run is its ack (taskito records completion right "
        "after), and a job running at the kill that is not run again within 2 s of the "
        'reopen counts as lost (taskito leaves it "running"). queue.Queue has no '
        "consumer crash to run (a new process finds it empty). For Redis, redis-server "
        "is SIGKILLed at the same moment and restarted on its AOF. E opens a queue "
        "holding 1M messages in a new process and reads the first (for Redis: the "
        "server restart on its AOF plus the first read); only peers that fill 1M in "
        "seconds run it. F: publish → the consumer has it, on an idle queue (2 ms "
        "between messages); peers without a blocking read are polled every 0.1 ms; "
        "taskito: enqueue → the job starts.",
        "",
        table(report),
        "",
        spread(report),
        "",
    ]
    notes = process_notes(report) + async_notes(report) + job_notes(report)
    for note in notes + merged_notes(report):
        parts += [note, ""]
    if chart:
        parts += [f"![throughput per peer]({Path(chart).name})", ""]
    parts += ["### Where each target stands (issues #4, #13 and #14, measured in this run)", "",
              "| target | compared | result |", "| --- | --- | --- |"]  # fmt: skip
    for t in report.get("targets", []):
        res = t["status"]
        if "ratio" in t:
            res = f"{t['ratio']:.2f}{TIMES} — {t['status']}"
        how = t.get("how", "") + (f"; the best: {t['versus']}" if "versus" in t else "")
        parts.append(f"| {t['target']} | {how} | {res} |")
    rows = [*report["peers"].values(), *report.get("processes", {}).values()]
    rows += [p["versus"] for p in report.get("processes", {}).values() if "versus" in p]
    errors = [(p["label"], w, e) for p in rows for w, r in p["results"].items()
              for e in r["errors"]]  # fmt: skip
    if errors:
        parts += ["", "Runs that failed their own check (no figure kept):", ""]
        parts += [f"- {label} {w}: {e}" for label, w, e in errors]
    parts += ["", END]
    return "\n".join(parts)


def rewrite(page: Path, report: dict[str, Any], chart: str | None) -> None:
    text = page.read_text() if page.exists() else "# ringq benchmarks\n"
    new = section(report, chart)
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + new + after
    else:
        first, _, rest = text.partition("\n## ")
        text = first.rstrip() + "\n\n" + new + "\n\n## " + rest if rest else text + "\n" + new
    page.write_text(text)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {**report["peers"], **report.get("processes", {})}
    peers = [(k, p) for k, p in rows.items() if any(w in p["results"] for w in "ABC")]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(peers) + 1.5))
    height = 0.27
    colors = {"A": "#4c72b0", "B": "#55a868", "C": "#c44e52"}
    names = {"A": "A produce", "B": "B consume + ack", "C": "C producer + consumer"}
    for i, w in enumerate("ABC"):
        ys, xs = [], []
        for row, (_k, p) in enumerate(peers):
            r = p["results"].get(w)
            if r and "median" in r:
                ys.append(row + (i - 1) * height)
                xs.append(r["median"])
        ax.barh(ys, xs, height=height, color=colors[w], label=names[w])
    ax.set_yticks(range(len(peers)))
    ax.set_yticklabels([p["label"] for _k, p in peers])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("messages (taskito, the job queues: jobs) per second, median, log scale")
    m = report["machine"]
    ax.set_title(f"ringq and its peers, 100-byte payloads ({m['cpus']} CPUs, {m['date']})")
    ax.grid(axis="x", which="both", alpha=0.3)
    # Under the axes: inside, it would hide the bottom rows' bars.
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)

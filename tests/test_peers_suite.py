"""The peer benchmark suite runs end to end at tiny sizes (``--smoke``):
every peer adapter works against the real package (and a real
redis-server), every run passes its own checks, ringq loses nothing in the
crash runs, and the page section, the chart and the JSON are written. The
figures themselves mean nothing at these sizes and are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "benches" / "peers" / "suite.py"


def test_smoke_run_of_every_peer_and_workload(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# ringq benchmarks\n\nintro\n\n## Python\n\nkept as is\n")
    results, chart = tmp_path / "results.json", tmp_path / "peers.png"
    done = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--tmpdir", str(tmp_path),
         "--results", str(results), "--page", str(page), "--chart", str(chart)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(results.read_text())
    errors = {
        (k, w): r["errors"]
        for k, p in report["peers"].items()
        for w, r in p["results"].items()
        if r["errors"]
    }
    assert not errors, errors
    peers = report["peers"]
    assert {"queue", "persistqueue", "sqliteack", "litequeue", "huey", "diskcache", "rocksq",
            "rocksq_b100", "taskito", "taskito_tuned", "redis", "redis_b100", "redis_always",
            "redis_always_b100", "ringq_async", "arq", "taskiq",
            "ringq_redis_b100", "ringq_redis_jobs", "ringq_redis_jobs_b100", "celery", "rq",
            "rq_simple", "dramatiq", "arq_jobs"} <= set(peers)  # fmt: skip
    # C only: the asyncio rows and the Redis job queues (work_jobs.py).
    job_rows = {"ringq_redis_jobs", "ringq_redis_jobs_b100", "celery", "rq", "rq_simple",
                "dramatiq", "arq_jobs"}  # fmt: skip
    asyncio_rows = {"ringq_async", "arq", "taskiq", *job_rows}
    for key, p in peers.items():
        want = {"Dput", "Dack"} if key == "ringq_os" else {"A", "B", "C", "Dput", "Dack", "F"}
        if key == "queue":
            want.discard("Dack")  # in memory: nothing for a new process to read
        if key in asyncio_rows:
            assert set(p["results"]) == {"C"}, (key, sorted(p["results"]))
            continue
        if key == "ringq_redis_b100":  # ringq on its Redis backend: A, B and C only
            assert set(p["results"]) == {"A", "B", "C"}, (key, sorted(p["results"]))
            assert "redis-server" in p["version"], p["version"]
            continue
        assert want <= set(p["results"]), (key, sorted(p["results"]))
    # arq runs in a venv of its own (it needs redis-py < 6): its version comes from there.
    assert peers["arq"]["version"].startswith("0.28.") and "redis-py 5." in peers["arq"]["version"]
    pins = {"celery": "5.7.", "rq": "2.12.", "dramatiq": "2.2.", "arq_jobs": "0.28."}
    for key, version in pins.items():
        assert peers[key]["version"].startswith(version), (key, peers[key]["version"])
    for key in ("ringq", "ringq_os", "ringq_always", "ringq_b100"):
        for part in ("Dput", "Dack"):
            r = peers[key]["results"][part]
            assert r["confirmed"] > 0, (key, part, "the kill came before anything was confirmed")
            assert (r["lost"], r["redelivered"]) == (0, 0), (key, part, r)
    # The in-memory queue loses everything, which shows the crash check can fail.
    assert (
        peers["queue"]["results"]["Dput"]["lost"] == peers["queue"]["results"]["Dput"]["confirmed"]
    )
    assert {"ringq", "rocksq_b100", "redis_b100"} <= {
        k for k, p in peers.items() if "E" in p["results"]
    }
    assert [t["status"] for t in report["targets"]] and all(
        t["status"] in ("met", "missed") for t in report["targets"]
    )
    best_of = [t for t in report["targets"] if "the best of arq" in t["target"]]
    assert len(best_of) == 1, report["targets"]
    assert best_of[0]["versus"] in (peers["arq"]["label"], peers["taskiq"]["label"])
    on_redis = [t for t in report["targets"] if "0.7x Redis Streams" in t["target"]]
    assert len(on_redis) == 1 and "ratio" in on_redis[0], report["targets"]
    jobs = [t for t in report["targets"] if "the best of celery" in t["target"].lower()]
    assert len(jobs) == 2 and all("ratio" in t for t in jobs), report["targets"]
    text = page.read_text()
    assert "## Against the peers" in text and "kept as is" in text and "peers.png" in text
    assert "² The asyncio rows" in text and "| arq (1 ms poll) ² |" in text
    assert "| ringq on Redis, batches of 100 |" in text
    assert text.count("<!-- peers:begin") == 1
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_redoes_page_and_verdicts_from_a_kept_run(tmp_path: Path) -> None:
    """``--render`` runs nothing: the page and verdicts come from the JSON of a
    past run (here the committed full run), and a target whose figure is
    changed in that JSON changes its verdict."""
    kept = json.loads((SUITE.parent / "results.json").read_text())
    assert kept["repetitions"] == 3 and len(kept["peers"]) == 30
    kept["peers"]["ringq"]["results"]["C"]["median"] = 1.0  # far below every peer
    results, page = tmp_path / "results.json", tmp_path / "benchmarks.md"
    results.write_text(json.dumps(kept))
    page.write_text("# ringq benchmarks\n")
    done = subprocess.run(
        [sys.executable, str(SUITE), "--render", str(results), "--page", str(page)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missed: C: ringq >= 50x persistqueue.SQLiteAckQueue" in done.stdout
    assert "met: B: ringq >= 2x rocksq" in done.stdout
    verdicts = {t["target"]: t["status"] for t in json.loads(results.read_text())["targets"]}
    assert verdicts["C: ringq >= 100x taskito (1 ms poll)"] == "missed"
    best_of = "C: ringq AsyncQueue (async handler) >= 20x the best of arq (1 ms poll), taskiq"
    assert [v for t, v in verdicts.items() if t.startswith(best_of)] == ["met"]
    assert "| C: ringq >= 50x persistqueue.SQLiteAckQueue |" in page.read_text()
    bad = subprocess.run(
        [sys.executable, str(SUITE), "--render", str(tmp_path / "missing.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "missing.json" in bad.stderr

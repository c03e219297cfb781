"""``benches/publish_stalls.py`` (the stall figures of ``docs/benchmarks.md``)
runs end to end at a tiny size, and its summary of a distribution is right.
The figures themselves mean nothing at this size."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "benches" / "publish_stalls.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("publish_stalls", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["publish_stalls"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_tail_summary_counts_and_ranks_the_calls() -> None:
    bench = load()
    # 1000 calls: 990 of 1 µs, 8 of 2 ms, 1 of 5 ms, 1 of 50 ms.
    lat = [1_000] * 990 + [2_000_000] * 8 + [5_000_000, 50_000_000]
    s = bench.tail(lat[::-1])
    assert s["calls"] == 1000
    assert s["p50_us"] == 1.0
    assert s["p99_us"] == 2000.0
    assert s["p99_99_us"] == 50000.0
    assert s["max_us"] == 50000.0
    assert (s["over_1ms"], s["over_4ms"], s["over_16ms"], s["over_40ms"]) == (10, 2, 1, 1)


def test_the_probe_runs_and_reports_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "stalls.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--n", "2000", "--rounds", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["n"] == 2000 and len(summary["rounds"]) == 2
    for r in summary["rounds"]:
        for side in ("ringq_publish", "queue_put"):
            s = r[side]
            assert s["calls"] == 2000
            assert 0 < s["p50_us"] <= s["p99_us"] <= s["p99_99_us"] <= s["max_us"]
    assert json.loads(done.stdout) == summary


def test_the_probe_refuses_a_size_of_zero() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--n", "0"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--n and --rounds must be at least 1" in done.stderr

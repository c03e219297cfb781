"""``benches/redis_cluster.py`` (the cluster throughput figures of
``docs/backends.md``) runs end to end at a tiny size: its servers start and
stop, every case runs and passes its own checks (each consumer read every
message once, in order, and left the namespace empty), the three cluster
namespaces are on three masters, and the summary has the figures the docs
quote. The figures themselves mean nothing at this size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benches" / "redis_cluster.py"


def test_the_cluster_benchmark_runs_every_case_and_checks_them(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/dev test installs it)")
    out = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--n", "300", "--repeat", "1", "--fsync", "everysec",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    cases = summary["results"]["everysec"]
    assert set(cases) == {"i", "ii", "iii", "iv"}
    for key, case in cases.items():
        assert case["rate"]["median"] > 0, key
        assert case["messages"] == (900 if key in ("ii", "iv") else 300), (key, case["messages"])
    masters = {n["master_port"] for n in summary["namespaces"]["cluster"]}
    assert len(masters) == 3, summary["namespaces"]
    estimate = summary["paper_estimate"]["everysec"]
    assert estimate["per_host_msg_s"] > 0 and "derivation" in estimate

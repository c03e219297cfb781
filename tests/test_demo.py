"""``ringq demo`` (the README's main job) runs end to end at a small size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_loses_nothing_and_leaves_an_inspectable_directory(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "ringq.cli", "demo", "--dir", str(root), "--messages", "3000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing lost" in done.stdout
    assert "handler chain" in done.stdout
    shop = json.loads(
        subprocess.run(
            [sys.executable, "-m", "ringq.cli", "inspect", str(root / "shop"), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert shop["owner_pid"] is None and shop["dead"] >= 1
    assert (shop["ready"], shop["in_flight"]) == (0, 0)

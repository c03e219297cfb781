"""``ringq demo`` (the README's main job) runs end to end at a small size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ringq


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
    from ringq.demo import MARKER, refuse_dir

    assert (root / MARKER).is_file() and refuse_dir(root) is None, "the next run may delete it"


def test_demo_help_shows_the_demos_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ringq.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert all(o in done.stdout for o in ("--dir", "--messages", "--force")), done.stdout
    assert "ringq demo" in done.stdout


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    done = subprocess.run(
        [sys.executable, "-m", "ringq.cli", "demo", "--dir", str(mine), "--messages", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--force" in done.stderr and str(mine) in done.stderr
    assert (mine / "precious.txt").read_text() == "keep me"


def test_which_directories_the_demo_may_delete(tmp_path: Path, monkeypatch: Any) -> None:
    from ringq.demo import MARKER, refuse_dir

    assert refuse_dir(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert refuse_dir(tmp_path / "empty") is None
    other = tmp_path / "other"
    (other / "queue").mkdir(parents=True)
    assert refuse_dir(other) is not None, "queue/ without a MANIFEST is not a demo's"
    assert refuse_dir(other, force=True) is None
    (other / MARKER).write_text("")
    assert refuse_dir(other) is None
    # A demo's directory from before the marker: only the demo's queues.
    old = tmp_path / "old"
    for name in ("queue", "crash", "shop"):
        ringq.Queue(old / name).close()
    assert refuse_dir(old) is None
    (old / "notes.txt").write_text("")
    assert refuse_dir(old) is not None
    (tmp_path / "file").write_text("")
    assert refuse_dir(tmp_path / "file", force=True) is not None
    monkeypatch.chdir(other / "queue")
    assert refuse_dir(other, force=True) is not None, "never a parent of the working directory"
    assert refuse_dir(Path("."), force=True) is not None

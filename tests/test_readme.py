"""The README's Python examples run as written (in a scratch directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_as_written(index: int, tmp_path: Path) -> None:
    # From a file, as a user's script runs (a process-pool handler's child
    # imports the script's functions from it).
    script = tmp_path / "example.py"
    script.write_text(BLOCKS[index])
    env = dict(os.environ)
    if "REDIS_URL" in BLOCKS[index]:
        from redis_servers import redis_url

        url = redis_url()
        if url is None:
            pytest.skip("redis-server is not installed (scripts/dev test installs it)")
        env["REDIS_URL"] = url
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    # The examples follow their own advice: topics named, not taken from __main__.
    assert "TopicWarning" not in done.stderr, done.stderr
    if "shipping" in BLOCKS[index]:
        assert "shipping o-1 attempt 1 caused by" in done.stdout
    if "class Timing" in BLOCKS[index]:
        assert "jobs ok" in done.stdout, done.stdout + done.stderr
    if "rendered in worker processes" in BLOCKS[index]:
        assert "8 rendered in worker processes" in done.stdout, done.stderr

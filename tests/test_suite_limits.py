"""The suite's own safety net: a test that hangs fails instead of holding
CI until its time runs out.

Several tests read a child process's pipe (``readline``) or wait on a
server; a child that hangs silently would block them forever. pytest-timeout
gives every test a limit (``timeout`` in ``pyproject.toml``): the test fails
with its stack, and the run goes on.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A test that blocks the way a hung child would block ours: reading a pipe
# whose writer stays alive and silent.
HANGS = textwrap.dedent(
    """
    import subprocess, sys

    def test_reads_a_silent_child():
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            child.stdout.readline()
        finally:
            child.kill()
            child.wait()

    def test_after_it_still_runs():
        pass
    """
)


def test_every_test_has_a_time_limit(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed"
    assert float(pytestconfig.getini("timeout")) == 300


def test_a_test_blocked_on_a_silent_child_fails_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGS)
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=2",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert time.monotonic() - start < 60
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Timeout" in out.stdout and "readline" in out.stdout, out.stdout
    assert "1 failed, 1 passed" in out.stdout, out.stdout

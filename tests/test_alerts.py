"""``examples/alerts.yml``: Prometheus alert rules on ringq's own series.
``promtool`` (Debian's prometheus package) checks them and runs their unit
tests (``examples/alerts_test.yml``), and every series they name is one
``ringq.metrics`` exports (a renamed series would silently never fire)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import ringq
import ringq.metrics
from prometheus_client import CollectorRegistry, generate_latest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (scripts/dev test installs prometheus)")
    return found


def test_the_alert_rules_check_and_their_unit_tests_pass() -> None:
    promtool = _promtool()
    check = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=EXAMPLES, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_every_series_the_rules_name_is_exported(tmp_path: Path) -> None:
    with ringq.Queue(tmp_path / "q") as q:
        registry = CollectorRegistry()
        ringq.metrics.register(q, registry)
        exported = set(re.findall(r"^(ringq_\w+)", generate_latest(registry).decode(), re.M))
    named = set(re.findall(r"\bringq_\w+", (EXAMPLES / "alerts.yml").read_text()))
    assert named, "the rules name no series"
    assert named <= exported, sorted(named - exported)

"""The benchmark command runs and checks its own results (tiny sizes; the
figures themselves mean nothing here and are not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ringq.bench import SCENARIOS
from ringq.bench_kit import Config


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_bench_scenario_runs_and_verifies_its_results(name: str, tmp_path: Path) -> None:
    cfg = Config(
        quick=True,
        reps=1,
        tmp_base=str(tmp_path),
        n=3000,
        always_n=2000,
        threads_each=50,
        single_n=50,
        reopen_n=3000,
    )
    result = SCENARIOS[name](cfg)
    assert "errors" not in result, result.get("errors")
    assert isinstance(result.get("met"), bool)

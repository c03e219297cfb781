"""What installing ringq brings: the imports a library user pays for."""

from __future__ import annotations

import subprocess
import sys


def test_import_ringq_loads_neither_the_cli_libraries_nor_croniter() -> None:
    # rich and click are dependencies so that `ringq` works after a plain
    # `pip install ringq`; a service that only imports the library does not
    # load them (nor croniter, which only `every("<cron>")` needs).
    code = (
        "import sys, ringq\n"
        "q = ringq.Queue\n"
        "print(','.join(sorted(m for m in ('rich', 'click', 'croniter') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_extension_is_the_stable_abi_one() -> None:
    # One wheel serves CPython 3.11 and later (pyo3's abi3-py311).
    import ringq._core as core

    assert core.__file__ is not None
    assert core.__file__.endswith(".abi3.so"), core.__file__

"""A handler whose topic comes from a class defined in ``__main__`` warns
(``ringq.TopicWarning``): imported as a module, the same class would get
another topic. A named topic (``@ringq.message``, ``topic=``) does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import sys, tempfile
from dataclasses import dataclass
import ringq

@dataclass
class Derived:
    n: int

@ringq.message("named.topic")
@dataclass
class Named:
    n: int

with ringq.Queue(tempfile.mkdtemp()) as q:
    if sys.argv[1] == "derived":
        q.handler(Derived)(lambda m: None)
    elif sys.argv[1] == "named":
        q.handler(Named)(lambda m: None)
    else:
        q.handler(Derived, topic="given")(lambda m: None)
"""


def _stderr(tmp_path: Path, which: str) -> str:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), which], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_topic_from_main_warns_and_a_named_one_does_not(tmp_path: Path) -> None:
    said = _stderr(tmp_path, "derived")
    assert "TopicWarning" in said and "'__main__.Derived'" in said, said
    assert '@ringq.message("orders.placed")' in said
    assert "app.py" in said, "the warning points at the registration"
    assert "TopicWarning" not in _stderr(tmp_path, "named")
    assert "TopicWarning" not in _stderr(tmp_path, "given")

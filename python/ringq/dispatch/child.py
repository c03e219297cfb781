"""The entry point of a process-pool worker: ``python -m ringq.dispatch.child``.

A module of its own, imported by nothing else, so that running it as
``__main__`` never meets a copy already imported with the package (which
``runpy`` warns about); the work is ``ringq.dispatch.processes.child_main``.
"""

from __future__ import annotations

import sys

from ringq.dispatch.processes import child_main

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))

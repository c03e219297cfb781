"""The test suite's own ``redis-server`` processes (the Debian package), on
127.0.0.1 with ``appendonly yes`` and ``appendfsync always``: one per test
process, started on first use and stopped at exit. The server class is the
peer suite's (``benches/peers/redisd.py``)."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches" / "peers"))

from redisd import RedisServer

__all__ = ["RedisServer", "redis_url"]

_lock = threading.Lock()
_server: RedisServer | None = None


def redis_url() -> str | None:
    """``redis://127.0.0.1:<port>/0`` of this process's server, or ``None``
    when redis-server is not installed."""
    global _server
    if shutil.which("redis-server") is None:
        return None
    with _lock:
        if _server is None:
            place = Path(tempfile.mkdtemp(prefix="ringq-redis-"))
            server = RedisServer(place, "always")
            server.start()
            atexit.register(server.stop)
            atexit.register(shutil.rmtree, place, True)
            _server = server
        return f"redis://127.0.0.1:{_server.port}/0"

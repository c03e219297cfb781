"""A real ``redis-server`` (the Debian package) for the Redis Streams peers:
started on 127.0.0.1 with an AOF in a fresh directory, stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "redis-server is not installed: apt-get install redis-server "
            "(benches/peers/run does it)"
        )
    return found


def version() -> str:
    out = subprocess.run([server_binary(), "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


class RedisServer:
    """One ``redis-server`` process; ``kill()`` is SIGKILL, ``start()`` again
    reloads the same AOF (the crash workload does both)."""

    def __init__(self, directory: Path, fsync: str, port: int | None = None) -> None:
        if fsync not in ("everysec", "always"):
            raise ValueError(f"appendfsync must be everysec or always, not {fsync!r}")
        self.dir = directory
        self.fsync = fsync
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def flags(self) -> list[str]:
        """The server's command line after the binary (a subclass adds to it)."""
        return [
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip

    def repick_ports(self) -> None:
        """New free ports, after a port picked by ``free_port`` was taken
        before the server bound it (a subclass with more ports adds them)."""
        self.port = free_port()

    def start(self, timeout: float = 60.0) -> float:
        """Starts the server and waits until it answers PING (after loading
        its AOF); returns the seconds that took. A port that another process
        took between ``free_port`` and the server's bind (an outgoing
        connection can be given it) is picked again, up to three times."""
        self.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for tries_left in (2, 1, 0):
            log_file = self.dir / "redis.log"
            seen = log_file.stat().st_size if log_file.exists() else 0
            self.proc = subprocess.Popen(
                [server_binary(), *self.flags()],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._answered(timeout, seen):
                return time.perf_counter() - t0
            if tries_left == 0:
                raise RuntimeError(f"redis-server found its port taken three times: {self.dir}")
            self.repick_ports()
        raise AssertionError("unreachable")  # pragma: no cover

    def _answered(self, timeout: float, seen: int) -> bool:
        """Waits for ``PING`` to answer (True); False if the server exited
        because its port was in use; raises for any other exit."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                text = (self.dir / "redis.log").read_text(errors="replace")
                fresh = text.encode(errors="replace")[seen:].decode(errors="replace")
                if "Address already in use" in fresh:
                    self.proc = None
                    return False
                log = text[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
            try:
                if self.answers():
                    return True
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer within {timeout} s")
            time.sleep(0.005)

    def answers(self) -> bool:
        """One ``PING`` on a fresh connection: whether it got ``PONG`` (a
        subclass that speaks TLS wraps the socket)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def kill(self) -> None:
        """SIGKILL by pid: nothing gets flushed on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM by pid (redis fsyncs its AOF and exits), then wait."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

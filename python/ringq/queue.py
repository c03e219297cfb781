"""``ringq.Queue``: the queue users open.

It is ``ringq.core.QueueCore`` (the queue API on a backend, with handlers
and the dead-letter view) plus the operator tools: ``q.admin`` and
``q.serve_admin(...)``.
"""

from __future__ import annotations

from typing import Literal

from ringq import schedules
from ringq.admin import Admin
from ringq.core import Message, QueueCore
from ringq.server import AdminServer

__all__ = ["Message", "Queue"]


class Queue(QueueCore):
    """A durable queue stored in one directory.

    By default this process owns the directory (another process opening it
    gets ``ringq.QueueLocked``). With ``shared=True`` processes share it: the
    first to open it owns it and serves the others over a Unix socket in the
    directory; the rest are its clients, with the same API (``q.role`` says
    which; see ``ringq.backends.shared``).

    ``capacity`` bounds the number of live messages; ``durability`` is
    ``"always"`` (publish/ack return after fsync), ``"batch"`` (fsync at least
    every ``fsync_interval`` seconds) or ``"os"``. In every mode a crash of the
    process loses nothing whose call returned. ``lease`` is the default
    checkout lease in seconds. The remaining options are passed to the engine
    unchanged; ``None`` keeps the engine's default. Invalid options raise
    ``ringq.ConfigError``.

    ``options`` (a ``ringq.QueueOptions``, e.g. from ``QueueOptions.from_env()``)
    gives all of these at once, plus per-handler overrides; pass either
    ``options`` or the keywords, not both. ``resolver`` (``ringq.di``) builds
    class handlers per message; by default a fresh ``ringq.di.Container``.
    Handlers: ``handler``, ``register``, ``start``, ``stop``, ``scale``
    (see ``ringq.hosting``).
    """

    _admin: Admin | None = None
    _servers: list[AdminServer] | None = None

    @property
    def admin(self) -> Admin:
        """Administration: stats, scale/pause/resume handlers, snapshot,
        dead letters, drain; every action is logged (``ringq.admin``)."""
        if self._admin is None:
            self._admin = Admin(self)
        return self._admin

    def serve_admin(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        open_metrics: bool = False,
    ) -> AdminServer:
        """Serve ``/metrics``, ``/stats``, ``/dlq`` and admin actions over HTTP
        (see ``ringq.server``); actions need ``token``, and so do reads when a
        token is given (``/metrics`` excepted with ``open_metrics=True``).
        Stopped by ``close()``."""
        server = AdminServer(self, self.admin, host, port, token, open_metrics)
        if self._servers is None:
            self._servers = []
        self._servers.append(server)
        return server

    # -- periodic messages (ringq.schedules) -----------------------------------

    def every(
        self,
        interval_or_cron: object,
        message: object,
        *,
        topic: str | None = None,
        name: str,
        catch_up: Literal["none", "one", "all"] = "one",
        headers: dict[str, str] | None = None,
        tz: str = "UTC",
    ) -> str:
        """Publish ``message`` periodically: every ``interval_or_cron``
        seconds (a number or ``timedelta``) or at each match of a cron
        string (in ``tz``), under the unique ``name``; the schedule is
        durable and each fire time is published exactly once. Calling it
        again with the same name keeps the pending fire time (a changed
        definition applies from it). ``catch_up`` says what a tick handled
        more than a period late publishes (``"none"``, ``"one"``, ``"all"``).
        Run by the queue's handlers (``start``). See ``ringq.schedules``."""
        return schedules.every(
            self,
            interval_or_cron,
            message,
            topic=topic,
            name=name,
            catch_up=catch_up,
            headers=headers,
            tz=tz,
        )

    def unschedule(self, name: str) -> None:
        """Stop the schedule ``name``: nothing is published from its pending
        fire time on (see ``ringq.schedules``)."""
        schedules.unschedule(self, name)

    def close(self) -> None:
        """Stop the admin endpoints and running handlers (without draining),
        snapshot, release the directory lock and stop the engine's threads."""
        for server in self._servers or ():
            server.close()
        self._servers = None
        super().close()

    def __enter__(self) -> Queue:
        return self

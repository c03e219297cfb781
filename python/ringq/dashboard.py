"""The admin endpoint's web page (``GET /`` of ``q.serve_admin``,
``ringq.asgi.admin_app`` and ``ringq dashboard``).

One self-contained HTML page (no framework, nothing fetched from
elsewhere) that holds no data itself: its script reads ``stats`` and
``dlq`` from the endpoint every two seconds, with the token the operator
gives (typed into the page, or in the URL's fragment ``#token=...``, which
browsers never send to a server; kept in the tab's ``sessionStorage``).
It shows the queue's counts, each topic's ready / in flight / delayed /
dead, publish and ack rates over the last five minutes, each handler's
workers, successes, failures and p50 / p99 duration (when ``ringq.metrics``
collects them), and the dead letters with filters and a detail view
(error, traceback, attempts, headers). Replay, purge, pause, resume and
scale are buttons that post to the endpoint's actions, which need the
token.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["page"]


def page() -> bytes:
    """The page's bytes (``dashboard.html`` next to this module)."""
    return (resources.files("ringq") / "dashboard.html").read_bytes()

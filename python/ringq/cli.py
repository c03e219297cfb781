"""The ``ringq`` command.

- ``ringq inspect PATH``: what a queue directory holds (per topic ready / in
  flight / delayed, dead letters, journal and snapshot positions, the owner).
- ``ringq peek PATH --topic T [--limit N]``: the next messages of a topic
  (ready in delivery order, then delayed and in flight), payloads shortened.
- ``ringq dlq list PATH [--limit N]`` / ``ringq dlq show PATH ID``: dead
  letters with their reason and last error.
- ``ringq schedules PATH``: the periodic messages (``q.every``): name,
  timing, topic, catch-up policy, next fire time.
- ``ringq verify PATH``: reads every journal record and the snapshot,
  checking each CRC and decoding each operation as recovery would; exit 0 if
  all is sound, 1 naming the damaged file and byte offset otherwise.
- ``ringq repair PATH``: accepts damage that recovery refuses to open
  silently (a lost MANIFEST, a segment cut short or deleted, fsynced records
  gone) and prints what was lost; the queue then opens.

``ringq serve PATH`` owns a shared queue in the foreground (processes open
it with ``Queue(PATH, shared=True)`` as its clients) until SIGTERM or
SIGINT, then closes it cleanly (exit 0; 3 if another process already owns
PATH).

``ringq snapshot PATH``, ``ringq dlq replay PATH`` and ``ringq dlq purge
PATH`` change the queue, so they open it: on a directory a shared queue's
owner serves they go through its socket; on one another process owns
unshared they refuse (exit 3) and name that process. With ``--admin-url URL``
(and ``--token``, or ``RINGQ_ADMIN_TOKEN``) they ask that process instead,
through its ``q.serve_admin`` endpoint, after checking that the endpoint
serves the queue at PATH.

The read-only ones take no lock and change no byte, so they work
while another process owns the queue (a record that process is writing at
that moment may show as a torn tail). ``--json`` prints machine-readable
output. ``ringq demo`` and ``ringq bench`` run ``python -m ringq.demo`` and
``python -m ringq.bench``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from ringq.backends.local import dead_letters, inspect, peek, repair
from ringq.codecs.identity import DEFAULT_TOPIC
from ringq.dlq import as_dict
from ringq.errors import CorruptionError, QueueLocked, RingqError

__all__ = ["main"]

EXIT_DAMAGED = 1
EXIT_ERROR = 2
EXIT_OWNED = 3


T = TypeVar("T")


def _redis(path: str, namespace: str | None, as_json: bool = False) -> Any:
    """The Redis queue at URL ``path`` (``--namespace``), if ``path`` is one;
    opened as it is (nothing about it changes), or exits 2 saying why."""
    from ringq.backends.redis import RedisBackend, is_redis_url

    if not is_redis_url(path):
        if namespace is not None:
            _fail(ValueError("--namespace applies to redis:// queues only"), as_json, EXIT_ERROR)
        return None
    try:
        return RedisBackend(path, namespace=namespace, _existing=True)
    except (RingqError, ValueError) as e:
        _fail(e, as_json, EXIT_ERROR)


def _namespace_option(f: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--namespace", metavar="NAME", help="the queue's namespace, for a redis:// PATH"
    )(f)


def _redis_inspect(backend: Any, as_json: bool) -> None:
    stats, topics = backend.stats(), backend.topic_stats()
    backend.close()
    if as_json:
        click.echo(json.dumps({"stats": stats, "topics": topics}, indent=2))
        return
    console = Console()
    summary = Table(title=f"ringq queue {stats['redis_url']}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for label, key in (
        ("ready", "ready"),
        ("in flight", "in_flight"),
        ("delayed", "delayed"),
        ("dead letters", "dead"),
        ("dedup keys", "dedup_keys"),
        ("capacity", "capacity"),
        ("server appendfsync", "redis_appendfsync"),
    ):
        v = stats[key]
        summary.add_row(label, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(summary)
    if topics:
        table = Table(title="topics", title_justify="left")
        table.add_column("topic")
        for col in ("ready", "in flight", "delayed", "dead"):
            table.add_column(col, justify="right")
        for name, t in topics.items():
            table.add_row(
                name,
                *(f"{t[k]:,}" for k in ("ready", "in_flight", "delayed", "dead_lettered")),
            )
        console.print(table)


def _read(as_json: bool, call: Callable[..., T], *args: Any) -> T:
    """Runs a read-only call; exits 1 on damage, 2 if the directory cannot be read."""
    try:
        return call(*args)
    except CorruptionError as e:
        _fail(e, as_json, EXIT_DAMAGED)
    except (RingqError, ValueError, OSError) as e:
        _fail(e, as_json, EXIT_ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ringq: a durable, crash-safe message queue inside your Python process."""


@main.command("inspect")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
@_namespace_option
def inspect_cmd(path: str, as_json: bool, namespace: str | None) -> None:
    """Show what the queue PATH holds (read-only): a directory, or a
    redis:// URL with --namespace."""
    backend = _redis(path, namespace, as_json)
    if backend is not None:
        _read(as_json, _redis_inspect, backend, as_json)
        return
    info = _read(as_json, inspect, path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    console = Console()
    owner = f"pid {info['owner_pid']}" if info["owner_pid"] is not None else "nobody (closed)"
    summary = Table(title=f"ringq queue {info['path']}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for label, value in (
        ("owner", owner),
        ("ready", f"{info['ready']:,}"),
        ("in flight", f"{info['in_flight']:,}"),
        ("delayed", f"{info['delayed']:,}"),
        ("dead letters", f"{info['dead']:,}"),
        ("dedup keys", f"{info['dedup_keys']:,}"),
        ("last LSN", f"{info['last_lsn']:,}"),
        ("snapshot LSN", f"{info['snapshot_lsn']:,}"),
        ("records after snapshot", f"{info['records_replayed']:,}"),
        ("journal segments", str(len(info["segments"]))),
        ("torn tail", f"{info['torn_tail_bytes']:,} bytes"),
        ("open epoch", str(info["epoch"])),
    ):
        summary.add_row(label, value)
    console.print(summary)
    if info["topics"]:
        topics = Table(title="topics", title_justify="left")
        topics.add_column("topic")
        for col in ("ready", "in flight", "delayed"):
            topics.add_column(col, justify="right")
        for t in info["topics"]:
            topics.add_row(t["name"], f"{t['ready']:,}", f"{t['in_flight']:,}", f"{t['delayed']:,}")
        console.print(topics)


@main.command("verify")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def verify_cmd(path: str, as_json: bool) -> None:
    """Check every record's CRC and the snapshot of PATH (read-only).

    Exit status: 0 sound, 1 damaged (file and offset printed), 2 not readable.
    """
    info = _read(as_json, inspect, path)
    result = {
        "ok": True,
        "path": info["path"],
        "segments": len(info["segments"]),
        "records": info["records_replayed"],
        "last_lsn": info["last_lsn"],
        "snapshot_lsn": info["snapshot_lsn"],
        "torn_tail_bytes": info["torn_tail_bytes"],
        "torn_tail_at": info["torn_tail_at"],
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    msg = (
        f"ok: {info['path']}: snapshot at LSN {info['snapshot_lsn']:,}, "
        f"{info['records_replayed']:,} records in {len(info['segments'])} segment(s) "
        f"up to LSN {info['last_lsn']:,}, every CRC matches"
    )
    if info["torn_tail_bytes"]:
        where = info["torn_tail_at"]
        msg += (
            f"; a torn tail of {info['torn_tail_bytes']} bytes at {where[0]} offset {where[1]} "
            "(an interrupted last write: dropped on the next open, nothing confirmed is lost)"
        )
    click.echo(msg)


@main.command("repair")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def repair_cmd(path: str, as_json: bool) -> None:
    """Accept damage that recovery refuses to open silently, and say what it was.

    A lost MANIFEST is rebuilt (with a new identity), a journal segment cut
    short is extended with zeros, a deleted newest segment or lost fsynced
    records are written off. Nothing is invented; damage in the middle of the
    journal is not repaired. Exit status: 0 repaired (or nothing to do), 1
    damage it cannot repair, 2 not a queue, 3 owned by a running process.
    """
    try:
        result = repair(path)
    except QueueLocked as e:
        click.echo(f"refused: {path} is owned by a running process (pid {e.pid})", err=True)
        sys.exit(EXIT_OWNED)
    except CorruptionError as e:
        _fail(e, as_json, EXIT_DAMAGED)
    except (RingqError, ValueError, OSError) as e:
        _fail(e, as_json, EXIT_ERROR)
    if as_json:
        click.echo(json.dumps({"ok": True, **result}, indent=2))
        return
    for change in result["changes"]:
        click.echo(f"repaired: {change}")
    if not result["changes"]:
        click.echo(f"nothing to repair: {path} reads cleanly up to LSN {result['last_lsn']:,}")


def _fail(e: Exception, as_json: bool, code: int) -> NoReturn:
    if as_json:
        out: dict[str, Any] = {"ok": False, "error": type(e).__name__, "message": str(e)}
        if isinstance(e, CorruptionError):
            out |= {"file": e.path, "offset": e.offset}
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"{type(e).__name__}: {e}", err=True)
    sys.exit(code)


def _short(payload: bytes, width: int = 60) -> str:
    text = payload.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command("peek")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--topic", default=DEFAULT_TOPIC, show_default=True, help="the topic to look at")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="print JSON (payloads as UTF-8 text)")
def peek_cmd(path: str, topic: str, limit: int, as_json: bool) -> None:
    """Show the next messages of a topic (read-only)."""
    msgs = _read(as_json, peek, path, topic, limit)
    if as_json:
        for m in msgs:
            m["payload"] = m["payload"].decode("utf-8", errors="backslashreplace")
        click.echo(json.dumps(msgs, indent=2))
        return
    table = Table(title=f"{topic}: {len(msgs)} message(s)", title_justify="left")
    for col in ("id", "state", "attempt", "version", "dedup key", "payload"):
        table.add_column(col)
    for m in msgs:
        table.add_row(
            m["id"],
            m["state"],
            str(m["attempt"]),
            str(m["version"]),
            m["dedup_key"] or "",
            _short(m["payload"]),
        )
    Console().print(table)


@main.command("schedules")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_namespace_option
def schedules_cmd(path: str, as_json: bool, namespace: str | None) -> None:
    """List the periodic messages of PATH (``q.every``), read-only: name,
    timing, topic, catch-up policy and next fire time (UTC)."""
    from datetime import UTC, datetime

    from ringq.schedules import SCHEDULE_TOPIC, describe

    backend = _redis(path, namespace, as_json)
    if backend is not None:
        backend.close()
        _fail(
            NotImplementedError(
                "listing schedules needs to read delayed messages, which a Redis queue "
                "cannot do yet (no Backend call lists them)"
            ),
            as_json,
            EXIT_ERROR,
        )
    msgs = _read(as_json, peek, path, SCHEDULE_TOPIC, 1 << 40)
    rows = []
    for m in msgs:
        try:
            rows.append(describe(m["id"], m["state"], m["payload"]))
        except ValueError:  # msgspec.DecodeError: not a tick
            continue
    rows.sort(key=lambda r: r.name)
    if as_json:
        click.echo(json.dumps([_asdict(r) for r in rows], indent=2))
        return

    def when(t: float | None) -> str:
        return "" if t is None else datetime.fromtimestamp(t, UTC).isoformat()

    table = Table(title=f"{len(rows)} schedule(s)", title_justify="left")
    for col in ("name", "timing", "topic", "catch up", "next fire (UTC)", "state"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.spec, r.topic, r.catch_up, when(r.next_fire), r.state)
    Console().print(table)


def _asdict(row: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(row)


@main.group("dlq")
def dlq_group() -> None:
    """Dead letters (read-only: list and show)."""


@dlq_group.command("list")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_namespace_option
def dlq_list_cmd(path: str, limit: int, as_json: bool, namespace: str | None) -> None:
    """List dead letters, oldest first."""
    backend = _redis(path, namespace, as_json)
    if backend is not None:
        dead = _read(as_json, lambda: backend.dlq_list(limit=limit))
        backend.close()
    else:
        dead = _read(as_json, dead_letters, path, limit)
    if as_json:
        click.echo(json.dumps([as_dict(d) for d in dead], indent=2))
        return
    table = Table(title=f"{len(dead)} dead letter(s)", title_justify="left")
    for col in ("id", "topic", "reason", "attempts", "handler", "error"):
        table.add_column(col)
    for d in dead:
        error = ": ".join(x for x in (d.error_type, d.error_message) if x)
        table.add_row(
            d.id, d.topic, d.reason, str(d.attempts), d.handler or "", _short(error.encode())
        )
    Console().print(table)


@dlq_group.command("show")
@click.argument("path", type=click.Path(file_okay=False))
@click.argument("message_id")
@_namespace_option
def dlq_show_cmd(path: str, message_id: str, namespace: str | None) -> None:
    """Show one dead letter in full (JSON), traceback included."""
    backend = _redis(path, namespace)
    if backend is not None:
        dead = _read(False, backend.dlq_list)
        backend.close()
    else:
        dead = _read(False, dead_letters, path)
    for d in dead:
        if d.id == message_id:
            click.echo(json.dumps(as_dict(d), indent=2))
            return
    click.echo(f"no dead letter with id {message_id}", err=True)
    sys.exit(EXIT_ERROR)


def _open_for_change(path: str, namespace: str | None = None) -> Any:
    """Opens the queue to change it; refuses (exit 3) if another process owns it.
    A redis:// queue (``namespace``) is changed in place, as it is."""
    from ringq.dlq import DeadLetterQueue
    from ringq.queue import Queue

    backend = _redis(path, namespace)
    if backend is not None:

        class _OnRedis:
            dlq = DeadLetterQueue(backend)
            snapshot = backend.snapshot
            close = backend.close

        return _OnRedis()

    if not (Path(path) / "MANIFEST").is_file():
        # Opening would create a new, empty queue there.
        _fail(ValueError(f"{path} is not a ringq queue directory (no MANIFEST)"), False, EXIT_ERROR)
    try:
        if (Path(path) / "SOCKET").is_file():
            # A shared queue's owner serves it: be its client.
            return Queue(path, shared=True)
        return Queue(path)
    except QueueLocked as e:
        click.echo(
            f"refused: {path} is owned by a running process (pid {e.pid}); "
            "stop it, or go through its admin endpoint with --admin-url",
            err=True,
        )
        sys.exit(EXIT_OWNED)
    except CorruptionError as e:
        _fail(e, False, EXIT_DAMAGED)
    except (RingqError, ValueError, OSError) as e:
        _fail(e, False, EXIT_ERROR)


def _admin_call(url: str, token: str | None, path: str, body: dict[str, Any] | None) -> Any:
    """One request to a ``q.serve_admin`` endpoint; exits 2 with the reason on failure."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url.rstrip("/") + path, data=data, method="GET" if data is None else "POST"
    )
    if data is not None:
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error", "")
        except ValueError:
            reason = ""
        hint = " (give --token or set RINGQ_ADMIN_TOKEN)" if e.code in (401, 403) else ""
        _fail(RuntimeError(f"{url}{path} answered {e.code}: {reason}{hint}"), False, EXIT_ERROR)
    except (urllib.error.URLError, OSError, ValueError) as e:
        _fail(RuntimeError(f"cannot reach the admin endpoint {url}: {e}"), False, EXIT_ERROR)


def _remote(
    admin_url: str, token: str | None, queue_path: str, action: str, body: dict[str, Any]
) -> Any:
    """Runs ``action`` through the endpoint, once it proved to serve ``queue_path``."""
    served = _admin_call(admin_url, None, "/stats", None).get("path")
    if served is None or os.path.realpath(served) != os.path.realpath(queue_path):
        _fail(
            ValueError(f"{admin_url} serves the queue at {served}, not {queue_path}"),
            False,
            EXIT_ERROR,
        )
    return _admin_call(admin_url, token, action, body)


def _remote_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option(
        "--token",
        envvar="RINGQ_ADMIN_TOKEN",
        help="the endpoint's admin token (default: $RINGQ_ADMIN_TOKEN)",
    )(f)
    return click.option(
        "--admin-url",
        metavar="URL",
        help="ask the process that owns PATH, through its q.serve_admin endpoint",
    )(f)


@main.command("snapshot")
@click.argument("path", type=click.Path(file_okay=False))
@_remote_options
def snapshot_cmd(path: str, admin_url: str | None, token: str | None) -> None:
    """Write a snapshot of PATH now (compacting its journal)."""
    if admin_url:
        lsn = _remote(admin_url, token, path, "/snapshot", {})["lsn"]
    else:
        q = _open_for_change(path)
        try:
            lsn = q.snapshot()
        finally:
            q.close()
    click.echo(f"snapshot of {path} at LSN {lsn:,}")


@dlq_group.command("replay")
@click.argument("path", type=click.Path(file_okay=False))
@click.argument("ids", nargs=-1)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="messages per second")
@_remote_options
@_namespace_option
def dlq_replay_cmd(
    path: str,
    ids: tuple[str, ...],
    rate: float | None,
    admin_url: str | None,
    token: str | None,
    namespace: str | None,
) -> None:
    """Publish dead letters again (all, or the IDS given); attempts reset."""
    if admin_url:
        body = {"ids": list(ids) or None, "rate": rate}
        n = _remote(admin_url, token, path, "/dlq/replay", body)["replayed"]
    else:
        q = _open_for_change(path, namespace)
        try:
            n = q.dlq.replay(ids or None, rate=rate)
        finally:
            q.close()
    click.echo(f"replayed {n} dead letter(s)")


@dlq_group.command("purge")
@click.argument("path", type=click.Path(file_okay=False))
@click.argument("ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="purge every dead letter")
@_remote_options
@_namespace_option
def dlq_purge_cmd(
    path: str,
    ids: tuple[str, ...],
    purge_all: bool,
    admin_url: str | None,
    token: str | None,
    namespace: str | None,
) -> None:
    """Delete dead letters for good: the IDS given, or --all."""
    if not ids and not purge_all:
        click.echo("give dead-letter ids, or --all", err=True)
        sys.exit(EXIT_ERROR)
    if admin_url:
        body = {"ids": list(ids)} if ids else {"all": True}
        n = _remote(admin_url, token, path, "/dlq/purge", body)["purged"]
    else:
        q = _open_for_change(path, namespace)
        try:
            n = q.dlq.purge(ids or None)
        finally:
            q.close()
    click.echo(f"purged {n} dead letter(s)")


@main.command("serve")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--capacity", type=click.IntRange(min=1), help="most live messages (default 100,000)")
@click.option(
    "--durability",
    type=click.Choice(["always", "batch", "os"]),
    default="batch",
    show_default=True,
    help="when publishes reach the disk",
)
@click.option("--max-attempts", type=click.IntRange(min=1), help="deliveries before dead letter")
@click.option(
    "--stats-every",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="seconds between stats lines in the log (0: none)",
)
def serve_cmd(
    path: str,
    capacity: int | None,
    durability: str,
    max_attempts: int | None,
    stats_every: float,
) -> None:
    """Own the shared queue at PATH and serve its clients until SIGTERM/SIGINT.

    Processes open it with ``ringq.Queue(PATH, shared=True)``; with this
    command running they are all clients (for example the workers of
    ``uvicorn --workers 4``). Logs go to stderr.
    """
    from ringq.serve import serve

    options: dict[str, Any] = {"durability": durability}
    if capacity is not None:
        options["capacity"] = capacity
    if max_attempts is not None:
        options["max_attempts"] = max_attempts
    sys.exit(serve(path, options, stats_every))


@main.command("demo", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo_cmd(args: tuple[str, ...]) -> None:
    """Run the demo workload (``python -m ringq.demo``)."""
    from ringq import demo

    sys.exit(demo.main(list(args)))


@main.command("bench", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_cmd(args: tuple[str, ...]) -> None:
    """Run the benchmarks against queue.Queue (``python -m ringq.bench``)."""
    from ringq import bench

    sys.exit(bench.main(list(args)))


if __name__ == "__main__":  # pragma: no cover
    main()

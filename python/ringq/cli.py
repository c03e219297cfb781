"""The ``ringq`` command.

- ``ringq inspect PATH``: what a queue directory holds (per topic ready / in
  flight / delayed, dead letters, journal and snapshot positions, the owner).
- ``ringq peek PATH --topic T [--limit N]``: the next messages of a topic
  (ready in delivery order, then delayed and in flight), payloads shortened.
  A topic with no messages that the queue does not know exits 1, listing the
  known topics (with counts) and the closest names.
- ``ringq dlq list PATH [--limit N]`` / ``ringq dlq show PATH ID``: dead
  letters with their reason and last error. ``list`` says when ``--limit``
  cut the list ("showing 50 of 204"; with ``--json`` the list stays the
  output and the note goes to stderr).
- ``ringq schedules PATH``: the periodic messages (``q.every``): name,
  timing, topic, catch-up policy, next fire time.
- ``ringq verify PATH``: reads every journal record and the snapshot,
  checking each CRC and decoding each operation as recovery would; exit 0 if
  all is sound, 1 naming the damaged file and byte offset otherwise.
- ``ringq repair PATH``: accepts damage that recovery refuses to open
  silently (a lost MANIFEST, a segment cut short or deleted, fsynced records
  gone) and prints what was lost; the queue then opens.

A PATH that does not exist, or a directory that is no queue, exits 2 saying
which; for a directory that holds queues (subdirectories with a MANIFEST,
such as the demo's) the message lists them. Wherever a dead letter's id is
taken (``dlq show``, ``replay``, ``purge``) a unique prefix of it will do;
an unknown or ambiguous one exits 2 listing the candidates. Tables never cut
ids (16 hex digits): the other columns wrap.

``ringq serve PATH`` owns a shared queue in the foreground (processes open
it with ``Queue(PATH, shared=True)`` as its clients) until SIGTERM or
SIGINT, then closes it cleanly (exit 0; 3 if another process already owns
PATH). Every queue option but ``shared`` (always on) is a flag
(``--segment-size``, ``--no-recycle-segments``, ...: the rows of
``ringq.config.QUEUE_OPTIONS``); one not given keeps the queue's default.

``ringq snapshot PATH``, ``ringq dlq replay PATH`` and ``ringq dlq purge
PATH`` change the queue, so they open it: on a directory a shared queue's
owner serves they go through its socket; on one another process owns
unshared they refuse (exit 3) and name that process. With ``--admin-url URL``
(and ``--token``, or ``RINGQ_ADMIN_TOKEN``) they ask that process instead,
through its ``q.serve_admin`` endpoint, after checking that the endpoint
serves the queue at PATH (same instance id, read from PATH's MANIFEST; the
resolved paths if PATH cannot be read here). ``replay`` and ``purge`` list
what they are about to change and ask first; ``--yes`` skips the question
(without a terminal to ask on they refuse, exit 2, unless given ``--yes``),
``--dry-run`` only lists and changes nothing.

The read-only ones take no lock and change no byte, so they work
while another process owns the queue (a record that process is writing at
that moment may show as a torn tail). ``--json`` prints machine-readable
output. ``ringq demo`` and ``ringq bench`` run ``python -m ringq.demo`` and
``python -m ringq.bench`` (their ``--help`` is the module's).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
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
EXIT_UNKNOWN_TOPIC = 1
PROMPT_ROWS = 20  # dead letters listed before asking


T = TypeVar("T")


def _version() -> str:
    """The package's version and the on-disk formats it writes."""
    from ringq.backends.local import ENGINE_VERSION, FORMAT_VERSION

    return f"{ENGINE_VERSION} (journal format {FORMAT_VERSION})"


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
        for col in ("ready", "in flight", "delayed", "dead letters"):
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
@click.version_option(version=_version(), prog_name="ringq", message="%(prog)s %(version)s")
def main() -> None:
    """ringq: a durable, crash-safe message queue inside your Python process.

    PATH is a queue directory (some commands also take a redis:// URL with
    --namespace). The read-only commands (inspect, verify, peek, schedules,
    dlq list, dlq show) take no lock and work while another process owns the
    queue (on a Redis URL, inspect first settles the due delays and ended
    leases, as every client's call does). Exit status: 0 done, 1 damaged
    (or, for peek, an unknown topic), 2 a usage or path error, 3 owned by
    another process.
    """


@main.command("inspect")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
@_namespace_option
def inspect_cmd(path: str, as_json: bool, namespace: str | None) -> None:
    """Show what a queue holds (read-only).

    PATH is a queue directory, or a redis:// URL with --namespace: messages
    per state and topic, dead letters, journal and snapshot positions, and
    the owning process.
    """
    backend = _redis(path, namespace, as_json)
    if backend is not None:
        _read(as_json, _redis_inspect, backend, as_json)
        return
    _queue_dir(path, as_json)
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
    """Check every record's CRC and the snapshot (read-only).

    Reads every journal record and the snapshot of PATH as recovery would.
    Exit status: 0 sound, 1 damaged (file and offset printed), 2 not readable.
    """
    _queue_dir(path, as_json)
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
    """Accept damage recovery refuses, and say what was lost.

    For damage recovery refuses to open silently: a lost MANIFEST is rebuilt
    (with a new identity), a journal segment cut short is extended with
    zeros, a deleted newest segment or lost fsynced records are written off.
    Nothing is invented; damage in the middle of the journal is not
    repaired. Exit status: 0 repaired (or nothing to do), 1 damage it cannot
    repair, 2 not a queue, 3 owned by a running process.
    """
    _queue_dir(path, as_json)
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


class CliError(ValueError):
    """A mistake in what the command was given (a path, an id, a topic):
    printed as ``error: ...``; with ``--json``, ``error`` is ``kind`` and
    ``extra`` is added (the candidates, the known topics, ...)."""

    def __init__(self, message: str, kind: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.extra = extra


def _fail(e: Exception, as_json: bool, code: int) -> NoReturn:
    if as_json:
        kind = e.kind if isinstance(e, CliError) else type(e).__name__
        out: dict[str, Any] = {"ok": False, "error": kind, "message": str(e)}
        if isinstance(e, CorruptionError):
            out |= {"file": e.path, "offset": e.offset}
        if isinstance(e, CliError):
            out |= e.extra
        click.echo(json.dumps(out, indent=2))
    elif isinstance(e, CliError):
        click.echo(f"error: {e}", err=True)
    else:
        click.echo(f"{type(e).__name__}: {e}", err=True)
    sys.exit(code)


_QUEUE_FILES = ("MANIFEST", "DURABLE", "*.log", "*.snap")


def _queue_dir(path: str, as_json: bool = False) -> None:
    """Exits 2 unless ``path`` is a directory holding a queue (or what is left
    of one, for recovery to judge), saying which: no such directory, or not a
    queue; for a directory with queues inside (the demo's), their paths."""
    where = Path(path)
    if not where.exists():
        _fail(CliError(f"no such directory: {path}", "NoSuchDirectory"), as_json, EXIT_ERROR)
    try:
        if any(next(where.glob(pattern), None) for pattern in _QUEUE_FILES):
            return
        inside = sorted(str(sub) for sub in where.iterdir() if (sub / "MANIFEST").is_file())
    except OSError as e:
        _fail(e, as_json, EXIT_ERROR)
    msg = f"{path} is not a ringq queue directory (no MANIFEST)"
    if inside:
        msg += f"; it holds {len(inside)} queue(s): {', '.join(inside)}: give one of those"
    _fail(CliError(msg, "NotAQueue", queues=inside), as_json, EXIT_ERROR)


def _some(ids: Sequence[str], most: int = 10) -> str:
    """``a, b, c`` (the first ``most``, then how many more)."""
    shown = ", ".join(ids[:most])
    return shown if len(ids) <= most else f"{shown}, ... ({len(ids) - most:,} more)"


def _resolve_ids(given: Sequence[str], known: Sequence[str], as_json: bool = False) -> list[str]:
    """The dead-letter ids ``given`` (each one an id or a unique prefix of one
    of ``known``), in order, without repeats; exits 2 on an unknown or
    ambiguous one, listing the candidates."""
    out: list[str] = []
    for g in given:
        prefix = g.strip().lower()
        matches = [k for k in known if k == prefix] or [k for k in known if k.startswith(prefix)]
        if prefix and len(matches) == 1:
            if matches[0] not in out:
                out.append(matches[0])
            continue
        if prefix and matches:
            msg = f"{g!r} is ambiguous: {len(matches)} dead letters start with it: {_some(matches)}"
            _fail(CliError(msg, "AmbiguousId", candidates=matches), as_json, EXIT_ERROR)
        msg = f"no dead letter with id {g}"
        msg += f"; the dead letters: {_some(known)}" if known else "; there are no dead letters"
        _fail(CliError(msg, "UnknownId", candidates=list(known[:100])), as_json, EXIT_ERROR)
    return out


def _short(payload: bytes, width: int = 60) -> str:
    text = payload.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command("peek")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--topic", default=DEFAULT_TOPIC, show_default=True, help="the topic to look at")
@click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(min=1), help="most messages shown"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON (payloads as UTF-8 text)")
@_namespace_option
def peek_cmd(path: str, topic: str, limit: int, as_json: bool, namespace: str | None) -> None:
    """Show the next messages of a topic (read-only).

    Ready messages in delivery order, then delayed and in flight. A topic
    with no messages that the queue does not know exits 1, listing the known
    topics and the closest names (a typed handler's topic is module.QualName).
    """
    backend = _redis(path, namespace, as_json)
    if backend is not None:
        try:
            msgs = _read(as_json, backend.peek, topic, limit)
            if not msgs:
                counts = {
                    t: [c["ready"] + c["in_flight"] + c["delayed"], c["dead_lettered"]]
                    for t, c in backend.topic_stats().items()
                }
                _unknown_in(path, topic, counts, as_json)
        finally:
            backend.close()
    else:
        _queue_dir(path, as_json)
        msgs = _read(as_json, peek, path, topic, limit)
        if not msgs:
            _unknown_topic(path, topic, as_json)
    if as_json:
        for m in msgs:
            m["payload"] = m["payload"].decode("utf-8", errors="backslashreplace")
        click.echo(json.dumps(msgs, indent=2))
        return
    table = Table(title=f"{topic}: {len(msgs)} message(s)", title_justify="left")
    table.add_column("id", no_wrap=True, min_width=16)
    # "deliveries": how many times it was handed out so far (0 for a new
    # message; a handler's ctx.attempt is this + 1 on the next delivery).
    # Priority and ordering key only when some message has one (80 columns).
    extra = any(m.get("priority") or m.get("ordering_key") for m in msgs)
    cols = ("state", "deliveries", "version", "dedup key")
    for col in cols + (("priority", "ordering key") if extra else ()) + ("payload",):
        table.add_column(col)
    for m in msgs:
        row = [m["id"], m["state"], str(m["attempt"]), str(m["version"]), m["dedup_key"] or ""]
        if extra:
            row += [str(m.get("priority") or 0), m.get("ordering_key") or ""]
        table.add_row(*row, _short(m["payload"]))
    Console().print(table)


def _unknown_topic(path: str, topic: str, as_json: bool) -> None:
    """Exits 1 if no message of the queue (live or dead) is on ``topic``,
    listing its topics with their counts and the closest names."""
    info = _read(as_json, inspect, path)
    counts: dict[str, list[int]] = {}
    for t in info["topics"]:
        counts.setdefault(t["name"], [0, 0])[0] += t["ready"] + t["in_flight"] + t["delayed"]
    for d in _read(as_json, dead_letters, path):
        counts.setdefault(d.topic, [0, 0])[1] += 1
    _unknown_in(path, topic, counts, as_json)


def _unknown_in(path: str, topic: str, counts: dict[str, list[int]], as_json: bool) -> None:
    """Exits 1 unless ``topic`` is among ``counts`` (topic -> [live, dead]),
    naming the topics and the closest."""
    if topic in counts:
        return
    names = sorted(counts)
    closest = _closest(topic, names)
    msg = f"no topic {topic!r} in {path}: no message, live or dead, is on it"
    if names:
        msg += "\n  its topics: " + ", ".join(
            f"{n} ({live:,} messages" + (f", {dead:,} dead letters)" if dead else ")")
            for n, (live, dead) in sorted(counts.items())
        )
    else:
        msg += " (it holds no messages)"
    if closest:
        msg += f"\n  did you mean {' or '.join(repr(c) for c in closest)}?"
    topics = {n: {"messages": live, "dead_letters": dead} for n, (live, dead) in counts.items()}
    _fail(
        CliError(msg, "UnknownTopic", topics=topics, closest=closest), as_json, EXIT_UNKNOWN_TOPIC
    )


def _closest(topic: str, names: Sequence[str]) -> list[str]:
    """The names closest to ``topic`` (difflib), first those whose last dotted
    part is close to ``topic``'s: ``OrderPlaced`` finds ``shop.OrderPlaced``."""
    tails: dict[str, list[str]] = {}
    for n in names:
        tails.setdefault(n.rsplit(".", 1)[-1].lower(), []).append(n)
    out: list[str] = []
    for tail in difflib.get_close_matches(topic.rsplit(".", 1)[-1].lower(), list(tails), 3, 0.6):
        out += tails[tail]
    out += [n for n in difflib.get_close_matches(topic, names, 3, 0.6) if n not in out]
    return out[:3]


@main.command("schedules")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_namespace_option
def schedules_cmd(path: str, as_json: bool, namespace: str | None) -> None:
    """List the periodic messages (q.every), read-only.

    For each: name, timing, topic, catch-up policy and next fire time (UTC).
    """
    from datetime import UTC, datetime

    from ringq.schedules import SCHEDULE_TOPIC, describe

    backend = _redis(path, namespace, as_json)
    if backend is not None:
        try:
            msgs = _read(as_json, backend.peek, SCHEDULE_TOPIC, 1 << 40)
        finally:
            backend.close()
    else:
        _queue_dir(path, as_json)
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
    """Dead letters: list, show, replay, purge.

    list and show are read-only; replay and purge change the queue (they
    list what they would change and ask first: --dry-run, --yes). Wherever
    an ID is taken, a unique prefix of it will do.
    """


def _dead_table(dead: Sequence[dict[str, Any]], title: str) -> Table:
    """Dead letters (as ``as_dict`` gives them) as a table; ids never cut."""
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True, min_width=16)
    for col in ("topic", "reason"):
        table.add_column(col, overflow="fold")
    table.add_column("attempts", justify="right")
    table.add_column("handler", overflow="fold")
    table.add_column("error")
    for d in dead:
        error = ": ".join(str(x) for x in (d["error_type"], d["error_message"]) if x)
        table.add_row(
            str(d["id"]),
            str(d["topic"]),
            str(d["reason"]),
            str(d["attempts"]),
            str(d["handler"] or ""),
            _short(error.encode()),
        )
    return table


def _dead_letters(path: str, namespace: str | None, as_json: bool = False) -> list[Any]:
    """Every dead letter of the queue at ``path``, oldest first, read-only."""
    backend = _redis(path, namespace, as_json)
    if backend is not None:
        try:
            return _read(as_json, backend.dlq_list)
        finally:
            backend.close()
    _queue_dir(path, as_json)
    return _read(as_json, dead_letters, path)


@dlq_group.command("list")
@click.argument("path", type=click.Path(file_okay=False))
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="most dead letters shown",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_namespace_option
def dlq_list_cmd(path: str, limit: int, as_json: bool, namespace: str | None) -> None:
    """List dead letters, oldest first (read-only).

    At most --limit of them; when there are more, the table's title says
    "showing N of TOTAL" (with --json the output stays the list, and the
    note goes to stderr).
    """
    every = _dead_letters(path, namespace, as_json)
    dead = [as_dict(d) for d in every[:limit]]
    cut = len(every) > len(dead)
    note = f"showing {len(dead):,} of {len(every):,} dead letters (--limit {limit})"
    if as_json:
        click.echo(json.dumps(dead, indent=2))
        if cut:
            click.echo(f"{note}: the oldest first", err=True)
        return
    Console().print(_dead_table(dead, note if cut else f"{len(dead):,} dead letter(s)"))


@dlq_group.command("show")
@click.argument("path", type=click.Path(file_okay=False))
@click.argument("message_id")
@_namespace_option
def dlq_show_cmd(path: str, message_id: str, namespace: str | None) -> None:
    """Show one dead letter in full, as JSON (read-only).

    MESSAGE_ID is its id, or a unique prefix of it. The traceback and the
    payload (as UTF-8 text) are included.
    """
    dead = _dead_letters(path, namespace)
    [found] = _resolve_ids([message_id], [d.id for d in dead])
    for d in dead:
        if d.id == found:
            click.echo(json.dumps(as_dict(d), indent=2))


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

    # Opening would create a new, empty queue where there is none.
    _queue_dir(path)
    if not (Path(path) / "MANIFEST").is_file():
        msg = f"{path} has no MANIFEST (see ringq verify and ringq repair)"
        _fail(CliError(msg, "NoManifest"), False, EXIT_ERROR)
    from ringq.serve import keeping_dead_letters

    options = keeping_dead_letters(path)
    try:
        if (Path(path) / "SOCKET").is_file():
            # A shared queue's owner serves it: be its client.
            return Queue(path, shared=True, **options)
        return Queue(path, **options)
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


@main.command("dashboard")
@click.argument("path")
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", default=8765, show_default=True, type=int, help="the port (0: any free)")
@click.option(
    "--token",
    envvar="RINGQ_ADMIN_TOKEN",
    help="needed for reads and actions (default: RINGQ_ADMIN_TOKEN; none: reads open, no actions)",
)
@_namespace_option
def dashboard_cmd(
    path: str, host: str, port: int, token: str | None, namespace: str | None
) -> None:
    """Serve a queue's web page until Ctrl-C.

    For a closed queue (opened here), a shared queue (joined as a client;
    its owner keeps running) or a redis:// queue (--namespace). A queue a
    running process owns is refused: that process can serve the same page,
    q.serve_admin(...) and open its address. Open the printed address; with a
    token, add #token=... to it (the fragment never leaves the browser).
    """
    from ringq.queue import Queue

    backend = _redis(path, namespace)
    if backend is not None:
        # The namespace as it is: opening a Queue with options would store
        # them in it (the last opener's options win).
        class _AsItIs(Queue):
            def _open_backend(self, path: Any, settings: dict[str, object]) -> Any:
                return backend

        q: Any = _AsItIs(path, namespace=namespace)
    else:
        q = _open_for_change(path, namespace)
    try:
        server = q.serve_admin(host, port, token)
        hint = "#token=<the token>" if token else ""
        click.echo(f"ringq dashboard of {path}: {server.url}/{hint} (Ctrl-C stops it)")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        q.close()


def _admin_call(
    url: str, token: str | None, path: str, body: dict[str, Any] | None, timeout: float = 60.0
) -> Any:
    """One request to a ``q.serve_admin`` endpoint; exits 2 with the reason on failure."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url.rstrip("/") + path, data=data, method="GET" if data is None else "POST"
    )
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:  # reads need it too where the endpoint has a token
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
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


def _check_endpoint(admin_url: str, token: str | None, queue_path: str) -> None:
    """Exits 2 unless the endpoint serves the queue at ``queue_path``: the
    same instance id (read-only from the directory's MANIFEST) or, if the
    directory cannot be read here, the same resolved path (a relative path
    the owner was given is relative to the owner's working directory, so
    this fallback needs the owner to have been given an absolute one)."""
    stats = _admin_call(admin_url, token, "/stats", None)
    served = stats.get("path")
    served_id = (stats.get("queue") or {}).get("instance_id")
    try:
        local_id = inspect(queue_path)["instance_id"]
    except (RingqError, ValueError, OSError):
        local_id = None
    if served_id and local_id:
        same = served_id == local_id
        ids = f" (instance id {served_id}, not {local_id})"
    else:
        same = served is not None and os.path.realpath(served) == os.path.realpath(queue_path)
        ids = " (no queue to compare at that path here)" if local_id is None else ""
    if not same:
        _fail(
            ValueError(f"{admin_url} serves the queue at {served}, not {queue_path}{ids}"),
            False,
            EXIT_ERROR,
        )


def _remote(
    admin_url: str, token: str | None, queue_path: str, action: str, body: dict[str, Any]
) -> Any:
    """Runs ``action`` through the endpoint, once it proved to serve ``queue_path``."""
    _check_endpoint(admin_url, token, queue_path)
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


def _confirm_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")(f)
    return click.option(
        "--dry-run", is_flag=True, help="list what would change, and change nothing"
    )(f)


@main.command("snapshot")
@click.argument("path", type=click.Path(file_okay=False))
@_remote_options
def snapshot_cmd(path: str, admin_url: str | None, token: str | None) -> None:
    """Write a snapshot of PATH now (compacts the journal)."""
    if admin_url:
        lsn = _remote(admin_url, token, path, "/snapshot", {})["lsn"]
    else:
        q = _open_for_change(path)
        try:
            lsn = q.snapshot()
        finally:
            q.close()
    click.echo(f"snapshot of {path} at LSN {lsn:,}")


def _dlq_change(
    verb: str,
    path: str,
    ids: tuple[str, ...],
    act: Callable[[Any, list[str] | None], int],
    remote: Callable[[list[str] | None, int], dict[str, Any]],
    admin_url: str | None,
    token: str | None,
    namespace: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Replays or purges (``verb``) the dead letters ``ids`` (prefixes), or
    all if none: lists them, asks unless ``yes`` (refusing without a
    terminal), then ``act(queue, the ids listed)`` or, through the admin
    endpoint, ``remote(the ids listed)`` (``None``: all, with ``yes`` and
    no ``ids``)."""
    done = {"replay": "replayed", "purge": "purged"}[verb]
    if dry_run:
        if admin_url:
            _check_endpoint(admin_url, token, path)
            listed = _admin_call(admin_url, token, "/dlq", None)
        else:
            listed = [as_dict(d, payload=False) for d in _dead_letters(path, namespace)]
        chosen = _chosen(listed, ids)
        Console().print(_dead_table(chosen, f"would {verb} {len(chosen):,} dead letter(s)"))
        click.echo(f"dry run: nothing changed in {path}")
        return
    if not yes and not sys.stdin.isatty():
        click.echo(
            f"refused: {verb} would change {path} and there is no terminal to ask for "
            "confirmation on: give --yes to go ahead (or --dry-run to see what it would do)",
            err=True,
        )
        sys.exit(EXIT_ERROR)
    q = None
    try:
        if admin_url:
            _check_endpoint(admin_url, token, path)
            listed = _admin_call(admin_url, token, "/dlq", None)
        else:
            q = _open_for_change(path, namespace)
            listed = [as_dict(d, payload=False) for d in q.dlq.list()]
        chosen = _chosen(listed, ids)
        if not chosen:
            click.echo(f"{done} 0 dead letter(s): there are none in {path}")
            return
        if not yes:
            title = f"{len(chosen):,} dead letter(s) to {verb}"
            if len(chosen) > PROMPT_ROWS:
                title += f" (the first {PROMPT_ROWS} shown; --dry-run lists all)"
            Console().print(_dead_table(chosen[:PROMPT_ROWS], title))
            if not click.confirm(f"{verb} these {len(chosen):,} dead letter(s) of {path}?"):
                click.echo("nothing changed")
                sys.exit(1)  # as click's Abort
        # What was listed and confirmed, not what is there by now (a
        # shared queue's dead letters come meanwhile); with --yes and no
        # ids: all of them, as they are when the change is made.
        selected = [str(d["id"]) for d in chosen] if ids or not yes else None
        if admin_url:
            n = sum(
                int(remote(part, len(chosen) if part is None else len(part))[done])
                for part in _id_batches(selected)
            )
        else:
            n = act(q, selected)
    finally:
        if q is not None:
            q.close()
    click.echo(f"{done} {n} dead letter(s)")
    if verb == "replay" and n < len(chosen):
        click.echo(
            f"{len(chosen) - n:,} not replayed (still dead letters): the queue had no room "
            "for them, or a live message holds their dedup key",
            err=True,
        )


#: Ids per request to an admin endpoint (its bodies are at most 1 MiB).
ID_BATCH = 40_000


def _id_batches(selected: list[str] | None) -> list[list[str] | None]:
    """``selected`` in requests an admin endpoint takes (``None``: all)."""
    if selected is None:
        return [None]
    return [selected[i : i + ID_BATCH] for i in range(0, len(selected), ID_BATCH)]


def _chosen(listed: list[dict[str, Any]], ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """The dead letters ``ids`` (prefixes) name, all if none."""
    if not ids:
        return listed
    wanted = set(_resolve_ids(ids, [str(d["id"]) for d in listed]))
    return [d for d in listed if d["id"] in wanted]


@dlq_group.command("replay")
@click.argument("path", type=click.Path(file_okay=False))
@click.argument("ids", nargs=-1)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="messages per second")
@_confirm_options
@_remote_options
@_namespace_option
def dlq_replay_cmd(
    path: str,
    ids: tuple[str, ...],
    rate: float | None,
    dry_run: bool,
    yes: bool,
    admin_url: str | None,
    token: str | None,
    namespace: str | None,
) -> None:
    """Publish dead letters again, with attempts reset.

    All of them, or the IDS given (each an id or a unique prefix of one).
    Lists them and asks first, unless --yes; --dry-run only lists them.
    """
    _dlq_change(
        "replay",
        path,
        ids,
        lambda q, selected: int(q.dlq.replay(selected, rate=rate)),
        lambda selected, count: _admin_call(
            str(admin_url),
            token,
            "/dlq/replay",
            {"ids": selected, "rate": rate},
            # Paced, the endpoint answers once the last one is replayed:
            # waited for (timing out at 60 s said "cannot reach" while the
            # replay went on).
            timeout=60.0 + (count / rate if rate else 0.0),
        ),
        admin_url,
        token,
        namespace,
        dry_run,
        yes,
    )


@dlq_group.command("purge")
@click.argument("path", type=click.Path(file_okay=False))
@click.argument("ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="purge every dead letter")
@_confirm_options
@_remote_options
@_namespace_option
def dlq_purge_cmd(
    path: str,
    ids: tuple[str, ...],
    purge_all: bool,
    dry_run: bool,
    yes: bool,
    admin_url: str | None,
    token: str | None,
    namespace: str | None,
) -> None:
    """Delete dead letters for good.

    The IDS given (each an id or a unique prefix of one), or --all. Lists
    them and asks first, unless --yes; --dry-run only lists them.
    """
    if not ids and not purge_all:
        click.echo("give dead-letter ids, or --all", err=True)
        sys.exit(EXIT_ERROR)
    if ids and purge_all:
        click.echo("give dead-letter ids or --all, not both", err=True)
        sys.exit(EXIT_ERROR)
    _dlq_change(
        "purge",
        path,
        ids,
        lambda q, selected: int(q.dlq.purge(selected)),
        lambda selected, _count: _admin_call(
            str(admin_url), token, "/dlq/purge", {"ids": selected} if selected else {"all": True}
        ),
        admin_url,
        token,
        namespace,
        dry_run,
        yes,
    )


_FLAG_HELP: dict[str, str] = {
    "durability": "when publishes reach the disk",
    "lease": "seconds: a checkout's lease unless it gives one",
    "recycle_segments": "reuse the journal segments a snapshot covers "
    "(--no-recycle-segments: delete them)",
}
"""Help of the flags whose table row's ``doc`` does not say enough alone."""


def _queue_option_flags(
    skip: Sequence[str],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A ``--flag`` for each row of ``QUEUE_OPTIONS`` but ``skip``, typed
    and bounded as the row says (a bool as ``--name/--no-name``). A flag
    left out passes nothing: the queue's default (the table's) applies."""
    from ringq.config import QUEUE_OPTIONS, QueueOption
    from ringq.retry import MAX_SECONDS

    def flag(o: QueueOption) -> Callable[[Callable[..., None]], Callable[..., None]]:
        dashed = o.name.replace("_", "-")
        default = o.effective_default_text()
        unit = "seconds " if o.kind == "seconds" else ""
        what = _FLAG_HELP.get(o.name) or f"{unit}{o.doc}".strip()
        text = f"{what} (default {default})"
        if o.kind == "bool":
            return click.option(f"--{dashed}/--no-{dashed}", default=None, help=text)
        kind: click.ParamType[Any]
        if o.kind == "int":
            kind = click.IntRange(min=o.ge, max=o.le)
        elif o.kind == "seconds":
            low = o.ge if o.ge is not None else o.gt
            kind = click.FloatRange(min=low, max=MAX_SECONDS, min_open=o.ge is None)
        else:
            kind = click.Choice(o.choices)
        return click.option(f"--{dashed}", type=kind, default=None, help=text)

    def decorate(f: Callable[..., None]) -> Callable[..., None]:
        for o in reversed(QUEUE_OPTIONS):
            if o.name not in skip:
                f = flag(o)(f)
        return f

    return decorate


@main.command("serve")
@click.argument("path", type=click.Path(file_okay=False))
@_queue_option_flags(skip=("shared",))
@click.option(
    "--stats-every",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="seconds between stats lines in the log (0: none)",
)
def serve_cmd(path: str, stats_every: float, **options: Any) -> None:
    """Own a shared queue and serve its clients until stopped.

    Runs until SIGTERM or SIGINT, then closes PATH cleanly. Processes open
    it with ringq.Queue(PATH, shared=True); with this command running they
    are all clients (for example the workers of uvicorn --workers 4). The
    options of ringq.Queue but shared (always on here) are flags
    (--segment-size, --no-recycle-segments, ...); one not given keeps its
    default. Logs go to stderr. Exit status 3 if another process already
    owns PATH.
    """
    from ringq.serve import serve

    given = {name: value for name, value in options.items() if value is not None}
    sys.exit(serve(path, given, stats_every))


# demo and bench hand every argument, --help included, to the module's own
# parser: `ringq demo --help` shows the demo's options.
_PASS_THROUGH: dict[str, Any] = {
    "context_settings": {"ignore_unknown_options": True},
    "add_help_option": False,
}


@main.command("demo", **_PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo_cmd(args: tuple[str, ...]) -> None:
    """Run the demo: throughput, a SIGKILL, a handler chain.

    The same as python -m ringq.demo; ringq demo --help lists its options.
    """
    from ringq import demo

    sys.exit(demo.main(list(args), prog="ringq demo"))


@main.command("bench", **_PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_cmd(args: tuple[str, ...]) -> None:
    """Benchmark ringq against queue.Queue (JSON on stdout).

    The same as python -m ringq.bench; ringq bench --help lists its options.
    """
    from ringq import bench

    sys.exit(bench.main(list(args)))


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``ringq`` command.

- ``ringq inspect PATH``: what a queue directory holds (per topic ready / in
  flight / delayed, dead letters, journal and snapshot positions, the owner).
- ``ringq verify PATH``: reads every journal record and the snapshot,
  checking each CRC and decoding each operation as recovery would; exit 0 if
  all is sound, 1 naming the damaged file and byte offset otherwise.

Both are read-only: they take no lock and change no byte, so they work
while another process owns the queue (a record that process is writing at
that moment may show as a torn tail). ``--json`` prints machine-readable
output. ``ringq demo`` and ``ringq bench`` run ``python -m ringq.demo`` and
``python -m ringq.bench``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from ringq._core import CorruptionError, RingqError, inspect

__all__ = ["main"]

EXIT_DAMAGED = 1
EXIT_ERROR = 2


def _load(path: str) -> dict[str, Any]:
    return inspect(path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ringq: a durable, crash-safe message queue inside your Python process."""


@main.command("inspect")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
def inspect_cmd(path: str, as_json: bool) -> None:
    """Show what the queue directory PATH holds (read-only)."""
    try:
        info = _load(path)
    except CorruptionError as e:
        _fail(e, as_json, EXIT_DAMAGED)
    except (RingqError, ValueError, OSError) as e:
        _fail(e, as_json, EXIT_ERROR)
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
    try:
        info = _load(path)
    except CorruptionError as e:
        _fail(e, as_json, EXIT_DAMAGED)
    except (RingqError, ValueError, OSError) as e:
        _fail(e, as_json, EXIT_ERROR)
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


def _fail(e: Exception, as_json: bool, code: int) -> NoReturn:
    if as_json:
        out: dict[str, Any] = {"ok": False, "error": type(e).__name__, "message": str(e)}
        if isinstance(e, CorruptionError):
            out |= {"file": e.path, "offset": e.offset}
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"{type(e).__name__}: {e}", err=True)
    sys.exit(code)


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

"""A two-minute tour of ringq: throughput, and nothing lost to SIGKILL.

Run ``python -m ringq.demo [--dir PATH] [--messages N] [--force]`` (or
``ringq demo ...``). It

1. publishes N 100-byte messages, one ``publish`` call each;
2. checks out and acks half of them in batches of 256;
3. starts a child process that publishes into ``DIR/crash`` and prints every
   id ``publish`` returned, kills it with SIGKILL mid-stream, reopens that
   directory and checks every reported id is there;
4. closes and reopens the main queue and checks the remaining half survived;
5. runs a chain of handlers (order -> ship -> notify) over ``DIR/shop``,
   with retried and dead-lettered failures (``ringq.demo_shop``);
6. prints a summary and exits non-zero if anything was lost.

The directory stays for ``ringq inspect DIR/shop`` and ``ringq dlq list``.

The demo starts by deleting DIR, so it refuses (exit 2) a non-empty DIR
that is not a previous demo's unless given ``--force``. A demo's directory
holds the marker file ``.ringq-demo``; one from before the marker holds
nothing but the demo's queues (``queue``, ``crash``, ``shop``, each with a
MANIFEST). Even with ``--force`` it never deletes ``/``, the home directory,
or the working directory or one of its parents.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ringq.demo_shop import run_shop
from ringq.queue import Queue

PAYLOAD_SIZE = 100
BATCH = 256
CRASH_RUN_SECONDS = 0.5  # how long the child publishes before it is killed
CRASH_TOPIC = "crash"
MARKER = ".ringq-demo"  # in a directory the demo made: the next run may delete it
DEMO_QUEUES = ("queue", "crash", "shop")


def main(argv: list[str] | None = None, prog: str = "python -m ringq.demo") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ringq throughput and crash-safety demo: publish, consume, SIGKILL a "
        "producer and recover, a handler chain with retries and dead letters.",
    )
    parser.add_argument(
        "--dir",
        default="./ringq-demo",
        help="demo directory, deleted first if a previous demo made it (default: %(default)s)",
    )
    parser.add_argument(
        "--messages", type=int, default=200_000, help="messages to publish (default: %(default)s)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete --dir even if it is not empty and not a previous demo's",
    )
    parser.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return crash_child(args.child)
    if args.messages < 2:
        parser.error("--messages must be at least 2")
    refused = refuse_dir(Path(args.dir), args.force)
    if refused:
        print(f"{prog}: refused: {refused}", file=sys.stderr)
        return 2
    return run(Path(args.dir), args.messages, Console())


def refuse_dir(root: Path, force: bool = False) -> str | None:
    """Why the demo must not delete ``root`` (None: it may): a non-empty
    directory that is not a previous demo's, unless ``force``; never a file,
    ``/``, the home directory, or the working directory or a parent of it."""
    if not root.exists():
        return None
    if not root.is_dir():
        return f"{root} is not a directory"
    resolved, cwd = root.resolve(), Path.cwd().resolve()
    if resolved in (Path(resolved.anchor), Path.home().resolve(), cwd) or resolved in cwd.parents:
        return f"{root} is /, the home directory, or the working directory or a parent of it"
    entries = list(root.iterdir())
    if force or not entries or (root / MARKER).is_file():
        return None
    if all(e.name in DEMO_QUEUES and (e / "MANIFEST").is_file() for e in entries):
        return None  # a demo's from before the marker
    return (
        f"{root} is not empty and not a previous demo's directory (no {MARKER} file), "
        "and the demo deletes it first: give a new or empty --dir, or --force to delete it"
    )


def progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>14}"),
        TimeElapsedColumn(),
        console=console,
    )


def run(root: Path, n: int, console: Console) -> int:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, mode=0o700)
    (root / MARKER).write_text("made by ringq demo, which deletes this directory when run again\n")
    main_dir = root / "queue"
    payload = b"x" * PAYLOAD_SIZE
    step = max(1, n // 200)

    q = Queue(main_dir, capacity=n)
    with progress(console) as bar:
        task = bar.add_task("publish", total=n, rate="")
        publish = q.publish
        t0 = time.perf_counter()
        done = 0
        while done < n:
            for _ in range(min(step, n - done)):
                publish(payload)
            done += min(step, n - done)
            bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - t0):,.0f} msg/s")
        publish_seconds = time.perf_counter() - t0

    to_consume = n // 2
    with progress(console) as bar:
        task = bar.add_task("consume", total=to_consume, rate="")
        t0 = time.perf_counter()
        consumed = 0
        while consumed < to_consume:
            batch = q.checkout(max_messages=min(BATCH, to_consume - consumed), timeout=0)
            if not batch:
                break
            q.ack(batch)
            consumed += len(batch)
            bar.update(
                task, completed=consumed, rate=f"{consumed / (time.perf_counter() - t0):,.0f} msg/s"
            )
        consume_seconds = time.perf_counter() - t0

    console.print("[bold]crash test:[/] child publishes, then gets SIGKILL ...")
    crash = crash_test(root / "crash")

    console.print("[bold]handlers:[/] order -> ship -> notify, with failures ...")
    shop = run_shop(root / "shop", max(100, min(n // 10, 20_000)), console)

    before_close = q.stats()
    q.close()
    t0 = time.perf_counter()
    q = Queue(main_dir, capacity=n)
    reopen_seconds = time.perf_counter() - t0
    final = q.stats()
    q.close()
    remaining_expected = n - consumed
    # fewer than expected: lost; more: acked messages came back. Both are failures.
    lost = crash.lost + abs(remaining_expected - int(final["ready"]))
    lost += shop.orders - shop.notified - shop.dead
    table = Table(title="ringq demo", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("published", f"{n:,} x {PAYLOAD_SIZE} B")
    table.add_row("publish rate", f"{n / publish_seconds:,.0f} msg/s (one call each)")
    table.add_row("consume rate", f"{consumed / consume_seconds:,.0f} msg/s (batches of {BATCH})")
    table.add_row("killed in flight", f"SIGKILL after {crash.reported:,} reported ids")
    table.add_row("recovered after kill", f"{crash.found:,} (incl. {crash.unreported} unreported)")
    table.add_row("lost", f"[{'green' if lost == 0 else 'red'}]{lost}[/]")
    table.add_row("reopen time", f"{reopen_seconds * 1000:.1f} ms")
    table.add_row("remaining after reopen", f"{final['ready']:,} (expected {remaining_expected:,})")
    for key in ("published", "delivered", "acked", "fsyncs"):
        table.add_row(f"stats.{key} (before close)", f"{before_close[key]:,}")
    for key in ("journal_segments", "journal_bytes", "snapshot_lsn", "torn_tail_bytes"):
        table.add_row(f"stats.{key} (after reopen)", f"{final[key]:,}")
    table.add_row("durability", str(final["durability"]))
    table.add_row("handler chain", f"{shop.orders:,} orders in {shop.seconds:.2f} s")
    table.add_row(
        "  notified / dead letters / retries", f"{shop.notified:,} / {shop.dead} / {shop.retries}"
    )
    table.add_row(
        "  order -> notify latency",
        f"p50 {shop.median * 1000:.1f} ms, p99 {shop.percentile(0.99) * 1000:.1f} ms",
    )
    console.print(table)
    if lost:
        console.print(f"[bold red]LOST {lost} message(s)[/]")
        return 1
    console.print("[bold green]nothing lost[/]")
    return 0


class CrashResult:
    def __init__(self, reported: int, found: int, lost: int) -> None:
        self.reported = reported
        self.found = found
        self.lost = lost
        self.unreported = found - (reported - lost)


def crash_test(crash_dir: Path) -> CrashResult:
    child = subprocess.Popen(
        [sys.executable, "-m", "ringq.demo", "--child", str(crash_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported: list[str] = []
    kill_at: float | None = None
    for line in child.stdout:
        reported.append(line.strip())
        if kill_at is None:
            kill_at = time.monotonic() + CRASH_RUN_SECONDS
        elif time.monotonic() >= kill_at:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait()
    # Lines already in the pipe were printed after publish returned: they count.
    reported.extend(line.strip() for line in child.stdout if line.endswith("\n"))
    child.stdout.close()

    q = Queue(crash_dir, capacity=1_000_000)
    found: list[str] = []
    while batch := q.checkout(CRASH_TOPIC, max_messages=4096, lease=600.0, timeout=0):
        found.extend(d.id for d in batch)
    q.close()
    present = set(found)
    lost = sum(1 for mid in reported if mid not in present)
    return CrashResult(len(reported), len(found), lost)


def crash_child(directory: str) -> int:
    """Publish until killed; print each id only after publish returned it."""
    q = Queue(directory, capacity=1_000_000)
    write, flush = sys.stdout.write, sys.stdout.flush
    i = 0
    while True:
        mid = q.publish(b"crash-%09d" % i, CRASH_TOPIC)
        write(mid + "\n")
        flush()
        i += 1


if __name__ == "__main__":
    sys.exit(main())

"""What operators stumbled over in the ``ringq`` command: help that showed
markup or was cut, lists cut without saying so, ids cut in tables, changes
made without asking, unknown topics shown as empty, the admin endpoint's
path check, and "no MANIFEST" for a parent of queues or a missing path."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import ringq
from click.testing import CliRunner
from conftest import Spawn, read_line
from ringq.cli import main


def ringq_cli(
    *args: str, cwd: Path | None = None, stdin: int = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """The command at 80 columns, without a terminal unless ``stdin`` is one."""
    return subprocess.run(
        [sys.executable, "-m", "ringq.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=stdin,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},
    )


def with_dead_letters(qdir: Path, n: int) -> list[str]:
    """A closed queue at ``qdir`` with ``n`` dead letters with long topic,
    handler and error texts; returns their ids, oldest first."""
    with ringq.Queue(qdir) as q:
        topic = "ringq_tests.a_rather_long_module_name.SomeTypedMessage"
        for i in range(n):
            q.publish(b"payload %d" % i, topic=topic)
        for d in q.checkout(topic, max_messages=n, timeout=0):
            q._backend.nack(
                d,
                None,
                "ValueError",
                "the downstream service refused the request: " + "x" * 60,
                "Traceback: ...",
                "ringq_tests.a_rather_long_module_name.handle_some_typed_message",
                "non_retryable",
            )
        return [d.id for d in q.dlq.list()]


def dead_ids(qdir: Path) -> list[str]:
    return [d["id"] for d in json.loads(ringq_cli("dlq", "list", str(qdir), "--json").stdout)]


def commands(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from commands(sub, (*path, name))


# 3. help


def test_every_help_is_plain_text_with_complete_summaries() -> None:
    runner = CliRunner()
    every = list(commands(main))
    assert ("schedules",) in every and ("dlq", "purge") in every
    for path in every:
        done = runner.invoke(main, [*path, "--help"], terminal_width=80, prog_name="ringq")
        assert done.exit_code == 0, (path, done.output)
        assert "``" not in done.output, (path, done.output)
        # The command lists of groups show each summary whole, not cut with "..."
        if "Commands:" in done.output:
            listing = done.output.split("Commands:", 1)[1]
            assert "..." not in listing, (path, listing)
    dlq = runner.invoke(main, ["dlq", "--help"], terminal_width=80).output
    assert "replay" in dlq.split("Commands:")[0] and "read-only: list and show" not in dlq


# 4. dlq list says when --limit cut it


def test_dlq_list_says_how_many_there_are_when_the_limit_cuts(qdir: Path) -> None:
    ids = with_dead_letters(qdir, 5)
    table = ringq_cli("dlq", "list", str(qdir), "--limit", "2")
    assert table.returncode == 0, table.stderr
    assert "showing 2 of 5 dead letters" in table.stdout
    as_json = ringq_cli("dlq", "list", str(qdir), "--limit", "2", "--json")
    assert [d["id"] for d in json.loads(as_json.stdout)] == ids[:2], "the JSON stays the list"
    assert "showing 2 of 5" in as_json.stderr
    whole = ringq_cli("dlq", "list", str(qdir), "--json")
    assert len(json.loads(whole.stdout)) == 5 and whole.stderr == ""
    assert "5 dead letter(s)" in ringq_cli("dlq", "list", str(qdir)).stdout


# 5. ids are never cut; a unique prefix names one


def test_tables_never_cut_ids_at_80_columns(qdir: Path) -> None:
    ids = with_dead_letters(qdir, 3)
    listed = ringq_cli("dlq", "list", str(qdir))
    assert listed.returncode == 0, listed.stderr
    assert all(i in listed.stdout for i in ids), listed.stdout
    with ringq.Queue(qdir) as q:
        live = q.publish(b"y" * 200, topic="t", dedup_key="a-rather-long-dedup-key-" * 3)
    peeked = ringq_cli("peek", str(qdir), "--topic", "t")
    assert peeked.returncode == 0 and live in peeked.stdout, peeked.stdout


def test_a_unique_prefix_names_a_dead_letter(qdir: Path) -> None:
    ids = with_dead_letters(qdir, 3)
    unique = next(p for n in range(1, 17) if sum(i.startswith(p := ids[1][:n]) for i in ids) == 1)
    shown = ringq_cli("dlq", "show", str(qdir), unique)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == ids[1]
    common = ids[0][: next(n for n in range(16) if len({i[: n + 1] for i in ids}) > 1)]
    assert common, ids
    ambiguous = ringq_cli("dlq", "show", str(qdir), common)
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr
    assert all(i in ambiguous.stderr for i in ids), "the candidates are listed"
    unknown = ringq_cli("dlq", "show", str(qdir), "ffff")
    assert unknown.returncode == 2 and "no dead letter" in unknown.stderr
    assert ringq_cli("dlq", "purge", str(qdir), common, "--yes").returncode == 2
    assert dead_ids(qdir) == ids, "an ambiguous prefix changed nothing"
    replayed = ringq_cli("dlq", "replay", str(qdir), unique, "--yes")
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout, replayed.stderr
    purged = ringq_cli("dlq", "purge", str(qdir), ids[0][:16], "--yes")
    assert purged.returncode == 0 and "purged 1" in purged.stdout, purged.stderr
    assert dead_ids(qdir) == [ids[2]]


# 6. replay and purge ask first; --dry-run; no terminal and no --yes: refused


def test_replay_and_purge_ask_first_and_dry_run_changes_nothing(qdir: Path) -> None:
    ids = with_dead_letters(qdir, 3)
    dry = ringq_cli("dlq", "purge", str(qdir), "--all", "--dry-run")
    assert dry.returncode == 0 and "would purge 3" in dry.stdout, dry.stderr
    assert all(i in dry.stdout for i in ids)
    dry = ringq_cli("dlq", "replay", str(qdir), "--dry-run")
    assert dry.returncode == 0 and "would replay 3" in dry.stdout, dry.stderr
    for args in (("purge", "--all"), ("replay",), ("purge", ids[0])):
        done = ringq_cli("dlq", *args[:1], str(qdir), *args[1:])
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "--yes" in done.stderr and "terminal" in done.stderr
    assert dead_ids(qdir) == ids, "nothing changed"

    master, slave = pty.openpty()
    try:
        os.write(master, b"n\n")
        no = ringq_cli("dlq", "purge", str(qdir), "--all", stdin=slave)
        assert no.returncode == 1 and "nothing changed" in no.stdout, no.stdout + no.stderr
        assert "purge these 3 dead letter(s)" in no.stdout
        assert dead_ids(qdir) == ids
        os.write(master, b"y\n")
        yes = ringq_cli("dlq", "purge", str(qdir), "--all", stdin=slave)
        assert yes.returncode == 0 and "purged 3" in yes.stdout, yes.stdout + yes.stderr
    finally:
        os.close(master)
        os.close(slave)
    assert dead_ids(qdir) == []


def test_a_confirmed_purge_removes_what_was_listed_not_what_came_meanwhile(qdir: Path) -> None:
    """``ringq dlq purge --all`` on a shared queue lists 2 dead letters and
    asks; 3 more come while it waits. Answered yes, it purges the 2 it
    listed (it sent "all" and purged 5, 3 of them never seen)."""
    owner = ringq.Queue(qdir, shared=True, max_attempts=1)
    try:

        def dead_letter(n: int) -> None:
            owner.publish_many([b"%d" % i for i in range(n)], topic="t")
            for d in owner.checkout("t", max_messages=n, timeout=0):
                owner.nack(d, error="bad")

        dead_letter(2)
        listed = [d.id for d in owner.dlq.list()]
        master, slave = pty.openpty()
        child = subprocess.Popen(
            [sys.executable, "-m", "ringq.cli", "dlq", "purge", str(qdir), "--all"],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "80"},
        )
        try:
            assert child.stdout is not None
            out = b""
            while b"purge these 2 dead letter(s)" not in out:
                ready, _, _ = select.select([child.stdout], [], [], 30)
                chunk = os.read(child.stdout.fileno(), 4096) if ready else b""
                assert chunk, f"no prompt: {out!r}"
                out += chunk
            dead_letter(3)
            assert len(owner.dlq) == 5
            os.write(master, b"y\n")
            rest, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            os.close(master)
            os.close(slave)
        assert child.returncode == 0 and b"purged 2 dead letter(s)" in rest, (rest, err)
        left = [d.id for d in owner.dlq.list()]
        assert len(left) == 3 and not set(left) & set(listed)
    finally:
        owner.close()


def test_a_replay_into_a_full_queue_says_what_it_left(qdir: Path) -> None:
    """A full queue: the replay publishes nothing and says why (it said
    "replayed 0 dead letter(s)" and nothing else)."""
    with ringq.Queue(qdir, max_attempts=1) as q:  # the default capacity, 100,000
        q.publish(b"dead", "t")
        [d] = q.checkout("t", timeout=0)
        q.nack(d, error="bad")
        q.publish_many([b"%d" % i for i in range(100_000)], topic="t")
    done = ringq_cli("dlq", "replay", str(qdir), "--yes")
    assert done.returncode == 0 and "replayed 0 dead letter(s)" in done.stdout, done.stdout
    assert "1 not replayed" in done.stderr and "no room" in done.stderr, done.stderr
    assert len(dead_ids(qdir)) == 1


def test_a_paced_replay_through_an_endpoint_waits_as_long_as_the_pace_takes(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dlq replay --rate R --admin-url``: the endpoint answers once the
    last dead letter is replayed, N / R seconds on; the command waits that
    long (plus 60 s). It gave up after 60 s, said the endpoint could not be
    reached (exit 2), and the replay went on."""
    import ringq.cli as cli

    timeouts: dict[str, float] = {}
    real = cli._admin_call

    def recording(
        url: str, token: str | None, path: str, body: object, timeout: float = 60.0
    ) -> object:
        timeouts[path] = timeout
        return real(url, token, path, body, timeout)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "_admin_call", recording)
    with ringq.Queue(qdir, max_attempts=1) as q:
        q.publish_many([b"%d" % i for i in range(5)], topic="t")
        for d in q.checkout("t", max_messages=5, timeout=0):
            q.nack(d, error="bad")
        server = q.serve_admin(token="s3cret")
        try:
            args = ["dlq", "replay", str(qdir), "--rate", "100", "--yes"]
            args += ["--admin-url", server.url, "--token", "s3cret"]
            done = CliRunner().invoke(main, args)
        finally:
            server.close()
        assert done.exit_code == 0 and "replayed 5" in done.output, done.output
        assert timeouts["/dlq/replay"] == pytest.approx(60 + 5 / 100)
        assert len(q.dlq) == 0


# 7. peek of an unknown topic


def test_peek_of_an_unknown_topic_lists_the_known_ones_and_the_closest(qdir: Path) -> None:
    with ringq.Queue(qdir) as q:
        q.publish_many([b"a", b"b"], topic="shop.OrderPlaced")
        q.publish(b"c", topic="shop.ShipOrder")
    default = ringq_cli("peek", str(qdir))
    assert default.returncode == 1, default.stdout
    assert "shop.OrderPlaced (2 messages)" in default.stderr
    assert "shop.ShipOrder (1 messages)" in default.stderr
    close = ringq_cli("peek", str(qdir), "--topic", "OrderPlaced")
    assert close.returncode == 1 and "did you mean 'shop.OrderPlaced'" in close.stderr
    as_json = json.loads(
        ringq_cli("peek", str(qdir), "--topic", "shop.OrderPlace", "--json").stdout
    )
    assert as_json["error"] == "UnknownTopic" and as_json["closest"][0] == "shop.OrderPlaced"
    assert as_json["topics"]["shop.OrderPlaced"] == {"messages": 2, "dead_letters": 0}
    known = ringq_cli("peek", str(qdir), "--topic", "shop.OrderPlaced")
    assert known.returncode == 0 and "2 message(s)" in known.stdout


def test_peek_of_a_topic_with_only_dead_letters_is_no_error(qdir: Path) -> None:
    with_dead_letters(qdir, 1)
    topic = "ringq_tests.a_rather_long_module_name.SomeTypedMessage"
    done = ringq_cli("peek", str(qdir), "--topic", topic, "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stderr


# 9. --admin-url: the owner's relative path


def test_admin_url_works_when_the_owner_was_given_a_relative_path(
    tmp_path: Path, spawn: Spawn
) -> None:
    home = tmp_path / "owner"
    home.mkdir()
    child = spawn(
        """
        import os, sys, time, ringq
        os.chdir(sys.argv[1])
        q = ringq.Queue("q", max_attempts=1)
        q.publish(b"a", topic="t")
        [d] = q.checkout("t", timeout=0)
        q.nack(d, error="bad")
        server = q.serve_admin(port=0, token="s3cret")
        print(server.url, flush=True)
        time.sleep(60)
        """,
        str(home),
    )
    url = read_line(child)
    remote = ("--admin-url", url, "--token", "s3cret")
    snap = ringq_cli("snapshot", str(home / "q"), *remote, cwd=tmp_path)
    assert snap.returncode == 0 and "snapshot of" in snap.stdout, snap.stderr
    replay = ringq_cli("dlq", "replay", str(home / "q"), "--yes", *remote, cwd=tmp_path)
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stderr
    with ringq.Queue(tmp_path / "other") as q:
        q.publish(b"x")
    other = ringq_cli("snapshot", str(tmp_path / "other"), *remote, cwd=home)
    assert other.returncode == 2 and "serves the queue at" in other.stderr, other.stderr
    assert "instance id" in other.stderr


# 10. a missing path, a directory that is no queue, a parent of queues


READ_AND_CHANGE: tuple[tuple[str, ...], ...] = (
    ("inspect",),
    ("verify",),
    ("repair",),
    ("peek",),
    ("schedules",),
    ("dlq", "list"),
    ("dlq", "show", "@", "0000"),
    ("snapshot",),
    ("dlq", "replay", "@", "--yes"),
    ("dlq", "purge", "@", "--all", "--yes"),
)


def argv(command: tuple[str, ...], path: Path) -> list[str]:
    """``command`` with ``path`` where ``@`` is, or appended after the command."""
    if "@" in command:
        return [str(path) if a == "@" else a for a in command]
    return [*command, str(path)]


@pytest.mark.parametrize("command", READ_AND_CHANGE, ids=" ".join)
def test_a_parent_of_queues_and_a_missing_path_say_what_they_are(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    parent = tmp_path / "demo"
    for name in ("queue", "shop"):
        ringq.Queue(parent / name).close()
    (parent / "notes").mkdir()
    done = ringq_cli(*argv(command, parent))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not a ringq queue" in done.stderr
    assert str(parent / "queue") in done.stderr and str(parent / "shop") in done.stderr
    assert str(parent / "notes") not in done.stderr
    missing = ringq_cli(*argv(command, tmp_path / "nope"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr, missing.stderr
    assert not (tmp_path / "nope").exists()
    empty = ringq_cli(*argv(command, parent / "notes"))
    assert empty.returncode == 2 and "not a ringq queue" in empty.stderr
    assert not re.search(r"holds \d+ queue", empty.stderr)


def test_version_peek_deliveries_and_labels(tmp_path: Path) -> None:
    """``ringq --version`` exists; ``peek`` calls the count of deliveries so
    far what it is (0 for a new message, not an attempt number); tables say
    "dead letters" as the summary does."""
    from click.testing import CliRunner
    from ringq.cli import main

    out = CliRunner().invoke(main, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("ringq ") and "journal format" in out.output
    qdir = tmp_path / "q"
    with ringq.Queue(qdir) as q:
        q.publish(b"x", topic="t")
    peek = CliRunner().invoke(main, ["peek", str(qdir), "--topic", "t"])
    assert peek.exit_code == 0 and "deliveries" in peek.output and "attempt" not in peek.output

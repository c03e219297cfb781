"""The ``ringq`` command: ``inspect`` and ``verify`` are read-only and work on
a directory another process owns; ``verify`` names the damaged file and offset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import Spawn, kill_and_collect, read_line


def ringq_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringq.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,  # no terminal: nothing is asked
    )


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "LOCK"}


def test_inspect_shows_an_owned_queue_without_touching_it(qdir: Path, spawn: Spawn) -> None:
    child = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1])
        q.publish_many([b"a", b"b", b"c"], topic="orders")
        q.publish(b"x", topic="mail", delay=3600)
        q.checkout("orders", timeout=0)
        # Quiet: the flusher synced everything, the next segment is prepared.
        while (s := q.stats())["durable_lsn"] < s["lsn"] or s["journal_spares"] < 1:
            time.sleep(0.001)
        print("ready", flush=True)
        time.sleep(60)
        """,
        str(qdir),
    )
    assert read_line(child) == "ready"
    before = files_of(qdir)
    done = ringq_cli("inspect", str(qdir), "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["owner_pid"] == child.pid
    assert (info["ready"], info["in_flight"], info["delayed"]) == (2, 1, 1)
    by_topic = {t["name"]: (t["ready"], t["in_flight"], t["delayed"]) for t in info["topics"]}
    assert by_topic == {"orders": (2, 1, 0), "mail": (0, 0, 1)}
    table = ringq_cli("inspect", str(qdir))
    assert table.returncode == 0, table.stderr
    assert f"pid {child.pid}" in table.stdout and "orders" in table.stdout
    assert files_of(qdir) == before, "inspect changed the directory"
    with_lock = ringq_cli("verify", str(qdir))
    assert with_lock.returncode == 0, with_lock.stderr
    assert with_lock.stdout.startswith("ok: ")


def test_verify_names_the_damaged_file_and_offset(qdir: Path, spawn: Spawn) -> None:
    child = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1], durability="always")
        for i in range(5):
            q.publish(f"message {i}".encode())
        print("ready", flush=True)
        time.sleep(60)
        """,
        str(qdir),
    )
    assert read_line(child) == "ready"
    kill_and_collect(child)  # no snapshot at close: the records stay in the journal
    # The segment in use (a prepared spare's header has first LSN 0).
    [wal] = [p for p in sorted(qdir.glob("*.log")) if p.read_bytes()[16:24] != bytes(8)]
    data = bytearray(wal.read_bytes())
    data[48 + 20 + 3] ^= 0xFF  # inside the first record's body (fsynced: records follow)
    wal.write_bytes(bytes(data))
    done = ringq_cli("verify", str(qdir))
    assert done.returncode == 1
    assert str(wal) in done.stderr and "offset 48" in done.stderr, done.stderr
    as_json = json.loads(ringq_cli("verify", str(qdir), "--json").stdout)
    assert (as_json["ok"], as_json["file"], as_json["offset"]) == (False, str(wal), 48)
    assert ringq_cli("verify", str(qdir.parent / "nope")).returncode == 2


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "ringq"
    assert script.exists() and os.access(script, os.X_OK)
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "inspect" in done.stdout and "verify" in done.stdout


def test_peek_and_dlq_show_messages_and_dead_letters_of_an_owned_queue(
    qdir: Path, spawn: Spawn
) -> None:
    child = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1])
        q.publish_many([b"first", b"second", b"third"], topic="orders")
        q.publish(b"v1", topic="orders", dedup_key="k")
        q.publish(b"v2", topic="orders", dedup_key="k")
        bad = q.publish(b"poison", topic="mail")
        [d] = q.checkout("mail", timeout=0)
        q._backend.nack(
            d, None, "ValueError", "cannot parse", "Traceback: ...", "on_mail", "non_retryable"
        )
        # Quiet: the flusher synced everything, the next segment is prepared.
        while (s := q.stats())["durable_lsn"] < s["lsn"] or s["journal_spares"] < 1:
            time.sleep(0.001)
        print(bad, flush=True)
        time.sleep(60)
        """,
        str(qdir),
    )
    bad = read_line(child)
    before = files_of(qdir)
    done = ringq_cli("peek", str(qdir), "--topic", "orders", "--limit", "3", "--json")
    assert done.returncode == 0, done.stderr
    msgs = json.loads(done.stdout)
    assert [m["payload"] for m in msgs] == ["first", "second", "third"]
    assert all(m["state"] == "ready" and m["attempt"] == 0 for m in msgs)
    keyed = json.loads(ringq_cli("peek", str(qdir), "--topic", "orders", "--json").stdout)[-1]
    assert (keyed["payload"], keyed["version"], keyed["dedup_key"]) == ("v2", 2, "k")
    table = ringq_cli("peek", str(qdir), "--topic", "orders")
    assert table.returncode == 0 and "second" in table.stdout
    listed = json.loads(ringq_cli("dlq", "list", str(qdir), "--json").stdout)
    assert [(d["id"], d["reason"], d["handler"]) for d in listed] == [
        (bad, "non_retryable", "on_mail")
    ]
    shown = ringq_cli("dlq", "show", str(qdir), bad)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["error_message"] == "cannot parse"
    assert ringq_cli("dlq", "show", str(qdir), "00000000deadbeef").returncode == 2
    assert "ValueError" in ringq_cli("dlq", "list", str(qdir)).stdout
    assert files_of(qdir) == before, "peek/dlq changed the directory"


def own_with_three_dead_letters(spawn: Spawn, qdir: Path) -> tuple[subprocess.Popen[str], str]:
    """A live process owning ``qdir`` with three dead letters on topic ``t``,
    serving its admin endpoint (token ``s3cret``); returns it and the URL."""
    child = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1], max_attempts=1)
        for p in (b"a", b"b", b"c"):
            q.publish(p, topic="t")
        for d in q.checkout("t", max_messages=3, timeout=0):
            q.nack(d, error="bad")
        server = q.serve_admin(port=0, token="s3cret")
        print(server.url, flush=True)
        time.sleep(60)
        """,
        str(qdir),
    )
    return child, read_line(child)


def test_changing_commands_refuse_an_owned_queue_and_work_on_a_closed_one(
    qdir: Path, spawn: Spawn
) -> None:
    child, _url = own_with_three_dead_letters(spawn, qdir)
    for args in (("snapshot",), ("dlq", "replay", "--yes"), ("dlq", "purge", "--all", "--yes")):
        done = ringq_cli(*args, str(qdir))
        assert done.returncode == 3, (args, done.stderr)
        assert f"pid {child.pid}" in done.stderr
    kill_and_collect(child)
    dead = json.loads(ringq_cli("dlq", "list", str(qdir), "--json").stdout)
    assert len(dead) == 3
    replay = ringq_cli("dlq", "replay", str(qdir), dead[0]["id"], "--yes")
    assert replay.returncode == 0 and "replayed 1" in replay.stdout
    assert ringq_cli("dlq", "purge", str(qdir), "--yes").returncode == 2, "needs ids or --all"
    purge = ringq_cli("dlq", "purge", str(qdir), "--all", "--yes")
    assert purge.returncode == 0 and "purged 2" in purge.stdout
    snap = ringq_cli("snapshot", str(qdir))
    assert snap.returncode == 0 and "snapshot of" in snap.stdout
    info = json.loads(ringq_cli("inspect", str(qdir), "--json").stdout)
    assert (info["ready"], info["dead"], info["records_replayed"]) == (1, 0, 0)
    assert ringq_cli("snapshot", str(qdir.parent / "elsewhere")).returncode == 2
    assert not (qdir.parent / "elsewhere").exists(), "no queue is created by mistake"


def test_changing_commands_go_through_the_owners_admin_endpoint(
    qdir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    child, url = own_with_three_dead_letters(spawn, qdir)
    remote = ("--admin-url", url, "--token", "s3cret")
    dead = json.loads(ringq_cli("dlq", "list", str(qdir), "--json").stdout)
    assert len(dead) == 3

    no_token = ringq_cli("dlq", "purge", str(qdir), "--all", "--yes", "--admin-url", url)
    assert no_token.returncode == 2 and "401" in no_token.stderr and "--token" in no_token.stderr
    wrong = ringq_cli("snapshot", str(qdir), "--admin-url", url, "--token", "nope")
    assert wrong.returncode == 2 and "403" in wrong.stderr
    other = ringq_cli("snapshot", str(tmp_path / "other"), *remote)
    assert other.returncode == 2 and "serves the queue at" in other.stderr

    replay = ringq_cli("dlq", "replay", str(qdir), dead[0]["id"], "--yes", *remote)
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stderr
    purge = ringq_cli("dlq", "purge", str(qdir), dead[1]["id"], "--yes", *remote)
    assert purge.returncode == 0 and "purged 1" in purge.stdout, purge.stderr
    env_token = subprocess.run(
        [sys.executable, "-m", "ringq.cli", "snapshot", str(qdir), "--admin-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RINGQ_ADMIN_TOKEN": "s3cret"},
    )
    assert env_token.returncode == 0 and "snapshot of" in env_token.stdout, env_token.stderr
    # The owner did all of it: its snapshot covers the changes, read back here.
    info = json.loads(ringq_cli("inspect", str(qdir), "--json").stdout)
    assert (info["ready"], info["dead"], info["owner_pid"]) == (1, 1, child.pid)
    assert info["records_replayed"] == 0
    kill_and_collect(child)
    gone = ringq_cli("snapshot", str(qdir), *remote)
    assert gone.returncode == 2 and "cannot reach the admin endpoint" in gone.stderr


def test_bench_command_runs_every_scenario_and_prints_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = ringq_cli("bench", "--smoke", "--tmpdir", str(tmp_path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads(out.read_text())
    assert report["smoke"] is True
    assert report["summary"]["total"] == len(report["scenarios"]) >= 9
    assert all("errors" not in r for r in report["scenarios"].values())
    assert "publish_single" in done.stderr, "progress goes to stderr"
    bad = ringq_cli("bench", "--only", "no_such_scenario")
    assert bad.returncode == 2 and "unknown scenarios" in bad.stderr


def test_repair_accepts_a_lost_manifest_and_says_what_it_did(qdir: Path, spawn: Spawn) -> None:
    import ringq

    with ringq.Queue(qdir) as q:
        q.publish(b"kept", topic="t")
    (qdir / "MANIFEST").unlink()
    # open and verify refuse alike, and say what to do
    done = ringq_cli("verify", str(qdir))
    assert done.returncode == 1 and "ringq repair" in done.stderr, done.stderr
    try:
        ringq.Queue(qdir)
    except ringq.CorruptionError as e:
        assert "MANIFEST" in str(e) and "ringq repair" in str(e)
    else:
        raise AssertionError("a queue without its MANIFEST opened")
    done = ringq_cli("repair", str(qdir))
    assert done.returncode == 0, done.stderr
    assert "MANIFEST was missing" in done.stdout and "new instance id" in done.stdout
    again = json.loads(ringq_cli("repair", str(qdir), "--json").stdout)
    assert again["ok"] and again["changes"] == []
    with ringq.Queue(qdir) as q:
        [d] = q.checkout("t", timeout=0)
        assert d.payload == b"kept"
    # not on a queue a running process owns, nor on what is not a queue
    child = spawn(
        """
        import sys, time, ringq
        q = ringq.Queue(sys.argv[1])
        print("ready", flush=True)
        time.sleep(60)
        """,
        str(qdir),
    )
    assert read_line(child) == "ready"
    owned = ringq_cli("repair", str(qdir))
    assert owned.returncode == 3 and str(child.pid) in owned.stderr, owned.stderr
    assert ringq_cli("repair", str(qdir.parent / "nope")).returncode == 2


def test_serve_has_a_flag_for_every_queue_option_but_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ringq serve``'s flags are the rows of ``QUEUE_OPTIONS`` (but
    ``shared``, always on): each one given reaches the queue as its option,
    typed; none given passes nothing (the queue's defaults)."""
    import ringq.serve
    from click.testing import CliRunner
    from ringq.cli import main
    from ringq.config import QUEUE_OPTIONS, QueueOption

    received: list[dict[str, Any]] = []

    def fake_serve(path: str, options: dict[str, Any], stats_every: float = 60.0) -> int:
        received.append(options)
        return 0

    monkeypatch.setattr(ringq.serve, "serve", fake_serve)

    def example(o: QueueOption) -> tuple[list[str], object]:
        flag = "--" + o.name.replace("_", "-")
        if o.kind == "bool":
            return [f"--no-{flag[2:]}"], False
        if o.kind == "choice":
            return [flag, o.choices[-1]], o.choices[-1]
        if o.kind == "int":
            assert o.ge is not None
            return [flag, str(o.ge + 1)], o.ge + 1
        return [flag, "2.5"], 2.5

    runner = CliRunner()
    path = str(tmp_path / "q")
    assert runner.invoke(main, ["serve", path]).exit_code == 0
    assert received.pop() == {}
    for o in QUEUE_OPTIONS:
        args, value = example(o)
        result = runner.invoke(main, ["serve", path, *args])
        if o.name == "shared":
            assert result.exit_code == 2 and "No such option" in result.output
            continue
        assert result.exit_code == 0, (o.name, result.output)
        got = received.pop()
        assert got == {o.name: value} and type(got[o.name]) is type(value), o.name


def test_changing_commands_keep_more_dead_letters_than_the_default_capacity(qdir: Path) -> None:
    """A queue whose application allows 10,050 dead letters holds 10,020:
    ``ringq snapshot`` and ``ringq dlq replay`` open it with a dead-letter
    capacity that holds them all (it is not stored in the directory). They
    opened it with the default, 10,000, and recovery dropped the oldest 20
    for good as soon as the command wrote anything."""
    with ringq.Queue(qdir, max_attempts=1, dlq_capacity=10_050) as q:
        q.publish_many([b"%d" % i for i in range(10_020)], topic="t")
        for d in q.checkout("t", max_messages=10_020, timeout=0):
            q.nack(d, error="bad")
        assert len(q.dlq) == 10_020
    assert ringq_cli("snapshot", str(qdir)).returncode == 0
    assert json.loads(ringq_cli("inspect", str(qdir), "--json").stdout)["dead"] == 10_020
    [oldest] = json.loads(ringq_cli("dlq", "list", str(qdir), "--json", "--limit", "1").stdout)
    replay = ringq_cli("dlq", "replay", str(qdir), oldest["id"], "--yes")
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stderr
    info = json.loads(ringq_cli("inspect", str(qdir), "--json").stdout)
    assert (info["dead"], info["ready"]) == (10_019, 1)

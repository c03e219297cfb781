"""Cancel racing checkouts, then SIGKILL: a child process runs a consumer
thread (checkout, ack) and a canceller thread (``q.cancel`` of random ids)
on one queue with ``durability="always"``, printing each result only after
its call returned; the parent kills it at a random moment and reopens the
queue. A message reported cancelled is never acked and never comes back;
one reported acked never comes back; every other message is still there,
but for the few whose call returned while the kill cut off its line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import OpenQueue, Spawn, drain, kill_and_collect, read_line

CHILD = """
import random, sys, threading, time, ringq
q = ringq.Queue(sys.argv[1], durability="always", capacity=100_000)
ids = sys.argv[3].split(",")
rng = random.Random(int(sys.argv[2]))
lock = threading.Lock()

def say(text):
    with lock:
        sys.stdout.write(text)
        sys.stdout.flush()

def consume():
    while True:
        batch = q.checkout(max_messages=rng.randint(1, 8), lease=600, timeout=0.05)
        if not batch:
            continue
        say("".join(f"C {d.id}\\n" for d in batch))
        time.sleep(rng.random() * 0.004)  # in flight for a while: cancels meet it there
        try:
            q.ack(batch)
            lost = set()
        except ringq.LeaseLost as e:
            lost = set(e.ids)
        say("".join(f"A {d.id}\\n" for d in batch if d.id not in lost))

def cancel():
    order = list(ids)
    random.Random(rng.random()).shuffle(order)
    for mid in order:
        say(f"X {mid} {q.cancel(mid)}\\n")

say("open\\n")
threading.Thread(target=consume, daemon=True).start()
cancel()
time.sleep(60)
"""


@pytest.mark.parametrize("round_", range(3))
def test_cancel_racing_checkouts_survives_sigkill(
    round_: int, spawn: Spawn, tmp_path: Path, open_queue: OpenQueue
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    n = 400
    qdir = tmp_path / "q"
    q = open_queue(qdir, durability="always", capacity=100_000)
    published = q.publish_many([b"m-%04d" % i for i in range(n)])
    q.close()
    child = spawn(CHILD, str(qdir), str(rng.randrange(2**32)), ",".join(published))
    assert read_line(child) == "open"
    kill_at = rng.randint(100, 500)
    lines = [read_line(child) for _ in range(kill_at)]
    lines += kill_and_collect(child)
    context = f"seed={seed} kill_at={kill_at}"

    acked: set[str] = set()
    checked_out: set[str] = set()
    cancelled: dict[str, str] = {}
    not_found: set[str] = set()
    for line in lines:
        kind, mid, *rest = line.split()
        if kind == "C":
            checked_out.add(mid)
        elif kind == "A":
            acked.add(mid)
        elif rest[0] == "not_found":
            not_found.add(mid)
        else:
            cancelled[mid] = rest[0]
    assert cancelled, f"{context}: nothing was cancelled before the kill"
    assert not acked & cancelled.keys(), f"{context}: acked and cancelled"
    for mid, what in cancelled.items():
        if what == "cancelled_in_flight":
            assert mid in checked_out, f"{context}: {mid} was not in flight"
    assert not_found <= acked | checked_out, f"{context}: not found, yet never taken"

    q = open_queue(qdir, durability="always", capacity=100_000)
    found = {d.id for d in drain(q)}
    assert not found & (acked | cancelled.keys()), f"{context}: came back"
    # Gone without a line: a batch acked (or a cancel returned) as the kill
    # cut its output off, at most 8 + 1 messages.
    missing = set(published) - found - acked - cancelled.keys()
    assert len(missing) <= 9, f"{context}: missing {sorted(missing)[:10]}"
    assert missing <= checked_out | not_found | set(published), context
    assert q.stats()["dead"] == 0, context
    q.close()

"""Ordering keys with real handler workers, then SIGKILL: a child process
runs a handler with several workers over messages of a few keys (with
``durability="always"``) and checks, in the handler, that no key is ever
handled twice at once and that each key's messages start in publish order.
It prints a line as each message starts; the parent kills it at a random
moment and reopens the queue. The message a killed worker held comes back
first of its key, no message is lost, and the rest of every key is still
delivered one at a time, in order."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue, Spawn, kill_and_collect, read_line

KEYS = 6
PER_KEY = 60

CHILD = """
import random, sys, threading, time, ringq
q = ringq.Queue(sys.argv[1], durability="always", capacity=10_000)
rng = random.Random(int(sys.argv[2]))
lock = threading.Lock()
running = set()
last = {}

def say(text):
    sys.stdout.write(text)
    sys.stdout.flush()

@q.handler(bytes, topic="t", max_parallelism=4)
def handle(payload: bytes, ctx: ringq.Context) -> None:
    key, seq = ctx.delivery.ordering_key, int(payload.split(b"-")[1])
    with lock:
        if key in running:
            say(f"VIOLATION {key} twice at once\\n")
        if seq not in (last.get(key, -1), last.get(key, -1) + 1):
            say(f"VIOLATION {key} {seq} after {last.get(key)}\\n")
        running.add(key)
        last[key] = seq
        say(f"S {key} {seq}\\n")
    time.sleep(rng.random() * 0.003)
    with lock:
        running.discard(key)

say("open\\n")
q.start()
time.sleep(60)
"""


@pytest.mark.parametrize("round_", range(3))
def test_a_key_held_by_a_killed_worker_comes_back_first_and_in_order(
    round_: int, spawn: Spawn, tmp_path: Path, open_queue: OpenQueue
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    qdir = tmp_path / "q"
    q = open_queue(qdir, durability="always", capacity=10_000)
    items = [
        ringq.Message(b"%d-%d" % (k, i), topic="t", ordering_key=f"k{k}")
        for i in range(PER_KEY)
        for k in range(KEYS)
    ]
    q.publish_many(items)
    q.close()
    child = spawn(CHILD, str(qdir), str(rng.randrange(2**32)))
    assert read_line(child) == "open"
    kill_at = rng.randint(20, KEYS * PER_KEY - 20)
    lines = [read_line(child) for _ in range(kill_at)]
    lines += kill_and_collect(child)
    context = f"seed={seed} kill_at={kill_at}"
    assert not [line for line in lines if line.startswith("VIOLATION")], context
    started: dict[str, int] = {}
    for line in lines:
        _, key, seq = line.split()
        started[key] = max(started.get(key, -1), int(seq))

    q = open_queue(qdir)
    remaining: dict[str, list[int]] = defaultdict(list)
    while batch := q.checkout("t", max_messages=100, timeout=0):
        keys = [d.ordering_key for d in batch]
        assert len(keys) == len(set(keys)), f"two of one key at once: {keys} ({context})"
        for d in batch:
            assert d.ordering_key is not None
            remaining[d.ordering_key].append(int(d.payload.split(b"-")[1]))
        q.ack(batch)
    for k in range(KEYS):
        key = f"k{k}"
        got = remaining.get(key, [])
        last = started.get(key, -1)
        # The last message started was acked before the kill, or comes back first.
        first = got[0] if got else PER_KEY
        assert first in (last, last + 1), (
            f"{key}: resumes at {first}, last started {last} ({context})"
        )
        assert got == list(range(first, PER_KEY)), f"{key}: {got} ({context})"
    assert q.stats()["total"] == 0

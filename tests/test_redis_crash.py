"""Crashes of a Redis queue's clients and of the server itself (issue 14).

Real processes: each test starts its own ``redis-server`` (``appendonly
yes``, ``appendfsync always``) in a fresh directory, so killing it leaves
the other tests' server alone; clients are child Python processes. Every
kill is SIGKILL. A child prints a line only after the call it reports
returned, so whatever the parent read is something the contract says
must hold. Leases are short (0.5-1.5 s) where the test waits for one to run
out: on Redis the reaper runs on the clients' wall clock.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import ManualClockQueue, Spawn, kill_and_collect, read_line
from redis_servers import RedisServer

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (scripts/dev test installs it)",
)

NO_MESSAGES = {"ready": 0, "in_flight": 0, "delayed": 0}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """This test's own redis-server (SIGKILLed and restarted at will)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/dev test installs it)")
    s = RedisServer(tmp_path / "redis", "always")
    s.start()
    yield s
    s.stop()


def url_of(server: RedisServer) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def drain_all(q: ringq.Queue, topic: str, timeout: float = 10.0) -> list[ringq.Delivery]:
    """Every message of ``topic``, those leased to a dead client included:
    checkout waits (woken when a lease runs out) until nothing of the topic
    is ready, delayed or in flight but what this call holds."""
    got: list[ringq.Delivery] = []
    deadline = time.monotonic() + timeout
    while True:
        got += q.checkout(topic, max_messages=1000, lease=600, timeout=0.25)
        left = q.topic_stats().get(topic, NO_MESSAGES)
        if (left["ready"], left["delayed"], left["in_flight"]) == (0, 0, len(got)):
            return got
        assert time.monotonic() < deadline, f"{topic}: {left} after {timeout} s, {len(got)} held"


class Output:
    """A child's stdout lines, read as they come by a thread (so a child is
    never blocked on a full pipe while the test waits on another)."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.child.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float = 20.0) -> list[str]:
        with self._cond:
            ok = self._cond.wait_for(lambda: done(self.lines) or "<eof>" in self.lines, timeout)
            assert ok and done(self.lines), f"child rc={self.child.poll()}: {self.lines[-5:]}"
            return list(self.lines)

    def now(self) -> list[str]:
        with self._cond:
            return list(self.lines)


def ids(lines: list[str], *kinds: str) -> list[str]:
    return [line.split()[1] for line in lines if line.split()[0] in kinds]


# -- 1. a client killed while it acks with follow-ups ---------------------------

ACK_WITH_FOLLOW_UPS = """
import random, sys, ringq
from ringq.backend import OutgoingMessage
q = ringq.Queue(sys.argv[1], namespace=sys.argv[2])
rng = random.Random(int(sys.argv[3]))
print("open", flush=True)
while True:
    batch = q.checkout("in", max_messages=rng.randint(1, 8), lease=0.5, timeout=0)
    if not batch:
        print("empty", flush=True)
        break
    q.backend.ack(batch, publish=[
        m
        for d in batch
        for m in (
            OutgoingMessage("out", b"o:" + d.payload, causation_id=d.id),
            OutgoingMessage("audit", b"a:" + d.payload, dedup_key=d.payload.decode()),
        )
    ])
    sys.stdout.write("".join(f"A {d.payload.decode()}\\n" for d in batch))
    sys.stdout.flush()
import time
time.sleep(60)
"""


def test_a_client_killed_mid_ack_leaves_each_message_acked_with_its_follow_ups_or_neither(
    server: RedisServer, spawn: Spawn
) -> None:
    url, kills = url_of(server), 6
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for round_ in range(2):
        ns = f"acks{round_}"
        q = ringq.Queue(url, namespace=ns)
        inputs = [b"i-%05d" % i for i in range(1500)]
        id_of = dict(zip(inputs, q.publish_many(inputs, "in"), strict=True))
        printed: set[bytes] = set()
        for kill in range(kills):
            # Each client carries on where the killed one stopped.
            child = spawn(ACK_WITH_FOLLOW_UPS, url, ns, str(rng.randrange(2**32)))
            assert read_line(child) == "open"
            lines = [read_line(child) for _ in range(rng.randint(10, 100))]
            # A line comes right after a call returned: wait a little, so the
            # kill lands anywhere in the loop, not always just after an ack.
            time.sleep(rng.uniform(0, 0.003))
            lines += kill_and_collect(child)
            assert "empty" not in lines, f"seed={seed} round={round_} kill={kill}"
            printed |= {line.split()[1].encode() for line in lines}
        context = f"seed={seed} round={round_}"

        # The killed clients' last batches come back once their leases run out.
        left = drain_all(q, "in")
        acked = set(inputs) - {d.payload for d in left}
        outs = drain_all(q, "out")
        audits = drain_all(q, "audit")
        # Each acked input has both follow-ups, once; no other input has any.
        assert Counter(d.payload for d in outs) == Counter(b"o:" + x for x in acked), context
        assert Counter(d.payload for d in audits) == Counter(b"a:" + x for x in acked), context
        assert all(d.causation_id == id_of[d.payload[2:]] for d in outs), context
        # What the clients reported acked was; besides that at most one batch
        # per kill whose ack landed but whose line the kill cut off.
        assert printed <= acked, context
        assert len(acked - printed) <= 8 * kills, context
        # Each delivery before this drain was to a client killed holding it:
        # at most one batch of 8 per kill.
        assert sum(d.attempt - 1 for d in left) <= 8 * kills, context
        assert q.stats()["acked"] == len(acked), context
        q.close()


# -- 2. a consumer killed while it holds leases -----------------------------------

HOLD_LEASES = """
import sys, time, ringq
q = ringq.Queue(sys.argv[1], namespace=sys.argv[2])
lease = float(sys.argv[3])
for d in q.checkout("t", max_messages=10, lease=600, timeout=5):
    q.nack(d, delay=0)  # a failed attempt: back at the end, attempt 1 counted
held = q.checkout("t", max_messages=20, lease=lease, timeout=5)
kept = q.checkout("t", max_messages=5, lease=600, timeout=5)
for d in held:
    print("S", d.id, d.attempt, d.lease_deadline)
for d in kept:
    print("K", d.id, d.attempt)
print("holding", flush=True)
time.sleep(600)
"""

WAIT_FOR_REDELIVERY = """
import os, sys, time, ringq
q = ringq.Queue(sys.argv[1], namespace=sys.argv[2])
go, want = sys.argv[3], int(sys.argv[4])
print("waiting", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
got = 0
end = time.monotonic() + 10
while got < want and time.monotonic() < end:
    for d in q.checkout("t", max_messages=100, lease=600, timeout=5):
        print("R", d.id, d.attempt, time.time(), flush=True)
        got += 1
print("done", flush=True)
"""


def test_a_killed_consumers_leases_are_redelivered_with_attempt_plus_one_after_they_run_out(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    url, ns, lease, go = url_of(server), "hold", 1.5, tmp_path / "go"
    q = ringq.Queue(url, namespace=ns)
    q.publish_many([b"m-%02d" % i for i in range(25)], "t")
    # The other consumer is up first; it starts checking out (and waits)
    # when told to, just before the holder dies.
    other = spawn(WAIT_FOR_REDELIVERY, url, ns, str(go), "20")
    assert read_line(other) == "waiting"
    holder = spawn(HOLD_LEASES, url, ns, str(lease))
    lines = []
    while (line := read_line(holder)) != "holding":
        lines.append(line.split())
    held = {f[1]: (int(f[2]), float(f[3])) for f in lines if f[0] == "S"}
    kept = {f[1] for f in lines if f[0] == "K"}
    assert len(held) == 20 and len(kept) == 5
    assert sorted(a for a, _ in held.values()) == [1] * 15 + [2] * 5

    go.touch()
    kill_and_collect(holder)
    assert q.checkout("t", timeout=0) == [], "nothing is ready while the leases run"

    redelivered: list[tuple[str, int, float]] = []
    while (line := read_line(other)) != "done":
        _, mid, attempt, at = line.split()
        redelivered.append((mid, int(attempt), float(at)))
    assert sorted(r[0] for r in redelivered) == sorted(held)
    for mid, attempt_now, came_at in redelivered:
        assert attempt_now == held[mid][0] + 1, mid
        # Not before its lease ran out, and soon after (the waiter is woken).
        assert held[mid][1] <= came_at < held[mid][1] + 3.0, (mid, held[mid][1], came_at)
    # The leases the holder took for 600 s still stand.
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["expired"]) == (0, 25, 20)
    assert q.checkout("t", timeout=0) == []
    q.close()


# -- 3. the server killed while producers publish and consumers ack --------------

PRODUCE = """
import os, sys, time, ringq
q = ringq.Queue(sys.argv[1], namespace=sys.argv[2])
me, stop, many = sys.argv[3], sys.argv[4], sys.argv[5] == "many"
print("open", flush=True)
i = 0
while not os.path.exists(stop):
    payloads = [b"%s-%06d" % (me.encode(), i + k) for k in range(5 if many else 1)]
    try:
        ids = q.publish_many(payloads, "t") if many else [q.publish(payloads[0], "t")]
    except ringq.BackendUnavailable:
        time.sleep(0.05)
        continue  # unknown whether it landed: publish again (at least once)
    sys.stdout.write("".join(f"P {mid}\\n" for mid in ids))
    sys.stdout.flush()
    i += len(payloads)
print("done", flush=True)
"""

CONSUME = """
import os, sys, time, ringq
q = ringq.Queue(sys.argv[1], namespace=sys.argv[2])
stop = sys.argv[3]
print("open", flush=True)
while True:
    try:
        batch = q.checkout("t", max_messages=10, lease=600, timeout=0.2)
    except ringq.BackendUnavailable:
        time.sleep(0.05)
        continue
    if not batch:
        if os.path.exists(stop):
            break
        continue
    sys.stdout.write("".join(f"C {d.id}\\n" for d in batch))
    sys.stdout.flush()
    while True:
        try:
            q.ack(batch)
            lost = []
        except ringq.BackendUnavailable:
            time.sleep(0.05)
            continue  # unknown whether it landed: ack again
        except ringq.LeaseLost as e:
            # A 600 s lease cannot have run out: an earlier try of this ack landed.
            lost = e.ids
        break
    sys.stdout.write("".join(f"{'L' if d.id in lost else 'A'} {d.id}\\n" for d in batch))
    sys.stdout.flush()
print("done", flush=True)
"""


def restart_on_its_aof(server: RedisServer) -> None:
    """Starts a killed server again on its AOF, repaired first as an
    operator would (``redis-check-aof --fix``). Without that, Redis 7.0
    (Debian's) truncates a tail torn *inside* a script's MULTI/EXEC to a
    dangling MULTI, and the restart after the next crash applies half of
    that script (fixed in Valkey: valkey-io/valkey#4342)."""
    manifest = server.dir / "appendonlydir" / "appendonly.aof.manifest"
    subprocess.run(
        ["redis-check-aof", "--fix", str(manifest)],
        input="y\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    server.start()


@pytest.mark.skipif(shutil.which("redis-check-aof") is None, reason="needs redis-tools")
def test_redis_server_sigkilled_and_restarted_loses_no_confirmed_publish_and_redelivers_no_ack(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    url, ns, stop = url_of(server), "crash", str(tmp_path / "stop")
    ringq.Queue(url, namespace=ns).close()
    producers = [
        Output(spawn(PRODUCE, url, ns, f"p{k}", stop, kind))
        for k, kind in enumerate(("one", "many"))
    ]
    consumers = [Output(spawn(CONSUME, url, ns, stop)) for _ in range(2)]
    everyone = producers + consumers
    for o in everyone:
        o.wait_for(lambda lines: "open" in lines)

    def confirmed() -> int:
        return sum(len(ids(p.now(), "P")) for p in producers)

    def until_confirmed(more: int) -> None:
        at_least = confirmed() + more
        producers[0].wait_for(lambda _: confirmed() >= at_least)

    # Per kill: how many lines of each consumer had been read when it came.
    kills: list[list[int]] = []
    for _ in range(2):
        # Let work build up, then kill the server in the middle of it.
        until_confirmed(400)
        for c in consumers:
            c.wait_for(lambda lines: len(ids(lines, "A")) > 20)
        server.kill()
        kills.append([len(c.now()) for c in consumers])
        time.sleep(0.1)
        restart_on_its_aof(server)
    until_confirmed(400)
    Path(stop).touch()
    for o in everyone:
        o.wait_for(lambda lines: "done" in lines)
        assert o.child.wait(10) == 0

    produced = [line for p in producers for line in p.now()]
    consumed = [c.now() for c in consumers]
    confirmed_ids = set(ids(produced, "P"))
    acked = {mid for lines in consumed for mid in ids(lines, "A", "L")}
    taken = Counter(mid for lines in consumed for mid in ids(lines, "C"))
    assert len(ids(produced, "P")) == len(confirmed_ids), "one id confirmed twice"
    assert len(confirmed_ids) >= 1200
    assert sum(map(len, consumed)) > sum(kills[-1]) + 100, "the consumers went on after the kills"

    # A checkout whose answer the kill cut off leased messages to nobody
    # (the consumer was told "unknown" and asked again): a manual clock
    # ends those leases now instead of in 600 s.
    q = ManualClockQueue(url, namespace=ns)
    q.advance(3600)
    present = {d.id for d in drain_all(q, "t")}
    lost = confirmed_ids - acked - present
    assert not lost, f"{len(lost)} confirmed publishes lost: {sorted(lost)[:5]}"
    assert not acked & present, "acked messages are still in the queue"
    for k, read in enumerate(kills):
        acked_before = set()
        taken_after = set()
        for lines, n in zip(consumed, read, strict=True):
            acked_before |= set(ids(lines[:n], "A", "L"))
            taken_after |= set(ids(lines[n:], "C"))
        again = acked_before & (taken_after | present)
        assert not again, f"acked before kill {k}, delivered again: {sorted(again)[:5]}"
    twice = [mid for mid, n in taken.items() if n > 1]
    assert not twice, f"delivered twice: {twice[:5]}"
    assert set(taken) == acked, "every delivery the consumers reported was acked"
    assert q.stats()["acked"] == len(acked)
    q.close()


# -- 4. two clients' reapers racing over many expired leases -------------------------

RACE = """
import os, random, sys, time, ringq
q = ringq.Queue(sys.argv[1], namespace=sys.argv[2])
go = sys.argv[3]
rng = random.Random(int(sys.argv[4]))
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
with open(go) as f:
    start_at = float(f.read())
time.sleep(max(0.0, start_at - time.time()))
while batch := q.checkout("t", max_messages=rng.randint(1, 10), lease=600, timeout=0):
    sys.stdout.write("".join(f"{d.id} {d.attempt}\\n" for d in batch))
    sys.stdout.flush()
print("end", flush=True)
"""


def test_two_clients_reaping_the_same_expired_leases_redeliver_each_message_exactly_once(
    server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    url, ns, n, lease, go = url_of(server), "race", 2400, 1.0, tmp_path / "go"
    seed = random.randrange(2**32)
    racers = [Output(spawn(RACE, url, ns, str(go), str(seed + k))) for k in range(2)]
    q = ringq.Queue(url, namespace=ns)
    q.publish_many([b"r-%05d" % i for i in range(n)], "t")
    for d in q.checkout("t", max_messages=400, lease=600, timeout=0):
        q.nack(d, delay=0)  # these come round with attempt 2
    for r in racers:
        r.wait_for(lambda lines: "ready" in lines)
    held: list[ringq.Delivery] = []
    while batch := q.checkout("t", max_messages=1000, lease=lease, timeout=0):
        held += batch
    assert len(held) == n
    before = {d.id: d.attempt for d in held}
    assert Counter(before.values()) == {1: n - 400, 2: 400}

    # Both racers start at once, after every lease has run out (more than
    # one reap's worth: the scripts reap 1000 at a time).
    start_at = max(d.lease_deadline for d in held) + 0.05
    (tmp_path / "go.tmp").write_text(repr(start_at))
    (tmp_path / "go.tmp").rename(go)
    got: list[list[tuple[str, int]]] = []
    for r in racers:
        lines = r.wait_for(lambda lines: "end" in lines)
        assert r.child.wait(10) == 0
        its_lines = lines[lines.index("ready") + 1 : lines.index("end")]
        got.append([(mid, int(a)) for mid, a in (x.split() for x in its_lines)])

    context = f"seed={seed} per racer={[len(g) for g in got]}"
    taken = Counter(mid for lines in got for mid, _ in lines)
    assert set(taken) == set(before), context
    assert max(taken.values()) == 1, f"{context}: redelivered twice"
    assert all(a == before[mid] + 1 for lines in got for mid, a in lines), context
    assert all(got), f"{context}: one racer got nothing, so nothing raced"
    s = q.stats()
    assert (s["ready"], s["in_flight"], s["expired"]) == (0, n, n), context
    q.close()

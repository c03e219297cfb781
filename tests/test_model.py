"""The engine against a plain Python model of the contract (hypothesis stateful testing).

The queue runs on a manual clock (``ManualClockQueue``): time passes only in
the ``advance`` rule, so the model knows exactly which leases ran out (the
message comes back with its next attempt, is dead-lettered after the last
one, or is dropped if superseded; its old delivery is refused) and which
delays fell due (invisible before, then first deliveries in due order).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import ringq
from conftest import ManualClockQueue
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

TOPICS = st.sampled_from(["a", "a", "b"])  # mostly one topic: more interplay
KEYS = st.sampled_from([None, "k1", "k2"])
PAYLOADS = st.binary(max_size=16)
DELAYS = st.sampled_from([None, None, None, 3.0, 20.0])
LEASES = st.sampled_from([5.0, 30.0, 600.0])
STEPS = st.sampled_from([0.5, 5.0, 15.0, 40.0])
MAX_ATTEMPTS = 3
US = 1_000_000


def us(seconds: float) -> int:
    return round(seconds * US)


@dataclass
class Msg:
    id: str
    topic: str
    payload: bytes
    key: str | None
    version: int | None  # None: a successor of an in-flight holder, version not pinned down
    deliveries: int = 0
    in_flight: bool = False
    superseded: bool = False
    due: int | None = None  # delayed until (microseconds on the model's clock)


@dataclass
class Model:
    now: int = 0  # microseconds since the clock's start
    msgs: dict[str, Msg] = field(default_factory=dict)  # live: ready, delayed or in flight
    fresh: dict[str, list[str]] = field(default_factory=dict)  # never delivered, FIFO
    retry: dict[str, set[str]] = field(default_factory=dict)  # ready again after a delivery
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # key -> live carrier
    deadlines: dict[str, int] = field(default_factory=dict)  # id -> lease deadline
    dead: int = 0
    superseded_dropped: int = 0

    def ready(self, topic: str | None = None) -> int:
        topics = [topic] if topic else list(self.fresh.keys() | self.retry.keys())
        return sum(len(self.fresh.get(t, [])) + len(self.retry.get(t, set())) for t in topics)

    def delayed(self) -> int:
        return sum(1 for m in self.msgs.values() if m.due is not None)

    def remove(self, m: Msg) -> None:
        del self.msgs[m.id]
        self.deadlines.pop(m.id, None)
        if m.key is not None and self.keys.get((m.topic, m.key)) == m.id:
            del self.keys[(m.topic, m.key)]

    def become_ready(self, m: Msg) -> None:
        m.due = None
        if m.deliveries == 0:
            self.fresh.setdefault(m.topic, []).append(m.id)
        else:
            self.retry.setdefault(m.topic, set()).add(m.id)

    def fail(self, m: Msg, retry_at: int | None = None) -> None:
        """A nack, an expiry or a restart with ``m`` in flight."""
        m.in_flight = False
        self.deadlines.pop(m.id, None)
        if m.superseded:
            self.remove(m)
            self.superseded_dropped += 1
        elif m.deliveries >= MAX_ATTEMPTS:
            self.remove(m)
            self.dead += 1
        elif retry_at is not None:
            m.due = retry_at
        else:
            self.become_ready(m)

    def advance(self, to: int) -> list[str]:
        """Time passes until ``to``: leases that ran out fail, delays that
        fell due become ready (in due order). Returns the expired ids."""
        expired = sorted((d, i) for i, d in self.deadlines.items() if d <= to)
        for _, mid in expired:
            self.fail(self.msgs[mid])
        due = sorted((m.due, m.id) for m in self.msgs.values() if m.due is not None and m.due <= to)
        for _, mid in due:
            self.become_ready(self.msgs[mid])
        self.now = to
        return [mid for _, mid in expired]


class QueueMatchesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ringq-model-"))
        self.q = self.open()
        self.start = us(self.q.now())
        self.model = Model()
        self.held: list[ringq.Delivery] = []
        self.expired: list[ringq.Delivery] = []
        self.last_id = ""
        self.dropped_before_open = 0  # the engine counts drops since it opened

    def open(self) -> ManualClockQueue:
        return ManualClockQueue(self.dir / "q", max_attempts=MAX_ATTEMPTS)

    def teardown(self) -> None:
        if not self.q.closed:
            self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def seconds(self, t: int) -> float:
        """The model's time ``t`` as the queue's clock shows it."""
        return (self.start + t) / US

    def new_message(
        self, mid: str, topic: str, payload: bytes, key: str | None, delay: float | None
    ) -> Msg:
        assert mid > self.last_id, "ids must increase in publish order"
        self.last_id = mid
        m = Msg(mid, topic, payload, key, version=1)
        self.model.msgs[mid] = m
        if delay:
            m.due = self.model.now + us(delay)
        else:
            self.model.fresh.setdefault(topic, []).append(mid)
        if key is not None:
            self.model.keys[(topic, key)] = mid
        return m

    @rule(topic=TOPICS, key=KEYS, payload=PAYLOADS, delay=DELAYS)
    def publish(self, topic: str, key: str | None, payload: bytes, delay: float | None) -> None:
        mid = self.q.publish(payload, topic, dedup_key=key, delay=delay)
        holder_id = None if key is None else self.model.keys.get((topic, key))
        if holder_id is None:
            self.new_message(mid, topic, payload, key, delay)
            return
        holder = self.model.msgs[holder_id]
        if not holder.in_flight:
            # Ready or delayed: replaced in place (its due time kept).
            assert mid == holder_id, "replace must keep the id"
            holder.payload = payload
            holder.version = None if holder.version is None else holder.version + 1
            return
        assert mid != holder_id, "replacing an in-flight holder queues a new message"
        holder.superseded = True
        self.new_message(mid, topic, payload, key, delay).version = None

    @rule(topic=TOPICS, key=st.sampled_from(["k1", "k2"]), payload=PAYLOADS)
    def publish_keep(self, topic: str, key: str, payload: bytes) -> None:
        mid = self.q.publish(payload, topic, dedup_key=key, on_duplicate="keep")
        holder_id = self.model.keys.get((topic, key))
        if holder_id is None:
            self.new_message(mid, topic, payload, key, None)
        else:
            assert mid == holder_id

    @rule(topic=TOPICS, payloads=st.lists(PAYLOADS, min_size=1, max_size=3))
    def publish_many(self, topic: str, payloads: list[bytes]) -> None:
        ids = self.q.publish_many(payloads, topic)
        assert len(ids) == len(payloads)
        for mid, payload in zip(ids, payloads, strict=True):
            self.new_message(mid, topic, payload, None, None)

    @rule(topic=TOPICS, n=st.integers(1, 4), lease=LEASES)
    def checkout(self, topic: str, n: int, lease: float) -> None:
        expected = min(n, self.model.ready(topic))
        got = self.q.checkout(topic, max_messages=n, lease=lease, timeout=0)
        assert len(got) == expected
        for d in got:
            m = self.model.msgs[d.id]
            assert not m.in_flight and m.due is None
            assert d.topic == topic
            if m.deliveries == 0:
                assert self.model.fresh[topic][0] == d.id, "first deliveries follow publish order"
                self.model.fresh[topic].pop(0)
            else:
                self.model.retry[topic].remove(d.id)
            assert d.attempt == m.deliveries + 1
            assert d.payload == m.payload
            assert d.dedup_key == m.key
            if m.version is None:
                m.version = d.version
            assert d.version == m.version
            deadline = self.model.now + us(lease)
            assert d.lease_deadline == pytest.approx(self.seconds(deadline), abs=1e-6)
            m.deliveries += 1
            m.in_flight = True
            self.model.deadlines[d.id] = deadline
            self.held.append(d)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(min_value=0))
    def ack(self, index: int) -> None:
        d = self.held.pop(index % len(self.held))
        self.q.ack(d)
        self.model.remove(self.model.msgs[d.id])

    @precondition(lambda self: self.held)
    @rule(index=st.integers(min_value=0), delay=DELAYS)
    def nack(self, index: int, delay: float | None) -> None:
        d = self.held.pop(index % len(self.held))
        self.q.nack(d, delay=delay, error="model says no")
        retry_at = self.model.now + us(delay) if delay else None
        self.model.fail(self.model.msgs[d.id], retry_at)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(min_value=0), seconds=st.sampled_from([5.0, 60.0]))
    def extend(self, index: int, seconds: float) -> None:
        d = self.held[index % len(self.held)]
        deadline = self.model.now + us(seconds)
        assert self.q.extend(d, seconds) == pytest.approx(self.seconds(deadline), abs=1e-6)
        self.model.deadlines[d.id] = deadline

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        to = self.model.now + us(seconds)
        assert self.q.advance(seconds) == pytest.approx(self.seconds(to), abs=1e-6)
        gone = set(self.model.advance(to))
        self.expired += [d for d in self.held if d.id in gone]
        self.held = [d for d in self.held if d.id not in gone]

    @precondition(lambda self: self.expired)
    @rule(index=st.integers(min_value=0))
    def use_an_expired_lease(self, index: int) -> None:
        d = self.expired.pop(index % len(self.expired))
        before = self.q.stats()
        with pytest.raises(ringq.LeaseLost):
            self.q.ack(d)
        after = self.q.stats()
        for k in ("ready", "in_flight", "delayed", "dead", "total"):
            assert after[k] == before[k], k

    @rule()
    def reopen(self) -> None:
        self.q.close()
        self.q = self.open()
        for d in self.held:
            self.model.fail(self.model.msgs[d.id])
        self.held = []
        self.expired = []
        self.dropped_before_open = self.model.superseded_dropped
        # The reopened queue's clock starts at the wall clock's time: bring
        # it to the model's (or the model to it, if the wall clock is ahead).
        behind = self.start + self.model.now - us(self.q.now())
        if behind > 0:
            self.q.advance(behind / US)
        else:
            self.model.advance(self.model.now - behind)
        assert us(self.q.now()) == self.start + self.model.now

    @invariant()
    def stats_match_the_model(self) -> None:
        s = self.q.stats()
        assert s["ready"] == self.model.ready()
        assert s["in_flight"] == len(self.held)
        assert s["delayed"] == self.model.delayed()
        assert s["dead"] == self.model.dead
        assert s["superseded_dropped"] == self.model.superseded_dropped - self.dropped_before_open

    @invariant()
    def dead_letter_count_matches(self) -> None:
        assert len(self.q.dlq) == self.model.dead


QueueMatchesModel.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_queue_matches_python_model = QueueMatchesModel.TestCase

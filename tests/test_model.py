"""The engine against a plain Python model of the contract (hypothesis stateful testing)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ringq
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

TOPICS = st.sampled_from(["a", "a", "b"])  # mostly one topic: more interplay
KEYS = st.sampled_from([None, "k1", "k2"])
PAYLOADS = st.binary(max_size=16)
MAX_ATTEMPTS = 3
LEASE = 600.0


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


@dataclass
class Model:
    msgs: dict[str, Msg] = field(default_factory=dict)  # live: ready or in flight
    fresh: dict[str, list[str]] = field(default_factory=dict)  # never delivered, FIFO
    retry: dict[str, set[str]] = field(default_factory=dict)  # ready again after a delivery
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # key -> live carrier
    dead: int = 0
    superseded_dropped: int = 0

    def ready(self, topic: str | None = None) -> int:
        topics = [topic] if topic else list(self.fresh.keys() | self.retry.keys())
        return sum(len(self.fresh.get(t, [])) + len(self.retry.get(t, set())) for t in topics)

    def remove(self, m: Msg) -> None:
        del self.msgs[m.id]
        if m.key is not None and self.keys.get((m.topic, m.key)) == m.id:
            del self.keys[(m.topic, m.key)]

    def requeue(self, m: Msg) -> None:
        m.in_flight = False
        self.retry.setdefault(m.topic, set()).add(m.id)


class QueueMatchesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ringq-model-"))
        self.q = self.open()
        self.model = Model()
        self.held: list[ringq.Delivery] = []
        self.last_id = ""

    def open(self) -> ringq.Queue:
        return ringq.Queue(self.dir / "q", max_attempts=MAX_ATTEMPTS, lease=LEASE)

    def teardown(self) -> None:
        if not self.q.closed:
            self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_message(self, mid: str, topic: str, payload: bytes, key: str | None) -> None:
        assert mid > self.last_id, "ids must increase in publish order"
        self.last_id = mid
        self.model.msgs[mid] = Msg(mid, topic, payload, key, version=1)
        self.model.fresh.setdefault(topic, []).append(mid)
        if key is not None:
            self.model.keys[(topic, key)] = mid

    @rule(topic=TOPICS, key=KEYS, payload=PAYLOADS)
    def publish(self, topic: str, key: str | None, payload: bytes) -> None:
        mid = self.q.publish(payload, topic, dedup_key=key)
        holder_id = None if key is None else self.model.keys.get((topic, key))
        if holder_id is None:
            self.new_message(mid, topic, payload, key)
            return
        holder = self.model.msgs[holder_id]
        if not holder.in_flight:
            assert mid == holder_id, "replace must keep the id"
            holder.payload = payload
            holder.version = None if holder.version is None else holder.version + 1
            return
        assert mid != holder_id, "replacing an in-flight holder queues a new message"
        holder.superseded = True
        self.new_message(mid, topic, payload, key)
        self.model.msgs[mid].version = None

    @rule(topic=TOPICS, key=st.sampled_from(["k1", "k2"]), payload=PAYLOADS)
    def publish_keep(self, topic: str, key: str, payload: bytes) -> None:
        mid = self.q.publish(payload, topic, dedup_key=key, on_duplicate="keep")
        holder_id = self.model.keys.get((topic, key))
        if holder_id is None:
            self.new_message(mid, topic, payload, key)
        else:
            assert mid == holder_id

    @rule(topic=TOPICS, payloads=st.lists(PAYLOADS, min_size=1, max_size=3))
    def publish_many(self, topic: str, payloads: list[bytes]) -> None:
        ids = self.q.publish_many(payloads, topic)
        assert len(ids) == len(payloads)
        for mid, payload in zip(ids, payloads, strict=True):
            self.new_message(mid, topic, payload, None)

    @rule(topic=TOPICS, n=st.integers(1, 4))
    def checkout(self, topic: str, n: int) -> None:
        expected = min(n, self.model.ready(topic))
        got = self.q.checkout(topic, max_messages=n, timeout=0)
        assert len(got) == expected
        for d in got:
            m = self.model.msgs[d.id]
            assert not m.in_flight
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
            m.deliveries += 1
            m.in_flight = True
            self.held.append(d)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(min_value=0))
    def ack(self, index: int) -> None:
        d = self.held.pop(index % len(self.held))
        self.q.ack(d)
        self.model.remove(self.model.msgs[d.id])

    @precondition(lambda self: self.held)
    @rule(index=st.integers(min_value=0))
    def nack(self, index: int) -> None:
        d = self.held.pop(index % len(self.held))
        self.q.nack(d, error="model says no")
        m = self.model.msgs[d.id]
        if m.superseded:
            self.model.remove(m)
            self.model.superseded_dropped += 1
        elif m.deliveries >= MAX_ATTEMPTS:
            self.model.remove(m)
            self.model.dead += 1
        else:
            self.model.requeue(m)

    @rule()
    def reopen(self) -> None:
        self.q.close()
        self.q = self.open()
        for d in self.held:
            m = self.model.msgs[d.id]
            if m.superseded:
                self.model.remove(m)
            elif m.deliveries >= MAX_ATTEMPTS:
                self.model.remove(m)
                self.model.dead += 1
            else:
                self.model.requeue(m)
        self.held = []

    @invariant()
    def stats_match_the_model(self) -> None:
        s = self.q.stats()
        assert s["ready"] == self.model.ready()
        assert s["in_flight"] == len(self.held)
        assert s["dead"] == self.model.dead
        assert s["delayed"] == 0

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

"""``Queue.publish`` and ``publish_many`` on the engine skip their Python
frame for a plain call (``Engine._fast_publishers``: methods of a class
named ``Queue``): the same results and errors as the methods,
every other call handed to the method, a subclass's override kept, and no
queue kept alive by the fast path."""

from __future__ import annotations

import gc
import inspect
import weakref
from pathlib import Path

import msgspec
import pytest
import ringq
from conftest import OpenQueue
from ringq.core import QueueCore


class Order(msgspec.Struct):
    n: int


def test_a_plain_publish_takes_the_fast_path_and_stores_what_the_method_would(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    assert q.publish.__qualname__ == "Queue.publish"
    assert str(inspect.signature(q.publish)) == "(payload, topic=None, **options)"
    assert "help(ringq.Queue.publish)" in (q.publish.__doc__ or "")
    fast = [q.publish(b"a"), q.publish(b"b", "t"), q.publish(b"c", topic="t")]
    slow = [QueueCore.publish(q, b"d"), QueueCore.publish(q, b"e", "t")]
    assert [d.payload for d in q.checkout("default", 10, timeout=0)] == [b"a", b"d"]
    assert [d.payload for d in q.checkout("t", 10, timeout=0)] == [b"b", b"c", b"e"]
    assert len(set(fast + slow)) == 5


def test_other_calls_go_to_the_method(open_queue: OpenQueue) -> None:
    q = open_queue()
    # Objects are encoded (topic named after the type, type tag header).
    q.publish(Order(1), "orders")
    (d,) = q.checkout("orders", 1, timeout=0)
    assert msgspec.json.decode(d.payload, type=Order) == Order(1)
    assert d.headers["ringq-type"]
    # str payloads, options, a Message.
    q.publish("text", "s")
    first = q.publish(b"v1", "k", dedup_key="key")
    assert q.publish(b"v2", "k", dedup_key="key") == first
    q.publish(ringq.Message(b"m", topic="m", headers={"h": "1"}))
    assert [x.payload for x in q.checkout("s", 5, timeout=0)] == [b"text"]
    (k,) = q.checkout("k", 5, timeout=0)
    assert (k.payload, k.version) == (b"v2", 2)
    (m,) = q.checkout("m", 5, timeout=0)
    assert m.headers == {"h": "1"}


def test_errors_are_the_methods(open_queue: OpenQueue) -> None:
    q = open_queue(capacity=1)
    with pytest.raises(TypeError):
        q.publish(b"x", 5)  # type: ignore[arg-type]
    # An unknown keyword is refused naming what was called, as the method
    # would (it named an engine method, ``Engine.publish_fast()``, before).
    unknown = r"publish\(\) got an unexpected keyword argument 'no_such_option'$"
    with pytest.raises(TypeError, match=r"^Queue\." + unknown):
        q.publish(b"x", "t", no_such_option=1)  # type: ignore[call-arg]
    missing = r"^Queue\.publish\(\) missing 1 required positional argument: 'payload'$"
    with pytest.raises(TypeError, match=missing):
        q.publish()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Queue\.publish_many\(\) got an unexpected keyword"):
        q.publish_many([b"x"], "t", no_such_option=1)  # type: ignore[call-arg]
    q.publish(b"x")
    with pytest.raises(ringq.QueueFull):
        q.publish(b"y", block=False)
    q.close()
    with pytest.raises(ringq.QueueClosed):
        q.publish(b"z")


def test_a_subclass_that_overrides_publish_keeps_its_own(qdir: Path) -> None:
    seen: list[object] = []

    class Audited(ringq.Queue):
        def publish(self, payload: object, topic: str | None = None, **options: object) -> str:
            seen.append(payload)
            return super().publish(payload, topic, **options)  # type: ignore[arg-type]

    q = Audited(qdir)
    try:
        assert inspect.ismethod(q.publish)
        q.publish(b"x")
        assert seen == [b"x"]
    finally:
        q.close()


def test_the_fast_path_does_not_keep_a_queue_alive(qdir: Path) -> None:
    # The fast path holds the fallbacks weakly: a queue dropped without
    # close() goes at once (no cycle to wait for the collector), and so does
    # its lock.
    gc.disable()
    try:
        q = ringq.Queue(qdir)
        ref = weakref.ref(q)
        q.publish(b"x")
        del q
        assert ref() is None
        with ringq.Queue(qdir) as again:
            assert again.stats()["ready"] == 1
    finally:
        gc.enable()


def test_a_shared_queues_client_takes_it_too(open_queue: OpenQueue, qdir: Path) -> None:
    owner = open_queue(shared=True)
    client = open_queue(shared=True)
    assert client.publish.__qualname__ == "Queue.publish"
    client.publish(b"from client", "c")
    assert [d.payload for d in owner.checkout("c", 5, timeout=5)] == [b"from client"]


def test_publish_many_of_bytes_takes_the_fast_path_and_the_rest_the_method(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(capacity=10)
    assert q.publish_many.__qualname__ == "Queue.publish_many"
    ids = q.publish_many([b"a", b"b"], "t")
    ids += q.publish_many([b"c", Order(3), ringq.Message(b"d", topic="t")], "t")
    ids += q.publish_many(iter([b"e"]), "t")  # an iterator: the method
    got = q.checkout("t", 10, timeout=0)
    assert [d.id for d in got] == ids
    assert got[3].headers["ringq-type"] and got[4].payload == b"d"
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"x"] * 11, "t", block=False)
    with pytest.raises(ringq.QueueFull):
        q.publish_many([b"x"] * 6, "t", timeout=0.01)
    assert q.stats()["in_flight"] == 6

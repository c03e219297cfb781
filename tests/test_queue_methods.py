"""``Queue``'s hot methods (``publish``, ``publish_many``, ``checkout``,
``ack``, ``release``, ``extend``) with the public signatures and semantics of
DESIGN §4, on the seam: each is one Python frame that encodes (if needed) and
calls the backend (``ringq.backend.Backend``) with bytes or
``OutgoingMessage`` values; the engine never calls back into Python.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ringq
from conftest import OpenManualQueue, OpenQueue, drain
from ringq.backend import Backend
from ringq.backends.local import open_local
from ringq.codecs import TYPE_HEADER, topic_for, type_tag
from ringq.core import PublishOptions, outgoing

HOT = ("publish", "publish_many", "checkout", "ack", "release", "extend")


@dataclass
class OrderPlaced:
    order_id: str
    amount: float


class Plain:
    """Not encodable by the msgspec codecs."""


class Api:
    """The hot methods of one queue."""

    def __init__(self, q: ringq.Queue) -> None:
        self.q = q
        for name in HOT:
            setattr(self, name, getattr(q, name))

    publish: Callable[..., str]
    publish_many: Callable[..., list[str]]
    checkout: Callable[..., list[ringq.Delivery]]
    ack: Callable[..., None]
    release: Callable[..., None]
    extend: Callable[..., float]


@pytest.fixture
def api(open_queue: OpenQueue) -> Iterator[Callable[..., Api]]:
    """``api(**queue_options)``: a new queue's hot methods."""

    def make(**options: Any) -> Api:
        return Api(open_queue(**options))

    yield make


# -- the seam ---------------------------------------------------------------------------


def test_hot_methods_are_python_methods_over_the_backend(open_queue: OpenQueue) -> None:
    q = open_queue()
    for name in HOT:
        if name in ("publish", "publish_many"):
            # On the engine: its frameless path for plain calls, which hands
            # every other call to the method (test_fast_publish.py).
            fast = getattr(q, name)
            assert fast.__qualname__ == f"Queue.{name}", name
            assert type(fast.__self__).__module__ == "ringq._core", name
            continue
        assert inspect.ismethod(getattr(q, name)), name
    assert isinstance(q.backend, Backend)
    assert q.backend is q._backend


def test_the_engine_has_the_protocols_signatures() -> None:
    """Every method of ``Backend`` exists on the engine with the same
    parameter names, kinds and defaults (the stub ``_core.pyi`` is checked
    by mypy; this checks the compiled module)."""
    from ringq import _core

    for name, member in inspect.getmembers(Backend, inspect.isfunction):
        if name.startswith("_"):
            continue
        engine_method = getattr(_core.Engine, name)
        want = list(inspect.signature(member).parameters.values())[1:]
        got = list(inspect.signature(engine_method).parameters.values())[1:]
        assert [p.name for p in got] == [p.name for p in want], name
        assert [p.kind for p in got] == [p.kind for p in want], name
        defaults = [p.default for p in got]
        assert defaults == [p.default for p in want], name


def test_publish_signature_is_payload_topic_and_keyword_options() -> None:
    params = inspect.signature(ringq.Queue.publish).parameters
    assert list(params) == ["self", "payload", "topic", "options"]
    assert params["options"].kind is inspect.Parameter.VAR_KEYWORD
    assert set(PublishOptions.__annotations__) == {
        "dedup_key",
        "delay",
        "headers",
        "correlation_id",
        "causation_id",
        "on_duplicate",
        "expected_version",
        "block",
        "timeout",
        "priority",
        "ordering_key",
        "dedup_window",
    }


def test_unknown_publish_options_are_refused(api: Callable[..., Api]) -> None:
    a = api()
    with pytest.raises(TypeError, match="dedupe_key"):
        a.publish(b"x", "t", dedupe_key="k")
    with pytest.raises(TypeError, match="dedupe_key"):
        a.publish("obj", "t", dedupe_key="k")
    assert a.q.stats()["total"] == 0


def test_a_subclass_override_is_called(qdir: Path) -> None:
    calls: list[object] = []

    class Audited(ringq.Queue):
        def publish(self, payload: object, topic: str | None = None, **kw: Any) -> str:
            calls.append(payload)
            return super().publish(payload, topic, **kw)

    q = Audited(qdir)
    try:
        mid = q.publish(b"x", "t", dedup_key="k")
        assert calls == [b"x"]
        assert [d.id for d in q.checkout("t", timeout=0)] == [mid]
    finally:
        q.close()


# -- publish --------------------------------------------------------------------------


def test_publish_bytes_and_str_with_and_without_topic(api: Callable[..., Api]) -> None:
    a = api()
    ids = [a.publish(b"raw"), a.publish("héllo"), a.publish(b"t1", "t"), a.publish("t2", topic="t")]
    assert len(set(ids)) == 4
    assert [(d.payload, d.headers) for d in drain(a.q)] == [(b"raw", {}), ("héllo".encode(), {})]
    assert [d.payload for d in drain(a.q, "t")] == [b"t1", b"t2"]


def test_publish_bytes_like_payloads_are_copied_to_bytes(api: Callable[..., Api]) -> None:
    class Blob(bytes):
        pass

    a = api()
    a.publish(bytearray(b"ba"))
    a.publish(memoryview(b"mv"))
    a.publish(Blob(b"sub"))
    assert [(d.topic, d.payload, d.headers) for d in drain(a.q)] == [
        ("default", b"ba", {}),
        ("default", b"mv", {}),
        ("default", b"sub", {}),
    ]


def test_publish_object_goes_to_its_type_topic_with_the_type_tag(api: Callable[..., Api]) -> None:
    a = api()
    headers = {"trace": "abc"}
    a.publish(OrderPlaced("o-1", 9.5), headers=headers)
    a.publish(OrderPlaced("o-2", 1.0), "explicit", headers=headers)
    assert headers == {"trace": "abc"}, "the caller's dict is not modified"
    [d] = drain(a.q, topic_for(OrderPlaced))
    assert d.payload == b'{"order_id":"o-1","amount":9.5}'
    assert d.headers == {"trace": "abc", TYPE_HEADER: type_tag(OrderPlaced)}
    [e] = drain(a.q, "explicit")
    assert e.headers == {"trace": "abc", TYPE_HEADER: type_tag(OrderPlaced)}
    assert TYPE_HEADER == "ringq-type"


def test_the_type_tag_replaces_a_type_header_given_by_the_caller(api: Callable[..., Api]) -> None:
    a = api()
    a.publish(OrderPlaced("o", 1.0), "t", headers={TYPE_HEADER: "forged", "k": "v"})
    a.publish(b"raw", "t", headers={TYPE_HEADER: "kept for bytes"})
    first, second = drain(a.q, "t")
    assert first.headers == {TYPE_HEADER: type_tag(OrderPlaced), "k": "v"}
    assert second.headers == {TYPE_HEADER: "kept for bytes"}


def test_builtin_values_are_json_on_the_default_topic_without_a_tag(
    api: Callable[..., Api],
) -> None:
    a = api()
    a.publish({"a": 1})
    a.publish([1, 2], "t")
    [d] = drain(a.q)
    assert (d.payload, d.headers) == (b'{"a":1}', {})
    assert drain(a.q, "t")[0].payload == b"[1,2]"


def test_unencodable_payload_raises_and_publishes_nothing(api: Callable[..., Api]) -> None:
    a = api()
    with pytest.raises(TypeError):
        a.publish(Plain())
    assert a.q.stats()["total"] == 0


def test_options_are_keyword_only(api: Callable[..., Api]) -> None:
    a = api()
    with pytest.raises(TypeError):
        a.publish(b"x", "t", "dedup-key")
    with pytest.raises(TypeError):
        a.publish_many([b"x"], "t", False)
    assert a.q.stats()["total"] == 0


def test_keyword_options_reach_the_engine(api: Callable[..., Api]) -> None:
    a = api(capacity=4)
    first = a.publish(b"v1", "t", dedup_key="k")
    second = a.publish(b"v2", "t", dedup_key="k", correlation_id="c", causation_id="z")
    assert second == first, "replaced in place"
    assert a.publish(b"v3", "t", dedup_key="k", on_duplicate="keep") == first
    with pytest.raises(ringq.VersionConflict):
        a.publish(b"v4", "t", dedup_key="k", expected_version=7)
    a.publish(b"later", "t", delay=60.0)
    with pytest.raises(ValueError):
        a.publish(b"x", "t", on_duplicate="sometimes")
    with pytest.raises(ValueError):
        a.publish(b"x", "t", delay=-1.0)
    [d] = a.checkout("t", timeout=0)
    assert (d.payload, d.version, d.dedup_key) == (b"v2", 2, "k")
    assert (d.correlation_id, d.causation_id) == ("c", "z")
    assert a.q.stats()["delayed"] == 1
    a.publish(b"3", "t")
    a.publish(b"4", "t")
    t0 = time.monotonic()
    with pytest.raises(ringq.QueueFull):
        a.publish(b"full", "t", block=False)
    with pytest.raises(ringq.QueueFull):
        a.publish(b"full", "t", timeout=0.05)
    assert time.monotonic() - t0 < 2.0


def test_blocking_publish_waits_for_room_with_the_gil_released(api: Callable[..., Api]) -> None:
    a = api(capacity=1)
    a.publish(b"first")
    published: list[str] = []
    t = threading.Thread(target=lambda: published.append(a.publish(b"second", timeout=10.0)))
    t.start()
    time.sleep(0.1)
    assert published == [] and t.is_alive(), "waits while the queue is full"
    # this thread runs Python meanwhile: the waiting publisher released the GIL
    [d] = a.checkout(timeout=0)
    a.ack(d)
    t.join(5.0)
    assert len(published) == 1
    assert [x.payload for x in drain(a.q)] == [b"second"]


# -- publish_many ---------------------------------------------------------------------


def test_publish_many_mixed_items_with_tags_and_message_options(api: Callable[..., Api]) -> None:
    a = api()

    def items() -> Iterator[object]:  # any iterable, not just a list
        yield b"raw"
        yield "text"
        yield OrderPlaced("o-1", 2.0)
        yield ringq.Message(OrderPlaced("o-2", 3.0), topic="own", dedup_key="k", headers={"h": "1"})
        yield ringq.Message(b"bytes-msg", correlation_id="c")

    ids = a.publish_many(items(), topic="t")
    assert len(ids) == 5
    got = drain(a.q, "t")
    assert [(d.id, d.payload, d.headers) for d in got] == [
        (ids[0], b"raw", {}),
        (ids[1], b"text", {}),
        (ids[2], b'{"order_id":"o-1","amount":2.0}', {TYPE_HEADER: type_tag(OrderPlaced)}),
        (ids[4], b"bytes-msg", {}),
    ]
    assert got[3].correlation_id == "c"
    [own] = drain(a.q, "own")
    assert (own.id, own.dedup_key) == (ids[3], "k")
    assert own.headers == {"h": "1", TYPE_HEADER: type_tag(OrderPlaced)}


def test_publish_many_without_topic_uses_each_items_default(api: Callable[..., Api]) -> None:
    a = api()
    a.publish_many([b"a", OrderPlaced("o", 1.0), ringq.Message("m")])
    assert [d.payload for d in drain(a.q)] == [b"a", b"m"]
    assert len(drain(a.q, topic_for(OrderPlaced))) == 1
    assert a.publish_many([]) == []
    assert a.publish_many((b"x" for _ in range(3)), "g") != []


def test_publish_many_is_all_or_nothing(api: Callable[..., Api]) -> None:
    a = api(capacity=3)
    with pytest.raises(TypeError):
        a.publish_many([b"ok", Plain()])
    with pytest.raises(ringq.QueueFull):
        a.publish_many([b"1", b"2", b"3", b"4"], block=False)
    with pytest.raises(ringq.QueueFull):
        a.publish_many([b"1", b"2", b"3", b"4"], timeout=0.05)
    assert a.q.stats()["total"] == 0


# -- checkout, ack, extend ------------------------------------------------------------


def test_checkout_defaults_to_the_queues_lease(api: Callable[..., Api]) -> None:
    a = api(lease=7.0)
    assert a.q._backend.lease == 7.0
    a.publish(b"a")
    a.publish(b"b")
    before = time.time()
    [d] = a.checkout()  # topic "default", one message, the queue's lease
    assert d.payload == b"a"
    assert before + 7.0 - 0.05 <= d.lease_deadline <= time.time() + 7.0 + 0.5
    [e] = a.checkout("default", 1, 120.0, 0)  # positional, as the dispatcher calls it
    assert e.lease_deadline >= before + 119.0
    with pytest.raises(ValueError):
        a.checkout(lease=0)
    assert a.checkout(timeout=0) == []


def test_checkout_waits_for_a_message_up_to_the_timeout(api: Callable[..., Api]) -> None:
    a = api()
    t0 = time.monotonic()
    assert a.checkout("t", timeout=0.1) == []
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.1, lambda: a.publish(b"late", "t")).start()
    [d] = a.checkout("t", max_messages=10, timeout=5.0)
    assert d.payload == b"late"


def test_ack_takes_a_delivery_or_any_iterable_of_them(api: Callable[..., Api]) -> None:
    a = api()
    a.publish_many([b"%d" % i for i in range(7)])
    ds = a.checkout(max_messages=7, timeout=0)
    a.ack(ds[0])
    a.ack((ds[1], ds[2]))
    a.ack(d for d in ds[3:5])
    a.ack([ds[5]])
    a.ack({ds[6]: None}.keys())
    a.ack(())
    s = a.q.stats()
    assert (s["total"], s["acked"]) == (0, 7)


def test_ack_refuses_non_deliveries_and_reports_stale_leases(
    open_manual_queue: OpenManualQueue,
) -> None:
    a = Api(open_manual_queue())
    a.publish_many([b"a", b"b"])
    d1, d2 = a.checkout(max_messages=2, lease=10.0, timeout=0)
    with pytest.raises(ValueError):
        a.ack([d1, "not a delivery"])
    with pytest.raises(TypeError):
        a.ack(42)
    a.ack(d2)
    a.q.advance(10.0)  # d1's lease expires and it is ready again
    with pytest.raises(ringq.LeaseLost) as info:
        a.ack((d1,))
    assert info.value.ids == [d1.id]
    assert [d.payload for d in a.checkout(timeout=0)] == [b"a"]


def test_extend_pushes_the_deadline(api: Callable[..., Api]) -> None:
    a = api(lease=5.0)
    a.publish(b"x")
    [d] = a.checkout(timeout=0)
    deadline = a.extend(d, 60.0)
    assert deadline >= time.time() + 59.0
    with pytest.raises(ValueError):
        a.extend(d, 0)


# -- the raw engine (the local backend) ------------------------------------------------


def test_engine_without_an_encoder_takes_bytes_and_outgoing_messages(tmp_path: Path) -> None:
    e = open_local(str(tmp_path / "q"))
    try:
        assert e.lease == 30.0
        e.publish(b"ok")
        e.publish(b"ok", "t", dedup_key="k")
        for bad in ("text", OrderPlaced("o", 1.0), bytearray(b"x")):
            with pytest.raises(TypeError, match="takes bytes"):
                e.publish(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="takes bytes or OutgoingMessage"):
                e.publish_many([b"fine", bad])  # type: ignore[list-item]
        assert e.publish_many([b"a", b"b"], "t") != []
        msg = ringq.OutgoingMessage("t", b"c", headers={"h": "1"}, correlation_id="c1")
        e.publish_many([msg])
        assert e.stats()["total"] == 5
        got = e.checkout("t", 10, timeout=0)
        assert [d.payload for d in got] == [b"ok", b"a", b"b", b"c"]
        assert (got[3].headers, got[3].correlation_id) == ({"h": "1"}, "c1")
    finally:
        e.close()


def test_the_engine_never_calls_back_into_python(tmp_path: Path) -> None:
    """Objects are refused, not encoded: encoding is the SDK's, before the call."""
    e = open_local(str(tmp_path / "q"))
    calls: list[str] = []

    class Sneaky:
        def __bytes__(self) -> bytes:
            calls.append("bytes")
            return b"x"

        def __iter__(self) -> Iterator[int]:
            calls.append("iter")
            return iter(b"x")

    try:
        with pytest.raises(TypeError, match="takes bytes"):
            e.publish(Sneaky())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="takes bytes or OutgoingMessage"):
            e.publish_many([Sneaky()])  # type: ignore[list-item]
        assert calls == []
    finally:
        e.close()


def test_publish_of_a_message_takes_its_options_and_keywords_win(api: Callable[..., Api]) -> None:
    a = api()
    a.publish(
        ringq.Message(b"m1", topic="own", dedup_key="k", headers={"h": "1"}, correlation_id="c")
    )
    a.publish(
        ringq.Message(b"m2", topic="own", dedup_key="k2"), dedup_key="kw", correlation_id="kc"
    )
    first, second = drain(a.q, "own")
    assert (first.payload, first.dedup_key, first.headers, first.correlation_id) == (
        b"m1",
        "k",
        {"h": "1"},
        "c",
    )
    assert (second.payload, second.dedup_key, second.correlation_id) == (b"m2", "kw", "kc")


def test_outgoing_is_what_both_paths_publish() -> None:
    assert outgoing(b"x", "t") == b"x"
    m = outgoing("text", None)
    assert isinstance(m, ringq.OutgoingMessage)
    assert (m.topic, m.payload, m.headers) == ("default", b"text", {})
    o = outgoing(OrderPlaced("o", 1.0), None)
    assert isinstance(o, ringq.OutgoingMessage)
    assert (o.topic, o.headers) == (topic_for(OrderPlaced), {TYPE_HEADER: type_tag(OrderPlaced)})


@pytest.mark.parametrize("lease", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_default_lease_is_a_config_error(qdir: Path, lease: float) -> None:
    with pytest.raises(ringq.ConfigError):
        open_local(str(qdir), lease=lease)
    with pytest.raises(ringq.ConfigError):
        ringq.Queue(qdir, lease=lease)

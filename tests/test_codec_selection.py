"""Choosing a codec: ``Queue(codec=...)`` for what a queue publishes (and its
handlers decode), ``@q.handler(T, codec=...)`` for one handler, JSON by
default, MessagePack, pickle only on request (it warns), and
``ringq.codecs.Encrypted`` (AES-GCM, key rotation). A payload a handler's
codec cannot read, an encrypted one that does not authenticate included,
is dead-lettered as ``undecodable`` and never reaches the handler."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import pytest
import ringq
from ringq.codecs import (
    CODEC_HEADER,
    Encrypted,
    JsonCodec,
    MsgpackCodec,
    PickleCodec,
    PickleWarning,
    SealError,
)


@dataclass
class Order:
    order_id: str
    total: int


@dataclass
class Shipped:
    order_id: str


def _dead(q: ringq.Queue, n: int = 1, limit: float = 10.0) -> list[ringq.DeadLetter]:
    """The dead letters, once there are ``n``."""
    ended = threading.Event()
    for _ in range(int(limit / 0.01)):
        if len(q.dlq) >= n:
            break
        ended.wait(0.01)
    return q.dlq.list()


def test_the_default_is_json_and_other_codecs_are_labelled(tmp_path: Path) -> None:
    with ringq.Queue(tmp_path / "json") as q:
        q.publish(Order("o", 1), "t")
        [d] = q.checkout("t", timeout=0)
        assert msgspec.json.decode(d.payload) == {"order_id": "o", "total": 1}
        assert CODEC_HEADER not in d.headers
    with ringq.Queue(tmp_path / "msgpack", codec=MsgpackCodec()) as q:
        q.publish(Order("o", 1), "t")
        [d] = q.checkout("t", timeout=0)
        assert msgspec.msgpack.decode(d.payload) == {"order_id": "o", "total": 1}
        assert d.headers[CODEC_HEADER] == "msgpack"


def test_handlers_decode_with_the_queues_codec_and_publish_with_it(tmp_path: Path) -> None:
    got: list[Order] = []
    done = threading.Event()
    with ringq.Queue(tmp_path / "q", codec=MsgpackCodec()) as q:

        @q.handler(Order, topic="orders")
        def on_order(order: Order, ctx: ringq.Context) -> None:
            got.append(order)
            ctx.publish(Shipped(order.order_id), topic="shipped")
            done.set()

        q.publish(Order("o-7", 70), "orders")
        q.start()
        assert done.wait(10)
        q.stop()
        assert got == [Order("o-7", 70)]
        [s] = q.checkout("shipped", timeout=5)
        assert s.headers[CODEC_HEADER] == "msgpack", "ctx.publish uses the queue's codec"
        assert msgspec.msgpack.decode(s.payload) == {"order_id": "o-7"}


def test_a_handler_may_read_another_codec_and_a_mismatch_is_undecodable(tmp_path: Path) -> None:
    """A producer publishes MessagePack; on the consumer's (JSON) queue one
    handler says ``codec=MsgpackCodec()`` and reads it, the other does not
    and dead-letters it, naming both codecs."""
    place = tmp_path / "q"
    with ringq.Queue(place, codec=MsgpackCodec()) as producer:
        producer.publish(Order("m-1", 1), "in")
        producer.publish(Order("m-2", 2), "wrong")
    read: list[Order] = []
    misread: list[Order] = []
    seen = threading.Event()
    with ringq.Queue(place) as q:

        @q.handler(Order, topic="in", codec=MsgpackCodec())
        def on_in(order: Order) -> None:
            read.append(order)
            seen.set()

        @q.handler(Order, topic="wrong")
        def on_wrong(order: Order) -> None:
            misread.append(order)

        q.start()
        assert seen.wait(10)
        [dead] = _dead(q)
        q.stop()
    assert read == [Order("m-1", 1)] and misread == []
    assert dead.reason == "undecodable"
    assert "encoded with the msgpack codec; this handler decodes json" in (dead.error_message or "")


def test_pickle_is_opt_in_and_warns(tmp_path: Path) -> None:
    with pytest.warns(PickleWarning):
        codec = PickleCodec()
    done = threading.Event()
    got: list[object] = []
    with ringq.Queue(tmp_path / "q", codec=codec) as q:

        @q.handler(Order, topic="t")
        def on_t(order: Order) -> None:
            got.append(order)
            done.set()

        q.publish(Order("p", 3), "t")
        q.start()
        assert done.wait(10)
        q.stop()
    assert got == [Order("p", 3)]


def test_encrypted_round_trip_rotation_and_tampering(tmp_path: Path) -> None:
    old, new = os.urandom(32), os.urandom(16)
    place = tmp_path / "q"
    with ringq.Queue(place, codec=Encrypted(JsonCodec(), old)) as q:
        q.publish(Order("sealed-old", 1), "orders")
        q.publish(b"sealed-old-bytes", "raw")
    rotated = Encrypted(JsonCodec(), [new, old])  # the new key seals, the old one still opens
    with ringq.Queue(place, codec=rotated) as q:
        q.publish(Order("sealed-new", 2), "orders")
        [d] = q.checkout("raw", timeout=0)
        assert b"sealed-old-bytes" not in d.payload
        assert rotated.open(d.payload) == b"sealed-old-bytes"
        q.ack(d)
        # An attacker who can write to the store: a sealed payload altered
        # by one bit, labelled as sealed.
        [victim] = q.checkout("orders", timeout=0)
        q.release(victim)
        altered = bytearray(victim.payload)
        altered[-1] ^= 1
        q.backend.publish(bytes(altered), "orders", headers=dict(victim.headers))
    handled: list[Order] = []
    with ringq.Queue(place, codec=Encrypted(JsonCodec(), [new, old])) as q:

        @q.handler(Order, topic="orders")
        def on_order(order: Order) -> None:
            handled.append(order)

        q.start()
        [dead] = _dead(q)
        for _ in range(1000):
            if len(handled) == 2:
                break
            threading.Event().wait(0.01)
        q.stop()
    assert sorted(o.order_id for o in handled) == ["sealed-new", "sealed-old"]
    assert dead.reason == "undecodable"
    assert "authentication failed" in (dead.error_message or "")
    # Only the old key: what the new key sealed cannot be opened.
    with pytest.raises(SealError, match="key this codec does not have"):
        Encrypted(JsonCodec(), old).open(rotated.encode(Order("x", 0)))


class Card(msgspec.Struct):
    brand: Literal["visa", "amex"]
    number: int


def test_a_sealed_payload_that_does_not_fit_is_dead_lettered_without_quoting_it(
    tmp_path: Path,
) -> None:
    """An encrypted queue's payload opens but does not fit the handler's
    type (an older schema): the dead letter says why without the decrypted
    text (it is stored unsealed). msgspec's message quoted the value, and
    the traceback and chained exception carried it too."""
    with ringq.Queue(tmp_path / "q", codec=Encrypted(key=os.urandom(32)), max_attempts=1) as q:
        q.publish({"brand": "SECRET-BRAND", "number": 4111}, "cards")

        @q.handler(Card, topic="cards")
        def on_card(card: Card) -> None:
            raise AssertionError("never decoded")

        q.start()
        [dead] = _dead(q)
        q.stop()
    assert dead.reason == "undecodable"
    text = " ".join(str(x) for x in (dead.error_message, dead.traceback, dead.error_type))
    assert "SECRET" not in text, text
    message = dead.error_message or ""
    assert "ValidationError" in message and "withheld" in message


@pytest.mark.parametrize("tp", [bytes, str])
def test_a_bytes_or_str_handler_of_a_default_queue_refuses_another_codecs_payload(
    tmp_path: Path, tp: type
) -> None:
    """A producer with ``Encrypted`` publishes to a topic a default-codec
    consumer handles as ``bytes`` (or ``str``): the consumer dead-letters it
    as undecodable, naming the codec. It was handed the sealed bytes as if
    they were the message (a ``str`` handler failed on UTF-8, by chance)."""
    place = tmp_path / "q"
    with ringq.Queue(place, codec=Encrypted(key=os.urandom(32))) as q:
        q.publish(b"secret", "b")
    got: list[object] = []
    with ringq.Queue(place, max_attempts=1) as q:

        @q.handler(tp, topic="b")
        def on_b(b: object) -> None:
            got.append(b)

        q.start()
        [dead] = _dead(q)
        q.stop()
    assert got == []
    assert dead.reason == "undecodable"
    assert "encrypted" in (dead.error_message or ""), dead.error_message


def test_a_bytes_handler_of_an_encrypted_queue_gets_the_plain_bytes(tmp_path: Path) -> None:
    done = threading.Event()
    got: list[object] = []
    with ringq.Queue(tmp_path / "q", codec=Encrypted(key=os.urandom(32))) as q:

        @q.handler(bytes, topic="b")
        def on_b(b: bytes) -> None:
            got.append(b)
            done.set()

        q.publish(b"plain", "b")
        q.start()
        assert done.wait(10)
        q.stop()
    assert got == [b"plain"]


def test_an_async_queue_takes_a_codec(tmp_path: Path) -> None:
    codec = Encrypted(MsgpackCodec(), os.urandom(32))

    async def main() -> None:
        async with ringq.AsyncQueue(tmp_path / "q", codec=codec) as q:
            await q.publish(Order("a", 5), "orders")
            await q.publish_many([b"x", Order("b", 6)], "orders")
            got = await q.checkout("orders", max_messages=5, timeout=0)
            assert [d.headers[CODEC_HEADER] for d in got] == ["encrypted+msgpack"] * 3
            assert codec.decode(got[0].payload, Order) == Order("a", 5)
            assert codec.open(got[1].payload) == b"x"
            await q.ack(got)

    asyncio.run(main())


def test_bad_codecs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ringq.ConfigError, match="codec= takes a codec"):
        ringq.Queue(tmp_path / "a", codec="json")  # type: ignore[arg-type]
    with pytest.raises(ringq.ConfigError, match="16, 24 or 32 bytes, not 10"):
        Encrypted(JsonCodec(), b"0123456789")
    with pytest.raises(ringq.ConfigError, match="needs a key"):
        Encrypted(JsonCodec())
    with pytest.raises(ringq.ConfigError, match="does not encrypt"):
        Encrypted(Encrypted(key=os.urandom(16)), os.urandom(16))
    with (
        ringq.Queue(tmp_path / "b") as q,
        pytest.raises(ringq.ConfigError, match="codec= takes a codec"),
    ):
        q.handler(Order, topic="t", codec=object())(lambda o: None)  # type: ignore[arg-type]

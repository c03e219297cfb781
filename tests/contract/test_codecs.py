"""Codecs on every backend: a queue's ``codec=`` decides the payload bytes
the backend stores, and they come back as they went in, with the header
naming the codec. With ``ringq.codecs.Encrypted`` the backend (a journal, a
shared queue's socket, a Redis server) only ever holds sealed bytes, for
objects and ``bytes`` alike, and a queue opened again with the key reads
them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec
from ringq.codecs import CODEC_HEADER, TYPE_HEADER, Encrypted, MsgpackCodec

from .conftest import Harness


@dataclass
class Order:
    order_id: str
    total: int


def test_a_queues_codec_is_what_the_backend_stores(harness: Harness) -> None:
    q = harness.open(codec=MsgpackCodec())
    q.publish(Order("o-1", 12), "orders")
    q.publish(b"raw", "orders")
    first, second = q.checkout("orders", max_messages=2, timeout=0)
    assert msgspec.msgpack.decode(first.payload) == {"order_id": "o-1", "total": 12}
    assert first.headers[CODEC_HEADER] == "msgpack" and TYPE_HEADER in first.headers
    assert second.payload == b"raw" and not second.headers, "bytes are stored as given"
    q.ack([first, second])


def test_an_encrypted_queue_stores_only_sealed_payloads(harness: Harness) -> None:
    key = os.urandom(32)
    q = harness.open(codec=Encrypted(MsgpackCodec(), key))
    q.publish(Order("secret-order", 99), "orders")
    q.publish(b"secret-bytes", "orders")
    q.publish_many(["secret-str", Order("secret-many", 1)], "orders")
    got = q.checkout("orders", max_messages=10, timeout=0)
    assert len(got) == 4
    for d in got:
        assert b"secret" not in d.payload, d.payload
        assert d.headers[CODEC_HEADER] == "encrypted+msgpack"
    q.release(got)
    q.close()
    # Opened again (another process would do the same) with the key, and
    # with a rotated list whose first key is new: both read everything.
    for keys in (key, [os.urandom(32), key]):
        codec = Encrypted(MsgpackCodec(), keys)
        q = harness.open(codec=codec)
        got = q.checkout("orders", max_messages=10, timeout=0)
        assert codec.decode(got[0].payload, Order) == Order("secret-order", 99)
        assert codec.open(got[1].payload) == b"secret-bytes"
        assert codec.open(got[2].payload) == b"secret-str"
        assert codec.decode(got[3].payload, Order) == Order("secret-many", 1)
        q.release(got)
        q.close()

"""Messages and codecs: encoding, topics and type tags, decoding into handler types."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest
import ringq
from hypothesis import given, settings
from hypothesis import strategies as st
from ringq.codecs import (
    DEFAULT_TOPIC,
    TYPE_HEADER,
    Codec,
    JsonCodec,
    MsgpackCodec,
    PickleCodec,
    PickleWarning,
    UndecodableError,
    decoder_for,
    encode,
    encode_message,
    message,
    topic_for,
    topics_for,
    type_tag,
)

# -- message types ------------------------------------------------------------


@dataclass
class OrderPlaced:
    order_id: str
    amount: float
    items: list[str] = field(default_factory=list)


class Shipped(msgspec.Struct):
    order_id: str
    carrier: str | None = None
    parcels: int = 1


class Refund(TypedDict):
    order_id: str
    cents: int


class Invoice(pydantic.BaseModel):
    number: int
    customer: str
    total: float


@message("orders.placed")
@dataclass
class Placed:
    order_id: str


@message(tag="billing.charged.v1")
class Charged(msgspec.Struct):
    order_id: str
    cents: int


# Two shape-compatible types on one topic: only the tag tells them apart.
@message("orders.events", tag="orders.cancelled.v1")
class Cancelled(msgspec.Struct):
    order_id: str


@message("orders.events", tag="orders.reopened.v1")
@dataclass
class Reopened:
    order_id: str
    reason: str = "none"


@message("billing.invoices")
class TaggedInvoice(pydantic.BaseModel):
    number: int


class Plain:
    """Neither a dataclass nor a Struct: msgspec cannot handle it, pickle can."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plain) and other.value == self.value


MODULE = __name__
NO_DB = settings(database=None, max_examples=60, deadline=None)

texts = st.text(max_size=12)
floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
codecs = st.sampled_from([JsonCodec(), MsgpackCodec()])

typed_objects = st.one_of(
    st.builds(OrderPlaced, texts, floats, st.lists(texts, max_size=3)),
    st.builds(Shipped, texts, st.none() | texts, ints),
    st.builds(Invoice, number=ints, customer=texts, total=floats),
    st.builds(Placed, texts),
    st.builds(Charged, texts, ints),
    st.builds(Cancelled, texts),
    st.builds(Reopened, texts, texts),
    st.builds(TaggedInvoice, number=ints),
)
DICT_TYPES: list[Any] = [dict, dict[str, Any]]
json_values = st.none() | st.booleans() | ints | floats | texts


def decode_round_trip(obj: object, tp: Any, codec: Codec | None = None) -> Any:
    """Publish-side encode, then the handler-side decoder, as the queue does it."""
    _topic, data, tag = encode_message(obj, codec)
    return decoder_for(tp, codec)(data, tag)


# -- encode: the low-level rules the Queue relies on -------------------------


def test_encode_passes_bytes_through_and_encodes_str_and_objects_as_before() -> None:
    raw = b"\x00\xffpayload"
    topic, data = encode(raw)
    assert topic == DEFAULT_TOPIC
    assert data is raw, "the bytes fast path must not copy"
    assert encode("héllo") == (DEFAULT_TOPIC, "héllo".encode())
    assert encode(bytearray(b"ab")) == (DEFAULT_TOPIC, b"ab")
    assert encode(memoryview(b"cd")) == (DEFAULT_TOPIC, b"cd")
    assert type(encode(bytearray(b"ab"))[1]) is bytes
    assert encode(OrderPlaced("o-1", 9.5)) == (
        f"{MODULE}.OrderPlaced",
        b'{"order_id":"o-1","amount":9.5,"items":[]}',
    )
    assert encode(Placed("o-2")) == ("orders.placed", b'{"order_id":"o-2"}')


def test_builtin_values_go_to_the_default_topic_without_a_tag() -> None:
    assert encode_message({"order_id": "o-1", "cents": 5}) == (
        DEFAULT_TOPIC,
        b'{"order_id":"o-1","cents":5}',
        None,
    )
    assert encode_message([1, 2]) == (DEFAULT_TOPIC, b"[1,2]", None)
    assert encode_message(b"x") == (DEFAULT_TOPIC, b"x", None)
    assert encode_message("x", MsgpackCodec()) == (DEFAULT_TOPIC, b"x", None)


def test_objects_carry_their_topic_and_type_tag() -> None:
    assert TYPE_HEADER == "ringq-type"
    topic, _, tag = encode_message(OrderPlaced("o", 1.0))
    assert (topic, tag) == (f"{MODULE}.OrderPlaced", f"{MODULE}.OrderPlaced")
    topic, _, tag = encode_message(Invoice(number=1, customer="c", total=2.0))
    assert (topic, tag) == (f"{MODULE}.Invoice", f"{MODULE}.Invoice")
    assert encode_message(Cancelled("o"))[::2] == ("orders.events", "orders.cancelled.v1")


def test_encoding_an_unsupported_object_raises_type_error_instead_of_pickling() -> None:
    with pytest.raises(TypeError, match="Plain") as info:
        encode_message(Plain(1))
    assert any("json codec" in note for note in info.value.__notes__)
    with pytest.raises(TypeError, match="Plain"):
        encode(Plain(1))
    with pytest.raises(TypeError, match="Plain"):
        encode_message(Plain(1), MsgpackCodec())


# -- round trips of every supported kind ---------------------------------------


@NO_DB
@given(obj=typed_objects, codec=codecs)
def test_typed_objects_round_trip_to_their_own_class(obj: object, codec: Codec) -> None:
    cls = type(obj)
    topic, data, tag = encode_message(obj, codec)
    assert topic == topic_for(cls)
    assert tag == type_tag(cls)
    decoded = decoder_for(cls, codec)(data, tag)
    assert type(decoded) is cls
    assert decoded == obj


@NO_DB
@given(
    value=st.dictionaries(texts, json_values, max_size=5),
    tp=st.sampled_from(DICT_TYPES),
    codec=codecs,
)
def test_dicts_round_trip(value: dict[str, Any], tp: Any, codec: Codec) -> None:
    assert decode_round_trip(value, tp, codec) == value


@NO_DB
@given(value=st.fixed_dictionaries({"order_id": texts, "cents": ints}), codec=codecs)
def test_typed_dicts_round_trip(value: dict[str, Any], codec: Codec) -> None:
    refund = Refund(order_id=value["order_id"], cents=value["cents"])
    assert decode_round_trip(refund, Refund, codec) == refund


@NO_DB
@given(value=st.binary(max_size=64), codec=st.none() | codecs)
def test_bytes_round_trip_unchanged_whatever_the_codec(value: bytes, codec: Codec | None) -> None:
    topic, data, tag = encode_message(value, codec)
    assert (topic, data, tag) == (DEFAULT_TOPIC, value, None)
    assert decoder_for(bytes, codec)(data, tag) == value


@NO_DB
@given(value=st.text(max_size=64), codec=st.none() | codecs)
def test_str_round_trips_as_utf8_whatever_the_codec(value: str, codec: Codec | None) -> None:
    topic, data, tag = encode_message(value, codec)
    assert (topic, tag) == (DEFAULT_TOPIC, None)
    assert data == value.encode("utf-8")
    assert decoder_for(str, codec)(data, tag) == value


def test_msgpack_codec_round_trips_and_differs_from_json() -> None:
    mp = MsgpackCodec()
    order = OrderPlaced("o-1", 2.5, ["a", "b"])
    _, data, tag = encode_message(order, mp)
    assert data == msgspec.msgpack.encode(order)
    assert data != encode(order)[1]
    assert decoder_for(OrderPlaced, mp)(data, tag) == order
    invoice = Invoice(number=7, customer="c", total=1.25)
    _, data, tag = encode_message(invoice, mp)
    assert msgspec.msgpack.decode(data) == {"number": 7, "customer": "c", "total": 1.25}
    assert decoder_for(Invoice, mp)(data, tag) == invoice
    assert mp.decode(data, Invoice) == invoice


def test_pydantic_models_use_model_dump_json_and_validate_on_decode() -> None:
    invoice = Invoice(number=3, customer="ann", total=4.5)
    _, data, tag = encode_message(invoice)
    assert data == invoice.model_dump_json().encode()
    lax = decoder_for(Invoice)(b'{"number": "3", "customer": "ann", "total": 4.5}', tag)
    assert lax == invoice, "pydantic's own validation (lax mode) applies"


def test_codecs_satisfy_the_codec_protocol() -> None:
    assert isinstance(JsonCodec(), Codec)
    assert isinstance(MsgpackCodec(), Codec)
    assert (JsonCodec.name, MsgpackCodec.name) == ("json", "msgpack")
    assert JsonCodec().decode(b'{"order_id":"o"}', Placed) == Placed("o")


def test_a_user_codec_is_used_through_the_protocol_and_its_errors_are_undecodable() -> None:
    class Reversed:
        name = "reversed-json"

        def encode(self, obj: object) -> bytes:
            return msgspec.json.encode(obj)[::-1]

        def decode(self, data: bytes, tp: Any) -> Any:
            return msgspec.json.decode(data[::-1], type=tp)

    codec = Reversed()
    assert isinstance(codec, Codec)
    _, data, tag = encode_message(Placed("o-9"), codec)
    assert data == b'}"9-o":"di_redro"{'
    assert decoder_for(Placed, codec)(data, tag) == Placed("o-9")
    with pytest.raises(UndecodableError, match=r"Placed.*DecodeError"):
        decoder_for(Placed, codec)(b'{"order_id":"o"}', tag)


# -- @message: topics and tags -------------------------------------------------


def test_message_decorator_overrides_topic_and_tag() -> None:
    assert topic_for(Placed) == "orders.placed"
    assert type_tag(Placed) == f"{MODULE}.Placed", "the tag defaults to the qualified name"
    assert topic_for(Charged) == f"{MODULE}.Charged", "tag= alone keeps the default topic"
    assert type_tag(Charged) == "billing.charged.v1"
    assert encode_message(Charged("o", 5))[::2] == (f"{MODULE}.Charged", "billing.charged.v1")
    assert topic_for(OrderPlaced) == f"{MODULE}.OrderPlaced"
    assert type_tag(OrderPlaced) == f"{MODULE}.OrderPlaced"
    assert topic_for(TaggedInvoice) == "billing.invoices"


def test_message_decorator_returns_the_class_and_is_not_inherited() -> None:
    @dataclass
    class Base:
        x: int

    assert message("base.topic", tag="base.v1")(Base) is Base

    @dataclass
    class Child(Base):
        pass

    assert topic_for(Base) == "base.topic"
    assert topic_for(Child) == f"{Child.__module__}.{Child.__qualname__}"
    assert type_tag(Child) == f"{Child.__module__}.{Child.__qualname__}"


def test_registering_again_replaces_the_registration_and_updates_publishing() -> None:
    @dataclass
    class Late:
        x: int

    assert encode_message(Late(1))[0] == f"{Late.__module__}.{Late.__qualname__}"
    message("late.topic", tag="late.v2")(Late)
    assert encode_message(Late(1))[::2] == ("late.topic", "late.v2")


@pytest.mark.parametrize(
    ("apply", "error"),
    [
        (lambda: message(OrderPlaced), "parentheses"),  # type: ignore[arg-type]
        (lambda: message(""), "non-empty"),
        (lambda: message("t", tag=""), "non-empty"),
        (lambda: message("t")(dict), "builtin"),
        (lambda: message("t")(OrderPlaced("o", 1.0)), "classes"),  # type: ignore[arg-type]
    ],
)
def test_message_decorator_rejects_misuse(apply: Any, error: str) -> None:
    with pytest.raises(TypeError, match=error):
        apply()


# -- tagged unions and several types on one topic ------------------------------


def test_two_types_on_one_topic_decode_to_the_right_class_by_tag() -> None:
    decode = decoder_for(Cancelled | Reopened)
    assert topics_for(Cancelled | Reopened) == ["orders.events"]
    topic_c, data_c, tag_c = encode_message(Cancelled("o-1"))
    topic_r, data_r, tag_r = encode_message(Reopened("o-2", "mistake"))
    assert topic_c == topic_r == "orders.events"
    assert decode(data_c, tag_c) == Cancelled("o-1")
    assert type(decode(data_c, tag_c)) is Cancelled
    assert decode(data_r, tag_r) == Reopened("o-2", "mistake")
    # The payloads fit both classes; swap the order to show the tag decides, not the order.
    assert decoder_for(Reopened | Cancelled)(data_c, tag_c) == Cancelled("o-1")


def test_single_class_handler_rejects_another_types_tag() -> None:
    _, data, tag = encode_message(Reopened("o-2"))
    with pytest.raises(UndecodableError, match=r"orders\.cancelled\.v1") as info:
        decoder_for(Cancelled)(data, tag)
    assert info.value.type_tag == "orders.reopened.v1"
    assert info.value.target == f"{MODULE}.Cancelled"
    copy = pickle.loads(pickle.dumps(info.value))
    assert (str(copy), copy.target, copy.type_tag) == (
        str(info.value),
        f"{MODULE}.Cancelled",
        "orders.reopened.v1",
    )


def test_untagged_payloads_decode_by_shape() -> None:
    assert decoder_for(Cancelled)(b'{"order_id":"o"}', None) == Cancelled("o")
    assert decoder_for(Refund)(b'{"order_id":"o","cents":1}', "anything") == {
        "order_id": "o",
        "cents": 1,
    }, "TypedDicts are structural: tags are ignored"


def test_union_handler_type_spanning_topics() -> None:
    tp = OrderPlaced | Shipped | Invoice
    assert topics_for(tp) == [f"{MODULE}.OrderPlaced", f"{MODULE}.Shipped", f"{MODULE}.Invoice"]
    decode = decoder_for(tp)
    for obj in (
        OrderPlaced("o", 1.0),
        Shipped("o", "dhl"),
        Invoice(number=1, customer="c", total=0.0),
    ):
        _, data, tag = encode_message(obj)
        decoded = decode(data, tag)
        assert type(decoded) is type(obj)
        assert decoded == obj


def test_untagged_union_payload_tries_members_in_declaration_order() -> None:
    payload = b'{"order_id":"o"}'
    assert type(decoder_for(Cancelled | Reopened)(payload, None)) is Cancelled
    assert type(decoder_for(Reopened | Cancelled)(payload, None)) is Reopened
    only_shipped = b'{"order_id":"o","carrier":"ups"}'
    assert decoder_for(OrderPlaced | Shipped)(only_shipped, None) == Shipped("o", "ups")


def test_unknown_tag_falls_back_to_untagged_union_members_only() -> None:
    decode = decoder_for(Cancelled | dict[str, Any])
    assert decode(b'{"order_id":"o","x":1}', "someone.else") == {"order_id": "o", "x": 1}
    with pytest.raises(UndecodableError, match="unknown type tag"):
        decoder_for(Cancelled | Reopened)(b'{"order_id":"o"}', "someone.else")


def test_union_members_with_the_same_tag_are_refused() -> None:
    @message(tag="dup")
    @dataclass
    class One:
        x: int

    @message(tag="dup")
    @dataclass
    class Two:
        x: int

    with pytest.raises(TypeError, match="'dup'"):
        decoder_for(One | Two)


# -- undecodable payloads -------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "payload", "tag", "names"),
    [
        pytest.param(OrderPlaced, b"\xff\x00garbage", None, "OrderPlaced", id="garbage"),
        pytest.param(OrderPlaced, b'{"order_id":1,"amount":2}', None, "OrderPlaced", id="shape"),
        pytest.param(Shipped, b"[1, 2]", f"{MODULE}.Shipped", "Shipped", id="struct-shape"),
        pytest.param(Refund, b'{"order_id":"o"}', None, "Refund", id="typeddict-missing-key"),
        pytest.param(dict, b"[1, 2]", None, "dict", id="dict-shape"),
        pytest.param(Invoice, b'{"number":"x"}', f"{MODULE}.Invoice", "Invoice", id="pydantic"),
        pytest.param(str, b"\xff\xfe\xfd", None, "str", id="invalid-utf8"),
        pytest.param(
            Cancelled | Reopened, b'{"order_id":"o"}', "nope", "Cancelled", id="unknown-tag"
        ),
        pytest.param(Cancelled | Reopened, b"{]", None, "Reopened", id="union-garbage"),
    ],
)
def test_undecodable_payload_raises_undecodable_error_naming_the_type(
    tp: Any, payload: bytes, tag: str | None, names: str
) -> None:
    with pytest.raises(UndecodableError) as info:
        decoder_for(tp)(payload, tag)
    error = info.value
    assert isinstance(error, ringq.RingqError)
    assert names in str(error)
    assert names in error.target
    assert error.type_tag == tag
    if tag != "nope":
        assert error.__cause__ is not None, "the original exception is chained"


def test_msgpack_garbage_is_undecodable() -> None:
    with pytest.raises(UndecodableError, match="OrderPlaced") as info:
        decoder_for(OrderPlaced, MsgpackCodec())(b"\xc1\xc1", None)
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


def test_invalid_utf8_cause_is_the_unicode_error() -> None:
    with pytest.raises(UndecodableError, match="UnicodeDecodeError") as info:
        decoder_for(str)(b"ok \xc3\x28", None)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_a_type_the_codec_cannot_decode_is_refused_when_the_decoder_is_built() -> None:
    with pytest.raises(TypeError, match="Plain"):
        decoder_for(Plain)
    with pytest.raises(TypeError, match="Plain"):
        decoder_for(OrderPlaced | Plain)


# -- pickle: only on explicit request -----------------------------------------------


def test_default_codecs_do_not_warn_or_pickle() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        JsonCodec()
        MsgpackCodec()
        encode_message(OrderPlaced("o", 1.0))


def test_pickle_codec_warns_on_construction() -> None:
    assert issubclass(PickleWarning, UserWarning)
    with pytest.warns(PickleWarning, match="arbitrary code"):
        PickleCodec()


def test_pickle_codec_round_trips_what_msgspec_cannot_and_checks_the_type() -> None:
    with pytest.warns(PickleWarning):
        codec = PickleCodec()
    topic, data, tag = encode_message(Plain(5), codec)
    assert topic == f"{MODULE}.Plain"
    assert decoder_for(Plain, codec)(data, tag) == Plain(5)
    assert decoder_for(Plain | OrderPlaced, codec)(data, tag) == Plain(5)
    refund = Refund(order_id="o", cents=3)
    assert decode_round_trip(refund, Refund, codec) == refund
    assert decode_round_trip([1, "x"], Any, codec) == [1, "x"]
    _, other, _ = encode_message(OrderPlaced("o", 1.0), codec)
    with pytest.raises(UndecodableError, match="Plain"):
        decoder_for(Plain, codec)(other, None)
    with pytest.raises(UndecodableError, match="Plain"):
        decoder_for(Plain, codec)(b"not a pickle", None)


# -- topics ---------------------------------------------------------------------------


def test_topics_for_classes_unions_and_untyped_targets() -> None:
    assert topics_for(OrderPlaced) == [f"{MODULE}.OrderPlaced"]
    assert topics_for(Placed) == ["orders.placed"]
    assert topics_for(Refund) == [f"{MODULE}.Refund"]
    assert topics_for(Invoice) == [f"{MODULE}.Invoice"]
    assert topics_for(Placed | OrderPlaced | Cancelled | Reopened) == [
        "orders.placed",
        f"{MODULE}.OrderPlaced",
        "orders.events",
    ]
    for untyped in (bytes, str, dict, dict[str, Any], list[int], Mapping[str, int], Any):
        assert topics_for(untyped) == [DEFAULT_TOPIC], untyped


# -- pydantic is optional -------------------------------------------------------------


def test_codecs_work_without_pydantic_and_never_import_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pydantic"] = None  # as if not installed: importing it fails
        from dataclasses import dataclass
        from typing import TypedDict
        from ringq.codecs import decoder_for, encode, encode_message

        @dataclass
        class A:
            x: int

        class T(TypedDict):
            y: str

        for obj, tp in [(A(1), A), ({"y": "z"}, T), (b"b", bytes), ("s", str), ({"k": 1}, dict)]:
            encode(obj)
            topic, data, tag = encode_message(obj)
            assert decoder_for(tp)(data, tag) == obj, (obj, tp)
        assert decoder_for(A | T)(b'{"y": "q"}', None) == {"y": "q"}
        assert sys.modules["pydantic"] is None
        assert "pydantic.main" not in sys.modules
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

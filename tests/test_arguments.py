"""Bad numbers get a clear error, never a panic, a silent clamp or a hang.

One table: every public duration, count and version argument, each tried
with NaN, infinities, a huge value, a negative one, zero where zero is not
allowed, ``True`` and a wrong type. Each must raise ``ValueError`` (or its
subclass ``ringq.ConfigError``, for options) or ``TypeError`` naming the
argument and its range, before anything changes. Values at the edges of the
range are accepted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ringq

NAN, INF = math.nan, math.inf
HUGE = 1e300
BIG_INT = 2**70
# Every bad value but zero and None; those depend on the argument.
COMMON_BAD: tuple[object, ...] = (NAN, INF, -INF, HUGE, -1, BIG_INT, True, "1")


@dataclass(frozen=True)
class Arg:
    """``call(q, value)`` passes ``value`` as the argument ``name``."""

    name: str
    call: Callable[[ringq.Queue, Any], object]
    zero_ok: bool
    none_ok: bool
    good: tuple[object, ...]
    #: Run before the good values (e.g. so that a checkout does not wait).
    setup: Callable[[ringq.Queue], object] | None = None

    def bad(self) -> list[object]:
        bad = list(COMMON_BAD)
        if not self.zero_ok:
            bad.append(0)
        if self.name in {"max_messages", "expected_version", "limit", "workers"}:
            bad.append(1.5)  # counts are ints
        return bad


def _delivery(q: ringq.Queue) -> ringq.Delivery:
    q.publish(b"d", topic="d")
    [d] = q.checkout("d", timeout=0)
    return d


CALLS = [
    Arg("delay", lambda q, v: q.publish(b"x", delay=v), True, True, (0, 0.5, 31_536_000)),
    Arg("timeout", lambda q, v: q.publish(b"x", timeout=v), True, True, (0, 1)),
    Arg(
        "expected_version",
        lambda q, v: q.publish(b"x", dedup_key="k", expected_version=v),
        True,
        True,
        (),
    ),
    Arg("timeout", lambda q, v: q.publish_many([b"x"], timeout=v), True, True, (0, 2.5)),
    Arg("max_messages", lambda q, v: q.checkout(max_messages=v, timeout=0), False, False, (1,)),
    Arg("lease", lambda q, v: q.checkout(lease=v, timeout=0), False, True, (0.001, 60)),
    Arg(
        "timeout",
        lambda q, v: q.checkout(timeout=v),
        True,
        True,
        (0, 1),
        setup=lambda q: q.publish_many([b"1", b"2", b"3"]),
    ),
    Arg("delay", lambda q, v: q.nack(_delivery(q), delay=v), True, True, (0, 3)),
    Arg("seconds", lambda q, v: q.extend(_delivery(q), v), False, False, (0.5, 31_536_000)),
    Arg("limit", lambda q, v: q.dlq.list(limit=v), True, True, (0, 10)),
    Arg("rate", lambda q, v: q.dlq.replay(rate=v), False, True, (5,)),
    Arg("timeout", lambda q, v: q.stop(timeout=v), True, True, (0, 1)),
    Arg("workers", lambda q, v: q.scale("h", v), True, False, (0, 3)),
]


def _ids(args: list[Arg]) -> list[str]:
    return [f"{a.name}@{i}" for i, a in enumerate(args)]


@pytest.mark.parametrize("arg", CALLS, ids=_ids(CALLS))
def test_every_bad_argument_of_a_call_is_refused_by_name_and_changes_nothing(
    tmp_path: Path, arg: Arg
) -> None:
    with ringq.Queue(tmp_path / "q") as q:

        @q.handler(str, topic="h-topic")
        def h(msg: str) -> None:
            pass

        q.start()
        for value in arg.bad():
            before = q.stats()
            with pytest.raises((ValueError, TypeError)) as info:
                arg.call(q, value)
            msg = str(info.value)
            assert arg.name in msg and "must be" in msg, f"{arg.name}={value!r}: {msg}"
            after = q.stats()
            for key in ("published", "delivered", "acked", "nacked", "total"):
                # _delivery publishes and checks out one message of its own
                assert after[key] - before[key] <= 1, (key, value)
            assert after["ready"] == before["ready"], (arg.name, value)
        if arg.setup is not None:
            arg.setup(q)
        for value in arg.good:
            arg.call(q, value)
        if arg.none_ok:
            arg.call(q, None)


OPTIONS = {
    "capacity": (False, (1, 16_777_215)),
    "fsync_interval": (True, (0.001, 31_536_000)),
    "max_attempts": (False, (1,)),
    "lease": (False, (0.001,)),
    "segment_size": (False, (65_536,)),
    "snapshot_every": (False, (1,)),
    "snapshot_interval": (False, (0.5,)),
    "max_payload": (False, (1, 64 * 1024 * 1024)),
    "max_key": (False, (1,)),
    "max_headers": (True, (0,)),
    "dlq_capacity": (False, (1,)),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_bad_queue_option_is_a_config_error_naming_it_and_creates_nothing(
    tmp_path: Path, name: str
) -> None:
    zero_ok, good = OPTIONS[name]
    bad = [*COMMON_BAD, *(() if zero_ok else (0,))]
    for i, value in enumerate(bad):
        where = tmp_path / f"bad{i}"
        with pytest.raises((ValueError, TypeError)) as info:
            ringq.Queue(where, **{name: value})
        msg = str(info.value)
        assert name in msg and "must be" in msg, f"{name}={value!r}: {msg}"
        if isinstance(info.value, ValueError):
            assert isinstance(info.value, ringq.ConfigError)
        assert not where.exists() or not any(where.iterdir()), "a refused queue left files"
        # The loaders say the same.
        with pytest.raises(ringq.ConfigError) as info2:
            ringq.QueueOptions.from_mapping({name: value})
        assert name in str(info2.value)
    for i, value in enumerate(good):
        ringq.Queue(tmp_path / f"good{i}", **{name: value}).close()


@pytest.mark.parametrize("name", ["shared", "recycle_segments"])
def test_a_bool_queue_option_takes_only_true_or_false_and_creates_nothing(
    tmp_path: Path, name: str
) -> None:
    """``shared=1`` once opened a queue of this process only, silently."""
    for i, value in enumerate([1, 0, "yes", None, 1.0]):
        where = tmp_path / f"bad{i}"
        with pytest.raises(ringq.ConfigError) as info:
            ringq.Queue(where, **{name: value})
        assert str(info.value) == f"invalid option: {name}={value!r} (must be True or False)"
        assert not where.exists()
        with pytest.raises(ringq.ConfigError, match=name):
            ringq.QueueOptions.from_mapping({name: value})
    ringq.Queue(tmp_path / "good", **{name: False}).close()


HANDLER_OPTIONS = {"timeout": False, "max_parallelism": False, "prefetch": False}


@pytest.mark.parametrize("name", sorted(HANDLER_OPTIONS))
def test_every_bad_handler_option_is_a_config_error_naming_it(tmp_path: Path, name: str) -> None:
    with ringq.Queue(tmp_path / "q") as q:
        for value in [*COMMON_BAD, 0]:
            with pytest.raises(ringq.ConfigError) as info:
                q.handler(str, topic="t", **{name: value})(lambda msg: None)
            msg = str(info.value)
            assert name in msg and "must be" in msg, f"{name}={value!r}: {msg}"
        assert len(q.handlers) == 0


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("max_attempts", lambda v: ringq.Retry(max_attempts=v)),
        ("seconds", lambda v: ringq.Backoff.fixed(v)),
        ("initial", lambda v: ringq.Backoff.exponential(v)),
        ("cap", lambda v: ringq.Backoff.exponential(0.5, cap=v)),
    ],
)
def test_every_bad_retry_number_is_a_config_error_naming_it(
    name: str, make: Callable[[Any], object]
) -> None:
    zero_bad = name in {"max_attempts", "cap"}
    for value in [*COMMON_BAD, *((0,) if zero_bad else ())]:
        with pytest.raises(ringq.ConfigError) as info:
            make(value)
        msg = str(info.value)
        assert name in msg and "must be" in msg, f"{name}={value!r}: {msg}"


def test_a_batch_bigger_than_the_queue_says_so_instead_of_suggesting_to_block(
    tmp_path: Path,
) -> None:
    with ringq.Queue(tmp_path / "q", capacity=3) as q:
        with pytest.raises(ringq.QueueFull) as info:
            q.publish_many([b"x"] * 4)
        msg = str(info.value)
        assert "4 new messages can never fit a queue of capacity 3" in msg
        assert "block=True" not in msg
        q.publish_many([b"x"] * 3)
        with pytest.raises(ringq.QueueFull) as info:
            q.publish(b"y", timeout=0.01)
        assert "before the timeout" in str(info.value)
        with pytest.raises(ringq.QueueFull) as info:
            q.publish(b"y", block=False)
        assert "block=True" in str(info.value)
        assert q.stats()["total"] == 3


@pytest.mark.parametrize("payloads", [b"abc", "abc", bytearray(b"abc"), memoryview(b"abc")])
def test_publish_many_of_one_bytes_or_str_is_refused_instead_of_publishing_each_item(
    tmp_path: Path, payloads: object
) -> None:
    # Iterating b"abc" gives the ints 97, 98, 99: each would have become a
    # JSON message of its own.
    with ringq.Queue(tmp_path / "q") as q:
        with pytest.raises(TypeError, match=r"publish_many\(\) takes an iterable of payloads"):
            q.publish_many(payloads, "t")  # type: ignore[arg-type]
        assert q.stats()["total"] == 0


@pytest.mark.parametrize("payload", [b"x", {"n": 1}])
def test_a_topic_that_is_not_a_str_is_refused_by_name(tmp_path: Path, payload: object) -> None:
    with ringq.Queue(tmp_path / "q") as q:
        not_str = r"\(\) topic must be a str or None, not int"
        with pytest.raises(TypeError, match=r"Queue\.publish" + not_str):
            q.publish(payload, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"Queue\.publish_many" + not_str):
            q.publish_many([payload], 5)  # type: ignore[arg-type]
        assert q.stats()["total"] == 0


def test_an_unknown_publish_keyword_is_named(tmp_path: Path) -> None:
    class Hook:
        def before_publish(self, m: ringq.OutgoingMessage) -> ringq.OutgoingMessage:
            return m

    with ringq.Queue(tmp_path / "q") as q, ringq.Queue(tmp_path / "hooked") as hooked:
        # The frameless path (plain queue) refuses it before any Python
        # frame, in the engine method's name; the queue's own method (with
        # middleware, in a subclass) in its name. Both name the keyword.
        hooked.add_middleware(Hook())
        unknown = r"Queue\.publish\(\) got an unexpected keyword argument 'dedupe_key'"
        with pytest.raises(TypeError, match=unknown):
            hooked.publish({"n": 1}, "t", dedupe_key="k")  # type: ignore[call-arg]
        for queue in (q, hooked):
            with pytest.raises(TypeError, match="unexpected keyword argument 'dedupe_key'"):
                queue.publish(b"x", "t", dedupe_key="k")  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="unexpected keyword argument 'blocking'"):
                queue.publish_many([b"x"], "t", blocking=False)  # type: ignore[call-arg]
            assert queue.stats()["total"] == 0


def test_async_publish_many_of_one_bytes_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(tmp_path / "q") as aq:
            with pytest.raises(TypeError, match=r"AsyncQueue\.publish_many\(\) takes an iterable"):
                await aq.publish_many(b"abc", "t")  # type: ignore[arg-type]
            assert aq.stats()["total"] == 0

    asyncio.run(main())

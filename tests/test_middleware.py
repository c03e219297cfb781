"""Middleware (``q.add_middleware``): hooks around publishing and handling,
in a documented order, sync and async, and a failing hook never loses a
message (``ringq.middleware``)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ringq
from ringq.middleware import Outcome


@ringq.message("mw.order")
@dataclass
class Order:
    order_id: str


class Recorder:
    """Records every hook call as (name, hook, detail)."""

    def __init__(self, name: str, log: list[tuple[str, str, str]]) -> None:
        self.name, self.log = name, log

    def before_publish(self, m: ringq.OutgoingMessage) -> ringq.OutgoingMessage:
        self.log.append((self.name, "before_publish", m.topic))
        headers = {**m.headers, f"seen-by-{self.name}": "1"}
        return ringq.OutgoingMessage(
            m.topic, m.payload, dedup_key=m.dedup_key, delay=m.delay, headers=headers,
            correlation_id=m.correlation_id, causation_id=m.causation_id,
        )  # fmt: skip

    def before_handle(self, d: ringq.Delivery, ctx: ringq.Context) -> None:
        self.log.append((self.name, "before_handle", d.topic))

    def after_handle(self, d: ringq.Delivery, ctx: ringq.Context, outcome: Outcome) -> None:
        self.log.append((self.name, "after_handle", "ok" if outcome.succeeded else "failed"))

    def on_dead_letter(self, d: ringq.Delivery, reason: str, error: BaseException | None) -> None:
        self.log.append((self.name, "on_dead_letter", reason))


def _until(cond: Any, limit: float = 10.0) -> None:
    ended = threading.Event()
    for _ in range(int(limit / 0.01)):
        if cond():
            return
        ended.wait(0.01)
    raise AssertionError("not in time")


def test_hooks_run_in_order_around_publish_and_handle(tmp_path: Path) -> None:
    log: list[tuple[str, str, str]] = []
    done = threading.Event()
    with ringq.Queue(tmp_path / "q") as q:
        q.add_middleware(Recorder("a", log))
        q.add_middleware(Recorder("b", log))

        @q.handler(Order)
        def on_order(o: Order, ctx: ringq.Context) -> None:
            assert ctx.headers["seen-by-a"] == "1" and ctx.headers["seen-by-b"] == "1"
            ctx.publish(b"receipt", topic="receipts")
            done.set()

        q.publish(Order("o-1"))
        q.start()
        assert done.wait(10)
        q.stop()
        [receipt] = q.checkout("receipts", timeout=0)
        assert receipt.headers["seen-by-a"] == "1", "ctx.publish goes through the hooks too"
        q.publish_many([b"x"], topic="bulk")
        [bulk] = q.checkout("bulk", timeout=0)
        assert bulk.headers["seen-by-b"] == "1", "publish_many too"
    assert log[:2] == [("a", "before_publish", "mw.order"), ("b", "before_publish", "mw.order")]
    handled = [e for e in log if e[1] in ("before_handle", "after_handle")]
    assert handled == [
        ("a", "before_handle", "mw.order"),
        ("b", "before_handle", "mw.order"),
        ("b", "after_handle", "ok"),
        ("a", "after_handle", "ok"),
    ], "after_handle in reverse: the first added wraps the others"


def test_a_failing_hook_fails_the_attempt_and_loses_nothing(tmp_path: Path) -> None:
    class Flaky:
        calls = 0

        def after_handle(self, d: ringq.Delivery, ctx: ringq.Context, outcome: Outcome) -> None:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("the hook failed once")

    ran: list[int] = []
    with ringq.Queue(tmp_path / "q") as q:
        q.add_middleware(Flaky())

        @q.handler(
            bytes, topic="t", retry=ringq.Retry(max_attempts=3, backoff=ringq.Backoff.fixed(0))
        )
        def h(b: bytes, ctx: ringq.Context) -> None:
            ran.append(ctx.attempt)
            ctx.publish(b"staged", topic="out")

        q.publish(b"x", "t")
        q.start()
        _until(lambda: q.stats()["total"] == 1 and len(ran) == 2)
        q.stop()
        [out] = q.checkout("out", timeout=0)
        assert out.payload == b"staged"
        assert q.stats()["total"] == 1, "one staged message: the failed attempt's was not published"
    assert ran == [1, 2], "retried after the hook failed the first attempt"


def test_a_failing_before_publish_publishes_nothing(tmp_path: Path) -> None:
    class Refuse:
        def before_publish(self, m: ringq.OutgoingMessage) -> None:
            raise PermissionError("not this one")

    with ringq.Queue(tmp_path / "q") as q:
        q.add_middleware(Refuse())
        with pytest.raises(PermissionError):
            q.publish(b"x", "t")
        with pytest.raises(PermissionError):
            q.publish_many([b"x", b"y"], "t")
        assert q.stats()["total"] == 0


def test_on_dead_letter_and_async_hooks_on_async_handlers(tmp_path: Path) -> None:
    log: list[str] = []

    class AsyncHooks:
        async def before_handle(self, d: ringq.Delivery, ctx: ringq.Context) -> None:
            await asyncio.sleep(0)
            log.append("before")

        async def after_handle(self, d: ringq.Delivery, ctx: ringq.Context, o: Outcome) -> None:
            log.append(f"after:{type(o.error).__name__}")

        async def on_dead_letter(self, d: ringq.Delivery, reason: str, e: Any) -> None:
            log.append(f"dead:{reason}")

    async def main() -> None:
        async with ringq.AsyncQueue(tmp_path / "q", max_attempts=1) as q:
            q.add_middleware(AsyncHooks())

            @q.handler(bytes, topic="t", retry=ringq.Retry(max_attempts=1))
            async def h(b: bytes) -> None:
                raise ValueError("bad")

            await q.publish(b"x", "t")
            q.start()
            for _ in range(1000):
                if "dead:max_attempts" in log:
                    break
                await asyncio.sleep(0.01)
            await q.stop()

    asyncio.run(main())
    assert log == ["before", "after:ValueError", "dead:max_attempts"]


def test_async_hooks_on_a_thread_handler_and_bad_middlewares(tmp_path: Path) -> None:
    seen = threading.Event()

    class AsyncBefore:
        async def before_handle(self, d: ringq.Delivery, ctx: ringq.Context) -> None:
            seen.set()

    with ringq.Queue(tmp_path / "q") as q:
        q.add_middleware(AsyncBefore())
        q.handler(bytes, topic="t")(lambda b: None)
        q.publish(b"x", "t")
        q.start()
        assert seen.wait(10)
        q.stop()
        with pytest.raises(ringq.ConfigError, match="at least one of"):
            q.add_middleware(object())

        class AsyncPublish:
            async def before_publish(self, m: ringq.OutgoingMessage) -> None: ...

        with pytest.raises(ringq.ConfigError, match="plain def"):
            q.add_middleware(AsyncPublish())

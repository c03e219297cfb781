"""``q.cancel`` beyond the contract (``tests/contract/test_cancel.py``): a
handler running the message in this process sees ``ctx.cancelled`` set,
thread and async handlers alike, and the message is not retried."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
import ringq


def test_a_thread_handler_sees_its_message_cancelled(tmp_path: Path) -> None:
    started, seen = threading.Event(), threading.Event()
    runs: list[str] = []
    with ringq.Queue(tmp_path / "q", max_attempts=3) as q:

        @q.handler(bytes, topic="t")
        def slow(b: bytes, ctx: ringq.Context) -> None:
            runs.append(ctx.message_id)
            started.set()
            if ctx.cancelled.wait(10):
                seen.set()
                with pytest.raises(ringq.Cancelled, match="was cancelled"):
                    ctx.raise_if_cancelled()

        mid = q.publish(b"x", "t")
        q.start()
        assert started.wait(10)
        assert q.cancel(mid) == "cancelled_in_flight"
        assert seen.wait(10), "ctx.cancelled was not set"
        q.stop()
        assert runs == [mid], "not retried"
        s = q.stats()
        assert (s["total"], s["dead"], s["cancelled"]) == (0, 0, 1)


def test_an_async_handler_sees_its_message_cancelled(tmp_path: Path) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(tmp_path / "q") as q:
            started, seen = asyncio.Event(), asyncio.Event()

            @q.handler(bytes, topic="t")
            async def slow(b: bytes, ctx: ringq.Context) -> None:
                started.set()
                for _ in range(1000):
                    if ctx.cancelled.is_set():
                        seen.set()
                        return
                    await asyncio.sleep(0.01)

            mid = await q.publish(b"x", "t")
            q.start()
            await asyncio.wait_for(started.wait(), 10)
            assert await q.cancel(mid) == "cancelled_in_flight"
            await asyncio.wait_for(seen.wait(), 10)
            await q.stop()
            assert q.stats()["total"] == 0
            assert await q.cancel(mid) == "not_found"

    asyncio.run(main())


@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_a_cancelled_attempt_sends_nothing_and_warns_of_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ends: str
) -> None:
    """Whether the handler returns or raises ``Cancelled`` (from
    ``ctx.raise_if_cancelled()``), its message is gone: no ack, no nack, no
    retry, and no warning of a late ack or a lost lease."""
    caplog.set_level(logging.INFO, logger="ringq")
    started, done = threading.Event(), threading.Event()
    with ringq.Queue(tmp_path / "q") as q:

        @q.handler(bytes, topic="t")
        def slow(b: bytes, ctx: ringq.Context) -> None:
            started.set()
            try:
                ctx.cancelled.wait(10)
                if ends == "raises":
                    ctx.raise_if_cancelled()
            finally:
                done.set()

        mid = q.publish(b"x", "t")
        q.start()
        assert started.wait(10)
        assert q.cancel(mid) == "cancelled_in_flight"
        assert done.wait(10)
        q.stop()
        stats = q.handler_stats()["slow"]
        assert (stats["succeeded"], stats["late_acks"]) == (0, 0), stats
    said = [r.getMessage() for r in caplog.records if r.name.startswith("ringq")]
    assert not [m for m in said if "lease" in m], said
    assert any("was cancelled while it ran" in m for m in said), said


def test_cancel_of_a_malformed_id_is_a_clear_error(tmp_path: Path) -> None:
    with ringq.Queue(tmp_path / "q") as q, pytest.raises(ringq.NotFound, match="16 hex digits"):
        q.cancel("nope")

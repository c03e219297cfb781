"""Process-pool handlers (``processes=N``): the function runs in worker
processes; checkout, leases, retries, dead letters and the atomic ack with
staged messages stay in the queue's process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ringq
from conftest import OpenQueue
from proc_handlers import Job, NotRetryable, Sealed, plain, sealed_work, work

FAST = ringq.Retry(max_attempts=3, backoff=ringq.Backoff.fixed(0))


def wait_until(cond: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def results(q: ringq.Queue) -> list[dict[str, int | str]]:
    got = q.checkout("results", max_messages=10_000, timeout=0)
    q.ack(got)
    return [json.loads(d.payload) for d in got]


def test_the_function_runs_in_worker_processes_and_staged_messages_commit_with_the_ack(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    q.handler(Job, processes=2, retry=FAST)(work)
    ids = q.publish_many([Job(i, "spin") for i in range(40)])
    q.start()
    try:
        assert wait_until(lambda: q.stats()["total"] == q.stats()["ready"] + 0 and _done(q, 40))
    finally:
        q.stop()
    rows = results(q)
    assert sorted(int(r["n"]) for r in rows) == list(range(40))
    pids = {r["pid"] for r in rows}
    assert os.getpid() not in pids and len(pids) == 2, pids
    assert {r["id"] for r in rows} == set(ids)
    # the staged messages carry the causation of the handled message
    assert q.stats()["total"] == 0


def _done(q: ringq.Queue, n: int) -> bool:
    s = q.topic_stats()
    return s.get("results", {}).get("ready", 0) >= n


def test_a_failure_retries_and_stages_nothing_and_dead_letter_on_sees_the_class(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    q.handler(Job, processes=1, retry=FAST, dead_letter_on=(NotRetryable,))(work)
    fail = q.publish(Job(1, "fail"))
    dead = q.publish(Job(2, "dead"))
    odd = q.publish(Job(3, "unpicklable"))
    q.start()
    try:
        assert wait_until(lambda: len(q.dlq) == 3)
    finally:
        q.stop()
    assert results(q) == [], "a failed attempt publishes nothing it staged"
    f = q.dlq.get(fail)
    assert (f.reason, f.attempts) == ("max_attempts", 3)
    assert f.error_type == "ValueError" and "failed on attempt 3" in (f.error_message or "")
    assert "raised in a worker process" in (f.traceback or "")
    assert 'proc_handlers.py", line' in (f.traceback or ""), "the child's traceback"
    d = q.dlq.get(dead)
    assert (d.reason, d.attempts, d.error_type) == (
        "non_retryable",
        1,
        "proc_handlers.NotRetryable",
    )
    o = q.dlq.get(odd)
    assert o.error_type == "ringq.dispatch.processes.HandlerProcessError"
    assert "proc_handlers.Unpicklable" in (o.error_message or "")


def test_a_crashed_worker_process_is_replaced_and_the_message_retried(
    open_queue: OpenQueue,
) -> None:
    q = open_queue()
    q.handler(Job, processes=2, retry=FAST)(work)
    crash = q.publish(Job(1, "crash"))
    always = q.publish(Job(2, "crash-always"))
    q.publish_many([Job(i) for i in range(3, 13)])
    q.start()
    try:
        assert wait_until(lambda: _done(q, 11) and len(q.dlq) == 1)
    finally:
        q.stop()
    rows = results(q)
    assert sorted(int(r["n"]) for r in rows) == [1, *range(3, 13)]
    [again] = [r for r in rows if r["id"] == crash]
    assert again["attempt"] == 2
    dl = q.dlq.get(always)
    assert dl.attempts == 3 and "died while handling the message (exit code 9)" in (
        dl.error_message or ""
    )


def test_a_hung_worker_process_is_killed_at_its_lease_and_replaced(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.handler(Job, processes=1, timeout=1.0, retry=FAST)(work)
    hang = q.publish(Job(1, "hang"))
    q.publish(Job(2))
    q.start()
    t0 = time.monotonic()
    try:
        assert wait_until(lambda: _done(q, 2), 20)
    finally:
        q.stop()
    assert time.monotonic() - t0 < 15, "killed at the lease, not after the 60 s sleep"
    rows = {r["id"]: r for r in results(q)}
    assert rows[hang]["attempt"] == 2


def test_heartbeats_from_the_worker_process_renew_the_lease(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.handler(Job, processes=1, timeout=1.0, retry=FAST)(work)
    mid = q.publish(Job(1, "heartbeat"))  # 1.8 s of work, a heartbeat every 0.3 s
    q.start()
    try:
        assert wait_until(lambda: _done(q, 1), 20)
    finally:
        q.stop()
    [row] = results(q)
    assert (row["id"], row["attempt"]) == (mid, 1)


def test_a_cancelled_lease_reaches_the_worker_process(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.handler(Job, processes=1, timeout=0.5, retry=ringq.Retry(max_attempts=1))(work)
    mid = q.publish(Job(1, "cancelled"))
    q.start()
    try:
        assert wait_until(lambda: len(q.dlq) == 1, 20)
    finally:
        q.stop()
    assert q.dlq.get(mid).error_type in ("LeaseExpired", "ringq.Cancelled")


def test_a_handler_without_context_runs_in_a_process_too(open_queue: OpenQueue) -> None:
    q = open_queue()
    q.handler(Job, processes=2)(plain)
    q.publish_many([Job(i) for i in range(10)])
    q.start()
    try:
        assert wait_until(lambda: q.stats()["acked"] == 10)
    finally:
        q.stop()


def test_registration_refuses_what_a_process_cannot_import(open_queue: OpenQueue) -> None:
    q = open_queue()

    def nested(job: Job) -> None:
        pass

    with pytest.raises(ringq.ConfigError, match="defined inside a function"):
        q.handler(Job, processes=1)(nested)
    with pytest.raises(ringq.ConfigError, match="lambda"):
        q.handler(Job, processes=1, name="l")(lambda job: None)

    class OnJob(ringq.Handler[Job]):
        processes = 2  # not a Handler option: class handlers run here

    with pytest.raises(ringq.ConfigError, match="class handlers"):
        q.register(OnJob)  # type: ignore[arg-type]
    with pytest.raises(ringq.ConfigError, match="contradicts"):
        q.handler(Job, processes=2, max_parallelism=3)(work)
    with pytest.raises(ringq.ConfigError, match="processes"):
        q.handler(Job, processes=-1)(work)


def test_a_queue_opened_at_import_is_inert_in_the_worker(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    os.environ["RINGQ_PROC_TEST_QDIR"] = str(qdir)
    try:
        import proc_module_queue as m
    finally:
        del os.environ["RINGQ_PROC_TEST_QDIR"]
    q = m.q
    try:
        mid = q.publish(Job(1))
        q.start()
        assert wait_until(lambda: len(q.dlq) == 1)
        q.stop()
        dl = q.dlq.get(mid)
        assert "process-pool worker" in (dl.error_message or ""), dl.error_message
        assert "ctx.publish" in (dl.error_message or "")
    finally:
        q.close()


APP = """
from dataclasses import dataclass
import sys
import ringq
from helper import square  # a sibling module of the script


@dataclass
class Job:  # a message class defined in the script itself
    n: int


def work(msg: Job, ctx: ringq.Context) -> None:
    assert square(msg.n) == msg.n * msg.n


if __name__ == "__main__":
    with ringq.Queue(sys.argv[1]) as q:
        q.handler(Job, processes=2, timeout=30.0)(work)
        q.publish_many([Job(i) for i in range(6)])
        q.start()
        q.stop(drain=True)
        print(q.handler_stats()["work"]["succeeded"], "succeeded", len(q.dlq.list()), "dead")
"""


def test_a_script_run_from_elsewhere_finds_its_modules_and_classes_in_the_children(
    tmp_path: Path,
) -> None:
    app, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    app.mkdir()
    elsewhere.mkdir()
    (app / "helper.py").write_text("def square(x: int) -> int:\n    return x * x\n")
    (app / "main.py").write_text(APP)
    done = subprocess.run(
        [sys.executable, str(app / "main.py"), str(tmp_path / "q")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "6 succeeded 0 dead" in done.stdout, done.stderr


def test_a_handler_in_a_package_module_run_with_python_m_gets_its_relative_imports(
    tmp_path: Path,
) -> None:
    pkg = tmp_path / "shop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("def square(x: int) -> int:\n    return x * x\n")
    (pkg / "app.py").write_text(
        APP.replace("from helper import square", "from .helper import square")
    )
    done = subprocess.run(
        [sys.executable, "-m", "shop.app", str(tmp_path / "q")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "6 succeeded 0 dead" in done.stdout, done.stderr


class _Stamp:
    """Middleware: stamps what is published."""

    def before_publish(self, m: ringq.OutgoingMessage) -> ringq.OutgoingMessage:
        return ringq.OutgoingMessage(
            m.topic,
            m.payload,
            dedup_key=m.dedup_key,
            headers={**m.headers, "stamped": "yes"},
            correlation_id=m.correlation_id,
            causation_id=m.causation_id,
        )


def test_what_a_worker_process_publishes_goes_through_the_queues_codec_and_middleware(
    open_queue: OpenQueue,
) -> None:
    """On an encrypted queue with a ``before_publish`` hook, a ``processes=``
    handler's ``ctx.publish`` is sealed and stamped, as a thread's is. The
    worker process encoded it with the default codec: plaintext JSON in the
    journal, no hook, and a handler of the queue's codec dead-lettered it."""
    from ringq.codecs import CODEC_HEADER, Encrypted, JsonCodec

    q = open_queue(codec=Encrypted(JsonCodec(), os.urandom(32)))
    q.add_middleware(_Stamp())
    q.handler(Job, processes=1, retry=FAST)(work)
    q.publish(Job(7))
    q.start()
    try:
        assert wait_until(lambda: _done(q, 1))
    finally:
        q.stop()
    [d] = q.checkout("results", timeout=0)
    assert b"pid" not in d.payload, d.payload
    assert d.headers["stamped"] == "yes" and CODEC_HEADER in d.headers, d.headers
    q.release(d)
    got: list[dict[str, object]] = []

    @q.handler(dict, topic="results")
    def on_result(msg: dict[str, object]) -> None:
        got.append(msg)

    q.start()
    try:
        assert wait_until(lambda: len(got) == 1)
    finally:
        q.stop()
    assert got[0]["n"] == 7 and got[0]["pid"] != os.getpid()
    assert len(q.dlq) == 0 and q.stats()["total"] == 0


def test_a_message_published_in_a_worker_process_that_cannot_reach_the_queue_fails_the_attempt(
    open_queue: OpenQueue,
) -> None:
    q = open_queue(max_attempts=2)
    q.handler(Job, processes=1, retry=ringq.Retry(max_attempts=2, backoff=ringq.Backoff.fixed(0)))(
        work
    )
    q.publish(Job(1, "publish-lock"))
    q.start()
    try:
        assert wait_until(lambda: len(q.dlq) == 1)
    finally:
        q.stop()
    [dead] = q.dlq.list()
    assert (dead.error_type or "").endswith("HandlerProcessError"), dead.error_type
    assert "cannot be sent to the queue's process" in (dead.error_message or "")
    assert q.stats()["total"] == 0 and "results" not in q.topic_stats()


def test_a_message_published_in_a_worker_process_is_as_it_was_at_the_call(
    open_queue: OpenQueue,
) -> None:
    """The handler changes a dict after each ``ctx.publish``: each message
    holds what the dict held at its call, as with a thread handler."""
    q = open_queue()
    q.handler(Job, processes=1, retry=FAST)(work)
    q.publish(Job(1, "publish-mutated"))
    q.start()
    try:
        assert wait_until(lambda: _done(q, 3))
    finally:
        q.stop()
    assert sorted(int(r["n"]) for r in results(q)) == [0, 1, 2]


def test_a_message_that_cannot_be_sent_to_a_worker_process_is_dead_lettered_at_once(
    open_queue: OpenQueue,
) -> None:
    # It cannot be pickled now and never will be: retrying it only spent
    # every attempt (max_attempts=3 here) before the same dead letter.
    q = open_queue()
    q.handler(Sealed, processes=1, retry=FAST)(sealed_work)
    q.publish(Sealed(1))
    q.start()
    try:
        assert wait_until(lambda: len(q.dlq) == 1)
    finally:
        q.stop()
    [dead] = q.dlq.list()
    assert dead.reason == "non_retryable", dead.reason
    assert dead.message.attempt == 1
    assert (dead.error_type or "").endswith("UnsendableMessage"), dead.error_type
    assert "cannot be sent to a worker process" in (dead.error_message or "")
    assert q.handler_stats()["sealed_work"]["dead_lettered"] == 1
    assert q.stats()["total"] == 0

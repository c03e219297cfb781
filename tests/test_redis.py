"""The Redis backend beyond the contract (which runs against it too,
``tests/contract``): options that do not apply, a server that is down, a
wrong password, a namespace holding someone else's keys, the script cache
flushed during a run, the server's durability reported, waiting without a
sleep loop, and handlers. A real ``redis-server`` (``tests/redis_servers.py``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
import ringq
from redis_servers import RedisServer, redis_url
from redisd import free_port
from ringq.dispatch import outage

NO_SERVER = "redis-server is not installed (scripts/dev test installs it)"


@pytest.fixture(scope="module")
def url() -> str:
    found = redis_url()
    if found is None:
        pytest.skip(NO_SERVER)
    return found


@pytest.fixture
def server_installed() -> None:
    """For the tests that start servers of their own."""
    if shutil.which("redis-server") is None:
        pytest.skip(NO_SERVER)


@pytest.fixture
def ns() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def opened(url: str, ns: str) -> Iterator[list[ringq.Queue]]:
    queues: list[ringq.Queue] = []
    yield queues
    for q in queues:
        q.close()


def open_q(opened: list[ringq.Queue], url: str, ns: str, **options: Any) -> ringq.Queue:
    q = ringq.Queue(url, namespace=ns, **options)
    opened.append(q)
    return q


def raw(url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(url)


def test_options_that_describe_a_journal_are_refused_all_at_once(url: str, ns: str) -> None:
    with pytest.raises(ringq.ConfigError) as info:
        ringq.Queue(
            url,
            namespace=ns,
            segment_size=1 << 20,
            snapshot_every=10,
            fsync_interval=1.0,
            recycle_segments=False,
        )
    text = str(info.value)
    for name in ("segment_size", "snapshot_every", "fsync_interval", "recycle_segments"):
        assert name in text
    assert "recycle_segments=False (does not apply to a Redis queue (no journal here))" in text
    with pytest.raises(ringq.ConfigError, match="shared"):
        ringq.Queue(url, namespace=ns, shared=True)
    with pytest.raises(ringq.ConfigError, match="namespace"):
        ringq.Queue(url, namespace="a{b}")
    with pytest.raises(ringq.ConfigError, match="capacity"):
        ringq.Queue(url, namespace=ns, capacity=0)


def test_a_namespace_is_refused_for_a_directory(tmp_path: Any) -> None:
    with pytest.raises(ringq.ConfigError, match="redis:// queues only"):
        ringq.Queue(tmp_path / "q", namespace="shop")


def test_a_server_that_is_down_is_a_clear_error_naming_it() -> None:
    port = free_port()
    with pytest.raises(ringq.BackendUnavailable) as info:
        ringq.Queue(f"redis://127.0.0.1:{port}/0", namespace="shop")
    assert f"redis://127.0.0.1:{port}/0" in str(info.value)
    assert "namespace 'shop'" in str(info.value)
    assert isinstance(info.value, ringq.OwnerGone), "callers that handle OwnerGone handle it"


def test_a_wrong_password_is_a_config_error(url: str, ns: str) -> None:
    r = raw(url)
    user = "u" + uuid.uuid4().hex[:8]
    r.acl_setuser(user, enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    try:
        bad = url.replace("redis://", f"redis://{user}:wrong@")
        with pytest.raises(ringq.ConfigError, match="credentials"):
            ringq.Queue(bad, namespace=ns)
        good = url.replace("redis://", f"redis://{user}:right@")
        q = ringq.Queue(good, namespace=ns)
        q.publish(b"x")
        q.close()
    finally:
        r.acl_deluser(user)


def test_a_namespace_holding_other_keys_is_refused_and_left_alone(url: str, ns: str) -> None:
    r = raw(url)
    key = f"ringq:{{{ns}}}:meta"
    r.set(key, "someone else's")
    with pytest.raises(ringq.ConfigError, match="not a ringq queue"):
        ringq.Queue(url, namespace=ns)
    assert r.get(key) == b"someone else's"


def test_a_flushed_script_cache_is_loaded_again(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    q = open_q(opened, url, ns)
    first = q.publish(b"1")
    raw(url).script_flush()
    second = q.publish(b"2")
    got = q.checkout(max_messages=5, timeout=0)
    assert [d.id for d in got] == [first, second]
    raw(url).script_flush()
    q.ack(got)
    assert q.stats()["total"] == 0


def test_stats_report_the_servers_durability(opened: list[ringq.Queue], url: str, ns: str) -> None:
    q = open_q(opened, url, ns, durability="always")
    s = q.stats()
    assert (s["backend"], s["redis_appendfsync"], s["durability"]) == ("redis", "always", "always")
    r = raw(url)
    r.config_set("appendfsync", "everysec")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q2 = open_q(opened, url, ns, durability="always")
        assert any("appendfsync is 'everysec'" in str(w.message) for w in caught), caught
        assert q2.stats()["redis_appendfsync"] == "everysec"
    finally:
        r.config_set("appendfsync", "always")


def test_a_waiting_checkout_wakes_on_another_clients_publish(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    consumer = open_q(opened, url, ns)
    producer = open_q(opened, url, ns)
    got: list[list[ringq.Delivery]] = []
    waited: list[float] = []

    def wait() -> None:
        t0 = time.monotonic()
        got.append(consumer.checkout("t", timeout=30))
        waited.append(time.monotonic() - t0)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    published = time.monotonic()
    mid = producer.publish(b"x", "t")
    t.join(10)
    assert [d.id for d in got[0]] == [mid]
    assert time.monotonic() - published < 0.5, "woken by the publish, not a poll"


def test_an_interrupt_ends_a_waiting_checkout(opened: list[ringq.Queue], url: str, ns: str) -> None:
    q = open_q(opened, url, ns)
    backend = q.backend
    since = backend.interrupts("t")
    out: list[list[ringq.Delivery]] = []
    t = threading.Thread(target=lambda: out.append(backend.checkout("t", timeout=30, since=since)))
    t.start()
    time.sleep(0.2)
    backend.interrupt("t")
    t.join(5)
    assert not t.is_alive() and out == [[]]


def test_a_delivery_of_another_namespace_is_foreign(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    a = open_q(opened, url, ns)
    b = open_q(opened, url, ns + "-other")
    a.publish(b"x")
    [d] = a.checkout(timeout=0)
    with pytest.raises(ringq.ForeignDelivery):
        b.ack(d)
    a.ack(d)


def test_limits_hold(opened: list[ringq.Queue], url: str, ns: str) -> None:
    q = open_q(opened, url, ns, max_payload=10, max_key=4)
    with pytest.raises(ringq.LimitExceeded):
        q.publish(b"x" * 11)
    with pytest.raises(ringq.LimitExceeded):
        q.publish(b"x", dedup_key="12345")
    assert q.stats()["total"] == 0


def test_a_nul_in_a_topic_or_key_is_refused(opened: list[ringq.Queue], url: str, ns: str) -> None:
    """The namespace's indexes join a topic and a key with NUL: a topic
    "a\0b" with key "c" was topic "a" with key "b\0c" (one topic's
    publish replaced another's message). Refused, nothing written."""
    q = open_q(opened, url, ns)
    for kw in ({"topic": "a\0b"}, {"topic": "a", "dedup_key": "b\0c"}):
        with pytest.raises(ValueError, match="NUL"):
            q.publish(b"x", **kw)
    with pytest.raises(ValueError, match="NUL"):
        q.publish(b"x", "a", ordering_key="k\0")
    assert q.stats()["total"] == 0


@dataclass
class Order:
    order_id: str


def test_handlers_retry_and_dead_letter_on_redis(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    q = open_q(opened, url, ns)
    done: list[str] = []
    finished = threading.Event()

    @q.handler(Order, retry=ringq.Retry(max_attempts=2, backoff=ringq.Backoff.fixed(0.01)))
    def on_order(order: Order, ctx: ringq.Context) -> None:
        if order.order_id == "bad":
            raise ValueError("bad order")
        done.append(order.order_id)
        ctx.publish({"receipt": order.order_id}, topic="receipts")
        if len(done) == 3:
            finished.set()

    for i in ("a", "b", "bad", "c"):
        q.publish(Order(i))
    q.start()
    assert finished.wait(10)
    deadline = time.monotonic() + 10
    while len(q.dlq) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    q.stop()
    assert sorted(done) == ["a", "b", "c"]
    [dead] = q.dlq.list()
    assert (dead.reason, dead.attempts, dead.error_message) == ("max_attempts", 2, "bad order")
    assert dead.handler == "on_order"
    receipts = q.checkout("receipts", max_messages=10, timeout=0)
    assert len(receipts) == 3


def test_the_cli_inspects_and_manages_dead_letters_on_redis(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    from click.testing import CliRunner
    from ringq.cli import main

    q = open_q(opened, url, ns, max_attempts=1, capacity=1234)
    bad = q.publish(b"bad", "t")
    q.publish(b"ready", "t")
    [d] = q.checkout("t", timeout=0)
    q.nack(d, error=ValueError("nope"))
    runner = CliRunner()
    out = runner.invoke(main, ["inspect", url, "--namespace", ns, "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)
    assert (info["stats"]["ready"], info["stats"]["dead"]) == (1, 1)
    assert info["topics"]["t"]["ready"] == 1
    assert q.stats()["capacity"] == 1234, "inspecting changed nothing"
    out = runner.invoke(main, ["dlq", "list", url, "--namespace", ns, "--json"])
    assert [x["id"] for x in json.loads(out.output)] == [bad]
    out = runner.invoke(main, ["dlq", "show", url, bad, "--namespace", ns])
    assert json.loads(out.output)["error_type"] == "ValueError"
    out = runner.invoke(main, ["dlq", "replay", url, "--namespace", ns, "--yes"])
    assert out.exit_code == 0 and "replayed 1" in out.output
    assert q.stats()["ready"] == 2
    out = runner.invoke(main, ["inspect", url, "--namespace", ns + "-missing"])
    assert out.exit_code == 2 and "no ringq queue" in out.output
    out = runner.invoke(main, ["inspect", url, "--namespace", ns])
    assert out.exit_code == 0 and "appendfsync" in out.output


# -- ringq.AsyncQueue on Redis (the contract runs through it too) -------------------------


def test_async_calls_wait_on_redis_without_blocking_the_loop_and_cancel_cleanly(
    url: str, ns: str
) -> None:
    other = ringq.Queue(url, namespace=ns, capacity=2)

    async def main() -> None:
        async with ringq.AsyncQueue(url, namespace=ns, capacity=2) as q:
            ticks: list[float] = []

            async def ticker() -> None:
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.001)

            tick = asyncio.ensure_future(ticker())
            waiting = asyncio.ensure_future(q.checkout("t", timeout=10))
            await asyncio.sleep(0.2)
            assert not waiting.done() and len(ticks) > 50
            mid = other.publish(b"x", "t")
            [d] = await asyncio.wait_for(waiting, 5)
            assert d.id == mid
            await q.ack(d)
            # A checkout cancelled while it waits took nothing.
            waiting = asyncio.ensure_future(q.checkout("t", timeout=10))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            later = other.publish(b"later", "t")
            await asyncio.sleep(0.05)
            assert other.stats()["in_flight"] == 0
            [d] = await q.checkout("t", timeout=5)
            assert (d.id, d.attempt) == (later, 1)
            await q.ack(d)
            # A publish cancelled while it waits for room published nothing.
            await q.publish_many([b"1", b"2"], "u")
            blocked = asyncio.ensure_future(q.publish(b"3", "u"))
            await asyncio.sleep(0.1)
            blocked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocked
            got = await q.checkout("u", max_messages=5, timeout=0)
            await q.ack(got)
            await asyncio.sleep(0.05)
            assert [x.payload for x in got] == [b"1", b"2"]
            assert other.stats()["total"] == 0, "the cancelled publish did not happen"
            tick.cancel()

    try:
        asyncio.run(main())
    finally:
        other.close()


def test_a_checkout_cancelled_after_redis_answered_gives_its_messages_back(
    url: str, ns: str
) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(url, namespace=ns) as q:
            mid = await q.publish(b"x", "t")
            task = asyncio.ensure_future(q.checkout("t", timeout=5))
            await asyncio.sleep(0)  # the call is submitted: its script runs
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            deadline = time.monotonic() + 5
            while (await q.dlq.count(), q.stats()["in_flight"]) != (0, 0):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            [d] = await q.checkout("t", timeout=5)
            assert (d.id, d.attempt) == (mid, 1), "given back unstarted, not counted"
            await q.ack(d)

    asyncio.run(main())


def test_async_handlers_run_on_redis(url: str, ns: str) -> None:
    async def main() -> None:
        async with ringq.AsyncQueue(url, namespace=ns) as q:
            seen: list[int] = []
            deadlines: list[float] = []

            @q.handler(int, topic="n", max_parallelism=8)
            async def on_n(n: int, ctx: ringq.Context) -> None:
                deadlines.append(ctx.heartbeat(20))
                await asyncio.sleep(0.001)
                seen.append(n)
                ctx.publish(n * 2, topic="doubled")

            q.start()
            await asyncio.gather(*(q.publish(i, "n") for i in range(50)))
            deadline = time.monotonic() + 10
            while len(seen) < 50:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await q.stop()
            assert sorted(seen) == list(range(50))
            assert all(x > time.time() + 10 for x in deadlines)
            doubled = await q.checkout("doubled", max_messages=100, timeout=0)
            assert sorted(int(d.payload) for d in doubled) == [2 * i for i in range(50)]
            await q.ack(doubled)
            assert q.stats()["total"] == 0

    asyncio.run(main())


def test_a_checkout_skips_an_id_whose_message_is_gone(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    """What a server that lost part of a script leaves (docs/backends.md: a
    torn AOF): an id on a topic's list without its message. It is dropped,
    never handed out empty."""
    q = open_q(opened, url, ns)
    first = q.publish(b"1", "t")
    r = raw(url)
    r.rpush(f"ringq:{{{ns}}}:r:t", "00000000000000ff")  # listed and counted, no message
    r.hincrby(f"ringq:{{{ns}}}:n", "ready", 1)
    second = q.publish(b"2", "t")
    got = q.checkout("t", max_messages=10, timeout=0)
    assert [d.id for d in got] == [first, second]
    s = q.stats()
    assert (s["in_flight"], s["ready"]) == (2, 0)
    q.ack(got)
    assert q.stats()["total"] == 0


def test_the_leases_set_stays_a_skip_list_and_its_padding_is_never_a_lease(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    """A sorted set of up to 128 members is a listpack, where adding a
    checkout's 100 leases costs 4x a skip list's; 129 members at +inf keep
    ``leases`` a skip list. They never fall due, never count as in flight
    and never cut a wait short."""
    q = open_q(opened, url, ns, lease=30.0)
    r = raw(url)
    q.backend.publish_many([b"%d" % i for i in range(5)], "t")
    ds = q.backend.checkout("t", max_messages=5)
    leases = f"ringq:{{{ns}}}:leases"
    assert r.object("encoding", leases) == b"skiplist"
    assert r.zcard(leases) == 129 + 5
    q.backend.ack(ds)
    assert r.object("encoding", leases) == b"skiplist", "the padding outlives the leases"
    assert q.stats()["in_flight"] == 0
    t0 = time.monotonic()
    assert q.backend.checkout("t", timeout=0.2) == []
    waited = time.monotonic() - t0
    assert 0.15 < waited < 1.0, f"a checkout with nothing due waited {waited:.3f} s"
    q.backend.publish(b"late", "t")
    [d] = q.backend.checkout("t")
    assert d.payload == b"late" and d.attempt == 1
    q.backend.ack(d)


def test_publish_many_of_plain_payloads_is_all_or_none_and_checked(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    """Payloads alone on one topic go as one argument each
    (``publish_plain``); the limits and the all-or-none rule are the same
    as for items with options."""
    q = open_q(opened, url, ns, capacity=5, max_payload=10)
    be = q.backend
    with pytest.raises(ringq.LimitExceeded, match="11 bytes"):
        be.publish_many([b"ok", b"x" * 11], "t")
    ids = be.publish_many([b"a", b"b", b"c"], "t")
    assert ids == sorted(ids) and len(set(ids)) == 3
    with pytest.raises(ringq.QueueFull):
        be.publish_many([b"d", b"e", b"f"], "t", block=False)
    mixed = q.publish_many([b"d", ringq.Message(b"e", topic="u", dedup_key="k")], "t")
    assert len(mixed) == 2
    assert q.stats()["ready"] == 5
    got = be.checkout("t", max_messages=10)
    assert [(d.id, d.payload, d.attempt, d.version) for d in got] == [
        (ids[0], b"a", 1, 1),
        (ids[1], b"b", 1, 1),
        (ids[2], b"c", 1, 1),
        (mixed[0], b"d", 1, 1),
    ]
    [e] = be.checkout("u")
    assert (e.id, e.payload, e.dedup_key) == (mixed[1], b"e", "k")
    be.ack([*got, e])


def _outage_records(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[float]]:
    """The warnings of ``ringq.dispatch.outage`` and the times of every
    failed checkout (the first warning and the debug lines after it)."""
    ours = [r for r in caplog.records if r.name == "ringq.dispatch"]
    warnings_ = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    failed = [r.created for r in ours if "checkout failed" in r.getMessage()]
    return warnings_, failed


def _wait_for(cond: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["thread", "async"])
@pytest.mark.usefixtures("server_installed")
def test_handlers_back_off_while_the_server_is_down_and_carry_on_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """redis-server is killed under a running handler: its checkouts fail,
    are retried after waits that double (capped, here at 0.4 s), with one
    warning naming the server and one when it is back; the server restarts
    on its AOF and the handler goes on with what was published before and
    after, each message once."""
    monkeypatch.setattr(outage, "LONGEST", 0.4)
    caplog.set_level(logging.DEBUG, logger="ringq.dispatch")
    srv = RedisServer(tmp_path / "redis", "always")
    srv.start()
    url = f"redis://127.0.0.1:{srv.port}/0"
    q = ringq.Queue(url, namespace="down")
    got: list[bytes] = []
    if kind == "thread":

        @q.handler(bytes, topic="t")
        def on_t(b: bytes) -> None:
            got.append(b)

    else:

        @q.handler(bytes, topic="t")
        async def on_t_async(b: bytes) -> None:
            got.append(b)

    try:
        q.publish(b"before", topic="t")
        q.start()
        _wait_for(lambda: got == [b"before"], "the first message handled")
        srv.kill()
        _wait_for(lambda: len(_outage_records(caplog)[1]) >= 6, "six failed checkouts")
        srv.start()
        q.publish(b"after", topic="t")
        _wait_for(lambda: len(got) == 2, "the message published after the restart handled")
        q.stop()
    finally:
        q.close()
        srv.stop()
    assert got == [b"before", b"after"]
    warned, failed = _outage_records(caplog)
    down = [w for w in warned if "checkout failed" in w]
    assert len(down) == 1, warned
    assert url in down[0] and "BackendUnavailable" in down[0]
    assert len([w for w in warned if "works again" in w]) == 1, warned
    gaps = [b - a for a, b in itertools.pairwise(failed[:6])]
    # 0.05, 0.1, 0.2, 0.4, 0.4 s (each a little longer: the failing call)
    for gap, least in zip(gaps, (0.05, 0.1, 0.2, 0.4, 0.4), strict=True):
        assert gap >= least * 0.9, f"retries came after {gaps}"


class TlsRedisServer(RedisServer):
    """A redis-server that speaks TLS only (``--port 0``), with a
    certificate for 127.0.0.1 signed by a CA made for the test."""

    def __init__(self, directory: Path, ca: Path, cert: Path, key: Path) -> None:
        super().__init__(directory, "always")
        self.ca, self.cert, self.key = ca, cert, key

    def flags(self) -> list[str]:
        flags = super().flags()
        at = flags.index("--port")
        flags[at : at + 2] = ["--port", "0", "--tls-port", str(self.port)]
        return [*flags, "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]  # fmt: skip

    def answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca))
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw_socket,
            context.wrap_socket(raw_socket, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")


def _certificates(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed (openssl)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=ringq test CA", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", "server.crt")  # fmt: skip
    return d / "ca.crt", d / "server.crt", d / "server.key"


@pytest.mark.usefixtures("server_installed")
def test_a_queue_over_tls_with_rediss(tmp_path: Path) -> None:
    """``rediss://`` reaches a server that speaks TLS only, with the CA given
    in the URL (redis-py's ``ssl_ca_certs``), for ``Queue`` and
    ``AsyncQueue``; a client that does not trust the server's certificate
    gets a clear error naming the server, and ``redis://`` (no TLS) too."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the test's certificates)")
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = _certificates(certs)
    srv = TlsRedisServer(tmp_path / "redis", ca, cert, key)
    srv.start()
    try:
        url = f"rediss://127.0.0.1:{srv.port}/0?ssl_ca_certs={ca}"
        with ringq.Queue(url, namespace="tls") as q:
            q.publish({"n": 1}, topic="t", dedup_key="one")
            [d] = q.checkout("t", timeout=5)
            q.ack(d)
            assert q.stats()["total"] == 0

        async def main() -> None:
            async with ringq.AsyncQueue(url, namespace="tls") as aq:
                await aq.publish(b"async", "t")
                [d] = await aq.checkout("t", timeout=5)
                assert d.payload == b"async"
                await aq.ack(d)

        asyncio.run(main())
        with pytest.raises(ringq.BackendUnavailable, match=f"127.0.0.1:{srv.port}"):
            ringq.Queue(f"rediss://127.0.0.1:{srv.port}/0", namespace="tls")  # CA not trusted
        with pytest.raises(ringq.BackendUnavailable, match=f"127.0.0.1:{srv.port}"):
            ringq.Queue(f"redis://127.0.0.1:{srv.port}/0", namespace="tls")  # no TLS
    finally:
        srv.stop()


@pytest.mark.usefixtures("server_installed")
def test_a_test_server_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    """``free_port`` only finds a port free for a moment; another process
    (an outgoing connection) may take it before redis-server binds it. The
    test servers then start on a new port instead of failing the test."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        srv = RedisServer(tmp_path / "r", "always", port=taken)
        srv.start()
        try:
            assert srv.port != taken
            assert redis_py.Redis(port=srv.port).ping()
        finally:
            srv.stop()


def test_peek_and_schedules_read_a_redis_queue(
    opened: list[ringq.Queue], url: str, ns: str
) -> None:
    """``backend.peek`` (and ``ringq peek`` / ``ringq schedules`` on a Redis
    URL) reads a topic without taking anything: ready messages in order,
    then delayed and in-flight ones, as they are read from a directory."""
    from click.testing import CliRunner
    from ringq.cli import main as cli

    q = open_q(opened, url, ns)
    first = q.publish(b"first", "t", dedup_key="k1")
    second = q.publish(b"second", "t")
    later = q.publish(b"later", "t", delay=600)
    [held] = q.checkout("t", timeout=0)
    assert held.id == first
    q.publish(b"other", "u")
    rows = q.backend.peek("t", 10)
    assert [(r["id"], r["state"], r["attempt"]) for r in rows] == [
        (second, "ready", 0),
        (first, "in_flight", 1),
        (later, "delayed", 0),
    ]
    assert rows[1]["dedup_key"] == "k1" and rows[1]["payload"] == b"first"
    assert [r["id"] for r in q.backend.peek("t", 1)] == [second]
    assert q.stats()["in_flight"] == 1, "peek takes nothing"

    out = CliRunner().invoke(cli, ["peek", url, "--namespace", ns, "--topic", "t", "--json"])
    assert out.exit_code == 0, out.output
    assert [m["payload"] for m in json.loads(out.output)] == ["second", "first", "later"]
    unknown = CliRunner().invoke(cli, ["peek", url, "--namespace", ns, "--topic", "tt"])
    assert unknown.exit_code == 1 and "'t'" in unknown.output, unknown.output

    q.every(3600, b"tick", topic="hourly", name="hourly")
    listed = CliRunner().invoke(cli, ["schedules", url, "--namespace", ns, "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["name"], row["topic"], row["spec"]) == ("hourly", "hourly", "every 3600s")


def test_stopping_async_handlers_finishes_the_calls_left_on_their_loop(
    url: str, ns: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Async handlers wait in a checkout (a ``BLPOP`` on the server) when
    the queue stops: the waiting call is cancelled, and it must get to run
    its cancellation before the handlers' own loop closes. Left pending, it
    is destroyed later by the garbage collector, which runs the Redis
    client's cleanup with no loop ("Exception ignored in: <coroutine object
    RedisLoopHandle._drive>", "Task was destroyed but it is pending!") and
    leaves its connection to be closed by nobody."""
    import gc
    import sys

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    caplog.set_level(logging.ERROR, logger="asyncio")
    r = raw(url)
    for _ in range(5):
        q = ringq.Queue(url, namespace=ns)
        try:

            @q.handler(bytes, topic="t")
            async def on_t(b: bytes) -> None:  # never called: nothing is published
                raise AssertionError(b)

            before = int(r.info("clients")["blocked_clients"])
            q.start()
            _wait_for(
                lambda: int(r.info("clients")["blocked_clients"]) > before,  # noqa: B023
                "the handler waiting in a checkout on the server",
            )
            q.stop()
        finally:
            q.close()
        del q, on_t
        gc.collect()
    assert unraisable == [], [str(u.exc_value) for u in unraisable]
    assert "Task was destroyed but it is pending" not in caplog.text


def test_a_manual_clock_moves_only_between_scripts() -> None:
    """``_manual_clock``: an advance waits for the scripts that read the time
    before it (one sent after the advance's reap with the old time would
    lease a message the reap made ready with a deadline a whole step early:
    the schedules contract saw a tick fire an interval late, about 1 run in
    7 on a Redis Cluster)."""
    from ringq.backends.redis import _Clock

    clock = _Clock(manual=True)
    t0 = clock.now()
    moved = threading.Event()
    mover = threading.Thread(target=lambda: (clock.advance(10.0), moved.set()), daemon=True)
    with clock.reading() as at:
        assert at == t0
        mover.start()
        assert not moved.wait(0.2), "the clock moved under a script that read it"
        assert clock.now() == t0
    mover.join(5.0)
    assert moved.is_set() and clock.now() == t0 + 10_000_000
    with clock.reading() as at:
        assert at == t0 + 10_000_000
    wall = _Clock(manual=False)
    with wall.reading() as at:
        assert abs(at - time.time() * 1e6) < 5e6

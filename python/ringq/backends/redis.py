"""A queue in a Redis namespace: ``ringq.Queue("redis://host:port/db", namespace="shop")``.

The same contract as the engine (``tests/contract`` runs against both),
kept by Lua scripts (``ringq.backends.redis_scripts``): every operation
that touches more than one key is one script, atomic on the server, on keys
that share the hash tag ``{namespace}`` (one slot, so a namespace works
unchanged on Redis Cluster). Scripts are loaded once and run with
``EVALSHA`` (loaded again if the server forgot them: ``SCRIPT FLUSH``, a
restart).

How the contract maps to Redis (more in ``docs/backends.md``):

- a topic's ready messages are a list of ids (first to be delivered on the
  left): FIFO, a release goes back to the front, a replace keeps its place;
  bodies and metadata are hashes;
- a priority other than 0 has a list of its own per topic (checkouts take
  9..1, then 0; a bitmap per topic marks the lists in use); an ordering key
  has a line of its messages' ids, of which only the first is listed or in
  flight; a dedup window opened by an ack is a key of its own with the end
  of the window (by the clients' clock) and a real-time expiry after it;
- leases and delays are sorted sets by deadline / due time; every script
  first *reaps* what fell due (any client does it, atomically, so two
  clients never both redeliver one message) with the time the client
  sends, so every client judges by the same clock argument;
- a checkout that waits blocks in ``BLPOP`` on the topic's wake-up list
  (a publish, a due delay or an ended lease pushes a token), for at most
  the time until the next deadline or delay, so it is never a sleep loop;
  a publish into a full queue waits the same way on the ``room`` list;
- on a Redis Cluster a script runs only while its slot is settled on its
  node (``CLUSTER_GUARD``): while a reshard moves the slot key by key, the
  namespace's calls wait and try again instead of meeting half its keys gone;
- durability is the server's (``appendonly`` and ``appendfsync``):
  ``stats()["redis_appendfsync"]`` reports it, and ``durability="always"``
  warns when the server does not fsync every write.

``ringq.AsyncQueue`` on Redis drives the same operations (each written
once, as a generator of requests) with redis.asyncio: ``RedisLoopHandle``.

Options that describe a journal on disk (``segment_size``,
``snapshot_every``, ``snapshot_interval``, a non-default
``fsync_interval`` or ``recycle_segments``) do not apply and are refused. The queue's capacity,
``max_attempts`` and ``dlq_capacity`` are kept in the namespace (the first
opener's values; a later opener with other values gets a ``ConfigError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from ringq import errors
from ringq.backend import DeadLetter, Delivery, OutgoingMessage, untrack_deliveries
from ringq.backends.redis_scripts import SCRIPTS
from ringq.backends.urls import REDIS_SCHEMES as SCHEMES
from ringq.backends.urls import is_redis_url
from ringq.retry import check_seconds

__all__ = ["RedisBackend", "is_redis_url", "open_redis"]

T = TypeVar("T")
#: What an operation asks the server for: ``("script", name, args)``,
#: ``("pipe", [(command, args), ...], transaction)`` or ``("wait", key, seconds)``.
Request = tuple[str, Any, Any]
#: An operation, driven by ``RedisBackend._run`` or ``RedisLoopHandle``.
Op = Generator[Request, Any, T]

#: How long one wait in ``BLPOP`` lasts at most before the caller looks
#: again (a closed queue, a deadline): seconds.
SLICE = 1.0
#: What the engine's options default to (``ringq._core._default_options()``).
_NOT_FOR_REDIS = ("segment_size", "snapshot_every", "snapshot_interval")
_DEFAULT_FSYNC_INTERVAL = 0.05
_MICRO = 1_000_000
#: Priorities are 0..=MAX_PRIORITY (as the engine's).
MAX_PRIORITY = 9
#: Longest topic, in bytes (as the engine's `MAX_TOPIC`).
MAX_TOPIC = 255
#: The longest dedup window, in seconds (as the engine's: a year).
MAX_WINDOW = 31_536_000
#: How long a call waits for a reshard of its namespace's slot to end: seconds.
RESHARD_WAIT = 60.0
#: How long an advance of the manual clock (tests) waits for the scripts
#: that read the time before it: seconds (``_Clock.advance``).
ADVANCE_WAIT = 30.0
#: A pooled connection idle this many seconds is checked with a PING (and
#: made again if the server closed it, e.g. restarted) before a call uses
#: it, so a call is not failed by a connection that broke while unused.
HEALTH_CHECK = 1.0

#: Put before every script on a Redis Cluster. While a reshard moves the
#: namespace's slot (``MIGRATING`` on the old master, ``IMPORTING`` on the
#: new one, keys moved a few at a time), some keys are on one node and some
#: on the other. A script on the old master that met a moved key would fail
#: in the middle with its earlier writes kept (Redis rolls nothing back, and
#: the keys a script makes, such as ``m:<id>``, cannot be declared up
#: front); one sent to the new master by ``ASK`` would read a key not moved
#: yet as empty. So a script first reads two keys of KEYS[1]'s slot that
#: never exist: the cluster refuses that only while the slot moves (the old
#: master: "not here, ASK"; the new one: "not all here, TRYAGAIN"); then the
#: script refuses before its first write and the client asks again until
#: the reshard is over (``MOVED`` then sends it to the new master). Any
#: other refusal (the cluster is down; keys outside the slot, a bug) is
#: passed on as it is.
CLUSTER_GUARD = r"""
do
  local a, b = KEYS[1] .. '?resharding1', KEYS[1] .. '?resharding2'
  local probe = redis.pcall('EXISTS', a, b)
  if type(probe) == 'table' and probe.err then
    local here = redis.call('CLUSTER', 'KEYSLOT', KEYS[1])
    if redis.call('CLUSTER', 'KEYSLOT', a) ~= here
      or string.find(probe.err, 'cluster is down', 1, true) then
      return redis.error_reply(probe.err)
    end
    return redis.error_reply('RESHARDING ' .. probe.err)
  end
end
"""


_HEX = frozenset("0123456789abcdef")
#: What the ``cancel`` script's answer means (as the engine's ``cancel``).
_CANCELLED = ("not_found", "cancelled", "cancelled_in_flight")


def _check_ids(ids: list[str] | None) -> None:
    """``NotFound`` for an id that is not one of this backend's (16
    lower-case hex digits, as it makes them: its keys hold the text)."""
    for i in ids or ():
        if not _is_id(i):
            raise errors.NotFound(f"{i!r} (ids are 16 hex digits)")


def _is_id(i: object) -> bool:
    """Whether ``i`` is written as this backend writes its ids."""
    return isinstance(i, str) and len(i) == 16 and all(c in _HEX for c in i)


def _limit(what: str, value: str, limit: int) -> None:
    """``LimitExceeded`` if ``value`` is over ``limit`` bytes (UTF-8), worded
    as the engine words it."""
    size = len(value.encode())
    if size > limit:
        raise errors.LimitExceeded(f"{what} is {size} bytes, over the limit of {limit} bytes")


def _us(seconds: float) -> int:
    return round(seconds * _MICRO)


def _s(micros: Any) -> float:
    return int(micros) / _MICRO


def _text(v: object) -> str | None:
    if v is None or v is False:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


class _Clock:
    """Wall time, or (tests) a manual clock that stands still until advanced.

    A script takes the time as an argument (``_script_args``), read before
    it is sent: with the manual clock, a script sent with the time from
    before an advance would act on what the advance's reap changed with the
    old time (lease a message the reap made ready, with a deadline a whole
    step early). So every script holds the time it read (``reading``) until
    it has run, and ``advance`` waits for those to end first: each script
    runs wholly before or wholly after an advance, as each engine call does
    under the engine's lock."""

    def __init__(self, manual: bool) -> None:
        self.manual = manual
        self._at = _us(time.time())
        self._cv = threading.Condition()
        #: Scripts under way with the manual time they read.
        self._readers = 0

    def now(self) -> int:
        return self._at if self.manual else _us(time.time())

    @contextlib.contextmanager
    def reading(self) -> Iterator[int]:
        """The time for one script, held (manual clock) until it has run."""
        if not self.manual:
            yield _us(time.time())
            return
        with self._cv:
            self._readers += 1
            at = self._at
        try:
            yield at
        finally:
            with self._cv:
                self._readers -= 1
                if self._readers == 0:
                    self._cv.notify_all()

    def advance(self, seconds: float) -> int:
        """Moves the manual clock once no script holds the time before it.
        Not from the thread of an event loop whose tasks run this queue's
        scripts (they could not finish): that, a script stuck on a server
        that does not answer, or scripts without pause, end in a
        ``RuntimeError`` after ``ADVANCE_WAIT`` seconds."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._readers == 0, ADVANCE_WAIT):
                raise RuntimeError(
                    f"the manual clock waited {ADVANCE_WAIT:g} s for {self._readers} "
                    "script(s) that read the time before this advance"
                )
            self._at += _us(seconds)
            return self._at


def open_redis(url: str, **options: Any) -> RedisBackend:
    return RedisBackend(url, **options)


class RedisBackend:
    """``ringq.backend.Backend`` on Redis (see the module docs)."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str | None = None,
        capacity: int | None = None,
        durability: str = "batch",
        fsync_interval: float | None = None,
        max_attempts: int | None = None,
        lease: float | None = None,
        segment_size: int | None = None,
        recycle_segments: bool = True,
        snapshot_every: int | None = None,
        snapshot_interval: float | None = None,
        max_payload: int | None = None,
        max_key: int | None = None,
        max_headers: int | None = None,
        dlq_capacity: int | None = None,
        shared: bool = False,
        _manual_clock: bool | None = None,
        _client: Any = None,
        _existing: bool = False,
    ) -> None:
        from ringq import _core
        from ringq.config import QUEUE_OPTIONS
        from ringq.retry import _Problems

        defaults = _core._default_options()
        given = {
            "capacity": capacity,
            "durability": durability,
            "fsync_interval": fsync_interval,
            "max_attempts": max_attempts,
            "lease": lease,
            "segment_size": segment_size,
            "snapshot_every": snapshot_every,
            "snapshot_interval": snapshot_interval,
            "max_payload": max_payload,
            "max_key": max_key,
            "max_headers": max_headers,
            "dlq_capacity": dlq_capacity,
        }
        p = _Problems()
        for option in QUEUE_OPTIONS:
            if given.get(option.name) is not None:  # None: the default
                option.check(p, given[option.name])
        for name in _NOT_FOR_REDIS:
            if given[name] is not None:
                p.add(name, given[name], "does not apply to a Redis queue (no journal here)")
        if fsync_interval is not None and fsync_interval != _DEFAULT_FSYNC_INTERVAL:
            p.add(
                "fsync_interval",
                fsync_interval,
                "does not apply to a Redis queue: the server's appendfsync decides",
            )
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            p.add("url", url, f"must start with one of {', '.join(s + '://' for s in SCHEMES)}")
        if namespace is None:
            namespace = "default"
        if not namespace or any(c in namespace for c in "{}\0") or len(namespace) > 200:
            p.add("namespace", namespace, "must be 1-200 characters without braces or NUL")
        if shared:
            p.add("shared", shared, "does not apply to a Redis queue (every client shares it)")
        if recycle_segments is not True:
            p.add(
                "recycle_segments",
                recycle_segments,
                "does not apply to a Redis queue (no journal here)"
                if recycle_segments is False
                else "must be True or False",
            )
        p.raise_if_any("Redis queue options")
        opt = {k: (defaults[k] if v is None else v) for k, v in given.items()}
        self._url = url
        self._namespace = namespace
        self._prefix = f"ringq:{{{namespace}}}:"
        self._meta = self._prefix + "meta"
        self._durability = str(opt["durability"])
        self._lease = float(opt["lease"])
        self._max_payload = int(opt["max_payload"])
        self._max_key = int(opt["max_key"])
        self._max_headers = int(opt["max_headers"])
        self._clock = _Clock(bool(_manual_clock))
        self._closed = False
        self._pid = os.getpid()
        self._waiting: dict[str, int] = {}
        self._waiting_lock = threading.Lock()
        self._shas: dict[str, str] = {}
        self._cluster = parts.scheme.endswith("+cluster")
        self._r = _client if _client is not None else self._connect(url)
        self._appendfsync = self._call(lambda: self._server_appendfsync())
        if self._durability == "always" and self._appendfsync != "always":
            warnings.warn(
                f"durability='always' on {self._where()}, but the server's appendfsync is "
                f"{self._appendfsync!r}: a confirmed publish can be lost if the server "
                "crashes (set appendonly yes and appendfsync always)",
                RuntimeWarning,
                stacklevel=4,
            )
        self._instance = self._call(
            lambda: self._init_meta(
                int(opt["capacity"]), int(opt["max_attempts"]), int(opt["dlq_capacity"]), _existing
            )
        )
        self._instance_int = int(self._instance, 16)

    # -- connection ---------------------------------------------------------

    @staticmethod
    def _connect(url: str) -> Any:
        try:
            import redis
        except ImportError as e:  # pragma: no cover - the extra is installed in CI
            raise errors.ConfigError(
                "a redis:// queue needs redis-py: pip install 'ringq[redis]'"
            ) from e
        parts = urlsplit(url)
        if parts.scheme.endswith("+cluster"):
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            plain = url.replace("+cluster", "", 1)
            # No retries, as a plain client has none: a script whose reply
            # was lost may have run, and running it again would publish
            # twice, or take a second batch whose first nobody holds (the
            # caller gets BackendUnavailable, as on a standalone server).
            return redis.RedisCluster.from_url(
                plain, socket_timeout=None, retry=Retry(NoBackoff(), 0)
            )
        return redis.Redis.from_url(url, socket_timeout=None, health_check_interval=HEALTH_CHECK)

    @staticmethod
    def _connect_async(url: str) -> Any:
        import redis.asyncio as aredis

        if urlsplit(url).scheme.endswith("+cluster"):
            from redis.asyncio.retry import Retry as AsyncRetry
            from redis.backoff import NoBackoff

            # No retries (see _connect).
            return aredis.RedisCluster.from_url(
                url.replace("+cluster", "", 1), retry=AsyncRetry(NoBackoff(), 0)
            )
        return aredis.Redis.from_url(url, health_check_interval=HEALTH_CHECK)

    def _deferred(self) -> RedisLoopHandle:
        """The handle ``ringq.AsyncQueue`` calls (see ``RedisLoopHandle``)."""
        self._check_open()
        return RedisLoopHandle(self)

    def _where(self) -> str:
        parts = urlsplit(self._url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path} namespace {self._namespace!r}"

    def _call(self, f: Callable[[], T]) -> T:
        """Runs ``f`` (Redis commands), turning Redis' errors into ringq's."""
        try:
            return f()
        except Exception as e:
            mapped = self._map_error(e)
            if mapped is None:
                raise
            if isinstance(mapped, errors.BackendUnavailable):
                _drop_idle(self._r)
            raise mapped from e

    def _map_error(self, e: Exception) -> Exception | None:
        """ringq's error for an error of redis-py (``None``: not one)."""
        import redis

        if isinstance(e, redis.exceptions.AuthenticationError):
            return errors.ConfigError(f"Redis refused the credentials for {self._where()}: {e}")
        if isinstance(e, redis.exceptions.NoScriptError):
            return None
        if isinstance(e, redis.exceptions.ResponseError):
            return self._script_error(str(e))
        if isinstance(e, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return errors.BackendUnavailable(
                f"the Redis server of {self._where()} cannot be reached ({e}); whether the "
                "call took effect is unknown"
            )
        return None

    def _script_error(self, text: str) -> Exception:
        word, _, rest = text.partition(" ")
        if word == "FULL":
            need, capacity = (int(x) for x in rest.split()[:2])
            msg = (
                f"{need} message(s) can never fit a queue of capacity {capacity}"
                if need > capacity
                else f"the queue is full (capacity {capacity})"
            )
            e: Exception = errors.QueueFull(msg)
            e.need, e.capacity = need, capacity  # type: ignore[attr-defined]
            return e
        if word == "RESHARDING":
            return errors.BackendUnavailable(
                f"the slot of {self._where()} has been moving between Redis Cluster nodes "
                f"for over {RESHARD_WAIT:g} s (a reshard stopped half way? redis-cli --cluster "
                f"fix ends it); the call did not take effect ({rest})"
            )
        if word == "VERSION":
            expected, actual = (int(x) for x in rest.split()[:2])
            v = errors.VersionConflict(
                f"expected version {expected} of the dedup key, found {actual}"
            )
            v.expected, v.actual = expected, actual
            return v
        return errors.RingqError(f"Redis refused a call on {self._where()}: {text}")

    def _server_appendfsync(self) -> str:
        try:
            cfg = self._r.config_get("appendonly")
            fs = self._r.config_get("appendfsync")
        except Exception:  # CONFIG may be disabled (managed Redis): unknown
            return "unknown"
        flat_on = _first_value(cfg)
        flat_fs = _first_value(fs)
        return "no appendonly" if flat_on != "yes" else (flat_fs or "unknown")

    def _init_meta(
        self, capacity: int, max_attempts: int, dlq_capacity: int, existing: bool
    ) -> str:
        """The namespace's identity (made by its first opener). Its
        ``capacity``, ``max_attempts`` and ``dlq_capacity`` are the last
        opener's, as a directory reopened with other options takes them.
        ``existing`` (the CLI): the queue must exist, and nothing is changed."""
        r = self._r
        kind = _text(r.type(self._meta))
        if existing:
            instance = _text(r.hget(self._meta, "instance")) if kind == "hash" else None
            if instance is None:
                raise errors.NotFound(f"no ringq queue in {self._where()}")
            return instance
        foreign = kind == "hash" and not r.hexists(self._meta, "instance")
        if kind not in ("none", "hash") or foreign:
            raise errors.ConfigError(
                f"{self._where()} holds keys that are not a ringq queue's ({self._meta} is a "
                f"{kind} without a queue's identity): choose another namespace; nothing was changed"
            )
        pipe = r.pipeline(transaction=True)
        pipe.hsetnx(self._meta, "instance", secrets.token_hex(8))
        pipe.hset(
            self._meta,
            mapping={
                "capacity": capacity,
                "max_attempts": max_attempts,
                "dlq_capacity": dlq_capacity,
            },
        )
        pipe.hget(self._meta, "instance")
        instance = _text(pipe.execute()[-1])
        assert instance is not None
        return instance

    def _script_args(self, now: int, args: Sequence[object]) -> list[object]:
        """A script's ARGV (prefix, the time ``now`` from ``_clock.reading``,
        then ``args``); the queue must be open."""
        if self._closed:
            raise errors.QueueClosed("the queue is closed")
        if os.getpid() != self._pid:
            raise errors.QueueForked(
                f"this Redis queue was opened by process {self._pid}: open it again in the child"
            )
        return [self._prefix, now, *args]

    def _script_text(self, name: str) -> str:
        return CLUSTER_GUARD + SCRIPTS[name] if self._cluster else SCRIPTS[name]

    @staticmethod
    def _resharding(e: Exception, deadline: float) -> bool:
        """``e`` is ``CLUSTER_GUARD``'s refusal (nothing was written) and
        there is time to try again."""
        return str(e).startswith("RESHARDING ") and time.monotonic() < deadline

    def _script(self, name: str, args: Sequence[object]) -> Any:
        """Runs script ``name`` (``EVALSHA``; loaded again if the server lost
        it; again, after a growing pause, while its slot is resharded)."""
        with self._clock.reading() as now:
            full = self._script_args(now, args)
            return self._call(partial(self._run_script, name, full))

    def _run_script(self, name: str, full: list[object]) -> Any:
        """``_script``'s call with its ARGV ``full``."""
        import redis

        def once() -> Any:
            sha = self._shas.get(name)
            if sha is None:
                sha = self._shas[name] = self._r.script_load(self._script_text(name))
            try:
                return self._r.evalsha(sha, 1, self._meta, *full)
            except redis.exceptions.NoScriptError:
                self._shas[name] = self._r.script_load(self._script_text(name))
                return self._r.evalsha(self._shas[name], 1, self._meta, *full)

        def run() -> Any:
            deadline, pause = time.monotonic() + RESHARD_WAIT, 0.001
            while True:
                try:
                    return once()
                except redis.exceptions.ResponseError as e:
                    if not self._resharding(e, deadline):
                        raise
                time.sleep(pause)
                pause = min(2 * pause, 0.05)

        return run()

    # -- properties ---------------------------------------------------------

    @property
    def path(self) -> str:
        return self._url

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def instance_id(self) -> str:
        return self._instance

    @property
    def durability(self) -> str:
        return self._durability

    @property
    def lease(self) -> float:
        return self._lease

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def role(self) -> str:
        return "redis"

    @property
    def address(self) -> str | None:
        return None

    @property
    def forked(self) -> bool:
        return os.getpid() != self._pid

    def check_not_forked(self) -> None:
        if self.forked:
            raise errors.QueueForked(
                f"this Redis queue was opened by process {self._pid}: open it again in the child"
            )

    # -- checks ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise errors.QueueClosed("the queue is closed")

    def _item(
        self,
        topic: str,
        payload: object,
        dedup_key: str | None,
        delay: float | None,
        headers: dict[str, str] | None,
        correlation_id: str | None,
        causation_id: str | None,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> list[object]:
        """The ten script fields of one message (``ITEM`` in the scripts),
        its limits checked."""
        # Checked as the engine checks them (``check_limits``), so that what
        # one backend refuses the other does too; and no NUL in a topic or
        # key: the namespace's indexes join them with NUL (a topic "a\0b"
        # and key "c" would be topic "a" and key "b\0c").
        if not isinstance(payload, bytes):
            kind = type(payload).__name__
            raise TypeError(f"the backend takes bytes, not {kind} (ringq.Queue encodes objects)")
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if not topic:
            raise ValueError("topic must not be empty")
        _limit("topic", topic, MAX_TOPIC)
        if len(payload) > self._max_payload:
            raise errors.LimitExceeded(
                f"payload of {len(payload)} bytes is over max_payload={self._max_payload}"
            )
        for what, value in (
            ("dedup_key", dedup_key),
            ("correlation_id", correlation_id),
            ("causation_id", causation_id),
        ):
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{what} must be None or a str, not {type(value).__name__}")
                _limit(what, value, self._max_key)
        if dedup_key == "":
            raise ValueError("dedup_key must not be empty (use None for no key)")
        for what, value in (("topic", topic), ("dedup_key", dedup_key)):
            if value is not None and "\0" in value:
                raise ValueError(f"{what} must not contain NUL on a Redis queue")
        head = ""
        if headers:
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise TypeError("headers must be a dict of str to str")
            size = sum(len(k.encode()) + len(v.encode()) + 8 for k, v in headers.items())
            if size > self._max_headers:
                raise errors.LimitExceeded(
                    f"headers are {size} bytes, over max_headers={self._max_headers}"
                )
            head = json.dumps(headers, separators=(",", ":"), ensure_ascii=False)
        # As the engine checks it: 0..=365 days.
        delay = check_seconds("delay", delay, optional=True)
        extra: tuple[object, object, object] = ("", "", "")
        if priority is not None or ordering_key is not None or dedup_window is not None:
            extra = self._extra(dedup_key, priority, ordering_key, dedup_window)
        return [
            topic,
            payload,
            dedup_key or "",
            _us(delay) if delay else 0,
            head,
            correlation_id or "",
            causation_id or "",
            *extra,
        ]

    def _extra(
        self,
        dedup_key: str | None,
        priority: int | None,
        ordering_key: str | None,
        dedup_window: float | None,
    ) -> tuple[object, object, object]:
        """The script fields of a priority, an ordering key and a dedup
        window (``""``: none), checked as the engine checks them."""
        pr: object = ""
        if priority is not None:
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise TypeError(
                    f"priority must be None or an int in 0..=9, not {type(priority).__name__}"
                )
            if not 0 <= priority <= MAX_PRIORITY:
                raise ValueError(f"priority={priority!r} (must be None or an int in 0..=9)")
            pr = priority or ""
        okey = ""
        if ordering_key is not None:
            if not isinstance(ordering_key, str):
                raise TypeError(f"ordering_key must be a str, not {type(ordering_key).__name__}")
            if not ordering_key:
                raise ValueError("ordering_key must not be empty (use None for no key)")
            if "\0" in ordering_key:
                raise ValueError("ordering_key must not contain NUL on a Redis queue")
            if len(ordering_key.encode()) > self._max_key:
                raise errors.LimitExceeded(f"ordering key is over max_key={self._max_key} bytes")
            okey = ordering_key
        window: object = ""
        if dedup_window is not None:
            if isinstance(dedup_window, bool) or not isinstance(dedup_window, int | float):
                raise TypeError(
                    "dedup_window must be None or a number of seconds > 0, "
                    f"not {type(dedup_window).__name__}"
                )
            if not 0 < dedup_window <= MAX_WINDOW:
                raise ValueError(
                    f"dedup_window={dedup_window!r} (must be > 0 and <= {MAX_WINDOW} seconds; "
                    "use None for no window)"
                )
            if not dedup_key:
                raise ValueError("dedup_window needs a dedup_key")
            window = max(1, _us(dedup_window))
        return pr, okey, window

    def _outgoing(self, items: Iterable[bytes | OutgoingMessage], topic: str) -> list[object]:
        fields: list[object] = []
        n = 0
        for it in items:
            if isinstance(it, OutgoingMessage):
                fields += self._item(
                    it.topic,
                    it.payload,
                    it.dedup_key,
                    it.delay,
                    it.headers or None,
                    it.correlation_id,
                    it.causation_id,
                    it.priority,
                    it.ordering_key,
                    it.dedup_window,
                )
            elif isinstance(it, bytes):
                fields += self._item(topic, it, None, None, None, None, None)
            else:
                raise TypeError(
                    f"publish_many takes bytes or OutgoingMessage items, not {type(it).__name__}"
                )
            n += 1
        return [n, *fields]

    def _leases(self, deliveries: Delivery | Iterable[Delivery], what: str) -> list[Delivery]:
        ds = [deliveries] if isinstance(deliveries, Delivery) else list(deliveries)
        for d in ds:
            if not isinstance(d, Delivery):
                raise TypeError(f"{what} takes Delivery objects, not {type(d).__name__}")
            self._own(d)
        return ds

    def _own(self, d: Delivery) -> None:
        if d.queue_id is not None and d.queue_id != self._instance:
            e = errors.ForeignDelivery(
                f"delivery {d.id} is of another queue ({d.queue_id}), not of "
                f"{self._where()} ({self._instance})"
            )
            e.ids = [d.id]
            raise e

    @staticmethod
    def _lost(ids: Sequence[object]) -> errors.LeaseLost:
        names = [_text(i) or "" for i in ids]
        e = errors.LeaseLost(
            f"lease lost for {len(names)} message(s) [{', '.join(names)}]: the lease expired "
            "or the message was delivered again"
        )
        e.ids = names
        return e

    # -- operations, once for both drivers -------------------------------------
    #
    # Each operation is a generator: it yields what it needs from the server
    # (``("script", name, args)``, ``("pipe", commands, transaction)``,
    # ``("wait", key, seconds)``: a ``BLPOP``)
    # and gets the answer back (or the error thrown in). ``_run`` drives one
    # with the blocking client; ``RedisLoopHandle`` drives the same with
    # redis.asyncio on an event loop (``ringq.AsyncQueue``).

    def _run(self, op: Op[T]) -> T:
        """Drives ``op`` with the blocking client."""
        answer: Any = None
        failure: BaseException | None = None
        while True:
            try:
                req = op.throw(failure) if failure is not None else op.send(answer)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            answer, failure = None, None
            try:
                if req[0] == "script":
                    answer = self._script(req[1], req[2])
                elif req[0] == "pipe":
                    answer = self._call(partial(self._pipe, req[1], req[2]))
                else:
                    answer = self._call(partial(self._r.blpop, [req[1]], timeout=req[2]))
            except BaseException as e:  # handed to the operation
                failure = e

    def _pipe(self, commands: Sequence[tuple[str, tuple[Any, ...]]], transaction: bool) -> Any:
        pipe = self._r.pipeline(transaction=transaction)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return pipe.execute()

    def _wait_seconds(self, deadline: float | None, next_due: int) -> float:
        """How long a wait may last: to ``deadline`` (monotonic), to the next
        due time (``next_due``, microseconds; -1: none), at most ``SLICE``;
        0: do not wait."""
        wait = SLICE
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        if next_due >= 0 and not self._clock.manual:
            wait = min(wait, max(0.0, (next_due - self._clock.now()) / _MICRO) + 0.001)
        return max(0.01, wait) if wait > 0 else 0.0

    def _waiting_on(self, key: str, by: int) -> None:
        with self._waiting_lock:
            self._waiting[key] = self._waiting.get(key, 0) + by
            if self._waiting[key] <= 0:
                del self._waiting[key]

    def _with_room(
        self, name: str, args: Sequence[object], block: bool, timeout: float | None
    ) -> Op[Any]:
        """Script ``name`` (a publish); if the queue is full and ``block``,
        again whenever room is made, until ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        room = self._prefix + "room"
        self._waiting_on(room, 1)
        try:
            while True:
                try:
                    return (yield ("script", name, args))
                except errors.QueueFull as e:
                    if not block or (e.need or 0) > (e.capacity or 0):
                        raise
                    wait = self._wait_seconds(deadline, -1)
                    if wait == 0:
                        raise
                    self._check_open()
                    yield ("wait", room, wait)
        finally:
            self._waiting_on(room, -1)

    # -- publishing -------------------------------------------------------------

    def publish(
        self,
        payload: bytes,
        topic: str | None = None,
        dedup_key: str | None = None,
        delay: float | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        on_duplicate: str = "replace",
        expected_version: int | None = None,
        block: bool = True,
        timeout: float | None = None,
        *,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> str:
        return self._run(
            self._publish(
                payload,
                topic,
                dedup_key,
                delay,
                headers,
                correlation_id,
                causation_id,
                on_duplicate,
                expected_version,
                block,
                timeout,
                priority,
                ordering_key,
                dedup_window,
            )
        )

    def _publish(
        self,
        payload: bytes,
        topic: str | None,
        dedup_key: str | None,
        delay: float | None,
        headers: dict[str, str] | None,
        correlation_id: str | None,
        causation_id: str | None,
        on_duplicate: str,
        expected_version: int | None,
        block: bool,
        timeout: float | None,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> Op[str]:
        self._check_open()
        if on_duplicate not in ("replace", "keep"):
            raise ValueError(f"on_duplicate must be 'replace' or 'keep', not {on_duplicate!r}")
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 0
        ):
            raise errors.ConfigError(f"expected_version={expected_version!r} (must be an int >= 0)")
        if expected_version is not None and dedup_key is None:
            raise ValueError("expected_version needs a dedup_key")
        fields = self._item(
            "default" if topic is None else topic,
            payload,
            dedup_key,
            delay,
            headers,
            correlation_id,
            causation_id,
            priority,
            ordering_key,
            dedup_window,
        )
        args = [*fields, on_duplicate, "" if expected_version is None else expected_version]
        got = yield from self._with_room("publish", args, block, timeout)
        return _text(got) or ""

    def publish_many(
        self,
        payloads: Iterable[bytes | OutgoingMessage],
        topic: str | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> list[str]:
        return self._run(self._publish_many(payloads, topic, block, timeout))

    def _publish_many(
        self,
        payloads: Iterable[bytes | OutgoingMessage],
        topic: str | None,
        block: bool,
        timeout: float | None,
    ) -> Op[list[str]]:
        self._check_open()
        items = payloads if isinstance(payloads, list) else list(payloads)
        if not items:
            return []
        topic = "default" if topic is None else topic
        if all(type(p) is bytes for p in items):  # one argument per message
            self._item(topic, b"", None, None, None, None, None)
            big = max(map(len, items))
            if big > self._max_payload:
                raise errors.LimitExceeded(
                    f"payload of {big} bytes is over max_payload={self._max_payload}"
                )
            args: list[object] = [topic, *items]
            first = yield from self._with_room("publish_plain", args, block, timeout)
            return [f"{i:016x}" for i in range(int(first) + 1, int(first) + 1 + len(items))]
        args = self._outgoing(items, topic)
        got = yield from self._with_room("publish_many", args, block, timeout)
        return [_text(i) or "" for i in got]

    # -- consuming ----------------------------------------------------------------

    def checkout(
        self,
        topic: str = "default",
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float | None = None,
        *,
        share: int = 1,
        since: int | None = None,
    ) -> list[Delivery]:
        return self._run(self._checkout(topic, max_messages, lease, timeout, share, since))

    def _checkout(
        self,
        topic: str,
        max_messages: int,
        lease: float | None,
        timeout: float | None,
        share: int,
        since: int | None,
    ) -> Op[list[Delivery]]:
        self._check_open()
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError(f"max_messages must be an int, not {type(max_messages).__name__}")
        if not 1 <= max_messages <= 1_000_000:
            raise errors.ConfigError(f"max_messages={max_messages} (must be 1..1000000)")
        lease_s = self._lease if lease is None else check_seconds("lease", lease, positive=True)
        assert lease_s is not None
        if timeout is not None and timeout < 0:
            raise errors.ConfigError(f"timeout={timeout!r} (must be >= 0 or None)")
        deadline = None if timeout is None else time.monotonic() + timeout
        wake = self._prefix + "w:" + topic
        args = [topic, max_messages, _us(lease_s), max(1, int(share))]
        self._waiting_on(wake, 1)
        try:
            while True:
                out = yield ("script", "checkout", args)
                got = self._deliveries(topic, out)
                if got or timeout == 0:
                    return got
                if since is not None and self.interrupts(topic) > since:
                    return []
                wait = self._wait_seconds(deadline, int(out[0]))
                if wait == 0:
                    return []
                self._check_open()
                yield ("wait", wake, wait)
                if self._closed:
                    return []
        finally:
            self._waiting_on(wake, -1)

    def _deliveries(self, topic: str, out: Sequence[Any]) -> list[Delivery]:
        """The deliveries of a checkout's answer: after the next due time and
        the lease deadline, 7 values each (see ``CHECKOUT``); the last (most
        messages have none of them): dedup key, headers, correlation and
        causation id, priority, ordering key."""
        dl = _s(out[1])
        instance = self._instance
        got = []
        for i in range(2, len(out), 7):
            mid, payload, attempt, version, enq, tok, extra = out[i : i + 7]
            # Most messages have no dedup key, headers, correlation or causation id.
            opts: dict[str, Any] = {}
            if extra is not None:
                key, head, corr, caus, pr, okey = extra
                opts = {
                    "dedup_key": _text(key),
                    "headers": json.loads(head) if head else None,
                    "correlation_id": _text(corr),
                    "causation_id": _text(caus),
                    "priority": int(pr) if pr else 0,
                    "ordering_key": _text(okey),
                }
            got.append(
                Delivery(
                    mid.decode(),
                    topic,
                    payload,
                    attempt=int(attempt),
                    version=int(version),
                    enqueued_at=_s(enq),
                    lease_deadline=dl,
                    lease_token=int(tok),
                    queue_id=instance,
                    **opts,
                )
            )
        untrack_deliveries(got)
        return got

    def interrupts(self, topic: str) -> int:
        self._check_open()
        got = self._call(lambda: self._r.hget(self._prefix + "int", topic))
        return int(got or 0)

    def interrupt(self, topic: str) -> None:
        self._check_open()
        wake = self._prefix + "w:" + topic

        def run() -> None:
            pipe = self._r.pipeline(transaction=True)
            pipe.hincrby(self._prefix + "int", topic, 1)
            pipe.rpush(wake, *(["1"] * 64))
            pipe.ltrim(wake, -64, -1)
            pipe.execute()

        self._call(run)

    def ack(
        self,
        deliveries: Delivery | Iterable[Delivery],
        publish: Sequence[OutgoingMessage] | None = None,
    ) -> None:
        self._run(self._ack(deliveries, publish))

    def _ack(
        self,
        deliveries: Delivery | Iterable[Delivery],
        publish: Sequence[OutgoingMessage] | None,
    ) -> Op[None]:
        self._check_open()
        ds = self._leases(deliveries, "ack")
        follow = self._outgoing(publish or (), "default")
        args: list[object] = [len(ds)]
        for d in ds:
            args += [d.id, d.lease_token]
        lost = yield ("script", "ack", [*args, *follow])
        if lost:
            raise self._lost(lost)

    def release(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        self._run(self._release(deliveries))

    def _release(self, deliveries: Delivery | Iterable[Delivery]) -> Op[None]:
        self._check_open()
        ds = self._leases(deliveries, "release")
        if not ds:
            return
        args: list[object] = []
        for d in ds:
            args += [d.id, d.lease_token]
        lost = yield ("script", "release", args)
        if lost:
            raise self._lost(lost)

    def nack(
        self,
        delivery: Delivery,
        delay: float | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        traceback: str | None = None,
        handler: str | None = None,
        dead_letter_reason: str | None = None,
    ) -> None:
        self._run(
            self._nack(
                delivery, delay, error_type, error_message, traceback, handler, dead_letter_reason
            )
        )

    def _nack(
        self,
        delivery: Delivery,
        delay: float | None,
        error_type: str | None,
        error_message: str | None,
        traceback: str | None,
        handler: str | None,
        dead_letter_reason: str | None,
    ) -> Op[None]:
        self._check_open()
        [d] = self._leases(delivery, "nack")
        delay = check_seconds("delay", delay, optional=True)
        got = yield (
            "script",
            "nack",
            [
                d.id,
                d.lease_token,
                _us(delay) if delay else -1,
                error_type or "",
                error_message or "",
                traceback or "",
                handler or "",
                dead_letter_reason or "",
            ],
        )
        if _text(got) == "lost":
            raise self._lost([d.id])

    def extend(self, delivery: Delivery, seconds: float) -> float:
        return self._run(self._extend(delivery, seconds))

    def _extend(self, delivery: Delivery, seconds: float) -> Op[float]:
        self._check_open()
        [d] = self._leases(delivery, "extend")
        by = check_seconds("seconds", seconds, positive=True)
        assert by is not None
        got = yield ("script", "extend", [d.id, d.lease_token, _us(by)])
        if _text(got) == "lost":
            raise self._lost([d.id])
        return _s(got)

    def is_superseded(self, delivery: Delivery) -> bool:
        self._check_open()
        self._own(delivery)
        got = self._call(lambda: self._r.hget(self._prefix + "m:" + delivery.id, "sup"))
        return got is not None

    def cancel(self, id: str) -> str:
        self._check_open()
        if not _is_id(id):
            raise errors.NotFound(
                f"no message or dead letter with id {id!r} (ids are 16 hex digits)"
            )
        return _CANCELLED[int(self._script("cancel", [id]))]

    def take_tokens(self, name: str, rate: float, burst: int, n: int) -> tuple[int, float]:
        """Rate limits (``ringq.ratelimit``): up to ``n`` tokens of the
        namespace's token bucket ``name`` (key ``rl:<name>``), refilled at
        ``rate`` a second up to ``burst`` on the server's clock; ``n < 0``
        gives ``-n`` back. Returns ``(granted, seconds until a token is due
        when none was granted)``; one script, shared by every client."""
        granted, wait = self._script("take_tokens", [name, repr(float(rate)), int(burst), int(n)])
        return int(granted), int(wait) / _MICRO

    def set_topic_policy(
        self, topic: str, max_attempts: int | None = None, handler: str | None = None
    ) -> None:
        self._check_open()
        key = self._prefix + "policy"

        def run() -> None:
            pipe = self._r.pipeline(transaction=True)
            if max_attempts is None:
                pipe.hdel(key, topic)
            else:
                pipe.hset(key, topic, int(max_attempts))
            if handler is None:
                pipe.hdel(key, topic + "\0h")
            else:
                pipe.hset(key, topic + "\0h", handler)
            pipe.execute()

        self._call(run)

    # -- administration ---------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return self._run(self._stats())

    def _stats(self) -> Op[dict[str, Any]]:
        self._check_open()
        p = self._prefix
        yield ("script", "reap", [])
        n, st, meta, dead, topics, keys = yield (
            "pipe",
            [
                ("hgetall", (p + "n",)),
                ("hgetall", (p + "stats",)),
                ("hgetall", (self._meta,)),
                ("llen", (p + "dlq",)),
                ("scard", (p + "topics",)),
                ("hlen", (p + "dedup",)),
            ],
            True,
        )
        n = {_text(k): int(v) for k, v in n.items() if b"\0" not in k}
        st = {_text(k): int(v) for k, v in st.items()}
        ready, delayed, inflight = (n.get(k, 0) for k in ("ready", "delayed", "inflight"))
        out: dict[str, Any] = {
            "ready": ready,
            "in_flight": inflight,
            "delayed": delayed,
            "dead": int(dead),
            "total": ready + delayed + inflight,
            "capacity": int(meta[b"capacity"]),
            "topics": int(topics),
            "dedup_keys": int(keys),
        }
        for name in (
            "published",
            "replaced",
            "kept",
            "superseded",
            "superseded_dropped",
            "delivered",
            "released",
            "acked",
            "nacked",
            "expired",
            "dead_lettered",
            "dlq_evicted",
            "dlq_replayed",
            "dlq_purged",
            "cancelled",
        ):
            out[name] = st.get(name, 0)
        out.update(
            snapshots=0,
            fsyncs=0,
            durability=self._durability,
            instance_id=self._instance,
            degraded=None,
            backend="redis",
            redis_url=self._where(),
            redis_appendfsync=self._appendfsync,
        )
        return out

    def topic_stats(self) -> dict[str, dict[str, int]]:
        self._check_open()
        p = self._prefix

        def run() -> tuple[list[str], list[int], dict[bytes, bytes]]:
            self._script("reap", [])
            names = sorted(_text(t) or "" for t in self._r.smembers(p + "topics"))
            pipe = self._r.pipeline(transaction=True)
            for t in names:
                for key in self._lanes(t):
                    pipe.llen(key)
            pipe.hgetall(p + "n")
            *lens, counts = pipe.execute()
            return names, lens, counts

        names, lens, counts = self._call(run)

        def count(t: str, kind: str) -> int:
            return int(counts.get(f"{t}\0{kind}".encode(), 0))

        lanes = MAX_PRIORITY + 1
        return {
            t: {
                # listed (every priority), and parked behind an ordering key
                "ready": sum(lens[i * lanes : (i + 1) * lanes]) + count(t, "o"),
                "in_flight": count(t, "f"),
                "delayed": count(t, "d"),
                "dead_lettered": count(t, "x"),
            }
            for i, t in enumerate(names)
        }

    def _lanes(self, topic: str) -> list[str]:
        """The ready lists of ``topic``, in delivery order: priorities 9..1
        (``r<p>:<topic>``), then 0 (``r:<topic>``)."""
        p = self._prefix
        return [f"{p}r{pr}:{topic}" for pr in range(MAX_PRIORITY, 0, -1)] + [p + "r:" + topic]

    def peek(self, topic: str, limit: int = 10) -> list[dict[str, Any]]:
        """The next messages of ``topic``, read-only (as ``ringq peek`` and
        ``ringq schedules`` read a directory): its ready ones in delivery
        order (every priority), then its delayed and in-flight ones by id;
        each a dict of ``id``, ``topic``, ``state``, ``attempt``, ``version``,
        ``dedup_key``, ``priority``, ``ordering_key``, ``enqueued_at`` and
        ``payload``. The delayed and
        in-flight ones are found by reading every delayed id and lease of the
        namespace: an administrator's read, not for a hot path. A message
        waiting behind the head of its ordering key is on no list and not
        shown."""
        self._check_open()
        p = self._prefix
        fields = ("t", "p", "a", "v", "k", "e", "tok", "pr", "o")

        def run() -> list[dict[str, Any]]:
            pipe = self._r.pipeline(transaction=True)
            for key in self._lanes(topic):
                pipe.lrange(key, 0, limit - 1)
            # (a message with an ordering key is listed as ``<id>o``)
            ready = [(_text(i) or "")[:16] for got in pipe.execute() for i in got][:limit]
            others: list[str] = []
            if len(ready) < limit:
                others = sorted(
                    {_text(i) or "" for i in self._r.zrange(p + "delayed", 0, -1)}
                    | {
                        t
                        for i in self._r.zrange(p + "leases", 0, -1)
                        if not (t := _text(i) or "").startswith("~")
                    }
                )
            out: list[dict[str, Any]] = []
            ids = ready + [i for i in others if i not in set(ready)]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                pipe = self._r.pipeline(transaction=False)
                for mid in chunk:
                    pipe.hmget(p + "m:" + mid, *fields)
                for mid, row in zip(chunk, pipe.execute(), strict=True):
                    t, payload, a, v, k, e, tok, pr, okey = row
                    if t is None or _text(t) != topic:
                        continue  # gone meanwhile, or another topic's
                    in_flight = tok is not None
                    state = "ready" if mid in ready else "in_flight" if in_flight else "delayed"
                    out.append(
                        {
                            "id": mid,
                            "topic": topic,
                            "state": state,
                            # a delivery in flight counts (as the engine's attempt)
                            "attempt": int(a or 0) + (1 if in_flight else 0),
                            "version": int(v or 1),
                            "dedup_key": _text(k),
                            "priority": int(pr or 0),
                            "ordering_key": _text(okey),
                            "enqueued_at": _s(e),
                            "payload": bytes(payload),
                        }
                    )
                    if len(out) >= limit:
                        return out
            return out

        return self._call(run)

    def histograms(self) -> dict[str, dict[str, Any]]:
        """No journal here: the engine's histograms are empty."""
        empty = {"buckets": (), "counts": [0], "sum": 0.0}
        return {"fsync": dict(empty), "snapshot": dict(empty)}

    def snapshot(self) -> int:
        """Nothing to snapshot: the server persists (its AOF). Returns 0."""
        self._check_open()
        return 0

    def dlq_list(
        self, topic: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        return self._run(self._dlq_list(topic, reason, limit))

    def _dlq_list(
        self, topic: str | None, reason: str | None, limit: int | None
    ) -> Op[list[DeadLetter]]:
        self._check_open()
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"limit must be None or an int >= 0, not {type(limit).__name__}")
            if limit < 0:
                raise ValueError(f"limit={limit!r} (must be None or an int >= 0)")
            if limit == 0:
                return []
        p = self._prefix
        [ids] = yield ("pipe", [("lrange", (p + "dlq", 0, -1))], False)
        found = yield ("pipe", [("hgetall", (p + "x:" + i.decode(),)) for i in ids], False)
        out: list[DeadLetter] = []
        for mid, f in zip(ids, found, strict=True):
            if not f:
                continue
            if topic is not None and f[b"t"].decode() != topic:
                continue
            if reason is not None and f[b"reason"].decode() != reason:
                continue
            out.append(self._dead_letter(mid.decode(), f))
            if limit is not None and len(out) >= limit:
                break
        return out

    def _dead_letter(self, mid: str, f: dict[bytes, bytes]) -> DeadLetter:
        def g(k: str) -> str | None:
            return _text(f.get(k.encode()))

        head = f.get(b"h")
        msg = Delivery(
            mid,
            g("t") or "",
            bytes(f[b"p"]),
            attempt=int(f.get(b"a", 0)),
            version=int(f.get(b"v", 1)),
            dedup_key=g("k"),
            headers=json.loads(head) if head else None,
            correlation_id=g("c"),
            causation_id=g("z"),
            enqueued_at=_s(f[b"e"]),
            queue_id=self._instance,
            priority=int(f.get(b"pr", 0)),
            ordering_key=g("o"),
        )
        return DeadLetter(
            msg,
            g("reason") or "",
            error_type=g("et"),
            error_message=g("em"),
            traceback=g("tb"),
            handler=g("hd"),
            first_failed_at=_s(f[b"ff"]) if b"ff" in f else None,
            dead_lettered_at=_s(f[b"da"]),
        )

    def dlq_get(self, id: str) -> DeadLetter:
        return self._run(self._dlq_get(id))

    def _dlq_get(self, id: str) -> Op[DeadLetter]:
        self._check_open()
        [f] = yield ("pipe", [("hgetall", (self._prefix + "x:" + id,))], False)
        if not f:
            raise errors.NotFound(f"no dead letter with id {id}")
        return self._dead_letter(id, f)

    def dlq_replay(self, ids: list[str] | None = None) -> int:
        return self._run(self._dlq_replay(ids))

    def _dlq_replay(self, ids: list[str] | None) -> Op[int]:
        self._check_open()
        _check_ids(ids)
        got = yield ("script", "dlq_replay", ["1"] if ids is None else ["0", *ids])
        return int(got)

    def dlq_purge(self, ids: list[str] | None = None) -> int:
        return self._run(self._dlq_purge(ids))

    def _dlq_purge(self, ids: list[str] | None) -> Op[int]:
        self._check_open()
        _check_ids(ids)
        got = yield ("script", "dlq_purge", ["1"] if ids is None else ["0", *ids])
        return int(got)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._waiting_lock:
            waited = list(self._waiting)
        # Waiters in this process look again at once (and find it closed).
        try:
            if waited:
                pipe = self._r.pipeline(transaction=False)
                for key in waited:
                    pipe.rpush(key, "1")
                    pipe.ltrim(key, -64, -1)
                pipe.execute()
        except Exception:  # the server is gone: the waiters' slices end them
            pass

    # -- tests ----------------------------------------------------------------------

    def _advance_clock(self, seconds: float) -> float:
        """Test hook (``_manual_clock=True``): moves the clock and reaps what fell due."""
        if not self._clock.manual:
            raise ValueError("_advance_clock needs _manual_clock=True")
        at = self._clock.advance(seconds)
        if not self._closed:
            self._script("reap", [])
        return at / _MICRO

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ringq RedisBackend {self._where()} {state}>"


class RedisLoopHandle:
    """A Redis queue for an event loop (``ringq.AsyncQueue``;
    ``RedisBackend._deferred()``). Each call starts the backend's operation
    as a task of the running loop, driven with redis.asyncio (the same
    generator ``RedisBackend._run`` drives with the blocking client), and
    raises ``ringq.errors.Submitted``; the caller awaits ``_take(ticket)``.
    A call whose caller gave up (``_withdraw``) stops if it is waiting
    (``BLPOP``: it took nothing); if it is past that (its script sent), it
    finishes, and a checkout's messages are given back unstarted."""

    def __init__(self, backend: RedisBackend) -> None:
        self._b = backend
        self._ar = backend._connect_async(backend._url)
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        #: Every call still running (taken by its caller or not).
        self._running: set[asyncio.Task[Any]] = set()
        self._waiting: set[int] = set()
        self._withdrawn: set[int] = set()
        self._next = 0
        #: Set by ``_async_detach``: done once the connections are closed.
        self.closing: asyncio.Task[None] | None = None

    # What the SDK reads of a backend.
    path = property(lambda self: self._b.path)
    instance_id = property(lambda self: self._b.instance_id)
    durability = property(lambda self: self._b.durability)
    lease = property(lambda self: self._b.lease)
    closed = property(lambda self: self._b.closed)
    role = property(lambda self: self._b.role)
    address = property(lambda self: None)
    forked = property(lambda self: self._b.forked)

    def check_not_forked(self) -> None:
        self._b.check_not_forked()

    def _async_kind(self) -> str:
        return "task"

    def _submit(self, op: Op[Any]) -> NoReturn:
        self._next += 1
        ticket = self._next
        task = asyncio.get_running_loop().create_task(self._drive(ticket, op))
        self._tasks[ticket] = task
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        raise errors.Submitted(ticket)

    def _take(self, ticket: int) -> asyncio.Task[Any]:
        """The task of a submitted call (once)."""
        return self._tasks.pop(ticket)

    async def _drive(self, ticket: int, op: Op[T]) -> T:
        b = self._b
        answer: Any = None
        failure: BaseException | None = None
        try:
            while True:
                try:
                    req = op.throw(failure) if failure is not None else op.send(answer)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                answer, failure = None, None
                try:
                    if req[0] == "script":
                        answer = await self._script(req[1], req[2])
                    elif req[0] == "pipe":
                        answer = await self._pipe(req[1], req[2])
                    else:
                        if ticket in self._withdrawn:
                            raise asyncio.CancelledError
                        self._waiting.add(ticket)
                        try:
                            answer = await self._ar.blpop([req[1]], timeout=req[2])
                        finally:
                            self._waiting.discard(ticket)
                except asyncio.CancelledError:
                    op.close()
                    raise
                except Exception as e:  # handed to the operation, as ringq's
                    failure = b._map_error(e) or e
                    if b._closed and isinstance(failure, errors.BackendUnavailable):
                        # Closed under it: as any call on a closed queue.
                        failure = errors.QueueClosed("the queue was closed")
                    elif isinstance(failure, errors.BackendUnavailable):
                        await _adrop_idle(self._ar)
        finally:
            self._withdrawn.discard(ticket)

    async def _script(self, name: str, args: Sequence[object]) -> Any:
        import redis

        b = self._b
        with b._clock.reading() as now:
            full = b._script_args(now, args)
            deadline, pause = time.monotonic() + RESHARD_WAIT, 0.001
            while True:
                try:
                    return await self._script_once(name, full)
                except redis.exceptions.ResponseError as e:
                    if not b._resharding(e, deadline):
                        raise
                await asyncio.sleep(pause)
                pause = min(2 * pause, 0.05)

    async def _script_once(self, name: str, full: list[object]) -> Any:
        import redis

        b = self._b
        sha = b._shas.get(name)
        if sha is None:
            sha = b._shas[name] = await self._ar.script_load(b._script_text(name))
        try:
            return await self._ar.evalsha(sha, 1, b._meta, *full)
        except redis.exceptions.NoScriptError:
            b._shas[name] = await self._ar.script_load(b._script_text(name))
            return await self._ar.evalsha(b._shas[name], 1, b._meta, *full)

    async def _pipe(self, commands: Sequence[tuple[str, tuple[Any, ...]]], tx: bool) -> Any:
        pipe = self._ar.pipeline(transaction=tx)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return await pipe.execute()

    def _withdraw(self, ticket: int, task: asyncio.Task[Any]) -> None:
        """The caller of ``ticket`` was cancelled (see the class docs)."""
        if task.done():
            self._unwanted(task)
            return
        self._withdrawn.add(ticket)
        if ticket in self._waiting:
            task.cancel()
        else:
            task.add_done_callback(self._unwanted)

    def _unwanted(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        got = task.result()
        if isinstance(got, list) and got and isinstance(got[0], Delivery):
            try:
                self.release(got)
            except errors.Submitted as s:
                self._forget(s.ticket)

    def _forget(self, ticket: int) -> None:
        """Nobody awaits ``ticket``: it runs on, its outcome dropped."""
        self._take(ticket).add_done_callback(_quiet)

    def _async_detach(self) -> None:
        """The queue is closing: calls still running end as calls on a
        closed queue do (a waiting one is woken by the close), then the
        connections close."""
        running = list(self._running)
        self._tasks.clear()
        with contextlib.suppress(RuntimeError):  # no loop runs: left to the GC
            self.closing = asyncio.get_running_loop().create_task(self._close_after(running))

    async def _close_after(self, running: list[asyncio.Task[Any]]) -> None:
        try:
            await asyncio.gather(*running, return_exceptions=True)
        finally:  # cancelled too (a loop finishing its tasks before it closes)
            await self._ar.aclose()

    # The backend's calls: each submits its operation.

    def publish(
        self,
        payload: bytes,
        topic: str | None = None,
        dedup_key: str | None = None,
        delay: float | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        on_duplicate: str = "replace",
        expected_version: int | None = None,
        block: bool = True,
        timeout: float | None = None,
        *,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> NoReturn:
        self._submit(
            self._b._publish(
                payload,
                topic,
                dedup_key,
                delay,
                headers,
                correlation_id,
                causation_id,
                on_duplicate,
                expected_version,
                block,
                timeout,
                priority,
                ordering_key,
                dedup_window,
            )
        )

    def publish_many(
        self,
        payloads: Iterable[bytes | OutgoingMessage],
        topic: str | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> NoReturn:
        self._submit(self._b._publish_many(list(payloads), topic, block, timeout))

    def checkout(
        self,
        topic: str = "default",
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float | None = None,
        *,
        share: int = 1,
        since: int | None = None,
    ) -> NoReturn:
        self._submit(self._b._checkout(topic, max_messages, lease, timeout, share, since))

    def ack(
        self,
        deliveries: Delivery | Iterable[Delivery],
        publish: Sequence[OutgoingMessage] | None = None,
    ) -> NoReturn:
        ds = [deliveries] if isinstance(deliveries, Delivery) else list(deliveries)
        self._submit(self._b._ack(ds, publish))

    def release(self, deliveries: Delivery | Iterable[Delivery]) -> NoReturn:
        ds = [deliveries] if isinstance(deliveries, Delivery) else list(deliveries)
        self._submit(self._b._release(ds))

    def nack(
        self,
        delivery: Delivery,
        delay: float | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        traceback: str | None = None,
        handler: str | None = None,
        dead_letter_reason: str | None = None,
    ) -> NoReturn:
        self._submit(
            self._b._nack(
                delivery, delay, error_type, error_message, traceback, handler, dead_letter_reason
            )
        )

    def extend(self, delivery: Delivery, seconds: float) -> NoReturn:
        self._submit(self._b._extend(delivery, seconds))

    def stats(self) -> NoReturn:
        self._submit(self._b._stats())

    def dlq_list(
        self, topic: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> NoReturn:
        self._submit(self._b._dlq_list(topic, reason, limit))

    def dlq_get(self, id: str) -> NoReturn:
        self._submit(self._b._dlq_get(id))

    def dlq_replay(self, ids: list[str] | None = None) -> NoReturn:
        self._submit(self._b._dlq_replay(ids))

    def dlq_purge(self, ids: list[str] | None = None) -> NoReturn:
        self._submit(self._b._dlq_purge(ids))

    # Plain calls of the blocking backend (not on a hot path).

    def is_superseded(self, delivery: Delivery) -> bool:
        return self._b.is_superseded(delivery)

    def cancel(self, id: str) -> str:
        return self._b.cancel(id)

    def interrupts(self, topic: str) -> int:
        return self._b.interrupts(topic)

    def interrupt(self, topic: str) -> None:
        self._b.interrupt(topic)

    def set_topic_policy(
        self, topic: str, max_attempts: int | None = None, handler: str | None = None
    ) -> None:
        self._b.set_topic_policy(topic, max_attempts, handler)

    def close(self) -> None:
        self._async_detach()


def _drop_idle(client: Any) -> None:
    """After a call found the server gone: closes the connections that sit
    unused in ``client``'s pool (a server that went away broke them too), so
    that the calls after it, once the server is back, do not fail on them
    one by one. Connections in use are left to their calls."""
    pool = getattr(client, "connection_pool", None)  # a cluster client has one per node
    if pool is not None:
        with contextlib.suppress(Exception):
            pool.disconnect(inuse_connections=False)


async def _adrop_idle(client: Any) -> None:
    """``_drop_idle`` for a redis.asyncio client."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        with contextlib.suppress(Exception):
            await pool.disconnect(inuse_connections=False)


def _quiet(task: asyncio.Task[Any]) -> None:
    """Reads a dropped task's outcome (so asyncio does not report it)."""
    if not task.cancelled():
        task.exception()


def _first_value(cfg: Any) -> str | None:
    if isinstance(cfg, dict):
        for v in cfg.values():
            return _text(v)
    return None

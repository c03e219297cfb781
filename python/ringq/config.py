"""Queue and handler options: from code, mappings, environment variables and TOML files.

``QueueOptions`` holds the keyword options of ``ringq.Queue`` plus per-handler
overrides; ``HandlerOptions`` holds what a handler declares in code. Options
that come from outside the code (a mapping, the environment, a TOML file)
override what the code declares, so operators can tune a deployment without
a release.

Every value is validated when the options are built. A bad value raises
``ringq.ConfigError`` that lists **every** bad field at once, each with its
path (``capacity``, ``handlers.on_order.timeout``) or, from the environment,
its variable name. Unknown keys are errors too (with a "did you mean" hint).
Durations are seconds (``int`` or ``float``, finite, at most
``ringq.retry.MAX_SECONDS``); counts are integers. ``bool`` is never accepted
as a number, nor a number as a ``bool``.

Queue options (``QueueOptions``; ``None`` means "the engine's default"; the
table is ``QUEUE_OPTIONS``, rendered by ``render_options_table()``):

=================  ================  ========================  ===================================
field              default           environment variable      valid values
=================  ================  ========================  ===================================
capacity           100_000           RINGQ_CAPACITY            1..=16_777_215 live messages
durability         "batch"           RINGQ_DURABILITY          "always", "batch", "os"
fsync_interval     0.05              RINGQ_FSYNC_INTERVAL      >= 0 s (> 0 with "batch")
max_attempts       5                 RINGQ_MAX_ATTEMPTS        1..=4_294_967_295 deliveries
lease              30.0              RINGQ_LEASE               > 0 s (default checkout lease)
segment_size       None (16 MiB)     RINGQ_SEGMENT_SIZE        65_536..=2_147_483_647 bytes
recycle_segments   True              RINGQ_RECYCLE_SEGMENTS    False: covered segments are deleted
snapshot_every     None (1_000_000)  RINGQ_SNAPSHOT_EVERY      >= 1 journal records
snapshot_interval  None (300.0)      RINGQ_SNAPSHOT_INTERVAL   > 0 s
max_payload        None (1 MiB)      RINGQ_MAX_PAYLOAD         1..=67_108_864 bytes
max_key            None (1 KiB)      RINGQ_MAX_KEY             1..=65_536 bytes
max_headers        None (64 KiB)     RINGQ_MAX_HEADERS         0..=16_777_216 bytes
dlq_capacity       None (10_000)     RINGQ_DLQ_CAPACITY        >= 1 dead letters
shared             False             RINGQ_SHARED              True: processes share it
handlers           {}                RINGQ_HANDLER__<NAME>__*  per-handler overrides, see below
=================  ================  ========================  ===================================

Handler options (``HandlerOptions``, declared in code; the override key and
its variable are in the last two columns):

===============  ============================  ===============  ==============================
field            default                       override key     valid values
===============  ============================  ===============  ==============================
timeout          30.0                          timeout          > 0 s: the lease of a delivery
max_parallelism  1                             max_parallelism  1..=1024 worker threads
prefetch         16                            prefetch         1..=1024 messages per checkout
retry            Retry(5, exponential 0.5 s)   max_attempts     >= 1 deliveries
                                               backoff          a backoff, see below
dead_letter_on   ()                            (code only)      exception classes, no retries
processes        0 (threads)                   (code only)      0..=256 worker processes
rate_limit       None (no limit)               rate_limit       "100/s", "5/m", "1/100ms",
                                                                ", burst=N"; "none"
===============  ============================  ===============  ==============================

A backoff in a mapping or TOML file is ``{"kind": "fixed", "seconds": 1.0}`` or
``{"kind": "exponential", "initial": 0.5, "factor": 2.0, "cap": 60.0, "jitter":
true}`` (``factor``, ``cap`` and ``jitter`` optional, defaults as shown;
``cap = "none"`` for no cap, since TOML has no null). As a string, in the
environment or anywhere a mapping is accepted, it is
``"<kind>[:key=value,...]"``: ``"fixed:seconds=1"``,
``"exponential:initial=0.5,factor=2,cap=60,jitter=true"`` (``cap=none``;
``jitter`` takes true/false/1/0/yes/no/on/off).

Environment (``QueueOptions.from_env``): ``<PREFIX><FIELD>`` with the field
name in upper case, e.g. ``RINGQ_CAPACITY=1000``, ``RINGQ_DURABILITY=always``.
Per-handler options are ``<PREFIX>HANDLER__<NAME>__<OPTION>``, with double
underscores between the parts: **the handler name is the NAME segment lower-
cased**, and OPTION is an override key in any case. Handler names are matched
ignoring case everywhere (``QueueOptions.handler_options``), so
``RINGQ_HANDLER__ON_ORDER__TIMEOUT=5`` sets ``timeout`` of a handler named
``on_order``, ``RINGQ_HANDLER__ONORDER__TIMEOUT=5`` that of one named
``OnOrder``, ``RINGQ_HANDLER__ON_ORDER__BACKOFF=fixed:seconds=1`` sets a
backoff and ``RINGQ_HANDLER__ON_ORDER__RATE_LIMIT=100/s`` a rate limit
(``none`` lifts one the code declares). Handlers whose name contains ``__``
or characters that variable names cannot hold (``.``, ``-``) can only be
configured by mapping or TOML. Values are parsed to the field's type
(``int("1_000")``, ``float``, text as is); a value that does not parse is an
error naming the variable. Every variable that starts with
``<PREFIX>HANDLER_`` must be a valid handler option. Other variables with the
prefix that are not options are left alone (other tools use the prefix too,
e.g. ``RINGQ_WRITE_GOLDEN``), except those that look like a misspelt option
(``RINGQ_CAPACTY``): those are errors.

TOML (``QueueOptions.from_toml``): options are top-level keys of the file and
handlers are ``[handlers.<name>]`` tables::

    capacity = 1000
    durability = "always"

    [handlers.on_order]
    timeout = 5.0
    max_attempts = 3
    backoff = { kind = "fixed", seconds = 1.0 }

To keep them inside a larger file, pass ``table="ringq"`` and write
``[ringq]`` / ``[ringq.handlers.on_order]``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from ringq.errors import ConfigError
from ringq.ratelimit import NO_LIMIT, RateLimit, rate_limit_problem
from ringq.retry import (
    Backoff,
    FixedBackoff,
    Retry,
    _check_exponential,
    _check_fixed,
    _Problems,
)

#: ``durability=`` values (``ringq.Queue`` uses this alias too).
Durability = Literal["always", "batch", "os"]

__all__ = ["HandlerOptions", "QueueOptions"]

MAX_CAPACITY: Final = (1 << 24) - 1
"""The engine's largest ``capacity``: a message id has 24 bits for its slot."""
MAX_PARALLELISM: Final = 1024
MAX_PREFETCH: Final = 1024
MAX_PROCESSES: Final = 256
DURABILITIES: Final[tuple[str, ...]] = get_args(Durability)
HANDLER_KEYS: Final = (
    "timeout",
    "max_parallelism",
    "prefetch",
    "max_attempts",
    "backoff",
    "rate_limit",
)
"""The keys a per-handler override may have."""

_BACKOFF_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "fixed": ("seconds",),
    "exponential": ("initial", "factor", "cap", "jitter"),
}
_BOOLS: Final = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}
_DEFAULT_RETRY: Final = Retry()
_BAD: Final = object()
"""A value that did not parse (the problem is already recorded)."""


def _unknown(p: _Problems, path: str, key: object, choices: Sequence[str], what: str) -> None:
    close = difflib.get_close_matches(str(key), choices, n=1, cutoff=0.75)
    hint = f"did you mean {close[0]!r}?" if close else "expected one of: " + ", ".join(choices)
    p.note(path, f"unknown {what}, {hint}")


# -- handler options ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """What a handler declares: lease, parallelism, batch size and retry policy.

    ``timeout`` (30.0) is the lease of each delivery in seconds: a handler that
    runs longer without ``ctx.heartbeat()`` loses its message to a redelivery.
    ``max_parallelism`` (1, up to 1024) worker threads run the handler;
    ``prefetch`` (16, up to 1024) messages are checked out per engine call.
    ``retry`` (``Retry()``: 5 deliveries, exponential backoff) decides
    redeliveries; exceptions that are instances of a class in
    ``dead_letter_on`` (``()``) dead-letter the message at once.
    ``processes`` (0: threads) runs the handler function in that many worker
    processes instead (``ringq.dispatch.processes``); it is then also the
    handler's parallelism. ``rate_limit`` (``None``: none) is how fast its
    workers start messages, all processes together (``ringq.ratelimit``:
    ``"100/s"``; a string is parsed to a ``RateLimit``).
    """

    timeout: float = 30.0
    max_parallelism: int = 1
    prefetch: int = 16
    retry: Retry = _DEFAULT_RETRY
    dead_letter_on: tuple[type[BaseException], ...] = ()
    processes: int = 0
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        p = _Problems()
        limit, why = rate_limit_problem(self.rate_limit)
        if why is not None:
            p.add("rate_limit", self.rate_limit, why)
        timeout = p.number("timeout", self.timeout, gt=0.0)
        p.integer("max_parallelism", self.max_parallelism, ge=1, le=MAX_PARALLELISM)
        p.integer("processes", self.processes, ge=0, le=MAX_PROCESSES)
        p.integer("prefetch", self.prefetch, ge=1, le=MAX_PREFETCH)
        if not isinstance(self.retry, Retry):
            p.add("retry", self.retry, "must be a ringq.Retry")
        classes = self.dead_letter_on
        if not isinstance(classes, tuple) or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in classes
        ):
            p.add("dead_letter_on", classes, "must be a tuple of exception classes")
        p.raise_if_any("handler options")
        object.__setattr__(self, "timeout", timeout)
        object.__setattr__(self, "rate_limit", limit if isinstance(limit, RateLimit) else None)

    def merged(self, overrides: Mapping[str, Any]) -> HandlerOptions:
        """A copy with ``overrides`` applied (keys: ``HANDLER_KEYS``).

        ``max_attempts`` and ``backoff`` replace those fields of ``retry``; a
        backoff is a ``ringq.Backoff``, a mapping or a string (see the module
        docstring). Every bad key or value is listed in one ``ConfigError``.
        """
        p = _Problems()
        values = _check_overrides(p, "", overrides)
        p.raise_if_any("handler options")
        return self._apply(values)

    def _apply(self, values: Mapping[str, Any]) -> HandlerOptions:
        """``self`` with already validated overrides applied."""
        retry = self.retry
        retry_changes = {k: values[k] for k in ("max_attempts", "backoff") if k in values}
        if retry_changes:
            retry = replace(retry, **retry_changes)
        own = {k: values[k] for k in ("timeout", "max_parallelism", "prefetch") if k in values}
        if "rate_limit" in values:  # NO_LIMIT ("none") lifts a limit the code declared
            limit = values["rate_limit"]
            own["rate_limit"] = limit if isinstance(limit, RateLimit) else None
        return replace(self, retry=retry, **own)


def _check_overrides(p: _Problems, prefix: str, raw: object) -> dict[str, Any]:
    """Validated, normalized per-handler overrides (bad ones are left out)."""
    if not isinstance(raw, Mapping):
        p.add(prefix.rstrip(".") or "overrides", raw, "must be a mapping of handler options")
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        v: object
        if key == "timeout":
            v = p.number(path, value, gt=0.0)
        elif key == "max_parallelism":
            v = p.integer(path, value, ge=1, le=MAX_PARALLELISM)
        elif key == "prefetch":
            v = p.integer(path, value, ge=1, le=MAX_PREFETCH)
        elif key == "max_attempts":
            v = p.integer(path, value, ge=1)
        elif key == "backoff":
            v = _parse_backoff(p, path, value)
        elif key == "rate_limit":
            v, why = rate_limit_problem(value)
            if why is not None:
                p.add(path, value, why)
            elif v is None:
                v = NO_LIMIT
        else:
            _unknown(p, path, key, HANDLER_KEYS, "handler option")
            continue
        if v is not None:
            out[key] = v
    return out


# -- backoff in configuration -----------------------------------------------------


def _parse_backoff(p: _Problems, path: str, value: object) -> Backoff | None:
    """A ``Backoff`` from a ``Backoff``, a mapping or a ``kind:key=value,...`` string."""
    if isinstance(value, Backoff):
        return value
    if isinstance(value, str):
        spec = _split_spec(p, path, value)
        if spec is None:
            return None
        raw: dict[str, object] = dict(spec)
    elif isinstance(value, Mapping):
        raw = {str(k): v for k, v in value.items()}
    else:
        p.add(
            path,
            value,
            'must be a mapping like {"kind": "fixed", "seconds": 1.0} '
            'or a string like "fixed:seconds=1"',
        )
        return None
    before = len(p.items)
    kind = raw.pop("kind", None)
    if kind is None:
        p.note(path + ".kind", "missing, expected 'fixed' or 'exponential'")
        return None
    if not isinstance(kind, str) or kind not in _BACKOFF_KEYS:
        p.add(path + ".kind", kind, "must be 'fixed' or 'exponential'")
        return None
    allowed = _BACKOFF_KEYS[kind]
    fields_: dict[str, object] = {}
    for key, v in raw.items():
        sub = f"{path}.{key}"
        if key not in allowed:
            _unknown(p, sub, key, allowed, f"{kind} backoff option")
        elif isinstance(value, str):
            parsed = _backoff_value_from_string(p, sub, key, str(v))
            if parsed is not _BAD:
                fields_[key] = parsed
        else:
            fields_[key] = None if key == "cap" and _is_none_word(v) else v
    # Missing or unparsable values get a harmless stand-in so the other fields
    # are still checked; `before` makes sure nothing is built from them.
    required = allowed[0]  # `seconds` or `initial`; the others have defaults
    if required not in raw:
        p.note(f"{path}.{required}", "missing")
    prefix = path + "."
    backoff: Backoff | None = None
    if kind == "fixed":
        seconds = _check_fixed(p, prefix, fields_.get("seconds", 0.0))
        if seconds is not None:
            backoff = FixedBackoff(seconds)
    else:
        checked = _check_exponential(
            p,
            prefix,
            fields_.get("initial", 0.0),
            fields_.get("factor", 2.0),
            fields_.get("cap", 60.0),
            fields_.get("jitter", True),
        )
        if checked is not None:
            backoff = Backoff.exponential(*checked)
    return None if len(p.items) > before else backoff


def _is_none_word(v: object) -> bool:
    return isinstance(v, str) and v.strip().lower() == "none"


def _split_spec(p: _Problems, path: str, spec: str) -> dict[str, str] | None:
    """``"exponential:initial=0.5,cap=60"`` -> ``{"kind": "exponential", "initial": "0.5", ..}``."""
    kind, _, rest = spec.partition(":")
    out = {"kind": kind.strip().lower()}
    ok = True
    if rest.strip():
        for item in rest.split(","):
            key, eq, val = item.partition("=")
            key = key.strip().lower()
            if not eq or not key:
                p.add(path, spec, f"cannot read {item.strip()!r}: expected key=value")
                ok = False
            elif key in out:
                p.add(path, spec, f"{key} is given twice")
                ok = False
            else:
                out[key] = val.strip()
    return out if ok else None


def _backoff_value_from_string(p: _Problems, path: str, key: str, text: str) -> object:
    if key == "jitter":
        if text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        p.add(path, text, "must be true or false")
        return _BAD
    if key == "cap" and _is_none_word(text):
        return None
    return _parse_text(p, path, text, "float")


def _parse_text(p: _Problems, path: str, text: str, kind: str) -> object:
    """An environment string as the field's type (``int``, ``float`` or ``str``)."""
    s = text.strip()
    if kind == "int":
        try:
            return int(s)
        except ValueError:
            p.add(path, text, "must be an int")
            return _BAD
    if kind == "float":
        try:
            return float(s)
        except ValueError:
            p.add(path, text, "must be a number")
            return _BAD
    if kind == "bool":
        if s.lower() in _BOOLS:
            return _BOOLS[s.lower()]
        p.add(path, text, "must be true/false/1/0/yes/no/on/off")
        return _BAD
    return s


# -- queue options -----------------------------------------------------------------

OptionKind = Literal["int", "seconds", "choice", "bool"]
"""How a queue option is typed and checked: a count, a duration in seconds,
one of a few strings, or a ``bool``."""

_ENV_KIND: Final[Mapping[str, str]] = {
    "int": "int",
    "seconds": "float",
    "choice": "str",
    "bool": "bool",
}


@dataclass(frozen=True, slots=True)
class QueueOption:
    """One queue option: a row of ``QUEUE_OPTIONS``."""

    name: str
    kind: OptionKind
    default: object
    """The default of ``ringq.Queue``'s keyword and of the ``QueueOptions``
    field; ``None`` leaves the value to the engine (``engine_default``)."""
    doc: str
    """What follows the range in the docstring's table (for a count: its unit)."""
    engine_default: object = None
    """What ``None`` means: the engine's default (Rust ``Options::default``)."""
    ge: int | None = None
    gt: int | None = None
    le: int | None = None
    """Bounds: a count in ``ge..=le``; a duration ``>= ge`` or ``> gt`` seconds
    (and at most ``ringq.retry.MAX_SECONDS``)."""
    choices: tuple[str, ...] = ()
    also: Callable[[_Problems, object, Mapping[str, Any]], None] | None = None
    """A check that involves other options, run right after this option's own
    with its given value and the options checked so far."""

    @property
    def optional(self) -> bool:
        """``None`` is a valid value (the engine's default)."""
        return self.default is None

    @property
    def env_kind(self) -> str:
        """How an environment variable's text is parsed (see ``_parse_text``)."""
        return _ENV_KIND[self.kind]

    def check(self, p: _Problems, value: object) -> object:
        """``value`` normalized (a duration as ``float``); a problem is recorded in ``p``."""
        name = self.name
        if self.kind == "int":
            assert self.ge is not None
            if self.le is None:
                return p.integer(name, value, ge=self.ge, optional=self.optional)
            return p.integer(name, value, ge=self.ge, le=self.le, optional=self.optional)
        if self.kind == "seconds":
            ge, gt = (None if b is None else float(b) for b in (self.ge, self.gt))
            return p.number(name, value, ge=ge, gt=gt, optional=self.optional)
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                *head, last = (repr(c) for c in self.choices)
                p.add(name, value, f"must be {', '.join(head)} or {last}")
        elif not isinstance(value, bool):
            p.add(name, value, "must be True or False")
        return value

    def valid_values(self) -> str:
        """The "valid values" column of the docstring's table."""
        if self.kind == "int":
            assert self.ge is not None
            span = f">= {self.ge:_}" if self.le is None else f"{self.ge:_}..={self.le:_}"
        elif self.kind == "seconds":
            span = f">= {self.ge} s" if self.ge is not None else f"> {self.gt} s"
        elif self.kind == "choice":
            span = ", ".join(f'"{c}"' for c in self.choices)
        else:
            span = ""
        return f"{span} {self.doc}".strip()

    def default_text(self) -> str:
        """The "default" column of the docstring's table."""
        shown = self.effective_default_text()
        return f"None ({shown})" if self.default is None else shown

    def effective_default_text(self) -> str:
        """The value the queue gets when the option is not given (the
        engine's for a ``None`` default), as the table shows it."""
        v = self.engine_default if self.default is None else self.default
        if isinstance(v, bool | float):
            return repr(v)
        if isinstance(v, int):
            if self.doc == "bytes" and v % 1024 == 0:
                return f"{v // (1 << 20)} MiB" if v % (1 << 20) == 0 else f"{v // 1024} KiB"
            return f"{v:_}"
        return f'"{v}"'


def _fsync_needs_an_interval_in_batch_mode(
    p: _Problems, given: object, checked: Mapping[str, Any]
) -> None:
    if checked["durability"] == "batch" and checked["fsync_interval"] == 0.0:
        p.add("fsync_interval", given, 'must be > 0 with durability="batch"')


_KIB: Final = 1024
_MIB: Final = 1024 * 1024

QUEUE_OPTIONS: Final[tuple[QueueOption, ...]] = (
    QueueOption("capacity", "int", 100_000, "live messages", ge=1, le=MAX_CAPACITY),
    QueueOption("durability", "choice", "batch", "", choices=DURABILITIES),
    QueueOption(
        "fsync_interval",
        "seconds",
        0.05,
        '(> 0 with "batch")',
        ge=0,
        also=_fsync_needs_an_interval_in_batch_mode,
    ),
    QueueOption("max_attempts", "int", 5, "deliveries", ge=1, le=2**32 - 1),
    QueueOption("lease", "seconds", 30.0, "(default checkout lease)", gt=0),
    QueueOption("segment_size", "int", None, "bytes", 16 * _MIB, ge=64 * _KIB, le=2**31 - 1),
    QueueOption("recycle_segments", "bool", True, "False: covered segments are deleted"),
    QueueOption("snapshot_every", "int", None, "journal records", 1_000_000, ge=1),
    QueueOption("snapshot_interval", "seconds", None, "", 300.0, gt=0),
    QueueOption("max_payload", "int", None, "bytes", _MIB, ge=1, le=64 * _MIB),
    QueueOption("max_key", "int", None, "bytes", _KIB, ge=1, le=64 * _KIB),
    QueueOption("max_headers", "int", None, "bytes", 64 * _KIB, ge=0, le=16 * _MIB),
    QueueOption("dlq_capacity", "int", None, "dead letters", 10_000, ge=1),
    QueueOption("shared", "bool", False, "True: processes share it"),
)
"""The queue options: the one table of their names, types, defaults, ranges and
docs. Derived from it: ``ringq.core.KEYWORD_DEFAULTS`` (what ``ringq.Queue``
passes to the engine), the environment variables (``QueueOptions.from_env``),
the checks of ``QueueOptions`` and the table in this module's docstring. The
signatures that must stay spelled out for type checkers (``ringq.Queue``,
``QueueOptions``'s fields, ``ringq._core.Engine`` and its stub) and the
engine's defaults and ranges are compared with it by ``tests/test_options_table.py``,
as is the README's options table."""

QUEUE_DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {o.name: o.default for o in QUEUE_OPTIONS}
)
"""Option name -> default (``None``: the engine's), in table order."""

_ENV_KINDS: Final[Mapping[str, str]] = {o.name: o.env_kind for o in QUEUE_OPTIONS}
_FIELDS: Final = (*QUEUE_DEFAULTS, "handlers")
"""The fields of ``QueueOptions``: the options and the per-handler overrides."""


def render_options_table() -> str:
    """The queue options table of this module's docstring, rendered from
    ``QUEUE_OPTIONS`` (a test keeps the docstring equal to it)."""
    head = ("field", "default", "environment variable", "valid values")
    rows = [
        (o.name, o.default_text(), "RINGQ_" + o.name.upper(), o.valid_values())
        for o in QUEUE_OPTIONS
    ]
    rows.append(("handlers", "{}", "RINGQ_HANDLER__<NAME>__*", "per-handler overrides, see below"))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([rule, line(head), rule, *(line(r) for r in rows), rule])


_HANDLER_ENV_KINDS: Final[Mapping[str, str]] = {
    "timeout": "float",
    "max_parallelism": "int",
    "prefetch": "int",
    "max_attempts": "int",
    "backoff": "str",
    "rate_limit": "str",
}


@dataclass(frozen=True, slots=True, repr=False)
class QueueOptions:
    """The options of a ``ringq.Queue`` plus per-handler overrides.

    Fields mirror the keyword options of ``ringq.Queue``: they are the rows
    of ``QUEUE_OPTIONS`` (see the module docstring for defaults and ranges;
    ``None`` keeps the engine's default).
    ``handlers`` maps a handler name to overrides of its declared
    ``HandlerOptions`` (keys ``HANDLER_KEYS``); it is validated, normalized
    (durations as ``float``, backoffs as ``ringq.Backoff``) and read-only.
    Handler names are matched ignoring case; two names that differ only in
    case are an error.
    """

    # The rows of QUEUE_OPTIONS, spelled out for type checkers
    # (tests/test_options_table.py keeps them equal).
    capacity: int = 100_000
    durability: Durability = "batch"
    fsync_interval: float = 0.05
    max_attempts: int = 5
    lease: float = 30.0
    segment_size: int | None = None
    recycle_segments: bool = True
    snapshot_every: int | None = None
    snapshot_interval: float | None = None
    max_payload: int | None = None
    max_key: int | None = None
    max_headers: int | None = None
    dlq_capacity: int | None = None
    shared: bool = False
    handlers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = _Problems()
        values = _check_queue(p, {name: getattr(self, name) for name in _FIELDS})
        p.raise_if_any("queue options")
        self._set(values)

    def _set(self, values: Mapping[str, Any]) -> None:
        """Sets the fields to ``values``, as ``_check_queue`` normalized them."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # -- loaders -----------------------------------------------------------------

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> QueueOptions:
        """Options from a mapping of field names (parsed JSON, YAML...); unknown keys are errors."""
        return cls._load(m, _Problems(), "queue options")

    @classmethod
    def from_env(
        cls, prefix: str = "RINGQ_", environ: Mapping[str, str] | None = None
    ) -> QueueOptions:
        """Options from environment variables (default ``os.environ``).

        ``<prefix><FIELD>`` sets a field; ``<prefix>HANDLER__<NAME>__<OPTION>``
        sets an option of handler ``NAME.lower()``. See the module docstring
        for the exact rules.
        """
        env = os.environ if environ is None else environ
        labels: dict[str, str] = {}
        p = _Problems(labels)
        top: dict[str, Any] = {}
        handlers: dict[str, dict[str, Any]] = {}
        handler_prefix = prefix + "HANDLER_"
        for var in sorted(env):
            if not var.startswith(prefix):
                continue
            rest = var[len(prefix) :]
            if var.upper().startswith(handler_prefix.upper()):
                parts = rest.split("__")
                if len(parts) != 3 or parts[0].upper() != "HANDLER" or not parts[1]:
                    p.note(var, f"expected {prefix}HANDLER__<NAME>__<OPTION>")
                    continue
                name, key = parts[1].lower(), parts[2].lower()
                path = f"handlers.{name}.{key}"
                if key not in _HANDLER_ENV_KINDS:
                    close = difflib.get_close_matches(key, HANDLER_KEYS, n=1, cutoff=0.75)
                    hint = (
                        f"did you mean {prefix}HANDLER__{parts[1]}__{close[0].upper()}?"
                        if close
                        else "OPTION must be one of: " + ", ".join(k.upper() for k in HANDLER_KEYS)
                    )
                    p.note(var, f"unknown handler option, {hint}")
                    continue
                if path in labels:
                    p.note(var, f"sets the same option as {labels[path]}")
                    continue
                labels[path] = var
                value = _parse_text(p, path, env[var], _HANDLER_ENV_KINDS[key])
                if value is not _BAD:
                    handlers.setdefault(name, {})[key] = value
                continue
            key = rest.lower()
            if key not in _ENV_KINDS:
                close = difflib.get_close_matches(key, list(_ENV_KINDS), n=1, cutoff=0.8)
                if close:
                    p.note(var, f"unknown option, did you mean {prefix}{close[0].upper()}?")
                continue
            if key in labels:
                p.note(var, f"sets the same option as {labels[key]}")
                continue
            labels[key] = var
            value = _parse_text(p, key, env[var], _ENV_KINDS[key])
            if value is not _BAD:
                top[key] = value
        if handlers:
            top["handlers"] = handlers
        return cls._load(top, p, "queue options from the environment")

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], *, table: str | None = None) -> QueueOptions:
        """Options from a TOML file: top-level keys, ``[handlers.<name>]`` tables.

        ``table`` (e.g. ``"ringq"`` or ``"tool.ringq"``) reads them from that
        table instead. A file that is not valid TOML raises ``ConfigError``;
        one that cannot be read raises ``OSError``.
        """
        where = os.fspath(path)
        with open(path, "rb") as f:
            try:
                data: Mapping[str, Any] = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"invalid TOML in {where}: {e}") from e
        if table is not None:
            where = f"{where} [{table}]"
            for part in table.split("."):
                inner = data.get(part)
                if not isinstance(inner, Mapping):
                    raise ConfigError(f"no [{table}] table in {os.fspath(path)}")
                data = inner
        return cls._load(data, _Problems(), f"queue options in {where}")

    @classmethod
    def _load(cls, m: object, p: _Problems, what: str) -> QueueOptions:
        if not isinstance(m, Mapping):
            raise ConfigError(f"invalid {what}: expected a mapping, got {type(m).__name__}")
        for key in m:
            if key not in _FIELDS:
                _unknown(p, str(key), key, _FIELDS, "option")
        known = {k: m[k] for k in _FIELDS if k in m}
        values = _check_queue(p, {**QUEUE_DEFAULTS, "handlers": {}, **known})
        p.raise_if_any(what)
        # Checked once: the values are set as checked, not passed to __init__.
        options = object.__new__(cls)
        options._set(values)
        return options

    # -- use -----------------------------------------------------------------------

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``ringq.Queue(path, **kwargs)`` (``None`` left out)."""
        return {
            name: getattr(self, name) for name in QUEUE_DEFAULTS if getattr(self, name) is not None
        }

    def handler_options(self, name: str, declared: HandlerOptions) -> HandlerOptions:
        """``declared`` with the overrides configured for handler ``name`` applied.

        Handler names are matched ignoring case (``str.casefold``), so that
        ``RINGQ_HANDLER__ONORDER__TIMEOUT`` reaches a handler named ``OnOrder``.
        """
        overrides = self.handlers.get(name)
        if overrides is None:
            key = name.casefold()
            overrides = next((o for n, o in self.handlers.items() if n.casefold() == key), None)
        return declared if overrides is None else declared._apply(overrides)

    def check_handler_names(self, names: Iterable[str]) -> None:
        """Raise ``ConfigError`` if overrides name a handler not in ``names``.

        A dispatcher calls this with its registered handler names, so that a
        misspelt handler in a config file is an error rather than ignored.
        """
        declared = sorted(set(names))
        known = {n.casefold() for n in declared}
        p = _Problems()
        for name in sorted(self.handlers):
            if name.casefold() not in known:
                _unknown(p, f"handlers.{name}", name, declared, "handler")
        p.raise_if_any("queue options")

    def __repr__(self) -> str:
        parts = [
            f"{name}={getattr(self, name)!r}"
            for name, default in QUEUE_DEFAULTS.items()
            if getattr(self, name) != default
        ]
        if self.handlers:
            plain = {name: dict(o) for name, o in self.handlers.items()}
            parts.append(f"handlers={plain!r}")
        return f"QueueOptions({', '.join(parts)})"

    def __hash__(self) -> int:
        handlers = frozenset((n, frozenset(o.items())) for n, o in self.handlers.items())
        plain = tuple(getattr(self, name) for name in QUEUE_DEFAULTS)
        return hash((*plain, handlers))


def _check_queue(p: _Problems, v: Mapping[str, Any]) -> dict[str, Any]:
    """Normalized queue options (every ``QUEUE_OPTIONS`` name and ``handlers``);
    every bad one is recorded in ``p``, in table order."""
    out: dict[str, Any] = {}
    for option in QUEUE_OPTIONS:
        out[option.name] = option.check(p, v[option.name])
        if option.also is not None:
            option.also(p, v[option.name], out)
    out["handlers"] = _check_handlers(p, v["handlers"])
    return out


def _check_handlers(p: _Problems, raw: object) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(raw, Mapping):
        p.add("handlers", raw, "must be a mapping of handler name to options")
        return MappingProxyType({})
    out: dict[str, Mapping[str, Any]] = {}
    folded: dict[str, str] = {}
    for name, overrides in raw.items():
        if not isinstance(name, str) or not name:
            p.add("handlers", name, "handler names must be non-empty strings")
            continue
        if name.casefold() in folded:
            other = folded[name.casefold()]
            p.note(
                f"handlers.{name}", f"same handler as {other!r}: names are matched ignoring case"
            )
        folded.setdefault(name.casefold(), name)
        out[name] = MappingProxyType(_check_overrides(p, f"handlers.{name}.", overrides))
    return MappingProxyType(out)

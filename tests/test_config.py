"""Queue and handler options from code, mappings, the environment and TOML files."""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import ringq
from ringq.config import HANDLER_KEYS, HandlerOptions, QueueOptions
from ringq.retry import Backoff, Retry


class Fatal(Exception):
    pass


DECLARED = HandlerOptions(
    timeout=10.0,
    max_parallelism=4,
    prefetch=8,
    retry=Retry(max_attempts=7, backoff=Backoff.exponential(1.0, cap=30.0)),
    dead_letter_on=(Fatal,),
)


def error_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ringq.ConfigError) as e:
        call(*args, **kwargs)
    assert isinstance(e.value, ValueError)
    return str(e.value)


# -- defaults and the engine ----------------------------------------------------------------


def test_queue_options_defaults_match_queue_keyword_options() -> None:
    params = inspect.signature(ringq.Queue.__init__).parameters
    queue_defaults = {
        name: p.default
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and name not in ("options", "resolver", "codec", "namespace")
    }
    ours = {f.name: getattr(QueueOptions(), f.name) for f in dataclasses.fields(QueueOptions)}
    assert ours.pop("handlers") == {}
    assert ours == queue_defaults


def test_handler_option_defaults_match_the_design() -> None:
    h = HandlerOptions()
    assert (h.timeout, h.max_parallelism, h.prefetch, h.dead_letter_on) == (30.0, 1, 16, ())
    assert h.retry == Retry(max_attempts=5, backoff=Backoff.exponential(0.5, cap=60.0))


def test_engine_kwargs_open_a_real_queue(tmp_path: Path) -> None:
    opts = QueueOptions(capacity=10, durability="always", max_key=100, dlq_capacity=5)
    kwargs = opts.engine_kwargs()
    assert kwargs == {
        "capacity": 10,
        "durability": "always",
        "fsync_interval": 0.05,
        "max_attempts": 5,
        "lease": 30.0,
        "recycle_segments": True,
        "max_key": 100,
        "dlq_capacity": 5,
        "shared": False,
    }
    with ringq.Queue(tmp_path / "q", **kwargs) as q:
        for i in range(10):
            q.publish(b"x", dedup_key=f"k{i}")
        with pytest.raises(ringq.QueueFull):
            q.publish(b"x", block=False)
        with pytest.raises(ringq.LimitExceeded):
            q.publish(b"x", dedup_key="k" * 101)


# -- from_mapping -----------------------------------------------------------------------------


def test_from_mapping_reads_every_field() -> None:
    m: dict[str, Any] = {
        "capacity": 1000,
        "durability": "os",
        "fsync_interval": 0,
        "max_attempts": 3,
        "lease": 5,
        "segment_size": 1 << 20,
        "recycle_segments": False,
        "snapshot_every": 10,
        "snapshot_interval": 60,
        "max_payload": 4096,
        "max_key": 64,
        "max_headers": 0,
        "dlq_capacity": 100,
        "shared": True,
        "handlers": {"on_order": {"timeout": 5}},
    }
    opts = QueueOptions.from_mapping(m)
    assert opts.engine_kwargs() == {k: v for k, v in m.items() if k != "handlers"}
    assert isinstance(opts.lease, float) and isinstance(opts.snapshot_interval, float)
    assert opts.handlers == {"on_order": {"timeout": 5.0}}


def test_shared_is_a_bool_from_code_mappings_and_the_environment() -> None:
    assert QueueOptions.from_env(environ={"RINGQ_SHARED": "yes"}).shared is True
    assert QueueOptions.from_env(environ={"RINGQ_SHARED": "0"}).shared is False
    assert "RINGQ_SHARED" in error_of(QueueOptions.from_env, environ={"RINGQ_SHARED": "maybe"})
    assert "shared" in error_of(QueueOptions, shared=1)


def test_recycle_segments_is_a_bool_from_code_mappings_and_the_environment() -> None:
    env = {"RINGQ_RECYCLE_SEGMENTS": "no"}
    assert QueueOptions.from_env(environ=env).recycle_segments is False
    assert QueueOptions().recycle_segments is True
    assert "RINGQ_RECYCLE_SEGMENTS" in error_of(
        QueueOptions.from_env, environ={"RINGQ_RECYCLE_SEGMENTS": "sometimes"}
    )
    assert "recycle_segments=0 (must be True or False)" in error_of(
        QueueOptions, recycle_segments=0
    )


def test_from_mapping_rejects_unknown_keys_with_a_hint() -> None:
    msg = error_of(QueueOptions.from_mapping, {"capacty": 10, "colour": "red", "lease": 1.0})
    assert "capacty (unknown option, did you mean 'capacity'?)" in msg
    assert "colour (unknown option, expected one of: capacity, durability" in msg


def test_config_validation_lists_every_bad_field() -> None:
    msg = error_of(
        QueueOptions.from_mapping,
        {
            "capacity": 0,
            "durability": "fast",
            "fsync_interval": -1,
            "max_attempts": 0,
            "lease": 0,
            "segment_size": 1024,
            "snapshot_every": 0,
            "snapshot_interval": 0.0,
            "max_payload": 0,
            "max_key": 70_000,
            "max_headers": -1,
            "dlq_capacity": 0,
            "handlers": {"on_order": {"timeout": -1, "prefetch": 0, "backoff": {"kind": "x"}}},
        },
    )
    expected = [
        "capacity=0 (must be an int in 1..=16777215)",
        "durability='fast' (must be 'always', 'batch' or 'os')",
        "fsync_interval=-1 (must be a number of seconds in 0..=31536000)",
        "max_attempts=0 (must be an int in 1..=4294967295)",
        "lease=0 (must be a number of seconds > 0 and <= 31536000)",
        "segment_size=1024 (must be None or an int in 65536..=2147483647)",
        "snapshot_every=0 (must be None or an int >= 1)",
        "snapshot_interval=0.0 (must be None or a number of seconds > 0 and <= 31536000)",
        "max_payload=0 (must be None or an int in 1..=67108864)",
        "max_key=70000 (must be None or an int in 1..=65536)",
        "max_headers=-1 (must be None or an int in 0..=16777216)",
        "dlq_capacity=0 (must be None or an int >= 1)",
        "handlers.on_order.timeout=-1 (must be a number of seconds > 0 and <= 31536000)",
        "handlers.on_order.prefetch=0 (must be an int in 1..=1024)",
        "handlers.on_order.backoff.kind='x' (must be 'fixed' or 'exponential')",
    ]
    assert msg.startswith("invalid queue options: ")
    assert msg.removeprefix("invalid queue options: ").split("; ") == expected


def test_constructor_validates_like_the_loaders() -> None:
    msg = error_of(QueueOptions, capacity=-5, lease=math.inf)
    assert (
        msg
        == "invalid queue options: capacity=-5 (must be an int in 1..=16777215); lease=inf "
        + ("(must be a number of seconds > 0 and <= 31536000)")
    )


@pytest.mark.parametrize("field", ["capacity", "max_attempts", "segment_size", "dlq_capacity"])
def test_bool_is_not_accepted_as_an_integer(field: str) -> None:
    msg = error_of(QueueOptions.from_mapping, {field: True})
    assert f"{field}=True (must be " in msg and ", not bool)" in msg


@pytest.mark.parametrize("field", ["lease", "fsync_interval", "snapshot_interval"])
def test_bool_is_not_accepted_as_a_duration(field: str) -> None:
    msg = error_of(QueueOptions.from_mapping, {field: False})
    assert (
        f"{field}=False (must be " in msg and "a number of seconds" in msg and ", not bool)" in msg
    )


def test_float_and_string_counts_are_rejected() -> None:
    msg = error_of(QueueOptions.from_mapping, {"capacity": 10.0, "max_key": "64"})
    assert "capacity=10.0 (must be an int in 1..=16777215, not float)" in msg
    assert "max_key='64' (must be None or an int in 1..=65536, not str)" in msg


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinite_durations_are_rejected(value: float) -> None:
    msg = error_of(
        QueueOptions.from_mapping,
        {"lease": value, "handlers": {"h": {"timeout": value}}},
    )
    assert f"lease={value!r} (must be a number of seconds > 0 and <= 31536000)" in msg
    assert f"handlers.h.timeout={value!r} (must be a number of seconds > 0 and <= 31536000)" in msg


def test_batch_durability_needs_a_positive_fsync_interval() -> None:
    msg = error_of(QueueOptions, fsync_interval=0.0)
    assert 'fsync_interval=0.0 (must be > 0 with durability="batch")' in msg
    assert QueueOptions(durability="always", fsync_interval=0.0).fsync_interval == 0.0


# -- handler options ----------------------------------------------------------------------------


def test_handler_options_validation_lists_every_bad_field() -> None:
    msg = error_of(
        HandlerOptions,
        timeout=0,
        max_parallelism=True,
        prefetch=2000,
        retry="3",
        dead_letter_on=[Fatal],
    )
    assert msg.removeprefix("invalid handler options: ").split("; ") == [
        "timeout=0 (must be a number of seconds > 0 and <= 31536000)",
        "max_parallelism=True (must be an int in 1..=1024, not bool)",
        "prefetch=2000 (must be an int in 1..=1024)",
        "retry='3' (must be a ringq.Retry)",
        f"dead_letter_on={[Fatal]!r} (must be a tuple of exception classes)",
    ]
    assert "dead_letter_on" in error_of(HandlerOptions, dead_letter_on=(int,))


def test_merged_applies_overrides_and_keeps_the_rest() -> None:
    merged = DECLARED.merged({"timeout": 2, "max_attempts": 2})
    assert merged.timeout == 2.0 and isinstance(merged.timeout, float)
    assert merged.retry == Retry(max_attempts=2, backoff=DECLARED.retry.backoff)
    assert (merged.max_parallelism, merged.prefetch, merged.dead_letter_on) == (4, 8, (Fatal,))
    assert DECLARED.timeout == 10.0  # the declared options are unchanged
    assert DECLARED.merged({}) == DECLARED


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (Backoff.fixed(3.0), Backoff.fixed(3.0)),
        ({"kind": "fixed", "seconds": 3}, Backoff.fixed(3.0)),
        ("fixed:seconds=3", Backoff.fixed(3.0)),
        (" FIXED : seconds = 3 ", Backoff.fixed(3.0)),
        ({"kind": "exponential", "initial": 0.5}, Backoff.exponential(0.5)),
        ("exponential:initial=0.5", Backoff.exponential(0.5)),
        (
            {"kind": "exponential", "initial": 1, "factor": 3, "cap": "none", "jitter": False},
            Backoff.exponential(1.0, factor=3.0, cap=None, jitter=False),
        ),
        (
            "exponential:initial=1,factor=3,cap=none,jitter=off",
            Backoff.exponential(1.0, factor=3.0, cap=None, jitter=False),
        ),
        (
            "exponential:initial=0.5,factor=2,cap=60,jitter=true",
            Backoff.exponential(0.5, factor=2.0, cap=60.0, jitter=True),
        ),
    ],
)
def test_merged_accepts_backoff_objects_mappings_and_strings(
    backoff: object, expected: Backoff
) -> None:
    assert DECLARED.merged({"backoff": backoff}).retry.backoff == expected


@pytest.mark.parametrize(
    "b",
    [Backoff.fixed(0.0), Backoff.exponential(0.1, factor=1.5, cap=None, jitter=False)],
)
def test_backoff_to_mapping_round_trips_through_config(b: Backoff) -> None:
    assert DECLARED.merged({"backoff": b.to_mapping()}).retry.backoff == b


def test_merged_lists_every_bad_override() -> None:
    msg = error_of(
        DECLARED.merged,
        {
            "timout": 1,
            "max_parallelism": 0,
            "max_attempts": 1.5,
            "dead_letter_on": (),
            "backoff": {"kind": "exponential", "factor": 0.5, "cap": 0.1, "jiter": True},
        },
    )
    assert msg.removeprefix("invalid handler options: ").split("; ") == [
        "timout (unknown handler option, did you mean 'timeout'?)",
        "max_parallelism=0 (must be an int in 1..=1024)",
        "max_attempts=1.5 (must be an int >= 1, not float)",
        "dead_letter_on (unknown handler option, expected one of: " + ", ".join(HANDLER_KEYS) + ")",
        "backoff.jiter (unknown exponential backoff option, did you mean 'jitter'?)",
        "backoff.initial (missing)",
        "backoff.factor=0.5 (must be a number >= 1)",
    ]


@pytest.mark.parametrize(
    ("backoff", "problem"),
    [
        ({"seconds": 1}, "backoff.kind (missing, expected 'fixed' or 'exponential')"),
        ({"kind": "fixed"}, "backoff.seconds (missing)"),
        ({"kind": "fixed", "seconds": 1, "cap": 2}, "backoff.cap (unknown fixed backoff option"),
        (
            {"kind": "fixed", "seconds": True},
            "backoff.seconds=True (must be a number of seconds in 0..=31536000, not bool)",
        ),
        ({"kind": "exponential", "initial": 1, "jitter": 1}, "backoff.jitter=1 (must be true"),
        ("fixed:seconds=soon", "backoff.seconds='soon' (must be a number)"),
        ("fixed:seconds", "backoff='fixed:seconds' (cannot read 'seconds': expected key=value)"),
        ("fixed:seconds=1,seconds=2", "(seconds is given twice)"),
        ("exponential:initial=1,jitter=maybe", "backoff.jitter='maybe' (must be true or false)"),
        (
            "exponential:initial=nan",
            "backoff.initial=nan (must be a number of seconds in 0..=31536000)",
        ),
        (5, "backoff=5 (must be a mapping like"),
    ],
)
def test_bad_backoff_configuration_is_named(backoff: object, problem: str) -> None:
    assert problem in error_of(DECLARED.merged, {"backoff": backoff})


def test_handler_overrides_are_merged_by_name() -> None:
    opts = QueueOptions.from_mapping(
        {
            "handlers": {
                "on_order": {"timeout": 5, "backoff": "fixed:seconds=1"},
                "on_refund": {"max_parallelism": 2},
            }
        }
    )
    on_order = opts.handler_options("on_order", DECLARED)
    assert on_order == dataclasses.replace(
        DECLARED, timeout=5.0, retry=Retry(max_attempts=7, backoff=Backoff.fixed(1.0))
    )
    on_refund = opts.handler_options("on_refund", DECLARED)
    assert on_refund == dataclasses.replace(DECLARED, max_parallelism=2)
    assert opts.handler_options("on_other", DECLARED) is DECLARED
    assert opts.handler_options("On_Order", DECLARED) == on_order  # names ignore case


def test_handler_names_that_differ_only_in_case_are_one_handler() -> None:
    msg = error_of(QueueOptions, handlers={"OnOrder": {"timeout": 1.0}, "onorder": {}})
    assert msg == (
        "invalid queue options: handlers.onorder "
        "(same handler as 'OnOrder': names are matched ignoring case)"
    )


def test_check_handler_names_flags_configured_handlers_that_do_not_exist() -> None:
    opts = QueueOptions(handlers={"on_ordr": {"timeout": 1.0}, "on_refund": {}})
    opts.check_handler_names(["on_refund", "on_ordr", "x"])
    msg = error_of(opts.check_handler_names, ["on_order", "on_refund"])
    assert "handlers.on_ordr (unknown handler, did you mean 'on_order'?)" in msg


def test_handlers_must_be_a_mapping_of_mappings() -> None:
    msg = error_of(QueueOptions.from_mapping, {"handlers": {"a": 1, "": {}, "b": {"x": 1}}})
    assert "handlers.a=1 (must be a mapping of handler options)" in msg
    assert "handlers='' (handler names must be non-empty strings)" in msg
    assert "handlers.b.x (unknown handler option" in msg
    assert "handlers=[] (must be a mapping" in error_of(QueueOptions, handlers=[])


# -- from_env ---------------------------------------------------------------------------------


def test_from_env_reads_fields_and_handler_options() -> None:
    opts = QueueOptions.from_env(
        environ={
            "RINGQ_CAPACITY": "1_000",
            "RINGQ_DURABILITY": "always",
            "RINGQ_FSYNC_INTERVAL": "0.5",
            "RINGQ_LEASE": " 12 ",
            "RINGQ_MAX_KEY": "64",
            "RINGQ_HANDLER__ON_ORDER__TIMEOUT": "5",
            "RINGQ_HANDLER__ON_ORDER__MAX_ATTEMPTS": "3",
            "RINGQ_HANDLER__ON_ORDER__BACKOFF": "exponential:initial=0.5,factor=2,cap=60",
            "RINGQ_HANDLER__SHIP__PREFETCH": "1",
            "PATH": "/usr/bin",
        }
    )
    assert opts == QueueOptions(
        capacity=1000,
        durability="always",
        fsync_interval=0.5,
        lease=12.0,
        max_key=64,
        handlers={
            "on_order": {
                "timeout": 5.0,
                "max_attempts": 3,
                "backoff": Backoff.exponential(0.5, cap=60.0),
            },
            "ship": {"prefetch": 1},
        },
    )
    on_order = opts.handler_options("on_order", DECLARED)
    assert on_order.timeout == 5.0
    assert on_order.retry == Retry(3, Backoff.exponential(0.5, cap=60.0))


def test_from_env_handler_name_is_the_lower_cased_name_segment() -> None:
    opts = QueueOptions.from_env(
        environ={
            "RINGQ_HANDLER__On_Order__timeout": "2",
            "RINGQ_HANDLER__SHIP2__PREFETCH": "4",
            "RINGQ_HANDLER__ONREFUND__MAX_PARALLELISM": "3",
        }
    )
    assert opts.handlers == {
        "on_order": {"timeout": 2.0},
        "ship2": {"prefetch": 4},
        "onrefund": {"max_parallelism": 3},
    }
    # A class-based handler named after its class is reached too.
    assert opts.handler_options("OnRefund", DECLARED).max_parallelism == 3
    assert opts.handler_options("on_refund", DECLARED) is DECLARED  # underscores count
    opts.check_handler_names(["on_order", "Ship2", "OnRefund"])


def test_from_env_errors_name_the_variables_and_list_all_of_them() -> None:
    msg = error_of(
        QueueOptions.from_env,
        environ={
            "RINGQ_CAPACITY": "lots",
            "RINGQ_MAX_KEY": "1.5",
            "RINGQ_LEASE": "nan",
            "RINGQ_MAX_ATTEMPTS": "true",
            "RINGQ_DURABILITY": "ALWAYS",
            "RINGQ_HANDLER__ON_ORDER__TIMEOUT": "-1",
            "RINGQ_HANDLER__ON_ORDER__BACKOFF": "exponential:initial=2,factor=0.5,cap=1",
            "RINGQ_HANDLER__ON_ORDER__TIMEOT": "1",
            "RINGQ_HANDLER_ON_ORDER_TIMEOUT": "1",
        },
    )
    assert msg.startswith("invalid queue options from the environment: ")
    for problem in [
        "RINGQ_CAPACITY='lots' (must be an int)",
        "RINGQ_MAX_KEY='1.5' (must be an int)",
        "RINGQ_LEASE=nan (must be a number of seconds > 0 and <= 31536000)",
        "RINGQ_MAX_ATTEMPTS='true' (must be an int)",
        "RINGQ_DURABILITY='ALWAYS' (must be 'always', 'batch' or 'os')",
        "RINGQ_HANDLER__ON_ORDER__TIMEOUT=-1.0 (must be a number of seconds > 0 and <= 31536000)",
        "RINGQ_HANDLER__ON_ORDER__BACKOFF.factor=0.5 (must be a number >= 1)",
        "RINGQ_HANDLER__ON_ORDER__BACKOFF.cap=1.0 (must be >= initial=2)",
        "RINGQ_HANDLER__ON_ORDER__TIMEOT (unknown handler option, "
        "did you mean RINGQ_HANDLER__ON_ORDER__TIMEOUT?)",
        "RINGQ_HANDLER_ON_ORDER_TIMEOUT (expected RINGQ_HANDLER__<NAME>__<OPTION>)",
    ]:
        assert problem in msg
    assert msg.count("; ") == 9


def test_from_env_ignores_unrelated_variables_but_flags_misspelt_options() -> None:
    unrelated = {"RINGQ_WRITE_GOLDEN": "1", "RINGQ_LOG_LEVEL": "debug", "HOME": "/root"}
    assert QueueOptions.from_env(environ=unrelated) == QueueOptions()
    msg = error_of(QueueOptions.from_env, environ={**unrelated, "RINGQ_CAPACTY": "10"})
    assert msg.endswith("RINGQ_CAPACTY (unknown option, did you mean RINGQ_CAPACITY?)")


def test_from_env_refuses_two_variables_for_one_option() -> None:
    msg = error_of(
        QueueOptions.from_env,
        environ={
            "RINGQ_LEASE": "1",
            "RINGQ_lease": "2",
            "RINGQ_HANDLER__A__TIMEOUT": "1",
            "RINGQ_HANDLER__a__TIMEOUT": "2",
        },
    )
    assert "RINGQ_HANDLER__a__TIMEOUT (sets the same option as RINGQ_HANDLER__A__TIMEOUT)" in msg
    assert "RINGQ_lease (sets the same option as RINGQ_LEASE)" in msg


def test_from_env_with_another_prefix_and_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_Q_CAPACITY", "77")
    monkeypatch.setenv("MYAPP_Q_HANDLER__JOB__TIMEOUT", "3.5")
    monkeypatch.setenv("RINGQ_CAPACITY", "5")
    opts = QueueOptions.from_env(prefix="MYAPP_Q_")
    assert opts.capacity == 77
    assert opts.handlers == {"job": {"timeout": 3.5}}
    assert QueueOptions.from_env().capacity == 5


# -- from_toml --------------------------------------------------------------------------------


def test_from_toml_reads_top_level_keys_and_handler_tables(tmp_path: Path) -> None:
    path = tmp_path / "ringq.toml"
    path.write_text(
        """
capacity = 1000
durability = "always"
snapshot_interval = 60

[handlers.on_order]
timeout = 5.0
max_attempts = 3
backoff = { kind = "exponential", initial = 0.5, cap = "none", jitter = false }

[handlers.ship]
backoff = "fixed:seconds=2"
"""
    )
    opts = QueueOptions.from_toml(path)
    assert opts == QueueOptions(
        capacity=1000,
        durability="always",
        snapshot_interval=60.0,
        handlers={
            "on_order": {
                "timeout": 5.0,
                "max_attempts": 3,
                "backoff": Backoff.exponential(0.5, cap=None, jitter=False),
            },
            "ship": {"backoff": Backoff.fixed(2.0)},
        },
    )
    assert QueueOptions.from_toml(str(path)) == opts


def test_from_toml_can_read_a_table_of_a_larger_file(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text(
        "[server]\nport = 80\n\n[tool.ringq]\nlease = 9\n\n[tool.ringq.handlers.h]\nprefetch = 2\n"
    )
    opts = QueueOptions.from_toml(path, table="tool.ringq")
    assert (opts.lease, opts.handlers) == (9.0, {"h": {"prefetch": 2}})
    assert "server (unknown option" in error_of(QueueOptions.from_toml, path)
    assert "no [ringq] table" in error_of(QueueOptions.from_toml, path, table="ringq")


def test_from_toml_errors_name_the_file_and_every_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("lease = nan\ncapacity = true\n[handlers.on_order]\ntimeout = inf\nx = 1\n")
    msg = error_of(QueueOptions.from_toml, path)
    assert msg == (
        f"invalid queue options in {path}: "
        "capacity=True (must be an int in 1..=16777215, not bool); "
        "lease=nan (must be a number of seconds > 0 and <= 31536000); "
        "handlers.on_order.timeout=inf (must be a number of seconds > 0 and <= 31536000); "
        "handlers.on_order.x (unknown handler option, expected one of: "
        + ", ".join(HANDLER_KEYS)
        + ")"
    )


def test_from_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("capacity = = 3\n")
    assert f"invalid TOML in {path}" in error_of(QueueOptions.from_toml, path)
    with pytest.raises(FileNotFoundError):
        QueueOptions.from_toml(tmp_path / "missing.toml")


# -- value semantics -----------------------------------------------------------------------


def test_queue_options_are_immutable_hashable_and_copy_their_input() -> None:
    source: dict[str, Any] = {"on_order": {"timeout": 5}}
    opts = QueueOptions(handlers=source)
    source["on_order"]["timeout"] = 99
    source["other"] = {}
    assert opts.handlers == {"on_order": {"timeout": 5.0}}
    with pytest.raises(TypeError):
        opts.handlers["x"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        opts.handlers["on_order"]["timeout"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.capacity = 1  # type: ignore[misc]
    same = QueueOptions(handlers={"on_order": {"timeout": 5.0}})
    assert opts == same and hash(opts) == hash(same)
    assert opts != QueueOptions(handlers={"on_order": {"timeout": 6.0}})
    assert len({HandlerOptions(), HandlerOptions(), DECLARED}) == 2


def test_queue_options_repr_shows_what_differs_from_the_defaults() -> None:
    assert repr(QueueOptions()) == "QueueOptions()"
    opts = QueueOptions(capacity=10, handlers={"h": {"backoff": "fixed:seconds=1"}})
    assert (
        repr(opts) == "QueueOptions(capacity=10, handlers={'h': {'backoff': Backoff.fixed(1.0)}})"
    )


def test_options_come_as_keywords_or_as_options_not_both(tmp_path: Path) -> None:
    with pytest.raises(ringq.ConfigError, match=r"not both \(also given: capacity\)$"):
        ringq.Queue(tmp_path / "a", capacity=5, options=QueueOptions())
    # A bool by type too: 1 is not the default True (it would be ignored).
    with pytest.raises(ringq.ConfigError, match=r"not both \(also given: recycle_segments\)$"):
        ringq.Queue(tmp_path / "b", recycle_segments=1, options=QueueOptions())  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # Keywords left at their defaults (or equal to them) go with options=.
    with ringq.Queue(tmp_path / "c", lease=30, options=QueueOptions(capacity=7)) as q:
        assert q.stats()["capacity"] == 7

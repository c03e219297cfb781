"""Retry policies: backoff delays, their bounds, and when a message is dead-lettered."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import ringq
from hypothesis import given
from hypothesis import strategies as st
from ringq.retry import MAX_SECONDS, Backoff, ExponentialBackoff, FixedBackoff, Retry

seconds = st.floats(min_value=0.0, max_value=MAX_SECONDS)
attempts = st.integers(min_value=1, max_value=10_000)
huge_attempts = st.integers(min_value=10**6, max_value=10**400)
seeds = st.integers(min_value=0, max_value=2**32)


@st.composite
def exponentials(draw: st.DrawFn, jitter: bool | None = None) -> ExponentialBackoff:
    initial = draw(st.floats(min_value=0.0, max_value=3600.0))
    factor = draw(st.floats(min_value=1.0, max_value=1e6))
    cap = draw(st.none() | st.floats(min_value=max(initial, 1e-9), max_value=MAX_SECONDS))
    j = draw(st.booleans()) if jitter is None else jitter
    return Backoff.exponential(initial, factor=factor, cap=cap, jitter=j)


backoffs = exponentials() | seconds.map(Backoff.fixed)


def limit_of(b: ExponentialBackoff) -> float:
    return MAX_SECONDS if b.cap is None else b.cap


# -- properties -----------------------------------------------------------------------------


@given(backoffs, attempts | huge_attempts, seeds)
def test_backoff_delay_is_finite_and_never_negative(b: Backoff, attempt: int, seed: int) -> None:
    d = b.delay(attempt, random.Random(seed))
    assert math.isfinite(d)
    assert 0.0 <= d <= MAX_SECONDS


@given(exponentials(), attempts | huge_attempts, seeds)
def test_backoff_delay_never_exceeds_cap(b: ExponentialBackoff, attempt: int, seed: int) -> None:
    assert b.delay(attempt, random.Random(seed)) <= limit_of(b)


@given(exponentials(jitter=False), attempts, st.integers(min_value=1, max_value=100))
def test_backoff_without_jitter_never_decreases(
    b: ExponentialBackoff, attempt: int, step: int
) -> None:
    assert b.delay(attempt) <= b.delay(attempt + step)


@given(exponentials(jitter=True), attempts | huge_attempts, seeds)
def test_equal_jitter_stays_between_half_and_full_delay(
    b: ExponentialBackoff, attempt: int, seed: int
) -> None:
    full = dataclasses.replace(b, jitter=False).delay(attempt)
    assert full == b.ceiling(attempt)
    assert full / 2 <= b.delay(attempt, random.Random(seed)) <= full


@given(exponentials(jitter=False), huge_attempts)
def test_huge_attempts_give_the_limit_without_raising(b: ExponentialBackoff, attempt: int) -> None:
    d = b.delay(attempt)
    if b.initial > 0 and b.factor >= 1.001:
        assert d == limit_of(b)
    else:  # no growth (or too little to reach the limit): stays within bounds
        assert b.initial <= d <= limit_of(b)


@given(seconds, attempts | huge_attempts, seeds)
def test_fixed_backoff_is_the_same_for_every_attempt(s: float, attempt: int, seed: int) -> None:
    assert Backoff.fixed(s).delay(attempt, random.Random(seed)) == s


@given(st.integers(min_value=1, max_value=50), backoffs, attempts | huge_attempts)
def test_next_delay_is_none_exactly_when_attempts_are_exhausted(
    max_attempts: int, b: Backoff, attempt: int
) -> None:
    delay = Retry(max_attempts=max_attempts, backoff=b).next_delay(attempt, random.Random(0))
    assert (delay is None) == (attempt >= max_attempts)
    if delay is not None:
        assert delay == b.delay(attempt, random.Random(0))


# -- examples -------------------------------------------------------------------------------


def test_exponential_doubles_from_initial_until_the_cap() -> None:
    b = Backoff.exponential(0.5, cap=60.0, jitter=False)
    assert [b.delay(a) for a in range(1, 11)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_exponential_with_other_factor_and_no_cap_stops_at_max_seconds() -> None:
    b = Backoff.exponential(1.0, factor=10.0, cap=None, jitter=False)
    assert [b.delay(a) for a in (1, 2, 3, 8)] == [1.0, 10.0, 100.0, 1e7]
    assert b.delay(9) == MAX_SECONDS
    assert b.delay(10**9) == MAX_SECONDS


def test_rounding_at_the_cap_never_overshoots_it() -> None:
    # 0.3 * 1.1**25 is one ulp above this cap, and the log-space step count
    # that detects reaching the cap rounds to 25.000000000000004 (> 25).
    cap = 3.250411783016518
    b = Backoff.exponential(0.3, factor=1.1, cap=cap, jitter=False)
    assert cap < 0.3 * 1.1**25
    assert b.delay(26) == cap


def test_jitter_varies_and_is_reproducible_with_a_seeded_rng() -> None:
    b = Backoff.exponential(1.0, cap=60.0, jitter=True)
    first = [b.delay(4, random.Random(seed)) for seed in range(50)]
    again = [b.delay(4, random.Random(seed)) for seed in range(50)]
    assert first == again
    assert len(set(first)) > 40  # really random, not a constant
    assert min(first) >= 4.0 and max(first) <= 8.0
    assert min(first) < 5.0 and max(first) > 7.0  # spreads over the whole [d/2, d] band


def test_jitter_without_rng_uses_the_module_random_source() -> None:
    b = Backoff.exponential(2.0, cap=None, jitter=True)
    values = {b.delay(3) for _ in range(20)}
    assert len(values) > 1
    assert all(4.0 <= v <= 8.0 for v in values)


def test_max_attempts_one_never_retries() -> None:
    r = Retry(max_attempts=1, backoff=Backoff.fixed(1.0))
    assert r.next_delay(1) is None


def test_default_retry_is_five_deliveries_with_capped_exponential_backoff() -> None:
    r = Retry()
    assert r.max_attempts == 5
    assert r.backoff == Backoff.exponential(0.5, factor=2.0, cap=60.0, jitter=True)
    assert [r.next_delay(a) is None for a in range(1, 7)] == [False] * 4 + [True] * 2


def test_delay_refuses_attempt_zero_and_non_integers() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        Backoff.fixed(1.0).delay(0)
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        Retry().next_delay(-3)
    with pytest.raises(TypeError):
        Backoff.exponential(1.0).delay(True)
    with pytest.raises(TypeError):
        Backoff.exponential(1.0).delay(1.5)  # type: ignore[arg-type]


# -- validation -----------------------------------------------------------------------------


def test_retry_validation_lists_every_bad_field() -> None:
    with pytest.raises(ringq.ConfigError) as e:
        Retry(max_attempts=0, backoff="fast")  # type: ignore[arg-type]
    msg = str(e.value)
    assert msg.startswith("invalid retry options: ")
    assert "max_attempts=0 (must be an int >= 1)" in msg
    assert "backoff='fast' (must be a ringq.Backoff" in msg


def test_backoff_validation_lists_every_bad_field() -> None:
    with pytest.raises(ringq.ConfigError) as e:
        Backoff.exponential(math.nan, factor=0.5, cap=-1.0, jitter=1)  # type: ignore[arg-type]
    msg = str(e.value)
    assert msg.startswith("invalid backoff options: ")
    for part in (
        "initial=nan (must be a number of seconds in 0..=31536000)",
        "factor=0.5 (must be a number >= 1)",
        "cap=-1.0 (must be None or a number of seconds > 0 and <= 31536000)",
        "jitter=1 (must be true or false, not int)",
    ):
        assert part in msg
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.5, 10**400, MAX_SECONDS * 2])
def test_fixed_backoff_rejects_non_finite_negative_and_too_long(value: float) -> None:
    with pytest.raises(ringq.ConfigError, match="seconds="):
        Backoff.fixed(value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": True},
        {"initial": 1.0, "factor": True},
        {"initial": 1.0, "cap": False},
        {"initial": "1"},
        {"initial": 1.0, "factor": None},
    ],
)
def test_backoff_rejects_bools_and_other_non_numbers(kwargs: dict[str, object]) -> None:
    with pytest.raises(ringq.ConfigError, match=r"must be (None or )?a number"):
        Backoff.exponential(**kwargs)  # type: ignore[arg-type]


def test_retry_rejects_bool_and_float_max_attempts() -> None:
    with pytest.raises(
        ringq.ConfigError, match=r"max_attempts=True \(must be an int >= 1, not bool"
    ):
        Retry(max_attempts=True)
    with pytest.raises(
        ringq.ConfigError, match=r"max_attempts=3.0 \(must be an int >= 1, not float"
    ):
        Retry(max_attempts=3.0)  # type: ignore[arg-type]


def test_cap_below_initial_is_rejected() -> None:
    with pytest.raises(ringq.ConfigError, match=r"cap=1.0 \(must be >= initial=2\)"):
        Backoff.exponential(2.0, cap=1.0)
    assert Backoff.exponential(2.0, cap=2.0).delay(5, random.Random(1)) <= 2.0


# -- value semantics ------------------------------------------------------------------------


def test_policies_are_hashable_and_compare_by_value() -> None:
    assert Backoff.fixed(1) == Backoff.fixed(1.0)
    assert isinstance(Backoff.fixed(1).seconds, float)
    fixed: Backoff = Backoff.fixed(1.0)
    assert fixed != Backoff.exponential(1.0, factor=1.0, cap=1.0, jitter=False)
    assert fixed.delay(3) == Backoff.exponential(1.0, factor=1.0, cap=1.0, jitter=False).delay(3)
    assert Backoff.exponential(0.5) != Backoff.exponential(0.5, jitter=False)
    policies = {Retry(), Retry(5, Backoff.exponential(0.5)), Retry(3), Retry(3)}
    assert len(policies) == 2


def test_policies_are_frozen_and_slotted() -> None:
    b = Backoff.exponential(0.5)
    r = Retry()
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.initial = 2.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.max_attempts = 2  # type: ignore[misc]
    assert not hasattr(b, "__dict__")
    assert not hasattr(r, "__dict__")
    assert not hasattr(Backoff.fixed(1.0), "__dict__")


@pytest.mark.parametrize(
    "b",
    [
        Backoff.fixed(1.5),
        Backoff.exponential(0.5),
        Backoff.exponential(0.25, factor=3.0, cap=None, jitter=False),
    ],
)
def test_backoff_repr_is_readable_and_evaluates_back(b: Backoff) -> None:
    text = repr(b)
    assert text.startswith("Backoff.")
    assert eval(text, {"Backoff": Backoff}) == b
    assert repr(Retry(2, b)) == f"Retry(max_attempts=2, backoff={text})"


def test_backoff_itself_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        Backoff()  # type: ignore[abstract]
    assert isinstance(Backoff.fixed(1.0), FixedBackoff)
    assert isinstance(Backoff.exponential(1.0), ExponentialBackoff)

"""Retry delays grow fast and stay low: a registry outage ends for us seconds after it ends."""

import pytest

from lbgen.core.backoff import backoff, full_jitter


@pytest.mark.parametrize(("attempt", "jitter", "expected"), [
    (0, 0.0, 0.1),
    (0, 0.999, 0.1999),
    (1, 0.0, 0.2),
    (3, 0.0, 0.8),
    (4, 0.0, 1.5),
    (10, 0.0, 1.5),
    (10, 0.5, 2.25),
    (10_000, 0.999, 2.9985),
], ids=["first-low", "first-high", "second", "fourth", "capped", "stays-capped", "capped-mid", "huge-attempt"])
def test_backoff_is_exponential_capped_and_jittered(attempt: int, jitter: float, expected: float) -> None:
    assert backoff(attempt, jitter) == pytest.approx(expected)


def test_the_cap_bounds_every_delay() -> None:
    assert max(backoff(a, 0.999, base=1.0, cap=5.0) for a in range(100)) < 5.0


@pytest.mark.parametrize(("attempt", "jitter"), [(-1, 0.0), (0, 1.0), (0, -0.1)], ids=["attempt", "jitter-1", "jitter-neg"])
def test_bad_arguments_are_refused(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        backoff(attempt, jitter)


@pytest.mark.parametrize(("attempt", "jitter", "expected"), [
    (0, 0.0, 0.05),
    (0, 0.5, 0.525),
    (0, 0.999, 0.99905),
    (2, 0.999, 3.99605),
    (10, 0.999, 4.99505),
], ids=["first-floor", "first-mid", "first-top", "third-top", "capped"])
def test_full_jitter_spreads_over_the_whole_window_above_the_floor(attempt: int, jitter: float, expected: float) -> None:
    assert full_jitter(attempt, jitter, base=1.0, cap=5.0, floor=0.05) == pytest.approx(expected)


def test_full_jitter_never_exceeds_a_ceiling_below_the_floor() -> None:
    assert full_jitter(0, 0.9, base=0.01, cap=0.05, floor=0.1) == pytest.approx(0.01)

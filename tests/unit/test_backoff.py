"""Retry delays grow fast and stay low: a registry outage ends for us seconds after it ends."""

import pytest

from lbgen.core.backoff import backoff


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

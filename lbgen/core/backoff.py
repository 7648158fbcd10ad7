"""Retry delays: exponential, capped low, with caller-supplied jitter.

The cap is seconds, not minutes: confd inherited gRPC's 120 s reconnect cap and applied changes
91 s after a 5-minute etcd outage (FIELD.md). lbgen must converge within a few seconds of a
backend coming back, so it retries at most every `cap` seconds.
"""

from __future__ import annotations


def backoff(attempt: int, base: float = 0.2, cap: float = 3.0, jitter: float = 0.0) -> float:
    """Delay before retry number `attempt` (0-based): `base * 2**attempt`, at most `cap`.

    `jitter` in [0, 1) spreads a fleet's retries: the delay is scaled into [d/2, d). Pass
    `random.random()`; tests pass a fixed value (the core reads no randomness itself).
    """
    delay = min(cap, base * 2 ** min(attempt, 32))
    return delay * (1 - jitter / 2) if jitter else delay

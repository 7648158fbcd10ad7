"""Retry delays for reconnecting to the registry (and anything else that retries).

Capped low on purpose: gRPC's own reconnect backoff grows to 120 s, and confd, which relies on it,
took 91 s to notice etcd was back after a 5-minute outage (confd 0.16, etcd 3.4, measured on a
2-vCPU machine, 2026-11-25). A retry every few seconds costs an etcd nothing; a load balancer
serving a stale config for a minute and a half does.
"""

from __future__ import annotations

DEFAULT_BASE = 0.2
DEFAULT_CAP = 3.0


def backoff(attempt: int, jitter: float, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry).

    Exponential from `base`, capped at `cap`, then spread over [½, 1] of that by `jitter` (a number
    in [0, 1) the caller draws, so a fleet of watchers does not reconnect in lockstep and this
    function stays pure).
    """
    return _ceiling(attempt, jitter, base, cap) * (0.5 + 0.5 * jitter)


def full_jitter(attempt: int, jitter: float, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP,
                floor: float = 0.0) -> float:
    """Seconds before retry `attempt`, anywhere in [floor, min(cap, base·2^attempt)] by `jitter`.

    For retries a whole fleet makes at the same moment, each an expensive call (every LB node
    re-snapshots the registry when an etcd member restarts): `backoff` lands them within half its
    window, this spreads them over all of it; `floor` keeps the soonest from being instant.
    """
    ceiling = _ceiling(attempt, jitter, base, cap)
    return min(floor, ceiling) + max(0.0, ceiling - floor) * jitter


def _ceiling(attempt: int, jitter: float, base: float, cap: float) -> float:
    if attempt < 0:
        raise ValueError(f"attempt {attempt}: must be 0 or more")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter {jitter}: must be in [0, 1)")
    return min(cap, base * 2.0 ** min(attempt, 32))


def jittered(interval: float, rand: float, spread: float = 0.2) -> float:
    """`interval` moved by up to ±`spread` of itself, evenly by `rand` in [0, 1): periodic work of
    processes started together (a fleet after a restart) drifts apart instead of staying in step."""
    return interval * (1.0 - spread + 2.0 * spread * rand)

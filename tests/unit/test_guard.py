"""The drop guard: sudden losses are held with a reason; ordinary churn and recoveries pass."""

from __future__ import annotations

import pytest

from lbgen.core.guard import check_drop
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.settings import GUARD_OFF, Guard


def catalog(**services: int | tuple[int, str]) -> Catalog:
    """`web=3` → web with 3 healthy endpoints; `web=(3, "unhealthy")` → 3 unhealthy ones."""
    built = []
    for name, spec in sorted(services.items()):
        count, health = spec if isinstance(spec, tuple) else (spec, "healthy")
        endpoints = tuple(Endpoint(f"{name}{i}", "127.0.0.1", 1000 + i, health=health) for i in range(count))
        built.append(Service(name, {}, endpoints))
    return Catalog(1, tuple(built))


CASES = {
    "start-up-is-allowed": (None, catalog(), Guard(), 0, True, ""),
    "growth": (catalog(web=2), catalog(web=5, api=1), Guard(), 0, True, ""),
    "small-loss": (catalog(web=4, api=4), catalog(web=3, api=2), Guard(), 0, True, ""),
    "half-is-not-more-than-half": (catalog(web=2, api=2), catalog(web=1, api=1), Guard(), 0, True, ""),
    "whole-catalog-gone": (catalog(web=3, api=2), catalog(), Guard(), 0, False,
                           "served endpoints would drop from 5 to 0 (more than 50% at once)"),
    "most-endpoints-unhealthy": (catalog(web=10), catalog(web=(10, "unhealthy")), Guard(max_drop=0.9), 0, False,
                                 "served endpoints would drop from 10 to 0"),
    "one-service-to-zero": (catalog(web=10, api=1), catalog(web=10, api=(1, "starting")), Guard(), 0, False,
                            "service api would be left with no served endpoints"),
    "service-deleted": (catalog(web=10, api=1), catalog(web=10), Guard(), 0, False,
                        "service api would be left with no served endpoints"),
    "many-to-zero-listed-briefly": (catalog(a=1, b=1, c=1, d=1, e=1, f=1, g=1, z=40),
                                    catalog(z=40), Guard(), 0, False,
                                    "services a, b, c, d, e and 2 more would be left with no served endpoints"),
    "to-zero-off": (catalog(web=10, api=1), catalog(web=10), Guard(to_zero=False), 0, True, ""),
    "guard-off": (catalog(web=3), catalog(), GUARD_OFF, 0, True, ""),
    "held-long-enough": (catalog(web=3), catalog(), Guard(hold_max=60), 60, True,
                         "served endpoints would drop from 3 to 0 (more than 50% at once); "
                         "applied after holding it 1m"),
    "held-not-long-enough": (catalog(web=3), catalog(), Guard(hold_max=60), 59.9, False, "served endpoints"),
    "hold-forever": (catalog(web=3), catalog(), Guard(hold_max=0), 1e9, False, "served endpoints"),
    "empty-before-is-no-drop": (catalog(web=(2, "starting")), catalog(), Guard(), 0, True, ""),
}


@pytest.mark.parametrize("previous, new, guard, held_for, allowed, reason", CASES.values(), ids=CASES.keys())
def test_check_drop(previous: Catalog | None, new: Catalog, guard: Guard, held_for: float,
                    allowed: bool, reason: str) -> None:
    verdict = check_drop(previous, new, guard, DEFAULT_SERVED_HEALTH, held_for)
    assert verdict.allowed is allowed
    assert verdict.reason.startswith(reason)
    assert bool(verdict.reason) == bool(reason)


def test_served_health_decides_what_counts() -> None:
    before, after = catalog(web=(3, "starting")), catalog()
    assert check_drop(before, after, Guard(), DEFAULT_SERVED_HEALTH).allowed
    assert not check_drop(before, after, Guard(), frozenset({"starting"})).allowed

"""The drop guard: sudden losses are held with a reason; ordinary churn and recoveries pass."""

from __future__ import annotations

import pytest

from lbgen.core.guard import check_drop, check_one_shot
from lbgen.core.quarantine import hold_services
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.settings import GUARD_OFF, Guard


def catalog(specs: tuple[str, ...] = (), **services: int | tuple[int, str]) -> Catalog:
    """`web=3` → web with 3 healthy endpoints; `web=(3, "unhealthy")` → 3 unhealthy ones;
    the services named in `specs` have a spec (a service may be only a spec: `web=0`)."""
    built = []
    for name, spec in sorted(services.items()):
        count, health = spec if isinstance(spec, tuple) else (spec, "healthy")
        endpoints = tuple(Endpoint(f"{name}{i}", "127.0.0.1", 1000 + i, health=health) for i in range(count))
        built.append(Service(name, {"listen": 80} if name in specs else {}, endpoints))
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
                         "service web would be left with no served endpoints; applied after holding it 1m"),
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


HOLDS = {
    "only-the-emptied-service": (catalog(web=10, api=1), catalog(web=12, api=0), {"api"}),
    "every-service-that-lost-some": (catalog(web=4, api=4, db=2), catalog(web=1, api=1, db=2), {"web", "api"}),
    "spec-deleted-is-gone-on-purpose": (catalog(("web", "api"), web=10, api=3), catalog(("web",), web=10), set()),
    "spec-deleted-but-endpoints-left": (catalog(("web", "api"), web=10, api=3), catalog(("web",), web=10, api=3),
                                        set()),
    "every-spec-gone-is-a-lost-registry": (catalog(("web", "api"), web=1, api=1), catalog(), {"web", "api"}),
    "endpoints-gone-spec-kept": (catalog(("web", "api"), web=10, api=3), catalog(("web", "api"), web=10, api=0),
                                 {"api"}),
}


@pytest.mark.parametrize("previous, new, held", HOLDS.values(), ids=HOLDS.keys())
def test_only_the_services_that_dropped_are_held(previous: Catalog, new: Catalog, held: set[str]) -> None:
    verdict = check_drop(previous, new, Guard(), DEFAULT_SERVED_HEALTH)
    assert (verdict.allowed, set(verdict.held)) == (not held, held)


def test_a_held_service_is_rendered_as_last_applied_and_the_rest_moves_on() -> None:
    previous, new = catalog(web=2, api=1), catalog(web=3, api=0, db=1)
    mixed = hold_services(new, previous, {"api"})
    assert mixed.revision == new.revision
    assert [(s.name, len(s.all_endpoints)) for s in mixed.services] == [("api", 1), ("db", 1), ("web", 3)]
    assert hold_services(new, catalog(web=1), {"api"}).service("api") is None


ONE_SHOT = {
    "known-state-drop": (catalog(web=3), True, catalog(), False),
    "known-state-fine": (catalog(web=3), True, catalog(web=3), True),
    "no-state-empty-registry-over-a-live-file": (None, True, catalog(), False),
    "no-state-only-unserved-endpoints": (None, True, catalog(web=(2, "unhealthy")), False),
    "no-state-no-live-file": (None, False, catalog(), True),
    "no-state-some-served": (None, True, catalog(web=1), True),
}


@pytest.mark.parametrize("previous, live, new, allowed", ONE_SHOT.values(), ids=ONE_SHOT.keys())
def test_the_one_shot_guard(previous: Catalog | None, live: bool, new: Catalog, allowed: bool) -> None:
    verdict = check_one_shot(previous, live, new, Guard(), DEFAULT_SERVED_HEALTH)
    assert verdict.allowed is allowed and bool(verdict.reason) is not allowed
    assert check_one_shot(previous, live, new, GUARD_OFF, DEFAULT_SERVED_HEALTH).allowed

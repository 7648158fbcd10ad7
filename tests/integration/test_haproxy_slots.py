"""HAProxy slots stay put (issue 11), against a real HAProxy: with random endpoint ids, endpoints
leave and join and every surviving one keeps its server slot (read back over the stats socket),
each change through the Runtime API, no reload."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from tests.support.haproxy_node import TEMPLATE, generation, node_applier, node_target, servers
from tests.support.lb import Backend, ConfFor, Lb

pytestmark = pytest.mark.integration


def catalog(port: int, endpoints: dict[str, int]) -> Catalog:
    """Service `web` listening on `port`; endpoints as random id → 127.0.0.1 backend port."""
    registered = tuple(Endpoint(i, "127.0.0.1", p) for i, p in sorted(endpoints.items()))
    return Catalog(1, (Service("web", {"listen": port}, registered),))


def slot_by_port(lb: Lb) -> dict[int, str]:
    return {s.port: name for name, s in servers(lb.dir).items() if not s.admin & 1}


def test_surviving_endpoints_keep_their_slots_through_the_runtime_api(
    haproxy_lb: Callable[[ConfFor], Lb], backend: Callable[[str], Backend],
) -> None:
    rng = random.Random(1107)
    ports = [backend(f"b{i}").port for i in range(4)]
    alive = {f"{rng.getrandbits(64):016x}": p for p in ports[:3]}
    renderer = BoundedRenderer()
    lb = haproxy_lb(lambda lb_dir, port: renderer.render(
        TEMPLATE, catalog(port, alive), node_target(lb_dir), DEFAULT_SERVED_HEALTH))
    target, applier, before = node_target(lb.dir), node_applier(), generation(lb.dir)
    for step in range(12):  # 4 slots: one leaves, then one joins under a new random id
        was = slot_by_port(lb)
        if step % 2 == 0:
            alive.pop(rng.choice(sorted(alive)))
        else:
            alive[f"{rng.getrandbits(64):016x}"] = next(p for p in ports if p not in alive.values())
        text = renderer.render(TEMPLATE, catalog(lb.port, alive), target, DEFAULT_SERVED_HEALTH)
        [result] = applier.apply([target], {"haproxy": text})
        assert (result.ok, result.method) == (True, "runtime"), (step, result.error, result.fallback)
        now = slot_by_port(lb)
        assert sorted(now) == sorted(alive.values()), step
        assert {p: now[p] for p in was if p in now} == {p: s for p, s in was.items() if p in now}, step
    assert generation(lb.dir) == before, "no reload: every change went through the runtime API"

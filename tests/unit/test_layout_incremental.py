"""The incremental layout (issue 13) against the whole regrouping it replaced, over random change
sequences: one port or several, hosts added and removed, services moved between ports and modes,
clashing routes; and unchanged servers keep their objects."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings, strategies as st

from lbgen.core.layout import layout, service_views
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Endpoint, Service
from lbgen.core.views import ServiceView
from tests.unit.fragment_cases import catalog_of, catalogs, changes

Plain = tuple[Any, ...]


def reference(views: tuple[ServiceView, ...]) -> Plain:
    """The layout as plain values, regrouped from scratch (the algorithm before issue 13)."""
    by_port: dict[int, list[ServiceView]] = defaultdict(list)
    for view in views:
        if "listen" in view.spec:
            by_port[int(view.spec["listen"])].append(view)
    http, tcp, conflicts = [], [], []
    for port in sorted(by_port):
        group = by_port[port]
        if group[0].mode == "tcp":
            tcp.append((port, group[0].name))
            conflicts += [f"{s.name}: port {port} is taken by tcp service {group[0].name}" for s in group[1:]]
            continue
        first = group[0].name
        conflicts += [f"{s.name}: port {port} is taken by http service {first}" for s in group if s.mode == "tcp"]
        hosts, clashes = _hosts(port, [s for s in group if s.mode == "http"])
        http.append((port, hosts))
        conflicts += clashes
    return tuple(http), tuple(tcp), tuple(conflicts)


def _hosts(port: int, services: list[ServiceView]) -> tuple[Plain, list[str]]:
    routes: dict[str, dict[str, ServiceView]] = defaultdict(dict)
    clashes = []
    for service in services:
        path = str(service.spec.get("path", "/")).rstrip("/") or "/"
        for host in service.spec.get("hosts") or [""]:
            owner = routes[host.lower()].setdefault(path, service)
            if owner is not service:
                clashes.append(f"{service.name}: route {host or 'any host'}:{port}{path} is taken by {owner.name}")
    routes.setdefault("", {})
    shared: dict[Plain, list[str]] = defaultdict(list)
    for host, paths in routes.items():
        if host:
            shared[tuple((p, s.name) for p, s in sorted(paths.items()))].append(host)
    named = [(tuple(sorted(names)), _routes(routes[names[0]])) for names in sorted(shared.values(), key=min)]
    return (*named, ((), _routes(routes[""]))), clashes


def _routes(paths: dict[str, ServiceView]) -> Plain:
    return tuple((p, id(s)) for p, s in sorted(paths.items(), key=lambda item: (-len(item[0]), item[0])))


def plain(views: tuple[ServiceView, ...]) -> Plain:
    lb = layout(views)
    http = tuple((lst.port, tuple((v.names, tuple((r.path, id(r.service)) for r in v.routes)) for v in lst.hosts))
                 for lst in lb.http)
    return http, tuple((lst.port, lst.service.name) for lst in lb.tcp), tuple(lb.conflicts)


# Unchanged sites beside the random ones: with few servers a port re-sorts them all, with many it
# moves only the changed ones (both ways are checked).
FILLERS = {f"f{i:02d}": Service(f"f{i:02d}", {"listen": 8080, "hosts": [f"f{i:02d}.test"]}) for i in range(24)}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_incremental_layout_equals_a_whole_regrouping(data: st.DataObject) -> None:
    services = data.draw(catalogs())
    fillers = FILLERS if data.draw(st.booleans()) else {}
    for revision in range(1, data.draw(st.integers(2, 8))):
        views = service_views(catalog_of({**services, **fillers}, revision), DEFAULT_SERVED_HEALTH)
        assert plain(views) == reference(views)
        services = data.draw(changes(services))


def _site(i: int, port: int = 80, weight: int = 1, hosts: tuple[str, ...] | None = None) -> Service:
    spec = {"listen": port, "hosts": list(hosts or (f"s{i}.test",))}
    return Service(f"s{i:03d}", spec, (Endpoint(f"e{i}", "10.0.0.1", 1000, weight=weight, health="healthy"),))


def _views(services: dict[str, Service], revision: int) -> tuple[ServiceView, ...]:
    return service_views(catalog_of(services, revision), DEFAULT_SERVED_HEALTH)


def test_one_changed_site_leaves_the_other_servers_of_its_port_the_same_objects() -> None:
    sites = {s.name: s for s in map(_site, range(50))}
    before = layout(_views(sites, 1)).http[0].hosts
    sites["s007"] = _site(7, weight=2)
    after = layout(_views(sites, 2)).http[0].hosts
    assert [v.names for v in after] == [v.names for v in before]
    assert [a.names for a, b in zip(before, after) if a is not b] == [("s7.test",)]


def test_moves_between_ports_and_shared_hosts_match_a_whole_regrouping() -> None:
    sites = {s.name: s for s in (_site(i, hosts=("shared.test",) if i % 5 == 0 else None) for i in range(30))}
    steps: list[dict[str, Service | None]] = [
        {"s003": _site(3, port=81)},  # moved to another port
        {"s000": _site(0, hosts=("s0.test",))},  # leaves the shared host
        {"s099": _site(99, hosts=("shared.test", "S1.test"))},  # clashes on two hosts
        {"s001": None},  # the owner of s1.test goes: s099 takes it
        {"s004": Service("s004", {"listen": 80, "mode": "tcp"}, ())},  # http port: reported
        {"s000": Service("s000", {"listen": 80, "mode": "tcp"}, ())},  # first by name: the port turns tcp
        {"s000": None},  # and back to http
    ]
    layout(_views(sites, 1))
    for revision, step in enumerate(steps, 2):
        for name, service in step.items():
            sites.pop(name, None)
            sites.update({name: service} if service else {})
        views = _views(sites, revision)
        assert plain(views) == reference(views), step

"""Layout: ports, host names, paths and HAProxy slots are decided in Python, conflicts reported."""

from __future__ import annotations

from typing import Any

import pytest

from lbgen.core.kinds.haproxy.rules import default_backend, haproxy_rules
from lbgen.core.kinds.haproxy.slots import Slot, slot_count, slots
from lbgen.core.layout import layout, service_views
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service


def views(**specs: dict[str, Any]) -> tuple:
    endpoints = (Endpoint("e1", "127.0.0.1", 1000),)
    services = tuple(Service(name, spec, endpoints) for name, spec in sorted(specs.items()))
    return service_views(Catalog(1, services), DEFAULT_SERVED_HEALTH)


def routes_of(vhost: Any) -> list[tuple[str, str]]:
    return [(r.path, r.service.name) for r in vhost.routes]


def test_services_sharing_a_port_become_hosts_and_locations() -> None:
    lb = layout(views(
        web={"listen": 80, "hosts": ["a.test", "b.test"]},
        api={"listen": 80, "hosts": ["a.test"], "path": "/api/"},
        other={"listen": 80, "hosts": ["B.test"], "path": "/other"},
        fallback={"listen": 80},
        internal={},
    ))
    assert [listener.port for listener in lb.http] == [80] and lb.tcp == () and lb.conflicts == ()
    hosts = {vhost.names: routes_of(vhost) for vhost in lb.http[0].hosts}
    assert hosts == {
        ("a.test",): [("/api", "api"), ("/", "web")],
        ("b.test",): [("/other", "other"), ("/", "web")],
        (): [("/", "fallback")],
    }
    assert lb.http[0].hosts[-1].names == ()  # the default server comes last


def test_hosts_with_identical_routes_share_one_server() -> None:
    lb = layout(views(web={"listen": 80, "hosts": ["b.test", "a.test", "*.c.test"]}))
    assert [v.names for v in lb.http[0].hosts] == [("*.c.test", "a.test", "b.test"), ()]
    assert lb.http[0].hosts[-1].routes == ()  # no host-less service: the default server returns 404


@pytest.mark.parametrize("specs, conflict", [
    ({"a": {"listen": 80, "hosts": ["x.test"]}, "b": {"listen": 80, "hosts": ["x.test"], "path": "/"}},
     "b: route x.test:80/ is taken by a"),
    ({"a": {"listen": 80, "path": "/api"}, "b": {"listen": 80, "path": "/api/"}},
     "b: route any host:80/api is taken by a"),
    ({"a": {"listen": 5432, "mode": "tcp"}, "b": {"listen": 5432}}, "b: port 5432 is taken by tcp service a"),
    ({"a": {"listen": 80}, "b": {"listen": 80, "mode": "tcp"}}, "b: port 80 is taken by http service a"),
    ({"a": {"listen": 5432, "mode": "tcp"}, "b": {"listen": 5432, "mode": "tcp"}},
     "b: port 5432 is taken by tcp service a"),
], ids=["same-host-and-path", "same-path-trailing-slash", "tcp-port-first", "http-port-first", "two-tcp"])
def test_conflicts_keep_the_first_service_by_name(specs: dict, conflict: str) -> None:
    lb = layout(views(**specs))
    assert lb.conflicts == (conflict,)
    http = {r.service.name for listener in lb.http for v in listener.hosts for r in v.routes}
    assert http | {listener.service.name for listener in lb.tcp} == {"a"}


def test_tcp_listener_carries_its_service() -> None:
    lb = layout(views(db={"listen": 5432, "mode": "tcp"}))
    assert [(t.port, t.mode, t.service.name) for t in lb.tcp] == [(5432, "tcp", "db")]


def test_haproxy_rules_match_in_nginx_order() -> None:
    lb = layout(views(
        site={"listen": 80, "hosts": ["a.test"]},
        wild={"listen": 80, "hosts": ["*.a.test"]},
        deeper={"listen": 80, "hosts": ["*.x.a.test"]},
        api={"listen": 80, "hosts": ["a.test"], "path": "/api"},
        docs={"listen": 80, "path": "/docs"},
        root={"listen": 80},
    ))
    rules = [(r.backend, r.condition) for r in haproxy_rules(lb.http[0])]
    assert rules == [
        ("api", "{ var(txn.host) -m str a.test } { path /api } || { var(txn.host) -m str a.test } { path_beg /api/ }"),
        ("site", "{ var(txn.host) -m str a.test }"),
        ("deeper", "{ var(txn.host) -m end .x.a.test }"),
        ("wild", "{ var(txn.host) -m end .a.test }"),
        ("docs", "{ path /docs } || { path_beg /docs/ }"),
    ]
    assert default_backend(lb.http[0]) == "root"


def test_no_default_backend_without_a_hostless_root() -> None:
    lb = layout(views(site={"listen": 80, "hosts": ["a.test"]}, docs={"listen": 80, "path": "/docs"}))
    assert default_backend(lb.http[0]) is None


@pytest.mark.parametrize("endpoints, minimum, count", [
    (0, 4, 4), (3, 4, 4), (4, 4, 4), (5, 4, 8), (9, 4, 16), (100, 4, 128), (3, 1, 4), (0, 0, 1), (17, 32, 32),
])
def test_slot_count_is_a_power_of_two_with_a_floor(endpoints: int, minimum: int, count: int) -> None:
    assert slot_count(endpoints, minimum) == count


def slot_view(*endpoints: Endpoint) -> Any:
    (view,) = service_views(Catalog(1, (Service("web", {}, endpoints),)), DEFAULT_SERVED_HEALTH)
    return view


def test_slots_hold_every_endpoint_once_and_disable_the_unserved() -> None:
    endpoints = (  # crc32(id) % 8 → home slots a:3 b:1 c:7 d:4 e:2 (zero-based)
        Endpoint("a", "10.0.0.1", 80, weight=3, health="healthy"),
        Endpoint("b", "10.0.0.2", 80, health="unhealthy"),
        Endpoint("c", "::1", 81, weight=0),
        Endpoint("d", "10.0.0.4", 82, health="none"),
        Endpoint("e", "10.0.0.5", 83, health="starting"),
    )
    free = lambda n: Slot(f"slot{n}", "127.0.0.1", 1, 1, False, "", "127.0.0.1:1")  # noqa: E731
    assert slots(slot_view(*endpoints), 4) == (
        free(1),
        Slot("slot2", "10.0.0.2", 80, 1, False, "b", "10.0.0.2:80"),
        Slot("slot3", "10.0.0.5", 83, 1, False, "e", "10.0.0.5:83"),
        Slot("slot4", "10.0.0.1", 80, 3, True, "a", "10.0.0.1:80"),
        Slot("slot5", "10.0.0.4", 82, 1, True, "d", "10.0.0.4:82"),
        free(6),
        free(7),
        Slot("slot8", "::1", 81, 0, False, "c", "[::1]:81"),
    )


def test_adding_or_removing_an_endpoint_leaves_the_others_in_their_slots() -> None:
    endpoints = [Endpoint(f"web.{i}", "10.0.0.1", 8000 + i) for i in range(1, 6)]
    before = {s.endpoint_id: s.name for s in slots(slot_view(*endpoints), 8)}
    after = {s.endpoint_id: s.name for s in slots(slot_view(*endpoints[:2], *endpoints[3:]), 8)}
    assert {k: v for k, v in before.items() if k not in ("web.3", "")} == {k: v for k, v in after.items() if k}
    grown = {s.endpoint_id: s.name for s in slots(slot_view(*endpoints, Endpoint("web.6", "10.0.0.1", 1)), 8)}
    assert {k: v for k, v in grown.items() if k not in ("web.6", "")} == {k: v for k, v in before.items() if k}


def test_colliding_endpoints_take_the_next_free_slot_in_id_order() -> None:
    # crc32 % 4: a → 3, c → 3 (collides, wraps to 0), d → 0 (taken, moves to 1)
    placed = slots(slot_view(*(Endpoint(i, "10.0.0.1", 80) for i in "acd")), 4)
    assert [s.endpoint_id for s in placed] == ["c", "d", "", "a"]


def test_unchanged_services_reuse_their_views_and_slots() -> None:
    same = Service("same", {}, (Endpoint("a", "127.0.0.1", 1),))
    first = service_views(Catalog(1, (same, Service("other", {}, ()))), DEFAULT_SERVED_HEALTH)
    first_slots = slots(first[0])
    changed = Service("other", {}, (Endpoint("b", "127.0.0.1", 2),))
    second = service_views(Catalog(2, (same, changed)), DEFAULT_SERVED_HEALTH)
    assert second[0] is first[0] and slots(second[0]) is first_slots
    assert second[1] is not first[1] and [e.id for e in second[1].endpoints] == ["b"]
    third = service_views(Catalog(3, (same,)), frozenset({"healthy"}))
    assert third[0] is not first[0] and third[0].endpoints == ()


def test_targets_of_one_pass_share_the_memo_across_passes() -> None:
    web = Service("web", {}, (Endpoint("a", "127.0.0.1", 1),))
    first_pass = Catalog(1, (web,))
    (view,) = service_views(first_pass, DEFAULT_SERVED_HEALTH)  # target 1 (no slots used)
    first_slots = slots(service_views(first_pass, DEFAULT_SERVED_HEALTH)[0])  # target 2
    second_pass = Catalog(2, (web, Service("api", {}, ())))
    service_views(second_pass, DEFAULT_SERVED_HEALTH)  # target 1 again: must not forget the slots
    assert slots(service_views(second_pass, DEFAULT_SERVED_HEALTH)[0]) is first_slots
    assert service_views(second_pass, DEFAULT_SERVED_HEALTH)[0] is view


@pytest.mark.parametrize("hosts", [
    [f"h{i}.test" for i in range(64)],
    [f"h{i}.{'x' * 60}.{'y' * 60}.test" for i in range(32)] + [f"*.w{i}.{'z' * 60}.test" for i in range(32)],
], ids=["many-short", "long-exact-and-wildcard"])
def test_haproxy_rules_fit_haproxys_line_limits_and_keep_every_host(hosts: list[str]) -> None:
    """HAProxy refuses a line of more than 64 words or 2,048 characters; a path rule repeats its hosts."""
    lb = layout(views(wide={"listen": 80, "hosts": hosts, "path": "/api"}))
    rules = haproxy_rules(lb.http[0])
    lines = [f"    use_backend {r.backend} if {r.condition}" for r in rules]
    assert all(len(line.split()) <= 64 and len(line) <= 2048 for line in lines), max(lines, key=len)
    named = [word for r in rules for word in str(r.condition).split() if "." in word and "/" not in word and "(" not in word]
    assert sorted(set(named)) == sorted(h.removeprefix("*") for h in hosts)


def test_views_are_reused_by_identity_when_services_come_and_go() -> None:
    a, b, c = (Service(n, {}, (Endpoint("e", "127.0.0.1", 1),)) for n in "abc")
    first = service_views(Catalog(1, (a, b)), DEFAULT_SERVED_HEALTH)
    grown = service_views(Catalog(2, (a, b, c)), DEFAULT_SERVED_HEALTH)
    assert grown[0] is first[0] and grown[1] is first[1] and grown[2].name == "c"
    b2 = Service("b", {}, ())
    unsorted = service_views(Catalog(3, (c, b2, a)), DEFAULT_SERVED_HEALTH)
    assert [v.name for v in unsorted] == ["c", "b", "a"] and unsorted[1].endpoints == ()
    shrunk = service_views(Catalog(4, (a, c)), DEFAULT_SERVED_HEALTH)
    assert shrunk[0] is unsorted[2] and shrunk[1] is unsorted[0]

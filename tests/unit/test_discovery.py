"""Discovery: containers + labels → desired endpoints, and desired vs registered → a plan."""

from __future__ import annotations

import json
from typing import Any

from msgspec.structs import replace
import pytest

from lbgen.core.discovery import (
    drained,
    DiscoveryOptions,
    discover,
    endpoint_id,
)
from lbgen.core.registration import owned_keys, plan_registration
from lbgen.core.model import Endpoint
from lbgen.core.schema import encode_endpoint
from lbgen.errors import InvalidValue
from lbgen.core.values import ContainerInfo, KeyValue, PortBinding

PREFIX = "/lbgen"
OPTIONS = DiscoveryOptions(node="host-a", host_ip="10.0.0.5")
CID = "c0ffee" + "0" * 58


def container(**overrides: Any) -> ContainerInfo:
    base = ContainerInfo(
        id=CID,
        name="/web-1",
        image="registry.example:5000/team/web:1.2",
        state="running",
        health="none",
        labels={},
        env={},
        network_mode="bridge",
        bindings=(PortBinding(80, "tcp", "0.0.0.0", 32768),),
    )
    return replace(base, **overrides)


def endpoints(c: ContainerInfo, options: DiscoveryOptions = OPTIONS) -> dict[str, tuple[str, int, str]]:
    """registry key → (address, port, health), asserting nothing was rejected."""
    found = discover([c], options, PREFIX)
    assert found.rejects == ()
    return {k: (e.address, e.port, e.health) for k, e in found.endpoints.items()}


def rejected_label(c: ContainerInfo, options: DiscoveryOptions = OPTIONS) -> str:
    found = discover([c], options, PREFIX)
    assert not found.endpoints
    assert len(found.rejects) == 1, found.rejects
    assert "web-1" in str(found.rejects[0]) and CID[:12] in str(found.rejects[0])
    return found.rejects[0].label


KEY = "/lbgen/services/web/endpoints/host-a.web-1.80"

ADDRESS_CASES = [
    ("published-any-ip", {}, {KEY: ("10.0.0.5", 32768, "none")}),
    (
        "published-loopback",
        {"bindings": (PortBinding(80, "tcp", "127.0.0.1", 8081),)},
        {KEY: ("127.0.0.1", 8081, "none")},
    ),
    (
        "ipv4-preferred-over-ipv6-binding",
        {"bindings": (PortBinding(80, "tcp", "::", 32768), PortBinding(80, "tcp", "0.0.0.0", 32768))},
        {KEY: ("10.0.0.5", 32768, "none")},
    ),
    (
        "host-network-declared-port",
        {"network_mode": "host", "bindings": (), "labels": {"lbgen.service": "web", "lbgen.port": "80"}},
        {KEY: ("10.0.0.5", 80, "none")},
    ),
    (
        "host-network-exposed-port",
        {"network_mode": "host", "bindings": (), "exposed_ports": (80,)},
        {KEY: ("10.0.0.5", 80, "none")},
    ),
    (
        "network-label-uses-container-ip",
        {"labels": {"lbgen.service": "web", "lbgen.network": "backend"}, "networks": {"backend": "10.9.0.7"}},
        {KEY: ("10.9.0.7", 80, "none")},
    ),
    ("health-passed-through", {"health": "starting"}, {KEY: ("10.0.0.5", 32768, "starting")}),
    ("unknown-health-not-served", {"health": "weird"}, {KEY: ("10.0.0.5", 32768, "starting")}),
    ("stopped-container", {"state": "exited"}, {}),
    (
        "udp-binding-ignored",
        {"labels": {}, "env": {"SERVICE_NAME": "web"}, "bindings": (PortBinding(80, "udp", "0.0.0.0", 53),)},
        {},
    ),
]


@pytest.mark.parametrize("overrides,expected", [c[1:] for c in ADDRESS_CASES], ids=[c[0] for c in ADDRESS_CASES])
def test_address_rules(overrides: dict[str, Any], expected: dict[str, tuple[str, int, str]]) -> None:
    labels = overrides.pop("labels", {"lbgen.service": "web"})
    assert endpoints(container(labels=labels, **overrides)) == expected


def test_internal_flag_applies_only_to_attached_containers() -> None:
    options = replace(OPTIONS, internal_network="backend")
    labels = {"lbgen.service": "web"}
    on = container(labels=labels, networks={"backend": "10.9.0.7"})
    off = container(labels=labels, networks={"other": "10.8.0.2"})
    assert endpoints(on, options) == {KEY: ("10.9.0.7", 80, "none")}
    assert endpoints(off, options) == {KEY: ("10.0.0.5", 32768, "none")}


WEB = ["web/endpoints/host-a.web-1.80"]
SERVICE_CASES = [
    ("opt-in-without-labels-registers-nothing", {}, {}, OPTIONS, []),
    ("lbgen-service", {"lbgen.service": "web"}, {}, OPTIONS, ["web/endpoints/host-a.web-1.80"]),
    ("registrator-env-name", {}, {"SERVICE_NAME": "web"}, OPTIONS, ["web/endpoints/host-a.web-1.80"]),
    ("label-beats-env", {"lbgen.service": "api"}, {"SERVICE_NAME": "web"}, OPTIONS, ["api/endpoints/host-a.web-1.80"]),
    ("all-uses-image-name", {}, {}, replace(OPTIONS, register_all=True), ["web/endpoints/host-a.web-1.80"]),
    ("service-ignore-env", {}, {"SERVICE_NAME": "web", "SERVICE_IGNORE": "true"}, OPTIONS, []),
    ("service-ignore-false-word", {"lbgen.service": "web"}, {"SERVICE_IGNORE": "false"}, OPTIONS, WEB),
    ("lbgen-ignore", {"lbgen.service": "web", "lbgen.ignore": "1"}, {}, OPTIONS, []),
    ("other-tools-lbgen-labels-ignored", {"lbgen.service": "web", "lbgen.deploy.hash": "x y"}, {}, OPTIONS, WEB),
]


@pytest.mark.parametrize("labels,env,options,keys", [c[1:] for c in SERVICE_CASES], ids=[c[0] for c in SERVICE_CASES])
def test_service_naming(
    labels: dict[str, str], env: dict[str, str], options: DiscoveryOptions, keys: list[str]
) -> None:
    found = endpoints(container(labels=labels, env=env), options)
    assert sorted(found) == [f"{PREFIX}/services/{k}" for k in keys]


TWO_PORTS = (PortBinding(80, "tcp", "0.0.0.0", 32768), PortBinding(443, "tcp", "0.0.0.0", 32769))
MULTI_PORT_CASES = [
    (
        "per-port-labels",
        {"lbgen.80.service": "web", "lbgen.443.service": "web-tls"},
        {},
        {"web": 32768, "web-tls": 32769},
    ),
    ("lbgen-port-picks-one", {"lbgen.service": "web", "lbgen.port": "443"}, {}, {"web": 32769}),
    ("registrator-suffixes-ports", {}, {"SERVICE_NAME": "web"}, {"web-80": 32768, "web-443": 32769}),
    (
        "registrator-port-name-and-ignore",
        {},
        {"SERVICE_NAME": "web", "SERVICE_443_NAME": "tls", "SERVICE_80_IGNORE": "yes"},
        {"tls": 32769},
    ),
]


@pytest.mark.parametrize("labels,env,expected", [c[1:] for c in MULTI_PORT_CASES], ids=[c[0] for c in MULTI_PORT_CASES])
def test_several_ports(labels: dict[str, str], env: dict[str, str], expected: dict[str, int]) -> None:
    found = discover([container(labels=labels, env=env, bindings=TWO_PORTS)], OPTIONS, PREFIX)
    assert found.rejects == ()
    assert {k.split("/")[3]: e.port for k, e in found.endpoints.items()} == expected


def test_weight_tags_meta_and_value_fields() -> None:
    labels = {
        "lbgen.80.service": "web",
        "lbgen.443.service": "web-tls",
        "lbgen.weight": "5",
        "lbgen.443.weight": "0",
        "lbgen.tags": "blue, canary,",
        "lbgen.meta.zone": "eu-1",
    }
    found = discover([container(labels=labels, bindings=TWO_PORTS, health="healthy")], OPTIONS, PREFIX)
    web = found.endpoints["/lbgen/services/web/endpoints/host-a.web-1.80"]
    tls = found.endpoints["/lbgen/services/web-tls/endpoints/host-a.web-1.443"]
    assert web == Endpoint(
        id="host-a.web-1.80", address="10.0.0.5", port=32768, weight=5, node="host-a",
        container=CID, health="healthy", tags=("blue", "canary"), meta={"zone": "eu-1"},
    )
    assert (tls.weight, tls.is_served()) == (0, False)


REJECT_CASES = [
    ("non-numeric-port", {"lbgen.service": "web", "lbgen.port": "http"}, {}, "lbgen.port"),
    ("port-out-of-range", {"lbgen.service": "web", "lbgen.port": "70000"}, {}, "lbgen.port"),
    ("unpublished-port", {"lbgen.service": "web", "lbgen.port": "8080"}, {}, "lbgen.port"),
    ("non-numeric-per-port", {"lbgen.http.service": "web"}, {}, "lbgen.http.service"),
    ("unknown-per-port", {"lbgen.9000.service": "web"}, {}, "lbgen.9000.service"),
    ("bad-service-name", {"lbgen.service": "web;evil"}, {}, "lbgen.service"),
    ("bad-registrator-name", {}, {"SERVICE_NAME": "we b"}, "SERVICE_NAME"),
    ("bad-weight", {"lbgen.service": "web", "lbgen.weight": "-1"}, {}, "lbgen.weight"),
    ("weight-too-big", {"lbgen.service": "web", "lbgen.weight": "1000"}, {}, "lbgen.weight"),
    ("bad-tag", {"lbgen.service": "web", "lbgen.tags": "a,b{c"}, {}, "lbgen.tags"),
    ("bad-meta-value", {"lbgen.service": "web", "lbgen.meta.x": "a b"}, {}, "lbgen.meta.x"),
    ("port-without-name", {"lbgen.port": "80"}, {}, "lbgen.port"),
    ("missing-network", {"lbgen.service": "web", "lbgen.network": "nope"}, {}, "lbgen.network"),
    ("bad-network-ip", {"lbgen.service": "web", "lbgen.network": "odd"}, {}, "port 80"),
]


@pytest.mark.parametrize("labels,env,label", [c[1:] for c in REJECT_CASES], ids=[c[0] for c in REJECT_CASES])
def test_bad_labels_skip_the_container(labels: dict[str, str], env: dict[str, str], label: str) -> None:
    assert rejected_label(container(labels=labels, env=env, networks={"odd": "not;an-ip"})) == label


@pytest.mark.parametrize("bindings", [TWO_PORTS, ()], ids=["two-ports", "no-port"])
def test_lbgen_service_needs_lbgen_port_unless_one_port(bindings: tuple[PortBinding, ...]) -> None:
    assert rejected_label(container(labels={"lbgen.service": "web"}, bindings=bindings)) == "lbgen.service"


def test_one_bad_container_leaves_the_others_alone() -> None:
    good = container(id="a" * 64, name="/good", labels={"lbgen.service": "web"})
    bad = container(id="b" * 64, name="/bad", labels={"lbgen.service": "web", "lbgen.port": "x"})
    found = discover([bad, good], OPTIONS, PREFIX)
    assert list(found.endpoints) == ["/lbgen/services/web/endpoints/host-a.good.80"]
    assert [(r.container, r.label) for r in found.rejects] == [("bad", "lbgen.port")]


@pytest.mark.parametrize(
    "name,expected",
    [("/web-1", "host-a.web-1.80"), ("/we b@1", "host-a.we-b-1.80"), ("/---", "host-a.c0ffee000000.80"),
     ("/" + "x" * 130, "host-a.c0ffee000000.80")],
    ids=["plain", "sanitized", "nothing-left", "too-long"],
)
def test_endpoint_id_is_stable_and_safe(name: str, expected: str) -> None:
    assert endpoint_id("host-a", container(name=name), 80) == expected


@pytest.mark.parametrize(
    "field,value,message",
    [("node", "a b", "node"), ("host_ip", "host-a", "host IP"), ("internal_network", "x;y", "internal network")],
)
def test_bad_options_are_refused(field: str, value: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        replace(OPTIONS, **{field: value})  # type: ignore[arg-type]


# --- plan ----------------------------------------------------------------------------------------


def ep(eid: str, node: str = "host-a", port: int = 80) -> Endpoint:
    return Endpoint(id=eid, address="10.0.0.5", port=port, node=node, container=CID)


def kv(key: str, endpoint: Endpoint | None = None, lease: int = 7, raw: bytes | None = None) -> KeyValue:
    value = raw if raw is not None else encode_endpoint(endpoint)  # type: ignore[arg-type]
    return KeyValue(key, value, mod_revision=1, lease=lease)


K1 = "/lbgen/services/web/endpoints/host-a.one.80"
K2 = "/lbgen/services/web/endpoints/host-a.two.80"
KB = "/lbgen/services/web/endpoints/host-b.one.80"


def test_plan_puts_new_and_changed_and_deletes_extras() -> None:
    desired = {K1: ep("host-a.one.80", port=81)}
    registered = [kv(K1, ep("host-a.one.80")), kv(K2, ep("host-a.two.80"))]
    result = plan_registration(desired, registered, PREFIX, "host-a", lease=7)
    assert result.puts == ((K1, encode_endpoint(desired[K1])),)
    assert result.deletes == (K2,)


def test_plan_is_empty_when_nothing_differs() -> None:
    desired = {K1: ep("host-a.one.80")}
    assert plan_registration(desired, [kv(K1, desired[K1])], PREFIX, "host-a", lease=7).empty


def test_plan_moves_keys_to_the_current_lease() -> None:
    desired = {K1: ep("host-a.one.80")}
    result = plan_registration(desired, [kv(K1, desired[K1], lease=3)], PREFIX, "host-a", lease=7)
    assert [k for k, _ in result.puts] == [K1]


def test_plan_never_touches_another_nodes_keys() -> None:
    other = kv(KB, ep("host-b.one.80", node="host-b"))
    squatted = kv(K2, ep("host-a.two.80", node="host-b"))  # our id pattern, their value
    junk = kv("/lbgen/services/web/endpoints/host-a.junk.80", raw=b"not json")
    desired = {K2: ep("host-a.two.80")}
    result = plan_registration(desired, [other, squatted, junk], PREFIX, "host-a", lease=7)
    assert (result.puts, result.deletes, result.conflicts) == ((), (), (K2,))


def test_owned_keys_ignores_specs_and_foreign_prefixes() -> None:
    items = [
        kv(K1, ep("host-a.one.80")),
        kv("/lbgen/services/web/spec", raw=json.dumps({"node": "host-a"}).encode()),
        kv("/other/services/web/endpoints/host-a.one.80", ep("host-a.one.80")),
    ]
    assert list(owned_keys(items, PREFIX, "host-a")) == [K1]


def test_drained_endpoints_get_weight_0_and_others_keep_theirs() -> None:
    a = Endpoint(id="n.a.80", address="127.0.0.1", port=80, weight=3)
    b = Endpoint(id="n.b.80", address="127.0.0.1", port=81, weight=2)
    result = drained({"ka": a, "kb": b}, ["n.a.80", "n.unknown.80"])
    assert (result["ka"].weight, result["kb"].weight) == (0, 2)

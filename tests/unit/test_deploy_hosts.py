"""Deploy specs with `hosts:`: host and placement validation, stable placement, per-host plans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.core.deploy_hosts import assign, parse_placement
from lbgen.core.deploy_plan import plan_deploy
from lbgen.core.deploy_spec import DeploySpec, parse_deploy_spec
from lbgen.errors import ConfigError
from tests.unit.deploy_fakes import info

HOSTS = {
    "host-a": {"docker": "unix:///run/a/docker.sock", "address": "127.0.0.2", "bind": "127.0.0.2"},
    "host-b": {"docker": "tcp://10.0.0.3:2376", "address": "127.0.0.3", "node": "b-node",
               "tls": {"ca": "/etc/lbgen/ca.pem", "cert": "/etc/lbgen/cert.pem", "key": "/etc/lbgen/key.pem"}},
}
PROPERTY = settings(max_examples=150, deadline=None)


def spec(hosts: Any = None, **web: Any) -> DeploySpec:
    doc: dict[str, Any] = {"project": "demo", "services": {"web": {"image": "img:1", "port": 18081, **web}}}
    if hosts is not None:
        doc["hosts"] = hosts
    return parse_deploy_spec(doc, "demo")


def test_hosts_are_parsed_in_spec_order_with_defaults() -> None:
    parsed = spec(HOSTS, replicas=3)
    a, b = parsed.hosts
    assert (a.name, a.url, a.address, a.node, a.bind, a.tls) == (
        "host-a", "unix:///run/a/docker.sock", "127.0.0.2", "host-a", "127.0.0.2", None)
    assert (b.node, b.bind, b.tls and b.tls.cert) == ("b-node", "", "/etc/lbgen/cert.pem")
    assert parsed.on_host_error == "stop"


@pytest.mark.parametrize("hosts, web, error", [
    ({"a": {"docker": "http://x", "address": "127.0.0.2"}}, {},
     "hosts.a.docker: expected a Docker URL like unix:///var/run/docker.sock or tcp://10.0.0.2:2376, got 'http://x'"),
    ({"a": {"docker": "unix:///a.sock"}}, {}, "hosts.a.address: required"),
    ({"a": {"docker": "unix:///a.sock", "address": "nope"}}, {},
     "hosts.a.address: expected an IP address of this host, got 'nope'"),
    ({"a": {"docker": "unix:///a.sock", "address": "127.0.0.2", "tls": HOSTS["host-b"]["tls"]}}, {},
     "hosts.a.tls: only for a tcp:// daemon, not 'unix:///a.sock'"),
    ({"a": {"docker": "unix:///a.sock", "address": "127.0.0.2"},
      "b": {"docker": "unix:///a.sock", "address": "127.0.0.3"}}, {}, "hosts.b: same url as hosts.a"),
    ({}, {}, "hosts: expected a mapping of NAME: {docker: URL, address: IP}"),
    (HOSTS, {"placement": {"host-c": 1}}, "services.web.placement.host-c: no such host in hosts: (host-a, host-b)"),
    (HOSTS, {"placement": {"host-a": -1}}, "services.web.placement.host-a: expected an integer from 0 to 1000, got -1"),
    (HOSTS, {"placement": {"host-a": 2}, "replicas": 3}, "services.web.placement: places 2 replicas, but replicas is 3"),
    (HOSTS, {"placement": "even"}, "services.web.placement: expected spread or a mapping of host: replicas, got 'even'"),
    (None, {"placement": {"local": 1}}, "services.web.placement.local: no such host in hosts: (none)"),
    (HOSTS, {"env": {"BIND": "0.0.0.0"}}, "services.web.env.BIND: set by lbgen from hosts.host-a.bind; remove it"),
])
def test_bad_hosts_and_placements_name_their_field(hosts: Any, web: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        spec(hosts, **web)
    assert str(raised.value).startswith(error), str(raised.value)


def test_on_host_error_is_a_choice() -> None:
    doc = {"hosts": HOSTS, "on_host_error": "continue", "services": {"web": {"image": "i:1", "port": 18081}}}
    assert parse_deploy_spec(doc, "p").on_host_error == "continue"
    with pytest.raises(ConfigError, match="^on_host_error: expected one of stop, continue, got 'maybe'"):
        parse_deploy_spec({**doc, "on_host_error": "maybe"}, "p")


@pytest.mark.parametrize("placement, replicas, counts, hosts_of", [
    ("spread", 5, {"host-a": 3, "host-b": 2}, ["host-a", "host-b", "host-a", "host-b", "host-a"]),
    ("spread", 1, {"host-a": 1, "host-b": 0}, ["host-a"]),
    ("spread", 0, {"host-a": 0, "host-b": 0}, []),
    ({"host-b": 2}, None, {"host-a": 0, "host-b": 2}, ["host-b", "host-b"]),
    ({"host-a": 3, "host-b": 1}, 4, {"host-a": 3, "host-b": 1}, ["host-a", "host-b", "host-a", "host-a"]),
])
def test_placement_table(placement: Any, replicas: int | None, counts: dict[str, int], hosts_of: list[str]) -> None:
    web = {"placement": placement, **({"replicas": replicas} if replicas is not None else {})}
    service = spec(HOSTS, **web).services[0]
    assert dict(service.placement) == counts and service.replicas == sum(counts.values())
    assert [assign(service.placement)[i] for i in range(1, service.replicas + 1)] == hosts_of


def test_without_hosts_every_replica_is_on_the_implicit_host() -> None:
    service = spec(replicas=3).services[0]
    assert dict(service.placement) == {"": 3} and set(assign(service.placement).values()) == {""}


def test_spread_keeps_each_replica_on_its_host_when_scaling_up() -> None:
    hosts = spec(HOSTS).hosts
    smaller = assign(parse_placement("p", "spread", hosts, 3))
    larger = assign(parse_placement("p", "spread", hosts, 8))
    assert all(larger[i] == host for i, host in smaller.items())


@PROPERTY
@given(st.lists(st.integers(0, 20), min_size=1, max_size=5))
def test_any_placement_places_exactly_the_requested_counts(counts: list[int]) -> None:
    placement = {f"h{i}": n for i, n in enumerate(counts)}
    placed = assign(placement)
    assert sorted(placed) == list(range(1, sum(counts) + 1))
    assert {h: list(placed.values()).count(h) for h in placement} == placement


@PROPERTY
@given(st.integers(1, 5), st.integers(0, 60))
def test_spread_is_even(hosts: int, replicas: int) -> None:
    doc = {f"h{i}": {"docker": f"unix:///h{i}.sock", "address": f"127.0.0.{i + 2}"} for i in range(hosts)}
    counts = spec(doc, replicas=replicas).services[0].placement
    assert sum(counts.values()) == replicas and max(counts.values()) - min(counts.values()) <= 1


def test_config_hash_of_a_spec_without_hosts_is_unchanged() -> None:
    """The hash lbgen wrote before `hosts:` existed: a changed hash would recreate every replica."""
    web = {"image": "lbgen-demo:1", "replicas": 3, "port": 18081, "env": {"VERSION": "1"},
           "healthcheck": {"cmd": ["wget", "http://127.0.0.1:${PORT}/"]}}
    hashed = parse_deploy_spec({"services": {"web": web}}, "demo").services[0].config_hash()
    assert hashed == "7703f56891b03dd8a8b60f97617f15af85d4734935865968f319c99b053a5823"


def test_a_bind_address_reaches_the_container_and_its_hash() -> None:
    parsed = spec(HOSTS, replicas=2, command=["serve", "${BIND}:${PORT}"],
                  healthcheck={"cmd": ["wget", "http://${BIND}:${PORT}/health"]})
    service, (a, b) = parsed.services[0], parsed.hosts
    on_a, on_b = service.container_spec("demo", 1, 18081, a), service.container_spec("demo", 2, 18081, b)
    assert on_a.env["BIND"] == "127.0.0.2" and on_a.command == ("serve", "127.0.0.2:18081")
    assert on_a.healthcheck and on_a.healthcheck["Test"] == ["CMD", "wget", "http://127.0.0.2:18081/health"]
    assert "BIND" not in on_b.env and on_b.command == ("serve", "${BIND}:18081")
    assert on_a.labels["lbgen.deploy.config-hash"] != on_b.labels["lbgen.deploy.config-hash"] == service.config_hash()


def _on(parsed: DeploySpec, host: str, replica: int, port: int, **kwargs: Any) -> Any:
    return info(parsed.services[0].container_spec("demo", replica, port, parsed.host(host)), **kwargs)


def test_plan_places_replicas_per_host_with_their_own_ports() -> None:
    parsed = spec(HOSTS, replicas=3)
    plan = plan_deploy(parsed, {"host-a": [], "host-b": []})
    assert [(s.subject, s.host, s.port, s.new and s.new.name) for s in plan.steps] == [
        ("web.1@host-a", "host-a", 18081, "demo-web-1-p18081"),
        ("web.2@host-b", "host-b", 18081, "demo-web-2-p18081"),
        ("web.3@host-a", "host-a", 18082, "demo-web-3-p18082"),
    ]
    assert "create    web.2@host-b" in "\n".join(plan.lines())


def test_a_rolling_update_batches_across_hosts() -> None:
    v1 = spec(HOSTS, replicas=3, env={"V": "1"}, update={"parallelism": 2})
    running = {"host-a": [_on(v1, "host-a", 1, 18081), _on(v1, "host-a", 3, 18082)],
               "host-b": [_on(v1, "host-b", 2, 18081)]}
    plan = plan_deploy(spec(HOSTS, replicas=3, env={"V": "2"}, update={"parallelism": 2}), running)
    assert [[s.subject for s in b.steps] for b in plan.batches] == [["web.1@host-a", "web.2@host-b"], ["web.3@host-a"]]
    assert [s.port for s in plan.steps] == [18083, 18082, 18081]
    assert plan_deploy(v1, running).changes is False


def test_changing_the_placement_moves_only_the_replicas_that_no_longer_fit() -> None:
    v1 = spec(HOSTS, placement={"host-a": 2, "host-b": 1})
    running = {"host-a": [_on(v1, "host-a", 1, 18081), _on(v1, "host-a", 3, 18082)],
               "host-b": [_on(v1, "host-b", 2, 18081)]}
    plan = plan_deploy(spec(HOSTS, placement={"host-a": 1, "host-b": 2}), running)
    assert [(s.action, s.subject, s.reason) for s in plan.steps] == [
        ("create", "web.3@host-b", "new replica"), ("remove", "web.3@host-a", "placed on host-b")]
    assert plan.count("keep") == 2


def test_an_unreachable_host_is_left_out_and_its_replicas_listed() -> None:
    plan = plan_deploy(spec(HOSTS, replicas=3), {"host-a": []}, unreachable={"host-b": "host host-b: refused"})
    assert [s.subject for s in plan.steps] == ["web.1@host-a", "web.3@host-a"]
    assert [(s.action, s.subject, s.reason) for s in plan.untouched] == [("skipped", "web.2@host-b", "host unreachable")]
    assert {b.policy.min_healthy for b in plan.batches} == {1}  # 3 - parallelism 1 - the replica left out


def test_the_multi_host_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "deploy-hosts.yaml"
    parsed = parse_deploy_spec(yaml.safe_load(example.read_text()), "deploy-hosts")
    assert [h.name for h in parsed.hosts] == ["host-a", "host-b"] and parsed.hosts[1].tls is not None
    assert {s.name: dict(s.placement) for s in parsed.services} == {
        "web": {"host-a": 2, "host-b": 2}, "worker": {"host-a": 1, "host-b": 2}}

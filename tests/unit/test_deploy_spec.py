"""Deploy spec validation: every bad value names its field path; good specs become container specs."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbgen.core.deploy_spec import PortPool, parse_deploy_spec
from lbgen.core.discovery import DiscoveryOptions, container_endpoints
from lbgen.errors import ConfigError
from tests.unit.deploy_fakes import info

WEB: dict[str, Any] = {"image": "lbgen-demo:1", "replicas": 3, "port": 18081}


def _spec(**web: Any) -> dict[str, Any]:
    service = {**copy.deepcopy(WEB), **web}
    return {"services": {"web": {k: v for k, v in service.items() if v is not None}}}


def test_minimal_service_gets_defaults_and_a_pool_with_start_first_spares() -> None:
    spec = parse_deploy_spec(_spec(), "demo")
    web = spec.services[0]
    assert spec.project == "demo"
    assert (web.replicas, web.network, web.restart, web.weight, web.healthcheck) == (3, "host", "unless-stopped", 1, None)
    assert web.pool == PortPool(18081, 18084)  # 3 replicas + 1 spare for parallelism 1
    assert (web.update.order, web.update.parallelism, web.update.min_healthy) == ("start-first", 1, 2)


def test_stop_first_needs_no_spare_ports() -> None:
    web = parse_deploy_spec(_spec(update={"order": "stop-first", "parallelism": 2}), "demo").services[0]
    assert web.pool == PortPool(18081, 18083)
    assert web.update.min_healthy == 1


def test_container_spec_carries_port_labels_resources_and_health() -> None:
    web = parse_deploy_spec(
        _spec(
            command=["httpd", "-f", "-p", "${PORT}"],
            env={"GREETING": "hi", "WORKERS": 2},
            resources={"cpus": 0.5, "memory": "256m"},
            logs={"host": "/var/log/lbgen", "container": "/logs"},
            volumes=["/srv/www:/www:ro"],
            healthcheck={"cmd": ["wget", "-q", "http://127.0.0.1:${PORT}/"], "interval": "500ms", "retries": 5},
            weight=3,
        ),
        "demo",
    ).services[0]
    c = web.container_spec("demo", 2, 18082)
    assert c.name == "demo-web-2-p18082"
    assert c.command == ("httpd", "-f", "-p", "18082")
    assert c.env == {"GREETING": "hi", "WORKERS": "2", "PORT": "18082"}
    assert (c.mem_limit, c.nano_cpus, c.network_mode, c.ports) == (256 * 1024**2, 500_000_000, "host", {})
    assert c.mounts == (("/var/log/lbgen", "/logs", False), ("/srv/www", "/www", True))
    assert c.healthcheck == {"Test": ["CMD", "wget", "-q", "http://127.0.0.1:18082/"], "Interval": 500_000_000,
                             "Timeout": 3_000_000_000, "Retries": 5, "StartPeriod": 0}
    assert {k: v for k, v in c.labels.items() if k != "lbgen.deploy.config-hash"} == {
        "lbgen.service": "web", "lbgen.port": "18082", "lbgen.weight": "3", "lbgen.deploy.project": "demo",
        "lbgen.deploy.replica": "2", "lbgen.deploy.port": "18082",
    }
    assert c.labels["lbgen.deploy.config-hash"] == web.config_hash()


def test_bridge_publishes_the_pool_port_and_registers_the_container_port() -> None:
    web = parse_deploy_spec(_spec(network="bridge", container_port=8080), "demo").services[0]
    c = web.container_spec("demo", 1, 18081)
    assert (c.network_mode, c.ports, c.env["PORT"], c.labels["lbgen.port"]) == ("bridge", {8080: 18081}, "8080", "8080")


def test_bridge_ports_bind_one_host_address_when_host_ip_is_set() -> None:
    web = parse_deploy_spec(_spec(network="bridge", container_port=8080, host_ip="10.0.0.5"), "demo").services[0]
    assert web.container_spec("demo", 1, 18081).host_ip == "10.0.0.5"
    every = parse_deploy_spec(_spec(network="bridge", container_port=8080), "demo").services[0]
    assert every.container_spec("demo", 1, 18081).host_ip == ""
    assert every.config_hash() != web.config_hash()  # a new address needs new containers


@pytest.mark.parametrize(("fields", "message"), [
    ({"network": "bridge", "container_port": 8080, "host_ip": "10.0.0.300"},
     "services.web.host_ip: expected an IP address of this host, got '10.0.0.300'"),
    ({"host_ip": "10.0.0.5"}, "services.web.host_ip: only with network: bridge"),
], ids=["not-an-ip", "host-network"])
def test_a_bad_host_ip_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_deploy_spec(_spec(**fields), "demo")


def test_shell_health_check_and_disabled_health_check() -> None:
    shell = parse_deploy_spec(_spec(healthcheck={"cmd": "wget -q localhost:$PORT"}), "d").services[0]
    assert shell.container_spec("d", 1, 18081).healthcheck["Test"] == ["CMD-SHELL", "wget -q localhost:$PORT"]
    off = parse_deploy_spec(_spec(healthcheck={"disable": True}), "d").services[0]
    assert off.container_spec("d", 1, 18081).healthcheck["Test"] == ["NONE"]


@pytest.mark.parametrize(
    "change, same",
    [
        ({"env": {"A": "2"}}, False),
        ({"image": "lbgen-demo:2"}, False),
        ({"weight": 2}, False),
        ({"resources": {"memory": "64m"}}, False),
        ({"replicas": 5}, True),
        ({"update": {"drain": "1s", "parallelism": 2}}, True),
        ({"port": 19000}, True),
    ],
    ids=["env", "image", "weight", "memory", "replicas", "policy", "port"],
)
def test_config_hash_changes_only_with_what_needs_a_new_container(change: dict[str, Any], same: bool) -> None:
    base = parse_deploy_spec(_spec(env={"A": "1"}), "d").services[0].config_hash()
    changed = parse_deploy_spec(_spec(**{"env": {"A": "1"}, **change}), "d").services[0].config_hash()
    assert (base == changed) is same


def test_durations_and_sizes() -> None:
    web = parse_deploy_spec(_spec(update={"drain": "1.5s", "health_timeout": "2m", "stop_timeout": "7s"}), "d").services[0]
    assert (web.update.drain, web.update.health_timeout, web.update.stop_timeout) == (1.5, 120.0, 7.0)
    assert parse_deploy_spec(_spec(resources={"memory": "1g"}), "d").services[0].memory == 1024**3


def test_project_from_the_spec_wins_and_services_are_sorted() -> None:
    spec = parse_deploy_spec({"project": "shop", "services": {"web": WEB, "api": {**WEB, "port": 19000}}}, "d")
    assert (spec.project, [s.name for s in spec.services]) == ("shop", ["api", "web"])


BAD: list[tuple[Any, str]] = [
    ([], "spec: expected a mapping"),
    ({}, "services: required"),
    ({"services": {}}, "services: expected at least one service"),
    ({"services": {"web": WEB}, "extra": 1}, "extra: unknown setting"),
    ({"services": {"web": WEB}, "version": 2}, "version: expected one of 1"),
    ({"services": {"web": WEB}, "project": "a b"}, "project: expected a name of letters"),
    ({"services": {"bad name": WEB}}, "services.bad name: expected a service name"),
    ({"services": {"web": None}}, "services.web.image: required"),
    (_spec(replicas=-1), "services.web.replicas: expected an integer from 0 to 1000, got -1"),
    (_spec(replicas="3"), "services.web.replicas: expected an integer"),
    (_spec(replicas=True), "services.web.replicas: expected an integer"),
    (_spec(image=None), "services.web.image: required"),
    (_spec(image="a b"), "services.web.image: expected an image reference"),
    (_spec(imgae="x"), "services.web.imgae: unknown setting"),
    (_spec(image=None, imgae="lbgen-demo:1"), "services.web.imgae: unknown setting (did you mean 'image'?)"),
    (_spec(port=None, prot=18081), "services.web.prot: unknown setting (did you mean 'port'?)"),
    (_spec(port=None), "services.web.port: required"),
    (_spec(port=70000), "services.web.port: expected an integer from 1 to 65535"),
    (_spec(port=65534), "services.web.port: 65534 + 4 ports passes 65535"),
    (_spec(ports="18081-18090"), "services.web.ports: give either port or ports"),
    (_spec(port=None, ports="18081-18083"), "services.web.ports: 18081-18083 holds 3 ports; 3 replicas need 4"),
    (_spec(port=None, ports="18090-18081"), "services.web.ports: expected a port range"),
    (_spec(command="httpd -f"), "services.web.command: expected a non-empty list of strings"),
    (_spec(command=[]), "services.web.command: expected a non-empty list of strings"),
    (_spec(env=["A=1"]), "services.web.env: expected a mapping of NAME: value"),
    (_spec(env={"A-B": "1"}), "services.web.env.A-B: expected an env name"),
    (_spec(env={"PORT": "80"}), "services.web.env.PORT: set by lbgen"),
    (_spec(env={"A": None}), "services.web.env.A: expected a string or number"),
    (_spec(env={"A": True}), "services.web.env.A: expected a string or number"),
    (_spec(network="overlay"), "services.web.network: expected one of host, bridge"),
    (_spec(network="bridge"), "services.web.container_port: required with network: bridge"),
    (_spec(container_port=8080), "services.web.container_port: required with network: bridge, and only then"),
    (_spec(resources={"cpus": 0}), "services.web.resources.cpus: expected a number of CPUs above 0"),
    (_spec(resources={"memory": "1k"}), "services.web.resources.memory: expected a size of at least 6m"),
    (_spec(resources={"memory": "lots"}), "services.web.resources.memory: expected a size"),
    (_spec(resources={"gpus": 1}), "services.web.resources.gpus: unknown setting"),
    (_spec(logs="/var/log"), "services.web.logs: expected a mapping"),
    (_spec(logs={"host": "var/log", "container": "/logs"}), "services.web.logs.host: expected an absolute path"),
    (_spec(logs={"host": "/a/../etc", "container": "/logs"}), "services.web.logs.host: expected an absolute path"),
    (_spec(logs={"host": "/var/log"}), "services.web.logs.container: required"),
    (_spec(volumes="/a:/b"), "services.web.volumes: expected a list"),
    (_spec(volumes=["/a"]), "services.web.volumes[0]: expected /host/path:/container/path"),
    (_spec(volumes=["/a:/b", "/a:/b:rx"]), "services.web.volumes[1]: expected /host/path:/container/path"),
    (_spec(volumes=["/a,b:/b"]), "services.web.volumes[0]: expected an absolute path"),
    (_spec(restart="sometimes"), "services.web.restart: expected one of no, always, unless-stopped, on-failure"),
    (_spec(healthcheck={"interval": "1s"}), "services.web.healthcheck.cmd: required"),
    (_spec(healthcheck={"cmd": [1]}), "services.web.healthcheck.cmd: expected a non-empty list of strings"),
    (_spec(healthcheck={"cmd": ["x"], "interval": "soon"}), "services.web.healthcheck.interval: expected a duration"),
    (_spec(healthcheck={"cmd": ["x"], "retries": 0}), "services.web.healthcheck.retries: expected an integer from 1"),
    (_spec(healthcheck={"disable": "yes"}), "services.web.healthcheck.disable: expected true or false"),
    (_spec(weight=300), "services.web.weight: expected an integer from 0 to 256"),
    (_spec(update={"parallelism": 0}), "services.web.update.parallelism: expected an integer ≥ 1, got 0"),
    (_spec(update={"order": "random"}), "services.web.update.order: expected one of start-first, stop-first"),
    (_spec(update={"drain": "-1s"}), "services.web.update.drain: expected a duration"),
    (_spec(update={"drain": -1}), "services.web.update.drain: expected a duration"),
    (_spec(update={"drain": 5}), "services.web.update.drain: expected a duration like 100ms"),
    (_spec(update={"min_healthy": 4}), "services.web.update.min_healthy: expected an integer from 0 to 3"),
    (_spec(update={"order": "stop-first", "min_healthy": 3}), "services.web.update.min_healthy: 3 cannot hold"),
    (_spec(update={"surge": 1}), "services.web.update.surge: unknown setting"),
    ({"services": {"web": WEB, "api": {**WEB, "port": 18083}}}, "services.api: ports 18083-18086 overlap services.web ports 18081-18084"),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[m.split(":")[0] + f"#{i}" for i, (_, m) in enumerate(BAD)])
def test_bad_specs_name_the_field(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_deploy_spec(raw, "demo")
    assert str(error.value).startswith(message), str(error.value)


def test_the_annotated_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "deploy.yaml"
    spec = parse_deploy_spec(yaml.safe_load(example.read_text()), "deploy")
    web = spec.service("web")
    assert spec.project == "demo" and web is not None
    assert (web.image, web.replicas, web.pool, web.update.min_healthy) == ("lbgen-demo:1", 3, PortPool(18081, 18084), 2)


def test_the_agent_registers_a_deployed_replica_as_is() -> None:
    web = parse_deploy_spec(_spec(weight=3), "demo").services[0]
    container = info(web.container_spec("demo", 1, 18082), cid="f" * 64)
    [(service, endpoint)] = container_endpoints(container, DiscoveryOptions(node="host-a", host_ip="127.0.0.1"))
    assert (service, endpoint.address, endpoint.port, endpoint.weight, endpoint.container) == (
        "web", "127.0.0.1", 18082, 3, "f" * 64)

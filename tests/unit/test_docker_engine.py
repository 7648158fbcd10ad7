"""The Docker adapter's pure mappings: inspect JSON → ContainerInfo, events, restart policies, errors.

Published ports cannot be produced by the test daemon (`--bridge=none`), so bindings are tested here
on inspect documents shaped like Docker 20.10's.
"""

from __future__ import annotations

from typing import Any

import docker
import pytest
import requests

from lbgen.adapters.docker_engine import DockerEngine, container_info, describe, docker_event, restart_policy
from lbgen.errors import ConfigError, DockerError
from lbgen.core.values import ContainerSpec, PortBinding

BRIDGE_INSPECT: dict[str, Any] = {
    "Id": "c0ffee" * 10 + "abcd",
    "Name": "/web-1",
    "State": {"Status": "running", "Health": {"Status": "healthy", "FailingStreak": 0}},
    "Config": {
        "Image": "example/web:2",
        "Labels": {"lbgen.service": "web"},
        "Env": ["PORT=8080", "DSN=postgres://u@h/db?sslmode=require", "EMPTY="],
        "ExposedPorts": {"8080/tcp": {}, "9090/tcp": {}, "53/udp": {}},
    },
    "HostConfig": {"NetworkMode": "bridge"},
    "NetworkSettings": {
        "Ports": {
            "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}, {"HostIp": "::", "HostPort": "18080"}],
            "9090/tcp": None,
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        },
        "Networks": {"bridge": {"IPAddress": "10.1.0.5"}, "backend": {"IPAddress": "10.2.0.7"}},
    },
}

HOST_INSPECT: dict[str, Any] = {
    "Id": "beef" * 16,
    "Name": "/api",
    "State": {"Status": "exited"},
    "Config": {"Image": "lbgen-test/backend:1", "Labels": None, "Env": None},
    "HostConfig": {"NetworkMode": "host"},
    "NetworkSettings": {"Ports": {}, "Networks": {"host": {"IPAddress": ""}}},
}


def test_bridge_container_maps_bindings_networks_and_env() -> None:
    info = container_info(BRIDGE_INSPECT)
    assert (info.name, info.image, info.state, info.health) == ("web-1", "example/web:2", "running", "healthy")
    assert info.env == {"PORT": "8080", "DSN": "postgres://u@h/db?sslmode=require", "EMPTY": ""}
    assert info.exposed_ports == (8080, 9090)
    assert info.bindings == (
        PortBinding(53, "udp", "127.0.0.1", 5353),
        PortBinding(8080, "tcp", "0.0.0.0", 18080),
        PortBinding(8080, "tcp", "::", 18080),
    )
    assert info.networks == {"bridge": "10.1.0.5", "backend": "10.2.0.7"}
    assert info.network_mode == "bridge"


def test_host_container_without_healthcheck_is_health_none_and_has_no_addresses() -> None:
    info = container_info(HOST_INSPECT)
    assert (info.health, info.state, info.network_mode) == ("none", "exited", "host")
    assert (dict(info.labels), dict(info.env), dict(info.networks)) == ({}, {}, {})
    assert (info.exposed_ports, info.bindings) == ((), ())


def test_a_binding_without_a_host_port_yet_is_skipped() -> None:
    data = {**HOST_INSPECT, "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]}}}
    assert container_info(data).bindings == ()


def test_event_carries_action_id_name_and_nanosecond_time() -> None:
    raw = {
        "status": "health_status: healthy", "id": "abc", "Type": "container",
        "Action": "health_status: healthy", "Actor": {"ID": "abc", "Attributes": {"name": "web-1"}},
        "time": 1700000000, "timeNano": 1700000000250000000,
    }
    event = docker_event(raw)
    assert (event.type, event.action, event.id, event.name) == ("container", "health_status: healthy", "abc", "web-1")
    assert event.time == pytest.approx(1700000000.25)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no", {"Name": "no", "MaximumRetryCount": 0}),
        ("always", {"Name": "always", "MaximumRetryCount": 0}),
        ("unless-stopped", {"Name": "unless-stopped", "MaximumRetryCount": 0}),
        ("on-failure", {"Name": "on-failure", "MaximumRetryCount": 0}),
        ("on-failure:5", {"Name": "on-failure", "MaximumRetryCount": 5}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_restart_policy(text: str, expected: dict[str, Any]) -> None:
    assert restart_policy(text) == expected


@pytest.mark.parametrize("text", ["sometimes", "on-failure:x", "always:3", ""], ids=repr)
def test_bad_restart_policy_is_a_config_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError, match=f"restart policy {text!r}"):
        restart_policy(text)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (docker.errors.NotFound("404 Client Error", explanation="No such container: x"),
         "No such container: x"),
        (requests.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file'))"),
         "cannot connect to the Docker daemon"),
        (OSError("multi\nline"), "multi line"),
    ],
    ids=["api-error", "connection", "one-line"],
)
def test_describe_is_one_line(error: Exception, expected: str) -> None:
    text = describe(error)
    assert expected in text and "\n" not in text


@pytest.mark.parametrize(("host_ip", "binding"), [("", ""), ("10.0.0.5", "10.0.0.5")], ids=["every-address", "one"])
def test_published_ports_bind_the_spec_s_host_ip(host_ip: str, binding: str) -> None:
    engine = DockerEngine("unix:///nonexistent.sock")  # builds request bodies without connecting
    spec = ContainerSpec("c", "img", network_mode="bridge", ports={8080: 18081}, host_ip=host_ip)
    host_config = engine._create_args(spec)["host_config"]
    assert host_config["PortBindings"] == {"8080/tcp": [{"HostIp": binding, "HostPort": "18081"}]}


def test_tls_files_make_a_verified_https_client(tmp_path: Any) -> None:
    """A `hosts:` entry with `tls`: the client speaks HTTPS, verifies the daemon against the CA and
    presents the certificate (nothing is contacted when the client is made)."""
    files = [tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem")]
    for path in files:
        path.write_text("-")
    engine = DockerEngine("tcp://127.0.0.1:2376", tls=(str(files[0]), str(files[1]), str(files[2])))
    assert engine._api.base_url == "https://127.0.0.1:2376"
    assert (engine._api.verify, engine._api.cert) == (str(files[0]), (str(files[1]), str(files[2])))
    engine.close()


def test_missing_tls_files_are_one_docker_error(tmp_path: Any) -> None:
    with pytest.raises(DockerError, match="^docker connect: "):
        DockerEngine("tcp://127.0.0.1:2376", tls=(str(tmp_path / "ca.pem"), str(tmp_path / "c"), str(tmp_path / "k")))

"""`lbgen deploy` against a real dockerd and etcd, with the real agent registering the replicas.

The user's story: deploy three replicas → three healthy containers, registered; change the env →
a rolling update replaces all of them (under load through both LBs: test_deploy_handshake.py); a
version that never turns healthy → the update stops, the old replicas keep serving, exit non-zero; `--dry-run` and an unchanged re-apply touch nothing.
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from lbgen.adapters.docker_engine import DockerEngine
from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.cli import main
from lbgen.core.deploy_spec import LABEL_PROJECT
from lbgen.core.discovery import DiscoveryOptions
from lbgen.core.schema import decode_endpoint
from lbgen.core.values import ContainerInfo
from lbgen.ports import Store
from lbgen.services.agent import Agent, AgentConfig
from tests.support.util import free_block, wait_until

pytestmark = pytest.mark.integration

FAST = {"drain": "200ms", "health_timeout": "15s", "register_timeout": "15s", "stop_timeout": "2s"}
# The image's own check gives up after one failure (its tests want fast verdicts); with two workers
# of this suite busy on 2 CPUs a check can take seconds, and a flapping replica is not what is tested.
CHECK = {"cmd": "wget -q -O /dev/null http://127.0.0.1:$PORT/health", "interval": "1s", "timeout": "5s",
         "retries": 3}


def _answer(port: int) -> str:
    """What replica on `port` says: `replica=... version=... port=...`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
        return response.read().decode().strip()


class Deploy:
    """One project on the test daemon and etcd: writes its spec, runs the CLI, reads the result."""

    def __init__(self, tmp_path: Path, docker_host: str, etcd_url: str, prefix: str, image: str,
                 capsys: pytest.CaptureFixture[str], store: Store) -> None:
        self.path = tmp_path / "deploy.yaml"
        self.project = f"it{uuid.uuid4().hex[:8]}"
        self.docker = DockerEngine(docker_host)
        self.docker_host, self.etcd_url, self.prefix = docker_host, etcd_url, prefix
        self.image, self.capsys, self.store = image, capsys, store
        self.base = free_block(8)

    def write(self, replicas: int = 3, **web: Any) -> None:
        update = {**FAST, **web.pop("update", {})}
        service = {"image": self.image, "replicas": replicas, "ports": f"{self.base}-{self.base + 7}",
                   "env": {"VERSION": "1"}, "healthcheck": CHECK, "update": update, **web}
        self.path.write_text(yaml.safe_dump({"project": self.project, "services": {"web": service}}))

    def cli(self, action: str, *extra: str) -> tuple[int, str]:
        code = main(["deploy", action, str(self.path), *extra, "--docker-host", self.docker_host,
                     "--registry", self.etcd_url, "--prefix", self.prefix])
        captured = self.capsys.readouterr()
        return code, captured.out + captured.err

    def containers(self) -> list[ContainerInfo]:
        return self.docker.list_containers(label=f"{LABEL_PROJECT}={self.project}", include_stopped=True)

    def endpoints(self) -> dict[str, Any]:
        """Registered endpoints of `web` by container id."""
        items = self.store.snapshot(f"{self.prefix}/services/web/endpoints/").items
        found = [decode_endpoint(kv.key.rsplit("/", 1)[1], kv.value) for kv in items]
        return {e.container: e for e in found}

    def clean(self) -> None:
        for container in self.containers():
            self.docker.stop(container.id, 1)
            self.docker.remove(container.id)
        self.docker.close()


@pytest.fixture
def etcd_store(etcd_server: Any) -> Iterator[Store]:
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd_server.client_port),)))
    yield store
    store.close()


@pytest.fixture
def agent(etcd_store: Store, etcd_prefix: str, docker_host: str) -> Iterator[Agent]:
    """The real agent for this host, on its own node name and prefix."""
    docker = DockerEngine(docker_host)
    options = DiscoveryOptions(node=f"node{uuid.uuid4().hex[:6]}", host_ip="127.0.0.1")
    running = Agent(etcd_store, docker, AgentConfig(prefix=etcd_prefix, options=options, ttl=5))
    thread = threading.Thread(target=running.run, name="agent", daemon=True)
    thread.start()
    yield running
    running.stop()
    thread.join(10)
    docker.close()


@pytest.fixture
def deploy(tmp_path: Path, docker_host: str, etcd_server: Any, etcd_prefix: str, test_image: str,
           capsys: pytest.CaptureFixture[str], etcd_store: Store, agent: Agent) -> Iterator[Deploy]:
    run = Deploy(tmp_path, docker_host, etcd_server.url, etcd_prefix, test_image, capsys, etcd_store)
    yield run
    run.clean()


def _serving(deploy: Deploy, version: str) -> dict[str, int]:
    """Container id → port of every replica, after checking each is healthy, registered and answering."""
    containers = deploy.containers()
    endpoints = deploy.endpoints()
    ports = {c.id: int(c.labels["lbgen.deploy.port"]) for c in containers}
    assert all(c.state == "running" and c.health == "healthy" for c in containers), containers
    assert {e.port for e in endpoints.values()} == set(ports.values()), (endpoints, ports)
    answers = {port: _answer(port) for port in ports.values()}
    assert all(f"version={version}" in answer for answer in answers.values()), answers
    return ports


def test_deploy_three_then_unchanged_reapply_does_nothing(deploy: Deploy) -> None:
    deploy.write()
    code, out = deploy.cli("apply")
    assert code == 0, out
    assert "3 created" in out
    first = _serving(deploy, "1")
    assert len(first) == 3
    code, out = deploy.cli("apply")
    assert (code, out.splitlines()[-1]) == (0, "nothing to do"), out
    assert _serving(deploy, "1") == first


def test_env_change_rolls_every_replica(deploy: Deploy) -> None:
    deploy.write()
    assert deploy.cli("apply")[0] == 0
    old = _serving(deploy, "1")
    deploy.write(env={"VERSION": "2"})
    code, out = deploy.cli("apply")
    assert code == 0, out
    assert "3 recreated" in out
    new = _serving(deploy, "2")
    assert len(new) == 3 and not set(new) & set(old)
    assert out.index("web.1: registered") < out.index("web.1: stopping")


def test_a_version_that_never_turns_healthy_stops_and_old_replicas_keep_serving(deploy: Deploy) -> None:
    deploy.write()
    assert deploy.cli("apply")[0] == 0
    old = _serving(deploy, "1")
    deploy.write(env={"VERSION": "2", "HEALTHY": "0"}, update={"health_timeout": "3s"})
    code, out = deploy.cli("apply")
    assert code == 6, out
    assert "web.1: " in out and "not healthy after 3s" in out
    assert _serving(deploy, "1") == old


def test_dry_run_touches_nothing(deploy: Deploy) -> None:
    deploy.write()
    code, out = deploy.cli("apply", "--dry-run")
    assert code == 0, out
    assert out.splitlines()[0] == f"project {deploy.project}: 3 to create, 0 to recreate, 0 to remove, 0 unchanged"
    assert deploy.containers() == [] and deploy.endpoints() == {}


def test_status_then_rm(deploy: Deploy) -> None:
    deploy.write(replicas=2)
    assert deploy.cli("apply")[0] == 0
    code, out = deploy.cli("status")
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("web.")]
    assert [(r[0], r[3], r[4], r[5]) for r in rows] == [("web.1", "running", "healthy", "current"),
                                                         ("web.2", "running", "healthy", "current")]
    code, out = deploy.cli("rm")
    assert code == 0, out
    assert deploy.containers() == []
    wait_until(lambda: deploy.endpoints() == {}, timeout=10, what="endpoints deregistered")


def test_bad_spec_names_the_field_and_starts_nothing(deploy: Deploy) -> None:
    deploy.write(replicas=-1)
    code, out = deploy.cli("apply")
    assert code == 2
    assert out.strip() == f"Error: {deploy.path}: services.web.replicas: expected an integer from 0 to 1000, got -1"
    assert deploy.containers() == []


def test_bad_values_in_the_registry_do_not_stop_a_rolling_update(deploy: Deploy) -> None:
    """Issue 10: a value nested 1,000 deep under the service, `lb/` or `drain/` made `deploy apply`
    die with a traceback mid-update, leaving old and new replicas up."""
    deep = b"[" * 1000 + b"]" * 1000
    for suffix in ("services/web/endpoints/zz-bad", "lb/evil", "drain/zz-bad"):
        deploy.store.put(f"{deploy.prefix}/{suffix}", deep)
    deploy.store.put(f"{deploy.prefix}/lb/huge", b'{"revision":1,"error":"' + b"e" * 1_000_000 + b'"}')
    deploy.write(replicas=2)
    code, out = deploy.cli("apply")
    assert code == 0 and "Traceback" not in out, out[-3000:]
    deploy.write(replicas=2, env={"VERSION": "2"})
    code, out = deploy.cli("apply")
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert "2 recreated" in out
    running = {c.id: int(c.labels["lbgen.deploy.port"]) for c in deploy.containers() if c.state == "running"}
    assert len(deploy.containers()) == len(running) == 2  # the old replicas are gone
    assert all("version=2" in _answer(port) for port in running.values())

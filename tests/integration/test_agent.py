"""`lbgen agent` as users run it (a subprocess of the real CLI) against a real dockerd and etcd.

Each test has its own etcd prefix and container names; the agent runs with a 3 s TTL so lease
expiry is observable within a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import docker
import pytest

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.core.registry_url import parse_registry_url
from lbgen.core.schema import decode_endpoint, parse_key
from lbgen.errors import InvalidValue
from tests.support.docker import DockerdFactory, RunContainer, TestContainer, wait_health
from tests.support.etcd import EtcdServer
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TTL = 3
WAIT = 30  # an upper bound for anything the agent should do at once: the CI machine may be busy
NO_CHECK = False  # run_container(healthcheck=False): a container without HEALTHCHECK


@dataclass
class AgentProcess:
    """One `python -m lbgen agent` process and where its log and metrics are."""

    node: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str

    def healthz(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.metrics_url}/healthz", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"metric {name} not exported")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


StartAgent = Callable[..., AgentProcess]


@pytest.fixture
def start_agent(tmp_path: Path, etcd_server: EtcdServer, etcd_prefix: str, docker_host: str) -> Iterator[StartAgent]:
    """`start_agent(node=..., etcd=url, docker=url, extra=[...])` → a running agent, stopped after the test."""
    agents: list[AgentProcess] = []

    def start(node: str = "host-a", etcd: str | None = None, docker: str | None = None,
              extra: tuple[str, ...] = ()) -> AgentProcess:
        port = free_port()
        log = tmp_path / f"agent-{node}-{len(agents)}.log"
        argv = [
            sys.executable, "-m", "lbgen", "--log-level", "debug", "agent",
            "--etcd", etcd or etcd_server.url, "--prefix", etcd_prefix, "--node", node,
            "--host-ip", "127.0.0.1", "--ttl", str(TTL), "--docker-host", docker or docker_host,
            "--metrics-addr", f"127.0.0.1:{port}", *extra,
        ]
        with log.open("wb") as out:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        agent = AgentProcess(node, proc, log, f"http://127.0.0.1:{port}")
        agents.append(agent)
        wait_until(lambda: agent.healthz()[0] or proc.poll() is not None, WAIT, f"agent {node} on /healthz")
        assert proc.poll() is None, agent.output()
        return agent

    yield start
    for agent in agents:
        if agent.proc.poll() is None:
            agent.kill()


@pytest.fixture
def registry(etcd_server: EtcdServer, etcd_prefix: str) -> Iterator[Registry]:
    with closing(Registry(etcd_server.url, etcd_prefix)) as reader:
        yield reader


class Registry:
    """Reads what agents registered under one prefix, decoded and validated like a watcher does."""

    def __init__(self, url: str, prefix: str) -> None:
        self.store = EtcdStore(EtcdConfig(endpoints=parse_registry_url(url).endpoints, timeout=30))
        self.prefix = prefix

    def endpoints(self, node: str | None = None) -> dict[str, dict]:
        """registry key → endpoint as a dict (plus `service`, `lease`), optionally one node's only."""
        found = {}
        for kv in self.store.snapshot(self.prefix + "/services/").items:
            ref = parse_key(self.prefix, kv.key)
            if ref is None or ref.kind != "endpoint":
                continue
            endpoint = decode_endpoint(ref.endpoint_id, kv.value)
            if node is None or endpoint.node == node:
                found[kv.key] = {**endpoint.to_dict(), "id": endpoint.id, "service": ref.service,
                                 "served": endpoint.is_served(), "lease": kv.lease}
        return found

    def by_container(self, node: str | None = None) -> dict[str, list[dict]]:
        grouped: dict[str, list[dict]] = {}
        for value in self.endpoints(node).values():
            grouped.setdefault(value["container"], []).append(value)
        return grouped

    def nodes(self) -> set[str]:
        return {value["node"] for value in self.endpoints().values()}

    def put(self, key: str, value: dict) -> None:
        self.store.put(key, json.dumps(value).encode())

    def close(self) -> None:
        self.store.close()


def service_name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def labelled(
    run_container: RunContainer, service: str, healthcheck: bool = NO_CHECK, **options: object
) -> TestContainer:
    """A host-network backend registered as `service` on its own free port."""
    port = free_port()
    labels = {"lbgen.service": service, "lbgen.port": str(port)}
    return run_container(port=port, labels=labels, healthcheck=healthcheck, **options)


def test_three_containers_register_then_a_stopped_one_leaves(
    start_agent: StartAgent, registry: Registry, run_container: RunContainer, docker_client: docker.DockerClient
) -> None:
    service = service_name()
    containers = [labelled(run_container, service) for _ in range(3)]
    bad = run_container(labels={"lbgen.service": service, "lbgen.port": "http"}, healthcheck=NO_CHECK)
    agent = start_agent()
    wait_until(lambda: len(registry.endpoints()) == 3, WAIT, "three endpoints")
    found = {v["container"]: v for v in registry.endpoints().values()}
    for c in containers:
        value = found[c.id]
        assert (value["address"], value["port"], value["health"]) == ("127.0.0.1", c.port, "none")
        assert value["service"] == service
        assert value["id"] == f"host-a.{c.name}.{c.port}"
    assert len({v["lease"] for v in found.values()}) == 1
    assert f"skipping container {bad.name} ({bad.id[:12]}): label lbgen.port" in agent.output()
    assert agent.metric("lbgen_agent_skipped_containers") == 1

    docker_client.containers.get(containers[0].id).stop(timeout=1)
    wait_until(lambda: containers[0].id not in registry.by_container(), WAIT, "the stopped container's key gone")
    assert len(registry.endpoints()) == 2
    wait_until(lambda: agent.metric("lbgen_agent_endpoints") == 2, WAIT, "endpoints gauge")
    assert agent.healthz() == (200, "ok\n")


def test_healthcheck_container_is_served_only_while_healthy(
    start_agent: StartAgent, registry: Registry, run_container: RunContainer, docker_client: docker.DockerClient
) -> None:
    start_agent()
    c = labelled(run_container, service_name(), healthcheck=True, healthy=False)
    container = docker_client.containers.get(c.id)

    def state() -> tuple[str, bool] | None:
        values = registry.by_container().get(c.id)
        return (values[0]["health"], values[0]["served"]) if values else None

    wait_until(lambda: state() == ("unhealthy", False), WAIT, "registered, unhealthy, not served")
    container.exec_run(["touch", "/www/health"])
    wait_health(docker_client, c.id, "healthy")
    wait_until(lambda: state() == ("healthy", True), WAIT, "served once healthy")
    container.exec_run(["rm", "/www/health"])
    wait_health(docker_client, c.id, "unhealthy")
    wait_until(lambda: state() == ("unhealthy", False), WAIT, "not served once unhealthy")


def test_a_killed_agent_s_keys_expire_within_the_ttl_and_a_restart_restores_them(
    start_agent: StartAgent, registry: Registry, run_container: RunContainer
) -> None:
    service = service_name()
    containers = [labelled(run_container, service) for _ in range(2)]
    agent = start_agent()
    wait_until(lambda: len(registry.endpoints()) == 2, WAIT, "two endpoints")
    keys = set(registry.endpoints())
    agent.kill()
    killed = time.monotonic()
    # expired with the lease (the deadline is generous for a loaded machine; the figure is printed)
    wait_until(lambda: not registry.endpoints(), TTL + 20, "keys to expire")
    print(f"keys gone {time.monotonic() - killed:.1f} s after the kill (TTL {TTL} s)")

    start_agent()
    wait_until(lambda: set(registry.endpoints()) == keys, WAIT, "the same keys again")
    assert {cid: len(values) for cid, values in registry.by_container().items()} == {c.id: 1 for c in containers}


def test_a_container_that_died_while_the_agent_was_down_is_gone_after_restart(
    start_agent: StartAgent, registry: Registry, run_container: RunContainer, docker_client: docker.DockerClient
) -> None:
    service = service_name()
    dead, alive = labelled(run_container, service), labelled(run_container, service)
    first = start_agent(extra=("--keep-on-exit",))
    wait_until(lambda: len(registry.endpoints()) == 2, WAIT, "two endpoints")
    (old_lease,) = {v["lease"] for v in registry.endpoints().values()}
    assert first.terminate() == 0
    assert len(registry.endpoints()) == 2, "--keep-on-exit left the keys"
    docker_client.containers.get(dead.id).stop(timeout=1)

    start_agent()
    wait_until(lambda: set(registry.by_container()) == {alive.id}, WAIT, "only the live container")
    wait_until(lambda: {v["lease"] for v in registry.endpoints().values()} != {old_lease}, WAIT, "on a new lease")


def test_sigterm_revokes_the_lease(start_agent: StartAgent, registry: Registry, run_container: RunContainer) -> None:
    labelled(run_container, service_name())
    agent = start_agent()
    wait_until(lambda: len(registry.endpoints()) == 1, WAIT, "one endpoint")
    assert agent.terminate() == 0
    assert registry.endpoints() == {}, agent.output()
    assert "revoked lease" in agent.output()


def test_two_agents_never_touch_each_others_keys(
    start_agent: StartAgent, registry: Registry, run_container: RunContainer, docker_client: docker.DockerClient
) -> None:
    service = service_name()
    c = labelled(run_container, service)
    foreign = f"{registry.prefix}/services/{service}/endpoints/host-c.manual.80"
    registry.put(foreign, {"address": "127.0.0.2", "port": 80, "node": "host-c"})
    a, b = start_agent("host-a"), start_agent("host-b")
    wait_until(lambda: registry.nodes() == {"host-a", "host-b", "host-c"}, WAIT, "both agents registered")
    assert a.terminate() == 0
    assert registry.nodes() == {"host-b", "host-c"}
    docker_client.containers.get(c.id).stop(timeout=1)
    wait_until(lambda: set(registry.endpoints()) == {foreign}, WAIT, "host-b deregistered only its own key")
    assert b.healthz()[0] == 200


def test_dockerd_restart_under_a_running_agent_converges(
    start_agent: StartAgent, registry: Registry, dockerd_factory: DockerdFactory
) -> None:
    daemon = dockerd_factory()
    service = service_name()
    with closing(daemon.client()) as client:
        kept, lost = (_run_labelled(client, daemon.image, service, restart) for restart in ("always", "no"))
        agent = start_agent(docker=daemon.url)
        wait_until(lambda: set(registry.by_container()) == {kept, lost}, WAIT, "both registered")
        # Its containers die with it (no live-restore). Whether their die events reach the agent
        # before the event stream closes is a race inside dockerd: either way, once it is back only
        # a reconnected agent can see `kept` running again and `lost` gone.
        daemon.stop()
        wait_until(lambda: "docker:" in agent.healthz()[1], WAIT, "agent reports docker down")
        daemon.start()
        wait_until(lambda: set(registry.by_container()) == {kept}, WAIT, "converged after the restart")
        wait_until(lambda: agent.healthz()[0] == 200, WAIT, "healthy again")


def _run_labelled(client: docker.DockerClient, image: str, service: str, restart: str) -> str:
    port = free_port()
    container = client.containers.run(
        image, detach=True, network_mode="host", environment={"PORT": str(port)},
        labels={"lbgen.service": service, "lbgen.port": str(port)}, healthcheck={"Test": ["NONE"]},
        restart_policy={"Name": restart}, name=f"lbt-{uuid.uuid4().hex[:10]}",
    )
    return str(container.id)


@pytest.fixture
def private_etcd(etcd_factory: Callable[..., EtcdServer], etcd_prefix: str) -> Iterator[tuple[EtcdServer, Registry]]:
    server = etcd_factory()
    with closing(Registry(server.url, etcd_prefix)) as reader:
        yield server, reader


def test_etcd_outage_longer_than_the_ttl_re_registers(
    start_agent: StartAgent, private_etcd: tuple[EtcdServer, Registry], run_container: RunContainer,
    docker_client: docker.DockerClient,
) -> None:
    server, registry = private_etcd
    service = service_name()
    gone, kept = labelled(run_container, service), labelled(run_container, service)
    agent = start_agent(etcd=server.url)
    wait_until(lambda: len(registry.endpoints()) == 2, WAIT, "two endpoints")
    server.stop()
    errors = 'lbgen_agent_errors_total{kind="etcd"}'
    # a keep-alive fails every TTL/3 = 1 s: five failures span more than the TTL
    wait_until(lambda: agent.metric(errors) >= 5, WAIT, "an etcd outage longer than the TTL")
    assert "etcd:" in agent.healthz()[1]
    docker_client.containers.get(gone.id).stop(timeout=1)  # a change the agent must carry over
    server.start()
    wait_until(lambda: set(registry.by_container()) == {kept.id}, WAIT, "converged after etcd returned")
    wait_until(lambda: agent.healthz()[0] == 200, WAIT, "healthy again")


def test_etcd_restored_from_scratch_re_registers(
    start_agent: StartAgent, private_etcd: tuple[EtcdServer, Registry], run_container: RunContainer
) -> None:
    server, registry = private_etcd
    labelled(run_container, service_name())
    agent = start_agent(etcd=server.url)
    wait_until(lambda: len(registry.endpoints()) == 1, WAIT, "one endpoint")
    server.wipe()  # the lease and every key are gone
    wait_until(lambda: len(registry.endpoints()) == 1, WAIT, "re-registered on a new lease")
    assert agent.metric("lbgen_agent_lease_grants_total") == 2


def test_bad_values_under_the_prefix_neither_stop_the_agent_nor_cost_its_lease(
    start_agent: StartAgent, registry: Registry, run_container: RunContainer, etcd_prefix: str
) -> None:
    """Issue 10: a 2 KB value nested 1,000 deep killed the agent at its next resync, and it revoked its
    lease on the way out, deleting every endpoint of its host."""
    service = service_name()
    first = labelled(run_container, service)
    agent = start_agent(extra=("--resync", "1"))
    wait_until(lambda: len(registry.endpoints()) == 1, WAIT, "the first endpoint")
    [(key, value)] = registry.endpoints().items()
    deep = b"[" * 1000 + b"]" * 1000
    bad = {
        f"services/{service}/endpoints/host-a.{service}.bad": deep,  # in the agent's own id space
        f"services/{service}/endpoints/other": b'{"node":"host-a","x":' + deep + b"}",
        f"services/{service}/endpoints/huge": b'{"node":"' + b"n" * 1_000_000 + b'"}',
        "lb/evil": deep,
        f"drain/host-a.{first.name}.{first.port}": deep,
    }
    for suffix, raw in bad.items():
        registry.store.put(f"{etcd_prefix}/{suffix}", raw)
    resyncs = agent.metric("lbgen_agent_reconciliations_total")
    wait_until(lambda: agent.metric("lbgen_agent_reconciliations_total") >= resyncs + 3, WAIT, "three resyncs")
    second = labelled(run_container, service)
    wait_until(lambda: {v["port"] for v in _good(registry, service)} == {first.port, second.port}, WAIT,
               "the second container registered after the bad values")
    assert agent.proc.poll() is None, agent.output()[-3000:]
    assert registry.store.get(key).lease == value["lease"]  # type: ignore[union-attr]
    assert agent.metric("lbgen_agent_lease_held") == 1 and agent.healthz() == (200, "ok\n")
    assert "Traceback" not in agent.output()


def _good(registry: Registry, service: str) -> list[dict]:
    """The decodable endpoints of `service` (the test's own reader must skip the bad values too)."""
    found = []
    for kv in registry.store.snapshot(f"{registry.prefix}/services/{service}/endpoints/").items:
        try:
            found.append(decode_endpoint(kv.key.rsplit("/", 1)[1], kv.value).to_dict())
        except InvalidValue:
            continue
    return found

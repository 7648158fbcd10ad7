"""The whole system on one machine, as a fleet: two Docker hosts, two LB nodes, one etcd.

The user's story: host-a (127.0.0.2) and host-b (127.0.0.3) each run their own dockerd and
`lbgen agent`; LB node lb-nginx renders nginx, lb-haproxy renders HAProxy, each with its own
`lbgen watch`. Both LBs serve the replicas of both hosts; a replica started on host-b reaches
both; `lbgen status` shows both LB nodes at the registry's revision; a watcher killed with
SIGKILL leaves `lbgen status` within its lease TTL; a host whose agent dies leaves the LB that
is still watched.
"""

from __future__ import annotations

import subprocess
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from lbgen.core.schema import encode_spec, spec_key
from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from tests.support.docker import DockerdFactory
from tests.support.dockerd import Dockerd
from tests.support.etcd import EtcdServer
from tests.support.lb import get
from tests.support.lbgen_proc import LbgenProcesses, lbgen_processes, lbgen_status, watch_settings  # noqa: F401
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

TTL = 3  # agents' and watchers' lease TTL: what a dead process's keys outlive it by
HOSTS = {"host-a": "127.0.0.2", "host-b": "127.0.0.3"}


@dataclass
class Host:
    """A Docker host: its own dockerd, its loopback address, its agent."""

    node: str
    ip: str
    daemon: Dockerd
    client: docker.DockerClient

    def run_replica(self, name: str) -> str:
        """A backend bound to this host's address, registered as service `web`; returns its name."""
        port = free_port()
        health = {"test": ["CMD-SHELL", 'wget -q -O /dev/null "http://$BIND:$PORT/health"'],
                  "interval": 500_000_000, "timeout": 2_000_000_000, "retries": 1}
        self.client.containers.run(
            self.daemon.image, name=name, detach=True, network_mode="host", healthcheck=health,
            environment={"PORT": str(port), "BIND": self.ip, "REPLICA": name},
            labels={"lbgen.service": "web", "lbgen.port": str(port)},
        )
        return name


@dataclass
class LbNode:
    """An LB node: nginx or HAProxy started on the config its watcher rendered."""

    node: str
    kind: str
    port: int
    dir: Path
    listen: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    def start_lb(self) -> None:
        conf = self.dir / f"{self.kind}.conf"
        wait_until(conf.exists, 30, f"{self.node} to render {conf}")
        argv = (["nginx", "-c", str(conf), "-g", "daemon off;"] if self.kind == "nginx"
                else ["haproxy", "-W", "-S", f"{self.dir}/master.sock,mode,600", "-f", str(conf)])
        with (self.dir / "lb.log").open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def stop_lb(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def replicas(self, rounds: int = 12) -> set[str]:
        """Replica names answering through this LB over `rounds` requests (round robin)."""
        seen = set()
        for _ in range(rounds):
            try:
                seen.add(get(self.port, timeout=2, address=self.listen).split()[0].removeprefix("replica="))
            except OSError:
                pass
        return seen

    def serves(self, expected: set[str], timeout: float = 30) -> None:
        wait_until(lambda: self.replicas() == expected, timeout, f"{self.node} to serve {sorted(expected)}")


def _lb_vars(kind: str, directory: Path, listen: str) -> dict[str, Any]:
    if kind == "nginx":
        return {"listen_address": listen, "pid": f"{directory}/nginx.pid", "error_log": f"{directory}/error.log",
                "access_log": "off", "temp_dir": str(directory), "worker_processes": 1}
    return {"listen_address": listen, "pid": f"{directory}/haproxy.pid", "stats_socket": f"{directory}/stats.sock",
            "master_socket": f"{directory}/master.sock", "hard_stop_after": "2s"}


@pytest.fixture
def hosts(dockerd_factory: DockerdFactory) -> Iterator[dict[str, Host]]:
    made = {}
    for node, ip in HOSTS.items():
        daemon = dockerd_factory()
        made[node] = Host(node, ip, daemon, daemon.client())
    yield made
    for host in made.values():
        host.client.close()


@contextmanager
def running_fleet(tmp_path: Path, etcd_server: EtcdServer, etcd_prefix: str, hosts: dict[str, Host],
                  lbgen_processes: LbgenProcesses, replicas: bool = True) -> Iterator[dict[str, Any]]:  # noqa: F811
    """Spec of `web` written, both agents and both watchers running (with `replicas`: one
    hand-started replica per host first). The LBs themselves start with `LbNode.start_lb`."""
    port = free_port()
    with closing(EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd_server.client_port),)))) as store:
        store.put(spec_key(etcd_prefix, "web"), encode_spec({"listen": port}))
    registry = ["--registry", etcd_server.url, "--prefix", etcd_prefix]
    agents = {}
    for host in hosts.values():
        if replicas:
            host.run_replica(f"{host.node}-web-1")
        agents[host.node] = lbgen_processes.start(
            f"agent-{host.node}", "agent", *registry, "--node", host.node, "--host-ip", host.ip,
            "--docker-host", host.daemon.url, "--ttl", str(TTL), "--metrics-addr", "off")
    lbs, watchers = {}, {}
    for kind, listen in (("nginx", "127.0.0.1"), ("haproxy", "127.0.0.4")):
        node, directory = f"lb-{kind}", tmp_path / f"lb-{kind}"
        settings = watch_settings(directory, kind, _lb_vars(kind, directory, listen))
        watchers[node] = lbgen_processes.start(node, "watch", "-c", str(settings), *registry, "--node", node,
                                               "--status-ttl", str(TTL), "--metrics-addr", "off")
        lbs[node] = LbNode(node, kind, port, directory, listen=listen)
    try:
        yield {"registry": etcd_server.url, "prefix": etcd_prefix, "hosts": hosts, "agents": agents,
               "watchers": watchers, "lbs": lbs, "logs": lbgen_processes.logs}
    finally:
        for watcher in watchers.values():  # first: a reload during HAProxy's stop re-execs its master,
            if watcher.alive():            # which forgets the SIGTERM it was handling (CI, 2026-12-04)
                watcher.kill()
        for lb in lbs.values():
            lb.stop_lb()


@pytest.fixture
def fleet(tmp_path: Path, etcd_server: EtcdServer, etcd_prefix: str, hosts: dict[str, Host],
          lbgen_processes: LbgenProcesses) -> Iterator[dict[str, Any]]:  # noqa: F811
    """Spec of `web` written, one replica per host, both agents and both watchers running."""
    with running_fleet(tmp_path, etcd_server, etcd_prefix, hosts, lbgen_processes) as running:
        yield running


def _lb_nodes(fleet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lb["node"]: lb for lb in lbgen_status(fleet["registry"], fleet["prefix"])["lb_nodes"]}


def _in_sync(fleet: dict[str, Any], nodes: set[str]) -> dict[str, Any] | None:
    status = lbgen_status(fleet["registry"], fleet["prefix"])
    lbs = {lb["node"]: lb for lb in status["lb_nodes"]}
    ok = set(lbs) == nodes and all(not lb["behind"] and lb["connected"] for lb in lbs.values())
    return status if ok and not status["problems"] else None


def test_two_hosts_two_lb_nodes_converge_and_report(fleet: dict[str, Any]) -> None:
    lbs: dict[str, LbNode] = fleet["lbs"]
    both = {"host-a-web-1", "host-b-web-1"}
    try:
        for lb in lbs.values():
            lb.start_lb()
        for lb in lbs.values():
            lb.serves(both)

        fleet["hosts"]["host-b"].run_replica("host-b-web-2")
        for lb in lbs.values():
            lb.serves(both | {"host-b-web-2"})

        status = wait_until(lambda: _in_sync(fleet, set(lbs)), 15, "both LB nodes in sync in `lbgen status`")
        assert {a["node"]: a["served"] for a in status["agents"]} == {"host-a": 1, "host-b": 2}
        for lb in status["lb_nodes"]:
            assert lb["revision"] >= status["services_revision"] and lb["targets"], lb

        fleet["watchers"]["lb-haproxy"].kill()
        wait_until(lambda: set(_lb_nodes(fleet)) == {"lb-nginx"}, TTL + 3, "lb-haproxy's status to expire")

        fleet["agents"]["host-a"].kill()
        lbs["lb-nginx"].serves({"host-b-web-1", "host-b-web-2"}, timeout=TTL + 10)

        assert fleet["watchers"]["lb-nginx"].terminate() == 0
        assert _lb_nodes(fleet) == {}, "a watcher stopped cleanly revokes its status at once"
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{e}\n{fleet['logs']()}") from e

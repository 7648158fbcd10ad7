"""An agent and a watcher given all three members of a real etcd cluster keep working while any
one member is down, and the member catches up when it returns.

The user's story: three etcd members; `lbgen agent` and `lbgen watch` with `--registry
etcd://m0,etcd://m1,etcd://m2`. Kill m0 (SIGKILL), start a container: it is registered and
rendered. Bring m0 back: it holds the new registration. The same for m1, then m2 — so whichever
member the processes were talking to, and whichever was the leader, has been killed once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.docker import RunContainer, TestContainer
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster  # noqa: F401
from tests.support.lbgen_proc import LbgenProcesses, lbgen_processes, lbgen_status  # noqa: F401
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

TTL = 3
TEMPLATE = "{% for s in services %}{% for e in s.endpoints %}{{ e.address }}:{{ e.port }}\n{% endfor %}{% endfor %}"


def _settings(directory: Path) -> Path:
    (directory / "endpoints.j2").write_text(TEMPLATE)
    path = directory / "lbgen.yaml"
    path.write_text(
        "registry: file:/unused\nwait: 50ms:300ms\nguard: off\ntargets:\n"
        f"  - {{name: list, template: {directory}/endpoints.j2, dest: {directory}/endpoints.txt,"
        " check: [test, -s, '{staged}']}\n")
    return path


def _replica(run_container: RunContainer) -> TestContainer:
    port = free_port()
    return run_container(port=port, labels={"lbgen.service": "web", "lbgen.port": str(port)})


def _rendered_soon(directory: Path, replica: TestContainer, when: str) -> None:
    line = f"127.0.0.1:{replica.port}\n"
    wait_until(lambda: line in _rendered(directory), 30, f"replica on port {replica.port} rendered {when}")


def _rendered(directory: Path) -> str:
    path = directory / "endpoints.txt"
    return path.read_text() if path.exists() else ""


def test_agents_and_watchers_ride_out_any_one_member_down(
        tmp_path: Path, etcd_cluster: Callable[[int], EtcdCluster],  # noqa: F811
        lbgen_processes: LbgenProcesses, etcd_prefix: str, docker_host: str,  # noqa: F811
        run_container: RunContainer) -> None:
    cluster = etcd_cluster(3)
    registry = ["--registry", cluster.url, "--prefix", etcd_prefix, "--etcd-timeout", "2"]
    lbgen_processes.start("agent", "agent", *registry, "--node", "host-a", "--host-ip", "127.0.0.1",
                          "--docker-host", docker_host, "--ttl", str(TTL), "--metrics-addr", "off")
    lbgen_processes.start("watch", "watch", "-c", str(_settings(tmp_path)), *registry, "--node", "lb-1",
                          "--status-ttl", str(TTL), "--metrics-addr", "off")
    figures: dict[str, float] = {}
    try:
        started = time.monotonic()
        _rendered_soon(tmp_path, _replica(run_container), "with every member up")
        figures["all members up: docker run → rendered"] = time.monotonic() - started
        for member in cluster.members:
            member.kill()
            started = time.monotonic()
            replica = _replica(run_container)
            _rendered_soon(tmp_path, replica, f"while {member.name} is down")
            figures[f"{member.name} down: docker run → rendered"] = time.monotonic() - started
            member.start()
            key = f"{etcd_prefix}/services/web/endpoints/host-a.{replica.name}.{replica.port}"
            wait_until(lambda k=key, m=member: k in m.etcdctl("get", "--prefix", k, "--keys-only",
                                                              "--consistency=s"),
                       20, f"{member.name} to catch up with {key}")
        status: dict[str, Any] = wait_until(lambda: _all_in_sync(cluster, etcd_prefix), 20, "lb-1 in sync")
        assert [a["endpoints"] for a in status["agents"]] == [4]
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{e}\n{lbgen_processes.logs()}") from e
    print("\n".join(f"{what}: {seconds:.2f} s" for what, seconds in figures.items()))


def _all_in_sync(cluster: EtcdCluster, prefix: str) -> dict[str, Any] | None:
    status = lbgen_status(cluster.url, prefix)
    nodes = status["lb_nodes"]
    return status if [n["node"] for n in nodes] == ["lb-1"] and not nodes[0]["behind"] else None

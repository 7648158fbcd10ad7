"""Issue 15 against a real etcd and real dockerds: an agent's presence, and `lbgen status` on it."""

from __future__ import annotations

import json
import threading
import time
from contextlib import closing
from typing import Callable

import pytest

from lbgen.adapters.docker_engine import DockerEngine
from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.cli import main
from lbgen.core.discovery import DiscoveryOptions
from lbgen.core.registry_url import parse_registry_url
from lbgen.core.agent_status import AgentStatus, decode_agent_status
from lbgen.core.lb_node_status import LbStatus, TargetStatus, encode_lb_status
from lbgen.core.schema import agent_key, lb_status_key
from lbgen.services.agent import Agent, AgentConfig
from tests.integration.test_agent import (  # noqa: F401 (fixtures)
    TTL,
    WAIT,
    Registry,
    StartAgent,
    _run_labelled,
    labelled,
    registry,
    service_name,
    start_agent,
)
from tests.support.docker import DockerdFactory, RunContainer
from tests.support.etcd import EtcdServer
from tests.support.util import wait_until
from tests.unit.test_agent_keys import CountingStore

pytestmark = pytest.mark.integration


def presence(registry: Registry, node: str) -> AgentStatus | None:
    kv = registry.store.get(agent_key(registry.prefix, node))
    return decode_agent_status(node, kv.value) if kv else None


def test_presence_counts_docker_down_in_status_and_gone_after_kill_9(
    start_agent: StartAgent, registry: Registry, dockerd_factory: DockerdFactory, etcd_server: EtcdServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = dockerd_factory()
    service = service_name()
    with closing(daemon.client()) as client:
        for _ in range(2):
            _run_labelled(client, daemon.image, service, "no")
        client.containers.run(daemon.image, detach=True, network_mode="host", name=f"lbt-plain-{service}",
                              healthcheck={"Test": ["NONE"]}, command=["sleep", "600"])
        agent = start_agent("host-p", docker=daemon.url)
        wait_until(lambda: (s := presence(registry, "host-p")) is not None and s.endpoints == 2, WAIT, "presence")
        found = presence(registry, "host-p")
        assert found is not None
        assert (found.docker_reachable, found.containers, found.endpoints) == (True, 3, 2)
        kv = registry.store.get(agent_key(registry.prefix, "host-p"))
        assert kv is not None and {kv.lease} == {v["lease"] for v in registry.endpoints().values()}

        daemon.stop()
        wait_until(lambda: (s := presence(registry, "host-p")) is not None and not s.docker_reachable, WAIT,
                   "docker unreachable published")
        code, document = status_of(etcd_server, registry.prefix, capsys)
        assert code == 1
        assert any(p.startswith("agent host-p: Docker unreachable") for p in document["problems"]), document
        [reported] = [a for a in document["agents"] if a["node"] == "host-p"]
        # (its containers died with the daemon: whether their die events arrived first is dockerd's race)
        assert (reported["reporting"], reported["docker_reachable"]) == (True, False)

        agent.kill()
        killed = time.monotonic()
        # expired with the lease (a generous deadline for a loaded machine; the figure is printed)
        wait_until(lambda: presence(registry, "host-p") is None, TTL + 20, "presence to expire")
        print(f"presence gone {time.monotonic() - killed:.1f} s after the kill (TTL {TTL} s)")


def test_etcd_lists_a_lease_s_keys_and_reads_many_keys_at_once(registry: Registry) -> None:
    store, prefix = registry.store, registry.prefix
    lease = store.grant_lease(30)
    keys = [f"{prefix}/services/s/endpoints/n.{i:03d}" for i in range(300)]  # more than one transaction
    for key in keys[:200]:
        store.put(key, b"{}", lease=lease)
    assert store.lease_keys(lease) == tuple(sorted(keys[:200]))
    assert [kv.key for kv in store.get_many(keys)] == keys[:200]
    store.revoke_lease(lease)
    assert store.lease_keys(lease) == () and store.get_many(keys) == []


def test_resyncs_on_etcd_read_no_other_node_s_key(
    registry: Registry, etcd_server: EtcdServer, docker_engine: DockerEngine, run_container: RunContainer,
) -> None:
    service = service_name()
    ours = {labelled(run_container, service).id for _ in range(2)}
    for n in range(3):
        registry.put(f"{registry.prefix}/services/{service}/endpoints/host-b.x{n}.80",
                     {"address": "127.0.0.2", "port": 80 + n, "node": "host-b"})
    etcd = EtcdConfig(endpoints=parse_registry_url(etcd_server.url).endpoints, timeout=30)
    counting = CountingStore(EtcdStore(etcd))  # type: ignore[arg-type]
    options = DiscoveryOptions(node="host-k", host_ip="127.0.0.1")
    config = AgentConfig(registry.prefix, options, ttl=TTL, resync_interval=0.2)
    agent = Agent(counting, docker_engine, config)  # type: ignore[arg-type]
    thread = threading.Thread(target=agent.run, name="test-agent-host-k", daemon=True)
    thread.start()
    try:
        wait_until(lambda: ours <= set(registry.by_container("host-k")) and counting.calls.count("lease_keys") >= 5,
                   WAIT, "registered, then five resyncs")
    finally:
        agent.stop()
        thread.join(timeout=20)
        counting.inner.close()
    assert not thread.is_alive()
    assert all("host-b" not in key for key in counting.seen), counting.seen
    assert f"snapshot {registry.prefix}/services/" not in counting.calls


def test_status_on_etcd_sees_a_deletion_after_a_node_s_revision_and_a_compacted_one(
    etcd_factory: Callable[..., EtcdServer], etcd_prefix: str, capsys: pytest.CaptureFixture[str],
) -> None:
    server = etcd_factory()  # a private etcd: this test compacts it
    with closing(Registry(server.url, etcd_prefix)) as registry:
        services = f"{etcd_prefix}/services/web/endpoints"
        for eid in ("a", "b", "c"):
            applied = registry.store.put(f"{services}/{eid}", b'{"address": "127.0.0.1", "port": 80}')
        for node in ("lb-1", "lb-2"):
            status = LbStatus(node, applied, {"nginx": TargetStatus(applied)}, connected=True, updated_at=time.time())
            registry.store.put(lb_status_key(etcd_prefix, node), encode_lb_status(status))
        code, document = status_of(server, etcd_prefix, capsys)
        assert code == 0 and all(not n["behind"] for n in document["lb_nodes"]), document
        registry.store.delete(f"{services}/b")
        code, document = status_of(server, etcd_prefix, capsys)
        assert code == 1
        assert {n["node"]: n["behind_why"] for n in document["lb_nodes"]} == {"lb-1": "deleted", "lb-2": "deleted"}
        registry.store.compact(registry.store.put(f"{etcd_prefix}/other", b"x"))
        code, document = status_of(server, etcd_prefix, capsys)
        assert {n["node"]: n["behind_why"] for n in document["lb_nodes"]} == {"lb-1": "compacted", "lb-2": "compacted"}


def status_of(etcd: EtcdServer, prefix: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["status", "--registry", etcd.url, "--prefix", prefix, "--check", "--json"])
    return code, json.loads(capsys.readouterr().out)

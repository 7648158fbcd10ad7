"""bench/fleet_sim.py's simulated Docker honours the `Docker` port: the real agent, on the memory
store, registers what it runs and deregisters what dies (the fleet bench relies on it)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.discovery import DiscoveryOptions
from lbgen.core.schema import services_prefix
from lbgen.services.agent import Agent, AgentConfig
from tests.support.util import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fleet_sim import Host, SimDocker  # noqa: E402

PREFIX = "/t"


def endpoint_ids(store: MemoryStore) -> set[str]:
    return {kv.key.rsplit("/", 1)[1] for kv in store.snapshot(services_prefix(PREFIX)).items}


def test_the_real_agent_follows_the_simulated_docker() -> None:
    store, docker = MemoryStore(), SimDocker()
    config = AgentConfig(prefix=PREFIX, options=DiscoveryOptions(node="h1", host_ip="10.0.0.1"), ttl=30)
    agent = Agent(store, docker, config)
    host = Host("h1", "10.0.0.1", docker, store, agent, threading.Thread(target=agent.run, daemon=True))  # type: ignore[arg-type]
    first = host.start_container("web")
    host.thread.start()
    try:
        wait_until(lambda: endpoint_ids(store) == {first}, 30, "the listed container registered")
        second = host.start_container("web")
        wait_until(lambda: endpoint_ids(store) == {first, second}, 30, "the started container registered")
        host.kill_container(next(cid for cid, e in host.live.items() if e == first))
        wait_until(lambda: endpoint_ids(store) == {second}, 30, "the dead container deregistered")
    finally:
        agent.stop()
        host.thread.join(timeout=30)
    assert not host.thread.is_alive()
    assert endpoint_ids(store) == set(), "a clean stop revokes the lease"


def test_a_closed_event_stream_ends_and_gets_no_more_events() -> None:
    docker = SimDocker()
    stream = docker.events()
    stream.close()
    Host("h", "10.0.0.2", docker, None, None, None).start_container("web")  # type: ignore[arg-type]
    assert list(stream) == []

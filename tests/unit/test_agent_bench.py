"""bench/agent_bench.py's registry follower counts endpoint keys only.

It used to count every key under the prefix, so the agent's presence key `{prefix}/agents/{node}`
(on the lease, naming no container) was reported as one "leaked key" that never went, in every
run: a bug of the bench, not of the agent (etcd held no endpoint key once every container was
removed)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry

from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.discovery import DiscoveryOptions
from lbgen.core.schema import agent_key
from lbgen.services.agent import Agent, AgentConfig
from tests.unit.fakes import FakeDocker
from tests.unit.test_agent import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import agent_bench  # noqa: E402

WAIT = 5.0


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def watcher(store: MemoryStore) -> Iterator[agent_bench.KeyWatcher]:
    follower = agent_bench.KeyWatcher(store)
    yield follower
    follower.close()
    follower.thread.join(timeout=10)


@pytest.fixture
def docker(store: MemoryStore) -> Iterator[FakeDocker]:
    """A running agent (the bench's prefix and node) on a fake Docker with two containers."""
    fake = FakeDocker(web(1), web(2))
    options = DiscoveryOptions(node=agent_bench.NODE, host_ip="127.0.0.1")
    config = AgentConfig(agent_bench.PREFIX, options, ttl=3, resync_interval=3600.0)
    agent = Agent(store, fake, config, registry=CollectorRegistry())
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    yield fake
    agent.stop()
    thread.join(timeout=10)


def test_the_agent_s_presence_is_no_leaked_key(
    store: MemoryStore, watcher: agent_bench.KeyWatcher, docker: FakeDocker
) -> None:
    both = {web(1).id, web(2).id}
    assert watcher.wait(lambda w: w.containers() == both, WAIT), watcher.live
    assert store.get(agent_key(agent_bench.PREFIX, agent_bench.NODE)) is not None  # the key it used to count
    for n in (1, 2):
        docker.kill(web(n))
    assert watcher.wait(lambda w: not w.live, WAIT), f"still followed: {watcher.live}"
    assert agent_bench.registered(store) == set()
    assert watcher.disagrees(set()) == ""
    assert store.get(agent_key(agent_bench.PREFIX, agent_bench.NODE)) is not None


def test_a_missed_watch_event_shows_as_a_disagreement_with_etcd(
    store: MemoryStore, watcher: agent_bench.KeyWatcher, docker: FakeDocker
) -> None:
    both = {web(1).id, web(2).id}
    assert watcher.wait(lambda w: w.containers() == both, WAIT)
    assert agent_bench.registered(store) == both
    assert watcher.disagrees({web(1).id}) == "the watch disagrees with etcd: 1 extra, 0 missing"

"""The agent under churn, each race scripted so it happens every run: a container removed while the
agent lists, between a put being planned and made, or started and removed while the consumer is
busy (start→die→destroy coalesced into one inspect that finds nothing). Each time, the registry
must end with exactly the running containers' keys: a leaked key sends traffic to a dead backend."""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.values import ContainerInfo
from tests.unit.fakes import FakeDocker
from tests.unit.test_agent import Running, endpoints, key, wait_for, web

Start = Callable[[MemoryStore, FakeDocker], Running]


@pytest.fixture
def start() -> Iterator[Start]:
    agents: list[Running] = []

    def start_agent(store: MemoryStore, docker: FakeDocker) -> Running:
        agents.append(Running(store, docker))
        return agents[-1]

    yield start_agent
    for running in agents:
        running.stop()


class DestroyedWhileListing(FakeDocker):
    """`docker rm -f` of `victim` lands just after the listing that still shows it running."""

    def __init__(self, victim: str, *containers: ContainerInfo) -> None:
        super().__init__(*containers)
        self.victim = victim

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        listing = super().list_containers(label, include_stopped)
        if self.victim in self.containers:
            self.destroy(self.victim)
        return listing


class HookedStore(MemoryStore):
    """Runs `hooks[key]` (once) just before `key` is put: a put planned, not yet made."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: dict[str, Callable[[], None]] = {}

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        if (hook := self.hooks.pop(key, None)) is not None:
            hook()
        return super().put(key, value, lease)


def test_a_container_removed_during_the_listing_leaves(start: Start) -> None:
    store = MemoryStore()
    running = start(store, DestroyedWhileListing(web(2).id, web(1), web(2)))
    wait_for(lambda: running.metric("lbgen_agent_writes_total", op="delete") >= 1, "the removed one deregistered")
    assert set(endpoints(store)) == {key(1)}


def test_a_container_removed_between_the_plan_and_its_put_leaves(start: Start) -> None:
    store, docker = HookedStore(), FakeDocker(web(1), web(2))
    store.hooks[key(2)] = lambda: docker.destroy(web(2).id)
    running = start(store, docker)
    wait_for(lambda: running.metric("lbgen_agent_writes_total", op="delete") >= 1, "the removed one deregistered")
    assert set(endpoints(store)) == {key(1)}


def test_start_die_destroy_coalesced_while_the_consumer_is_busy(start: Start) -> None:
    """Container 3 (registered) is removed and container 4 started and removed while the consumer
    waits on a put: one batch brings all their events, and each inspect finds nothing."""
    store, docker = HookedStore(), FakeDocker(web(1), web(3))
    start(store, docker)
    wait_for(lambda: set(endpoints(store)) == {key(1), key(3)}, "the first two registered")
    entered, release = threading.Event(), threading.Event()

    def busy() -> None:
        entered.set()
        release.wait(5.0)

    store.hooks[key(2)] = busy
    docker.run(web(2))
    assert entered.wait(5.0), "the consumer never put container 2's key"
    docker.destroy(web(3).id)
    docker.run(web(4))
    docker.destroy(web(4).id)
    release.set()
    wait_for(lambda: set(endpoints(store)) == {key(1), key(2)}, "exactly the running containers' keys")

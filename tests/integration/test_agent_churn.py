"""`lbgen agent` under churn on a real dockerd and etcd: containers started by several threads, each
start followed by `rm -f` of a random live one (bench/agent_bench.py's churn, bounded). Once
settled, etcd must hold exactly the running containers' keys, and an etcd watch through lbgen's
adapter (what `lbgen watch` uses) must have seen every put and delete."""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import docker
import pytest
from docker.errors import NotFound

from lbgen.core.registration import json_field
from lbgen.core.schema import agent_key, parse_key, services_prefix
from lbgen.ports import Store
from tests.integration import test_agent as agent_tests
from tests.integration.test_agent import WAIT, Registry, StartAgent, service_name
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

# The agent process and the registry reader of test_agent.py, bound here so pytest finds them.
start_agent = agent_tests.start_agent
registry = agent_tests.registry

CHURN = 60
THREADS = 4
POPULATION = 8
NODE = "host-c"


class Follower:
    """Which container each endpoint key names, as an etcd watch from a snapshot reports it."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.prefix = prefix
        self.live: dict[str, str] = {}
        self.lock = threading.Lock()
        under = services_prefix(prefix)
        self.watch = store.watch(under, store.snapshot(under).revision + 1)
        self.thread = threading.Thread(target=self._follow, name="churn-follower", daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        for batch in self.watch:
            with self.lock:
                for event in batch:
                    if event.kind == "delete":
                        self.live.pop(event.key, None)
                    elif (ref := parse_key(self.prefix, event.key)) is not None and ref.kind == "endpoint":
                        self.live[event.key] = str(json_field(event.value, "container"))

    def containers(self) -> set[str]:
        with self.lock:
            return set(self.live.values())

    def close(self) -> None:
        self.watch.cancel()
        self.thread.join(timeout=10)


class Churn:
    """Starts labelled host-network containers of one service; removes every one of them at the end."""

    def __init__(self, api: docker.APIClient, image: str, service: str) -> None:
        self.api, self.image, self.service = api, image, service
        self.alive: list[str] = []
        self.created: list[str] = []
        self.lock = threading.Lock()
        self.rng = random.Random(15)

    def start(self) -> str:
        labels = {"lbgen.service": self.service, "lbgen.port": str(free_port())}
        cid = str(self.api.create_container(
            self.image, command=["sleep", "600"], labels=labels, name=f"lbt-churn-{uuid.uuid4().hex[:10]}",
            healthcheck={"Test": ["NONE"]}, host_config=self.api.create_host_config(network_mode="host"),
        )["Id"])
        with self.lock:
            self.created.append(cid)
        self.api.start(cid)
        with self.lock:
            self.alive.append(cid)
        return cid

    def one(self, _: int) -> None:
        """Start one, then `rm -f` a random live one (perhaps the one just started)."""
        self.start()
        with self.lock:
            victim = self.alive.pop(self.rng.randrange(len(self.alive)))
        self.remove(victim)

    def remove(self, cid: str) -> None:
        try:
            self.api.remove_container(cid, force=True, v=True)
        except NotFound:
            pass

    def running(self) -> set[str]:
        listed = self.api.containers(filters={"label": f"lbgen.service={self.service}"})
        return {str(c["Id"]) for c in listed}


@pytest.fixture
def churn(docker_client: docker.DockerClient, test_image: str) -> Iterator[Churn]:
    runner = Churn(docker_client.api, test_image, service_name())
    yield runner
    for cid in runner.created:
        runner.remove(cid)


@pytest.fixture
def follower(registry: Registry) -> Iterator[Follower]:
    watching = Follower(registry.store, registry.prefix)
    yield watching
    watching.close()


def test_churn_leaves_exactly_the_running_containers_keys(
    start_agent: StartAgent, registry: Registry, churn: Churn, follower: Follower
) -> None:
    agent = start_agent(NODE)
    for _ in range(POPULATION):
        churn.start()

    def registered() -> set[str]:
        return set(registry.by_container(NODE))

    wait_until(lambda: registered() == set(churn.alive), WAIT, "the first containers registered")
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(churn.one, range(CHURN)))
    running = churn.running()
    assert running == set(churn.alive) and len(running) == POPULATION
    wait_until(lambda: registered() == running, WAIT * 2,
               f"etcd to hold exactly the {len(running)} running containers' keys (has {len(registered())})")
    wait_until(lambda: follower.containers() == running, WAIT, "the watch to agree with etcd")
    for cid in list(churn.alive):
        churn.remove(cid)
    wait_until(lambda: not registered(), WAIT, "no endpoint key once every container is removed")
    wait_until(lambda: not follower.containers(), WAIT, "the watch to see every delete")
    assert registry.store.get(agent_key(registry.prefix, NODE)) is not None  # the agent is still there
    assert agent.proc.poll() is None, agent.output()

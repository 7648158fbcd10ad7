"""The agent loop against an in-memory store and a scripted Docker: events, outages, leases, stop."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable, Iterator

from msgspec.structs import replace
from prometheus_client import CollectorRegistry
import pytest

from lbgen.adapters.file_store import FileStore
from lbgen.adapters.memory_store import MemoryStore
from lbgen.cli import main
from lbgen.core.discovery import DiscoveryOptions
from lbgen.core.model import Endpoint
from lbgen.core.schema import agent_key, drain_key, encode_endpoint
from lbgen.core.values import ContainerInfo, PortBinding
from lbgen.services.agent import Agent, AgentConfig
from tests.support.util import wait_until
from tests.unit.fakes import FakeDocker, FakeEvents

__all__ = ["FakeDocker", "FakeEvents"]  # test_agent_keys and test_agent_presence import them from here

PREFIX = "/lbgen"
NODE = "host-a"
OPTIONS = DiscoveryOptions(node=NODE, host_ip="127.0.0.1")


def wait_for(condition: Callable[[], object], what: str = "condition") -> None:
    wait_until(condition, 5.0, what, interval=0.01)


def web(n: int, **overrides: object) -> ContainerInfo:
    base = ContainerInfo(
        id=f"{n:064x}", name=f"web-{n}", image="web", state="running", health="none",
        labels={"lbgen.service": "web"}, env={}, network_mode="bridge",
        bindings=(PortBinding(80, "tcp", "0.0.0.0", 30000 + n),),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def key(n: int, node: str = NODE) -> str:
    return f"{PREFIX}/services/web/endpoints/{node}.web-{n}.80"


def endpoints(store: MemoryStore) -> dict[str, dict[str, object]]:
    return {kv.key: json.loads(kv.value) for kv in store.snapshot(PREFIX + "/services/").items}


def leases(store: MemoryStore) -> set[int]:
    return {kv.lease for kv in store.snapshot(PREFIX + "/services/").items}


class Running:
    """An agent running in a thread, stopped at teardown."""

    def __init__(self, store: MemoryStore, docker: FakeDocker, **config: object) -> None:
        self.registry = CollectorRegistry()
        settings = {"ttl": 3, "resync_interval": 3600.0} | config
        agent_config = AgentConfig(PREFIX, OPTIONS, **settings)  # type: ignore[arg-type]
        self.agent = Agent(store, docker, agent_config, registry=self.registry)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "agent did not stop"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def start(store: MemoryStore) -> Iterator[Callable[..., Running]]:
    agents: list[Running] = []

    def start_agent(docker: FakeDocker, **config: object) -> Running:
        agents.append(Running(store, docker, **config))
        return agents[-1]

    yield start_agent
    for running in agents:
        if running.thread.is_alive():
            running.stop()
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("agent-")]
    assert not leaked, f"producer threads left running: {leaked}"


def test_registers_running_containers_on_one_lease(store: MemoryStore, start: Callable[..., Running]) -> None:
    start(FakeDocker(web(1), web(2), web(3, state="exited")))
    wait_for(lambda: set(endpoints(store)) == {key(1), key(2)}, what="two endpoints")
    value = endpoints(store)[key(1)]
    assert (value["address"], value["port"], value["node"], value["health"]) == ("127.0.0.1", 30001, NODE, "none")
    assert len(leases(store)) == 1 and 0 not in leases(store)


def test_events_add_and_remove_endpoints(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    start(docker)
    wait_for(lambda: key(1) in endpoints(store))
    docker.run(web(2))
    wait_for(lambda: key(2) in endpoints(store), what="started container registered")
    docker.kill(web(1))
    wait_for(lambda: set(endpoints(store)) == {key(2)}, what="dead container deregistered")


def test_health_events_update_the_value(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1, health="starting"))
    start(docker)
    wait_for(lambda: endpoints(store).get(key(1), {}).get("health") == "starting")
    docker.run(web(1, health="healthy"), action="health_status: healthy")
    wait_for(lambda: endpoints(store)[key(1)]["health"] == "healthy", what="healthy")


def stale(n: int, node: str) -> tuple[str, bytes]:
    endpoint = Endpoint(id=f"{node}.web-{n}.80", address="127.0.0.1", port=1, node=node, container="x")
    return key(n, node), encode_endpoint(endpoint)


def previous_run(store: MemoryStore, *keys: tuple[str, bytes]) -> int:
    """What an agent killed (or stopped with --keep-on-exit) left: its presence and keys on a live lease."""
    lease = store.grant_lease(60)
    store.put(agent_key(PREFIX, NODE), b'{"docker_reachable": true}', lease=lease)
    for item in keys:
        store.put(*item, lease=lease)
    return lease


def test_start_deletes_own_stale_keys_and_leaves_other_nodes_alone(
    store: MemoryStore, start: Callable[..., Running]
) -> None:
    previous_run(store, stale(9, NODE))
    store.put(*stale(1, "host-b"))
    start(FakeDocker(web(1)))
    wait_for(lambda: set(endpoints(store)) == {key(1), key(1, "host-b")}, what="stale key removed")
    assert endpoints(store)[key(1, "host-b")]["port"] == 1


def test_resync_writes_nothing_when_nothing_differs(store: MemoryStore, start: Callable[..., Running]) -> None:
    running = start(FakeDocker(web(1), web(2)), resync_interval=0.05)
    wait_for(lambda: len(endpoints(store)) == 2)
    before = store.snapshot(f"{PREFIX}/services/")
    wait_for(lambda: running.metric("lbgen_agent_reconciliations_total") >= 5, what="several resyncs")
    assert store.snapshot(f"{PREFIX}/services/").items == before.items  # watchers are not woken
    assert running.metric("lbgen_agent_writes_total", op="put") == 2
    store.delete(key(2))  # an operator's mistake: the next resync repairs it
    wait_for(lambda: key(2) in endpoints(store), what="resync repaired a deleted key")


def test_etcd_restored_from_scratch_gets_everything_back(store: MemoryStore, start: Callable[..., Running]) -> None:
    running = start(FakeDocker(web(1), web(2)))
    wait_for(lambda: len(endpoints(store)) == 2)
    store.wipe()  # the lease and every key are gone
    wait_for(lambda: len(endpoints(store)) == 2, what="re-registered on a new lease")
    assert running.metric("lbgen_agent_lease_grants_total") == 2


def test_etcd_outage_longer_than_the_ttl_re_registers(store: MemoryStore, start: Callable[..., Running]) -> None:
    running = start(FakeDocker(web(1), web(2)), ttl=1)
    wait_for(lambda: len(endpoints(store)) == 2)
    (old,) = leases(store)
    store.set_available(False)
    # a keep-alive fails every TTL/3: four failures span more than the TTL
    wait_for(lambda: running.metric("lbgen_agent_errors_total", kind="etcd") >= 4, what="a long outage")
    store.set_available(True)
    wait_for(lambda: len(endpoints(store)) == 2 and leases(store) != {old}, what="re-registered on a new lease")


def test_etcd_outage_keeps_desired_state_and_converges(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    running = start(docker)
    wait_for(lambda: key(1) in endpoints(store))
    store.set_available(False)
    docker.run(web(2))
    docker.kill(web(1))
    wait_for(lambda: running.metric("lbgen_agent_errors_total", kind="etcd") >= 2, what="retries")
    assert "etcd: " in "".join(running.agent.health.problems())
    store.set_available(True)
    wait_for(lambda: set(endpoints(store)) == {key(2)}, what="converged after the outage")
    wait_for(lambda: not running.agent.health.problems(), what="healthy again")


def test_broken_event_stream_reconnects_and_relists(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    start(docker)
    wait_for(lambda: key(1) in endpoints(store))
    docker.down = True
    docker.break_streams()
    docker.containers[web(2).id] = web(2)  # started while the agent could not hear it
    docker.containers.pop(web(1).id)
    docker.down = False
    wait_for(lambda: set(endpoints(store)) == {key(2)}, what="converged after reconnecting")


def test_docker_down_at_start_touches_nothing(store: MemoryStore, start: Callable[..., Running]) -> None:
    previous_run(store, stale(9, NODE))
    docker = FakeDocker(web(1))
    docker.down = True
    running = start(docker)
    wait_for(lambda: running.metric("lbgen_agent_errors_total", kind="docker") >= 2, what="docker retries")
    assert set(endpoints(store)) == {key(9)}
    assert running.metric("lbgen_agent_writes_total", op="put") == 0
    docker.down = False
    wait_for(lambda: set(endpoints(store)) == {key(1)}, what="converged once docker answered")


def test_docker_up_gauge_follows_the_daemon(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    docker.down = True
    running = start(docker)
    wait_for(lambda: running.metric("lbgen_agent_errors_total", kind="docker") >= 1, what="a failed docker call")
    assert running.registry.get_sample_value("lbgen_agent_docker_up") == 0
    docker.down = False
    wait_for(lambda: running.metric("lbgen_agent_docker_up") == 1, what="docker_up 1 once docker answers")
    docker.down = True
    docker.break_streams()
    wait_for(lambda: running.metric("lbgen_agent_docker_up") == 0, what="docker_up 0 when the stream breaks")
    docker.down = False
    wait_for(lambda: running.metric("lbgen_agent_docker_up") == 1, what="docker_up 1 after reconnecting")


def test_bad_labels_skip_one_container_and_count(store: MemoryStore, start: Callable[..., Running]) -> None:
    bad = web(2, labels={"lbgen.service": "web", "lbgen.port": "http"})
    running = start(FakeDocker(web(1), bad))
    wait_for(lambda: key(1) in endpoints(store))
    assert running.metric("lbgen_agent_skipped_containers") == 1
    assert running.metric("lbgen_agent_errors_total", kind="bad_label") == 1


def test_burst_of_events_coalesces(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker()
    running = start(docker)
    wait_for(lambda: running.metric("lbgen_agent_reconciliations_total") >= 1)
    for n in range(1, 201):
        docker.run(web(n))
    wait_for(lambda: len(endpoints(store)) == 200, what="200 endpoints")
    assert running.metric("lbgen_agent_reconciliations_total") < 100


@pytest.mark.parametrize("keep_on_exit,left", [(False, 0), (True, 1)], ids=["revoke", "keep"])
def test_stop_revokes_or_keeps(store: MemoryStore, start: Callable[..., Running], keep_on_exit: bool, left: int) -> None:
    running = start(FakeDocker(web(1)), keep_on_exit=keep_on_exit)
    wait_for(lambda: key(1) in endpoints(store))
    running.stop()
    assert len(endpoints(store)) == left


def test_stop_deletes_the_keys_where_a_lease_holds_none(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    store = FileStore(path, prefix=PREFIX, must_exist=False)
    running = Running(store, FakeDocker(web(1)))  # type: ignore[arg-type]
    try:
        wait_for(lambda: path.exists() and "host-a.web-1.80" in path.read_text())
    finally:
        running.stop()
        store.close()
    assert "host-a.web-1.80" not in path.read_text()


def test_restart_takes_kept_keys_over_to_the_new_lease(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1), web(2))
    first = start(docker, keep_on_exit=True)
    wait_for(lambda: len(endpoints(store)) == 2)
    first.stop()
    (old,) = leases(store)
    start(docker)
    wait_for(lambda: leases(store) - {old} and len(leases(store)) == 1, what="keys moved to the new lease")
    assert set(endpoints(store)) == {key(1), key(2)}


# --- the command line ------------------------------------------------------------------------------

GOOD = ["agent", "--etcd", "etcd://127.0.0.1:2379", "--node", "host-a", "--host-ip", "10.0.0.5"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (GOOD[:5], "the following arguments are required: --host-ip"),
        (GOOD + ["--ttl", "soon"], "argument --ttl: 'soon' is not a number"),
        (GOOD + ["--ttl", "1"], "argument --ttl: '1' must be from 2 to 3600"),
        (GOOD[:4] + ["a b"] + GOOD[5:], "Error: node 'a b': must match"),
        (GOOD[:6] + ["10.0.0.300"], "Error: host IP '10.0.0.300': not an IP address"),
        (GOOD + ["--internal", "a;b"], "Error: internal network 'a;b'"),
        (GOOD + ["--metrics-addr", "localhost"], "Error: metrics address 'localhost'"),
        (["agent"] + GOOD[3:], "Error: no registry: pass --registry"),
        (GOOD[:2] + ["mysql://x"] + GOOD[3:], "Error: registry 'mysql://x'"),
        (GOOD + ["--prefix", "a b"], "Error: --prefix"),
    ],
    ids=["missing-host-ip", "ttl-not-a-number", "ttl-too-short", "bad-node", "bad-host-ip", "bad-network",
         "bad-metrics-addr", "no-registry", "bad-registry", "bad-prefix"],
)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LBGEN_REGISTRY", raising=False)
    monkeypatch.setattr("lbgen.cli.agent.open_store", _must_not_open)
    try:
        code: object = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def _must_not_open(*args: object) -> None:
    raise AssertionError("a bad flag must be refused before the registry is opened")


def test_a_drain_marker_keeps_the_endpoint_at_weight_0(store: MemoryStore, start: Callable[..., Running]) -> None:
    """`lbgen deploy` drains a replica before stopping it: a reconcile meanwhile must not undo it."""
    docker = FakeDocker(web(1))
    start(docker)
    wait_for(lambda: endpoints(store).get(key(1), {}).get("weight") == 1)
    marker = drain_key(PREFIX, key(1).rsplit("/", 1)[1])
    store.put(marker, b'{"container": "x"}')
    docker.run(web(2))  # any event triggers a reconcile
    wait_for(lambda: endpoints(store).get(key(1), {}).get("weight") == 0, what="drained endpoint at weight 0")
    assert endpoints(store)[key(2)]["weight"] == 1
    store.delete(marker)
    docker.run(web(3))
    wait_for(lambda: endpoints(store).get(key(1), {}).get("weight") == 1, what="weight back once undrained")


DEEP = b"[" * 1000 + b"]" * 1000  # raised RecursionError in the agent's resync before the bounds (issue 10)


def test_bad_values_it_reads_never_stop_the_agent_nor_its_lease(store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    running = start(docker, resync_interval=0.05)
    wait_for(lambda: key(1) in endpoints(store), what="registered")
    lease = store.get(key(1)).lease  # type: ignore[union-attr]
    store.put(key(7), DEEP)  # in this node's id space: a conflict, never overwritten nor fatal
    store.put(f"{PREFIX}/services/web/endpoints/other", b'{"node":"' + NODE.encode() + b'","x":' + DEEP + b"}")
    store.put(f"{PREFIX}/services/web/endpoints/huge", b'{"node":"' + b"n" * 2_000_000 + b'"}')
    store.put(f"{PREFIX}/drain/{NODE}.web-1.80", DEEP)
    reconciled = running.metric("lbgen_agent_reconciliations_total")
    wait_for(lambda: running.metric("lbgen_agent_reconciliations_total") > reconciled + 3, what="resyncs")
    docker.run(web(2))
    wait_for(lambda: store.get(key(2)) is not None, what="a new container registered after the bad values")
    assert running.thread.is_alive()
    assert store.get(key(1)).lease == lease  # type: ignore[union-attr]


class Broken(FakeDocker):
    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        if self.down:
            raise RuntimeError("a bug")
        return super().list_containers(label, include_stopped)


def test_an_agent_that_fails_keeps_its_lease_and_endpoints(store: MemoryStore) -> None:
    docker = Broken(web(1))
    agent = Agent(store, docker, AgentConfig(PREFIX, OPTIONS, ttl=3, resync_interval=0.05))  # type: ignore[arg-type]
    failed: list[BaseException] = []

    def run() -> None:
        try:
            agent.run()
        except RuntimeError as e:
            failed.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: key(1) in endpoints(store), what="registered")
    docker.down = True
    thread.join(timeout=10)
    assert not thread.is_alive() and [str(e) for e in failed] == ["a bug"]
    assert key(1) in endpoints(store) and store.get(key(1)).lease != 0  # type: ignore[union-attr]

"""The rolling executor against fake Docker, etcd, agent and LB: order of operations, rollback, policy."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec
import pytest

from lbgen.core.deploy_plan import plan_deploy, plan_removal
from lbgen.core.deploy_spec import DeploySpec
from lbgen.errors import DeployError, DockerError
from lbgen.core.values import ContainerSpec
from lbgen.services.deploy_registry import Registry
from lbgen.services.deploy_status import replica_status
from lbgen.services.deployer import Deployer
from tests.unit.deploy_fakes import FakeAgent, FakeClock, FakeDocker, FakeLB, FakeStore, make_spec

V1 = make_spec(env={"VERSION": "1"}, update={"drain": "2s", "health_timeout": "10s", "register_timeout": "5s"})
V2 = make_spec(env={"VERSION": "2"}, update={"drain": "2s", "health_timeout": "10s", "register_timeout": "5s"})


@dataclass
class World:
    log: list[tuple[str, ...]] = field(default_factory=list)
    progress: list[tuple[str, str]] = field(default_factory=list)
    clock: FakeClock = field(default_factory=FakeClock)
    docker: FakeDocker | None = None
    store: FakeStore | None = None
    lb: FakeLB | None = None
    deployer: Deployer | None = None

    def progress_call(self, subject: str, message: str) -> None:
        self.progress.append((subject, message))

    def deploy(self, spec: DeploySpec) -> Any:
        assert self.docker and self.deployer
        return self.deployer.apply(plan_deploy(spec, self.docker.list_containers(include_stopped=True)))

    def actions(self) -> list[str]:
        """Docker calls and drain writes, as `verb name` lines (LB and agent noise left out)."""
        out = []
        for entry in self.log:
            if entry[0] in ("create", "stop", "remove"):
                out.append(f"{entry[0]} {entry[1]}")
            elif entry[0] == "put" and "/drain/" in entry[1]:
                out.append(f"mark {entry[1].split('.')[1]}")
            elif entry[0] == "put" and '"weight":0' in entry[2] and entry[1].endswith(tuple("0123456789")):
                out.append(f"weight0 {entry[1].split('.')[1]}")
        return out


def make_world(health: Callable[[ContainerSpec, int], str] | None = None, registry: bool = True) -> World:
    world = World()
    world.docker = FakeDocker(log=world.log, health=health)
    reporter = type("R", (), {"progress": staticmethod(world.progress_call)})()
    if registry:
        world.store = FakeStore(world.log)
        agent, world.lb = FakeAgent(world.docker, world.store), FakeLB(world.store)
        world.clock.on_sleep += [agent.tick, world.lb.tick]
    reg = Registry(world.store, "/lbgen") if world.store else None
    world.deployer = Deployer(world.docker, world.clock, reg, reporter, poll=0.5)
    return world


def _deployed_v1(**kwargs: Any) -> World:
    world = make_world(**kwargs)
    outcome = world.deploy(V1)
    assert outcome.error is None and len(outcome.done) == 3
    world.log.clear()
    world.progress.clear()
    return world


def test_first_deploy_creates_each_replica_after_the_previous_is_served() -> None:
    world = make_world()
    outcome = world.deploy(V1)
    assert outcome.error is None
    assert world.actions() == ["create demo-web-1-p18081", "create demo-web-2-p18082", "create demo-web-3-p18083"]
    messages = [m for s, m in world.progress if s == "demo" or s == "web.1"]
    assert [m.split()[0] for m in messages] == ["starting", "waiting", "demo-web-1-p18081", "waiting", "registered", "1"]
    assert outcome.lines()[0].startswith("done in ") and "3 created" in outcome.lines()[0]


def test_rolling_update_start_first_order_of_operations() -> None:
    world = _deployed_v1()
    outcome = world.deploy(V2)
    assert outcome.error is None
    assert world.actions() == [
        "create demo-web-1-p18084", "mark demo-web-1-p18081", "weight0 demo-web-1-p18081",
        "stop demo-web-1-p18081", "remove demo-web-1-p18081",
        "create demo-web-2-p18081", "mark demo-web-2-p18082", "weight0 demo-web-2-p18082",
        "stop demo-web-2-p18082", "remove demo-web-2-p18082",
        "create demo-web-3-p18082", "mark demo-web-3-p18083", "weight0 demo-web-3-p18083",
        "stop demo-web-3-p18083", "remove demo-web-3-p18083",
    ]
    assert {c.env["VERSION"] for c in world.docker.containers.values()} == {"2"}
    assert world.store and not [k for k in world.store.kv if "/drain/" in k]  # markers revoked


def test_drain_waits_for_the_lb_then_the_drain_time_before_stopping() -> None:
    world = _deployed_v1()
    world.deploy(V2)
    web1 = [m for s, m in world.progress if s == "web.1"]
    draining = web1.index(next(m for m in web1 if m.startswith("draining demo-web-1-p18081")))
    assert web1[draining + 1].startswith("waiting for the LB nodes to apply the drain (revision ")
    assert web1[draining + 2].startswith("1 LB node(s) applied revision")
    assert web1[draining + 3] == "draining for 2s"
    assert web1[draining + 4].startswith("stopping demo-web-1-p18081")


def test_unchanged_spec_does_nothing() -> None:
    world = _deployed_v1()
    outcome = world.deploy(V1)
    assert (world.actions(), outcome.done, outcome.unchanged) == ([], (), 3)


def test_never_healthy_rolls_back_that_replica_and_stops() -> None:
    world = _deployed_v1(health=lambda spec, n: "healthy" if spec.env["VERSION"] == "1" and n > 1 else "starting")
    outcome = world.deploy(V2)
    assert isinstance(outcome.error, DeployError)
    assert str(outcome.error) == "web.1: demo-web-1-p18084 not healthy after 10s (health: starting)"
    assert world.actions() == ["create demo-web-1-p18084", "stop demo-web-1-p18084", "remove demo-web-1-p18084"]
    assert sorted(c.name for c in world.docker.containers.values()) == [
        "demo-web-1-p18081", "demo-web-2-p18082", "demo-web-3-p18083"]
    assert "FAILED" in outcome.lines()[0] and outcome.done == ()


def test_a_replica_that_exits_fails_at_once() -> None:
    world = _deployed_v1(health=lambda spec, n: "exited" if spec.env["VERSION"] == "2" else "healthy")
    started = world.clock.now()
    outcome = world.deploy(V2)
    assert str(outcome.error) == "web.1: demo-web-1-p18084 is exited before turning healthy"
    assert world.clock.now() - started < 1


def test_not_registered_in_time_rolls_back() -> None:
    world = make_world()
    world.deployer.registry = Registry(FakeStore([]), "/lbgen")  # an etcd no agent writes to
    outcome = world.deploy(V1)
    assert "web.1: demo-web-1-p18081 not registered as healthy after 5s" in str(outcome.error)
    assert world.actions() == ["create demo-web-1-p18081", "stop demo-web-1-p18081", "remove demo-web-1-p18081"]


def test_a_stuck_lb_node_blocks_the_update() -> None:
    world = _deployed_v1()
    assert world.lb
    world.lb.frozen = True
    outcome = world.deploy(V2)
    assert "web.1: LB nodes did not apply revision " in str(outcome.error)
    assert "(serving demo-web-1-p18084) in time: lb1 at revision " in str(outcome.error)
    assert world.actions()[-2:] == ["stop demo-web-1-p18084", "remove demo-web-1-p18084"]


def test_an_lb_holding_the_service_in_quarantine_blocks_the_update() -> None:
    world = _deployed_v1()
    assert world.lb
    world.lb.quarantined = {"web": "[emerg] host not found in upstream"}
    outcome = world.deploy(V2)
    assert "lb1/nginx holds web back (quarantined: [emerg] host not found in upstream)" in str(outcome.error)
    assert not any(action.startswith(("mark", "weight0")) for action in world.actions()), "nothing drained"
    assert world.actions()[-2:] == ["stop demo-web-1-p18084", "remove demo-web-1-p18084"]


def test_parallelism_starts_a_batch_before_stopping_its_old_replicas() -> None:
    world = _deployed_v1()
    outcome = world.deploy(make_spec(env={"VERSION": "2"}, update={"parallelism": 2, "drain": 0}))
    assert outcome.error is None
    verbs = [a.split()[0] for a in world.actions() if not a.startswith(("mark", "weight0"))]
    assert verbs == ["create", "create", "stop", "remove", "stop", "remove", "create", "stop", "remove"]


def test_stop_first_stops_before_it_starts() -> None:
    world = _deployed_v1()
    spec = make_spec(env={"VERSION": "2"}, update={"order": "stop-first", "drain": 0})
    outcome = world.deploy(spec)
    assert outcome.error is None
    assert world.actions()[:5] == ["mark demo-web-1-p18081", "weight0 demo-web-1-p18081", "stop demo-web-1-p18081",
                                   "remove demo-web-1-p18081", "create demo-web-1-p18081"]


def test_stop_first_failure_says_the_old_replica_is_gone() -> None:
    world = _deployed_v1(health=lambda spec, n: "starting" if spec.env["VERSION"] == "2" else "healthy")
    outcome = world.deploy(make_spec(env={"VERSION": "2"}, update={"order": "stop-first", "health_timeout": "3s"}))
    assert str(outcome.error).endswith("; stop-first had already removed demo-web-1-p18081")


def test_min_healthy_refuses_to_take_out_a_replica() -> None:
    world = _deployed_v1()
    assert world.docker
    for cid, c in list(world.docker.containers.items()):
        if c.name != "demo-web-1-p18081":
            world.docker.containers[cid] = msgspec.structs.replace(c, health="unhealthy")
    spec = make_spec(env={"VERSION": "2"}, update={"order": "stop-first", "min_healthy": 1})
    outcome = world.deploy(spec)
    assert str(outcome.error) == "web: taking out demo-web-1-p18081 would leave 0 healthy replicas, below min_healthy 1"
    assert world.actions() == []


def test_without_a_registry_it_waits_for_health_and_the_drain_time_only() -> None:
    world = make_world(registry=False)
    assert world.deploy(V1).error is None
    world.log.clear()
    before = world.clock.now()
    assert world.deploy(V2).error is None
    assert [a.split()[0] for a in world.actions()] == ["create", "stop", "remove"] * 3
    assert world.clock.now() - before >= 3 * 2.0  # three drains of 2 s


def test_scale_down_drains_then_removes() -> None:
    world = _deployed_v1()
    outcome = world.deploy(make_spec(env={"VERSION": "1"}, replicas=1, update={"drain": "2s"}))
    assert outcome.error is None
    assert world.actions() == [
        "mark demo-web-2-p18082", "weight0 demo-web-2-p18082", "mark demo-web-3-p18083", "weight0 demo-web-3-p18083",
        "stop demo-web-2-p18082", "remove demo-web-2-p18082", "stop demo-web-3-p18083", "remove demo-web-3-p18083",
    ]


def test_removal_plan_removes_everything() -> None:
    world = _deployed_v1()
    assert world.docker
    outcome = world.deployer.apply(plan_removal(V1, world.docker.list_containers(include_stopped=True)))
    assert outcome.error is None and world.docker.containers == {}
    assert "3 removed" in outcome.lines()[0]


def test_drained_endpoint_keeps_the_agents_lease() -> None:
    world = _deployed_v1()
    assert world.store and world.deployer and world.deployer.registry
    registry = world.deployer.registry
    old = next(c for c in world.docker.containers.values() if c.name == "demo-web-1-p18081")
    found = registry.endpoint("web", old.id)
    assert found is not None and found.endpoint.weight == 1
    drained = registry.drain(found, old.id, ttl=30)
    after = world.store.kv[found.key]
    assert (json.loads(after.value)["weight"], after.lease) == (0, found.lease)
    assert world.store.kv[registry.drain_key(found.endpoint.id)].lease == drained.marker_lease
    registry.clear(drained)
    assert registry.drain_key(found.endpoint.id) not in world.store.kv


@pytest.mark.parametrize(
    "value, expected",
    [(b'{"revision": 7}', {"lb1": 7}), (b'{"revision": "7"}', {}), (b"[]", {}), (b"nope", {})],
    ids=["int", "string", "list", "not-json"],
)
def test_lb_revisions_read_only_well_formed_reports(value: bytes, expected: dict[str, int]) -> None:
    store = FakeStore([])
    store.put("/lbgen/lb/lb1", value)
    assert Registry(store, "/lbgen").lb_revisions() == expected


def test_status_shows_registration_lb_and_missing_replicas() -> None:
    world = _deployed_v1()
    assert world.docker and world.deployer
    world.clock.sleep(0.5)  # the LB applies the latest revision
    rows, lbs = replica_status(make_spec(env={"VERSION": "2"}, replicas=4), world.docker.list_containers(),
                               world.deployer.registry)
    assert list(lbs) == ["lb1"]
    cells = [row.cells(registry=True) for row in rows]
    assert [c[0] for c in cells] == ["web.1", "web.2", "web.3", "web.4"]
    assert cells[0][1:] == ("demo-web-1-p18081", "18081", "running", "healthy", "stale",
                            "host-a.demo-web-1-p18081.18081", "1", "lb1")
    assert cells[3][1] == "(missing)"


def test_status_without_registry() -> None:
    world = make_world(registry=False)
    world.deploy(V1)
    assert world.docker
    rows, lbs = replica_status(V1, world.docker.list_containers(), None)
    assert lbs == {} and [r.cells(registry=False)[5:] for r in rows][0] == ("current", "-", "", "-")


def test_without_lb_nodes_it_does_not_wait_for_them() -> None:
    world = make_world()
    assert world.lb
    world.clock.on_sleep.remove(world.lb.tick)
    assert world.deploy(V1).error is None
    assert ("web.1", "no LB node reports an applied revision: not waiting for one (serving demo-web-1-p18081)") \
        in world.progress


def test_a_failed_stop_ends_the_run_and_still_drops_the_drain_marker() -> None:
    world = _deployed_v1()
    assert world.docker and world.store

    def refuse(container_id: str, timeout: float) -> None:
        raise DockerError("docker stop: 500 device or resource busy")

    world.docker.stop = refuse  # type: ignore[method-assign]
    outcome = world.deploy(V2)
    assert isinstance(outcome.error, DockerError) and outcome.done == ()
    assert not [k for k in world.store.kv if "/drain/" in k]


# --- the drain handshake: stop only once every LB node applied the drain, bounded by drain_timeout ---

SCALE_DOWN = make_spec(env={"VERSION": "1"}, replicas=2, update={"drain": "2s", "drain_timeout": "7s"})


def _web3(world: World) -> list[str]:
    return [m for s, m in world.progress if s == "web.3"]


def test_the_old_replica_stops_only_after_a_slow_lb_applied_the_drain() -> None:
    world = _deployed_v1()
    assert world.lb and world.store and world.docker
    lb, store, docker, slow = world.lb, world.store, world.docker, {"ticks": 0}
    drains: list[int] = []  # revisions of the weight-0 writes
    applied_at_stop: list[int] = []  # lb1's applied revision when each stop was called
    put, stop = store.put, docker.stop

    def tick_every_fourth_sleep() -> None:  # an LB node that takes 4 polls to apply anything
        slow["ticks"] += 1
        lb.frozen = slow["ticks"] % 4 != 0

    def recording_put(key: str, value: bytes, lease: int = 0) -> int:
        revision = put(key, value, lease)
        drains.extend([revision] if "/endpoints/" in key and b'"weight":0' in value else [])
        return revision

    def recording_stop(container_id: str, timeout: float) -> None:
        applied_at_stop.append(json.loads(store.kv["/lbgen/lb/lb1"].value)["revision"])
        stop(container_id, timeout)

    world.clock.on_sleep.insert(0, tick_every_fourth_sleep)
    store.put, docker.stop = recording_put, recording_stop  # type: ignore[method-assign]
    assert world.deploy(SCALE_DOWN).error is None
    assert len(drains) == len(applied_at_stop) == 1 and applied_at_stop[0] >= drains[0], (drains, applied_at_stop)
    assert not [m for m in _web3(world) if m.startswith("warning")]


def test_a_stale_lb_is_waited_for_up_to_drain_timeout_then_named() -> None:
    world = _deployed_v1()
    assert world.lb
    world.lb.frozen = True
    started = world.clock.now()
    outcome = world.deploy(SCALE_DOWN)
    assert outcome.error is None
    warning = next(m for m in _web3(world) if m.startswith("warning"))
    assert "LB nodes did not apply revision " in warning and "(the drain) in time: lb1 at revision " in warning
    assert warning.endswith("; stopping anyway after 7s")
    assert _web3(world).index(warning) < next(i for i, m in enumerate(_web3(world)) if m.startswith("stopping"))
    assert world.clock.now() - started >= 7 + 2  # fake time: drain_timeout, then the drain itself


def test_an_lb_whose_status_vanishes_during_the_drain_is_named_not_ignored() -> None:
    world = _deployed_v1()
    assert world.store
    store, lb2 = world.store, FakeLB(world.store, node="lb2")
    lb2.tick()

    def lb2_dies_at_the_drain() -> None:  # its lease expires: the key goes, its LB still routes
        if any("/drain/" in k for k in store.kv) and not lb2.frozen:
            lb2.frozen = True
            store.delete(lb2.key)
        lb2.tick()

    world.clock.on_sleep.append(lb2_dies_at_the_drain)
    assert world.deploy(SCALE_DOWN).error is None
    warning = next(m for m in _web3(world) if m.startswith("warning"))
    assert "in time: lb2 stopped reporting its status; stopping anyway" in warning

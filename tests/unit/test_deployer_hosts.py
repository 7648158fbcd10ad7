"""The rolling executor and the CLI across two fake Docker hosts, each with its own agent."""

from __future__ import annotations

from typing import Any

import pytest

from lbgen.cli import deploy as cli
from lbgen.core.deploy_plan import plan_deploy
from lbgen.core.deploy_spec import DeploySpec, parse_deploy_spec
from lbgen.errors import DeployError, DockerError
from lbgen.services.deploy_registry import Registry
from lbgen.services.deploy_status import replica_status
from lbgen.services.deployer import Deployer
from lbgen.services.host_docker import HostDocker
from tests.unit.deploy_fakes import FakeAgent, FakeClock, FakeDocker, FakeLB, FakeStore

HOSTS = {"host-a": {"docker": "unix:///a.sock", "address": "127.0.0.2"},
         "host-b": {"docker": "unix:///b.sock", "address": "127.0.0.3"}}
FAST = {"drain": "1s", "health_timeout": "10s", "register_timeout": "5s"}


def spec(version: str, **top: Any) -> DeploySpec:
    web = {"image": "img:1", "replicas": 3, "port": 18081, "env": {"V": version}, "update": FAST}
    return parse_deploy_spec({"project": "demo", "hosts": HOSTS, "services": {"web": web}, **top}, "demo")


class Fleet:
    """Two fake hosts with their agents, one LB; `agent_b` as the second host's agent registers."""

    def __init__(self, agent_b: tuple[str, str] = ("host-b", "127.0.0.3")) -> None:
        self.log: list[tuple[str, ...]] = []
        self.clock, self.store = FakeClock(), FakeStore(self.log)
        self.dockers = {"host-a": FakeDocker(log=self.log), "host-b": FakeDocker(log=self.log)}
        agents = [FakeAgent(self.dockers["host-a"], self.store, node="host-a", address="127.0.0.2"),
                  FakeAgent(self.dockers["host-b"], self.store, node=agent_b[0], address=agent_b[1])]
        self.clock.on_sleep += [a.tick for a in agents] + [FakeLB(self.store).tick]
        self.registry = Registry(self.store, "/lbgen")

    def deploy(self, wanted: DeploySpec) -> Any:
        listed = {name: d.list_containers(include_stopped=True) for name, d in self.dockers.items()}
        deployer = Deployer(self.dockers, self.clock, self.registry, poll=0.5, hosts=wanted.hosts)
        return deployer.apply(plan_deploy(wanted, listed))

    def names(self, host: str) -> list[str]:
        return sorted(c.name for c in self.dockers[host].containers.values())


def test_each_replica_starts_on_its_host_and_an_update_rolls_across_both() -> None:
    fleet = Fleet()
    assert fleet.deploy(spec("1")).error is None
    assert (fleet.names("host-a"), fleet.names("host-b")) == (
        ["demo-web-1-p18081", "demo-web-3-p18082"], ["demo-web-2-p18081"])
    fleet.log.clear()
    assert fleet.deploy(spec("2")).error is None
    creates = [entry[1] for entry in fleet.log if entry[0] == "create"]
    assert creates == ["demo-web-1-p18083", "demo-web-2-p18082", "demo-web-3-p18081"]
    assert {c.env["V"] for d in fleet.dockers.values() for c in d.containers.values()} == {"2"}
    rows, _ = replica_status(spec("2"), {n: d.list_containers() for n, d in fleet.dockers.items()}, fleet.registry)
    assert [(r.host, r.subject, r.config, r.served_by) for r in rows] == [
        ("host-a", "web.1", "current", ("lb1",)), ("host-a", "web.3", "current", ("lb1",)),
        ("host-b", "web.2", "current", ("lb1",))]


def test_a_replica_registered_by_another_hosts_agent_does_not_count() -> None:
    fleet = Fleet(agent_b=("host-a", "127.0.0.2"))  # host-b's agent misconfigured as host-a
    outcome = fleet.deploy(spec("1"))
    assert isinstance(outcome.error, DeployError)
    assert str(outcome.error) == (
        "web.2@host-b: demo-web-2-p18081 not registered as healthy after 5s (is `lbgen agent` running on "
        "host host-b (unix:///b.sock) as node host-b with --host-ip 127.0.0.3?; seen registered by node "
        "host-a at 127.0.0.2)")
    assert fleet.names("host-b") == []  # rolled back


class Down:
    """A daemon that does not answer."""

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[Any]:
        raise DockerError("docker list containers: cannot connect to the Docker daemon unix:///b.sock: refused")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_an_unreachable_host_is_named_and_the_policy_says_whether_the_others_go_on(
        policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    wanted = spec("1", on_host_error=policy)
    dockers: Any = {"host-a": FakeDocker(log=[]), "host-b": HostDocker(wanted.host("host-b"), Down())}  # type: ignore[arg-type]
    if policy == "stop":
        with pytest.raises(DockerError) as raised:
            cli._containers(dockers, wanted)
        assert str(raised.value) == ("host host-b (unix:///b.sock): docker list containers: cannot connect to the "
                                     "Docker daemon unix:///b.sock: refused (on_host_error: stop; nothing was changed)")
        return
    found, unreachable = cli._containers(dockers, wanted)
    assert list(found) == ["host-a"] and list(unreachable) == ["host-b"]
    assert "warning: host host-b (unix:///b.sock): docker list" in capsys.readouterr().out
    with pytest.raises(DockerError, match=r"^1 host\(s\) left out, unreachable: host-b$"):
        cli._execute({"host-a": FakeDocker(log=[])}, None, plan_deploy(wanted, found, unreachable=unreachable),
                      wanted, unreachable)


def test_status_groups_replicas_by_host() -> None:
    fleet = Fleet()
    fleet.deploy(spec("1"))
    rows, lbs = replica_status(spec("1"), {"host-a": fleet.dockers["host-a"].list_containers()}, fleet.registry)
    lines = cli.format_status(spec("1"), rows, lbs, True, {"host-b": "refused"})
    assert lines[2].startswith("host host-a (unix:///a.sock), agent host-a at 127.0.0.2: 2 replica(s), 2 healthy")
    assert lines[3].startswith("web.1    demo-web-1-p18081")
    assert lines[5] == "host host-b (unix:///b.sock), agent host-b at 127.0.0.3: UNREACHABLE: refused"
    assert lines[6].startswith("web.2    (missing)")

"""The simulated part of the fleet bench: Docker hosts and their agents, in one process.

Each host is a `SimDocker` (the `lbgen.ports.Docker` port: list, inspect, an events stream with
close) and a real `lbgen.services.agent.Agent` on its own `EtcdStore` (its own gRPC connection and
lease, as a real agent has). `Fleet.churn` replaces containers the way deploys do: a new container
of the same service starts (a `start` event), then an old one dies (a `die` event), so each
creation is one endpoint added and one removed. `FleetStore` lets a host "lose power": every call
fails from then on, so the agent neither revokes nor keeps alive, and etcd expires its lease.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from lbgen.adapters import etcd_connection
from lbgen.adapters.etcd_connection import EtcdConfig, EtcdConnection
from lbgen.adapters.etcd_store import EtcdStore
from lbgen.core.discovery import DiscoveryOptions
from lbgen.errors import DockerError, StoreUnavailable
from lbgen.core.values import ContainerInfo, ContainerSpec, DockerEvent
from lbgen.services.agent import Agent, AgentConfig

PORT_BASE = 20000
_CLOSED = object()
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


def own_connections() -> None:
    """gRPC shares one connection between channels to the same address unless told otherwise; a
    real agent has a connection of its own, so each simulated one gets its own too."""
    if OWN_CONNECTION not in etcd_connection.GRPC_OPTIONS:
        etcd_connection.GRPC_OPTIONS = (*etcd_connection.GRPC_OPTIONS, OWN_CONNECTION)


class SimEvents:
    """One subscriber's Docker event stream: iterates until `close()`."""

    def __init__(self, docker: SimDocker) -> None:
        self._docker = docker
        self._queue: queue.Queue[object] = queue.Queue()

    def __iter__(self) -> Iterator[DockerEvent]:
        while (item := self._queue.get()) is not _CLOSED:
            yield item  # type: ignore[misc]

    def push(self, event: DockerEvent) -> None:
        self._queue.put(event)

    def close(self) -> None:
        self._docker.unsubscribe(self)
        self._queue.put(_CLOSED)


class SimDocker:
    """A Docker daemon's containers in memory; `run`/`kill` change them and emit the events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._containers: dict[str, ContainerInfo] = {}
        self._streams: list[SimEvents] = []

    def events(self) -> SimEvents:
        stream = SimEvents(self)
        with self._lock:
            self._streams.append(stream)
        return stream

    def unsubscribe(self, stream: SimEvents) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        with self._lock:
            return list(self._containers.values())

    def inspect(self, container_id: str) -> ContainerInfo | None:
        with self._lock:
            return self._containers.get(container_id)

    def run(self, info: ContainerInfo) -> None:
        with self._lock:
            self._containers[info.id] = info
        self._emit("start", info)

    def kill(self, container_id: str) -> None:
        with self._lock:
            info = self._containers.pop(container_id)
        self._emit("die", info)

    def _emit(self, action: str, info: ContainerInfo) -> None:
        event = DockerEvent("container", action, info.id, time.time(), info.name)
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.push(event)

    def create_and_start(self, spec: ContainerSpec) -> str:
        raise DockerError("simulated Docker: deploy is not simulated")

    def stop(self, container_id: str, timeout: float) -> None:
        raise DockerError("simulated Docker: deploy is not simulated")

    def remove(self, container_id: str) -> None:
        raise DockerError("simulated Docker: deploy is not simulated")

    def close(self) -> None:
        pass


class PoweredConnection(EtcdConnection):
    """An agent's etcd connection; once `powered` is False every call fails as if the host were gone."""

    powered = True

    def call(self, op: str, fn: Any) -> Any:
        if not self.powered:
            raise StoreUnavailable(f"etcd: {op}: simulated host is powered off")
        return super().call(op, fn)


class FleetStore(EtcdStore):
    """An agent's `EtcdStore` on a `PoweredConnection`: after `power_off()` every call fails."""

    def __init__(self, config: EtcdConfig) -> None:
        self.power = PoweredConnection(config)
        super().__init__(config, connection=self.power)

    @property
    def powered(self) -> bool:
        return self.power.powered

    def power_off(self) -> None:
        self.power.powered = False


@dataclass
class Host:
    """One simulated Docker host: its daemon, its agent and the thread running the agent."""

    name: str
    ip: str
    docker: SimDocker
    store: FleetStore
    agent: Agent
    thread: threading.Thread
    seq: int = 0
    live: dict[str, str] = field(default_factory=dict)  # container id → endpoint id

    def start_container(self, service: str) -> str:
        """A new container of `service` (host network, one exposed port); returns its endpoint id."""
        self.seq += 1
        name, port = f"{service}-{self.seq}", PORT_BASE + self.seq
        info = ContainerInfo(id=uuid.uuid4().hex * 2, name=name, image="bench/app:1", state="running",
                             health="none", labels={"lbgen.service": service}, env={}, network_mode="host",
                             exposed_ports=(port,))
        endpoint = f"{self.name}.{name}.{port}"
        self.live[info.id] = endpoint
        self.docker.run(info)
        return endpoint

    def kill_container(self, container_id: str) -> str:
        endpoint = self.live.pop(container_id)
        self.docker.kill(container_id)
        return endpoint


class Fleet:
    """`hosts` hosts of `containers` containers each, spread over `services` services."""

    def __init__(self, endpoints: tuple[tuple[str, int], ...], prefix: str, hosts: int, containers: int,
                 services: int, ttl: int, resync: float, seed: int = 1) -> None:
        own_connections()
        self.prefix, self.ttl = prefix, ttl
        self.services = [f"svc{i:04d}" for i in range(services)]
        self.rand = random.Random(seed)
        self.lock = threading.Lock()  # the churn threads and the bench's own reads
        self.hosts = [self._host(i, endpoints, resync) for i in range(hosts)]
        self._containers = containers

    def _host(self, i: int, endpoints: tuple[tuple[str, int], ...], resync: float) -> Host:
        name, ip = f"host{i:04d}", f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"
        store = FleetStore(EtcdConfig(endpoints=endpoints))
        docker = SimDocker()
        config = AgentConfig(prefix=self.prefix, options=DiscoveryOptions(node=name, host_ip=ip), ttl=self.ttl,
                             resync_interval=resync)
        agent = Agent(store, docker, config)
        thread = threading.Thread(target=agent.run, name=f"agent-{name}", daemon=True)
        return Host(name, ip, docker, store, agent, thread)

    def populate(self) -> None:
        """Every host's initial containers (before the agents start: their first listing finds them)."""
        for h, host in enumerate(self.hosts):
            for c in range(self._containers):
                host.start_container(self.services[(h * self._containers + c) % len(self.services)])

    def start(self) -> None:
        for host in self.hosts:
            host.thread.start()

    def truth(self) -> set[str]:
        """Every endpoint id that should be registered now (live containers of live hosts)."""
        with self.lock:
            return {e for host in self.hosts if host.store.powered for e in host.live.values()}

    def replace_one(self) -> tuple[str, str]:
        """One deploy step: a new container of a random live container's service on a random live
        host, then that old container dies. Returns (endpoint added, endpoint removed)."""
        with self.lock:
            alive = [h for h in self.hosts if h.store.powered and h.live]
            old_host = self.rand.choice(alive)
            cid = self.rand.choice(list(old_host.live))
            service = old_host.docker.inspect(cid).labels["lbgen.service"]  # type: ignore[union-attr]
            added = self.rand.choice(alive).start_container(service)
            removed = old_host.kill_container(cid)
        return added, removed

    def power_off(self, host: Host) -> None:
        """The host dies: no revoke, no more keep-alives; its keys go when etcd expires the lease."""
        with self.lock:
            host.store.power_off()
        host.agent.stop()

    def stop(self) -> None:
        """Stop every agent (a clean stop revokes its lease); close their clients."""
        for host in self.hosts:
            host.agent.stop()
        for host in self.hosts:
            host.thread.join(timeout=15)
            host.store.close()


def quiet_agent_logs() -> None:
    """200 agents logging every registration would cost more CPU than they do."""
    logging.getLogger("lbgen").setLevel(logging.WARNING)

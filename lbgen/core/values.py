"""The values lbgen's ports carry (issue 11): registry keys and snapshots, watch events, commands'
results, containers and LB generations. Plain frozen msgspec Structs, so the core can use them
without importing the ports (`lbgen.ports` holds only the Protocols that speak them)."""

from __future__ import annotations

from typing import Mapping

import msgspec


class KeyValue(msgspec.Struct, frozen=True, gc=False):
    """One registry key as stored: raw bytes, the revision that last changed it, its lease (0 = none).

    A msgspec Struct rather than a frozen dataclass (issue 13): a snapshot of 110,000 keys built
    them in 0.6 us each instead of 0.1, and held them 100 bytes larger (a __dict__ each)."""

    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


class Snapshot(msgspec.Struct, frozen=True):
    """Every key under a prefix at exactly one revision.

    `cluster_id` identifies the backend's data set: when it changes, or the revision goes
    backwards, the backend was restored from scratch and watchers must re-snapshot.
    """

    revision: int
    items: tuple[KeyValue, ...]
    cluster_id: str = ""


class WatchEvent(msgspec.Struct, frozen=True, gc=False):
    """A put or a delete of one key, at `revision`."""

    kind: str  # "put" | "delete"
    key: str
    value: bytes
    revision: int


class CommandResult(msgspec.Struct, frozen=True):
    """What a finished command left: exit code (None when killed at its timeout) and its output."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class PortBinding(msgspec.Struct, frozen=True):
    """A container port published on the host (`HostIp:HostPort` → `container_port/protocol`)."""

    container_port: int
    protocol: str
    host_ip: str
    host_port: int


class ContainerInfo(msgspec.Struct, frozen=True):
    """What lbgen needs to know of one container, read from `docker inspect`.

    `health` is the Docker HEALTHCHECK status (`healthy|starting|unhealthy`), or `none` when the
    container has no health check. `networks` maps network name → the container's IP on it.
    """

    id: str
    name: str
    image: str
    state: str
    health: str
    labels: Mapping[str, str]
    env: Mapping[str, str]
    network_mode: str
    exposed_ports: tuple[int, ...] = ()
    bindings: tuple[PortBinding, ...] = ()
    networks: Mapping[str, str] = {}


class DockerEvent(msgspec.Struct, frozen=True):
    """One event from the Docker daemon (type `container`, action `start`, `die`, `health_status: healthy`...)."""

    type: str
    action: str
    id: str
    time: float
    name: str = ""  # the container's name (Actor.Attributes.name), for logs: a destroyed one cannot be inspected


class ContainerSpec(msgspec.Struct, frozen=True):
    """What `deploy` asks Docker to create (a subset of the Engine API's container create body)."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = {}
    labels: Mapping[str, str] = {}
    network_mode: str = "host"
    ports: Mapping[int, int] = {}  # container port → host port (bridge only)
    host_ip: str = ""  # the host address published ports bind to ("": every address)
    mem_limit: int = 0  # bytes, 0 = unlimited
    nano_cpus: int = 0  # 1e9 = one CPU, 0 = unlimited
    mounts: tuple[tuple[str, str, bool], ...] = ()  # (host path, container path, read_only)
    restart_policy: str = "no"
    healthcheck: Mapping[str, object] | None = None  # Engine API HealthConfig


class Generation(msgspec.Struct, frozen=True):
    """One observed generation of a running load balancer: its master and worker processes.

    `reloads`/`failed` are the master's own counters when it has them (HAProxy's `show proc`).
    """

    master: int
    workers: frozenset[int]
    reloads: int = 0
    failed: int = 0

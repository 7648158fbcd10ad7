"""Deploy specs (`lbgen deploy`, docs/deploy.md): a loaded YAML mapping → validated `DeploySpec`.

Every value is checked before anything is started; a bad one raises `ConfigError` naming its
field path (`services.web.replicas: expected an integer from 0 to 1000, got -1`). Unknown keys are errors,
so a typo never silently falls back to a default.

Each replica gets its own host port from the service's port pool (host networking cannot share
a port), and the port is handed to the container as the env `PORT` and as `${PORT}` in its
command and health-check arguments. The config hash covers everything that requires a new
container when it changes, and nothing per replica, so replicas of one spec share it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable, Mapping, TypeVar

import msgspec
from msgspec.structs import asdict

from lbgen.core.bounded import quote
from lbgen.core.deploy_checks import argv, choice, cpu_count, duration, int_in, mapping, matching, memory_size
from lbgen.core.deploy_hosts import (
    IMPLICIT, SPREAD, DockerHost, ip_address, on_host_error, parse_hosts, parse_placement,
)
from lbgen.core.deploy_parts import (
    HealthCheck, parse_env, parse_healthcheck, parse_logs, parse_volumes, with_port,
)
from lbgen.core.fields import Section
from lbgen.core.schema import MAX_WEIGHT, NAME_RE
from lbgen.errors import ConfigError
from lbgen.core.values import ContainerSpec

T = TypeVar("T")

SPEC_VERSION = 1
LABEL_SERVICE = "lbgen.service"
LABEL_PORT = "lbgen.port"
LABEL_WEIGHT = "lbgen.weight"
# The agent reads `lbgen.<port>.service|weight|tags` as per-port labels: deploy's own labels under
# `lbgen.deploy.` must never end in those words. A replica's service is its `lbgen.service`.
LABEL_PROJECT = "lbgen.deploy.project"
LABEL_REPLICA = "lbgen.deploy.replica"
LABEL_HOST_PORT = "lbgen.deploy.port"
LABEL_CONFIG_HASH = "lbgen.deploy.config-hash"

NETWORKS = ("host", "bridge")
ORDERS = ("start-first", "stop-first")
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
RANGE_RE = re.compile(r"(\d{1,5})-(\d{1,5})")


class UpdatePolicy(msgspec.Struct, frozen=True):
    """How replicas are replaced: batch size, order, and how long each wait may take (seconds)."""

    parallelism: int = 1
    order: str = "start-first"
    drain: float = 5.0
    drain_timeout: float = 30.0
    health_timeout: float = 60.0
    register_timeout: float = 30.0
    stop_timeout: float = 10.0
    min_healthy: int = 0


class PortPool(msgspec.Struct, frozen=True):
    """The host ports a service's containers may take, `first..last` inclusive."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


class ServiceSpec(msgspec.Struct, frozen=True):
    """One service of a deploy spec, validated. `name` is also its registry service name."""

    name: str
    image: str
    replicas: int
    pool: PortPool
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = {}
    network: str = "host"
    container_port: int = 0  # bridge only: the port the app listens on inside
    host_ip: str = ""  # bridge only: the host address its ports are published on ("": every address)
    cpus: float = 0.0
    memory: int = 0
    logs: tuple[str, str] | None = None  # (host dir, container dir), shared by the replicas
    volumes: tuple[tuple[str, str, bool], ...] = ()
    restart: str = "unless-stopped"
    healthcheck: HealthCheck | None = None  # None: the image's own HEALTHCHECK
    weight: int = 1
    update: UpdatePolicy = UpdatePolicy()
    placement: Mapping[str, int] = {}  # host name → replicas ("": implicit host)

    def config_hash(self, bind: str = "") -> str:
        """sha256 of every setting that needs a new container when it changes (not ports, not policy).

        `bind` is the replica's host's bind address: set only on hosts that have one, so the hash of
        a spec without `hosts:` is what it always was (no surprise recreate)."""
        settings = {
            "version": SPEC_VERSION, "image": self.image, "command": self.command, "env": dict(self.env),
            "network": self.network, "container_port": self.container_port, "cpus": self.cpus,
            "memory": self.memory, "logs": self.logs, "volumes": self.volumes, "restart": self.restart,
            "healthcheck": self.healthcheck and asdict(self.healthcheck), "weight": self.weight,
            "service": self.name, **({"host_ip": self.host_ip} if self.host_ip else {}),
            **({"bind": bind} if bind else {}),
        }
        canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def container_spec(self, project: str, replica: int, port: int, host: DockerHost = IMPLICIT) -> ContainerSpec:
        """What to ask `host`'s Docker for: replica `replica` of this service on host port `port`."""
        name = container_name(project, self.name, replica, port)
        app_port = self.container_port if self.network == "bridge" else port
        bind = host.bind
        labels = {
            LABEL_SERVICE: self.name, LABEL_PORT: str(app_port), LABEL_WEIGHT: str(self.weight),
            LABEL_PROJECT: project, LABEL_REPLICA: str(replica),
            LABEL_HOST_PORT: str(port), LABEL_CONFIG_HASH: self.config_hash(bind),
        }
        mounts = ((self.logs[0], self.logs[1], False),) + self.volumes if self.logs else self.volumes
        return ContainerSpec(
            name=name, image=self.image, command=with_port(self.command, app_port, bind),
            env={**self.env, "PORT": str(app_port), **({"BIND": bind} if bind else {})}, labels=labels,
            network_mode=self.network, ports={self.container_port: port} if self.network == "bridge" else {},
            host_ip=self.host_ip or bind, mem_limit=self.memory, nano_cpus=int(self.cpus * 1e9), mounts=mounts,
            restart_policy=self.restart,
            healthcheck=self.healthcheck.to_engine(app_port, bind) if self.healthcheck else None,
        )


class DeploySpec(msgspec.Struct, frozen=True):
    """A whole spec: the project (which owns the containers) and its services, sorted by name."""

    project: str
    services: tuple[ServiceSpec, ...]
    hosts: tuple[DockerHost, ...] = ()  # empty: one implicit host, `--docker-host`
    on_host_error: str = "stop"  # an unreachable host stops the run, or the others `continue`

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)

    def host(self, name: str) -> DockerHost:
        return next((h for h in self.hosts if h.name == name), IMPLICIT)

    @property
    def all_hosts(self) -> tuple[DockerHost, ...]:
        return self.hosts or (IMPLICIT,)


def container_name(project: str, service: str, replica: int, port: int) -> str:
    """`{project}-{service}-{replica}-p{port}`: unique, since a port is held by one container at a time."""
    return f"{project}-{service}-{replica}-p{port}"


def _port_range(value: Any) -> PortPool:
    match = RANGE_RE.fullmatch(value) if isinstance(value, str) else None
    first, last = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not (match and 1 <= first <= last <= 65535):
        raise ValueError(f"expected a port range like 18081-18090, got {quote(value)}")
    return PortPool(first, last)


def _update(path: str, value: Any, replicas: int) -> UpdatePolicy:
    fields = Section(value, path)
    parallelism = fields.take("parallelism", int_in(1), 1)
    order = fields.take("order", choice(ORDERS), "start-first")
    policy = UpdatePolicy(
        parallelism=parallelism,
        order=order,
        drain=fields.take("drain", duration, 5.0),
        drain_timeout=fields.take("drain_timeout", duration, 30.0),
        health_timeout=fields.take("health_timeout", duration, 60.0),
        register_timeout=fields.take("register_timeout", duration, 30.0),
        stop_timeout=fields.take("stop_timeout", duration, 10.0),
        min_healthy=fields.take("min_healthy", int_in(0, replicas), max(0, replicas - parallelism)),
    )
    fields.done()
    if order == "stop-first" and policy.min_healthy > replicas - min(parallelism, replicas):
        raise ConfigError(
            f"{path}.min_healthy: {policy.min_healthy} cannot hold while stop-first takes down "
            f"{parallelism} of {replicas} replicas at once (at most {max(0, replicas - parallelism)})"
        )
    return policy


def _pool(fields: Section, given: dict[str, Any], replicas: int, update: UpdatePolicy) -> PortPool:
    """`port: N` → N onwards, one per replica (on the busiest host) plus the spares start-first needs;
    `ports: A-B` as is. Each host has its own ports, so hosts share the pool."""
    spares = update.parallelism if update.order == "start-first" else 0
    needed = max(1, replicas + spares)
    if "ports" in given and "port" in given:
        raise ConfigError(f"{fields.field('ports')}: give either port or ports, not both")
    if "ports" in given:
        pool = fields.take("ports", _port_range)
        if pool.size < needed:
            raise ConfigError(
                f"{fields.field('ports')}: {pool} holds {pool.size} ports; {replicas} replicas "
                f"need {needed} ({spares} spare for a {update.order} update of {update.parallelism})"
            )
        return pool
    base = fields.take("port", int_in(1, 65535))
    if base + needed - 1 > 65535:
        raise ConfigError(f"{fields.field('port')}: {base} + {needed} ports passes 65535")
    return PortPool(base, base + needed - 1)


def _nested(fields: Section, key: str, parse: Callable[[str, Any], T]) -> Callable[[Any], T]:
    """A parser for `key` that knows its own field path (for mappings with their own keys)."""
    return lambda value: parse(fields.field(key), value)


def _network(fields: Section) -> tuple[str, int, str]:
    """`network`, `container_port` and `host_ip`, which only make sense together."""
    network = fields.take("network", choice(NETWORKS), "host")
    container_port = fields.take("container_port", int_in(1, 65535), 0)
    if (network == "bridge") != bool(container_port):
        raise ConfigError(f"{fields.field('container_port')}: required with network: bridge, and only then")
    host_ip = fields.take("host_ip", ip_address, "")
    if host_ip and network != "bridge":
        raise ConfigError(f"{fields.field('host_ip')}: only with network: bridge (host networking publishes nothing)")
    return network, container_port, host_ip


def _placement(fields: Section, hosts: tuple[DockerHost, ...]) -> dict[str, int]:
    """Replicas per host: `replicas` spread over the hosts, or `placement: {host: count}`."""
    replicas = fields.take("replicas", int_in(0, 1000), None)
    placement = fields.take("placement", lambda v: v, SPREAD)
    return parse_placement(fields.field("placement"), placement, hosts, replicas)


def _service(name: str, value: Any, hosts: tuple[DockerHost, ...]) -> ServiceSpec:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"services.{name}: expected a service name of letters, digits and _.- (docs/registry.md)")
    fields = Section(value, f"services.{name}")
    placement = _placement(fields, hosts)
    replicas = sum(placement.values())
    update = _update(fields.field("update"), fields.take("update", mapping, {}), replicas)
    network, container_port, host_ip = _network(fields)
    resources = Section(fields.take("resources", mapping, {}), fields.field("resources"))
    spec = ServiceSpec(
        name=name,
        image=fields.take("image", matching(IMAGE_RE, "an image reference like lbgen-demo:1")),
        replicas=replicas,
        pool=_pool(fields, value if isinstance(value, dict) else {}, max(placement.values()), update),
        command=fields.take("command", argv, ()),
        env=fields.take("env", _nested(fields, "env", parse_env), {}),
        network=network, container_port=container_port, host_ip=host_ip,
        cpus=resources.take("cpus", cpu_count, 0.0),
        memory=resources.take("memory", memory_size, 0),
        logs=fields.take("logs", _nested(fields, "logs", parse_logs), None),
        volumes=fields.take("volumes", _nested(fields, "volumes", parse_volumes), ()),
        restart=fields.take("restart", choice(RESTART_POLICIES), "unless-stopped"),
        healthcheck=fields.take("healthcheck", _nested(fields, "healthcheck", parse_healthcheck), None),
        weight=fields.take("weight", int_in(0, MAX_WEIGHT), 1),
        update=update, placement=placement,
    )
    resources.done()
    fields.done()
    return spec


def _check_bind_env(services: tuple[ServiceSpec, ...], hosts: tuple[DockerHost, ...]) -> None:
    """On a host with a bind address lbgen sets `BIND`; a service's own `BIND` would be overwritten."""
    bound = next((h.name for h in hosts if h.bind), "")
    for service in services:
        if bound and "BIND" in service.env:
            raise ConfigError(f"services.{service.name}.env.BIND: set by lbgen from hosts.{bound}.bind; remove it")


def _check_pools_apart(services: tuple[ServiceSpec, ...]) -> None:
    """Two services of one project must never be handed the same host port."""
    ordered = sorted(services, key=lambda s: s.pool.first)
    for low, high in zip(ordered, ordered[1:]):
        if high.pool.first <= low.pool.last:
            raise ConfigError(
                f"services.{high.name}: ports {high.pool} overlap services.{low.name} ports {low.pool}"
            )


def parse_deploy_spec(value: Any, default_project: str) -> DeploySpec:
    """Validate a loaded YAML document. `default_project` names the project when the spec does not."""
    if not isinstance(value, dict):
        raise ConfigError(f"spec: expected a mapping, got {type(value).__name__}")
    fields = Section(value, "")
    fields.take("version", choice((SPEC_VERSION,)), SPEC_VERSION)
    project = fields.take("project", matching(NAME_RE, "a name of letters, digits and _.-"), default_project)
    hosts = fields.take("hosts", parse_hosts, tuple[DockerHost, ...]())
    policy = fields.take("on_host_error", on_host_error, "stop")
    services = fields.take("services", mapping)
    fields.done()
    if not services:
        raise ConfigError("services: expected at least one service")
    parsed = tuple(_service(str(name), services[name], hosts) for name in sorted(services, key=str))
    _check_pools_apart(parsed)
    _check_bind_env(parsed, hosts)
    return DeploySpec(project=project, services=parsed, hosts=hosts, on_host_error=policy)

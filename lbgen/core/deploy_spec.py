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
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from lbgen.core.bounded import quote
from lbgen.core.deploy_checks import (
    argv, boolean, choice, cpu_count, duration, host_path, int_in, mapping, matching, memory_size,
)
from lbgen.core.fields import Section, expect_list
from lbgen.core.schema import MAX_WEIGHT, NAME_RE, is_ip, normalize_address
from lbgen.errors import ConfigError
from lbgen.ports import ContainerSpec

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
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RANGE_RE = re.compile(r"(\d{1,5})-(\d{1,5})")


@dataclass(frozen=True)
class HealthCheck:
    """A Docker HEALTHCHECK: `test` in Engine form (`CMD ...`, `CMD-SHELL ...` or `NONE`)."""

    test: tuple[str, ...]
    interval: float = 5.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 0.0

    def to_engine(self, port: int) -> dict[str, object]:
        """The Engine API HealthConfig (durations in ns), `${PORT}` replaced by `port`."""
        ns = 1_000_000_000
        return {
            "Test": list(with_port(self.test, port)),
            "Interval": int(self.interval * ns),
            "Timeout": int(self.timeout * ns),
            "Retries": self.retries,
            "StartPeriod": int(self.start_period * ns),
        }


@dataclass(frozen=True)
class UpdatePolicy:
    """How replicas are replaced: batch size, order, and how long each wait may take (seconds)."""

    parallelism: int = 1
    order: str = "start-first"
    drain: float = 5.0
    drain_timeout: float = 30.0
    health_timeout: float = 60.0
    register_timeout: float = 30.0
    stop_timeout: float = 10.0
    min_healthy: int = 0


@dataclass(frozen=True)
class PortPool:
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


@dataclass(frozen=True)
class ServiceSpec:
    """One service of a deploy spec, validated. `name` is also its registry service name."""

    name: str
    image: str
    replicas: int
    pool: PortPool
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
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

    def config_hash(self) -> str:
        """sha256 of every setting that needs a new container when it changes (not ports, not policy)."""
        settings = {
            "version": SPEC_VERSION, "image": self.image, "command": self.command, "env": dict(self.env),
            "network": self.network, "container_port": self.container_port, "cpus": self.cpus,
            "memory": self.memory, "logs": self.logs, "volumes": self.volumes, "restart": self.restart,
            "healthcheck": self.healthcheck and asdict(self.healthcheck), "weight": self.weight,
            "service": self.name, **({"host_ip": self.host_ip} if self.host_ip else {}),
        }
        canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def container_spec(self, project: str, replica: int, port: int) -> ContainerSpec:
        """What to ask Docker for: replica `replica` of this service on host port `port`."""
        name = container_name(project, self.name, replica, port)
        app_port = self.container_port if self.network == "bridge" else port
        labels = {
            LABEL_SERVICE: self.name, LABEL_PORT: str(app_port), LABEL_WEIGHT: str(self.weight),
            LABEL_PROJECT: project, LABEL_REPLICA: str(replica),
            LABEL_HOST_PORT: str(port), LABEL_CONFIG_HASH: self.config_hash(),
        }
        mounts = ((self.logs[0], self.logs[1], False),) + self.volumes if self.logs else self.volumes
        return ContainerSpec(
            name=name, image=self.image, command=with_port(self.command, app_port),
            env={**self.env, "PORT": str(app_port)}, labels=labels, network_mode=self.network,
            ports={self.container_port: port} if self.network == "bridge" else {}, host_ip=self.host_ip,
            mem_limit=self.memory, nano_cpus=int(self.cpus * 1e9), mounts=mounts,
            restart_policy=self.restart,
            healthcheck=self.healthcheck.to_engine(app_port) if self.healthcheck else None,
        )


@dataclass(frozen=True)
class DeploySpec:
    """A whole spec: the project (which owns the containers) and its services, sorted by name."""

    project: str
    services: tuple[ServiceSpec, ...]

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)


def container_name(project: str, service: str, replica: int, port: int) -> str:
    """`{project}-{service}-{replica}-p{port}`: unique, since a port is held by one container at a time."""
    return f"{project}-{service}-{replica}-p{port}"


def with_port(args: tuple[str, ...], port: int) -> tuple[str, ...]:
    """`args` with `${PORT}` replaced by the replica's port (for images without a shell)."""
    return tuple(a.replace("${PORT}", str(port)) for a in args)


def _env(path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of NAME: value, got {type(value).__name__}")
    env = {}
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise ConfigError(f"{path}.{name}: expected an env name like LOG_LEVEL")
        if name == "PORT":
            raise ConfigError(f"{path}.PORT: set by lbgen to each replica's port; remove it")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(f"{path}.{name}: expected a string or number, got {quote(item)}")
        env[name] = str(item)
    return dict(sorted(env.items()))


def _volume(value: Any) -> tuple[str, str, bool]:
    """`/host:/container` or `/host:/container:ro|rw`."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"expected /host/path:/container/path[:ro|rw], got {quote(value)}")
    return host_path(parts[0]), host_path(parts[1]), parts[2:] == ["ro"]


def _volumes(path: str, value: Any) -> tuple[tuple[str, str, bool], ...]:
    volumes = []
    for i, item in enumerate(expect_list(value)):
        try:
            volumes.append(_volume(item))
        except ValueError as e:
            raise ConfigError(f"{path}[{i}]: {e}") from e
    return tuple(volumes)


def _logs(path: str, value: Any) -> tuple[str, str]:
    fields = Section(value, path)
    logs = (fields.take("host", host_path), fields.take("container", host_path))
    fields.done()
    return logs


def _healthcheck(path: str, value: Any) -> HealthCheck:
    fields = Section(value, path)
    if fields.take("disable", boolean, False):
        fields.done()
        return HealthCheck(("NONE",))
    check = HealthCheck(
        fields.take("cmd", _cmd),
        interval=fields.take("interval", duration, 5.0),
        timeout=fields.take("timeout", duration, 3.0),
        retries=fields.take("retries", int_in(1, 100), 3),
        start_period=fields.take("start_period", duration, 0.0),
    )
    fields.done()
    return check


def _cmd(value: Any) -> tuple[str, ...]:
    """A list runs as argv (`CMD`), a string through the container's shell (`CMD-SHELL`)."""
    if isinstance(value, str) and value.strip():
        return ("CMD-SHELL", value)
    return ("CMD",) + argv(value)


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
    """`port: N` → N onwards, one per replica plus the spares start-first needs; `ports: A-B` as is."""
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


def _ip(value: Any) -> str:
    if not isinstance(value, str) or not is_ip(value):
        raise ValueError(f"expected an IP address of this host, got {quote(value)}")
    return normalize_address(value) or value


def _nested(fields: Section, key: str, parse: Callable[[str, Any], T]) -> Callable[[Any], T]:
    """A parser for `key` that knows its own field path (for mappings with their own keys)."""
    return lambda value: parse(fields.field(key), value)


def _service(name: str, value: Any) -> ServiceSpec:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"services.{name}: expected a service name of letters, digits and _.- (docs/registry.md)")
    fields = Section(value, f"services.{name}")
    given = value if isinstance(value, dict) else {}
    replicas = fields.take("replicas", int_in(0, 1000), 1)
    update = _update(fields.field("update"), fields.take("update", mapping, {}), replicas)
    network = fields.take("network", choice(NETWORKS), "host")
    container_port = fields.take("container_port", int_in(1, 65535), 0)
    if (network == "bridge") != bool(container_port):
        raise ConfigError(f"{fields.field('container_port')}: required with network: bridge, and only then")
    host_ip = fields.take("host_ip", _ip, "")
    if host_ip and network != "bridge":
        raise ConfigError(f"{fields.field('host_ip')}: only with network: bridge (host networking publishes nothing)")
    resources = Section(fields.take("resources", mapping, {}), fields.field("resources"))
    spec = ServiceSpec(
        name=name,
        image=fields.take("image", matching(IMAGE_RE, "an image reference like lbgen-demo:1")),
        replicas=replicas,
        pool=_pool(fields, given, replicas, update),
        command=fields.take("command", argv, ()),
        env=fields.take("env", _nested(fields, "env", _env), {}),
        network=network,
        container_port=container_port,
        host_ip=host_ip,
        cpus=resources.take("cpus", cpu_count, 0.0),
        memory=resources.take("memory", memory_size, 0),
        logs=fields.take("logs", _nested(fields, "logs", _logs), None),
        volumes=fields.take("volumes", _nested(fields, "volumes", _volumes), ()),
        restart=fields.take("restart", choice(RESTART_POLICIES), "unless-stopped"),
        healthcheck=fields.take("healthcheck", _nested(fields, "healthcheck", _healthcheck), None),
        weight=fields.take("weight", int_in(0, MAX_WEIGHT), 1),
        update=update,
    )
    resources.done()
    fields.done()
    return spec


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
    services = fields.take("services", mapping)
    fields.done()
    if not services:
        raise ConfigError("services: expected at least one service")
    parsed = tuple(_service(str(name), services[name]) for name in sorted(services, key=str))
    _check_pools_apart(parsed)
    return DeploySpec(project=project, services=parsed)

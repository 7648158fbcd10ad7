"""Deploy plans: a project's containers vs its spec → ordered steps (docker-compose's convergence plan).

Each replica converges through one step: `create` (missing), `recreate` (config hash, state or
port drifted), `keep`, or `remove` (scaled down, duplicate, or a service no longer in the spec
when orphans are removed). Changing steps are grouped into batches of the update policy's
`parallelism`, in the order they run: creates, then recreates, then removals.

Host ports are handed out here, so a dry run shows exactly what will happen: a start-first
batch takes free ports of the pool for its new containers and frees the old ones' ports after
it; a stop-first batch frees first and gives each new container its predecessor's port.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from lbgen.core.deploy_spec import (
    LABEL_CONFIG_HASH,
    LABEL_HOST_PORT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    DeploySpec,
    ServiceSpec,
    UpdatePolicy,
)
from lbgen.errors import ConfigError
from lbgen.ports import ContainerInfo, ContainerSpec

CHANGES = ("create", "recreate", "remove")


@dataclass(frozen=True)
class Deployed:
    """A container this project owns, as its labels describe it (bad labels read as 0 / empty)."""

    id: str
    name: str
    service: str
    replica: int
    port: int
    config_hash: str
    state: str
    health: str

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def healthy(self) -> bool:
        """Running and passing its health check (or having none): fit to serve."""
        return self.running and self.health in ("healthy", "none")


def read_deployed(info: ContainerInfo) -> Deployed:
    """The deploy labels of `info`, tolerating hand-edited or truncated ones."""
    labels = info.labels

    def number(key: str) -> int:
        value = labels.get(key, "")
        return int(value) if value.isdigit() else 0

    return Deployed(
        id=info.id, name=info.name, service=labels.get(LABEL_SERVICE, ""),
        replica=number(LABEL_REPLICA), port=number(LABEL_HOST_PORT),
        config_hash=labels.get(LABEL_CONFIG_HASH, ""), state=info.state, health=info.health,
    )


@dataclass(frozen=True)
class Step:
    """One replica's move. `old` is the container it replaces or keeps, `new` what it creates."""

    action: str  # create | recreate | keep | remove | orphan
    service: str
    replica: int
    reason: str = ""
    old: Deployed | None = None
    new: ContainerSpec | None = None
    port: int = 0  # the new container's host port

    @property
    def subject(self) -> str:
        return f"{self.service}.{self.replica}"

    def describe(self) -> str:
        """One line for the printed plan."""
        old = self.old.name if self.old else ""
        new = f"{self.new.name} :{self.port}" if self.new else ""
        arrow = " → " if old and new else ""
        return f"{self.action:<9} {self.subject:<14} {old}{arrow}{new}  {self.reason}".rstrip()


@dataclass(frozen=True)
class Batch:
    """Steps of one service run together under its update policy."""

    service: str
    steps: tuple[Step, ...]
    policy: UpdatePolicy


@dataclass(frozen=True)
class Plan:
    """Batches in execution order, plus the containers left as they are."""

    project: str
    batches: tuple[Batch, ...]
    untouched: tuple[Step, ...] = ()

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(step for batch in self.batches for step in batch.steps)

    @property
    def changes(self) -> bool:
        return bool(self.batches)

    def count(self, action: str) -> int:
        return sum(step.action == action for step in self.steps + self.untouched)

    def lines(self) -> list[str]:
        """The printable plan: a summary line, then each batch and the untouched containers."""
        counts = ", ".join(f"{self.count(a)} to {a}" for a in CHANGES)
        out = [f"project {self.project}: {counts}, {self.count('keep')} unchanged"]
        for number, batch in enumerate(self.batches, 1):
            out.append(f"  batch {number} ({batch.service}, {batch.policy.order}):")
            out.extend(f"    {step.describe()}" for step in batch.steps)
        out.extend(f"  {step.describe()}" for step in self.untouched)
        return out


class _Ports:
    """The service's host ports in use while the plan is played forward, batch by batch."""

    def __init__(self, service: ServiceSpec, in_use: Iterable[int]) -> None:
        self.service, self.in_use = service, set(in_use)

    def take(self, subject: str, prefer: int = 0) -> int:
        pool = self.service.pool
        if prefer in pool and prefer not in self.in_use:
            port = prefer
        else:
            free = (p for p in range(pool.first, pool.last + 1) if p not in self.in_use)
            port = next(free, 0)
        if not port:
            raise ConfigError(
                f"services.{self.service.name}: no free port in {pool} for {subject} "
                f"({len(self.in_use)} held by this service's containers); widen ports or remove leftovers"
            )
        self.in_use.add(port)
        return port

    def free(self, port: int) -> None:
        self.in_use.discard(port)


def _drift(deployed: Deployed, service: ServiceSpec) -> str:
    """Why `deployed` no longer matches the spec, or "" when it does."""
    if not deployed.running:
        return f"container is {deployed.state}"
    if deployed.config_hash != service.config_hash():
        return f"config changed ({deployed.config_hash[:8] or 'none'} → {service.config_hash()[:8]})"
    if deployed.port not in service.pool:
        return f"port {deployed.port} outside {service.pool}"
    return ""


def _best_first(containers: list[Deployed], service: ServiceSpec) -> list[Deployed]:
    """The container to keep for a replica first: in sync, then running, then healthy."""
    return sorted(containers, key=lambda d: (bool(_drift(d, service)), not d.running, not d.healthy, d.name))


def _chunks(steps: list[Step], size: int) -> list[list[Step]]:
    return [steps[i : i + size] for i in range(0, len(steps), size)]


def _with_port(step: Step, service: ServiceSpec, project: str, port: int) -> Step:
    new = service.container_spec(project, step.replica, port)
    return Step(step.action, step.service, step.replica, step.reason, step.old, new, port)


def _classify(service: ServiceSpec, mine: list[Deployed]) -> tuple[list[Step], list[Step], list[Step], list[Step]]:
    """Creates, recreates, keeps and removals of one service, each in replica order."""
    creates, recreates, keeps, removes = [], [], [], []
    for replica in range(1, service.replicas + 1):
        candidates = _best_first([d for d in mine if d.replica == replica], service)
        if not candidates:
            creates.append(Step("create", service.name, replica, "new replica"))
            continue
        first, extras = candidates[0], candidates[1:]
        reason = _drift(first, service)
        target = recreates if reason else keeps
        target.append(Step("recreate" if reason else "keep", service.name, replica, reason, first))
        removes += [Step("remove", service.name, replica, "duplicate replica", d) for d in extras]
    extra = sorted((d for d in mine if not 1 <= d.replica <= service.replicas), key=lambda d: d.name)
    removes += [Step("remove", service.name, d.replica, "scaled down", d) for d in extra]
    return creates, recreates, keeps, removes


def _recreate_batch(project: str, service: ServiceSpec, chunk: list[Step], ports: _Ports) -> list[Step]:
    """Ports for one recreate batch: start-first needs spares, stop-first reuses the old ports."""
    olds = [step.old.port if step.old else 0 for step in chunk]
    stop_first = service.update.order == "stop-first"
    if stop_first:
        for port in olds:
            ports.free(port)
    batch = [
        _with_port(step, service, project, ports.take(step.subject, old if stop_first else 0))
        for step, old in zip(chunk, olds)
    ]
    if not stop_first:
        for port in olds:
            ports.free(port)
    return batch


def _service_batches(project: str, service: ServiceSpec, mine: list[Deployed]) -> tuple[list[Batch], list[Step]]:
    """The batches that converge one service, and its kept replicas."""
    creates, recreates, keeps, removes = _classify(service, mine)
    ports, policy = _Ports(service, (d.port for d in mine)), service.update
    batches = [
        [_with_port(s, service, project, ports.take(s.subject)) for s in chunk]
        for chunk in _chunks(creates, policy.parallelism)
    ]
    for chunk in _chunks(recreates, policy.parallelism):
        batches.append(_recreate_batch(project, service, chunk, ports))
    if removes:
        batches.append(removes)
    return [Batch(service.name, tuple(b), policy) for b in batches], keeps


def plan_deploy(
    spec: DeploySpec, containers: Iterable[ContainerInfo], only: Sequence[str] = (), remove_orphans: bool = False
) -> Plan:
    """Converge `containers` (all of the project's, running or not) to `spec`.

    `only` limits the plan to those services. Containers of services missing from the spec are
    orphans: listed and left alone, or removed with `remove_orphans` (as compose does).
    """
    deployed = [read_deployed(c) for c in containers]
    batches: list[Batch] = []
    untouched: list[Step] = []
    for service in spec.services:
        if only and service.name not in only:
            continue
        service_batches, keeps = _service_batches(spec.project, service, [d for d in deployed if d.service == service.name])
        batches += service_batches
        untouched += keeps
    known = {s.name for s in spec.services}
    orphans = sorted((d for d in deployed if d.service not in known and (not only or d.service in only)),
                     key=lambda d: d.name)
    if remove_orphans:
        for name in sorted({d.service for d in orphans}):
            steps = tuple(Step("remove", name, d.replica, "not in the spec", d) for d in orphans if d.service == name)
            batches.append(Batch(name, steps, UpdatePolicy()))
    else:
        untouched += [Step("orphan", d.service, d.replica, "not in the spec (kept; --remove-orphans)", d)
                      for d in orphans]
    return Plan(spec.project, tuple(batches), tuple(untouched))


def plan_removal(spec: DeploySpec, containers: Iterable[ContainerInfo], only: Sequence[str] = ()) -> Plan:
    """Remove every container of the project (or of the services in `only`), one batch per service."""
    deployed = sorted((read_deployed(c) for c in containers), key=lambda d: (d.service, d.replica, d.name))
    batches = []
    for name in sorted({d.service for d in deployed if not only or d.service in only}):
        service = spec.service(name)
        # Removing a whole service: its min_healthy cannot hold, and must not block the removal.
        policy = replace(service.update if service else UpdatePolicy(), min_healthy=0)
        steps = tuple(Step("remove", name, d.replica, "deploy rm", d) for d in deployed if d.service == name)
        batches.append(Batch(name, steps, policy))
    return Plan(spec.project, tuple(batches))

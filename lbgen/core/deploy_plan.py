"""Deploy plans: a project's containers vs its spec → ordered steps (docker-compose's convergence plan).

Each replica converges through one step: `create` (missing), `recreate` (config hash, state or
port drifted), `keep`, or `remove` (scaled down, duplicate, or a service no longer in the spec
when orphans are removed). Changing steps are grouped into batches of the update policy's
`parallelism`, in the order they run: creates, then recreates, then removals.

With several Docker hosts (`hosts:`) each replica number has its host (`deploy_hosts.assign`),
steps carry it, and a batch may span hosts: the batches roll the service across all of them.
A replica found on another host than its placement's is created there and removed where it was.

Host ports are handed out here, per host, so a dry run shows exactly what will happen: a start-first
batch takes free ports of the pool for its new containers and frees the old ones' ports after
it; a stop-first batch frees first and gives each new container its predecessor's port.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Union

import msgspec
from msgspec.structs import replace

from lbgen.core.deploy_spec import (
    LABEL_CONFIG_HASH,
    LABEL_HOST_PORT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    DeploySpec,
    ServiceSpec,
    UpdatePolicy,
)
from lbgen.core.deploy_hosts import DockerHost, assign
from lbgen.errors import ConfigError
from lbgen.core.values import ContainerInfo, ContainerSpec

CHANGES = ("create", "recreate", "remove")
# The project's containers: one list (the implicit host), or per host name.
Containers = Union[Iterable[ContainerInfo], Mapping[str, Iterable[ContainerInfo]]]


class Deployed(msgspec.Struct, frozen=True):
    """A container this project owns, as its labels describe it (bad labels read as 0 / empty)."""

    id: str
    name: str
    service: str
    replica: int
    port: int
    config_hash: str
    state: str
    health: str
    host: str = ""  # the host it was listed on ("": the implicit host)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def healthy(self) -> bool:
        """Running and passing its health check (or having none): fit to serve."""
        return self.running and self.health in ("healthy", "none")


def read_deployed(info: ContainerInfo, host: str = "") -> Deployed:
    """The deploy labels of `info` (a container on `host`), tolerating hand-edited or truncated ones."""
    labels = info.labels

    def number(key: str) -> int:
        value = labels.get(key, "")
        return int(value) if value.isdigit() else 0

    return Deployed(
        id=info.id, name=info.name, service=labels.get(LABEL_SERVICE, ""),
        replica=number(LABEL_REPLICA), port=number(LABEL_HOST_PORT),
        config_hash=labels.get(LABEL_CONFIG_HASH, ""), state=info.state, health=info.health, host=host,
    )


def read_all(containers: Containers) -> list[Deployed]:
    """Every container of `containers`, with the host it is on."""
    by_host = containers if isinstance(containers, Mapping) else {"": containers}
    return [read_deployed(c, host) for host, listed in by_host.items() for c in listed]


class Step(msgspec.Struct, frozen=True):
    """One replica's move. `old` is the container it replaces or keeps, `new` what it creates."""

    action: str  # create | recreate | keep | remove | orphan | skipped
    service: str
    replica: int
    reason: str = ""
    old: Deployed | None = None
    new: ContainerSpec | None = None
    port: int = 0  # the new container's host port
    host: str = ""  # where it runs ("": the implicit host)

    @property
    def subject(self) -> str:
        return f"{self.service}.{self.replica}" + (f"@{self.host}" if self.host else "")

    def describe(self) -> str:
        """One line for the printed plan."""
        old = self.old.name if self.old else ""
        new = f"{self.new.name} :{self.port}" if self.new else ""
        arrow = " → " if old and new else ""
        return f"{self.action:<9} {self.subject:<14} {old}{arrow}{new}  {self.reason}".rstrip()

    def on(self, host: str) -> Step:
        return replace(self, host=host)


class Batch(msgspec.Struct, frozen=True):
    """Steps of one service run together under its update policy."""

    service: str
    steps: tuple[Step, ...]
    policy: UpdatePolicy


class DeployPlan(msgspec.Struct, frozen=True):
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


def _drift(deployed: Deployed, service: ServiceSpec, host: DockerHost) -> str:
    """Why `deployed` no longer matches the spec, or "" when it does."""
    expected = service.config_hash(host.bind)
    if not deployed.running:
        return f"container is {deployed.state}"
    if deployed.config_hash != expected:
        return f"config changed ({deployed.config_hash[:8] or 'none'} → {expected[:8]})"
    if deployed.port not in service.pool:
        return f"port {deployed.port} outside {service.pool}"
    return ""


def _best_first(containers: list[Deployed], service: ServiceSpec, host: DockerHost) -> list[Deployed]:
    """The container to keep for a replica first: in sync, then running, then healthy."""
    return sorted(containers, key=lambda d: (bool(_drift(d, service, host)), not d.running, not d.healthy, d.name))


def _chunks(steps: list[Step], size: int) -> list[list[Step]]:
    return [steps[i : i + size] for i in range(0, len(steps), size)]


def _with_port(step: Step, service: ServiceSpec, project: str, port: int, host: DockerHost) -> Step:
    new = service.container_spec(project, step.replica, port, host)
    return replace(step, new=new, port=port)


Classified = tuple[list[Step], list[Step], list[Step], list[Step]]


def _classify(service: ServiceSpec, host: DockerHost, wanted: dict[int, str], mine: list[Deployed]) -> Classified:
    """Creates, recreates, keeps and removals of one service on one host, each in replica order.
    `wanted` maps every replica number of the service to its host."""
    creates, recreates, keeps, removes = list[Step](), list[Step](), list[Step](), list[Step]()
    for replica in sorted(r for r, name in wanted.items() if name == host.name):
        candidates = _best_first([d for d in mine if d.replica == replica], service, host)
        if not candidates:
            creates.append(Step("create", service.name, replica, "new replica", host=host.name))
            continue
        first, extras = candidates[0], candidates[1:]
        reason = _drift(first, service, host)
        target = recreates if reason else keeps
        target.append(Step("recreate" if reason else "keep", service.name, replica, reason, first, host=host.name))
        removes += [Step("remove", service.name, replica, "duplicate replica", d, host=host.name) for d in extras]
    for d in sorted((d for d in mine if wanted.get(d.replica) != host.name), key=lambda d: d.name):
        moved = wanted.get(d.replica)
        removes.append(Step("remove", service.name, d.replica, f"placed on {moved}" if moved else "scaled down", d,
                            host=host.name))
    return creates, recreates, keeps, removes


def _recreate_batch(project: str, service: ServiceSpec, chunk: list[Step], ports: dict[str, _Ports],
                    hosts: dict[str, DockerHost]) -> list[Step]:
    """Ports for one recreate batch: start-first needs spares, stop-first reuses the old ports."""
    olds = [step.old.port if step.old else 0 for step in chunk]
    stop_first = service.update.order == "stop-first"
    if stop_first:
        for step, port in zip(chunk, olds):
            ports[step.host].free(port)
    batch = [
        _with_port(step, service, project, ports[step.host].take(step.subject, old if stop_first else 0),
                   hosts[step.host])
        for step, old in zip(chunk, olds)
    ]
    if not stop_first:
        for step, port in zip(chunk, olds):
            ports[step.host].free(port)
    return batch


def _service_batches(project: str, service: ServiceSpec, mine: list[Deployed],
                     hosts: Sequence[DockerHost]) -> tuple[list[Batch], list[Step]]:
    """The batches that converge one service on `hosts`, and its kept replicas."""
    wanted = assign(service.placement)
    creates, recreates, keeps, removes = list[Step](), list[Step](), list[Step](), list[Step]()
    for host in hosts:
        for into, found in zip((creates, recreates, keeps, removes),
                               _classify(service, host, wanted, [d for d in mine if d.host == host.name])):
            into += found
    by_replica = lambda step: (step.replica, step.host)  # noqa: E731
    creates.sort(key=by_replica)
    recreates.sort(key=by_replica)
    ports = {h.name: _Ports(service, (d.port for d in mine if d.host == h.name)) for h in hosts}
    named, policy = {h.name: h for h in hosts}, service.update
    batches = [
        [_with_port(s, service, project, ports[s.host].take(s.subject), named[s.host]) for s in chunk]
        for chunk in _chunks(creates, policy.parallelism)
    ]
    for chunk in _chunks(recreates, policy.parallelism):
        batches.append(_recreate_batch(project, service, chunk, ports, named))
    if removes:
        batches.append(removes)
    return [Batch(service.name, tuple(b), policy) for b in batches], keeps


def _without(service: ServiceSpec, unreachable: Mapping[str, str]) -> ServiceSpec:
    """`service` with `min_healthy` lowered by its replicas on unreachable hosts: they are not
    known to be healthy, and must not block the update of the hosts that answer."""
    left_out = sum(n for host, n in service.placement.items() if host in unreachable)
    if not left_out:
        return service
    return replace(service, update=replace(service.update, min_healthy=max(0, service.update.min_healthy - left_out)))


def _skipped(spec: DeploySpec, unreachable: Mapping[str, str], only: Sequence[str]) -> list[Step]:
    """The replicas placed on unreachable hosts (`on_host_error: continue`): not touched, listed
    (why each host is unreachable is printed once, before the plan)."""
    steps = []
    for service in spec.services:
        if only and service.name not in only:
            continue
        for replica, host in sorted(assign(service.placement).items()):
            if host in unreachable:
                steps.append(Step("skipped", service.name, replica, "host unreachable", host=host))
    return steps


def _orphans(deployed: list[Deployed], known: set[str], only: Sequence[str],
             remove: bool) -> tuple[list[Batch], list[Step]]:
    """Containers of services missing from the spec: removed (`--remove-orphans`) or listed."""
    orphans = sorted((d for d in deployed if d.service not in known and (not only or d.service in only)),
                     key=lambda d: (d.name, d.host))
    if not remove:
        return [], [Step("orphan", d.service, d.replica, "not in the spec (kept; --remove-orphans)", d, host=d.host)
                    for d in orphans]
    batches = []
    for name in sorted({d.service for d in orphans}):
        steps = tuple(Step("remove", name, d.replica, "not in the spec", d, host=d.host)
                      for d in orphans if d.service == name)
        batches.append(Batch(name, steps, UpdatePolicy()))
    return batches, []


def plan_deploy(
    spec: DeploySpec, containers: Containers, only: Sequence[str] = (), remove_orphans: bool = False,
    unreachable: Mapping[str, str] = {},  # noqa: B006 - read only
) -> DeployPlan:
    """Converge `containers` (all of the project's, running or not, per host) to `spec`.

    `only` limits the plan to those services. Containers of services missing from the spec are
    orphans: listed and left alone, or removed with `remove_orphans` (as compose does). Hosts in
    `unreachable` (name → why) are left out; their replicas are listed as skipped.
    """
    deployed = read_all(containers)
    hosts = [h for h in spec.all_hosts if h.name not in unreachable]
    batches: list[Batch] = []
    untouched: list[Step] = []
    for service in spec.services:
        if only and service.name not in only:
            continue
        mine = [d for d in deployed if d.service == service.name]
        service_batches, keeps = _service_batches(spec.project, _without(service, unreachable), mine, hosts)
        batches += service_batches
        untouched += keeps
    orphan_batches, orphans = _orphans(deployed, {s.name for s in spec.services}, only, remove_orphans)
    untouched += orphans + _skipped(spec, unreachable, only)
    return DeployPlan(spec.project, tuple(batches + orphan_batches), tuple(untouched))


def plan_removal(spec: DeploySpec, containers: Containers, only: Sequence[str] = ()) -> DeployPlan:
    """Remove every container of the project (or of the services in `only`), one batch per service."""
    deployed = sorted(read_all(containers), key=lambda d: (d.service, d.replica, d.host, d.name))
    batches = []
    for name in sorted({d.service for d in deployed if not only or d.service in only}):
        service = spec.service(name)
        # Removing a whole service: its min_healthy cannot hold, and must not block the removal.
        policy = replace(service.update if service else UpdatePolicy(), min_healthy=0)
        steps = tuple(Step("remove", name, d.replica, "deploy rm", d, host=d.host)
                      for d in deployed if d.service == name)
        batches.append(Batch(name, steps, policy))
    return DeployPlan(spec.project, tuple(batches))

"""The deploy executor: runs a `Plan` batch by batch as a rolling update (docs/deploy.md).

Per batch, start-first: start the new replicas → wait until healthy → wait until registered and
applied by every LB node that reports its revision → drain the old ones (weight 0 + a drain
marker, see `Registry.drain`) → wait the drain time → stop gracefully → remove. Stop-first takes
the old replicas out first. A new replica that fails a wait is stopped and removed, the old
ones keep serving, and the run stops with the error: later batches never start on a failure.
Before an old replica is taken out, the service must keep `min_healthy` healthy replicas.
"""

from __future__ import annotations

import json
import logging
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence, TypeVar

from lbgen.core.deploy_plan import Batch, Deployed, Plan, Step, read_deployed
from lbgen.core.deploy_spec import LABEL_PROJECT, DeploySpec
from lbgen.core.lb_status import decode_lb_status
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Endpoint
from lbgen.core.schema import decode_endpoint, drain_key, encode_endpoint, parse_key
from lbgen.errors import DeployError, InvalidValue, LbgenError, StoreError, StoreUnavailable
from lbgen.ports import Clock, ContainerInfo, Docker, Store
from lbgen.services.deploy_lbs import LbProbe

log = logging.getLogger(__name__)
T = TypeVar("T")


class Reporter(Protocol):
    """Where progress goes: which replica, doing or waiting for what."""

    def progress(self, subject: str, message: str) -> None: ...


class LogReporter:
    """Progress as log lines (the default when nobody watches a terminal)."""

    def progress(self, subject: str, message: str) -> None:
        log.info("%s: %s", subject, message)


@dataclass(frozen=True)
class Registered:
    """A container's endpoint as the agent registered it: key, value, revision and the agent's lease."""

    key: str
    endpoint: Endpoint
    revision: int
    lease: int


@dataclass(frozen=True)
class Drained:
    """An endpoint taken out of the served set, and the lease holding its drain marker."""

    registered: Registered
    marker_lease: int
    revision: int


class Registry:
    """The deployer's side of the registry contract: find endpoints, drain them, read LB revisions.

    Draining writes two things. `{prefix}/drain/{endpoint_id}` (on a lease of the deployer's, so
    a crashed deploy leaves no marker behind) tells the agent to keep registering that endpoint
    with weight 0; and the endpoint itself is rewritten with weight 0 on the agent's own lease, so
    the LBs stop sending new requests at once, without waiting for the agent's next reconcile.
    """

    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def endpoint(self, service: str, container_id: str) -> Registered | None:
        """The endpoint registered for `container_id` (the agent stores the full id), or None."""
        for kv in self.store.snapshot(f"{self.prefix}/services/{service}/endpoints/").items:
            ref = parse_key(self.prefix, kv.key)
            if ref is None or ref.kind != "endpoint":
                continue
            try:
                endpoint = decode_endpoint(ref.endpoint_id, kv.value)
            except InvalidValue:
                continue
            if endpoint.container and container_id.startswith(endpoint.container):
                return Registered(kv.key, endpoint, kv.mod_revision, kv.lease)
        return None

    def lb_revisions(self) -> dict[str, int]:
        """The revision each LB node has applied (`{prefix}/lb/{node}` → JSON with `revision`)."""
        revisions = {}
        for kv in self.store.snapshot(f"{self.prefix}/lb/").items:
            ref = parse_key(self.prefix, kv.key)
            if ref is None or ref.kind != "lb":
                continue
            try:
                revisions[ref.node] = decode_lb_status(ref.node, kv.value).revision
            except InvalidValue as e:  # a bad status is not a node that applied anything
                log.debug("%s: ignoring an invalid LB status: %s", kv.key, e)
        return revisions

    def lb_quarantines(self, service: str) -> dict[str, str]:
        """`node/target` → reason, for each LB target holding `service` at an older state (quarantined,
        docs/apply.md): its new endpoints and drains do not reach that LB. Invalid values are skipped."""
        found = {}
        for kv in self.store.snapshot(f"{self.prefix}/lb/").items:
            with suppress(InvalidValue):
                ref = parse_key(self.prefix, kv.key)
                held = decode_lb_status(ref.node, kv.value).quarantined if ref and ref.kind == "lb" else []
                found.update({f"{ref.node}/{t}": reason for t, name, reason in held if name == service})  # type: ignore[union-attr]
        return found

    def drain(self, registered: Registered, container_id: str, ttl: float) -> Drained:
        """Mark and zero-weight `registered`; the marker expires after `ttl` seconds at the latest."""
        lease = self.store.grant_lease(max(10, int(ttl) + 1))
        marker = {"container": container_id, "endpoint": registered.key, "by": "lbgen deploy"}
        self.store.put(self.drain_key(registered.endpoint.id), json.dumps(marker).encode(), lease=lease)
        zero = encode_endpoint(replace(registered.endpoint, weight=0))
        try:
            revision = self.store.put(registered.key, zero, lease=registered.lease)
        except StoreError as e:  # the agent's lease is gone, and the endpoint with it
            log.warning("drain %s: %s", registered.key, e)
            revision = 0
        return Drained(registered, lease, revision)

    def clear(self, drained: Drained) -> None:
        """Drop the drain marker once its container is gone (revoking its lease deletes it)."""
        self.store.revoke_lease(drained.marker_lease)

    def drain_key(self, endpoint_id: str) -> str:
        return drain_key(self.prefix, endpoint_id)


@dataclass(frozen=True)
class Outcome:
    """What `Deployer.apply` did: the steps completed, and the error that stopped it, if any."""

    done: tuple[Step, ...]
    unchanged: int
    seconds: float
    error: LbgenError | None = None

    def lines(self) -> list[str]:
        counts = {a: sum(s.action == a for s in self.done) for a in ("create", "recreate", "remove")}
        summary = ", ".join(f"{n} {a}d" for a, n in counts.items())
        result = "FAILED" if self.error else "done"
        lines = [f"{result} in {self.seconds:.1f}s: {summary}, {self.unchanged} unchanged"]
        if self.error:
            lines.append("the failing batch was rolled back where it could be; later batches did not run")
        return lines


class Deployer:
    """Executes deploy plans against one Docker host; `registry` is optional (no drain, no wait)."""

    def __init__(
        self, docker: Docker, clock: Clock, registry: Registry | None = None,
        reporter: Reporter | None = None, poll: float = 0.25,
    ) -> None:
        self.docker, self.clock, self.registry = docker, clock, registry
        self.reporter = reporter or LogReporter()
        self.poll = poll

    def apply(self, plan: Plan) -> Outcome:
        """Run every batch in order; the first failure stops the run (after rolling its batch back)."""
        started, done = self.clock.now(), []
        unchanged = sum(step.action == "keep" for step in plan.untouched)
        for batch in plan.batches:
            try:
                self._run_batch(plan.project, batch)
            except LbgenError as e:
                return Outcome(tuple(done), unchanged, self.clock.now() - started, e)
            done.extend(batch.steps)
        return Outcome(tuple(done), unchanged, self.clock.now() - started)

    def _run_batch(self, project: str, batch: Batch) -> None:
        new = [s for s in batch.steps if s.new]
        old = [s for s in batch.steps if s.old and s.action != "keep"]
        if batch.policy.order == "stop-first" or not new:
            self._take_out(project, batch, old)
            try:
                self._bring_up(batch, new)
            except DeployError as e:
                gone = ", ".join(s.old.name for s in old if s.old)
                if not gone:
                    raise
                raise DeployError(f"{e}; stop-first had already removed {gone}") from e
        else:
            self._bring_up(batch, new)
            self._take_out(project, batch, old)

    # --- bringing new replicas up ---------------------------------------------------------------

    def _bring_up(self, batch: Batch, steps: Sequence[Step]) -> None:
        started: list[tuple[Step, str]] = []
        try:
            for step in steps:
                assert step.new is not None
                self._say(step, f"starting {step.new.name} ({step.new.image}) on port {step.port}")
                started.append((step, self.docker.create_and_start(step.new)))
            deadline = self.clock.now() + batch.policy.health_timeout
            for step, cid in started:
                self._wait_healthy(step, cid, deadline, batch.policy.health_timeout)
            if self.registry:
                deadline = self.clock.now() + batch.policy.register_timeout
                for step, cid in started:
                    self._wait_served(step, cid, deadline, batch.policy.register_timeout)
        except (LbgenError, KeyboardInterrupt) as e:
            self._roll_back(started, batch, e)
            raise

    def _wait_healthy(self, step: Step, cid: str, deadline: float, timeout: float) -> None:
        name, seen = step.new.name if step.new else cid, "starting"

        def healthy() -> bool | None:
            nonlocal seen
            info = self.docker.inspect(cid)
            if info is None or info.state != "running":
                state = "gone" if info is None else info.state
                raise DeployError(f"{step.subject}: {name} is {state} before turning healthy")
            seen = info.health
            return True if info.health in ("healthy", "none") else None

        self._say(step, f"waiting for {name} to turn healthy (up to {timeout:g}s)")
        self._wait(healthy, deadline, lambda: f"{step.subject}: {name} not healthy after {timeout:g}s "
                   f"(health: {seen})")
        self._say(step, f"{name} is healthy")

    def _wait_served(self, step: Step, cid: str, deadline: float, timeout: float) -> None:
        assert self.registry is not None
        registry, name = self.registry, step.new.name if step.new else cid

        def registered() -> Registered | None:
            found = registry.endpoint(step.service, cid)
            return found if found and found.endpoint.health in DEFAULT_SERVED_HEALTH else None

        self._say(step, f"waiting for {name} to be registered as served (up to {timeout:g}s)")
        found = self._wait(registered, deadline, lambda: f"{step.subject}: {name} not registered "
                           f"as healthy after {timeout:g}s (is `lbgen agent` running on this host?)")
        self._say(step, f"registered as {found.endpoint.id} at revision {found.revision}")
        self._wait_lbs(step, found.revision, deadline, f"serving {name}")

    def _wait_lbs(self, step: Step, revision: int, deadline: float, what: str) -> None:
        """Wait until every LB node that reports a revision, or did during the wait, applied `revision`."""
        assert self.registry is not None
        probe = LbProbe(self.registry, step.service, revision)
        nodes = self._wait(probe, deadline, lambda: f"{step.subject}: LB nodes did not apply revision "
                           f"{revision} ({what}) in time: {probe.explain()}")
        if nodes:
            self._say(step, f"{nodes} LB node(s) applied revision {revision} ({what})")
        else:
            self._say(step, f"no LB node reports an applied revision: not waiting for one ({what})")

    def _roll_back(self, started: list[tuple[Step, str]], batch: Batch, error: BaseException) -> None:
        for step, cid in started:
            self._say(step, f"rolling back: removing {step.new.name if step.new else cid} ({error})")
            try:
                self.docker.stop(cid, batch.policy.stop_timeout)
                self.docker.remove(cid)
            except LbgenError as e:
                log.error("roll back %s: %s", cid, e)

    # --- taking old replicas out ----------------------------------------------------------------

    def _take_out(self, project: str, batch: Batch, steps: Sequence[Step]) -> None:
        running = [s for s in steps if s.old and s.old.running]
        self._check_min_healthy(project, batch, [s.old for s in running if s.old])
        drained = self._drain(batch, running) if self.registry and running else []
        try:
            if running and batch.policy.drain:
                self._say(running[0], f"draining for {batch.policy.drain:g}s")
                self.clock.sleep(batch.policy.drain)
            for step in steps:
                self._stop_and_remove(step, batch.policy.stop_timeout)
        finally:
            for item in drained:
                assert self.registry is not None
                self.registry.clear(item)

    def _stop_and_remove(self, step: Step, stop_timeout: float) -> None:
        assert step.old is not None
        if step.old.running:
            self._say(step, f"stopping {step.old.name} (SIGTERM, {stop_timeout:g}s grace)")
            self.docker.stop(step.old.id, stop_timeout)
        self.docker.remove(step.old.id)
        self._say(step, f"removed {step.old.name}")

    def _check_min_healthy(self, project: str, batch: Batch, old: Sequence[Deployed]) -> None:
        """Refuse to take out healthy replicas when fewer than `min_healthy` would be left."""
        if not old:
            return
        current = [read_deployed(c) for c in self.docker.list_containers(label=f"{LABEL_PROJECT}={project}")]
        healthy = {d.id for d in current if d.service == batch.service and d.healthy}
        left = len(healthy - {d.id for d in old})
        if left < batch.policy.min_healthy:
            names = ", ".join(d.name for d in old)
            raise DeployError(
                f"{batch.service}: taking out {names} would leave {left} healthy replicas, "
                f"below min_healthy {batch.policy.min_healthy}"
            )

    def _drain(self, batch: Batch, steps: Sequence[Step]) -> list[Drained]:
        assert self.registry is not None
        drained = []
        ttl = batch.policy.drain + batch.policy.stop_timeout + batch.policy.drain_timeout + 60
        for step in steps:
            assert step.old is not None
            found = self.registry.endpoint(step.service, step.old.id)
            if found is None:
                self._say(step, f"{step.old.name} is not registered: nothing to drain")
                continue
            drained.append(self.registry.drain(found, step.old.id, ttl))
            self._say(step, f"draining {step.old.name}: weight 0 for {found.endpoint.id}")
        revision = max((d.revision for d in drained), default=0)
        if revision:
            self._wait_drained(steps[0], revision, batch.policy.drain_timeout)
        return drained

    def _wait_drained(self, step: Step, revision: int, timeout: float) -> None:
        """Wait up to `timeout` for every LB node to apply the drain; past it, name those behind and go
        on: these replicas are to go, and one dead watcher must not block every deploy (docs/deploy.md)."""
        self._say(step, f"waiting for the LB nodes to apply the drain (revision {revision}, up to {timeout:g}s)")
        try:
            self._wait_lbs(step, revision, self.clock.now() + timeout, "the drain")
        except DeployError as e:
            self._say(step, f"warning: {e}; stopping anyway after {timeout:g}s")

    # --- helpers --------------------------------------------------------------------------------

    def _wait(self, probe: Callable[[], T | None], deadline: float, timeout_message: Callable[[], str]) -> T:
        """Poll `probe` until it returns a value; past `deadline`, raise `DeployError`."""
        while True:
            try:
                result = probe()
            except StoreUnavailable as e:  # etcd blinked: keep trying until the deadline
                log.warning("registry unavailable while waiting: %s", e)
                result = None
            if result is not None:
                return result
            if self.clock.now() >= deadline:
                raise DeployError(timeout_message())
            self.clock.sleep(self.poll)

    def _say(self, step: Step, message: str) -> None:
        self.reporter.progress(step.subject, message)


# --- status -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica for `lbgen deploy status`: its container (None when missing) and registration."""

    subject: str
    deployed: Deployed | None
    config: str  # current | stale | orphan
    registered: Registered | None = None
    served_by: tuple[str, ...] = ()

    def cells(self, registry: bool) -> tuple[str, ...]:
        d = self.deployed
        if d is None:
            return (self.subject, "(missing)", "", "", "", "", "", "", "")
        unknown = "not registered" if registry else "-"
        endpoint = self.registered.endpoint.id if self.registered else unknown
        weight = str(self.registered.endpoint.weight) if self.registered else ""
        served = ", ".join(self.served_by) or ("none" if registry else "-")
        return (self.subject, d.name, str(d.port), d.state, d.health, self.config, endpoint, weight, served)


def replica_status(
    spec: DeploySpec, containers: Sequence[ContainerInfo], registry: Registry | None
) -> tuple[list[ReplicaStatus], dict[str, int]]:
    """Every replica the spec wants or a container holds, and the LB nodes' applied revisions.

    An LB node serves a replica when it has applied a revision at or after the replica's
    registration, and the endpoint is served (healthy or check-less, weight above 0).
    """
    lbs = registry.lb_revisions() if registry else {}
    rows = []
    for d in (read_deployed(c) for c in containers):
        service = spec.service(d.service)
        config = "orphan" if service is None else "current" if d.config_hash == service.config_hash() else "stale"
        found = registry.endpoint(d.service, d.id) if registry else None
        served = found is not None and found.endpoint.is_served()
        nodes = tuple(n for n, rev in sorted(lbs.items()) if served and found and rev >= found.revision)
        rows.append(ReplicaStatus(f"{d.service}.{d.replica}", d, config, found, nodes))
    present = {r.subject for r in rows}
    rows += [
        ReplicaStatus(f"{s.name}.{i}", None, "")
        for s in spec.services for i in range(1, s.replicas + 1) if f"{s.name}.{i}" not in present
    ]
    return sorted(rows, key=lambda r: (r.subject.rpartition(".")[0], int(r.subject.rpartition(".")[2]),
                                       r.deployed.name if r.deployed else "")), lbs

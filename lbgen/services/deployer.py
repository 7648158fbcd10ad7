"""The deploy executor: runs a `DeployPlan` batch by batch as a rolling update (docs/deploy.md).

Per batch, start-first: start the new replicas → wait until healthy → wait until registered and
applied by every LB node that reports its revision → drain the old ones (weight 0 + a drain
marker, see `Registry.drain`) → wait the drain time → stop gracefully → remove. Stop-first takes
the old replicas out first. A new replica that fails a wait is stopped and removed, the old
ones keep serving, and the run stops with the error: later batches never start on a failure.
Before an old replica is taken out, the service must keep `min_healthy` healthy replicas.

With several Docker hosts each step runs on its own host's daemon, and a new replica counts as
registered only when its own host's agent registered it (the endpoint's node and address are
that host's), so a replica is never mistaken for one with the same container id elsewhere.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Protocol, Sequence, TypeVar

import msgspec

from lbgen.core.deploy_hosts import IMPLICIT, DockerHost
from lbgen.core.deploy_plan import Batch, Deployed, DeployPlan, Step, read_deployed
from lbgen.core.deploy_spec import LABEL_PROJECT
from lbgen.core.model import DEFAULT_SERVED_HEALTH
from lbgen.errors import DeployError, LbgenError, StoreUnavailable
from lbgen.ports import Clock, Docker
from lbgen.services.deploy_lbs import LbProbe
from lbgen.services.deploy_registry import Drained, Registered, Registry

log = logging.getLogger(__name__)
T = TypeVar("T")


class Reporter(Protocol):
    """Where progress goes: which replica, doing or waiting for what."""

    def progress(self, subject: str, message: str) -> None: ...


class LogReporter:
    """Progress as log lines (the default when nobody watches a terminal)."""

    def progress(self, subject: str, message: str) -> None:
        log.info("%s: %s", subject, message)


class Outcome(msgspec.Struct, frozen=True):
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
    """Executes deploy plans; `registry` is optional (no drain, no wait).

    `docker` is the one Docker host, or each host's by name (`hosts` says what their agents
    register: node name and address)."""

    def __init__(
        self, docker: Docker | Mapping[str, Docker], clock: Clock, registry: Registry | None = None,
        reporter: Reporter | None = None, poll: float = 0.25, hosts: Sequence[DockerHost] = (),
    ) -> None:
        self.dockers = dict(docker) if isinstance(docker, Mapping) else {"": docker}
        self.hosts = {h.name: h for h in hosts}
        self.clock, self.registry = clock, registry
        self.reporter = reporter or LogReporter()
        self.poll = poll

    def _docker(self, step: Step) -> Docker:
        return self.dockers[step.host]

    def apply(self, plan: DeployPlan) -> Outcome:
        """Run every batch in order; the first failure stops the run (after rolling its batch back)."""
        started, done = self.clock.now(), list[Step]()
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
                started.append((step, self._docker(step).create_and_start(step.new)))
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
            info = self._docker(step).inspect(cid)
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
        host = self.hosts.get(step.host, IMPLICIT)
        seen = ""

        def registered() -> Registered | None:
            nonlocal seen
            found = registry.endpoint(step.service, cid)
            if found and not _registered_by(found, host):
                seen = f"; seen registered by node {found.endpoint.node or '-'} at {found.endpoint.address}"
                return None
            return found if found and found.endpoint.health in DEFAULT_SERVED_HEALTH else None

        self._say(step, f"waiting for {name} to be registered as served (up to {timeout:g}s)")
        found = self._wait(registered, deadline, lambda: f"{step.subject}: {name} not registered "
                           f"as healthy after {timeout:g}s (is `lbgen agent` running on {_agent(host)}?{seen})")
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
                self._docker(step).stop(cid, batch.policy.stop_timeout)
                self._docker(step).remove(cid)
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
            self._docker(step).stop(step.old.id, stop_timeout)
        self._docker(step).remove(step.old.id)
        self._say(step, f"removed {step.old.name}")

    def _check_min_healthy(self, project: str, batch: Batch, old: Sequence[Deployed]) -> None:
        """Refuse to take out healthy replicas when fewer than `min_healthy` would be left."""
        if not old:
            return
        current = [read_deployed(c, host) for host, docker in self.dockers.items()
                   for c in docker.list_containers(label=f"{LABEL_PROJECT}={project}")]
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


def _registered_by(found: Registered, host: DockerHost) -> bool:
    """Whether `host`'s own agent registered it: its node and address (when the spec names them)."""
    node_ok = not host.node or found.endpoint.node == host.node
    return node_ok and (not host.address or found.endpoint.address == host.address)


def _agent(host: DockerHost) -> str:
    return f"{host.label} as node {host.node} with --host-ip {host.address}" if host.name else "this host"

"""The agent loop: keep this Docker host's share of the registry equal to its containers (issue 4).

One consumer thread owns all state (known containers, the lease, what this node has in etcd) and
does every registry write. Producer threads only post messages to its queue: Docker events (each
names a container to re-inspect), lease keep-alive failures, and a resync timer. Events are
triggers, never state: the consumer re-inspects, recomputes the desired endpoints with the pure
`discovery` core and writes only the difference. Bursts coalesce because the consumer drains the
whole queue before each reconciliation. (Producers and metrics: `agent_producers`; own-keys reads:
`agent_keys`; the presence value: `agent_presence`.)

Outages: a failed Docker call keeps the last known containers and retries; a failed etcd call keeps
the desired state and retries with a short capped backoff, re-reading this node's keys before the
next write; a lost lease (etcd gone longer than the TTL) is replaced and everything re-registered.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from typing import Callable, Iterable, Mapping

import msgspec
from prometheus_client import CollectorRegistry

from lbgen.core.agent_status import encode_agent_status
from lbgen.core.discovery import (
    Discovered,
    DiscoveryOptions,
    Reject,
    discover,
    drained,
)
from lbgen.core.model import Endpoint
from lbgen.core.registration import json_field, owned_keys, plan_registration
from lbgen.core.schema import agent_key, drain_prefix, parse_key, services_prefix
from lbgen.errors import DockerError, LeaseLost, StoreError
from lbgen.core.values import ContainerInfo, KeyValue
from lbgen.ports import Docker, DockerEvents, Store
from lbgen.services.agent_producers import (STOP, AgentMetrics, AgentProducers, ContainerChanged, DockerConnected,
                                            DockerLost, LeaseExpired, Resync, RetryDelay, jittered_backoff, level)
from lbgen.services.agent_keys import previous_lease, read_new_keys, read_own_keys
from lbgen.services.agent_presence import Presence
from lbgen.services.lease_keeper import LeaseKeeper
from lbgen.services.metrics import Health

log = logging.getLogger(__name__)

class AgentConfig(msgspec.Struct, frozen=True):
    """How the agent behaves; `options` says how containers become endpoints."""

    prefix: str
    options: DiscoveryOptions
    ttl: int = 15
    resync_interval: float = 60.0
    keep_on_exit: bool = False
    store_retry: RetryDelay = jittered_backoff(0.1, 2.0)
    docker_retry: RetryDelay = jittered_backoff(0.2, 5.0)


class Agent(AgentProducers):
    """Registers one host's containers; `run()` blocks until `stop()` (from any thread)."""

    def __init__(
        self,
        store: Store,
        docker: Docker,
        config: AgentConfig,
        registry: CollectorRegistry | None = None,
        health: Health | None = None,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.docker = docker
        self.config = config
        self.metrics = AgentMetrics(registry or CollectorRegistry())
        self.health = health or Health("docker", "etcd")
        self.presence = Presence(config.options.node, config.resync_interval, wall)
        self._clock, self._rand = clock, rand  # rand spreads the resyncs of a fleet started together
        self._queue: queue.Queue[object] = queue.Queue()
        self._stopping = threading.Event()
        self._events: DockerEvents | None = None
        self._events_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # Consumer-owned state; the keeper's thread only reads the lease.
        self.keeper = LeaseKeeper(store, config.ttl, f"agent {config.options.node}", clock)
        self._containers: dict[str, ContainerInfo] = {}
        self._dirty: set[str] = set()
        self._need_listing = True
        self._listed = False
        self._registered: dict[str, KeyValue] | None = None  # None: re-read from etcd first
        self._rejects: frozenset[Reject] = frozenset()
        self._conflicts: frozenset[str] = frozenset()
        self._retry_at: float | None = None
        self._failures = {"docker": 0, "etcd": 0}
        self._resync_due = True  # the first reconciliation is a full one
        self._previous_lease: int | None = None  # None: not read yet

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        """Start the producers, then reconcile on every batch of messages until stopped."""
        node, prefix, ttl = self.config.options.node, self.config.prefix, self.config.ttl
        log.info("agent %s starting: prefix %s, lease TTL %ss", node, prefix, ttl)
        self.keeper.start("agent-keepalive", self._lease_lost, self._keep_alive_failed, self._kept_alive)
        producers = {"docker-events": self._watch_docker, "resync": self._resync_timer}
        for name, target in producers.items():
            thread = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        stopped = False
        try:
            while (batch := self._next_batch()) is not None:
                for message in batch:
                    self._note(message)
                self._reconcile()
            stopped = True
        finally:
            self._shutdown(revoke=stopped)

    def stop(self) -> None:
        """Ask `run()` to finish: set the flag, wake the consumer, close the blocking event stream."""
        self._stopping.set()
        self._queue.put(STOP)
        with self._events_lock:
            if self._events is not None:
                self._events.close()

    def _shutdown(self, revoke: bool) -> None:
        """Stop the producers; revoke the lease only on a clean stop: an agent that fails (a bug, or
        something it read) leaves its endpoints to expire with the lease, or to its restart."""
        self.stop()
        self.keeper.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        lease, ttl = self.keeper.lease, self.config.ttl
        if lease and not revoke:
            log.error("agent failed: keeping this node's endpoints (they expire within %ss)", ttl)
        elif lease and self.config.keep_on_exit:
            log.info("keeping this node's endpoints: they expire within %ss unless a new agent takes them over", ttl)
        elif lease:
            try:
                self._release()
            except StoreError as e:
                log.warning("could not revoke lease %x (keys expire within %ss): %s", lease, ttl, e)
        self.metrics.lease_held.set(0)

    def _release(self) -> None:
        """Revoke the lease, which deletes every key on it in one revision; then delete whatever of this
        node's keys survived (none on etcd; a file registry's leases hold nothing)."""
        lease = self.keeper.revoke()
        if self.store.lease_keys(lease) is None:  # the scan is for a file registry only
            prefix, node = self.config.prefix, self.config.options.node
            for key in owned_keys(self.store.snapshot(services_prefix(prefix)).items, prefix, node):
                self.store.delete(key)
        log.info("revoked lease %x: this node's endpoints are gone", lease)

    # --- consumer ----------------------------------------------------------------------------

    def _next_batch(self) -> list[object] | None:
        """Everything queued (at least one message, or none once a retry is due); None when stopping."""
        timeout = None if self._retry_at is None else max(0.0, self._retry_at - self._clock())
        batch: list[object] = []
        try:
            batch.append(self._queue.get(timeout=timeout))
            while True:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return None if STOP in batch or self._stopping.is_set() else batch

    def _note(self, message: object) -> None:
        match message:
            case ContainerChanged(container_id=cid, name=name, action=action):
                log.debug("docker event %s: container %s (%s)", action, name, cid[:12])
                self._dirty.add(cid)
            case DockerConnected():
                self._need_listing = True
            case DockerLost(reason=reason):
                self._docker_down(reason)
            case LeaseExpired(lease=lease) if lease == self.keeper.lease:
                log.warning("lease %x is lost (etcd away longer than %ss?): re-registering", lease, self.config.ttl)
                self.metrics.errors.labels("lease").inc()
                self._drop_lease()
            case Resync():
                self._need_listing = True
                self._registered = None
                self._resync_due = True

    def _reconcile(self) -> None:
        """Refresh containers, make etcd match, publish the presence; a failure on either side
        schedules a retry."""
        self._retry_at = None
        self._refresh_containers()
        try:
            if self._listed:  # never touch endpoints before one full listing: the desired state is unknown
                self._sync_endpoints()
            self._publish_presence()
        except LeaseLost as e:
            log.warning("%s: granting a new lease and re-registering", e)
            self.metrics.errors.labels("lease").inc()
            self.presence.error(str(e))
            self._drop_lease()
            self._retry("etcd", self.config.store_retry)
        except StoreError as e:
            self._store_failed(e)
        else:
            if self._failures["etcd"]:
                log.info("etcd answers again: this node's keys are in sync")
            self._failures["etcd"] = 0
            self.health.up("etcd")
        self.metrics.reconciliations.inc()

    def _sync_endpoints(self) -> None:
        found = discover(self._containers.values(), self.config.options, self.config.prefix)
        self._report_rejects(found)
        self._sync(drained(found.endpoints, self._drain_ids()))
        if self._resync_due and not self._need_listing:  # listed afresh, and `_sync` re-read the keys
            self._resync_due = False
            self.presence.resynced()

    def _publish_presence(self) -> None:
        """Write `{prefix}/agents/{node}` when it changed, on the lease of the endpoints: one keep-alive
        for both, and they leave the registry together when the agent dies."""
        status = self.presence.due()
        if status is None:
            return
        if not self.keeper.lease:
            self._grant_lease()
        self._previous()  # before this write moves the presence key off a previous run's lease
        self.store.put(agent_key(self.config.prefix, self.config.options.node), encode_agent_status(status),
                       lease=self.keeper.lease)
        self.presence.written(status)

    def _previous(self) -> int:
        """The lease of a previous run (its keys are found through it), read once at start."""
        if self._previous_lease is None:
            self._previous_lease = previous_lease(self.store, self.config.prefix, self.config.options.node)
        return self._previous_lease

    def _drain_ids(self) -> set[str]:
        """Endpoint ids a rolling deploy is draining (`lbgen deploy` writes `{prefix}/drain/{id}`)."""
        prefix = self.config.prefix
        return {ref.endpoint_id for kv in self.store.snapshot(drain_prefix(prefix)).items
                if (ref := parse_key(prefix, kv.key)) is not None and ref.kind == "drain"}

    def _refresh_containers(self) -> None:
        """Bring `_containers` up to date: a full listing when needed, else inspect what events named.

        On a Docker error the last known containers stay (and so do their endpoints)."""
        if not (self._need_listing or self._dirty):
            return
        try:
            if self._need_listing:
                listing = self.docker.list_containers()
                self._dirty.clear()
                self._containers = {c.id: c for c in listing if c.state == "running"}
                self._need_listing, self._listed = False, True
                log.info("listed %d running containers", len(self._containers))
            while self._dirty:
                cid = next(iter(self._dirty))
                self._inspect(cid)
                self._dirty.discard(cid)
        except DockerError as e:
            log.log(level(self._failures["docker"]), "%s; keeping the last known containers and retrying", e)
            self.metrics.errors.labels("docker").inc()
            self._docker_down(str(e))
            self._need_listing = True
            self._retry("docker", self.config.docker_retry)
            return
        self._failures["docker"] = 0
        self.health.up("docker")
        self.metrics.docker_up.set(1)
        self.presence.docker(True)
        self.metrics.containers.set(len(self._containers))

    def _docker_down(self, reason: str) -> None:
        """`/healthz`, `lbgen_agent_docker_up` and the presence key say the daemon is unreachable,
        until a call succeeds."""
        self.health.down("docker", reason)
        self.metrics.docker_up.set(0)
        self.presence.docker(False, reason)

    def _inspect(self, cid: str) -> None:
        info = self.docker.inspect(cid)
        if info is not None and info.state == "running":
            if cid not in self._containers:
                log.info("container %s (%s) is running", info.name, cid[:12])
            self._containers[cid] = info
        elif (known := self._containers.pop(cid, None)) is not None:
            log.info("container %s (%s) is %s", known.name, cid[:12], info.state if info else "gone")

    def _sync(self, desired: Mapping[str, Endpoint]) -> None:
        """Make etcd hold exactly `desired` for this node, on the current lease."""
        lease = self.keeper.lease or self._grant_lease()
        prefix, node = self.config.prefix, self.config.options.node
        if self._registered is None:
            leases = (lease, self._previous())
            self._registered = read_own_keys(self.store, prefix, node, leases, desired)
        else:
            read_new_keys(self.store, desired, self._registered)
        changes = plan_registration(desired, self._registered.values(), prefix, node, lease)
        self._report_conflicts(changes.conflicts)
        for key, value in changes.puts:
            revision = self.store.put(key, value, lease=lease)
            verb = "updated" if key in self._registered else "registered"
            self._registered[key] = KeyValue(key, value, revision, lease)
            self.metrics.writes.labels("put").inc()
            self._log_put(verb, key, desired[key])
        for key in changes.deletes:
            old = self._registered[key]
            self.store.delete(key)
            del self._registered[key]
            self.metrics.writes.labels("delete").inc()
            container = str(json_field(old.value, "container") or "?")[:12]
            log.info("deregistered %s (container %s)", _short(prefix, key), container)
        self._previous_lease = 0  # its keys are taken over (put on this lease) or deleted
        registered = len(owned_keys(self._registered.values(), prefix, node))
        self.metrics.endpoints.set(registered)
        self.presence.counts(len(self._containers), registered)

    def _grant_lease(self) -> int:
        lease = self.keeper.grant()
        self._registered = None
        self.presence.written(None)
        self.metrics.lease_grants.inc()
        self.metrics.lease_held.set(1)
        return lease

    def _drop_lease(self) -> None:
        self.keeper.drop()
        self._registered = None
        self.metrics.lease_held.set(0)

    def _store_failed(self, error: StoreError) -> None:
        log.log(level(self._failures["etcd"]), "%s; keeping the desired state and retrying", error)
        self.metrics.errors.labels("etcd").inc()
        self.health.down("etcd", str(error))
        self.presence.error(str(error))
        self._registered = None  # a write may or may not have landed: re-read before the next one
        self._retry("etcd", self.config.store_retry)

    def _retry(self, side: str, delay: RetryDelay) -> None:
        """Wake the consumer again after `side`'s next backoff delay (the earliest of both sides)."""
        at = self._clock() + delay(self._failures[side])
        self._failures[side] += 1
        self._retry_at = at if self._retry_at is None else min(self._retry_at, at)

    def _report_rejects(self, found: Discovered) -> None:
        rejects = frozenset(found.rejects)
        for reject in sorted(rejects - self._rejects, key=str):
            log.warning("skipping %s", reject)
            self.metrics.errors.labels("bad_label").inc()
        self._rejects = rejects
        self.metrics.skipped.set(len({r.container_id for r in rejects}))

    def _report_conflicts(self, conflicts: Iterable[str]) -> None:
        current = frozenset(conflicts)
        for key in sorted(current - self._conflicts):
            log.error("not writing %s: its value names another node", key)
            self.metrics.errors.labels("conflict").inc()
            self.presence.error(f"not writing {key}: its value names another node")
        self._conflicts = current

    def _log_put(self, verb: str, key: str, endpoint: Endpoint) -> None:
        container = self._containers.get(endpoint.container)
        log.info(
            "%s %s -> %s:%d (container %s %s, health %s, lease %x)",
            verb, _short(self.config.prefix, key), endpoint.address, endpoint.port,
            container.name if container else "?", endpoint.container[:12], endpoint.health, self.keeper.lease,
        )


def _short(prefix: str, key: str) -> str:
    ref = parse_key(prefix, key)
    return f"{ref.service}/{ref.endpoint_id}" if ref else key


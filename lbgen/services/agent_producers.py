"""The agent's metrics, its producer threads and the messages they post (docs/agent.md, "How it stays right").

Producers never touch the agent's state: they post to the consumer's queue. The Docker event
reader (subscribe, then the consumer lists), the lease keeper's keep-alive thread (every TTL/3,
`lease_keeper`; its callbacks are here) and the resync timer (its interval jittered ±20 % by an
injected random, so a fleet's resyncs spread out).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from typing import Any, Callable

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from lbgen.core.backoff import backoff, jittered
from lbgen.errors import DockerError, StoreError
from lbgen.ports import Docker, DockerEvents, Store

log = logging.getLogger("lbgen.services.agent")

RetryDelay = Callable[[int], float]


def jittered_backoff(base: float, cap: float) -> RetryDelay:
    """`lbgen.core.backoff` with fresh jitter per retry: a fleet's agents do not retry in lockstep."""
    return lambda attempt: backoff(attempt, random.random(), base, cap)


# --- messages from the producers -----------------------------------------------------------------


class ContainerChanged(msgspec.Struct, frozen=True):
    container_id: str
    name: str
    action: str


class DockerConnected(msgspec.Struct, frozen=True):
    """A new event stream is open: list everything again (subscribe first, then list)."""


class DockerLost(msgspec.Struct, frozen=True):
    reason: str


class LeaseExpired(msgspec.Struct, frozen=True):
    lease: int


class Resync(msgspec.Struct, frozen=True):
    """Re-list containers and re-read this node's keys; writes only if something differs."""


STOP = object()


class AgentMetrics:
    """The agent's Prometheus series, on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "lbgen_agent"
        self.containers = Gauge(f"{ns}_containers", "Running containers seen on this host", registry=registry)
        self.endpoints = Gauge(f"{ns}_endpoints", "Endpoints this node has registered", registry=registry)
        self.skipped = Gauge(f"{ns}_skipped_containers", "Containers skipped for bad labels", registry=registry)
        self.reconciliations = Counter(f"{ns}_reconciliations", "Reconciliations run", registry=registry)
        self.writes = Counter(f"{ns}_writes", "Registry writes", ["op"], registry=registry)
        self.errors = Counter(f"{ns}_errors", "Errors by kind", ["kind"], registry=registry)
        self.lease_held = Gauge(f"{ns}_lease_held", "1 while the node's lease is held", registry=registry)
        self.lease_grants = Counter(f"{ns}_lease_grants", "Leases granted", registry=registry)
        self.docker_up = Gauge(f"{ns}_docker_up", "1 while the Docker daemon answers", registry=registry)
        for op in ("put", "delete"):
            self.writes.labels(op)
        for kind in ("docker", "etcd", "lease", "bad_label", "conflict"):
            self.errors.labels(kind)


class AgentProducers:
    """The producer half of `lbgen.services.agent.Agent`, which sets these attributes."""

    store: Store
    docker: Docker
    config: Any
    metrics: AgentMetrics
    health: Any
    presence: Any
    _queue: queue.Queue[object]
    _stopping: threading.Event
    _events: DockerEvents | None
    _events_lock: threading.Lock
    _rand: Callable[[], float]
    _clock: Callable[[], float]

    def _watch_docker(self) -> None:
        """Subscribe to Docker events, announce the connection, forward events; reconnect with backoff."""
        attempt = 0
        while not self._stopping.is_set():
            opened = self._clock()
            try:
                self._follow_events()
            except DockerError as e:
                log.log(level(attempt), "%s; reconnecting", e)
                self.metrics.errors.labels("docker").inc()
                self._queue.put(DockerLost(str(e)))
            attempt = 0 if self._clock() - opened > 10 else attempt + 1
            self._stopping.wait(self.config.docker_retry(attempt))

    def _follow_events(self) -> None:
        stream = self.docker.events()
        with self._events_lock:
            if self._stopping.is_set():
                stream.close()
                return
            self._events = stream
        try:
            self._queue.put(DockerConnected())
            for event in stream:
                if event.type == "container" and event.id:
                    self._queue.put(ContainerChanged(event.id, event.name, event.action))
        finally:
            with self._events_lock:
                self._events = None
            stream.close()

    # The lease keeper's callbacks, on its keep-alive thread (`lbgen.services.lease_keeper`).

    def _lease_lost(self, lease: int) -> None:
        self.metrics.lease_held.set(0)
        self._queue.put(LeaseExpired(lease))

    def _keep_alive_failed(self, error: StoreError) -> None:
        self.metrics.errors.labels("etcd").inc()
        self.health.down("etcd", str(error))
        self.presence.error(str(error))

    def _kept_alive(self) -> None:
        self.metrics.lease_held.set(1)
        self.health.up("etcd")

    def _resync_timer(self) -> None:
        while not self._stopping.wait(self.resync_delay()):
            self._queue.put(Resync())

    def resync_delay(self) -> float:
        """The wait before the next resync: the interval ±20 %, so a fleet's resyncs spread out."""
        return jittered(self.config.resync_interval, self._rand())


def level(streak: int) -> int:
    """The first failure of a streak is a warning, repeats are debug: an outage logs one line."""
    return logging.WARNING if streak == 0 else logging.DEBUG

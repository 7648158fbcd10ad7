"""The agent's producer threads and the messages they post (docs/agent.md, "How it stays right").

Producers never touch the agent's state: they post to the consumer's queue. The Docker event
reader (subscribe, then the consumer lists), the lease keep-alive (every TTL/3) and the resync
timer (its interval jittered ±20 % by an injected random, so a fleet's resyncs spread out).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable

from lbgen.core.backoff import backoff, jittered
from lbgen.errors import DockerError, LeaseLost, StoreError
from lbgen.ports import Docker, DockerEvents, Store

log = logging.getLogger("lbgen.services.agent")

RetryDelay = Callable[[int], float]


def jittered_backoff(base: float, cap: float) -> RetryDelay:
    """`lbgen.core.backoff` with fresh jitter per retry: a fleet's agents do not retry in lockstep."""
    return lambda attempt: backoff(attempt, random.random(), base, cap)


# --- messages from the producers -----------------------------------------------------------------


@dataclass(frozen=True)
class ContainerChanged:
    container_id: str
    name: str
    action: str


@dataclass(frozen=True)
class DockerConnected:
    """A new event stream is open: list everything again (subscribe first, then list)."""


@dataclass(frozen=True)
class DockerLost:
    reason: str


@dataclass(frozen=True)
class LeaseExpired:
    lease: int


@dataclass(frozen=True)
class Resync:
    """Re-list containers and re-read this node's keys; writes only if something differs."""


STOP = object()


class AgentProducers:
    """The producer half of `lbgen.services.agent.Agent`, which sets these attributes."""

    store: Store
    docker: Docker
    config: Any
    metrics: Any
    health: Any
    presence: Any
    _queue: queue.Queue[object]
    _stopping: threading.Event
    _events: DockerEvents | None
    _events_lock: threading.Lock
    _lease: int
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

    def _keep_alive(self) -> None:
        """Refresh the current lease every TTL/3; report a lost lease to the consumer."""
        failing = 0
        while not self._stopping.wait(self.config.ttl / 3):
            lease = self._lease
            if not lease:
                continue
            try:
                self.store.keep_alive(lease)
            except LeaseLost:
                self.metrics.lease_held.set(0)
                self._queue.put(LeaseExpired(lease))
            except StoreError as e:
                log.log(level(failing), "%s", e)
                failing += 1
                self.metrics.errors.labels("etcd").inc()
                self.health.down("etcd", str(e))
                self.presence.error(str(e))
            else:
                if failing:
                    log.info("lease %x kept alive again after %d failed keep-alives", lease, failing)
                failing = 0
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

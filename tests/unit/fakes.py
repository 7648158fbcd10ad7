"""The fakes unit tests share (issue 11): one clock, one Docker. Each honours its port in
`lbgen.ports`; what a test scripts (health, outages, events) is a field or a method here."""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator

from msgspec.structs import replace

from lbgen.errors import DockerError
from lbgen.core.values import ContainerInfo, ContainerSpec, DockerEvent


def info(spec: ContainerSpec, cid: str = "", state: str = "running", health: str = "healthy",
         labels: dict[str, str] | None = None) -> ContainerInfo:
    """What `docker inspect` would report for a container created from `spec` (`labels` override)."""
    merged = {**spec.labels, **(labels or {})}
    return ContainerInfo(
        id=cid or f"id-{spec.name}", name=spec.name, image=spec.image, state=state, health=health,
        labels=merged, env=dict(spec.env), network_mode=spec.network_mode,
    )


class FakeClock:
    """Time moves only when someone sleeps; each sleep lets the fake world take a step (`on_sleep`)."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.on_sleep: list[Callable[[], None]] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.time += seconds
        for hook in self.on_sleep:
            hook()


class FakeEvents:
    def __init__(self) -> None:
        self.items: queue.Queue[object] = queue.Queue()

    def __iter__(self) -> Iterator[DockerEvent]:
        while (item := self.items.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self.items.put(None)


class FakeDocker:
    """Containers in a dict, for the agent (events to every open stream, `down` fails every call) and
    the deployer (`create_and_start`/`stop`/`remove` append to `log`; `health(spec, inspections)`
    scripts the health of the containers it created)."""

    def __init__(self, *containers: ContainerInfo, log: list[tuple[str, ...]] | None = None,
                 health: Callable[[ContainerSpec, int], str] | None = None) -> None:
        self.containers: dict[str, ContainerInfo] = {c.id: c for c in containers}
        self.log = log if log is not None else []
        self.specs: dict[str, ContainerSpec] = {}
        self.inspections: dict[str, int] = {}
        self.health = health or (lambda spec, n: "healthy" if n > 1 else "starting")
        self.count = 0
        self.down = False
        self.streams: list[FakeEvents] = []
        self.lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise DockerError("docker: cannot connect to the Docker daemon")

    # --- what the agent uses -------------------------------------------------------------------

    def events(self) -> FakeEvents:
        self._check()
        stream = FakeEvents()
        with self.lock:
            self.streams.append(stream)
        return stream

    def run(self, info: ContainerInfo, action: str = "start") -> None:
        self.containers[info.id] = info
        self.emit(DockerEvent("container", action, info.id, time.time(), info.name))

    def kill(self, info: ContainerInfo) -> None:
        self.containers[info.id] = replace(info, state="exited")
        self.emit(DockerEvent("container", "die", info.id, time.time(), info.name))

    def destroy(self, container_id: str) -> None:
        """`docker rm -f`: the container is gone (inspect answers None), then its events arrive."""
        gone = self.containers.pop(container_id)
        for action in ("kill", "die", "destroy"):
            self.emit(DockerEvent("container", action, container_id, time.time(), gone.name))

    def emit(self, event: object) -> None:
        with self.lock:
            for stream in self.streams:
                stream.items.put(event)

    def break_streams(self) -> None:
        with self.lock:
            streams, self.streams = self.streams, []
        for stream in streams:
            stream.items.put(DockerError("docker events: the stream ended"))

    def close(self) -> None:
        pass

    # --- both ----------------------------------------------------------------------------------

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        self._check()
        key, has_value, value = (label or "").partition("=")

        def matches(c: ContainerInfo) -> bool:
            return not key or (c.labels.get(key) == value if has_value else key in c.labels)

        return [c for c in self.containers.values() if (include_stopped or c.state == "running") and matches(c)]

    def inspect(self, container_id: str) -> ContainerInfo | None:
        self._check()
        current = self.containers.get(container_id)
        if current is None or container_id not in self.specs or current.state != "running":
            return current
        self.inspections[container_id] = n = self.inspections.get(container_id, 0) + 1
        health = self.health(self.specs[container_id], n)
        state = "exited" if health == "exited" else "running"
        self.containers[container_id] = replace(current, health=health, state=state)
        return self.containers[container_id]

    # --- what the deployer uses ----------------------------------------------------------------

    def add(self, container: ContainerInfo) -> None:
        self.containers[container.id] = container

    def create_and_start(self, spec: ContainerSpec) -> str:
        self.count += 1
        cid = f"c{self.count:04d}{spec.name}"
        self.log.append(("create", spec.name))
        self.specs[cid] = spec
        self.add(info(spec, cid, health="starting"))
        return cid

    def stop(self, container_id: str, timeout: float) -> None:
        self.log.append(("stop", self.containers[container_id].name))
        self.containers[container_id] = replace(self.containers[container_id], state="exited")

    def remove(self, container_id: str) -> None:
        self.log.append(("remove", self.containers.pop(container_id).name))

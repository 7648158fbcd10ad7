"""The Docker adapter against a real dockerd (host networking, the busybox backend image)."""

from __future__ import annotations

import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

import docker
import pytest

from lbgen.adapters.docker_engine import DockerEngine
from lbgen.errors import DockerError
from lbgen.core.values import ContainerInfo, ContainerSpec, DockerEvent
from tests.support.docker import DockerdFactory, RunContainer, wait_health
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

FAST_HEALTH = {"Test": ["CMD-SHELL", 'wget -q -O /dev/null "http://127.0.0.1:$PORT/health"'],
               "Interval": 200_000_000, "Timeout": 1_000_000_000, "Retries": 1}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _page(port: int) -> str:
    """The backend's page, polled: the container runs before busybox httpd listens."""

    def fetch() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                return str(response.read().decode())
        except ConnectionRefusedError:
            return ""
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                return ""
            raise

    return wait_until(fetch, 5, f"http://127.0.0.1:{port}/")


class EventCollector:
    """Reads a DockerEvents stream on a thread into a queue; `error` keeps what the iteration raised."""

    def __init__(self, engine: DockerEngine) -> None:
        self.stream = engine.events()
        self.events: queue.Queue[DockerEvent] = queue.Queue()
        self.seen: list[DockerEvent] = []  # everything, including what `expect` skipped over
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.seen.append(event)
                self.events.put(event)
        except BaseException as e:  # handed to the test thread
            self.error = e

    def expect(self, container_id: str, action: str, timeout: float = 15) -> DockerEvent:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if event.id == container_id and event.action == action:
                return event


def test_inspect_maps_a_host_network_container(docker_engine: DockerEngine, run_container: RunContainer,
                                               test_image: str) -> None:
    backend = run_container(labels={"lbgen.service": "web", "lbgen.port": "8080"},
                            env={"EXTRA": "a=b"}, healthcheck=False)
    info = docker_engine.inspect(backend.id)
    assert info is not None
    assert (info.id, info.name, info.image) == (backend.id, backend.name, test_image)
    assert (info.state, info.health, info.network_mode) == ("running", "none", "host")
    assert info.labels == {"lbgen.service": "web", "lbgen.port": "8080"}
    assert info.env["PORT"] == str(backend.port) and info.env["EXTRA"] == "a=b"
    assert (info.exposed_ports, info.bindings, dict(info.networks)) == ((), (), {})
    assert _page(backend.port).startswith(f"replica={backend.name} ")


def test_inspect_of_a_missing_container_is_none(docker_engine: DockerEngine) -> None:
    assert docker_engine.inspect("0" * 64) is None


def test_list_filters_by_label_and_includes_stopped_on_request(
    docker_engine: DockerEngine, docker_client: docker.DockerClient, run_container: RunContainer
) -> None:
    key = _unique("lbgen.test")
    first = run_container(labels={key: "a"}, healthcheck=False)
    second = run_container(labels={key: "b"}, healthcheck=False)
    run_container(healthcheck=False)  # unlabelled: never listed
    docker_client.containers.get(second.id).stop(timeout=5)

    def names(label: str, include_stopped: bool = False) -> list[str]:
        return [c.name for c in docker_engine.list_containers(label, include_stopped)]

    assert names(key) == [first.name]
    assert names(key, include_stopped=True) == sorted([first.name, second.name])
    assert names(f"{key}=b", include_stopped=True) == [second.name]


def test_health_moves_from_starting_to_healthy_to_unhealthy(
    docker_engine: DockerEngine, docker_client: docker.DockerClient, run_container: RunContainer
) -> None:
    backend = run_container()  # the image's HEALTHCHECK: every 1 s
    first = docker_engine.inspect(backend.id)
    assert first is not None and first.health == "starting"
    wait_health(docker_client, backend.id, "healthy")
    docker_client.containers.get(backend.id).exec_run(["rm", "/www/health"])
    wait_health(docker_client, backend.id, "unhealthy")
    last = docker_engine.inspect(backend.id)
    assert last is not None and last.health == "unhealthy"


def test_events_report_start_health_and_die_without_exec_noise(
    docker_engine: DockerEngine, docker_client: docker.DockerClient, run_container: RunContainer
) -> None:
    collector = EventCollector(docker_engine)
    try:
        backend = run_container(healthcheck=FAST_HEALTH)
        started = collector.expect(backend.id, "start")
        assert (started.type, started.name) == ("container", backend.name)
        assert abs(started.time - time.time()) < 60
        collector.expect(backend.id, "health_status: healthy")
        docker_client.containers.get(backend.id).stop(timeout=5)
        collector.expect(backend.id, "die")
    finally:
        collector.stream.close()
        collector.thread.join(2)
    actions = [event.action for event in collector.seen if event.id == backend.id]
    assert actions[:2] == ["create", "start"] and "health_status: healthy" in actions
    assert not [a for a in actions if a.startswith("exec_")], "health checks leak exec events"
    assert collector.error is None


def _block_reader(collector: EventCollector, client: docker.DockerClient, image: str) -> None:
    """Make the reader consume an event, so it is back blocked in recv() (closing a stream nobody
    reads yet is the easy case)."""
    container = client.containers.create(image, name=_unique("lbt-poke"))
    container.remove()
    collector.expect(container.id, "destroy")


def test_close_unblocks_a_blocked_reader(
    docker_engine: DockerEngine, docker_client: docker.DockerClient, test_image: str
) -> None:
    collector = EventCollector(docker_engine)
    _block_reader(collector, docker_client, test_image)
    collector.stream.close()
    collector.thread.join(30)  # without close() the reader blocks until the next event: forever here
    assert not collector.thread.is_alive(), "reader still blocked 30 s after close()"
    assert collector.error is None


def test_create_start_stop_remove_round_trip(docker_engine: DockerEngine, test_image: str,
                                             tmp_path: Path) -> None:
    port, name = free_port(), _unique("lbt-spec")
    (tmp_path / "note").write_text("mounted")
    spec = ContainerSpec(
        name=name, image=test_image, env={"PORT": str(port), "REPLICA": name, "VERSION": "7"},
        labels={"lbgen.service": "api"}, ports={port: port}, mem_limit=64 * 2**20, nano_cpus=500_000_000,
        mounts=((str(tmp_path), "/data", True),), restart_policy="on-failure:2", healthcheck=FAST_HEALTH,
    )
    container_id = docker_engine.create_and_start(spec)
    try:
        info = wait_until(lambda: _healthy(docker_engine, container_id), 15, f"{name} healthy")
        assert (info.name, info.labels["lbgen.service"], info.exposed_ports) == (name, "api", (port,))
        assert _page(port) == f"replica={name} version=7 port={port}\n"
        began = time.monotonic()
        docker_engine.stop(container_id, timeout=60)
        # did not wait for the 60 s SIGKILL: SIGTERM ended the backend (a generous bound, not a speed)
        assert time.monotonic() - began < 30, "SIGTERM should end the backend"
        stopped = docker_engine.inspect(container_id)
        assert stopped is not None and stopped.state == "exited"
    finally:
        docker_engine.remove(container_id)
    assert docker_engine.inspect(container_id) is None
    docker_engine.remove(container_id)  # already gone: nothing to do
    docker_engine.stop(container_id, timeout=1)


def _healthy(engine: DockerEngine, container_id: str) -> ContainerInfo | None:
    info = engine.inspect(container_id)
    return info if info is not None and info.health == "healthy" else None


def test_a_taken_name_is_an_error_naming_the_container(docker_engine: DockerEngine, test_image: str,
                                                       run_container: RunContainer) -> None:
    backend = run_container(healthcheck=False)
    with pytest.raises(DockerError, match=f"docker create {backend.name}: 409 .*already in use"):
        docker_engine.create_and_start(ContainerSpec(name=backend.name, image=test_image))


def test_a_container_that_fails_to_start_is_removed(docker_engine: DockerEngine, test_image: str,
                                                    tmp_path: Path) -> None:
    name = _unique("lbt-bad")
    (tmp_path / "file").write_text("not a directory")
    spec = ContainerSpec(name=name, image=test_image, mounts=((str(tmp_path / "file"), "/bin", True),))
    with pytest.raises(DockerError, match=f"docker start {name}: "):
        docker_engine.create_and_start(spec)
    assert name not in {c.name for c in docker_engine.list_containers(include_stopped=True)}


def test_a_stopped_daemon_is_a_docker_error_not_a_hang(dockerd_factory: DockerdFactory) -> None:
    daemon = dockerd_factory()
    engine = DockerEngine(daemon.url, timeout=5)
    try:
        collector = EventCollector(engine)
        with closing(daemon.client()) as client:
            _block_reader(collector, client, daemon.image)
        daemon.stop()
        collector.thread.join(5)
        assert isinstance(collector.error, DockerError), collector.error
        began = time.monotonic()
        with pytest.raises(DockerError, match="docker list containers.*cannot connect"):
            engine.list_containers()
        with pytest.raises(DockerError, match="docker events: cannot connect"):
            engine.events()
        # refused connections fail at once: neither call waited for the client's 5 s timeout
        assert time.monotonic() - began < 5
        daemon.start()
        assert engine.list_containers(include_stopped=True) == []
    finally:
        engine.close()

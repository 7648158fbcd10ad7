"""pytest plugin: a real `dockerd` per test session (per xdist worker), the busybox test image,
and a container factory that removes what it starts.

Fixtures:
- `dockerd` (session): the `Dockerd` handle; never stop it from a test, use `dockerd_factory`.
- `docker_host` (session): its `unix://` URL; `docker_client` (session): a docker SDK client.
- `test_image` (session): tag of the backend image (see examples/demo/image).
- `docker_engine`: lbgen's own adapter on the session daemon.
- `run_container`: start a backend container (host network, its own free port), removed after.
- `dockerd_factory`: start private daemons a test may stop and restart; all destroyed after.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import docker
import pytest

from lbgen.adapters.docker_engine import DockerEngine
from tests.support.dockerd import Dockerd, reap_stale
from tests.support.images import build_backend_image
from tests.support.util import free_port, wait_until

log = logging.getLogger(__name__)

NO_HEALTHCHECK = {"Test": ["NONE"]}


@dataclass(frozen=True)
class TestContainer:
    """A backend container started by `run_container`: it serves http://127.0.0.1:{port}/."""

    __test__ = False  # not a test class, whatever its name says

    id: str
    name: str
    port: int


def _require_dockerd() -> None:
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    if shutil.which("dockerd") is None:
        pytest.skip("dockerd is not installed (scripts/install-deps.sh installs docker.io)")


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    _require_dockerd()
    reap_stale()
    daemon = Dockerd.create()
    try:
        took = daemon.start()
        log.info("dockerd %s ready in %.2f s", daemon.url, took)
        yield daemon
    finally:
        daemon.destroy()


@pytest.fixture(scope="session")
def docker_host(dockerd: Dockerd) -> str:
    return dockerd.url


@pytest.fixture(scope="session")
def docker_client(dockerd: Dockerd) -> Iterator[docker.DockerClient]:
    with closing(dockerd.client()) as client:
        yield client


@pytest.fixture(scope="session")
def test_image(dockerd: Dockerd, docker_client: docker.DockerClient) -> str:
    dockerd.image = build_backend_image(docker_client)
    return dockerd.image


@pytest.fixture
def docker_engine(docker_host: str) -> Iterator[DockerEngine]:
    engine = DockerEngine(docker_host, timeout=30)
    yield engine
    engine.close()


RunContainer = Callable[..., TestContainer]


@pytest.fixture
def run_container(docker_client: docker.DockerClient, test_image: str) -> Iterator[RunContainer]:
    """`run_container(name=None, port=None, env=None, labels=None, healthcheck=True, healthy=True,
    command=None)` → a started backend on the host network; it and its kin are removed after the test."""
    started: list[str] = []

    def run(
        *,
        name: str | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        healthcheck: bool | Mapping[str, object] = True,
        healthy: bool = True,
        command: Sequence[str] | None = None,
    ) -> TestContainer:
        port = port or free_port()
        name = name or f"lbt-{uuid.uuid4().hex[:10]}"
        container = docker_client.containers.run(
            test_image,
            command=list(command) if command else None,
            name=name,
            detach=True,
            network_mode="host",
            environment={"PORT": str(port), "REPLICA": name, "HEALTHY": "1" if healthy else "0", **(env or {})},
            labels=dict(labels or {}),
            healthcheck=_healthcheck(healthcheck),
        )
        started.append(container.id)
        return TestContainer(container.id, name, port)

    yield run
    for container_id in started:
        try:
            docker_client.containers.get(container_id).remove(force=True, v=True)
        except docker.errors.NotFound:
            pass


def _healthcheck(option: bool | Mapping[str, object]) -> dict[str, object] | None:
    if option is True:
        return None  # the image's own HEALTHCHECK
    if option is False:
        return dict(NO_HEALTHCHECK)
    return dict(option)


def wait_health(client: docker.DockerClient, container_id: str, status: str, timeout: float = 15) -> None:
    """Poll until the container's Docker health status is `status`."""

    def reached() -> bool:
        state = client.api.inspect_container(container_id)["State"]
        return bool((state.get("Health") or {}).get("Status") == status)

    wait_until(reached, timeout, f"container {container_id[:12]} to be {status}")


DockerdFactory = Callable[[], Dockerd]


@pytest.fixture
def dockerd_factory() -> Iterator[DockerdFactory]:
    """Start private daemons (with the test image built) that a test may `stop()` and `start()`
    again on the same socket and data; every one is destroyed after the test."""
    _require_dockerd()
    daemons: list[Dockerd] = []

    def start() -> Dockerd:
        daemon = Dockerd.create()
        daemons.append(daemon)
        daemon.start()
        with closing(daemon.client()) as client:
            daemon.image = build_backend_image(client)
        return daemon

    yield start
    for daemon in daemons:
        daemon.destroy()

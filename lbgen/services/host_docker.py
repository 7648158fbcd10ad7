"""A named Docker host's daemon, whose errors say which host they come from (`deploy` with `hosts:`)."""

from __future__ import annotations

from typing import Callable, TypeVar

from lbgen.core.deploy_hosts import DockerHost
from lbgen.errors import DockerError
from lbgen.core.values import ContainerInfo, ContainerSpec
from lbgen.ports import Docker, DockerEvents

T = TypeVar("T")


class HostDocker:
    """`Docker` of `host`: every `DockerError` becomes `host NAME (URL): <error>`, one line."""

    def __init__(self, host: DockerHost, docker: Docker) -> None:
        self.host, self.docker = host, docker

    def _named(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except DockerError as e:
            raise DockerError(f"{self.host.label}: {e}") from e

    def events(self) -> DockerEvents:
        return self._named(self.docker.events)

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        return self._named(lambda: self.docker.list_containers(label, include_stopped))

    def inspect(self, container_id: str) -> ContainerInfo | None:
        return self._named(lambda: self.docker.inspect(container_id))

    def create_and_start(self, spec: ContainerSpec) -> str:
        return self._named(lambda: self.docker.create_and_start(spec))

    def stop(self, container_id: str, timeout: float) -> None:
        self._named(lambda: self.docker.stop(container_id, timeout))

    def remove(self, container_id: str) -> None:
        self._named(lambda: self.docker.remove(container_id))

    def close(self) -> None:
        self.docker.close()

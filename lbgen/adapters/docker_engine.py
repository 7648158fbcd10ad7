"""The `Docker` port over the Docker Engine API, through the docker SDK's low-level `APIClient`.

The low-level client is used because lbgen needs the raw `inspect` document (health, env, ports,
networks) mapped into its own `ContainerInfo`, not the SDK's model objects. Every SDK, requests or
urllib3 failure leaves this module as a `DockerError` whose message names the operation and the
container, chained to the original.
"""

from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from typing import Any, ContextManager, Iterator, Mapping

import docker
import requests
import urllib3
from docker.errors import DockerException, NotFound, StreamParseError
from docker.types import CancellableStream, Mount

from lbgen.errors import ConfigError, DockerError
from lbgen.core.values import ContainerInfo, ContainerSpec, DockerEvent, PortBinding

log = logging.getLogger(__name__)

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 30.0
# Docker 20.10 (Debian 12) serves API 1.41 and newer daemons still accept it. A fixed version also
# means constructing the client does not call the daemon, so an agent can start while it is down.
API_VERSION = "1.41"
# Container actions lbgen reacts to, filtered at the daemon: health checks run as execs, and
# without the filter every check of every container would arrive as exec_create/exec_start/exec_die.
EVENT_ACTIONS = (
    "create", "start", "restart", "stop", "kill", "die", "oom", "destroy",
    "pause", "unpause", "rename", "update", "health_status",
)
_TRANSPORT_ERRORS = (
    DockerException, requests.RequestException, urllib3.exceptions.HTTPError, OSError, StreamParseError,
)


def describe(error: BaseException, docker_host: str = "") -> str:
    """One line saying what went wrong, without the SDK's URL noise where it has a better text."""
    if isinstance(error, docker.errors.APIError) and error.explanation:
        text = f"{error.status_code or 'error'} {error.explanation}"
    elif isinstance(error, requests.ConnectionError):
        cause = _os_error(error)
        reason = cause.strerror if cause is not None and cause.strerror else str(cause or error)
        text = f"cannot connect to the Docker daemon {docker_host}: {reason}".replace("  ", " ")
    else:
        text = str(error) or type(error).__name__
    return " ".join(str(text).split())


def _os_error(error: BaseException, depth: int = 0) -> OSError | None:
    """The OSError under requests' and urllib3's wrappers (they keep it in `args`)."""
    if isinstance(error, OSError) and error.strerror:
        return error
    if depth > 5:
        return None
    inner = [a for a in error.args if isinstance(a, BaseException)] + [error.__cause__, error.__context__]
    for candidate in inner:
        found = _os_error(candidate, depth + 1) if candidate is not None else None
        if found is not None:
            return found
    return None


@contextmanager
def _as_docker_error(what: str, docker_host: str = "", missing_ok: bool = False) -> Iterator[None]:
    """Re-raise SDK and transport errors as `DockerError`; with `missing_ok`, a 404 (the container
    is gone) is swallowed instead, which makes stop/remove idempotent."""
    try:
        yield
    except NotFound as e:
        if not missing_ok:
            raise DockerError(f"docker {what}: {describe(e, docker_host)}") from e
    except _TRANSPORT_ERRORS as e:
        raise DockerError(f"docker {what}: {describe(e, docker_host)}") from e


class DockerEngine:
    """A Docker daemon reached at `docker_host` (`unix:///path/docker.sock` or `tcp://host:port`)."""

    def __init__(self, docker_host: str = DEFAULT_HOST, timeout: float = DEFAULT_TIMEOUT,
                 tls: tuple[str, str, str] | None = None) -> None:
        """`tls`: (CA, certificate, key) files for a `tcp://` daemon, verified as `docker --tlsverify`."""
        self.docker_host = docker_host
        with self._errors("connect"):
            config = docker.tls.TLSConfig(client_cert=(tls[1], tls[2]), ca_cert=tls[0], verify=True) if tls else False
            self._api = docker.APIClient(base_url=docker_host, version=API_VERSION, timeout=timeout, tls=config)

    def _errors(self, what: str, missing_ok: bool = False) -> ContextManager[None]:
        return _as_docker_error(what, self.docker_host, missing_ok)

    def events(self) -> DockerEvents:
        """Container lifecycle and health events from now on; subscribe before listing."""
        with self._errors("events"):
            stream = self._api.events(
                decode=True, filters={"type": "container", "event": list(EVENT_ACTIONS)}
            )
        return DockerEvents(stream)

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        filters = {"label": label} if label else None
        with self._errors("list containers" + (f" with label {label!r}" if label else "")):
            summaries = self._api.containers(all=include_stopped, filters=filters)
        # A container removed between the listing and its inspect is simply not there any more.
        infos = (self.inspect(summary["Id"]) for summary in summaries)
        return sorted((info for info in infos if info is not None), key=lambda info: info.name)

    def inspect(self, container_id: str) -> ContainerInfo | None:
        data = None
        with self._errors(f"inspect {container_id[:12]}", missing_ok=True):
            data = self._api.inspect_container(container_id)
        return container_info(data) if data is not None else None

    def create_and_start(self, spec: ContainerSpec) -> str:
        """Create and start; a container that was created but failed to start is removed again."""
        with self._errors(f"create {spec.name}"):
            created = self._api.create_container(**self._create_args(spec))
        container_id: str = created["Id"]
        for warning in created.get("Warnings") or ():
            log.warning("docker create %s: %s", spec.name, warning)
        try:
            with self._errors(f"start {spec.name}"):
                self._api.start(container_id)
        except DockerError:
            self._discard(container_id, spec.name)
            raise
        return container_id

    def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after `timeout` s. A container that is already gone counts as stopped."""
        with self._errors(f"stop {container_id[:12]}", missing_ok=True):
            self._api.stop(container_id, timeout=math.ceil(timeout))

    def remove(self, container_id: str) -> None:
        """Remove a stopped container and its anonymous volumes; one already gone counts as removed."""
        with self._errors(f"remove {container_id[:12]}", missing_ok=True):
            self._api.remove_container(container_id, v=True)

    def close(self) -> None:
        self._api.close()

    def _create_args(self, spec: ContainerSpec) -> dict[str, Any]:
        # On the host network a container port *is* the host port: Docker rejects bindings there.
        publish = spec.network_mode != "host" and bool(spec.ports)
        bindings = {c: (spec.host_ip, h) if spec.host_ip else h for c, h in spec.ports.items()}
        host_config = self._api.create_host_config(
            network_mode=spec.network_mode,
            port_bindings=bindings if publish else None,
            mem_limit=spec.mem_limit or None,
            nano_cpus=spec.nano_cpus or None,
            mounts=[Mount(target=dst, source=src, type="bind", read_only=ro) for src, dst, ro in spec.mounts],
            restart_policy=restart_policy(spec.restart_policy),
        )
        return {
            "image": spec.image,
            "name": spec.name,
            "command": list(spec.command) or None,
            "environment": dict(spec.env),
            "labels": dict(spec.labels),
            "ports": list(spec.ports) or None,
            "healthcheck": dict(spec.healthcheck) if spec.healthcheck is not None else None,
            "host_config": host_config,
        }

    def _discard(self, container_id: str, name: str) -> None:
        try:
            with self._errors(f"remove {name} after a failed start"):
                self._api.remove_container(container_id, v=True, force=True)
        except DockerError as e:
            log.warning("%s", e)


class DockerEvents:
    """Decoded container events. `close()` (from any thread) ends the iteration promptly.

    Iteration raises `DockerError` when the stream breaks or ends on its own (the daemon stopped or
    restarted): the caller reconnects with `events()` and reconciles.
    """

    def __init__(self, stream: CancellableStream) -> None:
        self._stream = stream
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[DockerEvent]:
        while True:
            try:
                raw = next(self._stream)
            except StopIteration:
                raw = None
            except Exception as e:
                if self._closed.is_set():
                    return  # whatever the torn-down socket raised, it means "closed"
                if not isinstance(e, _TRANSPORT_ERRORS):
                    raise
                raise DockerError(f"docker events: {describe(e)}") from e
            if self._closed.is_set():
                return
            if raw is None:
                raise DockerError("docker events: the stream ended (daemon stopped or restarting)")
            yield docker_event(raw)

    def close(self) -> None:
        """Shut the stream's socket down, which wakes a reader blocked on it."""
        self._closed.set()
        try:
            self._stream.close()
        except (DockerException, OSError, AttributeError):
            pass  # already torn down by the daemon side


def docker_event(raw: Mapping[str, Any]) -> DockerEvent:
    """One decoded `/events` message as a `DockerEvent` (time from `timeNano` where present)."""
    actor = raw.get("Actor") or {}
    nanos = raw.get("timeNano")
    return DockerEvent(
        type=raw.get("Type", ""),
        action=raw.get("Action", ""),
        id=actor.get("ID") or raw.get("id", ""),
        time=nanos / 1e9 if nanos else float(raw.get("time", 0)),
        name=(actor.get("Attributes") or {}).get("name", ""),
    )


def container_info(data: Mapping[str, Any]) -> ContainerInfo:
    """`docker inspect` JSON → `ContainerInfo` (health `none` when there is no HEALTHCHECK)."""
    config = data.get("Config") or {}
    state = data.get("State") or {}
    settings = data.get("NetworkSettings") or {}
    return ContainerInfo(
        id=data["Id"],
        name=str(data.get("Name", "")).lstrip("/"),
        image=config.get("Image", ""),
        state=state.get("Status", ""),
        health=(state.get("Health") or {}).get("Status", "none"),
        labels=dict(config.get("Labels") or {}),
        env=dict(entry.partition("=")[::2] for entry in config.get("Env") or ()),
        network_mode=(data.get("HostConfig") or {}).get("NetworkMode", ""),
        exposed_ports=exposed_tcp_ports(config.get("ExposedPorts") or {}),
        bindings=port_bindings(settings.get("Ports") or {}),
        networks={
            name: net["IPAddress"]
            for name, net in (settings.get("Networks") or {}).items()
            if net and net.get("IPAddress")
        },
    )


def exposed_tcp_ports(exposed: Mapping[str, Any]) -> tuple[int, ...]:
    """`{"8080/tcp": {}, "53/udp": {}}` → `(8080,)`: lbgen balances TCP only."""
    ports = set()
    for key in exposed:
        port, _, proto = key.partition("/")
        if (proto or "tcp") == "tcp" and port.isdigit():
            ports.add(int(port))
    return tuple(sorted(ports))


def port_bindings(published: Mapping[str, Any]) -> tuple[PortBinding, ...]:
    """`NetworkSettings.Ports` → bindings; unpublished ports (`null`) and empty host ports are skipped."""
    bindings = []
    for key, hosts in published.items():
        port, _, proto = key.partition("/")
        for host in hosts or ():
            host_port = str(host.get("HostPort", ""))
            if port.isdigit() and host_port.isdigit():
                bindings.append(PortBinding(int(port), proto or "tcp", host.get("HostIp", ""), int(host_port)))
    return tuple(sorted(bindings, key=lambda b: (b.container_port, b.protocol, b.host_ip, b.host_port)))


def restart_policy(text: str) -> dict[str, Any]:
    """`no`, `always`, `unless-stopped`, `on-failure[:N]` → the Engine API's RestartPolicy."""
    name, _, count = text.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure") or (count and not count.isdigit()):
        raise ConfigError(f"restart policy {text!r}: expected no, always, unless-stopped or on-failure[:N]")
    if count and name != "on-failure":
        raise ConfigError(f"restart policy {text!r}: only on-failure takes a retry count")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}

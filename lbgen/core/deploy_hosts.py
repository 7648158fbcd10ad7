"""Docker hosts and replica placement for deploy specs (docs/deploy.md, *Several hosts*).

A spec without `hosts:` has one implicit host (named "", the `--docker-host` daemon) and behaves
exactly as before. With `hosts:`, each service's replicas are placed on them: `spread` (even) or
`{host: count}`. Replica numbers are global to the service and handed out round-robin over the
hosts that still have room, in the hosts' spec order, so replica N stays on the same host when
replicas are added (a placement that shrinks one host moves only the replicas above its count).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import msgspec

from lbgen.core.bounded import quote
from lbgen.core.deploy_checks import choice, host_path, int_in, matching
from lbgen.core.fields import Section
from lbgen.core.addresses import is_ip, normalize_address
from lbgen.core.schema import NAME_RE
from lbgen.errors import ConfigError

URL_RE = re.compile(r"(unix:///[A-Za-z0-9_.~/@+-]{1,4095}|tcp://[A-Za-z0-9.:\[\]-]{1,255}:\d{1,5})")
HOST_ERROR_POLICIES = ("stop", "continue")
SPREAD = "spread"


class TlsFiles(msgspec.Struct, frozen=True):
    """Client TLS for a `tcp://` daemon (as `docker --tlsverify`): CA, certificate and key files."""

    ca: str
    cert: str
    key: str


class DockerHost(msgspec.Struct, frozen=True):
    """A Docker host: its daemon URL, the address and node name its agent registers with, and the
    address replicas bind to (`bind`: env `BIND`, `${BIND}`, and bridge mode's published ports)."""

    name: str
    url: str = ""  # "" = the implicit host: `--docker-host`
    address: str = ""
    node: str = ""
    bind: str = ""
    tls: TlsFiles | None = None

    @property
    def label(self) -> str:
        """How errors and progress name it."""
        return f"host {self.name} ({self.url})" if self.name else "the Docker host"


IMPLICIT = DockerHost("")


def ip_address(value: Any) -> str:
    if not isinstance(value, str) or not is_ip(value):
        raise ValueError(f"expected an IP address of this host, got {quote(value)}")
    return normalize_address(value) or value


def _tls(path: str, value: Any) -> TlsFiles:
    fields = Section(value, path)
    tls = TlsFiles(fields.take("ca", host_path), fields.take("cert", host_path), fields.take("key", host_path))
    fields.done()
    return tls


def _host(name: str, value: Any) -> DockerHost:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"hosts.{name}: expected a host name of letters, digits and _.-")
    fields = Section(value, f"hosts.{name}")
    url = fields.take("docker", matching(URL_RE, "a Docker URL like unix:///var/run/docker.sock or tcp://10.0.0.2:2376"))
    host = DockerHost(
        name=name, url=url,
        address=fields.take("address", ip_address),
        node=fields.take("node", matching(NAME_RE, "an agent node name"), name),
        bind=fields.take("bind", ip_address, ""),
        tls=fields.take("tls", lambda v: _tls(fields.field("tls"), v), None),
    )
    fields.done()
    if host.tls and not url.startswith("tcp://"):
        raise ConfigError(f"hosts.{name}.tls: only for a tcp:// daemon, not {quote(url)}")
    return host


def parse_hosts(value: Any) -> tuple[DockerHost, ...]:
    """The `hosts:` mapping, in spec order (which placement follows)."""
    if not isinstance(value, dict) or not value:
        raise ConfigError("hosts: expected a mapping of NAME: {docker: URL, address: IP}")
    hosts = tuple(_host(str(name), item) for name, item in value.items())
    for field_name in ("url", "node"):
        seen: dict[str, str] = {}
        for host in hosts:
            other = seen.setdefault(getattr(host, field_name), host.name)
            if other != host.name:
                raise ConfigError(f"hosts.{host.name}: same {field_name} as hosts.{other}")
    return hosts


def on_host_error(value: Any) -> str:
    return str(choice(HOST_ERROR_POLICIES)(value))


def parse_placement(path: str, value: Any, hosts: tuple[DockerHost, ...], replicas: int | None) -> dict[str, int]:
    """Replicas per host name: `spread` over `hosts` (the implicit one without `hosts:`) or `{host: count}`."""
    names = [h.name for h in hosts] or [""]
    if value == SPREAD:
        total = 1 if replicas is None else replicas
        return {name: total // len(names) + (i < total % len(names)) for i, name in enumerate(names)}
    counts = _counts(path, value, names)
    if replicas is not None and replicas != sum(counts.values()):
        raise ConfigError(f"{path}: places {sum(counts.values())} replicas, but replicas is {replicas}")
    return {name: counts.get(name, 0) for name in names}


def _counts(path: str, value: Any, names: list[str]) -> dict[str, int]:
    """`{host: count}`, each host one of `names`."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{path}: expected spread or a mapping of host: replicas, got {quote(value)}")
    counts = {}
    for name, count in value.items():
        if name not in names or not name:
            raise ConfigError(f"{path}.{name}: no such host in hosts: ({', '.join(filter(None, names)) or 'none'})")
        try:
            counts[name] = int_in(0, 1000)(count)
        except ValueError as e:
            raise ConfigError(f"{path}.{name}: {e}") from e
    return counts


def assign(placement: Mapping[str, int]) -> dict[int, str]:
    """Replica number (1..) → host name: round-robin over the hosts with room left, in order."""
    left, out, replica = dict(placement), {}, 1
    while any(left.values()):
        for name in placement:
            if left[name]:
                out[replica], left[name], replica = name, left[name] - 1, replica + 1
    return out

"""The registry setting (`--registry`, `LBGEN_REGISTRY`, `registry:` in settings), parsed.

    etcd://10.0.0.1:2379                     one etcd member, plain gRPC (http:// is the same)
    https://10.0.0.1:2379                    TLS (add --ca, and --cert/--key for client certs)
    etcd://a:2379,etcd://b:2379,etcd://c:2379  a cluster: a comma-separated list (or a YAML list)
    file:registry.yaml                       the YAML file registry (file:///abs/path also works)
"""

from __future__ import annotations

import re
from typing import Sequence

import msgspec

from lbgen.core.bounded import quote
from lbgen.core.addresses import is_hostname, is_ip
from lbgen.errors import ConfigError

DEFAULT_ETCD_PORT = 2379
_ETCD_RE = re.compile(r"(?P<scheme>etcd|http|https)://(?P<host>\[[^\]]*\]|[^:/\[\]]+)(?::(?P<port>[^/]*))?/?")
FORMS = "etcd://HOST:PORT, https://HOST:PORT, a comma-separated list of those, or file:PATH"


class RegistryUrl(msgspec.Struct, frozen=True):
    """Where the registry is: an etcd cluster (`endpoints`, `tls`) or a YAML file (`path`)."""

    kind: str  # "etcd" | "file"
    endpoints: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "file":
            return f"file:{self.path}"
        scheme = "https" if self.tls else "etcd"
        return ",".join(f"{scheme}://{_netloc(host, port)}" for host, port in self.endpoints)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_registry_url(value: str | Sequence[str]) -> RegistryUrl:
    """Parse the setting; `ConfigError` naming the value and the accepted forms when it is bad."""
    items = [value] if isinstance(value, str) else list(value)
    parts = [part.strip() for item in items for part in _text(item, value).split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"registry {quote(value)}: empty; expected {FORMS}")
    if any(part.startswith("file:") for part in parts):
        if len(parts) > 1:
            raise ConfigError(f"registry {quote(value)}: a file registry cannot be part of a list")
        return _file(parts[0])
    endpoints = [_etcd(part) for part in parts]
    if len({tls for tls, _ in endpoints}) > 1:
        raise ConfigError(f"registry {quote(value)}: mixes https:// and plain endpoints; use one or the other")
    return RegistryUrl("etcd", tuple(dict.fromkeys(address for _, address in endpoints)), endpoints[0][0])


def _text(item: object, value: object) -> str:
    if not isinstance(item, str):
        raise ConfigError(f"registry {quote(value)}: {quote(item)} is not a string; expected {FORMS}")
    return item


def _file(part: str) -> RegistryUrl:
    path = part[len("file:"):]
    path = path[2:] if path.startswith("///") else path
    if not path or path.startswith("//"):
        raise ConfigError(f"registry {quote(part)}: expected file:PATH (e.g. file:registry.yaml or file:///etc/lbgen/registry.yaml)")
    return RegistryUrl("file", path=path)


def _etcd(part: str) -> tuple[bool, tuple[str, int]]:
    match = _ETCD_RE.fullmatch(part)
    if match is None:
        raise ConfigError(f"registry {quote(part)}: expected {FORMS}")
    host = match["host"].strip("[]")
    if not (is_ip(host) or is_hostname(host)):
        raise ConfigError(f"registry {quote(part)}: {quote(host)} is not a host name or IP address")
    port_text = match["port"] if match["port"] is not None else str(DEFAULT_ETCD_PORT)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"registry {quote(part)}: port {quote(port_text)} is not a number from 1 to 65535")
    return match["scheme"] == "https", (host, int(port_text))


"""Discovery: containers and their labels → the endpoints one Docker host should register
(docs/agent.md); `lbgen.core.registration` then turns them into puts and deletes.

Pure: the agent hands in `ContainerInfo` values and gets values back. A container whose labels
are wrong is not guessed at: it yields a `Reject` naming the label and why, and registers nothing,
while every other container is unaffected.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import msgspec
from msgspec.structs import replace

from lbgen.core.addresses import is_ip
from lbgen.core.bounded import quote
from lbgen.core.model import HEALTH_STATES, Endpoint
from lbgen.core.schema import (
    MAX_WEIGHT,
    META_VALUE_RE,
    NAME_RE,
    check_name,
    endpoint_key,
)
from lbgen.errors import InvalidValue
from lbgen.core.values import ContainerInfo, PortBinding

LABEL_PREFIX = "lbgen."
PORT_FIELDS = ("service", "weight", "tags")
TOP_LABELS = ("service", "port", "weight", "tags", "network", "ignore")
UNSPECIFIED_IPS = ("", "0.0.0.0", "::")
FALSE_WORDS = ("", "0", "false", "no", "off")
_REGISTRATOR_PORT_RE = re.compile(r"SERVICE_(\d+)_(NAME|TAGS|IGNORE)")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class BadLabel(InvalidValue):
    """A container label (or registrator variable) that cannot be honoured."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(f"{label}: {reason}")
        self.label = label
        self.reason = reason


class DiscoveryOptions(msgspec.Struct, frozen=True):
    """How this agent turns containers into endpoints (the `lbgen agent` flags)."""

    node: str
    host_ip: str
    register_all: bool = False  # --all: every container with a port counts, not only labelled ones
    internal_network: str = ""  # --internal: containers on this network register their own IP there

    def __post_init__(self) -> None:
        check_name("node", self.node)
        if not is_ip(self.host_ip):
            raise InvalidValue(f"host IP {self.host_ip!r}: not an IP address")
        if self.internal_network:
            check_name("internal network", self.internal_network)


class Reject(msgspec.Struct, frozen=True):
    """A container skipped because of one bad label."""

    container: str
    container_id: str
    label: str
    reason: str

    def __str__(self) -> str:
        return f"container {self.container} ({self.container_id[:12]}): label {self.label}: {self.reason}"


class Discovered(msgspec.Struct, frozen=True):
    """The endpoints this node should register, by registry key, and the containers skipped."""

    endpoints: Mapping[str, Endpoint]
    rejects: tuple[Reject, ...] = ()


class _PortSettings(msgspec.Struct, frozen=True):
    name: str = ""
    name_source: str = ""
    weight: str = ""
    tags: str = ""
    ignore: bool = False


class _Settings(msgspec.Struct, frozen=True):
    """A container's registration settings, merged from `lbgen.*` labels and registrator variables."""

    name: str = ""
    name_source: str = ""
    strict: bool = False  # named by lbgen.service: an ambiguous port is an error, not a guess
    port: int | None = None
    weight: str = ""
    tags: str = ""
    network: str = ""
    ignore: bool = False
    meta: Mapping[str, str] = {}
    per_port: Mapping[int, _PortSettings] = {}


def drained(desired: Mapping[str, Endpoint], drain_ids: Iterable[str]) -> dict[str, Endpoint]:
    """`desired` with weight 0 for every endpoint a deploy is draining (`{prefix}/drain/{id}` exists),
    so a reconcile during a rolling update never puts traffic back on a replica about to stop."""
    ids = set(drain_ids)
    return {k: e.with_weight(0) if e.id in ids else e for k, e in desired.items()}


def discover(containers: Iterable[ContainerInfo], options: DiscoveryOptions, prefix: str) -> Discovered:
    """Every endpoint the running `containers` justify, keyed by registry key, plus the rejects."""
    endpoints: dict[str, Endpoint] = {}
    rejects: list[Reject] = []
    for container in sorted(containers, key=lambda c: c.id):
        try:
            found = container_endpoints(container, options)
        except BadLabel as e:
            rejects.append(Reject(_container_name(container), container.id, e.label, e.reason))
            continue
        for service, endpoint in found:
            endpoints[endpoint_key(prefix, service, endpoint.id)] = endpoint
    return Discovered(endpoints, tuple(rejects))


def container_endpoints(container: ContainerInfo, options: DiscoveryOptions) -> list[tuple[str, Endpoint]]:
    """`(service, endpoint)` for each service port of one container; raises `BadLabel`."""
    if container.state != "running":
        return []
    settings = read_settings(container)
    if settings.ignore:
        return []
    ports = _service_ports(container, settings, options)
    return [
        (service, _endpoint(container, settings, options, port, service))
        for port, service in sorted(ports.items())
    ]


def read_settings(container: ContainerInfo) -> _Settings:
    """Merge registrator's `SERVICE_*` (env, then labels) under lbgen's own labels, which win."""
    registrator = {k: v for k, v in container.env.items() if k.startswith("SERVICE_")}
    registrator.update({k: v for k, v in container.labels.items() if k.startswith("SERVICE_")})
    settings = _registrator_settings(registrator)
    ours = {k[len(LABEL_PREFIX) :]: v for k, v in container.labels.items() if k.startswith(LABEL_PREFIX)}
    return _apply_lbgen_labels(settings, ours)


def _registrator_settings(variables: Mapping[str, str]) -> _Settings:
    per_port: dict[int, _PortSettings] = {}
    for key, value in variables.items():
        if match := _REGISTRATOR_PORT_RE.fullmatch(key):
            port, what = int(match.group(1)), match.group(2)
            entry = per_port.get(port, _PortSettings())
            if what == "NAME":
                entry = replace(entry, name=value, name_source=key)
            elif what == "TAGS":
                entry = replace(entry, tags=value)
            else:
                entry = replace(entry, ignore=_truthy(value))
            per_port[port] = entry
    name = variables.get("SERVICE_NAME", "")
    return _Settings(
        name=name,
        name_source="SERVICE_NAME" if name else "",
        tags=variables.get("SERVICE_TAGS", ""),
        ignore=_truthy(variables.get("SERVICE_IGNORE", "")),
        per_port=per_port,
    )


def _apply_lbgen_labels(base: _Settings, labels: Mapping[str, str]) -> _Settings:
    """Overlay `lbgen.*` labels (given without the prefix); unknown `lbgen.*` labels are left to other tools."""
    per_port = dict(base.per_port)
    meta: dict[str, str] = {}
    top: dict[str, str] = {}
    for key, value in labels.items():
        head, _, rest = key.partition(".")
        if head == "meta" and rest:
            meta[_check_meta_key(key, rest)] = _check_meta_value(key, value)
        elif rest in PORT_FIELDS:
            port = _parse_port(LABEL_PREFIX + key, head)
            entry = per_port.get(port, _PortSettings())
            if rest == "service":
                per_port[port] = replace(entry, name=value, name_source=LABEL_PREFIX + key)
            elif rest == "weight":
                per_port[port] = replace(entry, weight=value)
            else:
                per_port[port] = replace(entry, tags=value)
        elif not rest and key in TOP_LABELS:
            top[key] = value
    return _Settings(
        name=top.get("service", base.name),
        name_source="lbgen.service" if "service" in top else base.name_source,
        strict="service" in top,
        port=_parse_port("lbgen.port", top["port"]) if "port" in top else None,
        weight=top.get("weight", ""),
        tags=top.get("tags", base.tags),
        network=top.get("network", ""),
        ignore=base.ignore or _truthy(top.get("ignore", "")),
        meta=dict(sorted(meta.items())),
        per_port=per_port,
    )


def _service_ports(container: ContainerInfo, settings: _Settings, options: DiscoveryOptions) -> dict[int, str]:
    """Container port → service name, for every port this container should register."""
    available = _available_ports(container, settings, options)
    named: dict[int, str] = {}
    for port, entry in settings.per_port.items():
        if entry.name:
            _reach(container, settings, options, port, entry.name_source)
            named[port] = _check_service(entry.name_source, entry.name)
    base = settings.name or (_image_service(container.image) if options.register_all else "")
    source = settings.name_source or "image"
    if settings.port is not None:
        if not base:
            raise BadLabel("lbgen.port", "no service name: set lbgen.service too")
        _reach(container, settings, options, settings.port, "lbgen.port")
        named.setdefault(settings.port, _check_service(source, base))
    elif base:
        rest = [p for p in available if p not in named]
        if settings.strict and (len(rest) > 1 or not (rest or named)):
            found = ", ".join(map(str, rest)) or "none published or exposed"
            raise BadLabel("lbgen.service", f"cannot tell which port to register ({found}): set lbgen.port")
        for port in rest:  # registrator's rule: several ports → one service per port, `name-port`
            named[port] = _check_service(source, base if len(rest) == 1 else f"{base}-{port}")
    ignored = {p for p, e in settings.per_port.items() if e.ignore}
    return {p: name for p, name in named.items() if p not in ignored}


def _network(container: ContainerInfo, settings: _Settings, options: DiscoveryOptions) -> tuple[str, str]:
    """`(network, container IP)` when the container registers its own IP, else `("", "")`.

    A `lbgen.network` label must name a network the container is on; the agent-wide `--internal`
    applies only to containers attached to that network, the others use the host's address.
    """
    if settings.network:
        ip = container.networks.get(settings.network, "")
        if not ip:
            raise BadLabel("lbgen.network", f"container has no address on network {settings.network!r}")
        return settings.network, ip
    ip = container.networks.get(options.internal_network, "") if options.internal_network else ""
    return (options.internal_network, ip) if ip else ("", "")


def _available_ports(container: ContainerInfo, settings: _Settings, options: DiscoveryOptions) -> list[int]:
    """Ports that count without being named in a label: published, or exposed where reachable."""
    if _network(container, settings, options)[0]:
        return sorted(set(container.exposed_ports) | {b.container_port for b in _tcp_bindings(container)})
    if container.network_mode == "host":
        return sorted(set(container.exposed_ports))
    return sorted({b.container_port for b in _tcp_bindings(container)})


def _reach(
    container: ContainerInfo, settings: _Settings, options: DiscoveryOptions, port: int, source: str
) -> tuple[str, int]:
    if (address := _address(container, settings, options, port)) is None:
        raise BadLabel(source, f"port {port} is not published (-p) and the container is not on the host network")
    return address


def _address(
    container: ContainerInfo, settings: _Settings, options: DiscoveryOptions, port: int
) -> tuple[str, int] | None:
    """Where `port` of the container is reached from the LB: the documented address rules."""
    network, ip = _network(container, settings, options)
    if network:
        return ip, port
    if container.network_mode == "host":
        return options.host_ip, port
    bindings = sorted(
        (b for b in _tcp_bindings(container) if b.container_port == port),
        key=lambda b: (":" in b.host_ip and b.host_ip != "::", b.host_ip),  # IPv4 first
    )
    if not bindings:
        return None
    host_ip = bindings[0].host_ip
    return (options.host_ip if host_ip in UNSPECIFIED_IPS else host_ip), bindings[0].host_port


def _endpoint(
    container: ContainerInfo, settings: _Settings, options: DiscoveryOptions, port: int, service: str
) -> Endpoint:
    entry = settings.per_port.get(port, _PortSettings())
    address = _reach(container, settings, options, port, f"lbgen.{port}.service")
    if not is_ip(address[0]):
        raise BadLabel(f"port {port}", f"address {address[0]!r} from Docker is not an IP address")
    weight_label = f"lbgen.{port}.weight" if entry.weight else "lbgen.weight"
    return Endpoint(
        id=endpoint_id(options.node, container, port),
        address=address[0],
        port=address[1],
        weight=_parse_weight(weight_label, entry.weight or settings.weight or "1"),
        node=options.node,
        container=container.id,
        health=container.health if container.health in HEALTH_STATES else "starting",
        tags=_parse_tags(entry.tags or settings.tags),
        meta=settings.meta,
    )


def endpoint_id(node: str, container: ContainerInfo, port: int) -> str:
    """`{node}.{container name}.{port}`: stable across agent restarts and container re-creation.

    Falls back to the short container id when the name is unusable or the id would be too long.
    """
    name = _UNSAFE_RE.sub("-", _container_name(container)).strip("-_.")
    candidate = f"{node}.{name}.{port}"
    if name and NAME_RE.fullmatch(candidate):
        return candidate
    fallback = f"{node}.{container.id[:12]}.{port}"
    if not NAME_RE.fullmatch(fallback):
        raise BadLabel("--node", f"endpoint id {fallback!r} is not a valid name")
    return fallback


def _container_name(container: ContainerInfo) -> str:
    return container.name.lstrip("/") or container.id[:12]


def _image_service(image: str) -> str:
    """registrator's default service name: the image's last path part, without tag or digest."""
    base = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return _UNSAFE_RE.sub("-", base).strip("-_.")


def _tcp_bindings(container: ContainerInfo) -> list[PortBinding]:
    return [b for b in container.bindings if b.protocol == "tcp" and b.host_port > 0]


def _parse_port(label: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise BadLabel(label, f"port {quote(value)} is not a number from 1 to 65535")
    return int(value)


def _parse_weight(label: str, value: str) -> int:
    if not value.strip().isdigit() or int(value) > MAX_WEIGHT:
        raise BadLabel(label, f"weight {quote(value)} is not an integer from 0 to {MAX_WEIGHT}")
    return int(value)


def _parse_tags(value: str) -> tuple[str, ...]:
    tags = tuple(t.strip() for t in value.split(",") if t.strip())
    for tag in tags:
        if not NAME_RE.fullmatch(tag):
            raise BadLabel("lbgen.tags", f"tag {quote(tag)} must match {NAME_RE.pattern}")
    return tags


def _check_service(source: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise BadLabel(source, f"service name {quote(name)} must match {NAME_RE.pattern}")
    return name


def _check_meta_key(label: str, key: str) -> str:
    if not NAME_RE.fullmatch(key):
        raise BadLabel(LABEL_PREFIX + label, f"meta key {quote(key)} must match {NAME_RE.pattern}")
    return key


def _check_meta_value(label: str, value: str) -> str:
    if not META_VALUE_RE.fullmatch(value):
        raise BadLabel(LABEL_PREFIX + label, f"meta value {quote(value)} must match {META_VALUE_RE.pattern}")
    return value



def _truthy(value: str) -> bool:
    return value.strip().lower() not in FALSE_WORDS

"""What the default templates lay out, decided in Python: listeners, virtual hosts, routes.

Templates only format. Everything with a rule in it lives here and is unit-tested: which services
share a listen port, which host names share a server block, and which route wins a conflict (the
first service by name; the loser is reported, never rendered, so one bad spec cannot break every
site as in nginx-proxy #107). What one kind adds on top (HAProxy's rules and server slots) lives
in its room, `lbgen.core.kinds.<kind>`, and remembers its results in a `memo` of this module.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, TypeVar

from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.addresses import normalize_address

T = TypeVar("T")


class Verbatim(str):
    """Config text lbgen built itself from validated values, or a quoting filter's output:
    the renderer's output guard lets it through (it still refuses control characters)."""

    __slots__ = ()


class UnsafeValue(ValueError):
    """A value cannot be written into the config without changing its structure."""


@dataclass(frozen=True)
class ServiceView:
    """A service as templates see it: `endpoints` are the served ones, `all_endpoints` every one."""

    name: str
    spec: Mapping[str, Any]
    endpoints: tuple[Endpoint, ...]
    all_endpoints: tuple[Endpoint, ...]

    @property
    def mode(self) -> str:
        """`http` (the default) or `tcp`."""
        return str(self.spec.get("mode", "http"))

    @property
    def balance(self) -> str:
        """`roundrobin` (the default), `leastconn`, `random` or `source`."""
        return str(self.spec.get("balance", "roundrobin"))


class IdentityMemo:
    """Results computed from immutable inputs, remembered per input object (by identity).

    The catalog reducer hands out the same `Service` object while a service is unchanged, so at
    10,000 services a one-endpoint change recomputes one view and one slot list, not 10,000.
    Each `sweep()` forgets the inputs not used since the previous sweep, so memory stays bounded
    by one catalog.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, Any], tuple[Any, Any]] = {}  # (id or ids, key) → (source, result)
        self._used: dict[tuple[Any, Any], tuple[Any, Any]] = {}

    def get(self, source: object, key: Any, compute: Callable[[], T]) -> T:
        """`compute()` for `source` (and `key`), or the result remembered for that very object."""
        slot = (id(source), key)
        hit = self._used.get(slot) or self._entries.get(slot)
        if hit is None or hit[0] is not source:
            hit = (source, compute())
        self._used[slot] = hit
        return hit[1]

    def get_group(self, sources: tuple[object, ...], key: Any, compute: Callable[[], T]) -> T:
        """`get` for a group of objects: remembered while every one of them is the same object."""
        slot = (tuple(map(id, sources)), key)
        hit = self._used.get(slot) or self._entries.get(slot)
        if hit is None or any(a is not b for a, b in zip(hit[0], sources)):
            hit = (sources, compute())
        self._used[slot] = hit
        return hit[1]

    def sweep(self) -> None:
        """Keep only what was used since the last sweep."""
        self._entries, self._used = self._used, {}


class _Memos:
    """The views of the catalog being rendered, and of the one rendered before, and the memos the
    kinds keep beside them (HAProxy's slot lists): all swept together.

    Every target of one pass renders the same `Catalog` object, so the memos are swept only when
    a new catalog arrives: then they keep what the previous pass used and drop the rest.
    """

    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self.views = IdentityMemo()
        self.listeners = IdentityMemo()
        self.kinds: dict[str, IdentityMemo] = {}

    def start(self, catalog: Catalog) -> None:
        if catalog is not self.catalog:
            for memo in (self.views, self.listeners, *self.kinds.values()):
                memo.sweep()
            self.catalog = catalog


_MEMOS = _Memos()


def memo(name: str) -> IdentityMemo:
    """A memo swept with the service views (per new catalog), for results a kind derives from them."""
    return _MEMOS.kinds.setdefault(name, IdentityMemo())


def service_views(catalog: Catalog, served_health: frozenset[str]) -> tuple[ServiceView, ...]:
    """The template's `services`: sorted by name, endpoints sorted by id (the catalog's order)."""
    _MEMOS.start(catalog)
    return tuple(_MEMOS.views.get(s, served_health, functools.partial(_view, s, served_health))
                 for s in catalog.services)


def _view(service: Service, served_health: frozenset[str]) -> ServiceView:
    served = tuple(e for e in service.all_endpoints if e.health in served_health and e.weight > 0)
    return ServiceView(service.name, service.spec, served, service.all_endpoints)


@dataclass(frozen=True)
class Route:
    """A URL path prefix (`/` or `/api`, never with a trailing slash) served by one service."""

    path: str
    service: ServiceView


@dataclass(frozen=True)
class VirtualHost:
    """Host names that route alike on one port; `names == ()` is the port's default server."""

    names: tuple[str, ...]
    routes: tuple[Route, ...]  # longest path first


@dataclass(frozen=True)
class Listener:
    """One listen port: HTTP virtual hosts (named first, the default last), or one TCP service."""

    port: int
    mode: str
    hosts: tuple[VirtualHost, ...] = ()
    service: ServiceView | None = None


@dataclass(frozen=True)
class Layout:
    """Every listener, and the spec conflicts that were resolved (reported, not rendered)."""

    http: tuple[Listener, ...]
    tcp: tuple[Listener, ...]
    conflicts: tuple[Verbatim, ...]


def layout(services: Iterable[ServiceView]) -> Layout:
    """Group the exposed services (those with a `listen` port) by port, host name and path.

    Each port's listener is remembered while its services are the same objects: an unchanged
    port keeps its `Listener` object from one render to the next, which is what the fragment
    cache keys it by (issue 13)."""
    by_port: dict[int, list[ServiceView]] = defaultdict(list)
    for service in services:
        if "listen" in service.spec:
            by_port[int(service.spec["listen"])].append(service)
    http: list[Listener] = []
    tcp: list[Listener] = []
    conflicts: list[str] = []
    for port in sorted(by_port):
        group = tuple(by_port[port])
        listener, clashes = _MEMOS.listeners.get_group(group, port, functools.partial(_listener, port, group))
        (tcp if listener.mode == "tcp" else http).append(listener)
        conflicts += clashes
    return Layout(tuple(http), tuple(tcp), tuple(Verbatim(c) for c in conflicts))


def _listener(port: int, group: tuple[ServiceView, ...]) -> tuple[Listener, list[str]]:
    if group[0].mode == "tcp":
        taken = [f"{s.name}: port {port} is taken by tcp service {group[0].name}" for s in group[1:]]
        return Listener(port, "tcp", service=group[0]), taken
    conflicts = [f"{s.name}: port {port} is taken by http service {group[0].name}" for s in group if s.mode == "tcp"]
    hosts, clashes = _virtual_hosts(port, [s for s in group if s.mode == "http"])
    return Listener(port, "http", hosts=hosts), conflicts + clashes


def _virtual_hosts(port: int, services: list[ServiceView]) -> tuple[tuple[VirtualHost, ...], list[str]]:
    """Per host name its path → service map, then host names with equal maps share a server."""
    routes: dict[str, dict[str, ServiceView]] = defaultdict(dict)  # host ("" = default) → path → svc
    clashes: list[str] = []
    for service in services:  # sorted by name: the first service claiming a route keeps it
        path = str(service.spec.get("path", "/")).rstrip("/") or "/"
        for host in service.spec.get("hosts") or [""]:
            owner = routes[host.lower()].setdefault(path, service)
            if owner is not service:
                where = f"{host or 'any host'}:{port}{path}"
                clashes.append(f"{service.name}: route {where} is taken by {owner.name}")
    routes.setdefault("", {})
    shared: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
    for host, paths in routes.items():
        if host:
            shared[tuple((p, s.name) for p, s in sorted(paths.items()))].append(host)
    named = [
        VirtualHost(tuple(sorted(names)), _sorted_routes(routes[names[0]]))
        for names in sorted(shared.values(), key=lambda n: sorted(n)[0])
    ]
    return (*named, VirtualHost((), _sorted_routes(routes[""]))), clashes


def _sorted_routes(paths: dict[str, ServiceView]) -> tuple[Route, ...]:
    return tuple(Route(p, s) for p, s in sorted(paths.items(), key=lambda item: (-len(item[0]), item[0])))


def host_port(address: str, port: int) -> Verbatim:
    """`address:port`, IPv6 in brackets. Checked again here, whatever built the endpoint:
    nothing is trusted as verbatim (issue 10: a zone id once carried a whole `server` line)."""
    if not isinstance(address, str) or not _canonical(address):
        raise UnsafeValue(f"refusing address {address!r:.100}: not a canonical IP address or host name")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise UnsafeValue(f"refusing port {port!r:.100} of {address}")
    return Verbatim(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")


@functools.lru_cache(maxsize=1 << 16)
def _canonical(address: str) -> bool:
    """Whether `address` is in its canonical form; remembered, as the same addresses come back at
    every render (parsing each one cost 2/3 of an nginx render at 10,000 endpoints, issue 13)."""
    return normalize_address(address) == address

"""The values templates read from `layout()`: services, routes, virtual hosts, listeners.

Frozen, and handed out again while unchanged (`lbgen.core.layout`, `lbgen.core.listeners`): the
fragment cache keys a `ServiceView`, a `VirtualHost` and a `Listener` by identity (issue 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from lbgen.core.model import Endpoint


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
    """Every listener, and the spec conflicts that were resolved (reported, not rendered; each a
    `Verbatim` line)."""

    http: tuple[Listener, ...]
    tcp: tuple[Listener, ...]
    conflicts: tuple[str, ...]

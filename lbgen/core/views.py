"""The values templates read from `layout()`: services, routes, virtual hosts, listeners.

Frozen, and handed out again while unchanged (`lbgen.core.layout`, `lbgen.core.listeners`): the
fragment cache keys a `ServiceView`, a `VirtualHost` and a `Listener` by identity (issue 13).
Each holds only values built before it, never one that leads back to it: untracked by the cycle
collector (`gc=False`).
"""

from __future__ import annotations

from typing import Any, Mapping

import msgspec

from lbgen.core.model import Endpoint


class ServiceView(msgspec.Struct, frozen=True, gc=False):
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


class Route(msgspec.Struct, frozen=True, gc=False):
    """A URL path prefix (`/` or `/api`, never with a trailing slash) served by one service."""

    path: str
    service: ServiceView


class VirtualHost(msgspec.Struct, frozen=True, gc=False):
    """Host names that route alike on one port; `names == ()` is the port's default server."""

    names: tuple[str, ...]
    routes: tuple[Route, ...]  # longest path first


class Listener(msgspec.Struct, frozen=True, gc=False):
    """One listen port: HTTP virtual hosts (named first, the default last), or one TCP service."""

    port: int
    mode: str
    hosts: tuple[VirtualHost, ...] = ()
    service: ServiceView | None = None


class Layout(msgspec.Struct, frozen=True):
    """Every listener, and the spec conflicts that were resolved (reported, not rendered; each a
    `Verbatim` line)."""

    http: tuple[Listener, ...]
    tcp: tuple[Listener, ...]
    conflicts: tuple[str, ...]

"""What the default templates lay out, decided in Python: listeners, virtual hosts, routes.

Templates only format. Everything with a rule in it lives here and is unit-tested: which services
share a listen port, which host names share a server block, and which route wins a conflict (the
first service by name; the loser is reported, never rendered, so one bad spec cannot break every
site as in nginx-proxy #107). What one kind adds on top (HAProxy's rules and server slots) lives
in its room, `lbgen.core.kinds.<kind>`, and remembers its results in a `memo` of this module.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from lbgen.core.addresses import normalize_address
from lbgen.core.listeners import Port, empty_port, update_port
from lbgen.core.model import Catalog, Service, replaced
from lbgen.core.views import Layout, Listener, Route, ServiceView, VirtualHost

__all__ = ["IdentityMemo", "Layout", "Listener", "Route", "ServiceView", "UnsafeValue", "Verbatim", "VirtualHost",
           "host_port", "layout", "memo", "service_views"]

T = TypeVar("T")


class Verbatim(str):
    """Config text lbgen built itself from validated values, or a quoting filter's output:
    the renderer's output guard lets it through (it still refuses control characters)."""

    __slots__ = ()


class UnsafeValue(ValueError):
    """A value cannot be written into the config without changing its structure."""


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

    def sweep(self) -> None:
        """Keep only what was used since the last sweep."""
        self._entries, self._used = self._used, {}


class _Memos:
    """The views of the catalog viewed last, and the memos the kinds keep beside them (HAProxy's
    slot lists), swept together.

    Every target of one pass renders the same `Catalog` object, so the memos are swept only when
    a new catalog arrives: then they keep what the previous pass used and drop the rest.
    """

    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self.kinds: dict[str, IdentityMemo] = {}
        self.last: tuple[Catalog, frozenset[str], tuple[ServiceView, ...]] | None = None  # replaced whole

    def start(self, catalog: Catalog) -> None:
        if catalog is not self.catalog:
            for memo in self.kinds.values():
                memo.sweep()
            self.catalog = catalog


_MEMOS = _Memos()


def memo(name: str) -> IdentityMemo:
    """A memo swept with the service views (per new catalog), for results a kind derives from them."""
    return _MEMOS.kinds.setdefault(name, IdentityMemo())


def service_views(catalog: Catalog, served_health: frozenset[str]) -> tuple[ServiceView, ...]:
    """The template's `services`: sorted by name, endpoints sorted by id (the catalog's order).
    The same tuple again for the same catalog (every target of a pass, and the render worker's
    `warm` and render), so `layout()` finds it is what it laid out last. A service that is the
    same object as in the catalog viewed last keeps its view object; while no service came or
    went, only the changed ones are visited (issue 13: 10-15 ms at 10,000 services otherwise)."""
    last = _MEMOS.last
    if last is not None and last[0] is catalog and last[1] == served_health:
        return last[2]
    _MEMOS.start(catalog)
    if last is None or last[1] != served_health:
        views = tuple(_view(s, served_health) for s in catalog.services)
    else:
        views = _in_place(last[0].services, last[2], catalog.services, served_health) or tuple(
            _reused(last[0].services, last[2], catalog.services, served_health))
    _MEMOS.last = (catalog, served_health, views)
    return views


def _in_place(before: tuple[Service, ...], views: tuple[ServiceView, ...], after: tuple[Service, ...],
              served_health: frozenset[str]) -> tuple[ServiceView, ...] | None:
    """`views` with a new view wherever `after` holds another object than `before` (found
    without reading any service); None when a service came or went."""
    if len(before) != len(after):
        return None
    found = list(views)
    for at in itertools.compress(range(len(after)), map(operator.is_not, before, after)):
        found[at] = _view(after[at], served_health)
    return tuple(found)


def _reused(before: tuple[Service, ...], views: tuple[ServiceView, ...], after: tuple[Service, ...],
            served_health: frozenset[str]) -> Iterator[ServiceView]:
    old = dict(zip(map(id, before), views))
    for service in after:
        yield old.get(id(service)) or _view(service, served_health)


def _view(service: Service, served_health: frozenset[str]) -> ServiceView:
    served = tuple(e for e in service.all_endpoints if e.health in served_health and e.weight > 0)
    return ServiceView(service.name, service.spec, served, service.all_endpoints)


class _Laid:
    """The last layout made, and what it was made from: replaced whole, never changed (renders in
    other threads may be reading it)."""

    last: tuple[tuple[ServiceView, ...], Mapping[int, Port], Layout] | None = None


def layout(services: Iterable[ServiceView]) -> Layout:
    """Group the exposed services (those with a `listen` port) by port, host name and path; per
    route the first service by name keeps it.

    Only the ports of the services that changed since the last call (by identity: `service_views`
    hands out the same object while a service is unchanged) are redone, and within a port only
    the hosts those services claim (`lbgen.core.listeners`): an unchanged port keeps its
    `Listener` object, an unchanged server its `VirtualHost`, which is what the fragment cache
    keys them by (issue 13)."""
    views = tuple(services)
    last = _Laid.last
    if last is not None and last[0] is views:
        return last[2]
    if len({v.name for v in views}) < len(views):  # not a catalog's views: the first of each name
        views = tuple({v.name: v for v in reversed(views)}.values())
    ports = dict(last[1]) if last is not None else {}
    for port, (removed, added) in _changes(last[0] if last is not None else (), views).items():
        updated = update_port(ports.get(port) or empty_port(port), removed, added)
        if updated.listener is None:
            ports.pop(port, None)
        else:
            ports[port] = updated
    found = [ports[port] for port in sorted(ports)]
    laid = Layout(tuple(p.listener for p in found if p.listener and p.listener.mode == "http"),
                  tuple(p.listener for p in found if p.listener and p.listener.mode == "tcp"),
                  tuple(Verbatim(c) for p in found for c in p.conflicts))
    _Laid.last = (views, ports, laid)
    return laid


def _changes(before: tuple[ServiceView, ...], after: tuple[ServiceView, ...]
             ) -> dict[int, tuple[list[ServiceView], list[ServiceView]]]:
    """Per port, the views gone since `before` and the views new in `after` (by identity)."""
    found: dict[int, tuple[list[ServiceView], list[ServiceView]]] = defaultdict(lambda: ([], []))
    for side, views in enumerate(replaced(before, after)):
        for view in views:
            if "listen" in view.spec:
                found[int(view.spec["listen"])][side].append(view)
    return found


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

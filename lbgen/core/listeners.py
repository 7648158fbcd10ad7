"""One listen port's layout, kept up to date service by service (issue 13).

At 10,000 sites on one port, regrouping every host name at every change cost 0.1 s. A `Port`
keeps its tables (who claims which host and path, which hosts route alike) and `update_port`
redoes only the hosts the changed services claim: every other `VirtualHost` stays the same
object, so the fragment cache hits for it. The rules are `lbgen.core.layout`'s: per host name and
path the first service by name keeps the route (the others are reported), host names with equal
routes share one server, named servers come sorted by their first name and the default server last.

A `Port` is never changed once made: `update_port` edits copies (a lane's quarantine probe may
lay out another catalog in its own thread meanwhile).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping

import msgspec

from lbgen.core.views import Listener, Route, ServiceView, VirtualHost

Signature = tuple[tuple[str, str], ...]  # a host's routes: (path, owner's name), sorted by path
_EMPTY = VirtualHost((), ())
_REORDER = 8  # more than 1/8 of the servers rebuilt: sort them all rather than move each one


class Port(msgspec.Struct, frozen=True):
    """A port's services and what `layout()` makes of them. `hosts`: host name ("" = any host) →
    path → the http services claiming it, by name (the first owns it); `signatures`, `members`
    and `vhosts`: each named host's routes, the hosts sharing them, their server; `starts` and
    `ordered`: the named servers sorted by first name; `clashes`: per service, its lost routes."""

    port: int
    services: Mapping[str, ServiceView]
    tcp: frozenset[str]
    hosts: Mapping[str, Mapping[str, tuple[str, ...]]]
    signatures: Mapping[str, Signature]
    members: Mapping[Signature, tuple[str, ...]]
    vhosts: Mapping[Signature, VirtualHost]
    starts: tuple[str, ...]
    ordered: tuple[VirtualHost, ...]
    default: VirtualHost
    clashes: Mapping[str, tuple[str, ...]]
    listener: Listener | None
    conflicts: tuple[str, ...]


def empty_port(port: int) -> Port:
    return Port(port, {}, frozenset(), {}, {}, {}, {}, (), (), _EMPTY, {}, None, ())


def update_port(old: Port, removed: Iterable[ServiceView], added: Iterable[ServiceView]) -> Port:
    """`old` without the `removed` views (each one of its services) and with the `added` ones."""
    edit = _Edit(old)
    for view in removed:
        edit.remove(view)
    for view in added:
        edit.add(view)
    return edit.finish()


def route_path(view: ServiceView) -> str:
    """The service's path prefix: `/`, or without its trailing slash."""
    return str(view.spec.get("path", "/")).rstrip("/") or "/"


def _claims(view: ServiceView) -> set[tuple[str, str]]:
    path = route_path(view)
    return {(host.lower(), path) for host in view.spec.get("hosts") or [""]}


class _Edit:
    """Copies of a port's tables, being updated."""

    def __init__(self, old: Port) -> None:
        self.port = old.port
        self.services, self.tcp = dict(old.services), set(old.tcp)
        self.hosts = dict(old.hosts)
        self.signatures, self.members, self.vhosts = dict(old.signatures), dict(old.members), dict(old.vhosts)
        self.starts, self.ordered, self.default = list(old.starts), list(old.ordered), old.default
        self.clashes = dict(old.clashes)
        self.touched: set[tuple[str, str]] = set()  # (host, path) whose claims changed

    def remove(self, view: ServiceView) -> None:
        del self.services[view.name]
        self.tcp.discard(view.name)
        self.clashes.pop(view.name, None)
        if view.mode == "http":
            for host, path in _claims(view):
                self._claim(host, path, tuple(n for n in self.hosts[host][path] if n != view.name))

    def add(self, view: ServiceView) -> None:
        self.services[view.name] = view
        if view.mode == "tcp":
            self.tcp.add(view.name)
        elif view.mode == "http":
            for host, path in _claims(view):
                self._claim(host, path, tuple(sorted((*self.hosts.get(host, {}).get(path, ()), view.name))))

    def _claim(self, host: str, path: str, names: tuple[str, ...]) -> None:
        paths = dict(self.hosts.get(host, {}))
        if names:
            paths[path] = names
        else:
            del paths[path]
        if paths:
            self.hosts[host] = paths
        else:
            del self.hosts[host]
        self.touched.add((host, path))

    def finish(self) -> Port:
        touched = {host for host, _ in self.touched}
        self._rebuild(self._regroup(touched - {""}))
        if "" in touched:
            self.default = VirtualHost((), self._routes(self._signature("")) if "" in self.hosts else ())
        self._reclash()
        listener, conflicts = self._listener()
        return Port(self.port, self.services, frozenset(self.tcp), self.hosts, self.signatures, self.members,
                    self.vhosts, tuple(self.starts), tuple(self.ordered), self.default, self.clashes,
                    listener, conflicts)

    def _signature(self, host: str) -> Signature:
        return tuple(sorted((path, names[0]) for path, names in self.hosts[host].items()))

    def _routes(self, signature: Signature) -> tuple[Route, ...]:
        """Longest path first."""
        ordered = sorted(signature, key=lambda item: (-len(item[0]), item[0]))
        return tuple(Route(path, self.services[name]) for path, name in ordered)

    def _regroup(self, hosts: set[str]) -> set[Signature]:
        """Move each of `hosts` to the group of its new routes; the groups that changed."""
        leaving: dict[Signature, set[str]] = defaultdict(set)
        joining: dict[Signature, set[str]] = defaultdict(set)
        for host in hosts:
            old = self.signatures.pop(host, None)
            if old is not None:
                leaving[old].add(host)
            if host in self.hosts:
                new = self.signatures[host] = self._signature(host)
                joining[new].add(host)
        for signature in leaving.keys() | joining.keys():
            names = (set(self.members.get(signature, ())) - leaving[signature]) | joining[signature]
            self.members[signature] = tuple(sorted(names))
        return leaving.keys() | joining.keys()

    def _rebuild(self, dirty: set[Signature]) -> None:
        """A new server for each group in `dirty` (its hosts or its services changed). Every old
        one leaves the order before any new one enters: a host that moved to another group keeps
        its place, which its old and new servers would otherwise share for a moment."""
        reorder = len(dirty) * _REORDER > len(self.vhosts)
        for old in filter(None, (self.vhosts.pop(signature, None) for signature in dirty)):
            if not reorder:
                at = bisect_left(self.starts, old.names[0])
                del self.starts[at], self.ordered[at]
        for signature in dirty:
            names = self.members.pop(signature)
            if not names:
                continue
            self.members[signature] = names
            vhost = self.vhosts[signature] = VirtualHost(names, self._routes(signature))
            if not reorder:
                at = bisect_left(self.starts, names[0])
                self.starts.insert(at, names[0])
                self.ordered.insert(at, vhost)
        if reorder:
            self.ordered = sorted(self.vhosts.values(), key=lambda v: v.names[0])
            self.starts = [v.names[0] for v in self.ordered]

    def _reclash(self) -> None:
        """The lost routes of every service claiming a touched host and path."""
        for name in {n for host, path in self.touched for n in self.hosts.get(host, {}).get(path, ())}:
            view = self.services[name]
            path, lost = route_path(view), []
            for host in view.spec.get("hosts") or [""]:
                owner = self.hosts[host.lower()][path][0]
                if owner != name:
                    lost.append(f"{name}: route {host or 'any host'}:{self.port}{path} is taken by {owner}")
            if lost:
                self.clashes[name] = tuple(lost)
            else:
                self.clashes.pop(name, None)

    def _listener(self) -> tuple[Listener | None, tuple[str, ...]]:
        if not self.services:
            return None, ()
        taken: list[str] = []
        if self.tcp:
            first = min(self.services)
            if first in self.tcp:
                others = sorted(self.services)[1:]
                return (Listener(self.port, "tcp", service=self.services[first]),
                        tuple(f"{n}: port {self.port} is taken by tcp service {first}" for n in others))
            taken = [f"{n}: port {self.port} is taken by http service {first}" for n in sorted(self.tcp)]
        lost = [line for name in sorted(self.clashes) for line in self.clashes[name]]
        return Listener(self.port, "http", hosts=(*self.ordered, self.default)), (*taken, *lost)

"""The catalog reducer: registry snapshot + watch events → `Catalog`.

Values are decoded and validated once, when they arrive; a rejected value is remembered with its
reason (for logs and metrics) and never reaches the catalog. Building a catalog regroups only the
services touched since the last build, so a single change in a 100,000-key registry stays cheap.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import msgspec

from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.schema import NAME_RE, KeyRef, decode_endpoint, decode_spec, parse_key, services_prefix
from lbgen.errors import InvalidValue
from lbgen.core.values import Snapshot, WatchEvent


class Rejected(msgspec.Struct, frozen=True):
    """A registry key whose value failed validation, and why."""

    key: str
    reason: str


class CatalogState:
    """The decoded registry under one prefix, updated by a snapshot then by watch events."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._reset()

    def _reset(self) -> None:
        self.revision = 0
        self._specs: dict[str, dict[str, Any]] = {}
        self._endpoints: dict[str, dict[str, Endpoint]] = {}
        self._rejected: dict[str, str] = {}
        self._services: dict[str, Service] = {}
        self._dirty: set[str] = set()
        self._sorted: tuple[Service, ...] = ()  # the last catalog's services, by name
        self._position: dict[str, int] = {}  # name → its index in `_sorted`

    @property
    def rejected(self) -> list[Rejected]:
        """Keys currently holding an invalid value, sorted by key."""
        return [Rejected(k, r) for k, r in sorted(self._rejected.items())]

    def load(self, snapshot: Snapshot) -> list[Rejected]:
        """Replace the whole state with `snapshot`; returns the values it rejected."""
        return self.load_pages((snapshot,))

    def load_pages(self, pages: Iterable[Snapshot]) -> list[Rejected]:
        """`load` of a snapshot read in pages (`Store.snapshot_pages`): each page is decoded as it
        comes, then let go, so the raw values of the whole registry are never held at once (issue
        13). Complete only when `pages` ends: an error on the way leaves a partial state."""
        self._reset()
        rejected: list[Rejected] = []
        with _collector_paused():
            for page in pages:
                rejected += [r for kv in page.items if (r := self._put(kv.key, kv.value))]
                self.revision = page.revision
        return rejected

    def apply(self, events: Iterable[WatchEvent]) -> list[Rejected]:
        """Apply watch events in order; returns the values they rejected."""
        rejected: list[Rejected] = []
        for event in events:
            if event.kind == "put":
                if problem := self._put(event.key, event.value):
                    rejected.append(problem)
            else:
                self._delete(event.key)
            self.revision = max(self.revision, event.revision)
        return rejected

    def catalog(self) -> Catalog:
        """The catalog at the current revision (only services changed since last call are rebuilt;
        the sorted order is redone only when a service came or went: 10 ms at 10,000, issue 13)."""
        with _collector_paused():
            moved = False
            for name in self._dirty:
                if name in self._specs or self._endpoints.get(name):
                    moved |= name not in self._services
                    self._services[name] = Service(
                        name=name,
                        spec=self._specs.get(name, {}),
                        all_endpoints=tuple(v for _, v in sorted(self._endpoints.get(name, {}).items())),
                    )
                else:
                    moved |= self._services.pop(name, None) is not None
            self._sorted = self._resorted() if moved else self._replaced(self._dirty)
            self._dirty.clear()
            return Catalog(self.revision, self._sorted)

    def _resorted(self) -> tuple[Service, ...]:
        found = tuple(v for _, v in sorted(self._services.items()))
        self._position = {s.name: i for i, s in enumerate(found)}
        return found

    def _replaced(self, names: set[str]) -> tuple[Service, ...]:
        """The last order with the services of `names` in their new version (a name that is no
        service, before or now, is skipped: a rejected value)."""
        changed = [name for name in names if name in self._position]
        if not changed:
            return self._sorted
        services = list(self._sorted)
        for name in changed:
            services[self._position[name]] = self._services[name]
        return tuple(services)

    def _put(self, key: str, raw: bytes) -> Rejected | None:
        ref = parse_key(self.prefix, key)
        if ref is None and (why := misnamed(self.prefix, key)):
            self._rejected[key] = why
            return Rejected(key, why)
        if ref is None or not ref.in_catalog:
            return None
        try:
            self._keep(ref, raw)
        except InvalidValue as e:
            self._forget(key, ref)
            self._rejected[key] = str(e)
            return Rejected(key, str(e))
        if self._rejected:
            self._rejected.pop(key, None)
        self._dirty.add(ref.service)
        return None

    def _keep(self, ref: KeyRef, raw: bytes) -> None:
        """Decode `raw` and store it in place of what the key held (a rejection leaves that as it was)."""
        if ref.kind == "spec":
            self._specs[ref.service] = decode_spec(raw)
            return
        endpoints = self._endpoints.get(ref.service)
        if endpoints is None:
            endpoints = self._endpoints[ref.service] = {}
        endpoints[ref.endpoint_id] = decode_endpoint(ref.endpoint_id, raw)

    def _delete(self, key: str) -> None:
        self._rejected.pop(key, None)
        ref = parse_key(self.prefix, key)
        if ref is not None and ref.in_catalog:
            self._forget(key, ref)

    def _forget(self, key: str, ref: KeyRef) -> None:
        self._rejected.pop(key, None)
        if ref.kind == "spec":
            self._specs.pop(ref.service, None)
        else:
            self._endpoints.get(ref.service, {}).pop(ref.endpoint_id, None)
        self._dirty.add(ref.service)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a snapshot is decoded or services are rebuilt: what is
    built is acyclic (dicts, tuples, frozen Structs), freed by reference counting, but every 700
    allocations the collector walked the growing state again: 30% of loading 110,000 keys (issue 13).
    A collector the caller disabled stays disabled."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def misnamed(prefix: str, key: str) -> str | None:
    """Why a key under `{prefix}/services/` is not a registry entry (a bad name, `wéb` or `a;b`, or
    a wrong shape), or None. Such keys are rejected and listed, not silently invisible (issue 14)."""
    services = services_prefix(prefix)
    if not key.startswith(services):
        return None
    parts = key[len(services):].split("/")
    named = list(zip(("service name", "endpoint id"), parts[::2]))
    shape_ok = (parts[1:] == ["spec"]) or (len(parts) == 3 and parts[1] == "endpoints")
    if not shape_ok:
        return f"not a registry entry: expected {services}SERVICE/spec or {services}SERVICE/endpoints/ID"
    for what, name in named:
        if not NAME_RE.fullmatch(name):
            return f"{what} {_cut(name)}: must match {NAME_RE.pattern}"
    return None


def _cut(text: str, limit: int = 100) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def state_from_pages(prefix: str, pages: Iterable[Snapshot]) -> tuple[CatalogState, list[Rejected], int]:
    """A fresh state loaded from a paged snapshot (`CatalogState.load_pages`), what it rejected, and
    how many keys it read."""
    state, keys = CatalogState(prefix), 0

    def counted() -> Iterator[Snapshot]:
        nonlocal keys
        for page in pages:
            keys += len(page.items)
            yield page

    rejected = state.load_pages(counted())
    return state, rejected, keys


def catalog_from_snapshot(prefix: str, snapshot: Snapshot) -> tuple[Catalog, list[Rejected]]:
    """One-shot helper for commands that read the registry once (render, registry ls)."""
    state = CatalogState(prefix)
    rejected = state.load(snapshot)
    return state.catalog(), rejected



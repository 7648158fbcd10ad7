"""The catalog model: services and their endpoints at one registry revision.

Plain frozen values. They are built only from validated registry data (see `schema`), so a
template can trust every field it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TypeVar

T = TypeVar("T")

HEALTH_STATES = ("healthy", "starting", "unhealthy", "none")
DEFAULT_SERVED_HEALTH = frozenset({"healthy", "none"})


@dataclass(frozen=True)
class Endpoint:
    """One backend address of a service, as registered by an agent (or written by hand)."""

    id: str
    address: str
    port: int
    weight: int = 1
    node: str = ""
    container: str = ""
    health: str = "none"
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)

    def is_served(self, served_health: frozenset[str] = DEFAULT_SERVED_HEALTH) -> bool:
        """Whether traffic should reach this endpoint: a served health state and a weight above 0."""
        return self.health in served_health and self.weight > 0

    def to_dict(self) -> dict[str, Any]:
        """The registry contract's JSON value (without the id, which lives in the key)."""
        return {
            "address": self.address,
            "port": self.port,
            "weight": self.weight,
            "node": self.node,
            "container": self.container,
            "health": self.health,
            "tags": list(self.tags),
            "meta": dict(self.meta),
        }


@dataclass(frozen=True)
class Service:
    """A service: how it is exposed (`spec`) and every endpoint registered for it, sorted by id."""

    name: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    all_endpoints: tuple[Endpoint, ...] = ()

    def served(self, served_health: frozenset[str] = DEFAULT_SERVED_HEALTH) -> tuple[Endpoint, ...]:
        """The endpoints that should receive traffic, sorted by id."""
        return tuple(e for e in self.all_endpoints if e.is_served(served_health))


@dataclass(frozen=True)
class Catalog:
    """Every service at one registry revision, sorted by name."""

    revision: int
    services: tuple[Service, ...] = ()

    def service(self, name: str) -> Service | None:
        """The service called `name`, or None."""
        for service in self.services:
            if service.name == name:
                return service
        return None

    @property
    def endpoint_count(self) -> int:
        """All registered endpoints, served or not."""
        return sum(len(s.all_endpoints) for s in self.services)


def replaced(before: Sequence[T], after: Sequence[T]) -> tuple[list[T], list[T]]:
    """The items of `before` that `after` no longer holds (as that very object), and the ones new
    in `after`. The catalog reducer hands out the same `Service` (the view memo the same view)
    while a service is unchanged, so these are what changed, found without reading any item: at
    10,000 services a pass then does per-service work for the changed ones only (issue 13)."""
    old, new = dict(zip(map(id, before), before)), dict(zip(map(id, after), after))
    return [old[i] for i in old.keys() - new.keys()], [new[i] for i in new.keys() - old.keys()]

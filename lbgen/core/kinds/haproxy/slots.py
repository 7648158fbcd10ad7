"""HAProxy's fixed server slots (issue 7), and which slot each endpoint takes (issue 11).

Every backend has a power-of-two number of `server slotN` lines, so that endpoint changes can go
through the Runtime API (`runtime_plan`) instead of a reload.

A live endpoint keeps its slot for as long as it lives: moving it would re-address a server under
open connections. So placement takes the previous assignment as an input, keeps every surviving
endpoint where it was, and places only the new ones (in their hash-preferred slot, else the next
free one). The slot count only grows (doubling) when the slots are full, and shrinks only as far
as no kept endpoint would fall off the end. With no previous assignment this is plain hash
placement, so a first render is what it always was.

The previous assignment is read back from the last rendered config text (`previous_slots`): the
`server slotN <addr>` lines of each backend, matched by address to the endpoints of the catalog
being rendered. An endpoint whose address changed is placed anew; its old slot is freed.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from lbgen.core.layout import ServiceView, Verbatim, host_port, memo
from lbgen.core.model import Catalog, Endpoint, Service

# `    server slot3 10.0.0.1:80 ...` inside a `backend <name>` section (the default template's form).
_LINE_RE = re.compile(r"^backend[ \t]+'?([^'\s]+)'?[ \t]*$|^[ \t]+server[ \t]+slot(\d+)[ \t]+(\S+)|^\S",
                      re.MULTILINE)
_PLACEHOLDER_ADDR = "127.0.0.1:1"
MAX_KEPT_SLOT = 65_536


def place(ids: Sequence[str], minimum: int, previous: Mapping[str, int] | None = None) -> list[str | None]:
    """Per slot (zero-based) the endpoint id in it, or None for a free slot.

    `previous`: endpoint id → slot number (one-based) from the live config; ids not in `ids` left.
    """
    # A slot past both 65,536 and 4x what the endpoints need (a hand-edited `slot999999999`) is not
    # kept: it would make the backend that large. Its endpoint is placed anew; nothing else moves.
    # A real scale-down (64 replicas to 1, the survivor in slot 60) stays well inside the bound.
    most = max(MAX_KEPT_SLOT, 4 * slot_count(len(ids), minimum))
    kept = {i: previous[i] - 1 for i in ids if previous and 0 < previous.get(i, 0) <= most}
    kept = _without_clashes(kept)
    count = slot_count(max(len(ids), max(kept.values(), default=-1) + 1), minimum)
    placed: list[str | None] = [None] * count
    for endpoint_id, index in kept.items():
        placed[index] = endpoint_id
    for endpoint_id in ids:
        if endpoint_id in kept:
            continue
        index = zlib.crc32(endpoint_id.encode()) % count  # stable across processes, unlike hash()
        while placed[index] is not None:
            index = (index + 1) % count
        placed[index] = endpoint_id
    return placed


def slot_count(endpoints: int, minimum: int) -> int:
    """The next power of two at or above `endpoints`, and at least `minimum` (issue 7)."""
    count = max(1, minimum)
    while count < endpoints:
        count *= 2
    return count


def _without_clashes(kept: dict[str, int]) -> dict[str, int]:
    """Two ids claiming one slot (a hand-edited config): the first in id order keeps it."""
    taken: dict[int, str] = {}
    for endpoint_id in sorted(kept):
        taken.setdefault(kept[endpoint_id], endpoint_id)
    return {endpoint_id: index for index, endpoint_id in taken.items()}


Servers = dict[str, list[tuple[int, str]]]  # backend → (slot number, `address:port`) of its server lines
Assignment = dict[str, dict[str, int]]  # service → endpoint id → slot number


def server_slots(text: str) -> Servers:
    """The non-placeholder `server slotN addr` lines of each backend of a rendered HAProxy config
    (one scan: 0.25 s for 100,000 servers, 7 MiB, on the dev box, 2026-12-03)."""
    found: Servers = {}
    lines: list[tuple[int, str]] | None = None
    for match in _LINE_RE.finditer(text):
        backend, number, addr = match.groups()
        if backend is not None:
            lines = found.setdefault(backend, [])
        elif number is None:
            lines = None  # another section: its servers are not a backend's slots
        elif lines is not None and addr != _PLACEHOLDER_ADDR:
            lines.append((int(number), addr))
    return {backend: lines for backend, lines in found.items() if lines}


def assign(servers: Servers, catalog: Catalog) -> Assignment:
    """Service → endpoint id → slot number: each server line names the endpoint of that service in
    `catalog` with that address (the first in id order not matched yet); others are left out."""
    found: Assignment = {}
    for service in catalog.services:
        lines = servers.get(service.name)
        if lines and (ids := assign_service(lines, service)):
            found[service.name] = ids
    return found


def assign_service(lines: list[tuple[int, str]], service: Service) -> dict[str, int]:
    """`assign` for one service and its backend's server lines."""
    waiting: dict[str, list[str]] = {}
    for endpoint in service.all_endpoints:
        waiting.setdefault(_addr(endpoint.address, endpoint.port), []).append(endpoint.id)
    found: dict[str, int] = {}
    for number, addr in lines:
        if ids := waiting.get(addr):
            found[ids.pop(0)] = number
    return found


def previous_slots(text: str, catalog: Catalog) -> Assignment:
    """Where the config `text` has each endpoint of `catalog` (`assign` of its `server_slots`)."""
    return assign(server_slots(text), catalog)


def overlay(first: Assignment, then: Assignment) -> Assignment:
    """`first`, plus the entries of `then` for endpoints `first` lacks, in slots it leaves free."""
    merged = {service: dict(ids) for service, ids in first.items()}
    for service, ids in then.items():
        into = merged.setdefault(service, {})
        taken = set(into.values())
        for endpoint_id, number in ids.items():
            if endpoint_id not in into and number not in taken:
                into[endpoint_id] = number
                taken.add(number)
    return merged


def _addr(address: str, port: int) -> str:
    """`address:port` as the server lines write it (IPv6 in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- the slots a template lays out ------------------------------------------------------------------

_SLOTS = memo("haproxy.slots")


class Slot(NamedTuple):
    """One HAProxy server line of a backend; `endpoint_id == ""` is a free placeholder slot.

    A NamedTuple rather than a dataclass: 160,000 of them are built per render at 10,000 services.
    """

    name: str
    address: str
    port: int
    weight: int
    enabled: bool
    endpoint_id: str
    addr: Verbatim  # `address:port` as both LBs write it (see `host_port`)



@functools.lru_cache(maxsize=4096)
def _slot_name(number: int) -> Verbatim:
    return Verbatim(f"slot{number}")


PLACEHOLDER_ADDRESS = "127.0.0.1"
PLACEHOLDER_PORT = 1


@functools.lru_cache(maxsize=4096)
def _free_slot(number: int) -> Slot:
    placeholder = host_port(PLACEHOLDER_ADDRESS, PLACEHOLDER_PORT)
    return Slot(_slot_name(number), PLACEHOLDER_ADDRESS, PLACEHOLDER_PORT, 1, False, "", placeholder)


def slots(service: ServiceView, minimum: int = 4, previous: Mapping[str, int] | None = None
          ) -> tuple[Slot, ...]:
    """Fixed server slots for a backend, so endpoint changes can go through the Runtime API.

    Every registered endpoint takes a slot; the served ones are enabled, the others (unhealthy,
    starting, weight 0) are rendered `disabled`, and the remaining slots are disabled placeholders.
    Slot names are `slot1..slotN`. `previous` (endpoint id → slot number, from the live config:
    `previous_slots`) keeps every surviving endpoint in its slot, so a change
    touches only the servers that changed, through the Runtime API; new endpoints take the slot a
    hash of their id picks (the next free one on a collision), never one by rank.
    """
    key = (minimum, tuple(sorted(previous.items())) if previous else ())
    return _SLOTS.get(service, key, lambda: _slots(service, minimum, previous))


def _slots(service: ServiceView, minimum: int, previous: Mapping[str, int] | None) -> tuple[Slot, ...]:
    served = {e.id for e in service.endpoints}
    by_id = {e.id: e for e in service.all_endpoints}
    placed = place([e.id for e in service.all_endpoints], minimum, previous)
    return tuple(
        _free_slot(number) if i is None else _slot(number, by_id[i], i in served)
        for number, i in enumerate(placed, start=1)
    )


def _slot(number: int, e: Endpoint, enabled: bool) -> Slot:
    return Slot(_slot_name(number), e.address, e.port, e.weight, enabled, e.id, host_port(e.address, e.port))


def template_slots(context: Mapping[str, Any], service: ServiceView, minimum: int = 4) -> tuple[Slot, ...]:
    """`slots(service, minimum)` as templates call it (the renderer passes the render context, as
    for every global of `LbKind.fragment_context`): each live endpoint stays in the slot the
    context's `previous_slots` (service → endpoint id → slot number) gives it."""
    previous = context.get("previous_slots") or {}
    return slots(service, minimum, previous.get(service.name))


def previous_of(context: Mapping[str, Any], service: ServiceView) -> tuple[tuple[str, int], ...]:
    """What `template_slots` reads of the context for `service` (the fragment cache's key, issue 13).
    Anything but a service view (a listener, whose services the key does not list) raises: the
    loop body then renders uncached."""
    if type(service) is not ServiceView:
        raise TypeError(f"previous slots are read per service view, not per {type(service).__name__}")
    previous = (context.get("previous_slots") or {}).get(service.name)
    return tuple(previous.items()) if previous else ()


def warm(views: Sequence[ServiceView], variables: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """The server slots at `vars.min_slots` keeping the `previous_slots` ones, as the default
    template asks for them: computed by the render worker before it limits the render, so they
    do not count against `render_memory` (30 MiB at 10,000 services, bench/render_bench.py), and
    remembered for the next render."""
    minimum = variables.get("min_slots", 4)
    if type(minimum) is not int or not 0 < minimum <= 1024:
        return
    previous = context.get("previous_slots") or {}
    for view in views:
        slots(view, minimum, previous.get(view.name))

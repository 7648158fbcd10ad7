"""Registration: desired endpoints vs what the registry holds → the puts and deletes that make them
equal (docs/agent.md). Pure: the agent hands in the registry's current keys and gets values back.

A node only ever touches keys whose value names it: another node's key is reported as a conflict,
never overwritten or deleted.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import msgspec

from lbgen.core.bounded import load_json
from lbgen.core.model import Endpoint
from lbgen.core.schema import encode_endpoint, parse_key
from lbgen.core.values import KeyValue
from lbgen.errors import InvalidValue


class RegistrationPlan(msgspec.Struct, frozen=True):
    """What to write so the registry holds exactly this node's desired endpoints."""

    puts: tuple[tuple[str, bytes], ...] = ()
    deletes: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()  # desired keys whose value names another node: left alone

    @property
    def empty(self) -> bool:
        return not (self.puts or self.deletes)


def owned_keys(items: Iterable[KeyValue], prefix: str, node: str) -> dict[str, KeyValue]:
    """The endpoint keys under `prefix` whose value names `node`: the only keys this node may touch."""
    return {kv.key: kv for kv in items if _is_endpoint(prefix, kv.key) and json_field(kv.value, "node") == node}


def json_field(raw: bytes, name: str) -> object:
    """Field `name` of a JSON object value, or None (absent, or the value is not a JSON object)."""
    try:
        value = load_json(raw)
    except InvalidValue:  # too big, too deep or not JSON: no node's value, never this node's key
        return None
    return value.get(name) if isinstance(value, dict) else None


def plan_registration(
    desired: Mapping[str, Endpoint], registered: Iterable[KeyValue], prefix: str, node: str, lease: int
) -> RegistrationPlan:
    """Puts for new or changed endpoints (or ones on another lease), deletes for this node's extras.

    A key is this node's only when its value names `node`; any other key is never deleted, and a
    desired key held by another node's value is reported as a conflict instead of overwritten.
    """
    registered = list(registered)
    mine = owned_keys(registered, prefix, node)
    others = {kv.key for kv in registered if kv.key not in mine}
    puts: list[tuple[str, bytes]] = []
    conflicts: list[str] = []
    for key, endpoint in sorted(desired.items()):
        if key in others:
            conflicts.append(key)
            continue
        value = encode_endpoint(endpoint)
        current = mine.get(key)
        if current is None or current.value != value or current.lease != lease:
            puts.append((key, value))
    deletes = tuple(sorted(k for k in mine if k not in desired))
    return RegistrationPlan(tuple(puts), deletes, tuple(conflicts))


def _is_endpoint(prefix: str, key: str) -> bool:
    ref = parse_key(prefix, key)
    return ref is not None and ref.kind == "endpoint"

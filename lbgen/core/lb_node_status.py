"""The value an LB node publishes under `{prefix}/lb/{node}` (registry contract v1, docs/operations.md).

`lbgen watch` writes it on a lease, so a dead LB node's status leaves the registry by itself;
`lbgen status` and `lbgen deploy` read it. `revision` is the one figure both need: every target
of the node has applied a registry revision at least this high (0 until each applied once).

Decoding validates every field (unknown fields are ignored, for forward compatibility), so a
hand-written or corrupt value is reported with the reason instead of being shown as a fact.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import msgspec

from lbgen.core.bounded import quote
from lbgen.core.schema import check_int, check_name, check_object, check_text, check_time, load_json_object
from lbgen.errors import InvalidValue

MAX_ERROR = 1000
MAX_QUARANTINED = 1000  # services listed per target (the metric counts them all)
MAX_REVISION = 2**63 - 1
VERSION_RE = re.compile(r"[A-Za-z0-9_.+-]{0,64}")


class TargetStatus(msgspec.Struct, frozen=True):
    """One target of an LB node: the revision it last applied, its current error, when (the LB
    node's wall clock, seconds since the epoch) it last applied a new revision, whether its LB is
    running (`up` false: its config waits on disk, nothing serves it; absent in older values),
    the services it holds at their last applied state because its checker refuses them (service → reason),
    and since the watcher started, how many changes went live through the LB's runtime API and how
    many runtime updates fell back to a reload (0 in older values)."""

    revision: int = 0
    error: str = ""
    applied_at: float | None = None
    up: bool = True
    quarantined: Mapping[str, str] = {}
    runtime_updates: int = 0
    runtime_fallbacks: int = 0


class LbStatus(msgspec.Struct, frozen=True):
    """What one LB node reports about itself."""

    node: str
    revision: int
    targets: Mapping[str, TargetStatus]
    connected: bool = False
    error: str = ""  # the registry connection's error while disconnected
    version: str = ""
    updated_at: float | None = None

    @property
    def errors(self) -> dict[str, str]:
        """Target (or `registry`) → its current error, for those that have one."""
        found = {name: t.error for name, t in sorted(self.targets.items()) if t.error}
        return {"registry": self.error, **found} if self.error else found

    @property
    def down(self) -> list[str]:
        """The targets whose LB is not running."""
        return [name for name, t in sorted(self.targets.items()) if not t.up]

    @property
    def quarantined(self) -> list[tuple[str, str, str]]:
        """(target, service, reason) for every service a target holds back, sorted."""
        return [(name, service, reason) for name, t in sorted(self.targets.items())
                for service, reason in sorted(t.quarantined.items())]


def applied_revision(targets: Mapping[str, TargetStatus]) -> int:
    """The revision every target has applied (0 while one of them never applied)."""
    return min((t.revision for t in targets.values()), default=0)


def encode_lb_status(status: LbStatus) -> bytes:
    """The JSON value to publish (compact, keys sorted; errors cut to `MAX_ERROR` characters)."""
    targets = {
        name: {"revision": t.revision, "error": t.error[:MAX_ERROR], "applied_at": t.applied_at, "up": t.up,
               "quarantined": _encode_quarantined(t.quarantined), "runtime_updates": t.runtime_updates,
               "runtime_fallbacks": t.runtime_fallbacks}
        for name, t in sorted(status.targets.items())
    }
    value = {
        "node": status.node, "revision": status.revision, "connected": status.connected,
        "error": status.error[:MAX_ERROR], "version": status.version, "updated_at": status.updated_at,
        "targets": targets,
    }
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def decode_lb_status(node: str, raw: bytes | str) -> LbStatus:
    """Validate the value stored under `{prefix}/lb/{node}`; `node` comes from the key."""
    value = load_node_value(node, raw)
    if "revision" not in value:
        raise InvalidValue("missing field 'revision'")
    targets = check_object("targets", value.get("targets", {}))
    connected = value.get("connected", False)
    if not isinstance(connected, bool):
        raise InvalidValue(f"connected {quote(connected)}: expected true or false")
    return LbStatus(
        node=node,
        revision=check_int("revision", value["revision"], 0, MAX_REVISION),
        targets={check_name("target", name): _target(name, item) for name, item in sorted(targets.items())},
        connected=connected,
        error=_error("error", value.get("error", "")),
        version=value.get("version", ""),
        updated_at=check_time("updated_at", value.get("updated_at")),
    )


def load_node_value(node: str, raw: bytes | str) -> dict[str, Any]:
    """A node's self-report (LB status, agent presence) as a JSON object whose `node` (when present)
    is the key's `node` and whose `version` (when present) is a version string."""
    value = load_json_object(raw)
    check_name("node", node)
    if value.get("node", node) != node:
        raise InvalidValue(f"node {quote(value['node'])}: does not match the key's node {node!r}")
    version = value.get("version", "")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise InvalidValue(f"version {quote(version)}: must match {VERSION_RE.pattern}")
    return value


def _target(name: str, value: Any) -> TargetStatus:
    item = check_object(f"targets.{name}", value)
    up = item.get("up", True)
    if not isinstance(up, bool):
        raise InvalidValue(f"targets.{name}.up {quote(up)}: expected true or false")
    return TargetStatus(
        revision=check_int(f"targets.{name}.revision", item.get("revision", 0), 0, MAX_REVISION),
        error=_error(f"targets.{name}.error", item.get("error", "")),
        applied_at=check_time(f"targets.{name}.applied_at", item.get("applied_at")),
        up=up,
        quarantined=_quarantined(f"targets.{name}.quarantined", item.get("quarantined", {})),
        runtime_updates=check_int(f"targets.{name}.runtime_updates", item.get("runtime_updates", 0), 0, MAX_REVISION),
        runtime_fallbacks=check_int(f"targets.{name}.runtime_fallbacks", item.get("runtime_fallbacks", 0), 0,
                                    MAX_REVISION),
    )


def _encode_quarantined(held: Mapping[str, str]) -> dict[str, str]:
    """The first `MAX_QUARANTINED` by name (the watcher's metric has the full count)."""
    return {name: held[name][:MAX_ERROR] for name in sorted(held)[:MAX_QUARANTINED]}


def _quarantined(what: str, value: Any) -> dict[str, str]:
    """Absent in values written before quarantine existed: an empty object."""
    held = check_object(what, value)
    if len(held) > MAX_QUARANTINED:
        raise InvalidValue(f"{what}: more than {MAX_QUARANTINED} services")
    return {check_name(f"{what} service", name): _error(f"{what}.{name}", reason)
            for name, reason in sorted(held.items())}


def _error(what: str, value: object) -> str:
    return check_text(what, value, MAX_ERROR)

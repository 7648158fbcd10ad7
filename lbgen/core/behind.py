"""Whether an LB node is behind the registry, deletions included (issue 15, docs/operations.md).

A node that applied revision R is in sync when `{prefix}/services/` holds at revision R what it
holds now. A put since R leaves its trace (a key with a newer `mod_revision`); a deletion leaves
none. But when no key under `services/` changed after R, every key there now existed at R with the
same value, so the set now is a subset of the set at R: the node missed a deletion exactly when
there were more keys at R than now. `lbgen status` asks the registry for that one number, a
count-only range at revision R (a few bytes), once per distinct applied revision, which for a fleet
of LB nodes following the same watch is one or two. A key created and deleted after R leaves the
node in sync, as it is: its config is the current one. When R's history is compacted the count
cannot be had: the node is then compared with the registry's current revision ("compacted").
"""

from __future__ import annotations

from typing import Mapping

import msgspec

from lbgen.core.lb_node_status import decode_lb_status
from lbgen.core.schema import parse_key, services_prefix
from lbgen.errors import InvalidValue
from lbgen.core.values import Snapshot

CHANGED, DELETED, COMPACTED = "changed", "deleted", "compacted"


class History(msgspec.Struct, frozen=True):
    """What `lbgen status` knows of `services/` at a snapshot: `last_put` (the newest key's
    `mod_revision`), `keys` (how many there are now), and the key counts at the revisions LB
    nodes applied (None: compacted; a revision not in `counts` was not checked)."""

    revision: int
    last_put: int
    keys: int
    counts: Mapping[int, int | None] = {}

    def behind(self, applied: int) -> str:
        """Why a node that applied `applied` is behind (`CHANGED`, `DELETED`, `COMPACTED`), or ""."""
        if applied < self.last_put:
            return CHANGED
        if applied >= self.revision or applied not in self.counts:
            return ""
        count = self.counts[applied]
        if count is None:
            return COMPACTED
        return DELETED if count != self.keys else ""


def history_of(prefix: str, snapshot: Snapshot, counts: Mapping[int, int | None] | None = None) -> History:
    """The `History` of `snapshot` (every key under `prefix`), with `counts` from the registry."""
    under = services_prefix(prefix)
    services = [kv for kv in snapshot.items if kv.key.startswith(under)]
    last_put = max((kv.mod_revision for kv in services), default=0)
    return History(snapshot.revision, last_put, len(services), dict(counts or {}))


def revisions_to_count(prefix: str, snapshot: Snapshot) -> list[int]:
    """The applied revisions of LB nodes that only a count of `services/` can judge: newer than the
    last put, older than the snapshot."""
    history = history_of(prefix, snapshot)
    found = set()
    for kv in snapshot.items:
        ref = parse_key(prefix, kv.key)
        if ref is None or ref.kind != "lb":
            continue
        try:
            applied = decode_lb_status(ref.node, kv.value).revision
        except InvalidValue:
            continue
        if history.last_put <= applied < history.revision:
            found.add(applied)
    return sorted(found)

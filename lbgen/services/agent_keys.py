"""How an agent finds its own keys without reading any other node's (issue 15, docs/agent.md).

Reading all of `{prefix}/services/` and parsing every value, as a resync used to, costs each agent
the whole fleet's registry: 1,000 hosts × 50 containers is 1,000 reads of 50,000 values a minute,
all at once after an etcd outage. An agent's keys hang on its lease, and etcd lists the keys of a
lease (LeaseTimeToLive with keys=true), so a resync reads only:

- the keys on its current lease, and on its previous one (a restart with `--keep-on-exit`, or after
  `kill -9` within the TTL), which the presence key `{prefix}/agents/{node}` names: it is on that lease;
- the keys it wants to write, so that one held by another node is seen (a conflict), not overwritten;

then their values in one transaction per 128 keys. Nothing is added to the contract and nothing is
written twice. What it cannot find is a key naming this node that is on no lease of it (written by
hand): that one is left alone. A file registry's leases hold no keys: it is one node's registry,
and there the agent still reads it all.
"""

from __future__ import annotations

from typing import Iterable

from lbgen.core.registration import owned_keys
from lbgen.core.schema import agent_key, services_prefix
from lbgen.core.values import KeyValue
from lbgen.ports import Store


def read_own_keys(store: Store, prefix: str, node: str, leases: tuple[int, int],
                  desired: Iterable[str]) -> dict[str, KeyValue]:
    """The keys on this node's `leases` (current, previous or 0) and the `desired` keys that exist.

    `plan()` then tells this node's (the value names it) from another node's (a conflict)."""
    wanted = set(desired)
    current, previous = leases
    leased = store.lease_keys(current)
    if leased is None:
        snapshot = store.snapshot(services_prefix(prefix))
        mine = owned_keys(snapshot.items, prefix, node)
        return mine | {kv.key: kv for kv in snapshot.items if kv.key in wanted}
    before = store.lease_keys(previous) or () if previous and previous != current else ()
    under = services_prefix(prefix)  # a lease also holds the presence key
    keys = wanted | {key for key in (*leased, *before) if key.startswith(under)}
    return {kv.key: kv for kv in store.get_many(sorted(keys))}


def previous_lease(store: Store, prefix: str, node: str) -> int:
    """The lease this node's presence hangs on (a previous run's, read before the first write), or 0."""
    presence = store.get(agent_key(prefix, node))
    return presence.lease if presence is not None else 0


def read_new_keys(store: Store, desired: Iterable[str], known: dict[str, KeyValue]) -> None:
    """Add to `known` the desired keys it lacks that exist (another node's, or a hand-written one)."""
    unknown = sorted(key for key in desired if key not in known)
    if unknown:
        known.update((kv.key, kv) for kv in store.get_many(unknown))

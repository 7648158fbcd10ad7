"""The deployer's side of the registry contract (docs/deploy.md, *the drain contract*): find the
endpoint an agent registered for a container, drain it, and read what each LB node applied."""

from __future__ import annotations

import logging
from contextlib import suppress

import msgspec

from lbgen.core.lb_node_status import decode_lb_status
from lbgen.core.model import Endpoint
from lbgen.core.schema import (decode_endpoint, drain_key, encode_drain_marker, encode_endpoint, endpoints_prefix,
                                lb_prefix, parse_key)
from lbgen.errors import InvalidValue, StoreError
from lbgen.ports import Store

log = logging.getLogger(__name__)


class Registered(msgspec.Struct, frozen=True):
    """A container's endpoint as the agent registered it: key, value, revision and the agent's lease."""

    key: str
    endpoint: Endpoint
    revision: int
    lease: int


class Drained(msgspec.Struct, frozen=True):
    """An endpoint taken out of the served set, and the lease holding its drain marker."""

    registered: Registered
    marker_lease: int
    revision: int


class Registry:
    """The deployer's side of the registry contract: find endpoints, drain them, read LB revisions.

    Draining writes two things. `{prefix}/drain/{endpoint_id}` (on a lease of the deployer's, so
    a crashed deploy leaves no marker behind) tells the agent to keep registering that endpoint
    with weight 0; and the endpoint itself is rewritten with weight 0 on the agent's own lease, so
    the LBs stop sending new requests at once, without waiting for the agent's next reconcile.
    """

    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def endpoint(self, service: str, container_id: str) -> Registered | None:
        """The endpoint registered for `container_id` (the agent stores the full id), or None."""
        for kv in self.store.snapshot(endpoints_prefix(self.prefix, service)).items:
            ref = parse_key(self.prefix, kv.key)
            if ref is None or ref.kind != "endpoint":
                continue
            try:
                endpoint = decode_endpoint(ref.endpoint_id, kv.value)
            except InvalidValue:
                continue
            if endpoint.container and container_id.startswith(endpoint.container):
                return Registered(kv.key, endpoint, kv.mod_revision, kv.lease)
        return None

    def lb_revisions(self) -> dict[str, int]:
        """The revision each LB node has applied (`{prefix}/lb/{node}` → JSON with `revision`)."""
        revisions = {}
        for kv in self.store.snapshot(lb_prefix(self.prefix)).items:
            ref = parse_key(self.prefix, kv.key)
            if ref is None or ref.kind != "lb":
                continue
            try:
                revisions[ref.node] = decode_lb_status(ref.node, kv.value).revision
            except InvalidValue as e:  # a bad status is not a node that applied anything
                log.debug("%s: ignoring an invalid LB status: %s", kv.key, e)
        return revisions

    def lb_quarantines(self, service: str) -> dict[str, str]:
        """`node/target` → reason, for each LB target holding `service` at an older state (quarantined,
        docs/apply.md): its new endpoints and drains do not reach that LB. Invalid values are skipped."""
        found = {}
        for kv in self.store.snapshot(lb_prefix(self.prefix)).items:
            with suppress(InvalidValue):
                ref = parse_key(self.prefix, kv.key)
                held = decode_lb_status(ref.node, kv.value).quarantined if ref and ref.kind == "lb" else []
                found.update({f"{ref.node}/{t}": reason for t, name, reason in held if name == service})  # type: ignore[union-attr]
        return found

    def drain(self, registered: Registered, container_id: str, ttl: float) -> Drained:
        """Mark and zero-weight `registered`; the marker expires after `ttl` seconds at the latest."""
        lease = self.store.grant_lease(max(10, int(ttl) + 1))
        marker = encode_drain_marker(container_id, registered.key)
        self.store.put(self.drain_key(registered.endpoint.id), marker, lease=lease)
        zero = encode_endpoint(registered.endpoint.with_weight(0))
        try:
            revision = self.store.put(registered.key, zero, lease=registered.lease)
        except StoreError as e:  # the agent's lease is gone, and the endpoint with it
            log.warning("drain %s: %s", registered.key, e)
            revision = 0
        return Drained(registered, lease, revision)

    def clear(self, drained: Drained) -> None:
        """Drop the drain marker once its container is gone (revoking its lease deletes it)."""
        self.store.revoke_lease(drained.marker_lease)

    def drain_key(self, endpoint_id: str) -> str:
        return drain_key(self.prefix, endpoint_id)

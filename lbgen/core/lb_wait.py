"""Which LB nodes keep a registry revision from being served: deploy's side of the LB handshake.

`lbgen watch` publishes the revision each LB node has applied under `{prefix}/lb/{node}`; deploy
waits for every node before it calls a new replica served or stops a drained one (docs/deploy.md).
"""

from __future__ import annotations

from typing import Iterable, Mapping


def lagging(
    revisions: Mapping[str, int], reported: Iterable[str], revision: int, held: Mapping[str, str], service: str
) -> list[str]:
    """One phrase per LB node that has not applied `revision` for `service`, sorted by node.

    `revisions` is node → applied revision now; `reported` the nodes that reported when the wait
    began: one whose status has gone since (its lease expired: a frozen or dead watcher whose LB
    may still route by its old config) has not applied anything. `held` is `node/target` → reason
    for targets holding `service` in quarantine: whatever their revision, they did not apply it.
    """
    behind = [f"{node} at revision {applied}" for node, applied in sorted(revisions.items()) if applied < revision]
    gone = [f"{node} stopped reporting its status" for node in sorted(set(reported) - set(revisions))]
    quarantined = [f"{where} holds {service} back (quarantined: {reason})" for where, reason in sorted(held.items())]
    return behind + gone + quarantined

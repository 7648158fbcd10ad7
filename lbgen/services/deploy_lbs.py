"""The probe deploy polls while it waits for the LB nodes (the deploy ↔ LB handshake, docs/deploy.md)."""

from __future__ import annotations

from typing import Protocol

from lbgen.core.lb_wait import lagging


class LbReader(Protocol):
    """What the probe reads: `Registry.lb_revisions` and `Registry.lb_quarantines`."""

    def lb_revisions(self) -> dict[str, int]: ...

    def lb_quarantines(self, service: str) -> dict[str, str]: ...


class LbProbe:
    """Called until it returns: the number of reporting LB nodes once every one applied `revision`
    for `service`, else None. A node seen reporting by an earlier call and gone since counts as
    behind, so a watcher whose status expired is waited for instead of ignored."""

    def __init__(self, registry: LbReader, service: str, revision: int) -> None:
        self.registry, self.service, self.revision = registry, service, revision
        self.reported: set[str] = set()
        self.behind: list[str] = []

    def __call__(self) -> int | None:
        revisions = self.registry.lb_revisions()
        self.reported.update(revisions)
        held = self.registry.lb_quarantines(self.service)
        self.behind = lagging(revisions, self.reported, self.revision, held, self.service)
        return None if self.behind else len(revisions)

    def explain(self) -> str:
        """The nodes behind at the last call, e.g. `lb-2 at revision 812; lb-3 stopped reporting its status`."""
        return "; ".join(self.behind)

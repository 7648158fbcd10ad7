"""Quarantine per target: when the LB's checker refuses a render, hold back only the services that
cause it, at their last applied state, and let every other change go live (issue 10 part 3).

Each probe of the search (lbgen.core.quarantine) renders a mixed catalog and runs the target's real
checker on a staged file beside dest (`Applier.check_text`); nothing live is touched until the
caller applies the resolution. The narrow interface — `search()` for one-shot use (the dry run),
`Quarantines.resolve/settle/held` for the watcher — keeps this out of the watcher's loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Mapping

import msgspec

from lbgen.core.model import Catalog
from lbgen.core.quarantine import changed_services, checker_reason, find_culprits, hold_services
from lbgen.core.settings import Target
from lbgen.errors import ApplyError, CommandFailed, LbgenError

if TYPE_CHECKING:  # prometheus_client only where metrics are served: not for a one-shot `lbgen render`
    from lbgen.services.watcher_metrics import WatcherMetrics

log = logging.getLogger(__name__)

CheckText = Callable[[Target, str], "ApplyError | None"]  # Applier.check_text
RenderCatalog = Callable[[Catalog], str]  # the target's template on a catalog; raises LbgenError


class Resolution(msgspec.Struct, frozen=True):
    """What to apply instead of the refused render: `catalog` (the new one with the `held` services
    at their last applied state) rendered as `text`; `held` maps each service to the checker's reason."""

    catalog: Catalog
    text: str
    held: Mapping[str, str] = {}
    probes: int = 0
    exhausted: bool = False


def reason_of(error: ApplyError) -> str:
    """The checker's one-line reason for refusing a config."""
    return checker_reason(error.output if isinstance(error, CommandFailed) else "", str(error))


def search(target: Target, new: Catalog, applied: Catalog | None, render: RenderCatalog, check: CheckText,
           failure: str, suspects: frozenset[str] = frozenset()) -> Resolution | None:
    """Find the services to hold back so that `target`'s checker accepts the render; None when the
    refusal is tied to no service (then the whole last good config stays). `failure` is the reason
    the full render was refused; `suspects` are tried first (the services held at the last pass)."""
    passed: dict[frozenset[str], str] = {}  # only the last passing text: 5-8 MB each at 10,000 services

    def probe(held: frozenset[str]) -> str | None:
        try:
            text = render(hold_services(new, applied, held))
        except LbgenError as e:
            return f"render: {e}"
        error = check(target, text)
        if error is not None:
            return reason_of(error)
        passed.clear()
        passed[held] = text
        return None

    culprits = find_culprits(changed_services(applied, new), probe, failure, suspects)
    if culprits is None:
        return None
    held = frozenset(culprits.held)
    mixed = hold_services(new, applied, held)
    text = passed[held] if held in passed else render(mixed)
    return Resolution(mixed, text, culprits.held, culprits.probes, culprits.exhausted)


class Quarantines:
    """The services each target holds back, with their reasons; logs and counts every change.
    Owned by one consumer loop (the watcher's, or a target's apply lane)."""

    def __init__(self, check: CheckText, metrics: WatcherMetrics | None = None) -> None:
        self._check = check
        self._metrics = metrics
        self._held: dict[str, dict[str, str]] = {}

    def held(self, target: str) -> dict[str, str]:
        """Service → reason, for the services `target` holds back now."""
        return dict(self._held.get(target, {}))

    def resolve(self, target: Target, new: Catalog, applied: Catalog | None, render: RenderCatalog,
                failure: str) -> Resolution | None:
        """Search for the services behind a refused check (see `search`); logs the cost."""
        resolution = search(target, new, applied, render, self._check, failure,
                            frozenset(self._held.get(target.name, {})))
        if resolution is None:
            log.info("%s: revision %s refused with every changed service held back: not tied to a service",
                     target.name, new.revision)
        else:
            log.info("%s: revision %s: %d service(s) to hold back, found in %d checker run(s)%s", target.name,
                     new.revision, len(resolution.held), resolution.probes,
                     " (probe budget used up)" if resolution.exhausted else "")
        return resolution

    def settle(self, target: str, held: Mapping[str, str], applied: Catalog) -> None:
        """`target` applied the catalog `applied`, holding back `held`: one log line per service that
        starts or ends its quarantine, and the metrics."""
        before = self._held.get(target, {})
        for service in sorted(held.keys() - before.keys()):
            state = ("kept at its last applied state" if applied.service(service) is not None
                     else "left out of the config (never applied since this watcher started)")
            log.warning("%s: service %s quarantined at revision %s, %s: %s",
                        target, service, applied.revision, state, held[service])
        for service in sorted(before.keys() - held.keys()):
            log.info("%s: service %s released from quarantine at revision %s (the checker accepts it)",
                     target, service, applied.revision)
        if held:
            self._held[target] = dict(held)
        else:
            self._held.pop(target, None)
        if self._metrics is not None:
            self._metrics.quarantine(target, before.keys(), held.keys())

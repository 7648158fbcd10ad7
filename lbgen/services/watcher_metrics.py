"""The watcher's Prometheus metrics, and its health verdict for `/healthz`."""

from __future__ import annotations

from collections.abc import Set

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lbgen.core.model import Catalog, Service, replaced

_NS = "lbgen_watcher"


class WatcherMetrics:
    """Counters and gauges the watcher's consumer loop updates (the only writer; lanes post to it)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge(f"{_NS}_registry_connected", "1 while the registry watch is live", registry=r)
        self.revision = Gauge(f"{_NS}_registry_revision", "Latest registry revision seen", registry=r)
        self.rejected = Gauge(f"{_NS}_rejected_values", "Registry values skipped as invalid", registry=r)
        self.served = Gauge(f"{_NS}_served_endpoints", "Served endpoints per service", ["service"], registry=r)
        self.renders = Counter(f"{_NS}_renders", "Render attempts by result", ["target", "result"], registry=r)
        self.reloads = Counter(f"{_NS}_reloads", "LB reloads that took effect", ["target"], registry=r)
        self.runtime_updates = Counter(f"{_NS}_runtime_updates", "Changes applied through the LB's runtime API "
                                       "(HAProxy's stats socket, nginx's Lua balancer), without a reload",
                                       ["target"], registry=r)
        self.runtime_fallbacks = Counter(f"{_NS}_runtime_fallbacks", "Runtime updates abandoned for a reload "
                                         "(refused, unreachable, or read back different)", ["target"], registry=r)
        self.failures = Counter(f"{_NS}_failures", "Failed passes by step", ["target", "step"], registry=r)
        self.rollbacks = Counter(f"{_NS}_rollbacks", "Last-known-good restored after a failed reload",
                                 ["target"], registry=r)
        self.lb_up = Gauge(f"{_NS}_lb_up", "1 while the target's LB runs (0: not running, its config "
                           "waits on disk)", ["target"], registry=r)
        self.guard_held = Gauge(f"{_NS}_guard_held_services", "Services the drop guard keeps at their last "
                                "applied state", ["target"], registry=r)
        self.applied = Gauge(f"{_NS}_applied_revision", "Registry revision live on the LB", ["target"], registry=r)
        self.lag = Histogram(f"{_NS}_apply_lag_seconds", "First unapplied change → applied",
                             ["target"], registry=r,
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.quarantined = Gauge(f"{_NS}_quarantined_services", "Services held at their last applied state "
                                 "because the LB's checker refuses them", ["target"], registry=r)
        self.quarantined_service = Gauge(f"{_NS}_quarantined_service", "1 per service a target holds back",
                                         ["target", "service"], registry=r)
        # The services whose `served` gauge is set, as last seen: the catalog hands out the same
        # `Service` object while a service is unchanged, so a pass touches only the changed ones.
        self._seen: tuple[Service, ...] = ()
        self._seen_health: frozenset[str] = frozenset()

    def applied_ok(self, target: str, revision: int, reloaded: bool, method: str = "none", fallback: str = "") -> None:
        """A target applied `revision` (its LB runs: a target whose LB is down is not applied);
        `method` how it went live (`runtime`, `reload`, `none`), `fallback` why a runtime update
        failed first ("" when none did)."""
        self.renders.labels(target, "ok").inc()
        self.applied.labels(target).set(revision)
        self.reloads.labels(target).inc(reloaded)
        self.runtime_updates.labels(target).inc(method == "runtime")
        self.runtime_fallbacks.labels(target).inc(bool(fallback))
        self.lb_up.labels(target).set(1)

    def catalog(self, catalog: Catalog, served_health: frozenset[str], rejected: int) -> None:
        """The catalog just changed: revision, served endpoints per service (only for services
        whose object changed, issue 13: every service's gauge cost ms per pass at 10,000; the
        others are not even read), invalid values."""
        self.revision.set(catalog.revision)
        self.rejected.set(rejected)
        if served_health != self._seen_health:  # a reload changed what counts as served
            self._seen, self._seen_health = (), served_health
        gone, came = replaced(self._seen, catalog.services)
        left = {s.name for s in gone} - {s.name for s in came}
        for service in came:
            self.served.labels(service.name).set(len(service.served(served_health)))
        for name in sorted(left):
            self.served.remove(name)
        self._seen = catalog.services

    def quarantine(self, target: str, before: Set[str], after: Set[str]) -> None:
        """The services `target` holds back changed from `before` to `after`."""
        self.quarantined.labels(target).set(len(after))
        for service in before - after:
            self.quarantined_service.remove(target, service)
        for service in after - before:
            self.quarantined_service.labels(target, service).set(1)

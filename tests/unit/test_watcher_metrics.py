"""The watcher's per-service gauges: a pass touches only the services whose object changed."""

from __future__ import annotations

from typing import Any

from lbgen.core.catalog import CatalogState
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.values import KeyValue, Snapshot, WatchEvent
from lbgen.services.watcher_metrics import WatcherMetrics
from tests.unit.test_watcher import P, endpoint, key


class CountingGauge:
    """Wraps the labelled gauge, counting the series a pass sets or removes."""

    def __init__(self, gauge: Any) -> None:
        self.gauge, self.touched = gauge, []

    def labels(self, *names: str) -> Any:
        self.touched.append(names)
        return self.gauge.labels(*names)

    def remove(self, *names: str) -> None:
        self.touched.append(names)
        self.gauge.remove(*names)


def loaded(services: int) -> tuple[CatalogState, WatcherMetrics, CountingGauge]:
    state = CatalogState(P)
    state.load(Snapshot(1, tuple(KeyValue(key(f"svc{i:05}", "a"), endpoint(8000), 1) for i in range(services))))
    metrics = WatcherMetrics()
    metrics.served = counting = CountingGauge(metrics.served)  # type: ignore[assignment]
    metrics.catalog(state.catalog(), DEFAULT_SERVED_HEALTH, 0)
    counting.touched.clear()
    return state, metrics, counting


def served(metrics: WatcherMetrics, service: str) -> float | None:
    return metrics.registry.get_sample_value("lbgen_watcher_served_endpoints", {"service": service})


def test_a_change_to_one_service_of_ten_thousand_touches_one_series() -> None:
    state, metrics, counting = loaded(10_000)
    state.apply([WatchEvent("put", key("svc04242", "b"), endpoint(8001), 2)])
    metrics.catalog(state.catalog(), DEFAULT_SERVED_HEALTH, 0)
    assert counting.touched == [("svc04242",)] and served(metrics, "svc04242") == 2


def test_a_removed_service_loses_its_series_and_only_it_is_touched() -> None:
    state, metrics, counting = loaded(100)
    state.apply([WatchEvent("delete", key("svc00007", "a"), b"", 2)])
    metrics.catalog(state.catalog(), DEFAULT_SERVED_HEALTH, 0)
    assert counting.touched == [("svc00007",)] and served(metrics, "svc00007") is None
    assert served(metrics, "svc00008") == 1


class Watched(Service):
    """A service that notes each read of its fields (in `READS`)."""

    def __getattribute__(self, attribute: str) -> Any:
        if attribute in ("name", "spec", "all_endpoints", "served"):
            READS.append(object.__getattribute__(self, "name"))
        return object.__getattribute__(self, attribute)


READS: list[str] = []


def test_a_pass_reads_only_the_services_that_changed() -> None:
    """Not only the series: the unchanged services are not even read (issue 13)."""
    services = {f"svc{i:04}": Watched(f"svc{i:04}", {}, (Endpoint("a", "10.0.0.1", 80),)) for i in range(1000)}
    metrics = WatcherMetrics()
    metrics.catalog(Catalog(1, tuple(services.values())), DEFAULT_SERVED_HEALTH, 0)
    READS.clear()
    services["svc0042"] = Watched("svc0042", {}, ())
    del services["svc0007"]
    metrics.catalog(Catalog(2, tuple(services.values())), DEFAULT_SERVED_HEALTH, 0)
    assert set(READS) == {"svc0042", "svc0007"}
    assert served(metrics, "svc0042") == 0 and served(metrics, "svc0007") is None and served(metrics, "svc0008") == 1


def test_a_new_served_health_recounts_every_service() -> None:
    state, metrics, counting = loaded(3)
    metrics.catalog(state.catalog(), frozenset({"passing", "warning"}), 0)
    assert len(counting.touched) == 3


def test_runtime_updates_and_fallbacks_are_counted_per_target() -> None:
    metrics = WatcherMetrics()
    metrics.applied_ok("nginx", 5, reloaded=False, method="runtime")
    metrics.applied_ok("nginx", 6, reloaded=True, method="reload", fallback="nginx reads back upstream web ...")
    metrics.applied_ok("nginx", 7, reloaded=True, method="reload")

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"lbgen_watcher_{name}_total", {"target": "nginx"})

    assert (sample("runtime_updates"), sample("runtime_fallbacks"), sample("reloads")) == (1, 1, 2)

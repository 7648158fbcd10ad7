"""The catalog reducer: snapshot then events give the same catalog as a fresh snapshot."""

import gc
import json

import pytest
from hypothesis import given, settings, strategies as st

from lbgen.core.catalog import CatalogState, catalog_from_snapshot
from lbgen.core.values import KeyValue, Snapshot, WatchEvent

P = "/lbgen"


def ep(port: int, health: str = "none", weight: int = 1) -> bytes:
    return json.dumps({"address": "127.0.0.1", "port": port, "health": health, "weight": weight}).encode()


def snap(revision: int, **items: bytes) -> Snapshot:
    return Snapshot(revision, tuple(KeyValue(k.replace("__", "/"), v, revision) for k, v in items.items()))


def test_snapshot_builds_sorted_services_and_rejects_bad_values() -> None:
    snapshot = Snapshot(5, (
        KeyValue(f"{P}/services/web/endpoints/b", ep(2), 3),
        KeyValue(f"{P}/services/web/endpoints/a", ep(1), 4),
        KeyValue(f"{P}/services/api/spec", b'{"listen": 9000}', 2),
        KeyValue(f"{P}/services/api/endpoints/x", b"{bad", 2),
        KeyValue(f"{P}/lb/node1", b"{}", 2),
        KeyValue(f"{P}/unrelated", b"", 2),
    ))
    catalog, rejected = catalog_from_snapshot(P, snapshot)
    assert catalog.revision == 5
    assert [s.name for s in catalog.services] == ["api", "web"]
    assert [e.id for e in catalog.service("web").all_endpoints] == ["a", "b"]
    assert catalog.service("api").spec == {"listen": 9000}
    assert catalog.service("api").all_endpoints == ()
    assert [r.key for r in rejected] == [f"{P}/services/api/endpoints/x"]


def test_events_update_only_what_changed() -> None:
    state = CatalogState(P)
    state.load(Snapshot(1, (KeyValue(f"{P}/services/web/endpoints/a", ep(1), 1),)))
    first = state.catalog()
    state.apply([
        WatchEvent("put", f"{P}/services/web/endpoints/b", ep(2, "starting"), 2),
        WatchEvent("put", f"{P}/services/db/endpoints/z", ep(3), 3),
        WatchEvent("delete", f"{P}/services/db/endpoints/z", b"", 4),
    ])
    catalog = state.catalog()
    assert catalog.revision == 4
    assert [s.name for s in catalog.services] == ["web"]
    web = catalog.service("web")
    assert [e.id for e in web.all_endpoints] == ["a", "b"]
    assert [e.id for e in web.served()] == ["a"]
    assert first.service("web").all_endpoints[0] is web.all_endpoints[0]


def test_a_bad_put_replaces_the_old_value_and_is_remembered() -> None:
    state = CatalogState(P)
    key = f"{P}/services/web/endpoints/a"
    state.apply([WatchEvent("put", key, ep(1), 1)])
    rejected = state.apply([WatchEvent("put", key, b'{"address": "x;y", "port": 1}', 2)])
    assert [r.key for r in rejected] == [key] and state.rejected[0].reason.startswith("address")
    assert state.catalog().services == ()
    state.apply([WatchEvent("delete", key, b"", 3)])
    assert state.rejected == []


def test_weight_zero_is_registered_but_not_served() -> None:
    state = CatalogState(P)
    state.apply([WatchEvent("put", f"{P}/services/web/endpoints/a", ep(1, weight=0), 1)])
    web = state.catalog().service("web")
    assert len(web.all_endpoints) == 1 and web.served() == ()


@pytest.mark.parametrize(("key", "why"), [
    (f"{P}/services/wéb/spec", "service name 'wéb': must match"),
    (f"{P}/services/web/endpoints/a;b", "endpoint id 'a;b': must match"),
    (f"{P}/services/web/meta", f"not a registry entry: expected {P}/services/SERVICE/spec or"),
    (f"{P}/services/web/endpoints/a/b", "not a registry entry"),
    (f"{P}/services/{'x' * 300}/spec", f"service name '{'x' * 100}'... (300 characters): must match"),
], ids=["accent", "semicolon", "unknown-leaf", "too-deep", "long-name-cut"])
def test_a_badly_named_key_under_services_is_rejected_not_invisible(key: str, why: str) -> None:
    state = CatalogState(P)
    rejected = state.load(Snapshot(3, (KeyValue(key, ep(80), 3), KeyValue(f"{P}/services/ok/endpoints/a", ep(81), 3))))
    assert [(r.key, r.reason.startswith(why)) for r in rejected] == [(key, True)], rejected
    assert [s.name for s in state.catalog().services] == ["ok"]
    state.apply([WatchEvent("delete", key, b"", 4)])
    assert state.rejected == [], "deleting the key clears its rejection"


@pytest.mark.parametrize("key", [f"{P}/lb/node-1", f"{P}/drain/x", f"{P}/other/thing", "/elsewhere/services/wéb/spec"])
def test_keys_outside_services_are_not_rejected(key: str) -> None:
    assert CatalogState(P).load(Snapshot(1, (KeyValue(key, b"{}", 1),))) == []


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled-by-caller"])
def test_loading_leaves_the_cycle_collector_as_it_found_it(enabled: bool) -> None:
    """The collector is paused only while a snapshot loads (issue 13), even when a value is refused."""
    snapshot = Snapshot(revision=3, items=(KeyValue("/lbgen/services/web/spec", b'{"listen": 80}', 3),
                                           KeyValue("/lbgen/services/web/endpoints/e1", b"{", 3)))
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        state = CatalogState("/lbgen")
        assert len(state.load(snapshot)) == 1
        state.catalog()
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(("put", "delete", "bad")), st.sampled_from("abcd"),
                                   st.sampled_from(("spec", "endpoints/1", "endpoints/2"))), max_size=4),
                max_size=8))
def test_a_catalog_after_events_equals_one_loaded_from_scratch(batches: list[list[tuple[str, str, str]]]) -> None:
    """Issue 13: the services kept in order between builds (only replaced in place while none
    comes or goes) are what a fresh load of the same keys gives, after every batch of events."""
    state, live, revision = CatalogState(P), {}, 1
    state.load(Snapshot(1, ()))
    for batch in batches:
        events = []
        for kind, service, rest in batch:
            revision += 1
            key = f"{P}/services/{service}/{rest}"
            value = (b'{"listen": 80}' if rest == "spec" else ep(revision)) if kind == "put" else b"{bad"
            if kind == "delete":
                live.pop(key, None)
                events.append(WatchEvent("delete", key, b"", revision))
            else:
                live[key] = value
                events.append(WatchEvent("put", key, value, revision))
        state.apply(events)
        fresh, _ = catalog_from_snapshot(P, Snapshot(revision, tuple(KeyValue(k, v, 1) for k, v in live.items())))
        assert state.catalog().services == fresh.services

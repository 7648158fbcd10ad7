"""`AppliedEncoder` writes what `encode_applied` writes, byte for byte, however the catalog moved,
and re-encodes only the services that changed."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.core import applied_state
from lbgen.core.applied_state import AppliedEncoder, encode_applied
from lbgen.core.catalog import CatalogState
from lbgen.core.model import Catalog
from lbgen.core.values import KeyValue, Snapshot, WatchEvent
from lbgen.errors import InvalidValue
from tests.unit.test_endpoint_fast_path import endpoint_values

P = "/lbgen"
NAMES = ["api", "web", "db-1", "z_9", "a.b"]


def put(service: str, eid: str, port: int, weight: int, revision: int) -> WatchEvent:
    value = json.dumps({"address": "10.0.0.1", "port": port, "weight": weight, "health": "healthy"}).encode()
    return WatchEvent("put", f"{P}/services/{service}/endpoints/{eid}", value, revision)


def spec(service: str, port: int, revision: int) -> WatchEvent:
    value = json.dumps({"listen": port, "mode": "http", "hosts": [f"{service}.test"]}).encode()
    return WatchEvent("put", f"{P}/services/{service}/spec", value, revision)


changes = st.lists(st.tuples(st.sampled_from(["put", "spec", "delete"]), st.sampled_from(NAMES),
                             st.sampled_from(["e1", "e2", "é3"]), st.integers(1, 65535), st.integers(0, 256)),
                   min_size=1, max_size=30)


@settings(max_examples=100, deadline=None)
@given(changes)
def test_the_encoder_writes_what_encode_applied_writes_after_every_change(steps: list) -> None:
    state, encoder = CatalogState(P), AppliedEncoder()
    for revision, (kind, service, eid, port, weight) in enumerate(steps, start=2):
        if kind == "put":
            event = put(service, eid, port, weight, revision)
        elif kind == "spec":
            event = spec(service, port, revision)
        else:
            event = WatchEvent("delete", f"{P}/services/{service}/endpoints/{eid}", b"", revision)
        state.apply([event])
        catalog = state.catalog()
        assert encoder.encode(catalog) == encode_applied(catalog)


def test_a_change_to_one_service_re_encodes_only_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    state = CatalogState(P)
    state.load(Snapshot(1, tuple(KeyValue(f"{P}/services/s{i:03}/endpoints/e1", put("x", "e", 80, 1, 1).value, 1)
                                 for i in range(300))))
    encoder = AppliedEncoder()
    encoder.encode(state.catalog())
    encoded: list[str] = []
    real = applied_state._service_value
    monkeypatch.setattr(applied_state, "_service_value", lambda s: (encoded.append(s.name), real(s))[1])
    state.apply([put("s042", "e2", 81, 1, 2)])
    catalog = state.catalog()
    assert encoder.encode(catalog) == encode_applied(catalog)
    assert encoded[0] == "s042" and len(encoded) == 1 + 300  # one by the encoder, all by encode_applied


@pytest.mark.parametrize("services, error", [
    ({"web": {"spec": {"listen": 0}, "endpoints": {}}}, r"^listen 0: expected an integer"),
    ({"web": {"spec": [], "endpoints": {}}}, r"^services\.web\.spec: expected a JSON object"),
    ({"web": {"spec": {}, "endpoints": {"e1": {"address": "10.0.0.1", "port": 70000}}}}, r"^port 70000"),
    ({"web": {"spec": {}, "endpoints": {"e1": [1]}}}, r"^services\.web\.endpoints\.e1: expected a JSON object"),
    ({"web": {"spec": {}, "endpoints": {"e1": {"port": 80}}}}, r"^missing field 'address'"),
], ids=["spec-field", "spec-not-object", "endpoint-field", "endpoint-not-object", "endpoint-missing"])
def test_an_applied_state_value_is_validated_as_the_registry_value_would_be(services: dict[str, object],
                                                                             error: str) -> None:
    raw = json.dumps({"format": applied_state.FORMAT, "revision": 3, "services": services}).encode()
    with pytest.raises(InvalidValue, match=error):
        applied_state.decode_applied(raw)


def _outcome(decode: Callable[[bytes], Catalog], raw: bytes) -> str:
    try:
        return f"catalog {decode(raw)!r}"
    except InvalidValue as e:
        return f"refused: {e}"


def _file(services: dict[str, Any], revision: Any = 3, format: Any = applied_state.FORMAT) -> bytes:
    return json.dumps({"format": format, "revision": revision, "services": services}).encode()


SERVICES = st.dictionaries(
    st.sampled_from(["web", "api", "a.b", "bad name", ""]),
    st.fixed_dictionaries({}, optional={
        "spec": st.sampled_from([{}, {"listen": 80, "mode": "http"}, {"listen": 0}, {"hosts": ["*.x.test"]}, []]),
        "endpoints": st.dictionaries(st.sampled_from(["e1", "e2", "bad id"]), endpoint_values(), max_size=3),
        "future": st.just(1)}),
    max_size=3)


@settings(max_examples=150, deadline=None)
@given(services=SERVICES, revision=st.sampled_from([3, 0, -1, True, 2**63]), format=st.sampled_from([1, True, 2]))
def test_the_applied_state_decodes_as_the_python_checks_decode_it(services: dict[str, Any], revision: Any,
                                                                   format: Any) -> None:
    """The msgspec path for a whole applied-state file (issue 13) gives the catalog, or the
    rejection, that the Python checks give, whatever a field holds."""
    raw = _file(services, revision, format)
    assert _outcome(applied_state.decode_applied, raw) == _outcome(applied_state._checked, raw)


def test_a_file_lbgen_wrote_takes_the_msgspec_path(monkeypatch: pytest.MonkeyPatch) -> None:
    state = CatalogState(P)
    for revision, event in enumerate([spec("web", 8080, 1), put("web", "e1", 80, 1, 2), put("api", "e2", 81, 0, 3)]):
        state.apply([event])
    catalog = state.catalog()
    raw = encode_applied(catalog)
    monkeypatch.setattr(applied_state, "_checked", lambda raw: pytest.fail("took the Python checks"))
    assert applied_state.decode_applied(raw) == catalog


@pytest.mark.parametrize("raw", [
    b'{"format":1,"revision":3,"services":{},"x":' + b"1" * 5000 + b"}",
    b'{"format":1,"revision":3,"services":{"web":{"x":' + b"1" * 5000 + b"}}}",
], ids=["top-level", "in-a-service"])
def test_a_field_nobody_reads_is_refused_where_json_loads_refuses_it(raw: bytes) -> None:
    """json.loads refuses an integer of over 4,300 digits, even in a field lbgen ignores; so does
    the msgspec path, which takes no unknown field."""
    assert _outcome(applied_state.decode_applied, raw) == _outcome(applied_state._checked, raw)
    assert _outcome(applied_state.decode_applied, raw).startswith("refused: not JSON")


def _catalog_after(steps: list) -> tuple[Catalog, Catalog]:
    """The catalog after the first half of `steps`, and after all of them."""
    state, half = CatalogState(P), None
    for revision, (kind, service, eid, port, weight) in enumerate(steps, start=2):
        if kind == "delete":
            state.apply([WatchEvent("delete", f"{P}/services/{service}/endpoints/{eid}", b"", revision)])
        else:
            state.apply([(put if kind == "put" else lambda s, e, p, w, r: spec(s, p, r))(service, eid, port, weight,
                                                                                            revision)])
        if revision - 1 == len(steps) // 2:
            half = state.catalog()
    return half or Catalog(0), state.catalog()


@settings(max_examples=100, deadline=None)
@given(changes)
def test_a_baseline_read_beside_the_current_catalog_shares_what_did_not_change(steps: list) -> None:
    """A restarted watcher's baseline (issue 13): the value read back whatever changed meanwhile,
    and each service equal to the current one is that very object."""
    applied, current = _catalog_after(steps)
    read = applied_state.decode_applied(encode_applied(applied), current, AppliedEncoder())
    assert read == applied
    now = {s.name: s for s in current.services}
    for service in read.services:
        assert (service is now.get(service.name)) == (service == now.get(service.name))


@pytest.mark.parametrize("raw", [
    b'{"format":1,"revision":3,"services":{"web":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    b'{"format":1,"revision":3,"services":{"web":{"spec":' + b"[" * 100_000 + b"]" * 100_000 + b"}}}",
], ids=["a-service", "a-spec"])
def test_a_file_nested_beyond_any_parser_is_refused_not_raised(raw: bytes) -> None:
    """msgspec raises RecursionError (not DecodeError) deep inside a field it skips or decodes as
    Any: the applied-state read must still refuse it in one line, with or without a current catalog."""
    like = Catalog(3, ())
    for current in (None, like):
        assert _outcome(lambda data: applied_state.decode_applied(data, current), raw).startswith("refused: not JSON")

"""The registry contract: every bad value is rejected with its reason, good ones round-trip."""

import json

import pytest

from lbgen.core.model import Endpoint
from lbgen.core.schema import (
    absolute_key,
    agent_key,
    decode_endpoint,
    decode_spec,
    drain_key,
    drain_prefix,
    encode_drain_marker,
    encode_endpoint,
    endpoint_key,
    endpoints_prefix,
    lb_prefix,
    lb_status_key,
    normalize_prefix,
    parse_key,
    registry_root,
    services_prefix,
    spec_key,
)
from lbgen.errors import InvalidValue

GOOD = {"address": "127.0.0.1", "port": 8080, "weight": 2, "node": "host-a", "container": "abc123",
        "health": "healthy", "tags": ["v1"], "meta": {"version": "1.2.3"}}


def _with(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_endpoint_round_trips() -> None:
    endpoint = decode_endpoint("host-a.web.1", json.dumps(GOOD))
    assert endpoint == Endpoint("host-a.web.1", "127.0.0.1", 8080, 2, "host-a", "abc123", "healthy",
                                ("v1",), {"version": "1.2.3"})
    assert decode_endpoint("host-a.web.1", encode_endpoint(endpoint)) == endpoint


def test_endpoint_defaults_and_unknown_fields() -> None:
    endpoint = decode_endpoint("e1", b'{"address": "db.internal", "port": 5432, "future": 1}')
    assert (endpoint.weight, endpoint.health, endpoint.tags, endpoint.node) == (1, "none", (), "")


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (_with(port=0), "port"),
        (_with(port=70000), "port"),
        (_with(port="80"), "port"),
        (_with(port=True), "port"),
        (_with(weight=-1), "weight"),
        (_with(weight=1000), "weight"),
        (_with(address="1.2.3.4; deny all"), "address"),
        (_with(address="evil}host"), "address"),
        (_with(address="a b"), "address"),
        (_with(address="x\nserver y"), "address"),
        (_with(health="great"), "health"),
        (_with(node="host a"), "node"),
        (_with(tags=["ok", "bad;tag"]), "tag"),
        (_with(tags="v1"), "tags"),
        (_with(meta={"k": 'v"; evil'}), "meta.k"),
        (_with(meta={"bad key": "v"}), "meta key"),
        (_with(container="x{y"), "container"),
        (json.dumps({"port": 80}).encode(), "address"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_endpoint_values_are_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidValue, match=reason):
        decode_endpoint("e1", raw)


def test_spec_keeps_only_known_validated_fields() -> None:
    spec = decode_spec(b'{"listen": 8080, "mode": "http", "hosts": ["a.example", "*.b.example"], '
                       b'"path": "/api", "balance": "leastconn", "health_check": "/healthz", "x": "y"}')
    assert spec == {"listen": 8080, "mode": "http", "hosts": ["a.example", "*.b.example"],
                    "path": "/api", "balance": "leastconn", "health_check": "/healthz"}


@pytest.mark.parametrize(
    "raw",
    [b'{"listen": 0}', b'{"mode": "udp"}', b'{"hosts": ["a;b"]}', b'{"path": "api"}',
     b'{"path": "/a b"}', b'{"balance": "rr"}', b'{"hosts": "a.example"}'],
)
def test_bad_spec_values_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidValue):
        decode_spec(raw)


def test_keys() -> None:
    assert endpoint_key("/lbgen", "web", "h.web.1") == "/lbgen/services/web/endpoints/h.web.1"
    assert parse_key("/lbgen", "/lbgen/services/web/endpoints/h.web.1").endpoint_id == "h.web.1"
    assert parse_key("/lbgen", "/lbgen/services/web/spec").kind == "spec"
    assert parse_key("/lbgen", "/lbgen/services/we;b/spec") is None
    assert parse_key("/lbgen", "/other/services/web/spec") is None
    assert normalize_prefix("lbgen/") == "/lbgen"
    with pytest.raises(InvalidValue):
        endpoint_key("/lbgen", "web", "../x")


@pytest.mark.parametrize("key, prefix, kind", [
    (spec_key("/p", "web"), services_prefix("/p"), "spec"),
    (endpoint_key("/p", "web", "h.web.1"), endpoints_prefix("/p", "web"), "endpoint"),
    (lb_status_key("/p", "lb-1"), lb_prefix("/p"), "lb"),
    (drain_key("/p", "h.web.1"), drain_prefix("/p"), "drain"),
    (agent_key("/p", "h"), registry_root("/p"), "agent"),
], ids=["spec", "endpoint", "lb", "drain", "agent"])
def test_every_built_key_is_parsed_back_under_its_prefix(key: str, prefix: str, kind: str) -> None:
    """The one place that builds keys and the one that parses them agree (issue 11)."""
    assert key.startswith(prefix) and key.startswith(registry_root("/p"))
    assert parse_key("/p", key).kind == kind


def test_unchecked_keys_keep_bad_names_for_the_catalog_to_reject() -> None:
    assert spec_key("/p", "wéb", checked=False) == "/p/services/wéb/spec"
    assert endpoint_key("/p", "a;b", "x", checked=False) == "/p/services/a;b/endpoints/x"
    assert parse_key("/p", spec_key("/p", "wéb", checked=False)) is None
    with pytest.raises(InvalidValue):
        spec_key("/p", "wéb")
    with pytest.raises(InvalidValue):
        endpoints_prefix("/p", "a/b")


def test_absolute_key_and_drain_marker() -> None:
    assert absolute_key("/p", "services/web/spec") == "/p/services/web/spec"
    assert absolute_key("/p", "/q/x") == "/q/x"
    marker = json.loads(encode_drain_marker("c1", "/p/k"))
    assert marker == {"container": "c1", "endpoint": "/p/k", "by": "lbgen deploy"}

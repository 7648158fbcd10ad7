"""The endpoint decoder's msgspec path (issue 13) is only a fast path: for any bytes it gives the
same endpoint, or the same one-line rejection, as the reference checks (`endpoint_from_value` on
the bounded reader's value), and it does take the plain values an agent writes."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbgen.core.bounded import MAX_VALUE_BYTES
from lbgen.core.model import HEALTH_STATES
from lbgen.core.schema import NAME_RE, _plain_endpoint, decode_endpoint, endpoint_from_value, load_json_object
from lbgen.errors import InvalidValue
from tests.unit.test_bounded import JSON_VALUES, NUMBERS, RAW
from tests.unit.test_bounded import ODD as ODD_JSON

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(endpoint_id: str, raw: bytes) -> Any:
    return endpoint_from_value(endpoint_id, load_json_object(raw))


def outcome(decode: Callable[[str, bytes], Any], endpoint_id: str, raw: bytes) -> str:
    try:
        return f"value {decode(endpoint_id, raw)!r}"
    except InvalidValue as e:
        return f"refused: {e}"


BASE = {"address": "10.0.0.1", "port": 8000, "weight": 1, "node": "host-a", "container": "c1", "health": "healthy",
        "tags": ["v1"], "meta": {"version": "1.2.3"}}
SIXTY_FOUR = {str(i): "v" for i in range(64)}
# Each field's values at and just past its rules' edges, each tried inside an otherwise valid value
# (where a wrong bound in the fast path would show), then mixed at random by the properties.
EDGES: dict[str, list[Any]] = {
    "address": ["0.0.0.0", "255.255.255.255", "256.0.0.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "::1", "2001:DB8::1",
                "fe80::1%eth0", "::1%x y", "::1%", "db.internal", "web-1", "a..b", "1.2.3.4 ", "10.0.0.1\n",
                "é.example", "", 10, None],
    "port": [1, 65535, 0, -1, 65536, True, 80.0, "80", None, 2**70],
    "weight": [0, 256, -1, 257, False, 1.0, "1", None],
    "node": ["", "a", "a" * 128, "a" * 129, "a\n", "a b", "-a", "é", None, 0, False, [], 1],
    "container": ["", "a" * 128, "a" * 129, "a\n", "_a", None, 0],
    "health": [*HEALTH_STATES, "great", "Healthy", "", "none\n", None, 1],
    "tags": [[], ["t"] * 64, ["t"] * 65, ["a\n"], ["a b"], [""], ["ok", "bad;tag"], "v1", None, [1]],
    "meta": [{}, {"b": "2", "a": "1"}, SIXTY_FOUR, {**SIXTY_FOUR, "x": "v"}, {"k": "a" * 256}, {"k": "a" * 257},
             {"k": "a\n"}, {"k": ""}, {"k": "a/b@c=d,e%f~g+h:i"}, {"a\n": "v"}, {"": "v"}, {"k": 1}, [], None],
}
NAMES = st.from_regex(NAME_RE.pattern, fullmatch=True).map(lambda s: s[:12])
ODD_TEXT = st.sampled_from(["a\n", "a b", "é", "a;b", "-a", "", "A.b-c_d", "0"]) | st.text(max_size=6)


@st.composite
def endpoint_values(draw: st.DrawFn) -> dict[str, Any]:
    """A valid value (some optional fields left out), with up to two fields at an edge or odd."""
    value = {k: v for k, v in BASE.items() if k in ("address", "port") or draw(st.booleans())}
    for field in draw(st.lists(st.sampled_from(sorted(EDGES)), max_size=2, unique=True)):
        value[field] = draw(st.sampled_from(EDGES[field]) | ODD_TEXT | JSON_VALUES | st.just(...))
        if value[field] is ...:  # left out
            del value[field]
    if draw(st.booleans()):
        value["future"] = draw(JSON_VALUES)
    return value


@st.composite
def endpoint_bytes(draw: st.DrawFn) -> bytes:
    """An endpoint-shaped value as some writer may have stored it: any key order, spacing, escapes,
    a repeated key, an unknown field holding a big number, a non-ASCII byte or deep nesting."""
    value = draw(endpoint_values())
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), sort_keys=draw(st.booleans()),
                      separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (",\n", ":\t")])))
    if value and draw(st.booleans()):
        key, extra = draw(st.sampled_from(sorted(EDGES))), draw(NUMBERS | ODD_JSON | st.just('"é"') | st.just("null"))
        text = text[:-1] + f',"{key}":{extra}' + "}" if draw(st.booleans()) else "{" + f'"{key}":{extra},' + text[1:]
    if draw(st.booleans()):
        text = text.replace('"port"', '"po\\u0072t"').replace('"node"', '"\\u006eode"')
    return text.encode(errors="surrogatepass")


IDS = NAMES | ODD_TEXT.filter(bool)


@pytest.mark.parametrize("field, value", [(f, v) for f, values in EDGES.items() for v in values], ids=repr)
def test_each_edge_decodes_as_the_reference_decodes_it(field: str, value: Any) -> None:
    raw = json.dumps({**BASE, field: value}).encode()
    assert outcome(decode_endpoint, "e1", raw) == outcome(reference, "e1", raw)
    fast = _plain_endpoint("e1", raw)
    assert fast is None or repr(fast) == repr(reference("e1", raw))


@PROPERTY
@given(endpoint_id=IDS, raw=endpoint_bytes() | RAW)
def test_any_bytes_decode_as_the_reference_checks_decode_them(endpoint_id: str, raw: bytes) -> None:
    assert outcome(decode_endpoint, endpoint_id, raw) == outcome(reference, endpoint_id, raw)


@PROPERTY
@given(endpoint_id=IDS, raw=endpoint_bytes())
def test_what_the_fast_path_takes_the_reference_takes_the_same(endpoint_id: str, raw: bytes) -> None:
    fast = _plain_endpoint(endpoint_id, raw)
    if fast is not None:
        assert repr(fast) == repr(reference(endpoint_id, raw))


@pytest.mark.parametrize("value", [
    {"address": "10.0.0.1", "port": 8000},
    {"address": "10.0.0.1", "container": "", "health": "healthy", "meta": {}, "node": "node0", "port": 8000,
     "tags": [], "weight": 1},
    {"address": "2001:DB8::1", "port": 1, "weight": 0, "node": "host-a", "container": "3f2a9c1b7d0e",
     "health": "starting", "tags": ["v2", "canary"], "meta": {"zone": "b", "version": "2.1.0"}},
    {"address": "db.internal", "port": 65535, "weight": 256, "health": "none"},
], ids=["minimal", "as-the-agent-writes", "every-field", "host-name"])
def test_plain_values_take_the_fast_path(value: dict[str, Any]) -> None:
    raw = json.dumps(value).encode()
    fast = _plain_endpoint("host-a.web.1", raw)
    assert fast is not None and repr(fast) == repr(reference("host-a.web.1", raw))
    assert list(fast.meta) == sorted(fast.meta)


@pytest.mark.parametrize("raw", [
    b'{"address":"10.0.0.1","port":80,"node":null}',  # a falsy node reads as "": the reference's rule
    b'{"address":"10.0.0.1","port":80,"x":"\xc3\xa9"}',  # msgspec skips a field without checking its UTF-8
    b'{"address":"10.0.0.1","port":80,"x":' + b"1" * 5000 + b"}",  # json.loads refuses over 4,300 digits
    b'{"address":"10.0.0.1","port":0,"port":80}',  # the last of a repeated key counts
    b'{"address":"10.0.0.1","port":80,"x":' + b"[" * 33 + b"]" * 33 + b"}",  # too deep, where nobody reads
    b'{"address":"10.0.0.1","port":80,"x":"\\ud800"}',  # a lone surrogate json.loads keeps
    b'{"address":"10.0.0.1","port":80,"future":1}',  # unknown fields are the reference's to ignore
    b'{"address":"10.0.0.1","port":80,"node":"\xc3\xa9"}',
    b'{"address":"10.0.0.1","port":80' + b" " * MAX_VALUE_BYTES + b"}",  # within the rules, over the size
], ids=["null-node", "non-ascii-unknown", "huge-int-unknown", "repeated-key", "deep-unknown", "lone-surrogate",
        "unknown-field", "non-ascii-node", "too-big"])
def test_unusual_values_go_to_the_reference_and_get_its_answer(raw: bytes) -> None:
    assert _plain_endpoint("e1", raw) is None
    assert outcome(decode_endpoint, "e1", raw) == outcome(reference, "e1", raw)

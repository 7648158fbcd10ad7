"""Every decoder turns any bytes into a value or the contract's one-line rejection (issue 10 parts 2
and 9): table cases for the bounds, then hypothesis properties over raw bytes, JSON-shaped values
and deep or huge values planted inside otherwise valid ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbgen.cli import main
from lbgen.core.bounded import (
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_VALUE_BYTES,
    QUOTE_CHARS,
    _standard_json,
    check_depth,
    check_lengths,
    load_json,
    quote,
)
from lbgen.core.catalog import catalog_from_snapshot
from lbgen.core.registration import json_field
from lbgen.core.lb_node_status import decode_lb_status
from lbgen.core.overview import build_overview
from lbgen.core.schema import decode_endpoint, decode_spec
from lbgen.errors import InvalidValue
from lbgen.core.values import KeyValue, Snapshot

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEEP = b"[" * 1000 + b"]" * 1000  # 2 KB: raised RecursionError in every reader before the bounds

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "load_json": load_json,
    "endpoint": lambda raw: decode_endpoint("a.web.1", raw),
    "spec": decode_spec,
    "lb_status": lambda raw: decode_lb_status("lb-1", raw),
}


def deep(n: int, inner: str = "1") -> str:
    return "[" * n + inner + "]" * n


@pytest.mark.parametrize("raw, reason", [
    (DEEP, f"nested deeper than {MAX_DEPTH} levels"),
    (deep(MAX_DEPTH + 1).encode(), "nested deeper"),
    ('{"a":' * 600 + "1" + "}" * 600, "nested deeper"),
    (b" " * (MAX_VALUE_BYTES + 1), f"value of {MAX_VALUE_BYTES + 1} bytes: the limit is {MAX_VALUE_BYTES}"),
    (json.dumps(list(range(MAX_ITEMS + 1))).encode(), f"a list of {MAX_ITEMS + 1} items"),
    (json.dumps({"a": {str(i): 1 for i in range(MAX_ITEMS + 1)}}).encode(), f"a dict of {MAX_ITEMS + 1} items"),
    (b"[NaN]", "NaN is not a JSON number"),
    (b"-Infinity", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"1" * 5000, "not JSON"),  # Python's int digit limit: a ValueError, not a crash
    (b"{", "not JSON"),
], ids=["deep-2KB", "just-too-deep", "deep-objects", "too-big", "long-list", "wide-object", "nan",
        "infinity", "not-utf8", "huge-int", "truncated"])
def test_load_json_refuses_with_one_line(raw: bytes | str, reason: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        load_json(raw)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("raw, expected", [
    (deep(MAX_DEPTH - 1), json.loads(deep(MAX_DEPTH - 1))),
    (json.dumps({"s": "[" * 5000}), {"s": "[" * 5000}),  # brackets in strings do not nest
    (json.dumps({"s": '\\"[[[' * 200}), {"s": '\\"[[[' * 200}),  # nor do escaped quotes end strings
    (json.dumps(list(range(MAX_ITEMS))), list(range(MAX_ITEMS))),
], ids=["deep-within", "brackets-in-string", "escaped-quotes", "long-within"])
def test_load_json_accepts_within_bounds(raw: str, expected: Any) -> None:
    assert load_json(raw) == load_json(raw.encode()) == expected


@pytest.mark.parametrize("value, expected", [
    ("web", "'web'"),
    ("a" * 2_000_000, "'" + "a" * QUOTE_CHARS + "'… (2000000 chars)"),
    (b"x" * 500, "b'" + "x" * QUOTE_CHARS + "'… (500 bytes)"),
    (list(range(1000)), repr(list(range(1000)))[:QUOTE_CHARS] + f"… ({len(repr(list(range(1000))))} chars)"),
], ids=["short", "2MB-string", "bytes", "list"])
def test_quote_cuts_long_values_and_says_how_long(value: Any, expected: str) -> None:
    assert quote(value) == expected


@pytest.mark.parametrize("field", ["address", "node", "container", "health", "tags", "meta"])
def test_a_2MB_field_is_quoted_short_in_the_rejection(field: str) -> None:
    huge = "a" * (MAX_VALUE_BYTES - 100)
    value = {"address": "127.0.0.1", "port": 80, field: huge if field not in ("tags", "meta") else None}
    if field == "tags":
        value["tags"] = [huge]
    if field == "meta":
        value["meta"] = {"k": huge}
    with pytest.raises(InvalidValue) as caught:
        decode_endpoint("a", json.dumps(value).encode())
    assert len(str(caught.value)) < 300, str(caught.value)[:400]


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_every_decoder_rejects_the_deep_and_the_huge(name: str) -> None:
    for raw in (DEEP, b'{"address":"127.0.0.1","port":80,"tags":' + DEEP + b"}", b'"' + b"a" * 2_000_000 + b'"'):
        with pytest.raises(InvalidValue):
            DECODERS[name](raw)


def test_json_field_reads_none_from_a_bad_value() -> None:
    assert json_field(DEEP, "node") is None
    assert json_field(b'{"node": "n", "x": ' + DEEP + b"}", "node") is None
    assert json_field(b'{"node": "n"}', "node") == "n"


def test_catalog_and_overview_skip_bad_values_and_keep_the_rest() -> None:
    good = json.dumps({"address": "127.0.0.1", "port": 8001}).encode()
    items = (
        KeyValue("/p/services/web/endpoints/a", good, 2, 0),
        KeyValue("/p/services/web/endpoints/deep", DEEP, 3, 0),
        KeyValue("/p/services/bad/spec", b'{"listen":' + DEEP + b"}", 4, 0),
        KeyValue("/p/services/web/endpoints/huge", b'{"address":"' + b"a" * 2_000_000 + b'"}', 5, 0),
        KeyValue("/p/lb/evil", DEEP, 6, 0),
        KeyValue("/p/drain/a", DEEP, 7, 0),
    )
    catalog, rejected = catalog_from_snapshot("/p", Snapshot(7, items))
    assert [(s.name, [e.id for e in s.all_endpoints]) for s in catalog.services] == [("web", ["a"])]
    assert sorted(r.key for r in rejected) == [
        "/p/services/bad/spec", "/p/services/web/endpoints/deep", "/p/services/web/endpoints/huge"]
    assert all(len(r.reason) < 200 for r in rejected)
    overview = build_overview("/p", Snapshot(7, items))
    assert [lb.invalid for lb in overview.lbs] == [f"nested deeper than {MAX_DEPTH} levels"]
    assert all(len(problem) < 300 for problem in overview.problems)


# --- properties ------------------------------------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
ENDPOINT_KEYS = st.sampled_from(["address", "port", "weight", "node", "container", "health", "tags", "meta",
                                 "listen", "hosts", "path", "mode", "balance", "health_check", "revision",
                                 "targets", "version", "connected", "error", "updated_at"])
SHAPED = st.dictionaries(ENDPOINT_KEYS, JSON_VALUES, max_size=8)
NESTING = st.integers(0, 3000).map(lambda n: deep(n))


def _encoded(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


RAW = (
    st.binary(max_size=300)
    | st.text(alphabet="[]{}\",:0123456789 \\ntrue", max_size=300).map(str.encode)
    | JSON_VALUES.map(_encoded)
    | SHAPED.map(_encoded)
    | st.tuples(SHAPED, ENDPOINT_KEYS, NESTING).map(lambda t: _encoded(t[0])[:-1] + f',"{t[1]}":{t[2]}}}'.encode()
                                                     if t[0] else f'{{"{t[1]}":{t[2]}}}'.encode())
)


@pytest.mark.parametrize("name", sorted(DECODERS))
@PROPERTY
@given(raw=RAW)
def test_any_bytes_give_a_value_or_a_one_line_rejection(name: str, raw: bytes) -> None:
    try:
        DECODERS[name](raw)
    except InvalidValue as e:
        assert "\n" not in str(e) and len(str(e)) < 400


@PROPERTY
@given(raw=RAW)
def test_json_field_never_raises(raw: bytes) -> None:
    json_field(raw, "node")


@PROPERTY
@given(value=JSON_VALUES)
def test_load_json_round_trips_what_it_accepts(value: Any) -> None:
    raw = json.dumps(value, allow_nan=False) if _finite(value) else None
    if raw is not None:
        assert load_json(raw) == json.loads(raw)


def _finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("value", [DEEP.decode(), '{"listen": 80, "x": "' + "a" * 100_000 + '"}',
                                   '{"listen": "' + "8" * 1000 + '"}'], ids=["deep", "huge", "long-field"])
def test_registry_put_refuses_a_bad_value_in_one_short_line(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["registry", "put", "services/web/spec", value, "--registry", f"file:{tmp_path}/r.yaml"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("Error: /lbgen/services/web/spec: ") and len(err) < 300, err[:400]
    assert not (tmp_path / "r.yaml").exists()


def _standard_library_reader(raw: bytes) -> Any:
    """`load_json` as it was before the msgspec fast path: the reference for every outcome."""
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidValue(f"value of {len(raw)} bytes: the limit is {MAX_VALUE_BYTES}")
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise InvalidValue(f"not UTF-8: {e.reason} at byte {e.start}") from e
    check_depth(text)
    value = _standard_json(text)
    check_lengths(value)
    return value


def _outcome(read: Callable[[bytes], Any], raw: bytes) -> str:
    try:
        return f"value {type(read(raw)).__name__} {read(raw)!r}"
    except InvalidValue as e:
        return f"refused: {e}"


NUMBERS = st.from_regex(r"-?(0|[1-9][0-9]{0,4500})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,4})?", fullmatch=True)
ODD = st.sampled_from([r'"\ud800"', r'"\udc00x"', "1e400", "-1e400", "1e-400", "NaN", "[Infinity]", "-0", "-0.0",
                       "18446744073709551616", "\ufeff{}", '{"a":1,"a":2}', '"\t"', "[1,]", " [] "])


@PROPERTY
@given(raw=RAW | NUMBERS.map(str.encode) | ODD.map(str.encode)
       | st.lists(NUMBERS | ODD, max_size=4).map(lambda items: f"[{','.join(items)}]".encode()))
def test_the_fast_decoder_accepts_and_refuses_exactly_as_the_standard_library(raw: bytes) -> None:
    """msgspec's decoder is only a fast path (issue 13): every input gives the same value, of the
    same types, or the same rejection message as `json.loads` with the bounds."""
    assert _outcome(load_json, raw) == _outcome(_standard_library_reader, raw)


@pytest.mark.parametrize("count", [MAX_ITEMS - 1, MAX_ITEMS, MAX_ITEMS + 1])
def test_the_item_limit_holds_at_its_edge_with_few_commas_elsewhere(count: int) -> None:
    """Lengths are checked only when the text has MAX_ITEMS commas: a list of MAX_ITEMS + 1 has them."""
    raw = json.dumps({"a": [0] * count}, separators=(",", ":")).encode()
    if count > MAX_ITEMS:
        with pytest.raises(InvalidValue, match=f"a list of {count} items"):
            load_json(raw)
    else:
        assert load_json(raw) == {"a": [0] * count}

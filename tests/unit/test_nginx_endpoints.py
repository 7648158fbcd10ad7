"""The nginx endpoint block (lbgen/core/kinds/nginx/endpoints.py): encoder, bracket level, plan (issue 12)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.core.layout import ServiceView
from lbgen.core.model import Endpoint
from lbgen.core.kinds.nginx import endpoints
from lbgen.core.kinds.nginx.endpoints import (
    LINE_BYTES, SEPARATOR, dict_megabytes, endpoint_block, lua_balanced, lua_string_call, plan_endpoints,
)


def view(name: str, *endpoints: tuple[str, int, int], spec: dict[str, str] | None = None) -> ServiceView:
    eps = tuple(Endpoint(f"{name}-{i}", address, port, weight) for i, (address, port, weight) in enumerate(endpoints))
    return ServiceView(name, spec or {}, eps, eps)


def config(*services: ServiceView, head: str = "worker_processes 1;", per_function: int = 20_000) -> str:
    """A config shaped like the template's: text, the block, more text."""
    block = endpoint_block(services, per_function)
    lines = [head, "http {", "    init_by_lua_block {", "        " + block.open,
             *("        " + line for line in block.lines), "        " + block.close, "    }"]
    lines += [f"    upstream {s.name} {{ server 0.0.0.1; }}" for s in services] + ["}"]
    return "\n".join(lines) + "\n"


def triples(service: ServiceView) -> list[tuple[str, int, int]]:
    return [(e.address, e.port, e.weight) for e in service.endpoints]


def lua_argument(call: str) -> str:
    """What Lua passes to `add` in `add[=*[ ... ]=*]`: the string up to the first closer of the
    opener's level (a newline right after the opener would be skipped)."""
    assert call.startswith("add[")
    level = call.index("[", 4) - 4
    body = call[level + 5:]
    body = body[1:] if body.startswith("\n") else body
    return body[:body.index("]" + "=" * level + "]")]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="[]=x\"\\{}", max_size=16))
def test_no_content_can_close_its_bracket_early(text: str) -> None:
    call = lua_string_call(text)
    assert lua_argument(call) == text and call.endswith("]")


NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)
ENDPOINTS = st.lists(st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2", "::1", "fd00::5"]),
                               st.integers(1, 65535), st.integers(1, 256)), max_size=4)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(NAMES, ENDPOINTS, min_size=1, max_size=5), st.data())
def test_the_block_round_trips_and_plans_exactly_the_changed_sets(sets: dict[str, list[tuple[str, int, int]]],
                                                                 data: st.DataObject) -> None:
    before = [view(name, *eps) for name, eps in sets.items()]
    after = [view(s.name, *data.draw(ENDPOINTS)) if data.draw(st.booleans()) else s for s in before]
    old, new = config(*before), config(*after)
    block = endpoint_block(after)
    decoded = [json.loads(lua_argument(line)) for line in block.lines]
    assert decoded[0] == {"version": block.version}
    assert {d["name"] for d in decoded[1:]} == {s.name for s in after}
    plan = plan_endpoints(old, new)
    assert plan is not None and plan.version == block.version
    changed = {s.name for s, t in zip(before, after) if triples(s) != triples(t)}
    assert set(plan.upstreams) == changed
    for s in after:
        if s.name in changed:
            assert plan.upstreams[s.name]["endpoints"] == [{"address": e.address, "port": e.port, "weight": e.weight}
                                                          for e in s.endpoints]


WEB = view("web", ("10.0.0.1", 80, 1))
API = view("api", ("10.0.0.2", 81, 2))


@pytest.mark.parametrize("old, new", [
    (config(WEB, API), config(WEB, API, head="worker_processes 2;")),          # a line outside changed
    (config(WEB, API), config(WEB)),                                          # an upstream left
    (config(WEB), config(WEB, API)),                                          # an upstream came
    (config(WEB), "worker_processes 1;\n"),                                   # no block in new
    ("worker_processes 1;\n", config(WEB)),                                   # no block in old
    (config(WEB), config(view("web", ("10.0.0.1", 80, 1), spec={"balance": "random"})).replace(
        "worker_processes 1;", "worker_processes 1; ")),                      # both inside and outside
], ids=["outside", "removed", "added", "no-new-block", "no-old-block", "inside-and-outside"])
def test_anything_but_endpoint_lines_is_a_reload(old: str, new: str) -> None:
    assert plan_endpoints(old, new) is None


def test_add_remove_weight_and_balance_are_runtime_changes() -> None:
    old = config(WEB, API)
    new = config(view("web", ("10.0.0.1", 80, 1), ("10.0.0.3", 80, 5)), view("api", spec={"balance": "leastconn"}))
    plan = plan_endpoints(old, new)
    assert plan is not None
    assert plan.upstreams == {
        "web": {"balance": "roundrobin", "endpoints": [{"address": "10.0.0.1", "port": 80, "weight": 1},
                                                       {"address": "10.0.0.3", "port": 80, "weight": 5}]},
        "api": {"balance": "leastconn", "endpoints": []},
    }
    assert plan_endpoints(old, old) == type(plan)(endpoint_block([WEB, API]).version, {})


def test_unbalanceable_services_stay_out_of_the_block() -> None:
    named = view("named", ("backend.internal", 80, 1))
    zoned = view("zoned", ("fe80::1%eth0", 80, 1))
    tcp = view("db", ("10.0.0.9", 5432, 1), spec={"mode": "tcp"})
    assert not any(lua_balanced(s) for s in (named, zoned, tcp))
    assert endpoint_block([WEB, named, zoned, tcp]).upstreams == {"web"}


def test_the_dict_size_grows_by_doubling_with_the_catalog() -> None:
    assert dict_megabytes(['{"version":"x"}']) == 1
    sizes = [dict_megabytes(["x" * 200] * n) for n in (1, 1000, 3000, 10_000, 100_000)]
    assert sizes == sorted(sizes) and all(size & (size - 1) == 0 for size in sizes)
    assert sizes[-1] * (1 << 20) >= 2 * 100_000 * 500


def test_an_upstream_too_long_for_one_line_continues_on_the_next_and_plans_whole() -> None:
    big = view("big", *(("fd00::" + format(i, "x"), 30000 + i, 1) for i in range(300)))
    block = endpoint_block([big])
    assert len(block.lines) > 3 and all(len(line) < LINE_BYTES + 100 for line in block.lines)
    assert all(json.loads(lua_argument(line))["name"] == "big" for line in block.lines[1:])
    smaller = view("big", *triples(big)[:-1])
    plan = plan_endpoints(config(big), config(smaller))
    assert plan is not None
    expected = [{"address": a, "port": p, "weight": w} for a, p, w in triples(smaller)]
    assert plan.upstreams["big"]["endpoints"] == expected


def test_a_separator_every_few_lines_moves_with_them_and_is_no_change() -> None:
    services = [view(f"s{i}", ("10.0.0.1", 80 + i, 1)) for i in range(5)]
    block = endpoint_block(services, per_function=2)
    assert [line == SEPARATOR for line in block.lines] == [False, False, True, False, False, True, False, False]
    grown = [view("s0", *(("fd00::" + format(i, "x"), 9000 + i, 1) for i in range(80))), *services[1:]]
    plan = plan_endpoints(config(*services, per_function=2), config(*grown, per_function=2))
    assert plan is not None and set(plan.upstreams) == {"s0"}  # s0 took 3 lines: every separator moved


def test_the_block_is_made_before_the_fork_only_with_runtime_on_and_then_reused() -> None:
    """The bounded renderer's parent warms the block (the child's own work would be lost with it):
    the template's `lua_endpoints(services)` then gets that very block."""
    views = (view("web", ("10.0.0.1", 80, 1)), view("api", ("10.0.0.2", 80, 1)))
    endpoints._Last.block = None
    endpoints.warm(views, {}, {"runtime": False})
    assert endpoints._Last.block is None
    endpoints.warm(views, {}, {"runtime": True})
    made = endpoints._Last.block
    assert made is not None and made[0] is views and endpoint_block(views) is made[2]

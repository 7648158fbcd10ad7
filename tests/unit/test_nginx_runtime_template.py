"""The shipped nginx template with `runtime` on (issue 12): golden renders, and which changes the
nginx kind's `plan_runtime` takes as endpoint-only."""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace
import pytest

from lbgen.core.kinds import lb_kind
from lbgen.core.kinds.nginx import control_socket
from lbgen.core.kinds.nginx.endpoints import EndpointPlan
from lbgen.core.model import Catalog
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.errors import TemplateError
from tests.unit.catalogs import ROOT, catalog_from_tree, example_catalog, tricky_catalog

GOLDEN = ROOT / "tests" / "golden"
VARS = {"pid": "/run/lbgen-golden/nginx.pid", "error_log": "/run/lbgen-golden/error.log", "access_log": "off",
        "temp_dir": "/run/lbgen-golden", "status_port": 18999, "lua_dir": "/usr/lib/lbgen/lua"}
SOURCE = (ROOT / "templates" / "nginx.conf.j2").read_text()


def render_runtime(catalog: Catalog, **variables: Any) -> str:
    target = Target(name="nginx", template="nginx.conf.j2", dest="/dev/null", kind="nginx",
                    vars={**VARS, **variables}, runtime=True)
    return render(SOURCE, catalog, target)


def plan(old: Catalog, new: Catalog) -> Any:
    planner = lb_kind("nginx").plan_runtime
    assert planner is not None
    return planner(render_runtime(old), render_runtime(new))


@pytest.mark.parametrize("name, catalog", [("example", example_catalog), ("tricky", tricky_catalog)])
def test_golden_runtime_renders(name: str, catalog: Any, update_golden: bool) -> None:
    text = render_runtime(catalog())
    golden = GOLDEN / f"{name}.nginx-runtime.conf"
    if update_golden:
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs: run pytest tests/unit --update-golden and review the diff"


def web(endpoints: dict[str, dict[str, Any]], **spec: Any) -> Catalog:
    api = {"spec": {"listen": 8081}, "endpoints": {"a": {"address": "10.0.0.9", "port": 81}}}
    return catalog_from_tree({"web": {"spec": {"listen": 8080, **spec}, "endpoints": endpoints}, "api": api})


ONE = {"e1": {"address": "10.0.0.1", "port": 80}}
TWO = {**ONE, "e2": {"address": "10.0.0.2", "port": 80}}


@pytest.mark.parametrize("new, changed", [
    (web(TWO), {"web"}),                                                          # add
    (web({}), {"web"}),                                                           # remove the last one
    (web({"e1": {"address": "10.0.0.1", "port": 80, "weight": 5}}), {"web"}),     # weight
    (web({"e1": {"address": "10.0.0.1", "port": 80, "health": "unhealthy"}}), {"web"}),  # health
    (web(ONE, balance="leastconn"), {"web"}),                                     # balance
], ids=["add", "remove-all", "weight", "health", "balance"])
def test_endpoint_changes_are_runtime_changes_that_need_no_check(new: Catalog, changed: set[str]) -> None:
    result = plan(web(ONE), new)
    assert isinstance(result, EndpointPlan) and set(result.upstreams) == changed and not result.needs_check


@pytest.mark.parametrize("new", [
    web(ONE, listen=8082),                                                       # listener
    web(ONE, hosts=["web.test"]),                                                # host
    web(ONE, path="/web"),                                                       # path
    web({"e1": {"address": "backend.internal", "port": 80}}),                    # a host name: server lines
    catalog_from_tree({"web": {"spec": {"listen": 8080}, "endpoints": ONE}}),    # a service left
], ids=["listener", "host", "path", "host-name", "service-removed"])
def test_anything_else_reloads(new: Catalog) -> None:
    assert plan(web(ONE), new) is None


def test_runtime_off_renders_no_lua() -> None:
    target = Target(name="nginx", template="nginx.conf.j2", dest="/dev/null", kind="nginx", vars=VARS)
    assert "lua" not in render(SOURCE, example_catalog(), target)


def test_without_a_lua_dir_the_render_says_so() -> None:
    variables = {k: v for k, v in VARS.items() if k != "lua_dir"}
    target = Target(name="nginx", template="nginx.conf.j2", dest="/dev/null", kind="nginx", vars=variables,
                    runtime=True)
    with pytest.raises(TemplateError, match="'lua_dir' is undefined"):
        render(SOURCE, example_catalog(), target)


@pytest.mark.parametrize("variables, path", [
    ({}, "/run/lbgen-nginx/control.sock"),
    ({"pid": "/var/run/nginx/nginx.pid"}, "/var/run/nginx/lbgen-nginx/control.sock"),
    ({"pid": "nginx.pid"}, "./lbgen-nginx/control.sock"),
    ({"control_socket": "/run/x.sock"}, "/run/x.sock"),
], ids=["default", "beside-the-pid", "relative", "chosen"])
def test_the_control_socket_sits_beside_the_pid_file(variables: dict[str, str], path: str) -> None:
    assert control_socket(variables) == path
    assert f"listen unix:{path};" in render_runtime(example_catalog(), **{"pid": "/run/nginx.pid", **variables})


def test_the_same_catalog_renders_the_same_bytes() -> None:
    catalog = example_catalog()
    assert render_runtime(catalog) == render_runtime(replace(catalog, revision=catalog.revision + 5))

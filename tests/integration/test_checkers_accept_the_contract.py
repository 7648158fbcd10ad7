"""Property (issue 10 part 9): whatever the registry contract accepts, the real `nginx -t` and
`haproxy -c` accept once the shipped templates render it.

Hypothesis writes raw JSON values for a few services, mostly within the contract's grammar and at
its edges (long names, every character a name, path or meta value may hold, IPv6, weight 0 and
256, wildcard hosts, shared ports and hosts), and arbitrary text in every name, host, path and
meta value. The real decoder keeps what it accepts; both shipped
templates render that catalog and both real checkers must accept it. Two environment facts are
left out on purpose: endpoint host names other than `localhost` and IPv6 zone ids (the checkers
resolve the names and look the interfaces up: one that does not exist here is a refusal of the
environment, quarantined per service, issue 10 part 3), and listen ports the templates' own status
listeners use.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lbgen.core.catalog import catalog_from_snapshot
from lbgen.core.model import HEALTH_STATES, Catalog
from lbgen.core.addresses import HOST_LABEL_RE
from lbgen.core.schema import BALANCE_ALGORITHMS, META_VALUE_RE, MODES, NAME_RE, PATH_RE
from lbgen.core.values import KeyValue, Snapshot
from tests.unit.catalogs import render_default

pytestmark = pytest.mark.integration

STATUS_PORT, STATS_PORT = 18999, 18998
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _regex(pattern: Any, max_size: int) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) <= max_size)


ANY = st.text(max_size=20)  # mostly refused by the contract; whatever it lets through must render well
NAMES = st.sampled_from(["web", "api", "a", "A-1.b_c"]) | _regex(NAME_RE, 128) | ANY
LABEL = _regex(HOST_LABEL_RE, 63)
HOSTS = st.builds(lambda wild, labels: ("*." if wild else "") + ".".join(labels),
                  st.booleans(), st.lists(LABEL, min_size=1, max_size=4)).filter(lambda h: len(h) <= 253) | ANY
PATHS = st.sampled_from(["/", "/api", "/api/v1/", "/.well-known"]) | _regex(PATH_RE, 60) | ANY
EDGES = st.sampled_from([-1, 0, 1, 255, 256, 257, 1023, 65535, 65536, 99999, 2**31, 2**63])
PORTS = (st.integers(1, 65535) | EDGES | st.integers()).filter(lambda p: p not in (STATUS_PORT, STATS_PORT))
ADDRESSES = (st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str)
             | st.sampled_from(["localhost", "127.0.0.1", "::1"]))
SPECS = st.fixed_dictionaries({}, optional={
    "listen": st.sampled_from([8080, 8081, 80]) | PORTS,
    "hosts": st.lists(HOSTS, max_size=3),
    "path": PATHS,
    "mode": st.sampled_from(MODES),
    "balance": st.sampled_from(BALANCE_ALGORITHMS),
    "health_check": PATHS,
})
ENDPOINTS = st.fixed_dictionaries({"address": ADDRESSES, "port": PORTS}, optional={
    "weight": st.integers(0, 256) | EDGES,
    "health": st.sampled_from(HEALTH_STATES),
    "node": NAMES,
    "container": NAMES,
    "tags": st.lists(NAMES, max_size=3),
    "meta": st.dictionaries(NAMES, _regex(META_VALUE_RE, 256) | ANY, max_size=3),
})
SERVICES = st.dictionaries(
    NAMES,
    st.tuples(st.none() | SPECS, st.dictionaries(NAMES, ENDPOINTS, max_size=3)),
    min_size=1, max_size=4,
)


def accepted(services: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]]) -> Catalog:
    """The catalog the real decoder builds from these raw values (what it rejects is left out)."""
    items = []
    for name, (spec, endpoints) in services.items():
        if spec is not None:
            items.append(KeyValue(f"/p/services/{name}/spec", json.dumps(spec).encode(), 1))
        for eid, value in endpoints.items():
            items.append(KeyValue(f"/p/services/{name}/endpoints/{eid}", json.dumps(value).encode(), 1))
    catalog, _ = catalog_from_snapshot("/p", Snapshot(1, tuple(items)))
    return catalog


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


def nginx_verdict(catalog: Catalog, workdir: Path) -> subprocess.CompletedProcess[str]:
    config = workdir / "nginx.conf"
    config.write_text(render_default("nginx", catalog, {
        "pid": f"{workdir}/nginx.pid", "error_log": f"{workdir}/error.log", "access_log": f"{workdir}/access.log",
        "temp_dir": str(workdir), "status_port": STATUS_PORT}))
    return subprocess.run([require("nginx"), "-t", "-c", str(config), "-p", str(workdir)],
                          capture_output=True, text=True, timeout=60)


def haproxy_verdict(catalog: Catalog, workdir: Path) -> subprocess.CompletedProcess[str]:
    config = workdir / "haproxy.cfg"
    config.write_text(render_default("haproxy", catalog, {
        "pid": f"{workdir}/haproxy.pid", "stats_socket": f"{workdir}/admin.sock", "stats_port": STATS_PORT,
        "log": "stderr"}))
    return subprocess.run([require("haproxy"), "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("verdict", [nginx_verdict, haproxy_verdict], ids=["nginx", "haproxy"])
@PROPERTY
@given(services=SERVICES)
def test_both_checkers_accept_what_the_contract_accepts(verdict: Any, services: Any) -> None:
    catalog = accepted(services)
    assume(catalog.services)
    with tempfile.TemporaryDirectory(prefix="lb node ") as directory:  # a space: the quoting is proven too
        result = verdict(catalog, Path(directory))
        assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]

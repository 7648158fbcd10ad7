"""The default templates render configs that the real nginx 1.22 and HAProxy 2.6 accept, warning-free.

Each case renders into a temp dir (its path contains a space, so the quoting filters are proven
against the real parsers too) and runs the LB's own checker on it, as the watcher's check step does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from lbgen.adapters.file_store import FileStore
from lbgen.core.catalog import catalog_from_snapshot
from lbgen.core.model import Catalog, Endpoint, Service
from tests.unit.catalogs import ROOT, example_catalog, render_default, tricky_catalog

pytestmark = pytest.mark.integration


def require(program: str) -> str:
    """The program's path; skipped when missing (tests/conftest.py turns that into a failure in CI)."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


def many_services(count: int = 1000) -> Catalog:
    """`count` services on 10 ports, each with its own host name, three endpoints, mixed modes."""
    services = []
    for i in range(count):
        spec = {"listen": 20000 + i % 10, "hosts": [f"svc{i}.example.test", f"*.svc{i}.example.test"],
                "path": f"/p{i % 7}", "balance": ("roundrobin", "leastconn", "random", "source")[i % 4]}
        endpoints = tuple(Endpoint(f"e{j}", f"10.1.{i % 250}.{j + 1}", 8000 + j, weight=1 + j,
                                   health=("healthy", "unhealthy", "none")[j]) for j in range(3))
        services.append(Service(f"svc{i:04d}", spec, endpoints))
    services.append(Service("tcp-a", {"listen": 21000, "mode": "tcp"}, services[0].all_endpoints))
    return Catalog(1, tuple(services))


def many_hosts() -> Catalog:
    """The most host names the contract lets one spec carry (64), long ones, exact and wildcard, on
    a path route: HAProxy refuses a line over 64 words or 2,048 characters (found by issue 10)."""
    label = "x" * 60
    hosts = [f"h{i}.{label}.{label}.example.test" for i in range(32)]
    hosts += [f"*.w{i}.{label}.{label}.example.test" for i in range(32)]
    endpoint = (Endpoint("e1", "127.0.0.1", 8000),)
    return Catalog(1, (Service("wide", {"listen": 20000, "hosts": hosts, "path": "/api"}, endpoint),
                       Service("wide-root", {"listen": 20000, "hosts": hosts}, endpoint)))


CATALOGS: dict[str, Callable[[], Catalog]] = {
    "many-hosts": many_hosts,
    "example": example_catalog,
    "tricky": tricky_catalog,
    "empty": lambda: Catalog(1, ()),
    "many": many_services,
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    spaced = tmp_path / "lb node"
    spaced.mkdir()
    return spaced


@pytest.mark.parametrize("catalog_name", CATALOGS)
def test_nginx_accepts_the_rendered_config(catalog_name: str, workdir: Path) -> None:
    nginx = require("nginx")
    config = workdir / "nginx.conf"
    config.write_text(render_default("nginx", CATALOGS[catalog_name](), {
        "pid": f"{workdir}/nginx.pid", "error_log": f"{workdir}/error.log",
        "access_log": f"{workdir}/access.log", "temp_dir": str(workdir), "status_port": 18999,
        "include": f"{workdir}/extra/*.conf",
    }))
    result = subprocess.run([nginx, "-t", "-c", str(config), "-p", str(workdir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


@pytest.mark.parametrize("catalog_name", CATALOGS)
def test_haproxy_accepts_the_rendered_config_without_warnings(catalog_name: str, workdir: Path) -> None:
    haproxy = require("haproxy")
    config = workdir / "haproxy.cfg"
    config.write_text(render_default("haproxy", CATALOGS[catalog_name](), {
        "pid": f"{workdir}/haproxy.pid", "stats_socket": f"{workdir}/admin.sock", "stats_port": 18998,
        "log": "stderr", "min_slots": 2,
    }))
    result = subprocess.run([haproxy, "-c", "-dW", "-f", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_checkers_reject_a_broken_render(workdir: Path) -> None:
    """The checks above can fail: a config missing its closing brace is refused by both LBs."""
    nginx, haproxy = require("nginx"), require("haproxy")
    broken = workdir / "broken.conf"
    text = render_default("nginx", example_catalog(), {"pid": f"{workdir}/nginx.pid",
                                                       "error_log": f"{workdir}/error.log"})
    broken.write_text(text.rstrip().removesuffix("}"))
    assert subprocess.run([nginx, "-t", "-q", "-c", str(broken)], capture_output=True, timeout=60).returncode != 0
    broken.write_text("frontend x\n    bind 127.0.0.1:1\n    use_backend nowhere\n")
    assert subprocess.run([haproxy, "-c", "-q", "-f", str(broken)], capture_output=True, timeout=60).returncode != 0


def test_example_registry_loads_through_the_file_store() -> None:
    """examples/registry.yaml is read by the real file registry exactly as the tests read it."""
    store = FileStore(str(ROOT / "examples" / "registry.yaml"), prefix="/lbgen", must_exist=True)
    try:
        catalog, rejected = catalog_from_snapshot("/lbgen", store.snapshot("/lbgen"))
    finally:
        store.close()
    assert rejected == []
    assert catalog.services == example_catalog().services

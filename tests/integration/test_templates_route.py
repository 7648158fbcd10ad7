"""The default templates route alike in the real nginx and HAProxy: hosts, wildcards, paths, TCP, 503s.

A backend nginx answers on one port per endpoint with its own port number, so every response
names the endpoint, hence the service, that the LB chose. The same catalog is rendered for both
LBs and the same requests must land on the same services.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from lbgen.core.model import Catalog, Endpoint, Service
from tests.integration.test_templates_validate import require
from tests.unit.catalogs import render_default

pytestmark = pytest.mark.integration

SERVICES = {  # name → spec (the endpoint ports are allocated per test run)
    "web": {"hosts": ["a.test"]},
    "api": {"hosts": ["a.test"], "path": "/api"},
    "wild": {"hosts": ["*.a.test"]},
    "root": {},
    "docs": {"path": "/docs/"},
    "empty": {"hosts": ["empty.test"]},
}
REQUESTS = [  # (Host header, path) → service answering, or an HTTP status when none may
    (("a.test", "/"), "web"), (("A.Test:1234", "/x"), "web"), (("a.test", "/api"), "api"),
    (("a.test", "/api/v1"), "api"), (("a.test", "/apiary"), "web"), (("x.a.test", "/api"), "wild"),
    (("y.x.a.test", "/"), "wild"), (("other.test", "/"), "root"), (("other.test", "/docs"), "docs"),
    (("other.test", "/docs/x"), "docs"), (("other.test", "/docsx"), "root"), (("empty.test", "/"), 503),
]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_listening(port: int, process: subprocess.Popen[bytes], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert process.poll() is None, f"exited {process.returncode}: {process.stderr.read().decode()[-500:]}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {deadline}s")


@contextlib.contextmanager
def running(argv: list[str], port: int) -> Iterator[None]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def backend_config(workdir: Path, ports: list[int]) -> Path:
    servers = "".join(f"server {{ listen 127.0.0.1:{p}; return 200 \"{p}\"; }}\n" for p in ports)
    config = workdir / "backends.conf"
    config.write_text(
        f"pid {workdir}/backends.pid; error_log {workdir}/backends.log; events {{}}\n"
        f"http {{ access_log off; {servers} }}\n"
    )
    return config


def get(port: int, host: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def tcp_roundtrip(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode().rsplit("\r\n\r\n", 1)[-1]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Catalog, dict[str, str], int, int]]:
    """The catalog, endpoint port → service, the LB's HTTP and TCP ports; the backends running."""
    nginx = require("nginx")
    lb_http, lb_tcp, *backend_ports = free_ports(3 + len(SERVICES))
    owners: dict[str, str] = {}
    services = []
    for (name, spec), port in zip(sorted(SERVICES.items()), backend_ports, strict=False):
        endpoints = () if name == "empty" else (Endpoint("e1", "127.0.0.1", port),)
        services.append(Service(name, {**spec, "listen": lb_http}, endpoints))
        owners[str(port)] = name
    tcp_port = backend_ports[-1]
    services.append(Service("tcp", {"listen": lb_tcp, "mode": "tcp"}, (Endpoint("e1", "127.0.0.1", tcp_port),)))
    owners[str(tcp_port)] = "tcp"
    catalog = Catalog(1, tuple(sorted(services, key=lambda s: s.name)))
    config = backend_config(tmp_path, backend_ports)
    with running([nginx, "-c", str(config), "-g", "daemon off;"], backend_ports[0]):
        yield catalog, owners, lb_http, lb_tcp


def answers(owners: dict[str, str], lb_http: int, lb_tcp: int) -> dict[object, object]:
    seen: dict[object, object] = {}
    for (host, path), _ in REQUESTS:
        status, body = get(lb_http, host, path)
        seen[(host, path)] = owners.get(body, f"{status} {body[:40]!r}") if status == 200 else status
    seen["tcp"] = owners.get(tcp_roundtrip(lb_tcp))
    return seen


EXPECTED = {**dict(REQUESTS), "tcp": "tcp"}


def test_nginx_routes_hosts_paths_and_tcp(setup: tuple[Catalog, dict[str, str], int, int], tmp_path: Path) -> None:
    catalog, owners, lb_http, lb_tcp = setup
    config = tmp_path / "lb-nginx.conf"
    config.write_text(render_default("nginx", catalog, {
        "pid": f"{tmp_path}/lb.pid", "error_log": f"{tmp_path}/lb.log", "access_log": "off",
        "temp_dir": str(tmp_path), "worker_processes": 1,
    }))
    with running([require("nginx"), "-c", str(config), "-g", "daemon off;"], lb_http):
        assert answers(owners, lb_http, lb_tcp) == EXPECTED


def test_haproxy_routes_the_same_way(setup: tuple[Catalog, dict[str, str], int, int], tmp_path: Path) -> None:
    catalog, owners, lb_http, lb_tcp = setup
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_default("haproxy", catalog, {
        "pid": f"{tmp_path}/haproxy.pid", "stats_socket": f"{tmp_path}/admin.sock",
    }))
    with running([require("haproxy"), "-W", "-db", "-f", str(config)], lb_http):
        assert answers(owners, lb_http, lb_tcp) == EXPECTED

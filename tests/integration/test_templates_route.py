"""The default templates route alike in the real nginx and HAProxy: hosts, wildcards, paths, TCP, 503s.

Each service's endpoint is a tiny backend answering its own name, so every response names the
service the LB chose. The same catalog is rendered for both LBs and the same requests must land
on the same services.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from typing import Callable

import pytest

from lbgen.core.model import Catalog, Endpoint, Service
from tests.support.lb import Backend, ConfFor, Lb
from tests.support.util import free_port
from tests.unit.catalogs import render_default

pytestmark = pytest.mark.integration

SERVICES = {  # name → spec; every service but `empty` gets one endpoint, `tcp` is added with its port
    "web": {"hosts": ["a.test"]},
    "api": {"hosts": ["a.test"], "path": "/api"},
    "wild": {"hosts": ["*.a.test"]},
    "root": {},
    "docs": {"path": "/docs/"},
    "empty": {"hosts": ["empty.test"]},
}
EXPECTED = {  # (Host header, path) → the service answering, or the HTTP status when none may
    ("a.test", "/"): "web", ("A.Test:1234", "/x"): "web", ("a.test", "/api"): "api",
    ("a.test", "/api/v1"): "api", ("a.test", "/apiary"): "web", ("x.a.test", "/api"): "wild",
    ("y.x.a.test", "/"): "wild", ("other.test", "/"): "root", ("other.test", "/docs"): "docs",
    ("other.test", "/docs/x"): "docs", ("other.test", "/docsx"): "root", ("empty.test", "/"): 503,
    "tcp": "tcp",
}
Start = Callable[[ConfFor], Lb]


def catalog(backend: Callable[[str], Backend], http_port: int, tcp_port: int) -> Catalog:
    services = [
        Service(name, {**spec, "listen": http_port},
                () if name == "empty" else (Endpoint("e1", "127.0.0.1", backend(name).port),))
        for name, spec in SERVICES.items()
    ]
    services.append(Service("tcp", {"listen": tcp_port, "mode": "tcp"},
                            (Endpoint("e1", "127.0.0.1", backend("tcp").port),)))
    return Catalog(1, tuple(sorted(services, key=lambda s: s.name)))


def get(port: int, host: str, path: str) -> object:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        body = response.read().decode()
        return body if response.status == 200 else response.status
    finally:
        connection.close()


def tcp_get(port: int) -> str:
    """An HTTP/1.0 request through the TCP listener; the backend's body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode().rsplit("\r\n\r\n", 1)[-1]


def answers(http_port: int, tcp_port: int) -> dict[object, object]:
    seen: dict[object, object] = {key: get(http_port, *key) for key in EXPECTED if key != "tcp"}
    seen["tcp"] = tcp_get(tcp_port)
    return seen


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_lb_routes_hosts_paths_and_tcp(kind: str, backend: Callable[[str], Backend],
                                       nginx_lb: Start, haproxy_lb: Start) -> None:
    tcp_port = free_port()

    def conf_for(lb_dir: Path, port: int) -> str:
        variables = {
            "nginx": {"pid": f"{lb_dir}/nginx.pid", "error_log": f"{lb_dir}/error.log", "access_log": "off",
                      "temp_dir": str(lb_dir), "worker_processes": 1},
            "haproxy": {"pid": f"{lb_dir}/haproxy.pid", "stats_socket": f"{lb_dir}/admin.sock"},
        }[kind]
        return render_default(kind, catalog(backend, port, tcp_port), variables)

    lb = (nginx_lb if kind == "nginx" else haproxy_lb)(conf_for)
    assert answers(lb.port, tcp_port) == EXPECTED

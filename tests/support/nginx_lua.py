"""Helpers for tests of nginx's Lua balancer (issue 12): a config around lbgen's endpoint block,
the control socket, worker pids, and backends whose answers a test can hold.

`lua_conf` writes what the shipped template writes for a Lua-balanced upstream (the endpoint
block in init_by_lua, `balancer_by_lua_block` + `keepalive` per upstream, `admit` in the
location, the control server on a unix socket only), without the rest of the template, so that
the data plane is tested on its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lbgen.adapters.kinds.nginx import LUA_DIR
from lbgen.adapters.kinds.nginx.runtime import EndpointsApi
from lbgen.core.layout import ServiceView
from lbgen.core.model import Endpoint
from lbgen.core.kinds.nginx.endpoints import endpoint_block
from tests.support.lb import Answer, nginx_conf

MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so")


def service(name: str, *endpoints: tuple[str, int, int], balance: str = "roundrobin") -> ServiceView:
    """A service view with endpoints (address, port, weight), all served."""
    eps = tuple(Endpoint(f"{name}-{i}", a, p, w) for i, (a, p, w) in enumerate(endpoints))
    return ServiceView(name, {"balance": balance}, eps, eps)


def lua_conf(lb_dir: Path, port: int, services: list[ServiceView], workers: int = 1,
             fail_timeout: int = 60, per_function: int = 20_000) -> str:
    """A whole nginx.conf: `services` Lua-balanced, each at /`name`/ on `port`; control socket
    at `lb_dir`/control.sock."""
    block = endpoint_block(services, per_function)
    upstreams = "".join(
        f"  upstream {s.name} {{\n    server 0.0.0.1;\n"
        f"    balancer_by_lua_block {{ require(\"lbgen_balancer\").balance(\"{s.name}\") }}\n"
        "    keepalive 8;\n  }\n" for s in services)
    locations = "".join(
        f"    location /{s.name}/ {{\n      access_by_lua_block {{ require(\"lbgen_balancer\").admit(\"{s.name}\") }}\n"
        f"      proxy_pass http://{s.name};\n    }}\n" for s in services)
    http = (
        f'  lua_package_path "{LUA_DIR}/?.lua;/usr/share/lua/5.1/?.lua;;";\n'
        f"  lua_shared_dict lbgen_endpoints {block.dict_size};\n  lua_shared_dict lbgen_failures 1m;\n"
        "  proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n  proxy_next_upstream error timeout;\n"
        "  proxy_connect_timeout 2s;\n"
        "  init_by_lua_block {\n"
        f"    require(\"lbgen_balancer\").configure({{max_fails = 1, fail_timeout = {fail_timeout}}})\n"
        f"    {block.open}\n" + "".join(f"    {line}\n" for line in block.lines) + f"    {block.close}\n  }}\n"
        "  init_worker_by_lua_block { require(\"lbgen_balancer\").init_worker() }\n"
        "  log_by_lua_block { require(\"lbgen_balancer\").log() }\n"
        + upstreams
        + f"  server {{\n    listen 127.0.0.1:{port};\n{locations}"
        + "    location / { return 404 \"public\\n\"; }\n  }\n"
        f"  server {{\n    listen unix:{lb_dir}/control.sock;\n    access_log off;\n"
        "    client_max_body_size 16m;\n    client_body_buffer_size 16m;\n"
        "    location / { content_by_lua_block { require(\"lbgen_control\").serve() } }\n  }\n"
    )
    head = "".join(f"load_module {m};\n" for m in MODULES)
    return head + nginx_conf(lb_dir, port, http).replace("worker_processes 1;", f"worker_processes {workers};")


def control(lb_dir: Path) -> EndpointsApi:
    return EndpointsApi(lb_dir / "control.sock", timeout=10.0)


def worker_pids(master_pid: int) -> frozenset[int]:
    """The pids of the master's worker processes (its children)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return frozenset(int(pid) for pid in children)


@dataclass
class HeldBackend:
    """An HTTP backend on 127.0.0.1:`port` answering `name`; GET /NAME/hold waits until `release`
    is set (a request in flight for as long as the test wants); `requests` counts every GET."""

    name: str
    port: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    requests: int = 0


class _Held(Answer):
    protocol_version = "HTTP/1.1"  # keep-alive, as the upstream keepalive pool expects

    def do_GET(self) -> None:
        backend: HeldBackend = self.server.backend  # type: ignore[attr-defined]
        backend.requests += 1
        if self.path.endswith("/hold"):
            backend.arrived.set()
            backend.release.wait(60)
        super().do_GET()


@pytest.fixture
def lua_module() -> None:
    """Skips (a failure in CI) where nginx's Lua module is not installed."""
    missing = [m for m in MODULES if not Path(m).exists()]
    if missing:
        pytest.skip(f"nginx Lua module missing ({missing[0]}): apt-get install libnginx-mod-http-lua")


@pytest.fixture
def held_backend() -> Iterator[Callable[[str], HeldBackend]]:
    servers: list[tuple[ThreadingHTTPServer, HeldBackend]] = []

    def start(name: str) -> HeldBackend:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Held)
        server.daemon_threads = True
        backend = HeldBackend(name, server.server_address[1])
        server.backend, server.name = backend, name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), name=f"backend-{name}", daemon=True).start()
        servers.append((server, backend))
        return backend

    yield start
    for server, backend in servers:
        backend.release.set()
        server.shutdown()
        server.server_close()

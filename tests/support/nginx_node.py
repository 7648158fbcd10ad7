"""An nginx node as lbgen runs it with `runtime` on (issue 12): nginx.conf rendered by the real
templates/nginx.conf.j2 (the Lua balancer's directory from the nginx adapter's render context) for
one http service `web`, and an applier with both the reload control and the runtime API wired in.
Shared by tests/integration/test_nginx_runtime.py and bench/nginx_runtime_bench.py."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from msgspec.structs import replace

from lbgen.adapters.files import LocalFiles
from lbgen.adapters.kinds.nginx import LuaDir, NginxControl, NginxRuntime
from lbgen.adapters.kinds.nginx.runtime import Api
from lbgen.adapters.kinds.nginx.socket_dir import make_directory
from lbgen.adapters.process import SubprocessRunner, SystemClock
from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.core.values import Generation
from lbgen.ports import LbControl
from lbgen.services.applier import Applier

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = (ROOT / "templates" / "nginx.conf.j2").read_text()


def node_vars(lb_dir: Path, workers: int = 2) -> dict[str, object]:
    """The template's and the adapters' node facts, every path under `lb_dir`."""
    return {"pid": str(lb_dir / "nginx.pid"), "error_log": str(lb_dir / "error.log"), "access_log": "off",
            "temp_dir": str(lb_dir), "worker_processes": workers, "worker_shutdown_timeout": "5s"}


def node_target(lb_dir: Path, runtime: bool = True, timeout: float = 10.0, workers: int = 2,
                **fields: Any) -> Target:
    """The nginx target of the node in `lb_dir` (its config is `lb_dir/nginx.conf`); `fields`
    override any other of the target's settings."""
    target = Target(name="nginx", template="templates/nginx.conf.j2", dest=str(lb_dir / "nginx.conf"),
                    kind="nginx", vars=node_vars(lb_dir, workers), timeout=timeout, runtime=runtime)
    return replace(target, **fields)


def web_catalog(port: int, endpoints: Mapping[int, int], spec: Mapping[str, object] | None = None,
                extra: tuple[Service, ...] = ()) -> Catalog:
    """Service `web` on `port`, its endpoints given as 127.0.0.1 backend port → weight (ids follow
    the port); `extra` services beside it."""
    registered = tuple(Endpoint(f"ep{p}", "127.0.0.1", p, weight=w) for p, w in sorted(endpoints.items()))
    return Catalog(1, (Service("web", {"listen": port, **(spec or {})}, registered), *extra))


def node_config(target: Target, catalog: Catalog) -> str:
    """The rendered nginx.conf, as the watcher's renderer makes it (with the adapter's `lua_dir`)."""
    return render(TEMPLATE, catalog, target, kind_context=LuaDir().context(target, catalog))


def first_config(target: Target, catalog: Catalog) -> str:
    """The config nginx starts on, its control socket's private directory made first (what the
    kit's nginx.service drop-in does at boot, and lbgen's apply before any config goes live)."""
    if target.runtime:
        make_directory(target)
    return node_config(target, catalog)


def node_applier(api: Api | None = None) -> Applier:
    """The CLI's wiring; `api` replaces the control-socket client (a test's liar)."""
    clock = SystemClock()

    def control(target: Target) -> LbControl[Generation]:
        return NginxControl(target, clock)

    def runtime(target: Target) -> NginxRuntime | None:
        return NginxRuntime(target, clock, api) if target.runtime else None

    return Applier(LocalFiles(), SubprocessRunner(), control, runtime)


def generation(target: Target) -> Generation:
    observed = NginxControl(target, SystemClock()).observe()
    assert observed is not None, f"no nginx master in {target.vars['pid']}"
    return observed

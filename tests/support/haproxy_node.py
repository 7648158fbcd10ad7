"""A HAProxy node as lbgen runs it: haproxy.cfg rendered by the real templates/haproxy.cfg.j2 for one
http service `web`, and an applier with both the reload control and the runtime API wired in.
Shared by tests/integration/test_haproxy_runtime.py and bench/haproxy_runtime_bench.py."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from lbgen.adapters.files import LocalFiles
from lbgen.adapters.kinds.haproxy.control import HaproxyControl, cli_command, cli_query
from lbgen.adapters.kinds.haproxy.runtime import HaproxyRuntime, Query
from lbgen.adapters.process import SubprocessRunner, SystemClock
from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.render import render
from lbgen.core.kinds.haproxy.runtime_plan import ObservedServer, parse_servers_state
from lbgen.core.settings import Target
from lbgen.core.values import Generation
from lbgen.ports import LbControl
from lbgen.services.applier import Applier

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = (ROOT / "templates" / "haproxy.cfg.j2").read_text()


def node_vars(lb_dir: Path) -> dict[str, object]:
    """The template's and the adapters' node facts, every path under `lb_dir`."""
    return {
        "pid": str(lb_dir / "haproxy.pid"), "stats_socket": str(lb_dir / "stats.sock"),
        "master_socket": str(lb_dir / "master.sock"), "hard_stop_after": "5s",
    }


def node_target(lb_dir: Path, runtime: bool = True, timeout: float = 10.0) -> Target:
    """The haproxy target of the node in `lb_dir` (its config is `lb_dir/haproxy.cfg`)."""
    return Target(name="haproxy", template="templates/haproxy.cfg.j2", dest=str(lb_dir / "haproxy.cfg"),
                  kind="haproxy", vars=node_vars(lb_dir), timeout=timeout, runtime=runtime)


def web_config(lb_dir: Path, port: int, endpoints: Mapping[int, int], unhealthy: Collection[int] = (),
               spec: Mapping[str, object] | None = None) -> str:
    """haproxy.cfg for service `web` on `port`, its endpoints given as 127.0.0.1 backend port → weight
    (endpoint ids follow the port, so an endpoint keeps its id across renders); the ports in
    `unhealthy` are registered with a failing Docker health check; `spec` adds to the service spec."""
    registered = tuple(Endpoint(f"ep{p}", "127.0.0.1", p, weight=w, health="unhealthy" if p in unhealthy else "none")
                       for p, w in endpoints.items())
    service = Service("web", {"listen": port, **(spec or {})}, tuple(sorted(registered, key=lambda e: e.id)))
    return render(TEMPLATE, Catalog(1, (service,)), node_target(lb_dir))


def node_applier(query: Query = cli_query) -> Applier:
    """The CLI's wiring, with an injectable stats-socket reader."""
    clock = SystemClock()

    def control(target: Target) -> LbControl:
        return HaproxyControl(target, clock)

    def runtime(target: Target) -> HaproxyRuntime | None:
        return HaproxyRuntime(target, clock, query) if target.runtime else None

    return Applier(LocalFiles(), SubprocessRunner(), control, runtime)


def generation(lb_dir: Path) -> Generation:
    observed = HaproxyControl(node_target(lb_dir), SystemClock()).observe()
    assert observed is not None, f"no haproxy master at {lb_dir / 'master.sock'}"
    return observed


def stats_command(lb_dir: Path, command: str) -> str:
    return cli_command(lb_dir / "stats.sock", command)


def servers(lb_dir: Path) -> dict[str, ObservedServer]:
    """`show servers state web` of the running worker."""
    return parse_servers_state(stats_command(lb_dir, "show servers state web"))

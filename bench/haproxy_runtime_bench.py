"""Endpoint change → HAProxy serving the new endpoint: Runtime API vs reload (issue 7).

    python bench/haproxy_runtime_bench.py [--changes 60]

A real HAProxy (master-worker) fronts service `web`, rendered by templates/haproxy.cfg.j2; an
nginx instance plays two backends answering `a` and `b`. Each change moves the service's only
endpoint to the other backend, so the first answer from it proves the change is live (a new
connection per request). Timed two ways, each with runtime updates on and with `runtime: false`
(validated reload through the master socket):

- `etcd put`: a real etcd and the Watcher (quiescence off, the CLI's applier wiring); from the
  put of the endpoint's new value to the first answer: watch event, render, `haproxy -c`, swap,
  then runtime commands + read-back, or reload + `show proc`;
- `apply`: a direct `render` + `Applier.apply` call, without the etcd hop.

And, for scale, the bare `set server web/slot1 addr ...` command → served. Writes
bench/results/haproxy_runtime.json: median, spread and p99 over the changes, and how many worker
pids were seen (bench/results.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from msgspec.structs import replace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore  # noqa: E402
from lbgen.adapters.process import SystemClock  # noqa: E402
from lbgen.cli.lb_node import build_applier  # noqa: E402
from lbgen.core.registry_url import parse_registry_url  # noqa: E402
from lbgen.core.schema import endpoint_key, spec_key  # noqa: E402
from lbgen.core.settings import GUARD_OFF, Settings, Wait  # noqa: E402
from lbgen.services.watcher import Watcher  # noqa: E402
from results import Result  # noqa: E402
from tests.support.etcd import EtcdFactory  # noqa: E402
from tests.support.haproxy_node import (  # noqa: E402
    TEMPLATE,
    generation,
    node_applier,
    node_target,
    servers,
    stats_command,
    web_config,
)
from tests.support.lb import get, nginx_conf  # noqa: E402
from tests.support.util import free_port, wait_until  # noqa: E402

PREFIX = "/bench/lbgen"
HOW = {True: "runtime API", False: "reload (runtime: false)"}
PATHS = {True: "runtime commands + read-back, no reload", False: "reload through the master socket + show proc"}
Change = Callable[[int], None]  # moves the endpoint to this backend port


class Node:
    """HAProxy + the two nginx backends in a temp dir."""

    def __init__(self, lb_dir: Path) -> None:
        self.dir, self.port = lb_dir, free_port()
        self.backends = {"a": free_port(), "b": free_port()}
        servers = "".join(f"  server {{ listen 127.0.0.1:{p}; return 200 {n}; }}\n" for n, p in self.backends.items())
        (lb_dir / "nginx.conf").write_text(nginx_conf(lb_dir, 0, servers))
        (lb_dir / "haproxy.cfg").write_text(web_config(lb_dir, self.port, {self.backends["a"]: 1}))
        self.processes = [
            self._start(["nginx", "-p", str(lb_dir), "-c", str(lb_dir / "nginx.conf"), "-g", "daemon off;"], "nginx"),
            self._start(["haproxy", "-W", "-S", f"{lb_dir / 'master.sock'},mode,600", "-f", str(lb_dir / "haproxy.cfg")],
                        "haproxy"),
        ]
        wait_until(lambda: self.answer() == "a", 10.0, "haproxy serving a")

    def _start(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.dir / f"{name}.out", "wb") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def answers(self, name: str) -> bool:
        return self.answer() == name

    def answer(self) -> str:
        try:
            return get(self.port)
        except OSError:
            return ""

    def measure(self, result: Result, label: str, path: str, change: Change, changes: int,
                settle: Callable[[], None] = lambda: None) -> None:
        """Time `changes` alternating moves from `change(port)` to the first answer of the new backend;
        `settle` (untimed) waits until the change is wholly applied before the next one."""
        served: list[float] = []
        workers: set[int] = set()
        for i in range(changes):
            name = "b" if i % 2 == 0 else "a"
            began = time.perf_counter()
            change(self.backends[name])
            wait_until(functools.partial(self.answers, name), 10.0, f"{name} served", interval=0.0005)
            served.append(time.perf_counter() - began)
            settle()
            workers |= generation(self.dir).workers
        result.add(label, path, "ms", [v * 1000 for v in served], note=f"{len(workers)} worker pid(s) seen")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)


def direct(node: Node, runtime: bool) -> Change:
    applier = node_applier()

    def change(port: int) -> None:
        text = web_config(node.dir, node.port, {port: 1})
        [result] = applier.apply([node_target(node.dir, runtime=runtime)], {"haproxy": text})
        if not result.ok or result.method != ("runtime" if runtime else "reload"):
            raise SystemExit(f"apply: {result}")

    return change


def bare_command(node: Node) -> Change:
    """`set server web/<slot> addr` on the slot serving the endpoint now (slots are placed by id)."""
    [slot] = [name for name, server in servers(node.dir).items() if server.port in node.backends.values()]

    def change(port: int) -> None:
        stats_command(node.dir, f"set server web/{slot} addr 127.0.0.1 port {port}")

    return change


def through_etcd(node: Node, store: EtcdStore, url: str, runtime: bool,
                 last: list[int]) -> tuple[Change, Watcher]:
    """A running Watcher for the node; the change puts the endpoint's new port (one key, one event)."""
    target = replace(node_target(node.dir, runtime=runtime), template="haproxy.cfg.j2")
    settings = Settings(registry=parse_registry_url(url), targets=(target,), prefix=PREFIX, wait=Wait(0, 0),
                        guard=GUARD_OFF)
    watcher = Watcher(settings, store, build_applier(), SystemClock(), read_template=lambda path: TEMPLATE)
    threading.Thread(target=watcher.run, name="watcher", daemon=True).start()
    wait_until(lambda: watcher.status.applied_revision, 10.0, "the watcher's first pass")

    def change(port: int) -> None:
        # The key keeps its id, so the endpoint stays in slot1 and only its port changes.
        last[0] = store.put(endpoint_key(PREFIX, "web", "ep"),
                            json.dumps({"address": "127.0.0.1", "port": port}).encode())

    return change, watcher


def applied(watcher: Watcher, last: list[int]) -> None:
    """Until the watcher has applied (and verified) the last put's revision."""
    revision = last[0]
    wait_until(lambda: watcher.status.applied_revision >= revision, 10.0, f"revision {revision} applied")


def run_etcd(result: Result, node: Node, root: Path, changes: int) -> None:
    factory = EtcdFactory(root)
    server = factory()
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", server.client_port),)))
    try:
        store.put(spec_key(PREFIX, "web"), json.dumps({"listen": node.port}).encode())
        for runtime in (True, False):
            last = [0]  # the revision of the last put
            change, watcher = through_etcd(node, store, server.url, runtime, last)
            node.measure(result, f"etcd put → served, {HOW[runtime]}", f"etcd put → Watcher in process (wait 0) → "
                         f"render, haproxy -c, swap → {PATHS[runtime]} → first answer", change, changes,
                         settle=functools.partial(applied, watcher, last))
            watcher.stop()
            if watcher.status.failures:
                raise SystemExit(f"watcher failures: {watcher.status.failures} {watcher.status.last_error}")
    finally:
        store.close()
        factory.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Result("haproxy_runtime", sys.argv) as result:
        node = Node(Path(tmp))
        try:
            run_etcd(result, node, Path(tmp), args.changes)
            for runtime in (True, False):
                node.measure(result, f"apply → served, {HOW[runtime]}", "render (tests/support web_config, the default template) + Applier.apply in process (no etcd): "
                             f"haproxy -c, swap → {PATHS[runtime]} → first answer", direct(node, runtime), args.changes)
            node.measure(result, "bare socket command → served", "`set server web/<slot> addr ...` on the stats "
                         "socket → first answer (no render, no check)", bare_command(node), args.changes)
            result.notes.append("one service, one endpoint moved between two nginx backends; a new connection "
                                "per probe (every 0.5 ms)")
        finally:
            node.stop()


if __name__ == "__main__":
    main()

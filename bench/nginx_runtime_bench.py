"""nginx endpoint changes through the Lua balancer vs reloads (issue 12).

    python bench/nginx_runtime_bench.py [--changes 40] [--load-changes 100] [--big 10000]

A real nginx with the Lua module fronts service `web`, rendered by templates/nginx.conf.j2 with
`runtime` on or off; a second nginx plays two backends answering `a` and `b`. Figures, written to
bench/results/nginx_runtime.json (bench/results.py):

- etcd put → served: a real etcd and the Watcher (quiescence off, the CLI's applier and renderer);
  each change moves the service's one endpoint to the other backend, timed from the put to the
  first answer of the new backend (a new connection per request), runtime vs reload;
- keep-alive load: `wrk -t2 -c50` through nginx while `--load-changes` endpoint changes are
  applied (render + Applier.apply), runtime vs reload: failed requests (socket errors and
  non-2xx answers as wrk counts them) and the worker pids seen;
- 10,000 services: nginx's CPU per endpoint change (master, workers and the `nginx -t` runs the
  applier starts: /proc and getrusage), runtime vs reload, and the wall time of each apply.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from msgspec.structs import replace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import Processes, etcd, workdir  # noqa: E402
from results import Result  # noqa: E402

from lbgen.adapters.bounded_render import BoundedRenderer  # noqa: E402
from lbgen.adapters.process import SystemClock  # noqa: E402
from lbgen.cli.lb_node import build_applier  # noqa: E402
from lbgen.core.model import Catalog, Endpoint, Service  # noqa: E402
from lbgen.core.registry_url import parse_registry_url  # noqa: E402
from lbgen.core.schema import endpoint_key, spec_key  # noqa: E402
from lbgen.core.settings import GUARD_OFF, Settings, Target, Wait  # noqa: E402
from lbgen.services.watcher import Watcher  # noqa: E402
from tests.support.lb import get, nginx_conf  # noqa: E402
from tests.support.nginx_node import (  # noqa: E402
    TEMPLATE, first_config, generation, node_applier, node_config, node_target,
)
from tests.support.util import free_port, wait_until  # noqa: E402

PREFIX = "/bench/nginx"
TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


class Node:
    """The LB nginx (`runtime` on or off, re-rendered per run) and the two backends, in `root`."""

    def __init__(self, root: Path, processes: Processes) -> None:
        self.root, self.port, self.processes = root, free_port(), processes
        self.backends = {"a": free_port(), "b": free_port()}
        backends = root / "backends"
        backends.mkdir()
        servers = "".join(f"  server {{ listen 127.0.0.1:{p}; return 200 {n}; }}\n" for n, p in self.backends.items())
        # 4096 connections: with the test helper's 64, the backend closes idle keep-alive
        # connections the LB is about to reuse, and those failures are the backend's, not nginx's
        text = nginx_conf(backends, 0, servers).replace("worker_connections 64;", "worker_connections 4096;")
        (backends / "nginx.conf").write_text(text)
        processes.spawn("backends", ["nginx", "-p", str(backends), "-c", str(backends / "nginx.conf"),
                                     "-g", "daemon off;"])

    @contextmanager
    def lb(self, name: str, runtime: bool, catalog: Callable[[int], Catalog]) -> Iterator[Target]:
        """nginx for one run in its own dir, serving `catalog(port)`; stopped after it."""
        lb_dir = self.root / name
        lb_dir.mkdir()
        target = node_target(lb_dir, runtime=runtime, timeout=120.0)
        (lb_dir / "nginx.conf").write_text(first_config(target, catalog(self.port)))
        process = self.processes.spawn(name, ["nginx", "-p", str(lb_dir), "-c", str(lb_dir / "nginx.conf"),
                                              "-g", "daemon off;"])
        try:
            wait_until(lambda: (lb_dir / "nginx.pid").exists() and generation(target).workers, 60, f"{name} up")
            yield target
        finally:
            process.send_signal(signal.SIGQUIT)
            process.wait(60)

    def answers(self, name: str) -> bool:
        try:
            return get(self.port) == name
        except OSError:
            return False


def web(port: int, backend: int, extra: tuple[Service, ...] = ()) -> Catalog:
    return Catalog(1, (Service("web", {"listen": port}, (Endpoint("ep", "127.0.0.1", backend),)), *extra))


def many(count: int, port: int) -> tuple[Service, ...]:
    """`count` services beside web on its port, each its host name, two endpoints (never contacted)."""
    return tuple(Service(f"s{i:05d}", {"listen": port, "hosts": [f"s{i}.bench.test"]},
                         tuple(Endpoint(f"e{j}", f"10.0.{i % 250}.{j + 1}", 20000 + j) for j in range(2)))
                 for i in range(count))


# --- etcd put → served ---------------------------------------------------------------------------


def etcd_runs(node: Node, root: Path, changes: int, result: Result) -> None:
    with etcd(root / "etcd") as (server, store):
        store.put(spec_key(PREFIX, "web"), json.dumps({"listen": node.port}).encode())
        store.put(endpoint_key(PREFIX, "web", "ep"), json.dumps({"address": "127.0.0.1",
                                                                 "port": node.backends["a"]}).encode())
        for runtime in (True, False):
            how = "runtime" if runtime else "reload"
            with node.lb(f"etcd-{how}", runtime, lambda port: web(port, node.backends["a"])) as target:
                settings = Settings(registry=parse_registry_url(server.url), prefix=PREFIX, wait=Wait(0, 0),
                                    guard=GUARD_OFF, targets=(replace(target, template="nginx.conf.j2"),))
                watcher = Watcher(settings, store, build_applier(), SystemClock(), read_template=lambda _: TEMPLATE,
                                  renderer=BoundedRenderer())  # as `lbgen watch`: with the kind's context
                thread = threading.Thread(target=watcher.run, name="watcher", daemon=True)
                thread.start()
                try:
                    wait_until(lambda: watcher.status.applied_revision, 30, "the watcher's first pass")
                    served, workers = move(node, target, changes, lambda port: store.put(
                        endpoint_key(PREFIX, "web", "ep"), json.dumps({"address": "127.0.0.1", "port": port}).encode()))
                finally:
                    watcher.stop()
                    thread.join(30)
            result.add(f"etcd put → served, {how}", f"Watcher (wait 0) on a real etcd, runtime {runtime}",
                       "ms", served, note=f"{len(workers)} worker pid(s) seen")


def move(node: Node, target: Target, changes: int, put: Callable[[int], None]) -> tuple[list[float], set[int]]:
    """Alternate the endpoint between the backends; ms from each put to the first new answer."""
    served: list[float] = []
    workers: set[int] = set()
    for i in range(changes):
        name = "b" if i % 2 == 0 else "a"
        began = time.perf_counter()
        put(node.backends[name])
        wait_until(lambda: node.answers(name), 30, f"{name} served", interval=0.0005)
        served.append((time.perf_counter() - began) * 1000)
        workers |= generation(target).workers
        # the next change starts once the old workers are gone: until they stop accepting, one
        # of them may still answer with the config before last, which names the next backend
        wait_until(lambda: len(generation(target).workers) == 2, 30, "old workers to exit")
    return served, workers


# --- keep-alive load ------------------------------------------------------------------------------


def load_runs(node: Node, changes: int, result: Result) -> None:
    for runtime in (True, False):
        how = "runtime" if runtime else "reload"
        with node.lb(f"load-{how}", runtime, lambda port: web(port, node.backends["a"])) as target:
            applier, workers = node_applier(), set(generation(target).workers)
            wrk = subprocess.Popen(["wrk", "-t2", "-c50", "-d600s", f"http://127.0.0.1:{node.port}/"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                time.sleep(1)  # load first: the changes land among requests in flight
                for i in range(changes):
                    backend = node.backends["b" if i % 2 == 0 else "a"]
                    [applied] = applier.apply([target], {"nginx": node_config(target, web(node.port, backend))})
                    assert applied.ok, applied
                    workers |= generation(target).workers
            finally:
                wrk.send_signal(signal.SIGINT)
                output = wrk.communicate(timeout=60)[0]
            failed, requests = wrk_failures(output)
            path = f"wrk -t2 -c50 (keep-alive) during {changes} changes (render + apply), runtime {runtime}"
            result.add(f"keep-alive: failed requests per {changes} changes, {how}", path, "requests", [failed],
                       note=f"of {requests:,} requests")
            result.add(f"keep-alive: nginx worker pids seen across {changes} changes, {how}", path, "pids",
                       [len(workers)])


def wrk_failures(output: str) -> tuple[int, int]:
    """(failed, total) requests of a wrk summary: socket errors plus non-2xx/3xx answers."""
    total = re.search(r"(\d+) requests in", output)
    if total is None:
        raise SystemExit(f"wrk printed no summary: {output[-300:]}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = sum(map(int, errors.groups())) if errors else 0
    return failed + (int(non2xx[1]) if non2xx else 0), int(total[1])


# --- CPU at 10,000 services -----------------------------------------------------------------------


def nginx_cpu_seconds(master: int) -> float:
    """The master's and its workers' CPU so far, with the workers it has reaped (cutime)."""
    def stat(pid: int, children: bool) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
        return used / TICKS

    workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return stat(master, True) + sum(stat(int(pid), False) for pid in workers)


def checker_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_runs(node: Node, services: int, changes: dict[bool, int], result: Result) -> None:
    extra = many(services, node.port)
    for runtime in (True, False):
        how = "runtime" if runtime else "reload"
        with node.lb(f"cpu-{how}", runtime, lambda port: web(port, node.backends["a"], extra)) as target:
            applier, cpu, wall = node_applier(), [], []
            texts = [node_config(target, web(node.port, node.backends["b" if i % 2 == 0 else "a"], extra))
                     for i in range(2)]
            for i in range(changes[runtime]):
                master = generation(target).master
                before, checks, began = nginx_cpu_seconds(master), checker_cpu_seconds(), time.perf_counter()
                [applied] = applier.apply([target], {"nginx": texts[i % 2]})
                assert applied.ok and applied.method == how, applied
                wait_until(lambda: node.answers("b" if i % 2 == 0 else "a"), 60, "the change served")
                wall.append((time.perf_counter() - began) * 1000)
                time.sleep(0.5)  # let old workers exit, so their CPU is counted (the master reaps them)
                cpu.append((nginx_cpu_seconds(master) - before + checker_cpu_seconds() - checks) * 1000)
            path = f"{services:,} services + web, render done beforehand; Applier.apply, runtime {runtime}"
            result.add(f"{services:,} services: nginx CPU per endpoint change, {how}", path, "ms", cpu,
                       note="master + workers + the nginx -t the applier runs")
            result.add(f"{services:,} services: apply → served, {how}", path, "ms", wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=40, help="etcd put → served changes per path")
    parser.add_argument("--load-changes", type=int, default=100, help="changes under keep-alive load")
    parser.add_argument("--big", type=int, default=10_000, help="services in the CPU run")
    args = parser.parse_args()
    with workdir() as root, Processes(root) as processes, Result("nginx_runtime", argv=sys.argv) as result:
        node = Node(root, processes)
        etcd_runs(node, root, args.changes, result)
        load_runs(node, args.load_changes, result)
        cpu_runs(node, args.big, {True: 10, False: 4}, result)
        result.notes.append("The LB nginx runs 2 workers; backends are a second nginx on 127.0.0.1 (`return 200`)")


if __name__ == "__main__":
    main()

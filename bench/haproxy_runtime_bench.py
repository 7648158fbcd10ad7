"""Endpoint change → HAProxy serving the new endpoint: Runtime API vs reload (issue 7).

    python bench/haproxy_runtime_bench.py [--changes 60]

A real HAProxy (master-worker) fronts service `web`, rendered by templates/haproxy.cfg.j2; an
nginx instance plays two backends answering `a` and `b`. Each change swaps the service's only
endpoint between them, so the first answer from the other one proves the change is live. Timed
per change, from the start of a direct `render` + `Applier.apply` call (the watcher's work after
quiescence; the etcd put → watch event hop is not included) to the first request answered by the
new endpoint, with a new connection per request. Run once with runtime updates (address change
over the stats socket, `haproxy -c` and the file swap included) and once with `runtime: false`
(validated reload through the master socket). For scale, the bare stats-socket command alone
(`set server web/slot1 addr ...` → served). Prints p50 / p99 / max and the worker pids seen.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.haproxy_node import generation, node_applier, node_target, stats_command, web_config  # noqa: E402
from tests.support.lb import get, nginx_conf  # noqa: E402
from tests.support.util import free_port, wait_until  # noqa: E402


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def answer(port: int) -> str:
    try:
        return get(port)
    except OSError:
        return ""


def one_change(lb_dir: Path, port: int, backend: int, name: str, runtime: bool) -> tuple[float, float, str]:
    """Apply the change; seconds until applied, seconds until served, how it was applied."""
    applier = node_applier()
    began = time.perf_counter()
    [result] = applier.apply([node_target(lb_dir, runtime=runtime)], {"haproxy": web_config(lb_dir, port, {backend: 1})})
    applied = time.perf_counter()
    if not result.ok:
        raise SystemExit(f"apply failed: {result.error}")
    wait_until(lambda: answer(port) == name, 10.0, f"{name} served", interval=0.0005)
    return applied - began, time.perf_counter() - began, result.method


def bare_command(lb_dir: Path, port: int, backends: dict[str, int], changes: int) -> None:
    """The stats-socket command alone: no render, no check, no file, no read-back."""
    served = []
    for i in range(changes):
        name = "b" if i % 2 == 0 else "a"
        began = time.perf_counter()
        stats_command(lb_dir, f"set server web/slot1 addr 127.0.0.1 port {backends[name]}")
        wait_until(lambda: answer(port) == name, 10.0, f"{name} served", interval=0.0005)
        served.append(time.perf_counter() - began)
    report("bare command", [("served", served)], changes, "socket")


def report(label: str, series: list[tuple[str, list[float]]], changes: int, methods: str) -> None:
    for what, values in series:
        q = statistics.quantiles(values, n=100, method="inclusive")
        print(f"{label:12} {what:8} p50 {q[49] * 1000:7.2f} ms  p99 {q[98] * 1000:7.2f} ms  "
              f"max {max(values) * 1000:7.2f} ms  ({changes} changes, {methods})")


def run(lb_dir: Path, port: int, backends: dict[str, int], changes: int, runtime: bool) -> None:
    applied, served, methods, workers = [], [], set(), set()
    for i in range(changes):
        name = "b" if i % 2 == 0 else "a"
        took_apply, took_served, method = one_change(lb_dir, port, backends[name], name, runtime)
        applied.append(took_apply)
        served.append(took_served)
        methods.add(method)
        workers |= generation(lb_dir).workers
    label = "runtime API" if runtime else "reload"
    report(label, [("applied", applied), ("served", served)], changes, f"method {'/'.join(sorted(methods))}")
    print(f"{label:12} worker pids seen: {len(workers)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lb_dir, port = Path(tmp), free_port()
        backends = {"a": free_port(), "b": free_port()}
        servers = "".join(f"  server {{ listen 127.0.0.1:{p}; return 200 {n}; }}\n" for n, p in backends.items())
        (lb_dir / "nginx.conf").write_text(nginx_conf(lb_dir, 0, servers))
        (lb_dir / "haproxy.cfg").write_text(web_config(lb_dir, port, {backends["a"]: 1}))
        processes = [
            start(["nginx", "-p", str(lb_dir), "-c", str(lb_dir / "nginx.conf"), "-g", "daemon off;"], lb_dir / "nginx.out"),
            start(["haproxy", "-W", "-S", f"{lb_dir / 'master.sock'},mode,600", "-f", str(lb_dir / "haproxy.cfg")],
                  lb_dir / "haproxy.out"),
        ]
        try:
            wait_until(lambda: answer(port) == "a", 10.0, "haproxy serving a")
            for runtime in (True, False):
                run(lb_dir, port, backends, args.changes, runtime)
            bare_command(lb_dir, port, backends, args.changes)
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()

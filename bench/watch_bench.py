"""`lbgen watch` latency, burst coalescing and memory, against a private etcd (the confd comparison).

    python bench/watch_bench.py [--only reload100,reload10k,served,burst] [--changes 100]

- reload100 / reload10k: quiescence off (`wait: 0`), a generic target rendering the default nginx
  template with confd's kind of commands (check `/bin/true {staged}`, reload a tiny command:
  `busybox nc` to a socket of this bench, which timestamps it). Per change (one endpoint's weight):
  put → file written (new inode seen) and put → reload command started. 100 keys, then 10,000
  endpoint keys (500 services x 20), with the watcher's RSS at the end.
- served: the real path: nginx and HAProxy targets (`nginx -t` + reload, `haproxy -c` + the runtime
  API), `wait: 0`, ~100 keys; per change the one endpoint of the default service moves to a backend
  never used before: put → first answer from it through nginx, and through HAProxy.
- burst: 1,000 puts from 4 threads, then the final put, with the default `wait: 100ms:1s` and
  with `wait: 0`: reloads per LB and time from the first put until both LBs serve the final state.
lbgen's modules are compiled to bytecode first, as pip install does (bench/common.py precompile).
Each section starts its own etcd, LBs and `python -m lbgen watch`; loopback only. Each writes
bench/results/watch_<section>.json (median, spread and p99 of its changes; bench/results.py).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    ROOT,
    Processes,
    Tap,
    bulk_put,
    endpoint,
    etcd,
    forks,
    free_port,
    get,
    haproxy_vars,
    nginx_vars,
    precompile,
    registry,
    pss_mb,
    rss_mb,
    spec,
    wait_until,
    workdir,
    write_settings,
)
from results import Result

PREFIX = "/bench"
PRECOMPILED = "lbgen's modules compiled to bytecode before the run, as pip install does"


def settings(root: Path, url: str, wait: str, targets: list[dict[str, object]]) -> Path:
    return write_settings(root / "lbgen.yaml", {"registry": url, "prefix": PREFIX, "wait": wait, "targets": targets})


def generic_target(root: Path, tap: Tap) -> dict[str, object]:
    return {"name": "conf", "kind": "generic", "template": str(ROOT / "templates/nginx.conf.j2"),
            "dest": str(root / "out.conf"), "check": ["/bin/true", "{staged}"], "reload": tap.argv,
            "timeout": "10s", "vars": nginx_vars(root)}


def lb_targets(root: Path) -> list[dict[str, object]]:
    return [
        {"name": "nginx", "template": str(ROOT / "templates/nginx.conf.j2"), "dest": str(root / "nginx.conf"),
         "check": ["nginx", "-t", "-q", "-c", "{staged}"], "timeout": "30s", "vars": nginx_vars(root)},
        {"name": "haproxy", "template": str(ROOT / "templates/haproxy.cfg.j2"), "dest": str(root / "haproxy.cfg"),
         "check": ["haproxy", "-c", "-q", "-f", "{staged}"], "timeout": "30s", "vars": haproxy_vars(root)},
    ]


def wait_written_and_reloaded(dest: Path, inode: int, tap: Tap, timeout: float = 30.0) -> tuple[float, float]:
    """Monotonic times at which `dest` got a new inode and the reload command connected to `tap`."""
    written = reloaded = 0.0
    deadline = time.monotonic() + timeout
    while not (written and reloaded):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new {dest} or no reload command within {timeout} s")
        if not reloaded and select.select([tap.sock], [], [], 0.0005)[0]:
            reloaded = tap.wait()
        if not written and os.stat(dest).st_ino != inode:
            written = time.monotonic()
    return written, reloaded


def bench_reload(services: int, per_service: int, changes: int) -> None:
    """put → file written and put → reload command, quiescence off, generic target."""
    with workdir() as root, etcd(root / "etcd") as (server, store), Processes(root) as procs:
        bulk_put(store, registry(PREFIX, services, per_service, free_port()))
        tap = Tap()
        watcher = procs.watch(settings(root, server.url, "0", [generic_target(root, tap)]))
        tap.wait(120)  # the first render at start-up
        dest = root / "out.conf"
        to_file: list[float] = []
        to_reload: list[float] = []
        weights: dict[str, int] = {}
        for i in range(changes):
            key = f"{PREFIX}/services/s{i * 7 % services:05d}/endpoints/e{i % per_service:03d}"
            weights[key] = 3 - weights.get(key, 1)
            inode = os.stat(dest).st_ino
            start = time.monotonic()
            store.put(key, endpoint(20000 + i % per_service, weights[key], f"10.0.{i * 7 % services % 250}.{i % per_service + 1}"))
            written, reloaded = wait_written_and_reloaded(dest, inode, tap)
            to_file.append(written - start)
            to_reload.append(reloaded - start)
        rss, peak = rss_mb(watcher.pid)
        workers = forks(watcher.pid)
        worker_rss, pss = sum(rss_mb(child)[0] for child in workers), pss_mb(watcher.pid)
        worker_pss = sum(pss_mb(child) for child in workers)
        keys = services * (per_service + 1)
        path = (f"lbgen watch, {keys:,} keys ({services} services x {per_service} endpoints), wait 0, generic "
                "target: check /bin/true, reload a tiny command (no LB)")
        with Result(f"watch_reload{'100' if keys <= 100 else '10k'}", sys.argv) as result:
            result.add("put → file written", path, "ms", [v * 1000 for v in to_file])
            result.add("put → reload command", path, "ms", [v * 1000 for v in to_reload])
            result.add("watcher RSS", path, "MB", [rss], note=f"peak {peak:.0f} MB, PSS {pss:.0f} MB")
            result.add("render worker RSS", path, "MB", [worker_rss],
                       note=f"PSS {worker_pss:.0f} MB: it shares pages with the watcher (fork)")
            result.add("config size", path, "kB", [os.path.getsize(dest) / 1e3])
            result.notes.append(PRECOMPILED)
        tap.close()


def lb_registry(procs: Processes, names: list[str]) -> tuple[dict[str, int], int, list[tuple[str, bytes]]]:
    """A backend per name (answering its name), the LB listen port, and ~100 keys: 9 services by host
    name and `web`, the default server, with one endpoint on the first backend."""
    ports = procs.backends(names)
    listen = free_port()
    items = registry(PREFIX, 9, 10, listen)
    items += [(f"{PREFIX}/services/web/spec", spec(listen)),
              (f"{PREFIX}/services/web/endpoints/e1", endpoint(ports[names[0]]))]
    return ports, listen, items


def start_node(procs: Processes, root: Path, url: str, wait: str, listen: int, first: str = "A") -> None:
    """`lbgen watch`, then nginx and HAProxy on the configs it wrote; returns once both serve `first`."""
    procs.watch(settings(root, url, wait, lb_targets(root)))
    wait_until(lambda: (root / "nginx.conf").exists() and (root / "haproxy.cfg").exists(), 60, "first configs")
    procs.spawn("nginx", ["nginx", "-c", str(root / "nginx.conf"), "-g", "daemon off;"])
    procs.spawn("haproxy", ["haproxy", "-W", "-S", f"{root}/master.sock,mode,600", "-f", str(root / "haproxy.cfg")])
    serving(listen, first)


def applied(procs: Processes, lb: str) -> int:
    """The last registry revision the watcher logged as applied to `lb` (0: none yet)."""
    found = re.findall(rf"{lb}: applied revision (\d+)", procs.log("watch"))
    return int(found[-1]) if found else 0


def serving(listen: int, body: str, timeout: float = 30.0) -> tuple[float, float]:
    """Monotonic times of the first answer `body` from nginx (127.0.0.1) and HAProxy (127.0.0.2)."""
    seen = {"127.0.0.1": 0.0, "127.0.0.2": 0.0}
    deadline = time.monotonic() + timeout
    while not all(seen.values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"LBs did not serve {body!r} within {timeout} s: {seen}")
        for address, at in seen.items():
            if not at and get(address, listen, 0.5) == body:
                seen[address] = time.monotonic()
    return seen["127.0.0.1"], seen["127.0.0.2"]


def bench_served(changes: int) -> None:
    """put → first answer from the new backend, through nginx and HAProxy. Every change moves the
    endpoint to a backend never used before, so an LB still running an older config (an nginx worker
    of the previous generation, a lane behind) cannot give the awaited answer; the next put waits
    until the watcher logged both targets applied, so no change queues behind the previous one."""
    names = [f"v{i}" for i in range(changes + 1)]
    with workdir() as root, etcd(root / "etcd") as (server, store), Processes(root) as procs:
        ports, listen, items = lb_registry(procs, names)
        bulk_put(store, items)
        start_node(procs, root, server.url, "0", listen, first=names[0])
        mark = len(procs.log("watch"))
        to_nginx, to_haproxy = [], []
        for body in names[1:]:
            start = time.monotonic()
            revision = store.put(f"{PREFIX}/services/web/endpoints/e1", endpoint(ports[body]))
            nginx_at, haproxy_at = serving(listen, body)
            to_nginx.append(nginx_at - start)
            to_haproxy.append(haproxy_at - start)
            wait_until(lambda: min(applied(procs, "nginx"), applied(procs, "haproxy")) >= revision, 30,
                       f"both targets applied revision {revision}")
        log = procs.log("watch")[mark:]
        path = f"lbgen watch, {len(items)} keys, wait 0, one endpoint moved to a new backend per change"
        with Result("watch_served", sys.argv) as result:
            result.add("put → served by nginx", f"{path}: nginx -t, then reload (SIGHUP)", "ms",
                       [v * 1000 for v in to_nginx])
            result.add("put → served by HAProxy", f"{path}: haproxy -c, then the runtime API (server address "
                       "set, no reload)", "ms", [v * 1000 for v in to_haproxy])
            result.add("nginx reloads", path, "reloads", [log.count("nginx: reloaded")])
            result.add("HAProxy passes through the runtime API", path, "passes",
                       [log.count("runtime command(s) applied and verified, no reload")])
            result.add("HAProxy reloads", path, "reloads", [log.count("haproxy: reloaded")])
            result.notes.append(PRECOMPILED)
            result.notes.append("nginx and HAProxy are separate targets of one watcher, each applied on its own; "
                                "a new backend per change, first answer on a new connection (urllib), polled on "
                                "both LBs in turn")


def bench_burst(result: Result, wait: str, puts: int = 1000) -> None:
    with workdir() as root, etcd(root / "etcd") as (server, store), Processes(root) as procs:
        ports, listen, items = lb_registry(procs, ["A", "B"])
        bulk_put(store, items)
        start_node(procs, root, server.url, wait, listen)
        mark = len(procs.log("watch"))
        dead = [free_port() for _ in range(10)]
        key = f"{PREFIX}/services/web/endpoints/e1"
        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: store.put(key, endpoint(dead[i % 10], 1 + i % 5)), range(puts - 1)))
        revision = store.put(key, endpoint(ports["B"]))
        burst = time.monotonic() - start
        nginx_at, haproxy_at = serving(listen, "B", timeout=120)
        for lb in ("nginx", "haproxy"):
            procs.wait_log("watch", f"{lb}: applied revision {revision}", timeout=120)
        log = procs.log("watch")[mark:]
        path = f"{puts:,} puts from 4 threads then the final one, lbgen watch with wait {wait}, real nginx and HAProxy"
        result.add(f"wait {wait}: burst of puts", path, "s", [burst])
        for lb, at in (("nginx", nginx_at), ("haproxy", haproxy_at)):
            result.add(f"wait {wait}: {lb} reloads", path, "reloads", [log.count(f"{lb}: reloaded")])
            result.add(f"wait {wait}: first put → final state served by {lb}", path, "s", [at - start])
        result.add(f"wait {wait}: passes applied through HAProxy's runtime API (no reload)", path, "passes",
                   [log.count("runtime command(s) applied and verified, no reload")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="reload100,reload10k,served,burst")
    parser.add_argument("--changes", type=int, default=100, help="changes per latency section (default 100)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    precompile()
    if "reload100" in sections:
        bench_reload(10, 9, args.changes)
    if "reload10k" in sections:
        bench_reload(500, 20, args.changes)
    if "served" in sections:
        bench_served(args.changes)
    if "burst" in sections:
        with Result("watch_burst", sys.argv) as result:
            bench_burst(result, "100ms:1s")
            bench_burst(result, "0")


if __name__ == "__main__":
    main()

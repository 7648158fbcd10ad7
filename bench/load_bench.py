"""Failed requests under load while `lbgen watch` applies registry changes (issue 6).

    /tmp/v/bin/python bench/load_bench.py [--duration 20] [--changes 100] [--threads 2] [--connections 50]

Starts etcd, --backends nginx instances answering `return 200` (so the backends are never the
bottleneck), one `lbgen watch` per LB (nginx, HAProxy; each on its own registry prefix, so a
change reloads only the LB under load) and nginx / HAProxy on what they rendered. The service
starts with every backend registered. Four runs, each a bounded `wrk -t2 -c50 -d20s` against
127.0.0.1 while --changes registry changes are applied, spread evenly over the run (a cycle of:
weight change, endpoint removed, endpoint added back; never fewer than all-but-one backends):

  nginx   new connection per request (Connection: close)   goal 0 failed
  haproxy new connection per request (Connection: close)   goal 0 failed
  haproxy keep-alive                                        goal 0 failed
  nginx   keep-alive                                        reported as it is (nginx 1.22 closes
                                                            reused connections on reload)

First, the same wrk for 5 s against one backend alone (new connection per request, then
keep-alive): the LB spreads over all backends, so this rate must be above the LB's.
Failed = wrk's non-2xx responses + socket errors (connect, read, write, timeout). Also recorded:
requests/s, and the reloads the watcher did during the run (`lbgen_watcher_reloads_total`).
HAProxy applies most of these changes through its runtime API (no reload): its runtime updates are
counted beside its reloads. Writes bench/results/load.json (bench/results.py). Without wrk it says
how to install it and exits 2. Everything is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import Result  # noqa: E402
from stack import DEFAULT_WAIT, Lb, Stack, Watcher, machine, new_prefix  # noqa: E402

from lbgen.adapters.etcd_store import EtcdStore  # noqa: E402
from lbgen.core.model import Endpoint  # noqa: E402
from lbgen.core.schema import encode_endpoint, encode_spec, endpoint_key, spec_key  # noqa: E402
from tests.support.util import free_port  # noqa: E402

RUNS = (("nginx", False), ("haproxy", False), ("haproxy", True), ("nginx", True))
MODES = {False: "new connection per request", True: "keep-alive"}
APPLY = {"nginx": "nginx -t + reload (SIGHUP)",
         "haproxy": "haproxy -c + the runtime API where the change allows it, else a reload"}
SERVICE = "load"
BASELINE_SECONDS = 5


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rate: float
    non_2xx: int
    socket_errors: tuple[int, int, int, int]  # connect, read, write, timeout

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.socket_errors)


def parse_wrk(output: str) -> WrkResult:
    """The figures of wrk's summary; a missing `Non-2xx` or `Socket errors` line means none."""
    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if requests is None or rate is None:
        raise RuntimeError(f"unexpected wrk output: {output[-500:]}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(int(requests.group(1)), float(rate.group(1)), int(non_2xx.group(1)) if non_2xx else 0,
                     tuple(map(int, errors.groups())) if errors else (0, 0, 0, 0))  # type: ignore[arg-type]


class Registry:
    """The bench's writes: the service's endpoints, one per backend, under one LB's prefix."""

    def __init__(self, store: EtcdStore, prefix: str, backends: list[int]) -> None:
        self.store, self.prefix, self.backends = store, prefix, backends

    def put(self, n: int, weight: int = 1) -> int:
        endpoint = Endpoint(id=f"bench.load.{n}", address="127.0.0.1", port=self.backends[n], weight=weight,
                            node="bench")
        return self.store.put(endpoint_key(self.prefix, SERVICE, endpoint.id), encode_endpoint(endpoint))

    def change(self, i: int) -> int:
        """Change `i` of the cycle: re-weight a backend, remove one, add it back. Returns the revision."""
        n = i // 3 % len(self.backends)
        step = i % 3
        if step == 0:
            return self.put(n, weight=1 + i % 5)
        if step == 1:
            self.store.delete(endpoint_key(self.prefix, SERVICE, f"bench.load.{n}"))
            return self.store.snapshot(self.prefix).revision  # delete() does not return one
        return self.put(n)


def apply_changes(registry: Registry, count: int, start_after: float, spread: float,
                  revisions: list[int], stop: threading.Event) -> None:
    """`count` changes evenly over `spread` seconds, starting `start_after` seconds from now."""
    began = time.monotonic() + start_after
    for i in range(count):
        if stop.wait(max(0.0, began + i * spread / count - time.monotonic())):
            return
        revisions.append(registry.change(i))


def wrk_argv(port: int, keepalive: bool, seconds: int, args: argparse.Namespace) -> list[str]:
    return ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s",
            *([] if keepalive else ["-H", "Connection: close"]), f"http://127.0.0.1:{port}/"]


def wrk(argv: list[str], seconds: int) -> WrkResult:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def baseline(result: Result, port: int, args: argparse.Namespace) -> None:
    """One backend alone, with the same wrk: the LB spreads over all of them, so it must beat the LB."""
    for keepalive in (False, True):
        rate = wrk(wrk_argv(port, keepalive, BASELINE_SECONDS, args), BASELINE_SECONDS).rate
        result.add(f"one backend alone, {MODES[keepalive]}", f"wrk -t{args.threads} -c{args.connections} "
                   f"-d{BASELINE_SECONDS}s straight to one nginx `return 200` backend, no LB", "req/s", [rate])


def run_one(result: Result, watcher: Watcher, lb: Lb, registry: Registry, keepalive: bool,
            args: argparse.Namespace) -> None:
    reloads, runtime = watcher.reloads(), watcher.runtime_updates()
    revisions: list[int] = []
    stop = threading.Event()
    changer = threading.Thread(target=apply_changes, name="changes", daemon=True,
                               args=(registry, args.changes, 1.0, args.duration - 3.0, revisions, stop))
    changer.start()
    try:
        done = wrk(wrk_argv(lb.port, keepalive, args.duration, args), args.duration)
    finally:
        stop.set()
        changer.join(timeout=30)
    if revisions:
        watcher.wait_applied(max(revisions))
    reloads, runtime = watcher.reloads() - reloads, watcher.runtime_updates() - runtime
    label = f"{lb.kind}, {MODES[keepalive]}"
    path = (f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s through {lb.kind} while lbgen watch "
            f"(wait {watcher.wait}) applies {len(revisions)} changes: {APPLY[lb.kind]}")
    per_reload = f", ~{done.failed / reloads:.0f} per reload" if done.failed and reloads else ""
    errors = "/".join(map(str, done.socket_errors))
    result.add(f"{label}: failed requests", path, "requests", [done.failed],
               note=f"of {done.requests:,}: {done.non_2xx} non-2xx, socket errors connect/read/write/timeout "
               f"{errors}{per_reload}")
    result.add(f"{label}: rate", path, "req/s", [done.rate])
    result.add(f"{label}: reloads", path, "reloads", [reloads])
    if lb.kind == "haproxy":
        result.add(f"{label}: runtime API updates (no reload)", path, "updates", [runtime])


def run(args: argparse.Namespace, result: Result) -> None:
    with Stack(keep_logs=args.keep_logs) as stack:
        stack.etcd()
        store = stack.store()
        backends = stack.backends(args.backends)
        lbs = {}
        for kind in ("nginx", "haproxy"):
            prefix, listen = new_prefix(kind), free_port()
            store.put(spec_key(prefix, SERVICE), encode_spec({"listen": listen}))
            registry = Registry(store, prefix, backends)
            for n in range(len(backends)):
                registry.put(n)
            watcher = stack.watcher(kind, prefix, args.wait)
            lbs[kind] = (watcher, stack.lb(watcher, listen), registry)
        result.notes.append(f"machine: {machine()}; {args.backends} nginx backends; wrk, the LBs, the backends, "
                            "the watchers and etcd all share the CPUs")
        baseline(result, backends[0], args)
        for kind, keepalive in RUNS:
            run_one(result, *lbs[kind], keepalive, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of each wrk run (default 20)")
    parser.add_argument("--changes", type=int, default=100, help="registry changes per run (default 100)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--backends", type=int, default=4, help="nginx `return 200` backends (default 4)")
    parser.add_argument("--wait", default=DEFAULT_WAIT, help="the watchers' quiescence min:max")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("load_bench: wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        sys.exit(2)
    if args.duration < 5:
        parser.error("--duration: at least 5 seconds (changes start after 1 s and end 2 s before the end)")
    try:
        with Result("load", sys.argv) as result:
            run(args, result)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

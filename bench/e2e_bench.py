"""End to end: how long a change takes to be served, through real processes (issue 6).

    sudo /tmp/v/bin/python bench/e2e_bench.py [--containers 30] [--puts 50] [--burst 1000] [--wait 100ms:1s]

Starts etcd, a private dockerd (no bridge, no iptables) with the busybox backend image, two nginx
`return 200` backends, one `lbgen watch` per LB (nginx, HAProxy; each reads its own prefix, so a
change reloads only the LB under measurement), nginx and HAProxy on what they rendered, and one
`lbgen agent` on the dockerd. Then measures, on a new connection per probe (every 1 ms):

1. `docker run` of a labelled container → its first answer through nginx (p50/p99). Each
   container is its own service (spec put and applied beforehand, reached by its host name),
   so the probe sees exactly that replica. No Docker HEALTHCHECK unless --healthcheck (the
   image's check runs every second: served only once healthy).
2. etcd put (one endpoint moved to the other backend) → the first answer from the new backend,
   through nginx and through HAProxy (p50/p99); the next put waits until the watcher reports
   the previous one applied.
3. A burst of --burst puts (100 endpoints added, then re-weighted) → reloads per LB (the watcher's
   `lbgen_watcher_reloads_total`) and the time from the first put until the watcher reports the
   last put's revision live (`lbgen_watcher_applied_revision`).

Writes bench/results/e2e.json (e2e_healthcheck.json with --healthcheck): median, spread and p99 of
each figure, the path it measured (bench/results.py). Everything is stopped on exit, Ctrl-C
included. Needs root (dockerd).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import Result  # noqa: E402
from stack import DEFAULT_WAIT, Lb, Stack, Watcher, http_get, machine, new_prefix  # noqa: E402

from lbgen.adapters.etcd_store import EtcdStore  # noqa: E402
from lbgen.core.model import Endpoint  # noqa: E402
from lbgen.core.schema import encode_endpoint, encode_spec, endpoint_key, spec_key  # noqa: E402
from tests.support.dockerd import Dockerd  # noqa: E402
from tests.support.util import free_port, wait_until  # noqa: E402

PROBE = 0.001  # seconds between probes through the LB
NO_HEALTHCHECK = {"Test": ["NONE"]}
APPLY = {"nginx": "nginx -t + reload (SIGHUP, until the master runs new workers)",
         "haproxy": "haproxy -c + the runtime API where the change allows it, else a reload"}


def put_endpoint(store: EtcdStore, prefix: str, service: str, id: str, port: int, weight: int = 1) -> int:
    endpoint = Endpoint(id=id, address="127.0.0.1", port=port, weight=weight, node="bench")
    return store.put(endpoint_key(prefix, service, id), encode_endpoint(endpoint))


def put_spec(store: EtcdStore, prefix: str, service: str, **spec: object) -> int:
    return store.put(spec_key(prefix, service), encode_spec(spec))


def until_answer(port: int, host: str, start: str, what: str) -> float:
    """Probe until an answer's body starts with `start`; returns the perf_counter time it came."""
    wait_until(lambda: http_get(port, host)[1].startswith(start), 60, what, interval=PROBE)
    return time.perf_counter()


def bench_docker(result: Result, daemon: Dockerd, watcher: Watcher, store: EtcdStore, count: int,
                 healthcheck: bool) -> None:
    """docker run → served through nginx, one service (own host name) per container."""
    listen = free_port()
    total, after_run = [], []
    with closing(daemon.client()) as client:
        for i in range(count):
            name = f"bench-e2e-{i}"
            host = f"{name}.bench"
            watcher.wait_applied(put_spec(store, watcher.prefix, name, listen=listen, hosts=[host]))
            port = free_port()
            start = time.perf_counter()
            client.containers.run(
                daemon.image, name=name, detach=True, network_mode="host",
                environment={"PORT": str(port), "REPLICA": name},
                labels={"lbgen.service": name, "lbgen.port": str(port)},
                healthcheck=None if healthcheck else NO_HEALTHCHECK)
            ran = time.perf_counter()
            served = until_answer(listen, host, f"replica={name} ", f"{name} served through nginx")
            total.append(served - start)
            after_run.append(served - ran)
    check = "with the image's HEALTHCHECK (served once healthy)" if healthcheck else "no HEALTHCHECK"
    path = (f"docker run (private dockerd, {check}) → lbgen agent → etcd → lbgen watch (nginx target, "
            f"wait {watcher.wait}) → nginx -t + reload → first answer through nginx")
    result.add("docker run → served by nginx", path, "ms", [v * 1000 for v in total])
    result.add("docker run returned → served by nginx", path, "ms", [v * 1000 for v in after_run])


def bench_puts(result: Result, watcher: Watcher, lb: Lb, store: EtcdStore, backends: list[int],
               count: int) -> None:
    """etcd put (the one endpoint moves to the other backend) → first answer from that backend. The
    next put waits until the watcher reports this one applied (the LB's reload or runtime update
    verified), so no older config still runs when the next change is timed."""
    samples, (lag_before, applies_before) = [], watcher.lag()
    reloads, runtime = watcher.reloads(), watcher.runtime_updates()
    for i in range(1, count + 1):
        n = i % len(backends)
        start = time.perf_counter()
        revision = put_endpoint(store, watcher.prefix, "put", "bench.put.1", backends[n])
        served = until_answer(lb.port, "bench", f"b{n}\n", f"b{n} through {lb.kind}")
        samples.append(served - start)
        watcher.wait_applied(revision)
    lag, applies = watcher.lag()
    reloads, runtime = watcher.reloads() - reloads, watcher.runtime_updates() - runtime
    how = f"{reloads} reloads, {runtime} runtime API updates over {count} changes"
    path = f"etcd put → lbgen watch ({lb.kind} target, wait {watcher.wait}) → {APPLY[lb.kind]} → first answer"
    result.add(f"etcd put → served by {lb.kind}", path, "ms", [v * 1000 for v in samples], note=how)
    result.add(f"{lb.kind}: the watcher's own mean apply lag", "lbgen_watcher_apply_lag_seconds (change seen → "
               "applied and verified), mean over the puts", "ms",
               [(lag - lag_before) / max(applies - applies_before, 1) * 1000])


def bench_burst(result: Result, watcher: Watcher, store: EtcdStore, backends: list[int], changes: int) -> None:
    """`changes` puts as fast as one client writes them: 100 endpoints added, then re-weighted."""
    reloads, runtime = watcher.reloads(), watcher.runtime_updates()
    start = time.perf_counter()
    for i in range(changes):
        revision = put_endpoint(store, watcher.prefix, "burst", f"bench.burst.{i % 100}",
                                backends[i % len(backends)], weight=1 + i // 100 % 256)
    written = time.perf_counter()
    watcher.wait_applied(revision, timeout=120)
    done = time.perf_counter()
    path = (f"{changes:,} puts from one client (100 endpoints added, then re-weighted) → lbgen watch "
            f"({watcher.kind} target, wait {watcher.wait})")
    kind = watcher.kind
    result.add(f"{kind} burst: puts took", path, "s", [written - start])
    result.add(f"{kind} burst: reloads", path, "reloads", [watcher.reloads() - reloads])
    if kind == "haproxy":
        result.add(f"{kind} burst: runtime API updates", path, "updates", [watcher.runtime_updates() - runtime])
    result.add(f"{kind} burst: first put → final state live", path + ", until the watcher reports the last "
               "revision applied", "s", [done - start])
    result.add(f"{kind} burst: last put → final state live", path, "s", [done - written])


def run(args: argparse.Namespace, result: Result) -> None:
    with Stack(keep_logs=args.keep_logs) as stack:
        stack.etcd()
        store = stack.store()
        daemon = stack.dockerd() if args.containers else None
        backends = stack.backends(2)
        lbs = {}
        for kind in ("nginx", "haproxy"):
            prefix, listen = new_prefix(kind), free_port()
            put_spec(store, prefix, "put", listen=listen)
            put_endpoint(store, prefix, "put", "bench.put.1", backends[0])
            put_spec(store, prefix, "burst", listen=free_port())
            watcher = stack.watcher(kind, prefix, args.wait)
            lbs[kind] = (watcher, stack.lb(watcher, listen))
        result.notes.append(f"machine: {machine()}")
        if daemon is not None:
            stack.agent(daemon, lbs["nginx"][0].prefix)
            bench_docker(result, daemon, lbs["nginx"][0], store, args.containers, args.healthcheck)
        for watcher, lb in lbs.values():
            if args.puts:
                bench_puts(result, watcher, lb, store, backends, args.puts)
        for watcher, _ in lbs.values():
            if args.burst:
                bench_burst(result, watcher, store, backends, args.burst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=30, help="docker run samples (0: skip dockerd)")
    parser.add_argument("--puts", type=int, default=50, help="etcd put samples per LB (0: skip)")
    parser.add_argument("--burst", type=int, default=1000, help="changes in the burst (0: skip)")
    parser.add_argument("--wait", default=DEFAULT_WAIT, help="the watchers' quiescence min:max")
    parser.add_argument("--healthcheck", action="store_true", help="keep the image's Docker HEALTHCHECK")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    args = parser.parse_args()
    if args.containers and os.geteuid() != 0:
        sys.exit("e2e_bench: dockerd needs root (or pass --containers 0)")
    try:
        with Result("e2e_healthcheck" if args.healthcheck else "e2e", sys.argv) as result:
            run(args, result)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

"""The watcher's start-up path at scale, from a real etcd: 10,000 services / 100,000 endpoints.

    python bench/scale_bench.py [--services 10000] [--per-service 10]

Loads render_bench's catalog into a private etcd (the setup, not measured), then measures what a
watcher does at start: the paged snapshot (`EtcdStore.snapshot`), decoding and validating every
value (`CatalogState.load` + `catalog()`), rendering both default templates, the real `nginx -t`
and `haproxy -c` on the output, and this process's peak RSS after each step; then `lbgen watch`
on the same registry (a generic target checked by `/bin/true`, no LB): start → first config,
fresh and then restarted (with the applied state the first run left beside its dest).
Each step runs once (n=1). Writes bench/results/scale.json (bench/results.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import (
    ROOT,
    Processes,
    bulk_put,
    etcd,
    haproxy_vars,
    nginx_vars,
    rss_mb,
    wait_until,
    workdir,
    write_settings,
)
from render_bench import big_catalog, peak_rss_mb, time_checker
from results import Result

from lbgen.adapters.etcd_store import EtcdStore
from lbgen.core.catalog import CatalogState, state_from_pages
from lbgen.core.model import DEFAULT_SERVED_HEALTH
from lbgen.core.render import render
from lbgen.core.schema import encode_endpoint, encode_spec, endpoint_key, spec_key
from lbgen.core.settings import Target

PREFIX = "/scale"
CHANGES = 15  # endpoints changed one at a time, each in another service, spread over the catalog


def timed(result: Result, what: str, path: str, fn, *args):  # type: ignore[no-untyped-def]
    start, cpu = time.perf_counter(), time.process_time()
    value = fn(*args)
    result.add(f"{what}, wall", path, "ms", [(time.perf_counter() - start) * 1000])
    result.add(f"{what}, CPU", path, "ms", [(time.process_time() - cpu) * 1000])
    result.add(f"{what}, peak RSS after", "getrusage(RUSAGE_SELF) of the bench", "MB", [peak_rss_mb()])
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--per-service", type=int, default=10)
    args = parser.parse_args()
    source = big_catalog(args.services, args.per_service)
    items = []
    for service in source.services:
        items.append((spec_key(PREFIX, service.name), encode_spec(service.spec)))
        items += [(endpoint_key(PREFIX, service.name, e.id), encode_endpoint(e)) for e in service.all_endpoints]
    del source
    with workdir() as root, etcd(root / "etcd") as (server, store), Result("scale", sys.argv) as result:
        start = time.perf_counter()
        bulk_put(store, items)
        result.notes.append(f"{args.services:,} services, {len(items) - args.services:,} endpoints: "
                            f"{len(items):,} keys, loaded into a private etcd in {time.perf_counter() - start:.1f} s "
                            "(setup, transactions of 128)")
        keys = len(items)
        moved = [(k, v) for k, v in items[1::max(1, len(items) // CHANGES)] if "/endpoints/" in k
                 and json.loads(v).get("health", "none") in DEFAULT_SERVED_HEALTH][:CHANGES]  # in the config
        del items
        snapshot = timed(result, "etcd snapshot", "EtcdStore.snapshot, paged", store.snapshot, PREFIX)
        state = CatalogState(PREFIX)
        rejected = timed(result, "decode + validate", "CatalogState.load(snapshot): keys parsed, values "
                         "decoded and validated", state.load, snapshot)
        catalog = timed(result, "build the catalog", "CatalogState.catalog()", state.catalog)
        del snapshot
        assert not rejected, rejected[:3]
        paged = timed(result, "paged snapshot, decoded as it arrives", "catalog.state_from_pages(EtcdStore."
                      "snapshot_pages): lbgen watch's start, each page decoded while etcd serves the next",
                      state_from_pages, PREFIX, store.snapshot_pages(PREFIX))
        assert not paged[1] and paged[2] == keys, paged[1][:3]
        del paged
        for kind, name, facts in (("nginx", "nginx.conf.j2", nginx_vars(root)), ("haproxy", "haproxy.cfg.j2", haproxy_vars(root))):
            target = Target(name=kind, template=name, dest="/dev/null", kind=kind, vars=facts)
            template = (ROOT / "templates" / name).read_text()
            text = timed(result, f"render {name} (first)", "lbgen.core.render.render in process: compile + "
                         "every view", render, template, catalog, target)
            timed(result, f"render {name} (again, compiled)", "lbgen.core.render.render: the identical catalog "
                  "again", render, template, catalog, target)
            result.add(f"{name}: output", "the rendered config", "MB", [len(text) / 1e6])
            wall, cpu, verdict = time_checker(kind, text)
            checker = "nginx -t -q" if kind == "nginx" else "haproxy -c -q"
            result.add(f"{checker}, wall", f"the real checker on the output, verdict {verdict}", "ms", [wall])
            result.add(f"{checker}, CPU", f"the real checker on the output, verdict {verdict}", "ms", [cpu])
        del state, catalog
        watcher_start(result, root, server.url)
        watcher_changes(result, root, server.url, store, moved)


def watcher_settings(root: Path, url: str, **extra: object) -> tuple[Path, Path]:
    """Settings of one nginx target checked by `/bin/true` (the checker was timed above), and its dest."""
    dest = root / "nginx.conf"
    target = {"name": "nginx", "kind": "generic", "template": str(ROOT / "templates/nginx.conf.j2"),
              "dest": str(dest), "check": ["/bin/true", "{staged}"], "vars": nginx_vars(root)}
    data = {"registry": url, "prefix": PREFIX, "targets": [target], **extra}
    return write_settings(root / "lbgen.yaml", data), dest


def watcher_start(result: Result, root: Path, url: str) -> None:
    """`lbgen watch` on the same registry: time to the first config written, and the daemon's RSS."""
    settings, dest = watcher_settings(root, url)
    path = "lbgen watch (a subprocess) on the etcd above, generic target checked by /bin/true, no LB"
    for name, how in (("lbgen watch", path), ("lbgen watch, restarted", f"{path}; again, its applied state "
                                              "(the drop guard's baseline, 10,000 services) read at start")):
        dest.unlink(missing_ok=True)
        with Processes(root) as procs:
            start = time.perf_counter()
            watcher = procs.watch(settings)
            wait_until(dest.exists, 600, "the watcher's first render", interval=0.05)
            elapsed = (time.perf_counter() - start) * 1000
            time.sleep(0.5)  # the first apply's status hook returns the start-up heap to the OS
            rss, peak = rss_mb(watcher.pid)
        result.add(f"{name}: start → first config written", how, "ms", [elapsed])
        result.add(f"{name}: RSS 0.5 s after the first config", how, "MB", [rss])
        result.add(f"{name}: peak RSS", how, "MB", [peak])


def watcher_changes(result: Result, root: Path, url: str, store: EtcdStore,
                    moved: list[tuple[str, bytes]]) -> None:
    """`lbgen watch` with quiescence off (`wait: 0`, as watch_bench's reload figures): one endpoint's
    weight changes in etcd, and the time until the config file is replaced (a new inode)."""
    settings, dest = watcher_settings(root, url, wait=0)
    dest.unlink(missing_ok=True)
    path = ("lbgen watch (a subprocess), wait 0, generic target checked by /bin/true, no LB: one endpoint's "
            f"weight put in etcd → the config file replaced, {len(moved)} endpoints of as many services")
    times = []
    with Processes(root) as procs:
        procs.watch(settings)
        wait_until(dest.exists, 600, "the watcher's first render", interval=0.05)
        for key, value in moved:
            data = json.loads(value)
            data["weight"] = data.get("weight", 1) + 1
            before = dest.stat().st_ino
            start = time.perf_counter()
            store.put(key, json.dumps(data).encode())
            wait_until(lambda: dest.stat().st_ino != before, 60, "the changed config", interval=0.002)
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(0.3)  # the status write and metrics of the pass settle before the next put
    result.add("lbgen watch: one endpoint change → config file", path, "ms", times)


if __name__ == "__main__":
    main()

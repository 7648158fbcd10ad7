"""The watcher's start-up path at scale, from a real etcd: 10,000 services / 100,000 endpoints.

    python bench/scale_bench.py [--services 10000] [--per-service 10]

Loads render_bench's catalog into a private etcd (the setup, not measured), then measures what a
watcher does at start: the paged snapshot (`EtcdStore.snapshot`), decoding and validating every
value (`CatalogState.load` + `catalog()`), rendering both default templates, the real `nginx -t`
and `haproxy -c` on the output, and this process's peak RSS after each step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import (
    ROOT,
    Processes,
    bulk_put,
    etcd,
    haproxy_vars,
    machine,
    nginx_vars,
    rss_mb,
    wait_until,
    workdir,
    write_settings,
)
from render_bench import big_catalog, peak_rss_mb, time_checker

from lbgen.core.catalog import CatalogState
from lbgen.core.render import render
from lbgen.core.schema import encode_endpoint, encode_spec, endpoint_key, spec_key
from lbgen.core.settings import Target

PREFIX = "/scale"


def timed(what: str, fn, *args):  # type: ignore[no-untyped-def]
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    print(f"  {what}: {(time.perf_counter() - start) * 1000:.0f} ms "
          f"(CPU {(time.process_time() - cpu) * 1000:.0f} ms), peak RSS {peak_rss_mb():.0f} MB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--per-service", type=int, default=10)
    args = parser.parse_args()
    print(machine())
    source = big_catalog(args.services, args.per_service)
    items = []
    for service in source.services:
        items.append((spec_key(PREFIX, service.name), encode_spec(service.spec)))
        items += [(endpoint_key(PREFIX, service.name, e.id), encode_endpoint(e)) for e in service.all_endpoints]
    del source
    with workdir() as root, etcd(root / "etcd") as (server, store):
        start = time.perf_counter()
        bulk_put(store, items)
        print(f"[{args.services} services, {len(items) - args.services} endpoints: {len(items)} keys loaded "
              f"into etcd in {time.perf_counter() - start:.1f} s; baseline peak RSS {peak_rss_mb():.0f} MB]")
        del items
        snapshot = timed("etcd snapshot (paged)", store.snapshot, PREFIX)
        state = CatalogState(PREFIX)
        rejected = timed("decode + validate (CatalogState.load)", state.load, snapshot)
        catalog = timed("build the catalog", state.catalog)
        del snapshot
        assert not rejected, rejected[:3]
        for kind, name, facts in (("nginx", "nginx.conf.j2", nginx_vars(root)), ("haproxy", "haproxy.cfg.j2", haproxy_vars(root))):
            target = Target(name=kind, template=name, dest="/dev/null", kind=kind, vars=facts)
            template = (ROOT / "templates" / name).read_text()
            text = timed(f"render {name} (first)", render, template, catalog, target)
            timed(f"render {name} (again, compiled)", render, template, catalog, target)
            print(f"  {len(text) / 1e6:.1f} MB of config; {time_checker(kind, text)}")
        del state, catalog
        watcher_start(root, server.url)


def watcher_start(root: Path, url: str) -> None:
    """`lbgen watch` on the same registry, one nginx target checked by `/bin/true` (the checker was
    timed above): time to the first config written, and the daemon's RSS."""
    dest = root / "nginx.conf"
    target = {"name": "nginx", "kind": "generic", "template": str(ROOT / "templates/nginx.conf.j2"),
              "dest": str(dest), "check": ["/bin/true", "{staged}"], "vars": nginx_vars(root)}
    settings = write_settings(root / "lbgen.yaml", {"registry": url, "prefix": PREFIX, "targets": [target]})
    with Processes(root) as procs:
        start = time.perf_counter()
        watcher = procs.watch(settings)
        wait_until(dest.exists, 600, "the watcher's first render", interval=0.1)
        rss, peak = rss_mb(watcher.pid)
        print(f"[lbgen watch] start -> first config written {time.perf_counter() - start:.1f} s; "
              f"RSS {rss:.0f} MB, peak {peak:.0f} MB")


if __name__ == "__main__":
    main()

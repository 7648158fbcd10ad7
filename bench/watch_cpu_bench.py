"""CPU per change of `lbgen watch` (issue 13's goal: ≤ 5 ms at 100 keys), and its RSS.

    python bench/watch_cpu_bench.py [--services 10] [--per-service 9] [--changes 400] [--block 40]

The reload100 set-up of watch_bench.py (quiescence off, a generic target rendering the default
nginx template, check `/bin/true`, reload = `busybox nc` to the bench's socket): after 20 warm-up
changes, N changes one at a time (each waits for its reload), in blocks of `--block`; per block,
the CPU per change from /proc/PID/stat: the watcher's own (utime + stime), its render worker's
(the long-lived forked child, `lbgen.adapters.render_worker`, from its /proc/PID/schedstat while
it runs), and its reaped children's (cutime + cstime: the check and reload commands, and a worker
that ended). Writes bench/results/watch_cpu.json (median and spread over the blocks).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    Processes, Tap, bulk_put, endpoint, etcd, forks, forks_cpu_s, free_port, machine, precompile, pss_mb, registry,
    rss_mb, summary, workdir,
)
from results import Result
from watch_bench import PRECOMPILED, PREFIX, generic_target, settings, wait_written_and_reloaded

TICK = os.sysconf("SC_CLK_TCK")
WEIGHT: dict[str, int] = {}  # each changed key's weight now (the registry's is 1)


def cpu_s(pid: int) -> tuple[float, float, float]:
    """(own, render workers', reaped children's) CPU seconds of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / TICK, forks_cpu_s(pid), (cutime + cstime) / TICK


def changes(store: Any, dest: Path, tap: Tap, services: int, per_service: int, count: int,
            offset: int) -> list[float]:
    """`count` changes, each one endpoint's weight flipped between 1 and 2, each waited for;
    their put → file written times."""
    to_file = []
    for i in range(offset, offset + count):
        key = f"{PREFIX}/services/s{i * 7 % services:05d}/endpoints/e{i % per_service:03d}"
        WEIGHT[key] = 3 - WEIGHT.get(key, 1)
        inode, start = os.stat(dest).st_ino, time.monotonic()
        address = f"10.0.{i * 7 % services % 250}.{i % per_service + 1}"
        store.put(key, endpoint(20000 + i % per_service, WEIGHT[key], address))
        to_file.append(wait_written_and_reloaded(dest, inode, tap, timeout=120)[0] - start)
    return to_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--per-service", type=int, default=9)
    parser.add_argument("--changes", type=int, default=400)
    parser.add_argument("--block", type=int, default=40)
    args = parser.parse_args()
    print(machine())
    precompile()
    with workdir() as root, etcd(root / "etcd") as (server, store), Processes(root) as procs:
        bulk_put(store, registry(PREFIX, args.services, args.per_service, free_port()))
        tap = Tap()
        started = time.monotonic()
        watcher = procs.watch(settings(root, server.url, "0", [generic_target(root, tap)]))
        first = tap.wait(300) - started
        dest = root / "out.conf"
        changes(store, dest, tap, args.services, args.per_service, 20, 0)
        per_change: dict[str, list[float]] = {"own": [], "worker": [], "reaped": [], "total": []}
        to_file: list[float] = []
        for offset in range(20, 20 + args.changes, args.block):
            before = cpu_s(watcher.pid)
            to_file += changes(store, dest, tap, args.services, args.per_service, args.block, offset)
            spent = [(b - a) / args.block * 1000 for a, b in zip(before, cpu_s(watcher.pid))]
            for name, value in zip(("own", "worker", "reaped"), spent):
                per_change[name].append(value)
            per_change["total"].append(spent[0] + spent[1])
        rss, peak = rss_mb(watcher.pid)
        workers = forks(watcher.pid)
        worker_rss, pss = sum(rss_mb(child)[0] for child in workers), pss_mb(watcher.pid)
        worker_pss = sum(pss_mb(child) for child in workers)
        keys = args.services * (args.per_service + 1)
        path = (f"lbgen watch, {keys:,} keys, wait 0, generic target (check /bin/true, reload a tiny command), "
                f"CPU per change over blocks of {args.block} changes")
        with Result(f"watch_cpu{'' if keys <= 100 else '_' + str(keys)}", sys.argv) as result:
            result.add("watcher + render worker CPU per change", path, "ms", per_change["total"])
            result.add("watcher's own CPU per change", path, "ms", per_change["own"])
            result.add("render worker CPU per change", path, "ms", per_change["worker"])
            result.add("reaped children CPU per change", f"{path}: the check and reload commands", "ms",
                       per_change["reaped"])
            result.add("put → file written", path, "ms", [v * 1000 for v in to_file])
            result.add("start → first reload command", path, "s", [first])
            result.add("watcher RSS", path, "MB", [rss], note=f"peak {peak:.0f} MB, PSS {pss:.0f} MB")
            result.add("render worker RSS", path, "MB", [worker_rss],
                       note=f"PSS {worker_pss:.0f} MB: it shares pages with the watcher (fork)")
            result.notes.append(PRECOMPILED)
        print(f"  put -> file written: {summary(to_file)}")
        tap.close()


if __name__ == "__main__":
    main()

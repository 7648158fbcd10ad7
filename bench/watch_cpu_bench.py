"""CPU per change of `lbgen watch` (issue 13's goal: ≤ 5 ms at 100 keys), and its RSS.

    python bench/watch_cpu_bench.py [--services 10] [--per-service 9] [--changes 200]

The reload100 set-up of watch_bench.py (quiescence off, a generic target rendering the default
nginx template, check `/bin/true`, reload = `busybox nc` to the bench's socket): after 20 warm-up
changes, N changes one at a time (each waits for its reload), and the watcher's CPU from
/proc/PID/stat over them: its own (utime + stime) and its reaped children's (cutime + cstime: the
bounded render's fork, the check and the reload commands), per change.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from common import Processes, Tap, bulk_put, endpoint, etcd, free_port, machine, registry, rss_mb, summary, workdir
from watch_bench import PREFIX, generic_target, settings, wait_written_and_reloaded

TICK = os.sysconf("SC_CLK_TCK")
WEIGHT: dict[str, int] = {}  # each changed key's weight now (the registry's is 1)


def cpu_s(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


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
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    print(machine())
    with workdir() as root, etcd(root / "etcd") as (server, store), Processes(root) as procs:
        bulk_put(store, registry(PREFIX, args.services, args.per_service, free_port()))
        tap = Tap()
        started = time.monotonic()
        watcher = procs.watch(settings(root, server.url, "0", [generic_target(root, tap)]))
        first = tap.wait(300) - started
        dest = root / "out.conf"
        changes(store, dest, tap, args.services, args.per_service, 20, 0)
        (own0, kids0), wall0 = cpu_s(watcher.pid), time.monotonic()
        to_file = changes(store, dest, tap, args.services, args.per_service, args.changes, 20)
        (own1, kids1), wall = cpu_s(watcher.pid), time.monotonic() - wall0
        rss, peak = rss_mb(watcher.pid)
        keys = args.services * (args.per_service + 1)
        print(f"[{keys} keys, wait 0, generic target, {args.changes} changes in {wall:.1f} s]")
        print(f"  start -> first reload command {first:.1f} s")
        print(f"  watcher CPU per change: own {(own1 - own0) / args.changes * 1000:.2f} ms, "
              f"reaped children {(kids1 - kids0) / args.changes * 1000:.2f} ms")
        print(f"  put -> file written: {summary(to_file)}")
        print(f"  watcher RSS {rss:.0f} MB (peak {peak:.0f} MB)")
        tap.close()


if __name__ == "__main__":
    main()

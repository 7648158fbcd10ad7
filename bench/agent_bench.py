"""Benchmark `lbgen agent` against its own etcd and dockerd (loopback only, needs root).

Figures (written to bench/results/agent.json through bench/results.py: median, spread, p99):
- latency: `docker start` returning → the endpoint key in etcd (p50/p99), and container removed →
  key deleted, over `--latency` containers started one at a time;
- burst: `--burst` containers started at once (16 threads) → time until all are registered;
- churn: `--churn` containers started (8 at a time), each start followed by the removal of a random
  live container → leaked or missing endpoint keys once the agent has settled, read from etcd
  itself (the watch that times the other figures is cross-checked against that read; exit status 1
  on any leak);
- the agent's RSS when idle, after the burst and after the churn.

    /tmp/v/bin/python bench/agent_bench.py               # modest: 100 / 200 / 200
    /tmp/v/bin/python bench/agent_bench.py --churn 1000   # the issue's 1,000 containers of churn
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: lbgen and tests.support from this tree
sys.path.insert(0, str(ROOT / "bench"))

import docker

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.core.registration import json_field
from lbgen.core.registry_url import parse_registry_url
from lbgen.core.schema import parse_key, services_prefix
from lbgen.errors import StoreError
from lbgen.core.values import WatchEvent
from lbgen.ports import Store
from results import Result
from tests.support.dockerd import Dockerd
from tests.support.etcd import EtcdFactory
from tests.support.images import build_backend_image
from tests.support.util import free_port, wait_until

PREFIX = "/bench/lbgen"
NODE = "bench"


def _container(key: str, value: bytes) -> str | None:
    """The container an endpoint key names; None for any other key under the prefix (the agent's
    presence `{prefix}/agents/{node}` is on the same lease and names none: counted, it was a
    "leaked key" that never went, in every run before 2026-12-03 20:00)."""
    ref = parse_key(PREFIX, key)
    return str(json_field(value, "container")) if ref is not None and ref.kind == "endpoint" else None


def registered(store: Store) -> set[str]:
    """The containers whose endpoint key is in etcd, read directly (no watch in between)."""
    return {c for kv in store.snapshot(services_prefix(PREFIX)).items if (c := _container(kv.key, kv.value))}


class KeyWatcher:
    """Follows the registry's endpoint keys with a watch: which container has a key, and when it
    first/last changed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Condition()
        self.live: dict[str, str] = {}  # endpoint key → container id
        self.added: dict[str, float] = {}  # container id → when its key appeared
        self.removed: dict[str, float] = {}  # container id → when its key went
        snapshot = store.snapshot(services_prefix(PREFIX))
        self.watch = store.watch(services_prefix(PREFIX), snapshot.revision + 1)
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        try:
            for batch in self.watch:
                now = time.monotonic()
                with self.lock:
                    for event in batch:
                        self._apply(event, now)
                    self.lock.notify_all()
        except StoreError as e:
            print(f"watch ended: {e}", file=sys.stderr)

    def _apply(self, event: WatchEvent, now: float) -> None:
        if event.kind == "put":
            container = _container(event.key, event.value)
            if container is None:
                return
            self.live[event.key] = container
            self.added.setdefault(container, now)
        elif (container := self.live.pop(event.key, "")):
            self.removed[container] = now

    def containers(self) -> set[str]:
        with self.lock:
            return set(self.live.values())

    def wait(self, predicate: Callable[[KeyWatcher], bool], timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: predicate(self), timeout)

    def disagrees(self, in_etcd: set[str]) -> str:
        """A note when the watch's view differs from a direct read of etcd (a lost watch event)."""
        seen = self.containers()
        if seen == in_etcd:
            return ""
        return f"the watch disagrees with etcd: {len(seen - in_etcd)} extra, {len(in_etcd - seen)} missing"

    def close(self) -> None:
        self.watch.cancel()


def _has_added(cid: str, watcher: KeyWatcher) -> bool:
    return cid in watcher.added


def _has_removed(cid: str, watcher: KeyWatcher) -> bool:
    return cid in watcher.removed


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, api: docker.APIClient, image: str, watcher: KeyWatcher, result: Result) -> None:
        self.api = api
        self.image = image
        self.watcher = watcher
        self.result = result

    def create(self) -> str:
        port = free_port()
        created = self.api.create_container(
            self.image, command=["sleep", "3600"], labels={"lbgen.service": "bench", "lbgen.port": str(port)},
            healthcheck={"Test": ["NONE"]}, host_config=self.api.create_host_config(network_mode="host"),
        )
        return str(created["Id"])

    def remove(self, cid: str) -> None:
        self.api.remove_container(cid, force=True, v=True)

    def latency(self, count: int) -> None:
        up, down = [], []
        for _ in range(count):
            cid = self.create()
            self.api.start(cid)
            started = time.monotonic()
            assert self.watcher.wait(functools.partial(_has_added, cid), 10), "key never appeared"
            up.append(self.watcher.added[cid] - started)
            removing = time.monotonic()  # the container dies, and its key goes, before `rm -f` returns
            self.remove(cid)
            assert self.watcher.wait(functools.partial(_has_removed, cid), 10), "key never deleted"
            down.append(self.watcher.removed[cid] - removing)
        path = "lbgen agent on a private dockerd, containers started one at a time, seen by an etcd watch"
        self.result.add("docker start returned → key in etcd", path, "ms", [v * 1000 for v in up])
        self.result.add("docker rm -f issued → key deleted", path, "ms", [v * 1000 for v in down])

    def burst(self, count: int) -> list[str]:
        ids = [self.create() for _ in range(count)]
        returned: dict[str, float] = {}

        def start(cid: str) -> None:
            self.api.start(cid)
            returned[cid] = time.monotonic()

        began = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(start, ids))
        all_started = time.monotonic()
        wanted = set(ids)
        assert self.watcher.wait(lambda w: wanted <= w.containers(), 120), "burst never fully registered"
        done = max(self.watcher.added[c] for c in ids)
        path = f"{count} containers started by 16 threads at once, lbgen agent, keys seen by an etcd watch"
        self.result.add("burst: first start → all registered", path, "s", [done - began])
        self.result.add("burst: last start returned → all registered", path, "s", [done - all_started])
        self.result.add("burst: start returned → key in etcd", path, "ms",
                        [(self.watcher.added[c] - returned[c]) * 1000 for c in ids])
        return ids

    def churn(self, count: int, alive: list[str]) -> bool:
        """`count` containers started by 8 workers at once, each start followed by the removal of a
        random live container: creations and deaths interleave as on a busy host, the population
        (the burst's containers) stays constant."""
        lock = threading.Lock()
        rng = random.Random(4)

        def one(_: int) -> None:
            cid = self.create()
            self.api.start(cid)
            with lock:
                alive.append(cid)
                victim = alive.pop(rng.randrange(len(alive)))
            self.remove(victim)

        began = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(count)))
        churned = time.monotonic()
        expected = set(alive)
        settled = self.watcher.wait(lambda w: w.containers() == expected, 30)
        got = registered(self.watcher.store)  # what etcd holds: a watch that missed an event shows below
        leaked, missing = got - expected, expected - got
        path = (f"{count} containers started by 8 threads, each start followed by the removal of a random live "
                f"one ({len(expected)} live at the end)")
        self.result.add("churn: duration", path, "s", [churned - began])
        self.result.add("churn: last removal → registry settled", path, "s", [time.monotonic() - churned],
                        note="" if settled else "did not settle: the 30 s wait ran out")
        self.result.add("churn: leaked keys", path, "keys", [len(leaked)], note=self.watcher.disagrees(got))
        self.result.add("churn: missing keys", path, "keys", [len(missing)])
        return settled and not leaked and not missing


def start_agent(etcd_url: str, docker_url: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "lbgen", "agent", "--etcd", etcd_url, "--prefix", PREFIX, "--node", NODE,
        "--host-ip", "127.0.0.1", "--docker-host", docker_url, "--metrics-addr", "off",
    ]
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def rss(result: Result, when: str, pid: int) -> None:
    result.add(f"agent RSS {when}", "lbgen agent (a subprocess): VmRSS", "MiB", [rss_mib(pid)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=int, default=100, help="containers for the latency figure")
    parser.add_argument("--burst", type=int, default=200, help="containers started at once")
    parser.add_argument("--churn", type=int, default=200, help="containers of churn (the issue asks for 1000)")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp, \
            Result("agent", sys.argv) as result:
        etcd_factory = EtcdFactory(Path(tmp))
        stack.callback(etcd_factory.close)
        etcd = etcd_factory()
        daemon = Dockerd.create()
        stack.callback(daemon.destroy)
        daemon.start()
        client = stack.enter_context(closing(daemon.client(timeout=120)))
        image = build_backend_image(client)
        store = EtcdStore(EtcdConfig(endpoints=parse_registry_url(etcd.url).endpoints))
        stack.callback(store.close)
        watcher = KeyWatcher(store)
        stack.callback(watcher.close)
        agent = start_agent(etcd.url, daemon.url, Path(tmp) / "agent.log")
        stack.callback(agent.kill)
        bench = Bench(client.api, image, watcher, result)
        wait_until(lambda: b"listed" in (Path(tmp) / "agent.log").read_bytes(), 20, "the agent's first listing")
        rss(result, "idle", agent.pid)
        bench.latency(args.latency)
        alive = bench.burst(args.burst)
        rss(result, "after the burst", agent.pid)
        ok = bench.churn(args.churn, alive)
        rss(result, "after the churn", agent.pid)
        for cid in alive:
            bench.remove(cid)
        watcher.wait(lambda w: not w.live, 30)
        left = registered(store)
        result.notes.append(f"all removed → endpoint keys in etcd: {'none' if not left else len(left)}")
        result.add("keys left once every container is removed", "lbgen agent, after the churn, 30 s to settle, "
                   "etcd read directly", "keys", [len(left)], note=watcher.disagrees(left))
        return 0 if ok and not left else 1  # the figures are written either way: a leak is a result


if __name__ == "__main__":
    sys.exit(main())

"""What the fleet bench observes: every LB node's rendered file, and each etcd member's /metrics.

`LbFiles` polls each dest's inode (the applier replaces it atomically), reads a new file once, and
settles `Expect`ations: "these endpoint ids are in (or gone from) every LB node's file", timed
from a moment the bench chose (a put, a container start, a host's death). The generic template
writes one line per served endpoint, its id first.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lbgen.errors import StoreError
from lbgen.ports import Store

TEMPLATE = "{% for s in services %}{% for e in s.endpoints %}{{ e.id }} {{ e | hostport }}\n{% endfor %}{% endfor %}"


@dataclass
class Expect:
    """`ids` present in (or absent from) every node's file; `seen` maps node → monotonic time."""

    ids: frozenset[str]
    present: bool
    t0: float
    seen: dict[str, float] = field(default_factory=dict)
    superseded: bool = False  # a container removed before every node had it: not timed

    def met_by(self, ids: set[str]) -> bool:
        return self.ids <= ids if self.present else self.ids.isdisjoint(ids)

    def latencies(self) -> list[float]:
        """Seconds from t0 to each node's file."""
        return [at - self.t0 for at in self.seen.values()]

    def to_all(self) -> float:
        """Seconds from t0 until the last node's file had it."""
        return max(self.seen.values()) - self.t0


class LbFiles:
    """Follows every LB node's dest on a thread; `expect()` registers what to time."""

    def __init__(self, dests: dict[str, Path], interval: float = 0.005) -> None:
        self.dests = dests
        self.interval = interval
        self.lock = threading.Lock()
        self.ids: dict[str, set[str]] = {node: set() for node in dests}
        self.changes = {node: 0 for node in dests}
        self._inodes: dict[str, tuple[int, int]] = {}
        self._pending: list[Expect] = []
        self.done: list[Expect] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lb-files", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def expect(self, ids: set[str] | frozenset[str], present: bool, t0: float) -> Expect:
        expectation = Expect(frozenset(ids), present, t0)
        now = time.monotonic()
        with self.lock:
            for node, current in self.ids.items():
                if expectation.met_by(current):
                    expectation.seen[node] = now
            self._settle(expectation)
        return expectation

    def _settle(self, expectation: Expect) -> None:
        if len(expectation.seen) == len(self.dests):
            self.done.append(expectation)
        elif expectation not in self._pending:
            self._pending.append(expectation)

    def take(self) -> list[Expect]:
        """The expectations met since the last call; forget the unmet ones (their phase is over)."""
        with self.lock:
            done, self.done, self._pending = self.done, [], []
        return done

    def pending(self) -> int:
        with self.lock:
            return len(self._pending)

    def equal(self, truth: set[str]) -> bool:
        """Whether every node's file holds exactly `truth` (plus marker endpoints)."""
        with self.lock:
            return all({i for i in ids if not i.startswith("marker")} == truth for ids in self.ids.values())

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            for node, dest in self.dests.items():
                self._poll(node, dest)

    def _poll(self, node: str, dest: Path) -> None:
        try:
            st = os.stat(dest)
            if self._inodes.get(node) == (st.st_ino, st.st_mtime_ns):
                return
            text = dest.read_text()
        except FileNotFoundError:
            return
        now = time.monotonic()
        ids = {line.split(" ", 1)[0] for line in text.splitlines() if line}
        with self.lock:
            self._inodes[node] = (st.st_ino, st.st_mtime_ns)
            self.ids[node] = ids
            self.changes[node] += 1
            still = []
            for expectation in self._pending:
                if node not in expectation.seen and expectation.met_by(ids):
                    expectation.seen[node] = now
                if len(expectation.seen) == len(self.dests):
                    self.done.append(expectation)
                else:
                    still.append(expectation)
            self._pending = still


# --- etcd metrics ----------------------------------------------------------------------------------

METRICS = {
    "cpu_seconds": ("process_cpu_seconds_total", {}),
    "rss_bytes": ("process_resident_memory_bytes", {}),
    "db_bytes": ("etcd_mvcc_db_total_size_in_bytes", {}),
    "db_in_use_bytes": ("etcd_mvcc_db_total_size_in_use_in_bytes", {}),
    "keys": ("etcd_debugging_mvcc_keys_total", {}),
    "watchers": ("etcd_debugging_mvcc_watcher_total", {}),
    "watch_streams": ("etcd_debugging_mvcc_watch_stream_total", {}),
    "is_leader": ("etcd_server_is_leader", {}),
    "leader_changes": ("etcd_server_leader_changes_seen_total", {}),
    "proposals": ("etcd_server_proposals_committed_total", {}),
    "leases_renewed": ("etcd_debugging_lease_renewed_total", {}),
    "keepalive_msgs": ("grpc_server_msg_received_total", {"grpc_method": "LeaseKeepAlive"}),
    "puts": ("grpc_server_handled_total", {"grpc_method": "Put"}),
    "ranges": ("grpc_server_handled_total", {"grpc_method": "Range"}),
    "txns": ("grpc_server_handled_total", {"grpc_method": "Txn"}),
}


def scrape(client_url: str, timeout: float = 5.0) -> dict[str, float] | None:
    """The `METRICS` of one member (summed over unlisted labels); None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{client_url}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = {name: 0.0 for name in METRICS}
    by_metric: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for name, (metric, labels) in METRICS.items():
        by_metric.setdefault(metric, []).append((name, labels))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, labels in by_metric.get(sample.name, ()):
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    found[name] += sample.value
    return found


def rates(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Per-second rates of the counters between two scrapes of one member."""
    counters = ("cpu_seconds", "proposals", "leases_renewed", "keepalive_msgs", "puts", "ranges", "txns")
    return {f"{name}_per_s": (after[name] - before[name]) / seconds for name in counters}


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (a watcher forks each
    bounded render), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class RegistryTap:
    """When each endpoint id's key first appeared in etcd and when it went, seen through a watch of
    `services/` (re-opened from the last revision after a break): the agent's share of a latency."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        self.put_at: dict[str, float] = {}
        self.deleted_at: dict[str, float] = {}
        self._stopping = threading.Event()
        self._watch: Any = None
        self._revision = store.snapshot(prefix).revision
        self._thread = threading.Thread(target=self._run, name="registry-tap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._watch = self.store.watch(self.prefix, self._revision + 1)
                for batch in self._watch:
                    now = time.monotonic()
                    for event in batch:
                        seen = self.put_at if event.kind == "put" else self.deleted_at
                        seen.setdefault(event.key.rsplit("/", 1)[1], now)
                        self._revision = event.revision
            except StoreError:
                self._stopping.wait(0.2)

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.cancel()
        self._thread.join(timeout=10)

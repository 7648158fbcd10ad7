"""The fleet bench's measured phases (bench/fleet_bench.py runs them in order, on one set-up)."""

from __future__ import annotations

import calendar
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from common import endpoint, percentile
from fleet_probe import Expect, LbFiles, RegistryTap, proc_cpu, rates, scrape
from fleet_sim import Fleet
from lbgen.adapters.etcd_store import EtcdStore
from lbgen.errors import StoreError
from tests.support.etcd_cluster import ClusterMember, EtcdCluster
from tests.support.util import wait_until

PREFIX = "/fleet"
SETTLE = 30.0  # seconds a phase waits for its last changes to reach every LB node
KEEP = 30  # markers alive at once


def stats(values: list[float]) -> dict[str, float | int]:
    """p50, p99 and max in milliseconds, and the count."""
    if not values:
        return {"n": 0}
    ms = [v * 1000 for v in values]
    return {"p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1), "n": len(ms)}


def timings(made: list[tuple[str, Expect]], nodes: int, tap: RegistryTap) -> dict[str, Any]:
    """Per kind: to every node (the last node's file), to each node (every node's file pooled) and,
    for containers, to the key's put or delete in etcd (the agent's share)."""
    out: dict[str, Any] = {}
    for kind in sorted({k for k, _ in made}):
        mine = [e for k, e in made if k == kind and not e.superseded]
        met = [e for e in mine if len(e.seen) == nodes]
        out[kind] = {"every_node": stats([e.to_all() for e in met]),
                     "each_node": stats([v for e in met for v in e.latencies()]),
                     "unmet": len(mine) - len(met), "superseded": sum(1 for k, e in made if k == kind and e.superseded)}
        if kind in ("add", "remove"):
            seen = tap.put_at if kind == "add" else tap.deleted_at
            out[kind]["registry"] = stats([seen[i] - e.t0 for e in mine for i in e.ids if i in seen])
    return out


@dataclass
class Phases:
    args: Any
    cluster: EtcdCluster
    admin: EtcdStore
    fleet: Fleet
    files: LbFiles
    churn: Any
    procs: dict[str, Any]
    tap: RegistryTap
    _live_markers: list[str] = field(default_factory=list)

    def run_all(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("steady", "wave", "dead_host", "leader_kill", "member_restart"):
            print(f"phase {name} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f})", flush=True)
            started, load = time.monotonic(), os.getloadavg()
            out[name] = getattr(self, name)()
            out[name]["wall_s"] = round(time.monotonic() - started, 1)
            out[name]["load_average"] = [load, os.getloadavg()]
        return out

    # --- phases ---------------------------------------------------------------------------------

    def steady(self) -> dict[str, Any]:
        """Churn at `--rate` for `--duration` s with markers; etcd rates over the same window."""
        self.churn.set(self.args.rate)
        before, t0 = self._scrape(), time.monotonic()
        made = self._markers(self.args.duration)
        seconds, after = time.monotonic() - t0, self._scrape()
        made += self.churn.take()
        self.churn.set(0)
        self._settle(made)
        return {"latency": timings(made, len(self.files.dests), self.tap), "etcd": self._etcd(before, after, seconds)}

    def wave(self) -> dict[str, Any]:
        """`--wave` creations a second for `--wave-seconds`, then the time until every file is exact."""
        self.churn.take()
        self.churn.set(self.args.wave, even=True)
        before, t0 = self._scrape(), time.monotonic()
        made = self._markers(self.args.wave_seconds)
        seconds, after = time.monotonic() - t0, self._scrape()
        self.churn.set(0)
        ended = time.monotonic()
        made += self.churn.take()
        converged = self._converge(ended)
        self._settle(made)
        return {"latency": timings(made, len(self.files.dests), self.tap), "converged_after_wave_s": converged,
                "creations": sum(1 for k, _ in made if k == "add"),
                "etcd": self._etcd(before, after, seconds)}

    def dead_host(self) -> dict[str, Any]:
        """One host powered off (its lease expires), one agent stopped cleanly (it revokes)."""
        dead, retired = self.fleet.hosts[-1], self.fleet.hosts[-2]
        out: dict[str, Any] = {"ttl_s": self.args.ttl}
        for name, host, action in (("powered_off", dead, self.fleet.power_off), ("stopped", retired, self._retire)):
            ids = set(host.live.values())
            t0 = time.monotonic()
            expectation = self.files.expect(ids, False, t0)
            action(host)
            wait_until(lambda e=expectation: len(e.seen) == len(self.files.dests), self.args.ttl + 120,
                       f"{host.name}'s endpoints gone from every LB node", 0.05)
            out[name] = {"host": host.name, "endpoints": len(ids), "every_node_s": round(expectation.to_all(), 3),
                         "first_node_s": round(min(expectation.latencies()), 3)}
        return out

    def _retire(self, host: Any) -> None:
        host.agent.stop()
        host.thread.join(timeout=30)
        self.fleet.power_off(host)

    def leader_kill(self) -> dict[str, Any]:
        """SIGKILL the leader under churn; markers through the outage; convergence down and back."""
        leader = self._leader()
        self.churn.take()
        self.churn.set(self.args.rate)
        t0 = time.monotonic()
        leader.kill()
        others = [m for m in self.cluster.members if m is not leader]
        wait_until(lambda: any((scrape(m.client_url) or {}).get("is_leader") for m in others), 60, "a new leader", 0.05)
        out: dict[str, Any] = {"killed": leader.name, "new_leader_s": round(time.monotonic() - t0, 3)}
        made = self._markers(self.args.outage)
        out["down"] = self._pause_and_converge(made)
        t1 = time.monotonic()
        leader.start(wait=True)
        out["rejoined_s"] = round(time.monotonic() - t1, 3)
        self.churn.set(self.args.rate)
        made = self._markers(self.args.outage)
        out["back"] = self._pause_and_converge(made)
        out["agents"] = self._agent_errors()
        return out

    def _pause_and_converge(self, made: list[tuple[str, Expect]]) -> dict[str, Any]:
        made += self.churn.take()
        self.churn.set(0)
        converged = self._converge(time.monotonic())
        self._settle(made)
        failed = sum(1 for k, _ in made if k == "marker-failed")
        return {"latency": timings([m for m in made if m[0] != "marker-failed"], len(self.files.dests), self.tap),
                "marker_puts_failed": failed, "converged_s": converged}

    def member_restart(self) -> dict[str, Any]:
        """Restart the member holding the most watches: when did each LB node's watcher see the break
        and take its next snapshot (its JSON log), and each member's watcher gauge meanwhile."""
        member = max(self.cluster.members, key=lambda m: (scrape(m.client_url) or {}).get("watchers", 0))
        watchers_before = {m.name: (scrape(m.client_url) or {}).get("watchers") for m in self.cluster.members}
        wall0, t0 = time.time(), time.monotonic()
        member.stop()
        stopped_s = time.monotonic() - t0
        member.start(wait=True)
        timeline = self._watcher_timeline(t0, 10.0)
        broke, snapshot = self._log_times(wall0, "registry unreachable"), self._log_times(wall0, "registry: snapshot at")
        delays = sorted(snapshot.values())
        return {"member": member.name, "stop_s": round(stopped_s, 3), "watchers_before": watchers_before,
                "reconnected": len(delays), "lb_nodes": len(self.procs),
                "break_seen_s": sorted(round(d, 3) for d in broke.values()),
                "reconnect_s": [round(d, 3) for d in delays],
                "spread_s": round(delays[-1] - delays[0], 3) if delays else None, "watchers_timeline": timeline}

    # --- helpers --------------------------------------------------------------------------------

    def _markers(self, seconds: float) -> list[tuple[str, Expect]]:
        """A marker endpoint put every `--marker-interval` s for `seconds`; each is deleted `KEEP`
        markers later (deleted sooner, one could go before a node's next pass and never show)."""
        made: list[tuple[str, Any]] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            key = f"{PREFIX}/services/marker/endpoints/marker-{time.monotonic_ns()}"
            t0 = time.monotonic()
            try:
                self.admin.put(key, endpoint(30000 + len(self._live_markers) % 1000))
                made.append(("marker", self.files.expect({key.rsplit("/", 1)[1]}, True, t0)))
                self._live_markers.append(key)
                while len(self._live_markers) > KEEP:
                    self.admin.delete(self._live_markers.pop(0))
            except StoreError:
                made.append(("marker-failed", None))
            time.sleep(max(0.0, t0 + self.args.marker_interval - time.monotonic()))
        return made

    def _settle(self, made: list[tuple[str, Expect]]) -> None:
        nodes = len(self.files.dests)
        try:
            wait_until(lambda: all(len(e.seen) == nodes for k, e in made if e is not None), SETTLE, "settle", 0.1)
        except TimeoutError:
            pass  # counted as unmet

    def _converge(self, since: float) -> float | None:
        try:
            wait_until(lambda: self.files.equal(self.fleet.truth()), 120, "every LB file exact", 0.05)
        except TimeoutError:
            return None
        return round(time.monotonic() - since, 3)

    def _scrape(self) -> dict[str, dict[str, float] | None]:
        return {m.name: scrape(m.client_url) for m in self.cluster.members}

    def _etcd(self, before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
        out = {}
        for name, b in before.items():
            a = after.get(name)
            if a and b:
                out[name] = {**{k: a[k] for k in ("is_leader", "db_bytes", "db_in_use_bytes", "keys", "watchers",
                                                  "watch_streams", "rss_bytes", "leader_changes")},
                             **{k: round(v, 3) for k, v in rates(b, a, seconds).items()}}
        return out

    def _leader(self) -> ClusterMember:
        for member in self.cluster.members:
            if (scrape(member.client_url) or {}).get("is_leader"):
                return member  # type: ignore[return-value]
        raise RuntimeError("no etcd member says it is the leader")

    def _watcher_timeline(self, t0: float, seconds: float) -> list[tuple[float, dict[str, float | None]]]:
        timeline = []
        while (now := time.monotonic()) < t0 + seconds:
            timeline.append((round(now - t0, 2), {m.name: (scrape(m.client_url, 1.0) or {}).get("watchers")
                                                  for m in self.cluster.members}))
            time.sleep(0.05)
        return timeline

    def _log_times(self, since_wall: float, message: str) -> dict[str, float]:
        """Per LB node: seconds from `since_wall` to the first log line starting with `message`."""
        found = {}
        for name, proc in self.procs.items():
            for line in proc.log.read_text(errors="replace").splitlines():
                entry = json.loads(line) if line.startswith("{") else {}
                at = _wall(entry.get("time", ""))
                if at >= since_wall and entry.get("message", "").startswith(message):
                    found[name] = at - since_wall
                    break
        return found

    def _agent_errors(self) -> dict[str, int]:
        total = {"etcd_errors": 0, "lease_errors": 0, "lease_grants": 0}
        for host in self.fleet.hosts:
            m = host.agent.metrics
            total["etcd_errors"] += int(m.errors.labels("etcd")._value.get())
            total["lease_errors"] += int(m.errors.labels("lease")._value.get())
            total["lease_grants"] += int(m.lease_grants._value.get())
        return total

    def process_cpu(self, usage: Any) -> dict[str, Any]:
        """CPU seconds so far: this process (200 agents, the churn, the probes), each LB node, etcd."""
        return {"bench_process_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                "lb_nodes_cpu_s": {n: round(proc_cpu(p.popen.pid), 1) for n, p in self.procs.items()
                                   if p.popen.poll() is None},
                "etcd_cpu_s": {m.name: (scrape(m.client_url) or {}).get("cpu_seconds") for m in self.cluster.members}}


def _wall(stamp: str) -> float:
    """`2026-01-02T03:04:05.678Z` → epoch seconds (0 when unparsable)."""
    try:
        return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float(stamp[19:-1] or 0)
    except ValueError:
        return 0.0

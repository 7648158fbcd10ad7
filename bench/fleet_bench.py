"""Fleet simulation (issue 15): simulated Docker hosts running the real agent, `lbgen watch` LB
nodes, a 3-member etcd cluster, all on loopback; figures in bench/fleet.md, JSON in bench/results/.

    .venv/bin/python bench/fleet_bench.py --hosts 20 --containers 10 --lb-nodes 3 --duration 20
    .venv/bin/python bench/fleet_bench.py                         # the issue's 200 x 50 x 10
    .venv/bin/python bench/fleet_report.py                        # regenerate fleet.md's tables

Phases: register every host's containers; start the LB nodes; steady churn (Poisson, `--rate`
creations a second, each replacing a container) with a marker put every `--marker-interval` s;
a deploy wave (`--wave` a second for `--wave-seconds`); a host powered off (lease expiry) and
one stopped cleanly (revoke); the etcd leader SIGKILLed during churn, then restarted; the member
holding the LB nodes' watches restarted, and when each watcher re-snapshotted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack as stack_module  # noqa: E402  (bench/stack.py: process lifetimes, signals, temp dir)
from common import ROOT  # noqa: E402
from fleet_phases import Phases  # noqa: E402
from fleet_probe import TEMPLATE, LbFiles, RegistryTap  # noqa: E402
from fleet_sim import Fleet, quiet_agent_logs  # noqa: E402
from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore  # noqa: E402
from lbgen.core.schema import services_prefix  # noqa: E402
from tests.support.etcd_cluster import EtcdCluster, start_cluster  # noqa: E402
from tests.support.util import free_port, wait_until  # noqa: E402

PREFIX = "/fleet"


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--containers", type=int, default=50, help="per host")
    p.add_argument("--services", type=int, default=500)
    p.add_argument("--lb-nodes", type=int, default=10)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of steady churn")
    p.add_argument("--rate", type=float, default=1.2, help="container creations a second (steady churn)")
    p.add_argument("--wave", type=float, default=100.0, help="creations a second during a deploy wave")
    p.add_argument("--wave-seconds", type=float, default=10.0)
    p.add_argument("--outage", type=float, default=20.0, help="seconds the killed leader stays down")
    p.add_argument("--ttl", type=int, default=15, help="agent lease TTL (lbgen agent's default)")
    p.add_argument("--resync", type=float, default=60.0, help="agent resync interval (lbgen agent's default)")
    p.add_argument("--marker-interval", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fleet.json")
    p.add_argument("--keep-logs", action="store_true")
    return p.parse_args(argv)


def lb_nodes(stack: stack_module.Stack, cluster: EtcdCluster, count: int) -> dict[str, tuple[Path, Any]]:
    """`count` `lbgen watch` processes, each with one generic target (`check: none`, no reload)."""
    nodes = {}
    template = stack.subdir("template") / "endpoints.j2"
    template.write_text(TEMPLATE)
    for i in range(count):
        name = f"lb{i:02d}"
        directory = stack.subdir(name)
        target = {"name": "endpoints", "kind": "generic", "template": str(template),
                  "dest": str(directory / "endpoints.txt"), "check": "none", "timeout": "30s"}
        settings = directory / "lbgen.yaml"
        settings.write_text(yaml.safe_dump({"registry": cluster.url, "prefix": PREFIX, "targets": [target]}))
        proc = stack.lbgen(name, "watch", "-c", str(settings), "--node", name,
                           "--metrics-addr", f"127.0.0.1:{free_port()}", log_format="json")
        nodes[name] = (directory / "endpoints.txt", proc)
    return nodes


class Churn:
    """Replaces containers at `rate` a second on a thread (Poisson arrivals; evenly spaced when
    `even`), registering an appear and a disappear expectation for each."""

    def __init__(self, fleet: Fleet, files: LbFiles, seed: int = 2) -> None:
        self.fleet, self.files = fleet, files
        self.rate, self.even = 0.0, False
        self.made: list[Any] = []
        self._adds: dict[str, Any] = {}
        self.rand = random.Random(seed)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self._thread.start()

    def set(self, rate: float, even: bool = False) -> None:
        self.rate, self.even = rate, even

    def take(self) -> list[Any]:
        made, self.made = self.made, []
        return made

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            if self.rate <= 0:
                self._stopping.wait(0.05)
                next_at = time.monotonic()
                continue
            next_at += 1 / self.rate if self.even else self.rand.expovariate(self.rate)
            self._stopping.wait(max(0.0, next_at - time.monotonic()))
            t0 = time.monotonic()
            added, removed = self.fleet.replace_one()
            appear = self.files.expect({added}, True, t0)
            self._adds[added] = appear
            self.made.append(("add", appear))
            gone = self.files.expect({removed}, False, t0)
            self.made.append(("remove", gone))
            if (earlier := self._adds.pop(removed, None)) is not None and len(earlier.seen) < len(self.files.dests):
                earlier.superseded = gone.superseded = True  # a container that lived too briefly to time

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)


def setup(stack: stack_module.Stack, args: argparse.Namespace, result: dict[str, Any]) -> Phases:
    """The cluster, the fleet (registered), the LB nodes (converged): timed, into `result`."""
    root = stack.subdir("etcd")
    cluster = start_cluster(root, 3)
    stack.cleanup(cluster.stop)
    admin = EtcdStore(EtcdConfig(endpoints=cluster.endpoints()))
    stack.cleanup(admin.close)
    fleet = Fleet(cluster.endpoints(), PREFIX, args.hosts, args.containers, args.services, args.ttl, args.resync)
    stack.cleanup(fleet.stop)
    quiet_agent_logs()
    fleet.populate()
    started = time.monotonic()
    fleet.start()
    total = args.hosts * args.containers
    wait_until(lambda: admin.count(services_prefix(PREFIX)) >= total, 600, f"{total} endpoints registered", 0.5)
    result["register_s"] = time.monotonic() - started
    nodes = lb_nodes(stack, cluster, args.lb_nodes)
    files = LbFiles({name: dest for name, (dest, _) in nodes.items()})
    files.start()
    stack.cleanup(files.stop)
    started = time.monotonic()
    wait_until(lambda: files.equal(fleet.truth()), 600, "every LB node's first file", 0.5)
    result["lb_start_s"] = time.monotonic() - started
    tap = RegistryTap(admin, services_prefix(PREFIX))
    stack.cleanup(tap.stop)
    churn = Churn(fleet, files)
    stack.cleanup(churn.stop)
    return Phases(args, cluster, admin, fleet, files, churn, {n: p for n, (_, p) in nodes.items()}, tap)


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "commit": commit(), "machine": stack_module.machine(), "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scale": {k: getattr(args, k) for k in ("hosts", "containers", "services", "lb_nodes", "duration", "rate",
                                                 "wave", "wave_seconds", "outage", "ttl", "resync")},
        "load_average": {"start": os.getloadavg()},
    }
    with stack_module.Stack(keep_logs=args.keep_logs) as stack:
        phases = setup(stack, args, result)
        result["phases"] = phases.run_all()
        result["processes"] = phases.process_cpu(resource.getrusage(resource.RUSAGE_SELF))
    result["load_average"]["end"] = os.getloadavg()
    return result


def main() -> None:
    args = arguments()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(json.dumps(result["phases"], indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

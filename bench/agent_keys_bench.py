"""An agent's resync read: the whole `services/` prefix (before issue 15) vs its own keys only.

A private etcd holds `--nodes` other nodes' endpoints (`--per-node` each, agent-shaped values) and
one node's own `--per-node` endpoints on its lease, with its presence key. Each round times both
reads of that one node's keys, and counts the bytes of values each brings back:

- scan: `snapshot({prefix}/services/)` then keep the values naming the node (the old resync);
- own: `read_own_keys` (the keys on its lease, plus the keys it wants to write; docs/agent.md).

    python bench/agent_keys_bench.py [--nodes 200] [--per-node 50] [--rounds 20]

Writes bench/results/agent_keys.json (median and spread of the rounds; bench/results.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import bulk_put, etcd, workdir
from results import Result

from lbgen.core.registration import owned_keys
from lbgen.core.schema import agent_key, services_prefix
from lbgen.services.agent_keys import read_own_keys

PREFIX = "/bench"
NODE = "host-me"


def value(node: str, n: int) -> bytes:
    return json.dumps({"address": "10.0.0.1", "port": 20000 + n, "weight": 1, "node": node,
                       "container": f"{n:064x}", "health": "healthy", "tags": [], "meta": {}}).encode()


def key(node: str, n: int) -> str:
    return f"{PREFIX}/services/s{n % 20:02d}/endpoints/{node}.c{n}.80"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--per-node", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with workdir() as root, etcd(root / "etcd") as (_, store):
        others = [(key(f"host-{i:04d}", n), value(f"host-{i:04d}", n))
                  for i in range(args.nodes) for n in range(args.per_node)]
        bulk_put(store, others)
        lease = store.grant_lease(600)
        mine = [key(NODE, n) for n in range(args.per_node)]
        for n, k in enumerate(mine):
            store.put(k, value(NODE, n), lease=lease)
        store.put(agent_key(PREFIX, NODE), b'{"docker_reachable": true}', lease=lease)
        scan, own = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            snapshot = store.snapshot(services_prefix(PREFIX))
            found = owned_keys(snapshot.items, PREFIX, NODE)
            scan.append((time.perf_counter() - started, sum(len(kv.value) for kv in snapshot.items), len(found)))
            started = time.perf_counter()
            read = read_own_keys(store, PREFIX, NODE, (lease, 0), mine)
            own.append((time.perf_counter() - started, sum(len(kv.value) for kv in read.values()), len(read)))
        with Result("agent_keys", sys.argv) as result:
            result.notes.append(f"{len(others):,} other keys, {len(mine)} own keys, {args.rounds} rounds")
            for name, path, rounds in (
                    ("scan services/",
                     "EtcdStore.snapshot of services/ + owned_keys (the resync before issue 15)", scan),
                    ("own keys", "read_own_keys: the lease's keys + one transaction of reads", own)):
                result.add(f"{name}: read", path, "ms", [r[0] * 1000 for r in rounds])
                result.add(f"{name}: bytes of values read", path, "bytes", [rounds[0][1]],
                           note=f"{rounds[0][2]} own keys found")


if __name__ == "__main__":
    main()

"""What a change costs to hand to the render worker (issue 13): the changed services as a delta
against the worker's catalog, or the whole catalog, each pickled and read back in process.

    python bench/render_worker_bench.py [--changes 30]

Per size (100 keys, 10,500, 110,000: services x endpoints as watch_bench and scale_bench), each
run changes one endpoint's weight, then times `_Handle.request` + `encode_request` (the parent)
and reading the request back into a `Worker`'s catalog (the worker), against pickling and
unpickling the whole catalog; checks the worker's catalog equals the parent's. Writes
bench/results/render_worker.json.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from lbgen.adapters.bounded_render import _Handle  # noqa: E402
from lbgen.adapters.render_wire import encode_request  # noqa: E402
from lbgen.adapters.render_worker import Worker  # noqa: E402
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service  # noqa: E402
from lbgen.core.settings import Target  # noqa: E402
from results import Result  # noqa: E402

TARGET = Target(name="t", template="t.j2", dest="/dev/null", kind="generic")


def catalog(services: int, per_service: int) -> Catalog:
    return Catalog(1, tuple(
        Service(f"s{i:05d}", {"listen": 80, "hosts": [f"h{i}.example"]},
                tuple(Endpoint(f"e{j:03d}", f"10.0.{i % 250}.{j + 1}", 20000 + j) for j in range(per_service)))
        for i in range(services)))


def one_change(now: Catalog, run: int) -> Catalog:
    old = now.services[run * 7 % len(now.services)]
    last = old.all_endpoints[-1]
    new = msgspec.structs.replace(old, all_endpoints=old.all_endpoints[:-1] + (last.with_weight(2 + run),))
    return Catalog(now.revision + 1, tuple(new if s is old else s for s in now.services))


def runs(services: int, per_service: int, changes: int) -> tuple[list[float], list[float], int, int]:
    now = catalog(services, per_service)
    handle, worker = _Handle(0, -1, -1), Worker(None, True)
    handle.forked(now)
    handle.record("source", TARGET, DEFAULT_SERVED_HEALTH, None)
    worker._take(now)  # as the fork leaves it: the catalog inherited
    delta, whole, delta_bytes, whole_bytes = [], [], 0, 0
    for run in range(changes):
        now = one_change(now, run)
        start = time.perf_counter()
        data = encode_request(handle.request("source", now, TARGET, DEFAULT_SERVED_HEALTH, None))
        worker._take(pickle.loads(data[8:]).catalog)
        delta.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        everything = pickle.dumps(now, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(everything)
        whole.append((time.perf_counter() - start) * 1000)
        delta_bytes, whole_bytes = len(data), len(everything)
        assert worker._catalog == now, "the worker's catalog differs from the parent's"
    return delta, whole, delta_bytes, whole_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    with Result("render_worker", sys.argv) as result:
        for services, per_service in ((10, 9), (500, 20), (10_000, 10)):
            keys = f"{services * (per_service + 1):,} keys"
            delta, whole, delta_bytes, whole_bytes = runs(services, per_service, args.changes)
            result.add(f"{keys}: one change as a delta", "_Handle.request + encode_request + Worker._take",
                       "ms", delta, note=f"{delta_bytes:,} bytes")
            result.add(f"{keys}: the whole catalog instead", "pickle.dumps + pickle.loads of the Catalog",
                       "ms", whole, note=f"{whole_bytes:,} bytes")
        result.notes.append("in process, CPU-bound: one endpoint's weight changes per run")


if __name__ == "__main__":
    main()

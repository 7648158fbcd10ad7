"""Decoding and validating registry values at scale (issue 13): 10,000 services / 100,000 endpoints
(110,000 values), in process, no etcd.

    python bench/decode_bench.py [--services 10000] [--per-service 10] [--runs 5]

The values are render_bench's catalog encoded as the agent writes them. Each run measures, in CPU
time: the bounded JSON reader alone (`load_json` on every value), the full decode + validate
(`decode_spec` / `decode_endpoint`), and a watcher's start (`CatalogState.load` of the snapshot,
keys parsed too, then `catalog()`). Writes bench/results/decode.json (median and spread of the runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from render_bench import big_catalog
from results import Result

from lbgen.core.bounded import load_json
from lbgen.core.catalog import CatalogState
from lbgen.core.schema import decode_endpoint, decode_spec, encode_endpoint, encode_spec, endpoint_key, spec_key
from lbgen.core.values import KeyValue, Snapshot

PREFIX = "/bench"


def values(services: int, per_service: int) -> list[tuple[str, bytes, str]]:
    """(key, raw value, endpoint id or "" for a spec) for every registry value."""
    items = []
    for service in big_catalog(services, per_service).services:
        items.append((spec_key(PREFIX, service.name), encode_spec(service.spec), ""))
        items += [(endpoint_key(PREFIX, service.name, e.id), encode_endpoint(e), e.id) for e in service.all_endpoints]
    return items


def cpu_ms(step: Callable[[], Any]) -> float:
    start = time.process_time()
    step()
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--per-service", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    items = values(args.services, args.per_service)
    snapshot = Snapshot(revision=1, items=tuple(KeyValue(k, v, 1) for k, v, _ in items))
    n = f"{len(items):,} values"

    def reader() -> None:
        for _, raw, _ in items:
            load_json(raw)

    def decode() -> None:
        for _, raw, endpoint_id in items:
            decode_endpoint(endpoint_id, raw) if endpoint_id else decode_spec(raw)

    def start() -> None:
        state = CatalogState(PREFIX)
        assert not state.load(snapshot)
        state.catalog()

    with Result("decode", sys.argv) as result:
        for name, path, step in (
                (f"bounded JSON reader, {n}", "lbgen.core.bounded.load_json on each raw value", reader),
                (f"decode + validate, {n}", "lbgen.core.schema.decode_spec / decode_endpoint on each value", decode),
                (f"catalog from a snapshot, {n}", "CatalogState.load(snapshot) + catalog(): keys parsed, "
                 "values decoded and validated, services built", start)):
            result.add(name, path, "ms CPU", [cpu_ms(step) for _ in range(args.runs)])


if __name__ == "__main__":
    main()

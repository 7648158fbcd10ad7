"""What finding a quarantined service costs: checker runs and wall time, with the real `nginx -t`.

    python bench/quarantine_bench.py [--services 100 1000] [--per-service 2] [--bad 1]

For each size: a catalog of N http services applied, then a pass that changes C of them (C = 16,
and C = N, as after a restart with nothing applied), `--bad` of the changed ones pointing at
`no-such-host.invalid`. Prints the probes (each a render of the mixed catalog plus `nginx -t` on a
staged file beside dest, exactly as `lbgen watch` runs them), the wall time of the search, and the
steady state: the next pass with the same service still bad (its suspects are tried first).
Each search runs once (n=1). Writes bench/results/quarantine.json (bench/results.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench.render_bench import big_catalog  # noqa: E402
from lbgen.adapters.files import LocalFiles  # noqa: E402
from lbgen.adapters.process import SubprocessRunner  # noqa: E402
from lbgen.core.model import Catalog, Endpoint  # noqa: E402
from lbgen.core.quarantine import checker_reason  # noqa: E402
from lbgen.core.render import render  # noqa: E402
from lbgen.core.settings import Target  # noqa: E402
from lbgen.services.applier import Applier  # noqa: E402
from lbgen.services.quarantine import reason_of, search  # noqa: E402
from results import Result  # noqa: E402


def changed(catalog: Catalog, count: int, bad: int) -> Catalog:
    """`catalog` with one more endpoint in `count` services, the first `bad` of them unresolvable."""
    step = max(1, len(catalog.services) // count)
    picked = {catalog.services[i].name: n for n, i in enumerate(range(0, len(catalog.services), step)) if n < count}
    services = []
    for service in catalog.services:
        if service.name in picked:
            address = "no-such-host.invalid" if picked[service.name] < bad else "10.9.9.9"
            extra = Endpoint(f"new.{service.name}", address, 9000)
            service = msgspec.structs.replace(service, all_endpoints=service.all_endpoints + (extra,))
        services.append(service)
    return Catalog(catalog.revision + 1, tuple(services))


def one(result: Result, workdir: Path, services: int, per_service: int, count: int, bad: int) -> None:
    source = (ROOT / "templates/nginx.conf.j2").read_text()
    target = Target(name="nginx", template="nginx.conf.j2", dest=str(workdir / "nginx.conf"), kind="nginx",
                    check=("nginx", "-t", "-q", "-c", "{staged}"), timeout=300.0,
                    vars={"pid": f"{workdir}/nginx.pid", "error_log": f"{workdir}/error.log",
                          "access_log": "off", "temp_dir": str(workdir), "server_names_hash_max_size": 65536})
    applier = Applier(LocalFiles(), SubprocessRunner())
    applied = big_catalog(services, per_service)
    new = changed(applied, count, bad)
    start = time.perf_counter()
    full = applier.check_text(target, render(source, new, target))
    assert full is not None, "the full render must be refused"
    full_s = time.perf_counter() - start
    result.add(f"{services:,} services, {count:,} changed, {bad} bad: the refused full render + check",
               "lbgen.core.render.render + the real nginx -t, before any search", "s", [full_s])
    base = None if count >= services else applied
    held: frozenset[str] = frozenset()
    for label, suspects in (("first pass", frozenset()), ("next pass", None)):
        start = time.perf_counter()
        resolution = search(target, new, base, lambda c: render(source, c, target), applier.check_text,
                            checker_reason(getattr(full, "output", ""), reason_of(full)),
                            suspects if suspects is not None else frozenset(held))
        elapsed = time.perf_counter() - start
        assert resolution is not None
        held = resolution.held
        name = f"{services:,} services, {count:,} changed, {bad} bad, {label}"
        path = "services.quarantine.search: renders of the mixed catalog + the real nginx -t each"
        result.add(f"{name}: search", path, "s", [elapsed], note=f"{resolution.probes} probes, held {len(held)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--per-service", type=int, default=2)
    parser.add_argument("--bad", type=int, default=1)
    args = parser.parse_args()
    with Result("quarantine", sys.argv) as result:
        result.notes.append(f"{args.per_service} endpoints per service; "
                            "the bad endpoint's host is no-such-host.invalid")
        for services in args.services:
            for count in sorted({min(16, services), services}):
                with tempfile.TemporaryDirectory() as workdir:
                    one(result, Path(workdir), services, args.per_service, count, args.bad)


if __name__ == "__main__":
    main()

"""Render time and peak RSS of the default templates at 10,000 services / 100,000 endpoints.

    python bench/render_bench.py [--services 10000] [--per-service 10] [--ports 100] [--repeat 5] [--check] [--bounded]
                                 [--change N]

Per template: the first render (includes compiling the template and building the views and
slots), then `--repeat` re-renders of the *identical* catalog (compiled template, every service's
views and slots reused: the cheapest case, not a watcher pass after a change), reported as median
and spread, never as the best run; CPU time, the output size, and the process's peak RSS. With
--check, also the wall time of the real `nginx -t` and `haproxy -c` on the output. With
--bounded, also the re-renders through the bounded renderer (its render worker: a long-lived
forked child with rlimits, as `lbgen watch` renders; issues 10 and 13) next to in-process ones,
the output checked byte-identical, and the same for a trivial template: that figure is the
worker's round trip alone (request, limits, answer through the pipes). CPU through the bounded
renderer includes the worker's, read from /proc/PID/schedstat while it runs. It first finds
the smallest `render_memory` each template needs (then "first" is no longer a cold render: the
probes compiled it). The catalog is built in memory (decoding is measured by decode_bench.py).
Writes bench/results/render.json (bench/results.py).

With --change N, instead: N times, one endpoint of one service (a different one each time) changes
weight and each template is rendered again, with the fragment cache (issue 13) and without,
in process and through the bounded renderer, every cached text checked byte-identical to the
uncached one; median and spread of each. Writes bench/results/render_change.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from msgspec.structs import replace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from lbgen.adapters.bounded_render import BoundedRenderer  # noqa: E402
from lbgen.core.guard import check_drop  # noqa: E402
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service  # noqa: E402
from lbgen.core.render import FragmentCache, fragment_session, render  # noqa: E402
from lbgen.core.settings import MIB, RENDER_MEMORY_MIN, Guard, Target  # noqa: E402
from lbgen.errors import TemplateError  # noqa: E402
from common import forks_cpu_s  # noqa: E402
from results import Result  # noqa: E402

HEALTH = ("healthy", "healthy", "healthy", "none", "starting")


def big_catalog(services: int, per_service: int, ports: int = 100) -> Catalog:
    """`services` http services on `ports` ports, each with its own host name and `per_service`
    endpoints (`ports=1`: the common ingress shape, every site a virtual host of one port)."""
    built = []
    for i in range(services):
        spec = {"listen": 10000 + i % ports, "mode": "http", "hosts": [f"svc{i}.example.test"]}
        endpoints = tuple(
            Endpoint(id=f"node{j}.svc{i}.{j}", address=f"10.{i // 250 % 250}.{i % 250}.{j + 1}",
                     port=8000 + j, weight=1 + j % 3, node=f"node{j}", health=HEALTH[j % len(HEALTH)])
            for j in range(per_service)
        )
        built.append(Service(f"svc{i:05d}", spec, endpoints))
    return Catalog(revision=1, services=tuple(built))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_checker(kind: str, text: str) -> tuple[float, float, str]:
    """Wall and CPU ms of the LB's own checker on `text`, as the watcher runs it, and its verdict."""
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / kind
        config.write_text(text)
        argv = (["nginx", "-t", "-q", "-c", str(config), "-p", workdir] if kind == "nginx"
                else ["haproxy", "-c", "-q", "-f", str(config)])
        start, start_cpu = time.perf_counter(), children_cpu()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        elapsed, cpu = time.perf_counter() - start, children_cpu() - start_cpu
    verdict = "ok" if result.returncode == 0 else f"FAILED: {result.stderr.strip()[-200:]}"
    return elapsed * 1000, cpu * 1000, verdict


def children_cpu() -> float:
    """CPU seconds of this process's children: those reaped, and the render workers still running."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + forks_cpu_s(os.getpid())


def bounded_runs(result: Result, source: str, catalog: Catalog, target: Target, repeat: int) -> None:
    """`repeat` bounded renders, each next to an in-process one; asserts identical output. Both
    without the fragment cache: the difference is the bound's cost alone."""
    renderer = BoundedRenderer(fragments=False)
    expected = render(source, catalog, target)
    inline, bounded, inline_cpu, bounded_cpu = [], [], [], []
    for _ in range(max(repeat, 1)):
        start, start_cpu = time.perf_counter(), time.process_time()
        render(source, catalog, target)
        inline.append((time.perf_counter() - start) * 1000)
        inline_cpu.append((time.process_time() - start_cpu) * 1000)
        start, start_cpu = time.perf_counter(), time.process_time() + children_cpu()
        text = renderer.render(source, catalog, target, DEFAULT_SERVED_HEALTH)
        bounded.append((time.perf_counter() - start) * 1000)
        bounded_cpu.append((time.process_time() + children_cpu() - start_cpu) * 1000)  # the child's included
        assert text == expected, "the bounded render differs from the in-process one"
    renderer.close()
    name = target.template
    result.add(f"{name}: bounded re-render, wall", "BoundedRenderer: its render worker (forked once, rlimits)",
               "ms", bounded)
    result.add(f"{name}: bounded re-render, CPU", "BoundedRenderer, the worker's CPU included", "ms", bounded_cpu)
    result.add(f"{name}: in-process re-render (same runs), wall", "lbgen.core.render.render", "ms", inline)
    result.add(f"{name}: in-process re-render (same runs), CPU", "lbgen.core.render.render", "ms", inline_cpu)


def smallest_budget(source: str, catalog: Catalog, target: Target) -> int:
    """The smallest `render_memory` (MiB, to 1 MiB) with which the bounded render succeeds."""
    low, high = RENDER_MEMORY_MIN // MIB - 1, 4096  # fails at low, succeeds at high
    while high - low > 1:
        middle = (low + high) // 2
        renderer = BoundedRenderer()
        try:
            renderer.render(source, catalog, replace(target, render_memory=middle * MIB), DEFAULT_SERVED_HEALTH)
            high = middle
        except TemplateError:
            low = middle
        finally:
            renderer.close()
    return high


def templates() -> list[tuple[str, Target]]:
    """The default templates with bench vars, and a trivial one (the worker's round trip alone)."""
    variables = {"pid": "/tmp/lbgen-bench.pid", "error_log": "stderr", "access_log": "off",
                 "stats_socket": "/tmp/lbgen-bench.sock"}
    found = [((ROOT / "templates" / name).read_text(), Target(name=kind, template=name, dest="/dev/null",
                                                              kind=kind, vars=variables))
             for kind, name in (("nginx", "nginx.conf.j2"), ("haproxy", "haproxy.cfg.j2"))]
    return found + [("{{ revision }}", Target(name="trivial", template="trivial", dest="/dev/null"))]


def record_budgets(result: Result, catalog: Catalog) -> None:
    """Before any render in this process, as in the watcher: a child reuses the parent's free heap,
    which renders done in-process before would leave behind (and so hide what a render needs)."""
    for source, target in templates()[:2]:
        result.add(f"{target.template}: smallest render_memory", "BoundedRenderer, bisected to 1 MiB", "MiB",
                   [smallest_budget(source, catalog, target)])


def measure(result: Result, source: str, catalog: Catalog, target: Target, args: argparse.Namespace) -> None:
    """One template: the first render, the re-renders, and optionally the checker and bounded runs."""
    name = target.template
    path = "lbgen.core.render.render in process"
    start, start_cpu = time.perf_counter(), time.process_time()
    text = render(source, catalog, target)
    result.add(f"{name}: first render, wall", f"{path}: compile + build every view", "ms",
               [(time.perf_counter() - start) * 1000])
    result.add(f"{name}: first render, CPU", f"{path}: compile + build every view", "ms",
               [(time.process_time() - start_cpu) * 1000])
    times, cpu = [], []
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        render(source, catalog, target)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    again = f"{path}: the identical catalog again (compiled, every view reused; not a pass after a change)"
    result.add(f"{name}: re-render, wall", again, "ms", times)
    result.add(f"{name}: re-render, CPU", again, "ms", cpu)
    result.add(f"{name}: output", "the rendered config", "MB", [len(text) / 1e6])
    result.add(f"{name}: peak RSS of the bench so far", "getrusage(RUSAGE_SELF)", "MB", [peak_rss_mb()])
    if args.check:
        wall, checker_cpu, verdict = time_checker(target.kind, text)
        checker = "nginx -t -q" if target.kind == "nginx" else "haproxy -c -q"
        result.add(f"{name}: {checker}, wall", f"the real checker on the output, verdict {verdict}", "ms", [wall])
        result.add(f"{name}: {checker}, CPU", f"the real checker on the output, verdict {verdict}", "ms", [checker_cpu])
    if args.bounded:
        bounded_runs(result, source, catalog, target, args.repeat)


def one_change(catalog: Catalog, run: int) -> Catalog:
    """`catalog` with the weight of the first endpoint of one service changed (another each run)."""
    services = list(catalog.services)
    index = run * 7919 % len(services)
    service = services[index]
    first = service.all_endpoints[0].with_weight(service.all_endpoints[0].weight % 3 + 1)
    services[index] = replace(service, all_endpoints=(first, *service.all_endpoints[1:]))
    return Catalog(revision=catalog.revision + 1, services=tuple(services))


def timed(runs: dict[str, list[float]], name: str, make: Callable[[], str]) -> str:
    start, start_cpu = time.perf_counter(), time.process_time() + children_cpu()
    text = make()
    runs.setdefault(f"{name}, wall", []).append((time.perf_counter() - start) * 1000)
    runs.setdefault(f"{name}, CPU", []).append((time.process_time() + children_cpu() - start_cpu) * 1000)
    return text


def change_runs(result: Result, source: str, catalog: Catalog, target: Target, repeat: int) -> None:
    """One endpoint changes, then the drop guard compares and the template renders again: cached
    and not, in process and bounded (the guard runs before each target's render in `lbgen watch`)."""
    cache, cached_bounded, plain_bounded = FragmentCache(), BoundedRenderer(), BoundedRenderer(fragments=False)

    def cached() -> str:
        session = fragment_session(cache)
        text = render(source, catalog, target, fragments=session)
        session.commit()
        return text

    def bounded(renderer: BoundedRenderer) -> Callable[[], str]:
        return lambda: renderer.render(source, catalog, target, DEFAULT_SERVED_HEALTH)

    cached(), bounded(cached_bounded)(), bounded(plain_bounded)()  # the caches hold the first render
    runs: dict[str, list[float]] = {}
    for run in range(repeat):
        previous, catalog = catalog, one_change(catalog, run)
        timed(runs, "drop guard", lambda: str(check_drop(previous, catalog, Guard(), DEFAULT_SERVED_HEALTH)))
        text = timed(runs, "in process, fragment cache", cached)
        assert text == timed(runs, "in process, uncached", lambda: render(source, catalog, target))
        text = timed(runs, "bounded, fragment cache", bounded(cached_bounded))
        assert text == timed(runs, "bounded, uncached", bounded(plain_bounded))
    cached_bounded.close()
    plain_bounded.close()
    paths = {"in process": "lbgen.core.render.render", "drop guard": "lbgen.core.guard.check_drop, in process",
             "bounded": "BoundedRenderer (its render worker; CPU includes it)"}
    label = f"{target.template} (runtime: true)" if target.runtime else target.template
    for name, values in runs.items():
        result.add(f"{label}: one change, {name}", paths[name.split(",")[0]], "ms", values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--per-service", type=int, default=10)
    parser.add_argument("--ports", type=int, default=100,
                        help="listen ports the services share (1: every service a virtual host of one port)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="also time nginx -t / haproxy -c")
    parser.add_argument("--bounded", action="store_true", help="also render through the bounded renderer")
    parser.add_argument("--change", type=int, default=0, metavar="N",
                        help="instead: N one-endpoint changes, re-rendered with and without the fragment cache")
    args = parser.parse_args()
    catalog = big_catalog(args.services, args.per_service, args.ports)
    print(f"catalog: {args.services} services, {catalog.endpoint_count} endpoints, "
          f"peak RSS {peak_rss_mb():.0f} MB")
    if args.change:
        scenario = "render_change" if args.ports == 100 else f"render_change_{args.ports}port"
        with Result(scenario, sys.argv) as result:
            result.notes.append(f"{args.services:,} services on {args.ports:,} port{'s' * (args.ports > 1)}, "
                                f"{catalog.endpoint_count:,} endpoints, built in memory; "
                                "each run changes one endpoint's weight, then renders")
            nginx, haproxy = templates()[:2]
            runtime = replace(nginx[1], runtime=True, vars={**nginx[1].vars, "lua_dir": "/usr/share/lbgen/lua"})
            for source, target in (nginx, (nginx[0], runtime), haproxy):
                change_runs(result, source, catalog, target, args.change)
        return
    with Result("render", sys.argv) as result:
        result.notes.append(f"{args.services:,} services, {catalog.endpoint_count:,} endpoints, built in memory")
        if args.bounded:
            record_budgets(result, catalog)
        for source, target in templates()[:2]:
            measure(result, source, catalog, target, args)
        if args.bounded:
            source, trivial = templates()[2]
            bounded_runs(result, source, catalog, trivial, args.repeat)


if __name__ == "__main__":
    main()

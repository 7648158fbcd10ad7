"""Start-up cost of the command line (issue 13): `lbgen --help` and a one-shot `lbgen render` of
2,000 endpoints from a file registry, against a bare `python -c pass` of the same interpreter.

    python bench/startup_bench.py [--runs 20] [--services 200] [--per-service 10]

Each run is a fresh process (`sys.executable`, as the installed `lbgen` script runs); wall time,
CPU time (user + system of the child) comes from `wait4`. The render renders
templates/nginx.conf.j2 to a generic target checked by `/bin/true` (no nginx), with the dest
removed before each run so every run writes it (the applied state beside it stays: the registry
is unchanged, so the drop guard finds its own catalog there and decodes nothing); no reload
command. The render is measured twice: with lbgen's compiled-template cache warm (XDG_CACHE_HOME
in the bench's directory, filled by a run before), and cold (that cache emptied before each run:
the template compiled every time). lbgen's modules are compiled to bytecode first, as `pip
install` does: with PYTHONDONTWRITEBYTECODE set (as in this project's sessions), an editable
checkout would otherwise compile every lbgen module from source on every start. Prints the median
and the spread of the runs and writes bench/results/startup.json.

Where a render's time goes: `--runs` more renders (cache warm), each in a fresh process running
bench/render_steps.py, which times each step of `lbgen render` in place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import yaml

from common import precompile
from results import ROOT, Result


def run_once(argv: Sequence[str], cwd: Path) -> tuple[float, float]:
    """Wall ms and CPU ms of one run of `argv` (template code cache in `cwd`); a failing run stops the bench."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = (time.perf_counter() - start) * 1000
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(argv)}: exit {child.returncode}: {child.stderr.read().decode()[-300:]}")
    child.stderr.close()
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def registry(services: int, per_service: int) -> dict[str, object]:
    return {"services": {
        f"s{i:04d}": {"spec": {"listen": 8080, "mode": "http", "hosts": [f"s{i}.bench.test"]},
                      "endpoints": {f"node{j}.s{i}.{j}": {"address": f"10.0.{i % 250}.{j + 1}", "port": 8000 + j,
                                                         "weight": 1, "health": "healthy"}
                                    for j in range(per_service)}}
        for i in range(services)}}


def render_setup(root: Path, services: int, per_service: int) -> Path:
    (root / "registry.yaml").write_text(yaml.safe_dump(registry(services, per_service)))
    variables = {"listen_address": "127.0.0.1", "pid": f"{root}/nginx.pid", "error_log": f"{root}/error.log",
                 "access_log": "off", "temp_dir": str(root)}
    target = {"name": "nginx", "kind": "generic", "template": str(ROOT / "templates" / "nginx.conf.j2"),
              "dest": str(root / "nginx.conf"), "check": ["/bin/true", "{staged}"], "vars": variables}
    settings = root / "lbgen.yaml"
    settings.write_text(yaml.safe_dump({"registry": "file:registry.yaml", "targets": [target]}))
    return root / "nginx.conf"


def measure(result: Result, name: str, path: str, argv: Sequence[str], runs: int, cwd: Path,
            before: Sequence[Path] = ()) -> tuple[float, float]:
    """Median wall ms and median CPU ms of `runs` runs, recording the wall and CPU figures. (No peak RSS: a child's
    `ru_maxrss` includes the forking bench's own pages before the exec.)"""
    walls, cpus = [], []
    for _ in range(runs):
        for stale in before:
            if stale.is_dir():
                shutil.rmtree(stale)
            stale.unlink(missing_ok=True)
        wall, cpu = run_once(argv, cwd)
        walls.append(wall)
        cpus.append(cpu)
    result.add(f"{name}: wall", path, "ms", walls)
    result.add(f"{name}: CPU", path, "ms", cpus)
    return statistics.median(walls), statistics.median(cpus)


def measure_phases(result: Result, path: str, runs: int, cwd: Path, dest: Path) -> None:
    """Each step's median over `runs` fresh processes of bench/render_steps.py."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    steps: dict[str, list[float]] = {}
    for _ in range(runs):
        dest.unlink(missing_ok=True)
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("render_steps.py"))], cwd=cwd, env=env,
                             check=True, capture_output=True, text=True).stdout
        for step, ms in json.loads(out.splitlines()[-1]).items():
            steps.setdefault(step, []).append(ms)
    for step, values in steps.items():
        result.add(f"lbgen render step: {step}", path, "ms", values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--per-service", type=int, default=10)
    args = parser.parse_args()
    python = sys.executable
    endpoints = args.services * args.per_service
    with tempfile.TemporaryDirectory(prefix="lbgen-bench-") as name, Result("startup", sys.argv) as result:
        root = Path(name)
        precompile()
        dest = render_setup(root, args.services, args.per_service)
        bare = measure(result, "python -c pass", "a bare interpreter: python -c pass",
                       [python, "-c", "pass"], args.runs, root)
        helped = measure(result, "lbgen --help", "python -m lbgen --help (top-level help, no command)",
                         [python, "-m", "lbgen", "--help"], args.runs, root)
        render = [python, "-m", "lbgen", "render", "-c", "lbgen.yaml"]
        path = (f"python -m lbgen render: file registry ({args.services} services x {args.per_service}"
                " endpoints, unchanged since the run before), nginx.conf.j2 to a generic target, check /bin/true,"
                " no reload")
        run_once(render, root)  # fills the template code cache
        rendered = measure(result, f"lbgen render, {endpoints:,} endpoints", path + ", template code cached",
                           render, args.runs, root, before=[dest])
        cold = measure(result, f"lbgen render, {endpoints:,} endpoints, template compiled",
                       path + ", template code cache emptied before each run", render, args.runs, root,
                       before=[dest, root / "cache"])
        measure_phases(result, "the render above (template code cached), each step timed in place "
                       "(bench/render_steps.py)", args.runs, root, dest)
        result.notes.append("lbgen's modules precompiled to bytecode before the runs (as pip install does)")
        result.notes.append(f"medians, wall: --help {helped[0] / bare[0]:.1f}x python -c pass (goal 4x), "
                            f"render {rendered[0] / bare[0]:.1f}x (goal 8x), {cold[0] / bare[0]:.1f}x with the "
                            f"template compiled; CPU: --help {helped[1] / bare[1]:.1f}x, "
                            f"render {rendered[1] / bare[1]:.1f}x "
                            f"({cold[1] / bare[1]:.1f}x compiled; wall is the more load-sensitive)")
        print(result.notes[-1])


if __name__ == "__main__":
    main()

"""A benchmark's result as a JSON file, so the tables in bench/*.md are generated, not typed in.

    with Result("startup", argv=sys.argv) as result:
        result.add("lbgen --help", path="python -m lbgen --help, a fresh interpreter", unit="ms",
                   values=[41.0, 44.2, ...])

writes `bench/results/<scenario>.json`: the commit (and whether the tree was dirty), the date, the
machine, the load average before and after, and each figure with the path it measured, its unit,
and the median and spread (min, max, n) of its runs (never only the best). `bench/tables.py`
turns these files into the marked tables of bench/README.md and bench/system.md.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Figure:
    """One measured quantity: what (`name`), through which code path (`path`), and its runs."""

    name: str
    path: str
    unit: str
    median: float
    min: float
    max: float
    n: int
    note: str = ""
    p99: float | None = None  # with 20 runs or more (nearest rank)


def summarize(name: str, path: str, unit: str, values: Sequence[float], note: str = "") -> Figure:
    if not values:
        raise ValueError(f"{name}: no values")
    ordered = sorted(values)
    p99 = round(ordered[min(len(ordered) - 1, -(-99 * len(ordered) // 100) - 1)], 3) if len(ordered) >= 20 else None
    return Figure(name, path, unit, round(statistics.median(values), 3), round(min(values), 3),
                  round(max(values), 3), len(values), note, p99)


def machine() -> dict[str, object]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "system": platform.platform()}


def commit() -> dict[str, object]:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short=12", "HEAD") or "?",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Result:
    """Collects a scenario's figures; on a clean exit writes them with the run's context."""

    scenario: str
    argv: Sequence[str]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __enter__(self) -> Result:
        self._started = datetime.datetime.now(datetime.timezone.utc)
        self._load_before = load_average()
        return self

    def add(self, name: str, path: str, unit: str, values: Sequence[float], note: str = "") -> Figure:
        figure = summarize(name, path, unit, values, note)
        self.figures.append(figure)
        p99 = f", p99 {figure.p99:g}" if figure.p99 is not None else ""
        spread = f" ({figure.min:g}–{figure.max:g}{p99}, n={figure.n})" if figure.n > 1 else ""
        print(f"  {name}: {'median ' if spread else ''}{figure.median:g} {unit}{spread} [{path}]")
        return figure

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            print(f"wrote {self.write()}")

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        data = {"scenario": self.scenario, "command": " ".join(["python", *self.argv]), **commit(),
                "date": self._started.strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
                "load_before": self._load_before, "load_after": load_average(),
                "figures": [asdict(f) for f in self.figures], "notes": self.notes}
        path = RESULTS / f"{self.scenario}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path

"""One `lbgen render` (in the current directory, `-c lbgen.yaml`) in this fresh process, through
`lbgen.cli.main` as the installed script runs it, each step of `lbgen.cli.render.run` timed in
place; prints the milliseconds per step as one JSON line. Run by bench/startup_bench.py.

It imports nothing but lbgen and the standard library before lbgen's own imports are timed (the
interpreter's start itself is `python -c pass` in startup_bench).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from typing import Any, Callable  # noqa: E402

# The steps of `lbgen.cli.render.run`, by the names it calls them by.
STEPS = {"load_settings": "settings", "one_shot_renderer": "render worker forked ahead",
         "open_registry": "registry file read", "catalog_from_snapshot": "catalog",
         "render_targets": "bounded render", "_guard": "drop guard", "_save_applied": "applied state written"}


def main() -> None:
    import lbgen.cli.render as command
    from lbgen.cli import main as lbgen_main
    from lbgen.services.applier import Applier

    took = {"imports": (time.perf_counter() - STARTED) * 1000}

    def timed(step: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run_timed(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                took[step] = took.get(step, 0.0) + (time.perf_counter() - begun) * 1000
        return run_timed

    for name, step in STEPS.items():
        setattr(command, name, timed(step, getattr(command, name)))
    Applier.apply = timed("apply (check, write, rename)", Applier.apply)  # type: ignore[method-assign]
    sys.argv = ["lbgen", "render", "-c", "lbgen.yaml"]  # argv None: main applies a real process's GC settings
    if lbgen_main():
        raise SystemExit("lbgen render failed")
    took["the rest (parsing arguments, logging, reading the template)"] = \
        (time.perf_counter() - STARTED) * 1000 - sum(took.values())
    print(json.dumps(took))


if __name__ == "__main__":
    main()

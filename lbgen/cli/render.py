"""`lbgen render`: one pass — render every target, validate, apply — or, with `--dry-run`, the preview.

The dry run writes nothing live and reloads nothing: per target it prints the unified diff against
the current file (or "no change") and the real checker's verdict on the staged candidate.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lbgen.adapters.files import name_candidates
from lbgen.cli.lb_node import (
    add_settings_arguments,
    build_applier,
    chosen_targets,
    load_settings,
    log_rejected,
    open_registry,
    render_targets,
)
from lbgen.core.catalog import catalog_from_snapshot
from lbgen.core.settings import Target
from lbgen.errors import ApplyError, TemplateError
from lbgen.services.applier import Applier


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `render` sub-command."""
    parser = commands.add_parser(
        "render", help="render, validate and apply once (--dry-run: print the diff and the checker's verdict)",
        description="Render every target from the registry once, validate it with the LB's checker, "
        "swap it in and reload; exit non-zero if any target failed. With --dry-run nothing live is "
        "touched: the diff against the current file and the checker's verdict are printed.")
    add_settings_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="preview only: diff + checker verdict, no write, no reload")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    targets = chosen_targets(settings, args.target)
    store, settings = open_registry(args, settings)
    try:
        catalog, rejected = catalog_from_snapshot(settings.prefix, store.snapshot(settings.prefix))
    finally:
        store.close()
    log_rejected(rejected, catalog.revision)
    rendered = render_targets(settings, targets, catalog)
    for name, error in rendered.errors.items():
        print(f"{name}: render failed: {error}", file=sys.stderr)
    applier = build_applier()
    if args.dry_run:
        failed = _preview(applier, targets, rendered.texts)
    else:
        failed = _apply(applier, targets, rendered.texts, catalog.revision)
    if rendered.errors:
        raise TemplateError(f"{len(rendered.errors)} target(s) failed to render: {', '.join(rendered.errors)}")
    if failed:
        raise ApplyError(f"{len(failed)} target(s) failed: {', '.join(failed)}")
    return 0


def _preview(applier: Applier, targets: Sequence[Target], texts: dict[str, str]) -> list[str]:
    failed = []
    dests = {t.name: t.dest for t in targets}
    for preview in applier.preview(targets, texts):
        print(f"=== {preview.target}")
        print(preview.diff.rstrip("\n") if preview.diff else "no change")
        if preview.valid:
            how = " (would go through the runtime API, no reload)" if preview.runtime else ""
            print(f"--- {preview.target}: check passed{how}")
        else:
            failed.append(preview.target)
            print(f"--- {preview.target}: check FAILED")
            print(name_candidates(preview.check_output.rstrip("\n"), dests[preview.target]))
    return failed


def _apply(applier: Applier, targets: Sequence[Target], texts: dict[str, str], revision: int) -> list[str]:
    """Apply and print one line per target; a failure names the checker's reason (its `[emerg]`
    line) and the candidate by its dest, since the staged file is removed by then."""
    failed = []
    dests = {t.name: t.dest for t in targets}
    for result in applier.apply(targets, texts):
        if not result.ok:
            failed.append(result.target)
            state = "previous config restored" if result.rolled_back else "live config untouched"
            error = name_candidates(result.error, dests[result.target])
            print(f"{result.target}: {result.step} failed ({state}): {error}", file=sys.stderr)
        elif result.changed:
            how = {"reload": ", reloaded", "runtime": ", through the runtime API (no reload)"}.get(result.method, "")
            print(f"{result.target}: applied revision {revision}{how}")
        else:
            print(f"{result.target}: no change")
    return failed

"""`lbgen render`: one pass — render every target, validate, apply — or, with `--dry-run`, the preview.

The dry run writes nothing live and reloads nothing: per target it prints the unified diff against
the current file (or "no change") and the real checker's verdict on the staged candidate; when the
checker refuses it, the services `lbgen watch` would quarantine, each with the checker's reason.
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
    read_template,
    render_targets,
)
from lbgen.core.catalog import catalog_from_snapshot
from lbgen.core.model import Catalog
from lbgen.core.quarantine import checker_reason
from lbgen.core.render import render
from lbgen.core.settings import Settings, Target
from lbgen.errors import ApplyError, TemplateError
from lbgen.services.applier import Applier
from lbgen.services.quarantine import search


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `render` sub-command."""
    parser = commands.add_parser(
        "render", help="render, validate and apply once (--dry-run: print the diff and the checker's verdict)",
        description="Render every target from the registry once, validate it with the LB's checker, "
        "swap it in and reload; exit non-zero if any target failed. With --dry-run nothing live is "
        "touched: the diff against the current file and the checker's verdict are printed, and for a "
        "refused render the services a watcher would quarantine (hold back) and why.")
    add_settings_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="preview only: diff + checker verdict, no write, no reload")
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
        refused = _preview(applier, targets, rendered.texts)
        for target in (t for t in targets if t.name in refused):
            _would_quarantine(applier, settings, target, catalog, refused[target.name])
        failed = list(refused)
    else:
        failed = _apply(applier, targets, rendered.texts, catalog.revision)
    if rendered.errors:
        raise TemplateError(f"{len(rendered.errors)} target(s) failed to render: {', '.join(rendered.errors)}")
    if failed:
        raise ApplyError(f"{len(failed)} target(s) failed: {', '.join(failed)}")
    return 0


def _preview(applier: Applier, targets: Sequence[Target], texts: dict[str, str]) -> dict[str, str]:
    """Print each target's diff and verdict; returns the refused targets with the checker's output."""
    failed = {}
    dests = {t.name: t.dest for t in targets}
    for preview in applier.preview(targets, texts):
        print(f"=== {preview.target}")
        print(preview.diff.rstrip("\n") if preview.diff else "no change")
        if preview.valid:
            how = " (would go through the runtime API, no reload)" if preview.runtime else ""
            print(f"--- {preview.target}: check passed{how}")
        else:
            failed[preview.target] = preview.check_output
            print(f"--- {preview.target}: check FAILED")
            print(name_candidates(preview.check_output.rstrip("\n"), dests[preview.target]))
    return failed


def _would_quarantine(applier: Applier, settings: Settings, target: Target, catalog: Catalog, output: str) -> None:
    """Name the services a watcher would hold back for this refused render, and why. A one-shot run
    does not know the last applied state: held services are probed as absent."""
    source = read_template(target.template)
    resolution = search(target, catalog, None, lambda mixed: render(source, mixed, target, settings.served_health),
                        applier.check_text, checker_reason(output, "refused by the checker"))
    if resolution is None:
        print(f"--- {target.name}: refused with every service held back: tied to no service, "
              "a watcher keeps the whole last good config")
        return
    for service, reason in resolution.held.items():
        print(f"--- {target.name}: would quarantine service {service}: {reason}")
    print(f"--- {target.name}: with {len(resolution.held)} service(s) held back the check passes "
          f"({resolution.probes} checker run(s)); every other change would go live")


def _apply(applier: Applier, targets: Sequence[Target], texts: dict[str, str], revision: int) -> list[str]:
    """Apply and print one line per target; a failure names the checker's reason (its `[emerg]`
    line) and the candidate by its dest, since the staged file is removed by then."""
    failed = []
    dests = {t.name: t.dest for t in targets}
    for result in applier.apply(targets, texts):
        if not result.ok:
            failed.append(result.target)
            state = "previous config restored" if result.rolled_back else "live config untouched"
            error = name_candidates(result.error or "", dests[result.target])
            print(f"{result.target}: {result.step} failed ({state}): {error}", file=sys.stderr)
        elif result.changed:
            how = {"reload": ", reloaded", "runtime": ", through the runtime API (no reload)"}.get(result.method, "")
            print(f"{result.target}: applied revision {revision}{how}")
        else:
            print(f"{result.target}: no change")
    return failed

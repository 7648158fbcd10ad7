"""`lbgen render`: one pass — render every target, validate, apply — or, with `--dry-run`, the preview.

The dry run writes nothing live and reloads nothing: per target it prints the unified diff against
the current file (or "no change") and the real checker's verdict on the staged candidate; when the
checker refuses it, the services `lbgen watch` would quarantine, each with the checker's reason.

The drop guard refuses a target whose render suddenly loses served endpoints compared with what
was last applied to it (the state `lbgen watch` and `lbgen render` keep beside dest), or, with no
such state, that would replace a live file with a registry that has no served endpoint at all (a
wrong `--prefix`). The other targets still go; exit 7 says something was refused; `--force`
applies it anyway (issue 10.6). A target whose LB is not running is written (checked) and reported
"not live" without failing the command: rendering before the LB first starts is a normal bootstrap.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from pathlib import Path
from typing import Sequence

from lbgen.adapters.applied_state import AppliedStateFiles
from lbgen.adapters.files import name_candidates
from lbgen.cli.lb_node import (
    add_settings_arguments,
    build_applier,
    chosen_targets,
    load_settings,
    log_rejected,
    one_shot_renderer,
    open_registry,
    read_template,
    render_targets,
)
from lbgen.core.catalog import catalog_from_snapshot
from lbgen.core.guard import check_one_shot
from lbgen.core.model import Catalog
from lbgen.core.settings import Settings, Target
from lbgen.errors import ApplyError, GuardRefused, TemplateError
from lbgen.services.applier import Applier, TargetResult


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `render` sub-command."""
    parser = commands.add_parser(
        "render",
        description="Render every target from the registry once, validate it with the LB's checker, "
        "swap it in and reload; exit non-zero if any target failed (7: refused by the drop guard). "
        "With --dry-run nothing live is "
        "touched: the diff against the current file and the checker's verdict are printed, and for a "
        "refused render the services a watcher would quarantine (hold back) and why.")
    add_settings_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="preview only: diff + checker verdict, no write, no reload")
    parser.add_argument("--force", action="store_true",
                        help="apply a render the drop guard refuses (a sudden loss of served endpoints "
                        "against what was last applied, or an empty registry over a live config)")
    parser.set_defaults(run=run, one_shot=True)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    targets = chosen_targets(settings, args.target)
    with closing(one_shot_renderer()) as renderer:  # forked before gRPC's threads start, too
        store, settings = open_registry(args, settings)
        try:
            catalog, rejected = catalog_from_snapshot(settings.prefix, store.snapshot(settings.prefix))
        finally:
            store.close()
        log_rejected(rejected, catalog.revision)
        rendered = render_targets(settings, targets, catalog, renderer)
    for name, error in rendered.errors.items():
        print(f"{name}: render failed: {error}", file=sys.stderr)
    states = AppliedStateFiles()
    guarded = _guard(settings, targets, catalog, states, args.force)
    texts = {name: text for name, text in rendered.texts.items() if name not in guarded}
    applier = build_applier()
    if args.dry_run:
        refused = _preview(applier, targets, texts)
        for target in (t for t in targets if t.name in refused):
            _would_quarantine(applier, settings, target, catalog, refused[target.name])
        failed = list(refused)
    else:
        results = applier.apply(targets, texts)
        failed = _report(results, targets, catalog.revision)
        _save_applied(states, targets, results, catalog)
    if rendered.errors:
        raise TemplateError(f"{len(rendered.errors)} target(s) failed to render: {', '.join(rendered.errors)}")
    if failed:
        raise ApplyError(f"{len(failed)} target(s) failed: {', '.join(failed)}")
    if guarded:
        raise GuardRefused(f"{len(guarded)} target(s) refused by the drop guard: {', '.join(guarded)} "
                           "(--force applies them)")
    return 0


def _guard(settings: Settings, targets: Sequence[Target], catalog: Catalog, states: AppliedStateFiles,
           force: bool) -> list[str]:
    """The targets the drop guard refuses (each named on stderr); none with `force`."""
    refused = []
    for target in targets:
        verdict = check_one_shot(states.load(target, catalog), Path(target.dest).exists(), catalog, settings.guard,
                                 settings.served_health)
        if verdict.allowed:
            continue
        if force:
            print(f"{target.name}: drop guard overridden by --force: {verdict.reason}", file=sys.stderr)
            continue
        refused.append(target.name)
        print(f"{target.name}: refused by the drop guard, {target.dest} untouched: {verdict.reason}", file=sys.stderr)
    return refused


def _save_applied(states: AppliedStateFiles, targets: Sequence[Target], results: list[TargetResult],
                  catalog: Catalog) -> None:
    """Remember what went on disk: the guard of the next `render` or `watch` compares with it."""
    done = {r.target for r in results if r.ok or r.step == "down"}
    for target in (t for t in targets if t.name in done):
        try:
            states.save(target, catalog)
        except ApplyError as e:
            print(f"{target.name}: {e}", file=sys.stderr)


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
    # Imported here: only a refused dry run searches (a one-shot render starts faster, issue 13).
    from lbgen.core.quarantine import checker_reason
    from lbgen.core.render import render
    from lbgen.services.quarantine import search

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


def _report(results: list[TargetResult], targets: Sequence[Target], revision: int) -> list[str]:
    """One line per target; a failure names the checker's reason (its `[emerg]` line) and the
    candidate by its dest, since the staged file is removed by then."""
    failed = []
    dests = {t.name: t.dest for t in targets}
    for result in results:
        if result.step == "down":  # written and checked; a bootstrap before the LB starts is fine
            print(f"{result.target}: wrote revision {revision}, not live: {result.error}")
        elif not result.ok:
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

"""Apply a pass of rendered configs: stage → check the whole config → keep LKG → swap → reload → verify.

A pass first writes every changed target that passes its check, then reloads each distinct LB
once (consul-template: render all, then run the de-duplicated commands). A reload or verify
failure restores the last-known-good of every target of that LB and reloads it: the last good
config keeps serving (dataplaneapi's LKG). A built-in LB that is not running fails its targets
with step `down` (the checked config is on disk for its start): never reported as applied.
`lane_key` names the LB a target goes live on: the watcher applies each LB in its own lane.

Per target the commands are the target's own argv when given; otherwise the kind's built-in check
(`lbgen.core.kinds`) and `LbControl` (`lbgen.adapters.kinds`: nginx: SIGHUP to the master;
haproxy: the master socket's `reload`; a proxy watching its own file: nothing to ask). Whenever
the LB can be observed, the built-in wait until it serves the new config also follows a custom reload.

A target with `runtime` on and a `RuntimeApi` (HAProxy's stats socket, nginx's Lua balancer)
skips the reload when its kind plans the change as a runtime change (`LbKind.plan_runtime`;
HAProxy: endpoints moving within the existing server slots, issue 7; nginx: lines of the endpoint
block, issue 12): the file is still swapped in first (its last-known-good kept), so a later reload
or restart comes up in the same state, then the change is sent and read back. Any failure there
falls back to the reload. A plan whose `needs_check` is False (nginx's: only lbgen's encoding of
validated values changed) is written without running the checker; should its runtime update fail,
the LB's own parse at reload is the check, and a refused reload restores the last-known-good.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import replace

from lbgen.core.kinds import RuntimeChange, lb_kind
from lbgen.core.settings import Target
from lbgen.errors import ApplyError, CommandFailed
from lbgen.ports import ConfigFiles, LbControl, Runner, RuntimeApi

log = logging.getLogger(__name__)

ControlFactory = Callable[[Target], "LbControl[Any] | None"]
RuntimeFactory = Callable[[Target], "RuntimeApi | None"]


class TargetResult(msgspec.Struct, frozen=True):
    """What one pass did to one target. `error` is None on success; `step` names where it failed
    (`check`, `write`, `reload`, or `down`: the LB is not running, the checked config is written);
    after a failed reload `rolled_back` tells whether the LKG is live.
    `method` says how a written change went live: `runtime` (API, no reload), `reload`, or `none`
    (unchanged); `fallback` why a runtime update was abandoned for a reload."""

    target: str
    changed: bool = False
    wrote: bool = False
    reloaded: bool = False
    rolled_back: bool = False
    step: str | None = None
    error: str | None = None
    output: str = ""
    method: str = "none"
    fallback: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class Preview(msgspec.Struct, frozen=True):
    """Dry-run verdict for one target: the diff against the live file ("" = no change) and the checker's;
    `runtime` when the change would go through the runtime API rather than a reload."""

    target: str
    diff: str
    valid: bool
    check_output: str = ""
    runtime: bool = False


class _Outcome(msgspec.Struct, frozen=True):
    """How the reload of one LB went, for every target it carries."""

    reloaded: bool = False
    rolled_back: bool = False
    error: str | None = None
    output: str = ""

    def applied_to(self, result: TargetResult) -> TargetResult:
        if self.error is None:
            return replace(result, reloaded=self.reloaded, method="reload")
        return replace(result, rolled_back=self.rolled_back, step="reload", error=self.error, output=self.output)


def no_controls(target: Target) -> LbControl[Any] | None:
    """A control factory for generic targets only: their argv does everything."""
    return None


def no_runtimes(target: Target) -> RuntimeApi | None:
    """A runtime factory for LBs without a runtime API: every change is reloaded."""
    return None


class Applier:
    """Applies rendered texts to their targets. Holds no state between calls: the watcher's lanes
    call it at once for targets of different LBs."""

    def __init__(self, files: ConfigFiles, runner: Runner, controls: ControlFactory = no_controls,
                 runtimes: RuntimeFactory = no_runtimes) -> None:
        self._files = files
        self._runner = runner
        self._controls = controls
        self._runtimes = runtimes

    def apply(self, targets: Sequence[Target], rendered: Mapping[str, str]) -> list[TargetResult]:
        """Apply `rendered` (target name → text) to `targets`; one result per rendered target.
        Calls for targets of different lanes (`lane_key`) may run at the same time."""
        plans: dict[str, RuntimeChange] = {}
        results = {t.name: self._write(t, rendered[t.name], plans) for t in targets if t.name in rendered}
        live = [t for t in targets if t.name in results and results[t.name].ok]
        for group in self._groups(live):
            self._go_live(group, results, plans)
        return list(results.values())

    def lane_key(self, target: Target) -> str:
        """Which LB the target goes live on: targets with the same key share a reload (and a lane of
        the watcher); a target with neither a reload command nor a built-in one is a lane of its own."""
        if target.reload:
            return "reload:" + "\0".join(target.reload)
        control = self._controls(target)
        return control.key if control else f"target:{target.name}"

    def preview(self, targets: Sequence[Target], rendered: Mapping[str, str]) -> list[Preview]:
        """Dry run: diff and the real checker's verdict per target; nothing live is written or reloaded."""
        previews = []
        for target in (t for t in targets if t.name in rendered):
            text = rendered[target.name]
            try:
                current = self._files.read(target)
                diff = unified_diff(target, current, text)
                staged = self._files.stage(target, text)
            except ApplyError as e:
                previews.append(Preview(target.name, "", False, str(e)))
                continue
            try:
                self._check(target, staged)
                runtime = bool(diff) and self._runtime_plan(target, current, text) is not None
                previews.append(Preview(target.name, diff, True, runtime=runtime))
            except ApplyError as e:
                previews.append(Preview(target.name, diff, False, _output(e)))
            finally:
                self._files.discard(staged)
        return previews

    def check_text(self, target: Target, text: str) -> ApplyError | None:
        """Stage `text` beside dest and run the target's checker on it: the error when it is refused,
        None when it passes. Nothing live is touched (a quarantine probe, lbgen.services.quarantine)."""
        try:
            staged = self._files.stage(target, text)
        except ApplyError as e:
            return e
        try:
            self._check(target, staged)
        except ApplyError as e:
            return e
        finally:
            self._files.discard(staged)
        return None

    # --- writing ----------------------------------------------------------------------------------

    def _write(self, target: Target, text: str, plans: dict[str, RuntimeChange]) -> TargetResult:
        """Check and swap in one target; its runtime plan (if any) goes into `plans`."""
        # No diff here: at 10,000 upstreams difflib cost more than the rest of the write
        # (bench/README.md); only the dry-run preview shows one.
        step = "check"
        try:
            current = self._files.read(target)
            if current == text:
                log.debug("%s: unchanged", target.name)
                return TargetResult(target.name)
            staged = self._files.stage(target, text)
            try:
                plan = self._runtime_plan(target, current, text)
                if plan is None or plan.needs_check:
                    self._check(target, staged)
                step = "write"
                self._files.save_lkg(target)
                self._files.commit(target, staged)
                if plan is not None:
                    plans[target.name] = plan
            finally:
                self._files.discard(staged)
        except ApplyError as e:
            # DEBUG: the caller reports the result (a refused check may end in a quarantine, not a failure)
            log.debug("%s: %s failed, %s left untouched: %s", target.name, step, target.dest, e)
            return TargetResult(target.name, True, step=step, error=str(e), output=_output(e))
        log.info("%s: wrote %s", target.name, target.dest)
        return TargetResult(target.name, True, wrote=True)

    def _check(self, target: Target, staged: Path) -> None:
        control = self._controls(target)
        argv = target.check or lb_kind(target.kind).check
        if not argv:
            log.warning("%s: no check command: %s goes live unvalidated", target.name, target.dest)
            return
        with control.whole_config(staged) if control else nullcontext(staged) as config:
            self._run(target, argv, staged=config)

    # --- the runtime API -------------------------------------------------------------------------

    def _runtime_plan(self, target: Target, current: str | None, text: str) -> RuntimeChange | None:
        """The runtime change for this one, when the target uses a runtime API and it suffices."""
        plan_runtime = lb_kind(target.kind).plan_runtime
        if not target.runtime or current is None or plan_runtime is None or self._runtimes(target) is None:
            return None
        plan = plan_runtime(current, text)
        if plan is None:
            log.info("%s: more than endpoints changed: the runtime API cannot apply it", target.name)
        return plan

    def _apply_runtime(self, target: Target, plan: RuntimeChange, result: TargetResult) -> TargetResult:
        api = self._runtimes(target)
        if api is None:
            return result
        try:
            api.apply(plan)
        except ApplyError as e:
            log.warning("%s: runtime update failed, reloading instead: %s", target.name, e)
            return replace(result, fallback=str(e))
        log.info("%s: %d runtime command(s) applied and verified, no reload", target.name, len(plan))
        return replace(result, method="runtime")

    # --- reloading --------------------------------------------------------------------------------

    def _groups(self, targets: Sequence[Target]) -> list[list[Target]]:
        """Targets grouped by `lane_key`, in first-seen order."""
        groups: dict[str, list[Target]] = {}
        for target in targets:
            groups.setdefault(self.lane_key(target), []).append(target)
        return list(groups.values())

    def _go_live(self, group: list[Target], results: dict[str, TargetResult], plans: dict[str, RuntimeChange]) -> None:
        """Bring the written targets of one LB live (runtime API, else one reload). A built-in LB
        that is not running fails every target of the group, written or unchanged: the checked
        config is on disk for its next start, but nothing serves it (issue 10)."""
        down = self._down(group)
        if down:
            log.warning("%s: %s", ", ".join(t.name for t in group), down)
            for target in group:
                results[target.name] = replace(results[target.name], step="down", error=down)
            return
        to_reload = [t for t in group if results[t.name].wrote and not self._went_live_at_runtime(t, results, plans)]
        if to_reload and (to_reload[0].reload or self._controls(to_reload[0])):
            outcome = self._reload_group(to_reload)
            for target in to_reload:
                results[target.name] = outcome.applied_to(results[target.name])

    def _went_live_at_runtime(self, target: Target, results: dict[str, TargetResult],
                              plans: dict[str, RuntimeChange]) -> bool:
        """Try the target's runtime plan, if it has one; whether the change is live without a reload."""
        plan = plans.get(target.name)
        if plan is not None:
            results[target.name] = self._apply_runtime(target, plan, results[target.name])
        return results[target.name].method == "runtime"

    def _down(self, group: list[Target]) -> str:
        """Why the group's LB is not running ("" when it runs, or lbgen cannot tell: a target with
        its own reload command may reach an LB lbgen cannot see, e.g. in a container)."""
        target = group[0]
        control = self._controls(target)
        if control is None or target.reload or control.observe() is not None:
            return ""
        return (f"{target.kind} is not running ({control.down_reason()}): the checked config is on disk "
                "and loads when it starts")

    def _reload_group(self, group: list[Target]) -> _Outcome:
        """Reload the LB the targets of `group` share; on failure roll all of them back."""
        names = ", ".join(t.name for t in group)
        try:
            self._reload(group)
            log.info("%s: reloaded", names)
            return _Outcome(reloaded=True)
        except ApplyError as e:
            log.error("%s: reload failed, restoring the last-known-good: %s", names, e)
            failure = _Outcome(error=str(e), output=_output(e))
        try:
            for target in group:
                self._files.restore_lkg(target)
            self._reload(group)
        except ApplyError as e:
            log.critical("%s: rollback failed too, the LB needs attention: %s", names, e)
            return replace(failure, error=f"{failure.error}; rollback failed: {e}")
        log.warning("%s: last-known-good restored and reloaded", names)
        return replace(failure, rolled_back=True)

    def _reload(self, group: list[Target]) -> None:
        """Reload and verify (the built-in reload needs a running LB: `_go_live` checked it)."""
        target = group[0]
        control = self._controls(target)
        before = control.observe() if control else None
        if target.reload:
            self._run(target, target.reload)
        elif control:
            if before is None:
                raise ApplyError(f"{target.name}: {target.kind} stopped running: {control.down_reason()}")
            control.request_reload()
        if control and before is not None:
            _wait(control, before, target)
        for verify in dict.fromkeys(t.verify for t in group if t.verify):
            self._run(target, verify)

    def _run(self, target: Target, argv: Sequence[str], staged: Path | None = None) -> None:
        values = {"{dest}": target.dest, "{staged}": str(staged or target.dest)}
        command = [_substitute(arg, values) for arg in argv]
        result = self._runner.run(command, target.timeout)
        if not result.ok:
            raise CommandFailed(command, result.returncode, result.output)


def _wait(control: LbControl[Any], before: object, target: Target) -> None:
    after = control.wait_live(before, target.timeout)
    log.debug("%s: live: %s → %s", target.name, before, after)


def unified_diff(target: Target, current: str | None, candidate: str) -> str:
    """The change `candidate` makes to the live file, as a unified diff ("" when none)."""
    lines = difflib.unified_diff(
        (current or "").splitlines(keepends=True),
        candidate.splitlines(keepends=True),
        fromfile=target.dest if current is not None else "/dev/null",
        tofile=f"{target.dest} (candidate)",
    )
    return "".join(lines)


def _substitute(arg: str, values: Mapping[str, str]) -> str:
    for placeholder, value in values.items():
        arg = arg.replace(placeholder, value)
    return arg


def _output(error: ApplyError) -> str:
    return error.output if isinstance(error, CommandFailed) else ""

"""What an apply lane does with a job (lbgen.services.lanes): apply it, quarantine what the LB's
checker refuses (issue 10 part 3: every probe is a real checker run, so it belongs in the lane, not
in the watcher's consumer), post the results to the consumer, and keep the applied state on disk.

A target belongs to exactly one lane, so each target's entries here (`applied`, the quarantine)
are only ever touched by that lane's thread; the consumer learns everything from `Applied`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import msgspec

from lbgen.core.model import Catalog
from lbgen.core.quarantine import checker_reason
from lbgen.core.settings import Target
from lbgen.errors import LbgenError
from lbgen.ports import AppliedStates, Renderer
from lbgen.services.applier import Applier, TargetResult
from lbgen.services.drop_hold import load_baselines
from lbgen.services.lanes import Job, Lane
from lbgen.services.quarantine import Quarantines
from lbgen.services.watcher_metrics import WatcherMetrics

log = logging.getLogger(__name__)


class Applied(msgspec.Struct, frozen=True):
    """A lane's results; per target on disk, the catalog that went there (a quarantined service at
    its last applied state) and the services quarantined, with the checker's reasons."""

    job: Job
    results: list[TargetResult]
    catalogs: Mapping[str, Catalog]
    quarantined: Mapping[str, Mapping[str, str]]


class LaneWork:
    """The work of every apply lane of one watcher, and its applied-state saver lane."""

    def __init__(self, applier: Applier, renderer: Renderer, served_health: frozenset[str],
                 post: Callable[[Applied], None], states: AppliedStates | None, metrics: WatcherMetrics,
                 stopping: Callable[[], bool]) -> None:
        self._applier = applier
        self._renderer = renderer
        self.served_health = served_health  # the watcher sets a new one at a settings reload
        self._post = post
        self._states = states
        self._stopping = stopping
        self._quarantines = Quarantines(lambda target, text: applier.check_text(target, text), metrics)
        self.applied: dict[str, Catalog] = {}  # target → what its lane last put on disk: the quarantine's base
        # Writing the applied state costs ~1-2 s at 100,000 endpoints: its own lane, off the apply path.
        self.saver = Lane("applied-state", self._save)

    def load_baselines(self, targets: Sequence[Target], current: Catalog) -> dict[str, Catalog]:
        """What each target applied before a restart (kept beside dest), sharing what did not change
        with `current`: the quarantine's base, and the drop guard's (returned for the watcher).
        Called at the first pass, before any job reaches a lane."""
        if self._states is None:
            return {}
        self.applied.update(load_baselines(self._states, targets, current))
        return dict(self.applied)

    def close(self) -> None:
        """Stop the saver after it wrote what is waiting: a restart compares with the last state."""
        self.saver.stop(drain=True)
        self.saver.join(timeout=5)

    def apply(self, job: Job) -> None:
        """In a lane's thread: apply, quarantine what the checker refuses, post the results."""
        try:
            results = self._applier.apply(job.targets, job.texts)
        except Exception as e:  # a bug: still report it, or the target would wait forever
            log.exception("applying %s", ", ".join(job.texts))
            results = [TargetResult(name, step="apply", error=f"internal error: {e}") for name in job.texts]
        targets = {t.name: t for t in job.targets}
        catalogs, quarantined = dict(job.catalogs), {}  # quarantined: an entry per target now on disk
        for i, outcome in enumerate(results):
            name = outcome.target
            held: Mapping[str, str] = {}
            if outcome.step == "check":
                results[i], catalogs[name], held = self._hold_back(targets[name], job, outcome)
            if results[i].ok or results[i].step == "down":  # the file on disk is this catalog's render
                self._quarantines.settle(name, held, catalogs[name])
                self.applied[name] = catalogs[name]
                quarantined[name] = self._quarantines.held(name)
        self._post(Applied(job, results, catalogs, quarantined))
        if self._states is not None and quarantined:
            on_disk = tuple(targets[name] for name in quarantined)
            self.saver.submit(Job(on_disk, {}, {t.name: catalogs[t.name] for t in on_disk}))

    def _hold_back(self, target: Target, job: Job, refused: TargetResult
                   ) -> tuple[TargetResult, Catalog, Mapping[str, str]]:
        """The check refused the render: apply it with the services that cause it held back, or keep
        the whole last good config when the refusal is tied to no service."""
        source, catalog = job.sources[target.name], job.catalogs[target.name]
        try:
            resolution = self._quarantines.resolve(
                target, catalog, self.applied.get(target.name),
                lambda mixed: self._renderer.render(source, mixed, target, self.served_health),
                checker_reason(refused.output, refused.error or ""))
        except LbgenError as e:  # the search's final render failed: out of its limits, or stopped
            if not self._stopping():
                log.error("%s: quarantine search abandoned: %s", target.name, e)
            return refused, catalog, {}
        if resolution is None or self._stopping():  # stopped during the search: apply nothing
            return refused, catalog, {}
        [outcome] = self._applier.apply([target], {target.name: resolution.text})
        return outcome, resolution.catalog, resolution.held

    def _save(self, job: Job) -> None:
        """In the saver lane: persist what each target applied (latest wins), the guard's baseline."""
        for target in job.targets:
            try:
                self._states.save(target, job.catalogs[target.name])  # type: ignore[union-attr]
            except LbgenError as e:
                log.warning("%s: the drop guard's baseline is not saved (a restart compares with an older "
                            "one): %s", target.name, e)

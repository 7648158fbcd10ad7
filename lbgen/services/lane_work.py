"""What an apply lane does with a job (lbgen.services.lanes): apply it, quarantine what the LB's
checker refuses (issue 10 part 3: every probe is a real checker run, so it belongs in the lane, not
in the watcher's consumer), post the results to the consumer, and keep the applied state on disk.

A target belongs to exactly one lane, so each target's entries here (`applied`, the quarantine)
are only ever touched by that lane's thread; the consumer learns everything from `Applied`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lbgen.core.model import Catalog
from lbgen.core.quarantine import checker_reason
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.errors import LbgenError
from lbgen.ports import AppliedStates
from lbgen.services.applier import Applier, TargetResult
from lbgen.services.lanes import Job, Lane
from lbgen.services.quarantine import Quarantines
from lbgen.services.watcher_metrics import WatcherMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """A lane's results; per target on disk, the catalog that went there (a quarantined service at
    its last applied state) and the services quarantined, with the checker's reasons."""

    job: Job
    results: list[TargetResult]
    catalogs: Mapping[str, Catalog]
    quarantined: Mapping[str, Mapping[str, str]]


class LaneWork:
    """The work of every apply lane of one watcher, and its applied-state saver lane."""

    def __init__(self, applier: Applier, served_health: frozenset[str], post: Callable[[Applied], None],
                 states: AppliedStates | None, metrics: WatcherMetrics) -> None:
        self._applier = applier
        self._served = served_health
        self._post = post
        self._states = states
        self._quarantines = Quarantines(lambda target, text: applier.check_text(target, text), metrics)
        self.applied: dict[str, Catalog] = {}  # target → what its lane last put on disk: the quarantine's base
        # Writing the applied state costs ~1-2 s at 100,000 endpoints: its own lane, off the apply path.
        self.saver = Lane("applied-state", self._save)

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
        resolution = self._quarantines.resolve(
            target, catalog, self.applied.get(target.name),
            lambda mixed: render(source, mixed, target, self._served),
            checker_reason(refused.output, refused.error or ""))
        if resolution is None:
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

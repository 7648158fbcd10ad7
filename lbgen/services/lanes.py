"""Apply lanes: one worker thread per LB, so a dead or slow LB delays only itself (issue 10.5).

The watcher's consumer renders a pass and hands each LB's share of it to that LB's lane
(`Lane.submit`); the lane applies it and reports back through its `work` callable, which posts the
results to the consumer's queue: the consumer alone changes the watcher's state. A lane's mailbox
holds one job. A job submitted while the lane is busy is merged into the waiting one, the newer
text of each target winning, so only the latest render of a target is ever applied and a burst
during a slow reload costs one more apply, not one per render.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

import msgspec

from lbgen.core.model import Catalog
from lbgen.core.settings import Target
from lbgen.ports import Clock

log = logging.getLogger(__name__)


class Job(msgspec.Struct, frozen=True):
    """Rendered texts for some targets of one LB, and the catalog and template source each text was
    rendered from (a quarantine renders variants of it)."""

    targets: tuple[Target, ...]
    texts: Mapping[str, str]
    catalogs: Mapping[str, Catalog]
    sources: Mapping[str, str] = {}

    def merged(self, newer: Job) -> Job:
        """This job with `newer`'s targets added or replacing their older renders."""
        targets = {t.name: t for t in self.targets} | {t.name: t for t in newer.targets}
        return Job(tuple(targets.values()), {**self.texts, **newer.texts}, {**self.catalogs, **newer.catalogs},
                   {**self.sources, **newer.sources})


def split_by_lane(targets: Sequence[Target], texts: Mapping[str, str], catalogs: Mapping[str, Catalog],
                  lane_of: Mapping[str, str], sources: Mapping[str, str]) -> dict[str, Job]:
    """The rendered targets grouped into one job per lane (`lane_of`: target name → lane)."""
    groups: dict[str, list[Target]] = {}
    for target in (t for t in targets if t.name in texts):
        groups.setdefault(lane_of[target.name], []).append(target)
    return {
        lane: Job(tuple(group), {t.name: texts[t.name] for t in group}, {t.name: catalogs[t.name] for t in group},
                  {t.name: sources[t.name] for t in group})
        for lane, group in groups.items()
    }


class Lane:
    """A worker thread with a one-job mailbox; `work(job)` runs for each job, one at a time."""

    def __init__(self, name: str, work: Callable[[Job], None]) -> None:
        self.name = name
        self._work = work
        self._cond = threading.Condition(threading.RLock())
        self._pending: Job | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"lane {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`, merged into the one still waiting (never blocks on the work in progress)."""
        with self._cond:
            self._pending = job if self._pending is None else self._pending.merged(job)
            self._cond.notify()

    def stop(self, drain: bool = False) -> None:
        """End after the work in progress (which is not interrupted); the waiting job is dropped,
        or with `drain` done first."""
        with self._cond:
            self._stopping = True
            if not drain:
                self._pending = None
            self._cond.notify()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the thread; whether it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._pending is None:  # stopping, nothing (more) to drain
                    return
                job, self._pending = self._pending, None
            try:
                self._work(job)
            except Exception:  # a bug in one apply must not end the lane: later renders still come
                log.exception("lane %s: applying %s failed", self.name, ", ".join(t.name for t in job.targets))


def stop_lanes(lanes: Iterable[Lane], clock: Clock, grace: float = 1.0) -> None:
    """End every lane; one still inside a reload is left behind (a daemon thread) after `grace`
    seconds (by `clock`), so SIGTERM is honoured while an LB hangs."""
    lanes = list(lanes)
    for lane in lanes:
        lane.stop()
    deadline = clock.now() + grace
    for lane in lanes:
        if not lane.join(max(0.0, deadline - clock.now())):
            log.warning("lane %s: still applying at exit; its LB keeps what it has", lane.name)

"""The watcher: registry snapshot + watch → catalog → quiescence → render → apply, forever.

One consumer loop owns all state (the catalog, the quiescence windows, the last applied catalog).
Producers feed it through one queue: the registry follower (snapshot, then watch from the snapshot's
revision + 1, re-snapshot after any break), the template file observer, and the apply lanes. The consumer
renders; each LB (the targets that share a reload, `Applier.lane_key`) has its own lane that applies its
share and posts the results back (`lbgen.services.lanes`), so a dead or slow LB delays only itself (issue 10.5).

It never takes a working LB down: no render before the first complete snapshot, the last applied
config kept through a broken registry connection, a sudden drop held by the guard, a service the
checker refuses quarantined in its lane while the rest goes live, every failure logged, counted, retried.
"""

from __future__ import annotations

import copy
import logging
import queue
import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping

import msgspec

from lbgen.core.backoff import backoff, full_jitter
from lbgen.core.catalog import CatalogState, Rejected, state_from_pages
from lbgen.core.model import Catalog
from lbgen.core.quiescence import Quiescence
from lbgen.core.reload import reloaded
from lbgen.core.schema import services_prefix
from lbgen.core.settings import Settings, Target
from lbgen.errors import Compacted, LbgenError, RenderLimit, StoreError
from lbgen.core.values import WatchEvent
from lbgen.ports import AppliedStates, Clock, Renderer, Store, Watch
from lbgen.services.applier import Applier, TargetResult
from lbgen.services.drop_hold import DropHolds, newest
from lbgen.services.lane_work import Applied, LaneWork
from lbgen.services.lanes import Lane, split_by_lane, stop_lanes
from lbgen.services.watcher_metrics import WatcherMetrics
from lbgen.services.watcher_status import WatcherStatus, problems

log = logging.getLogger(__name__)


class _Loaded(msgspec.Struct, frozen=True):
    """A complete snapshot, decoded by the follower as its pages arrived."""

    state: CatalogState
    rejected: list[Rejected]
    keys: int


class _Changed(msgspec.Struct, frozen=True):
    events: list[WatchEvent]


class _Disconnected(msgspec.Struct, frozen=True):
    error: str


_STOP, _RELOAD, _TEMPLATES_CHANGED = object(), object(), object()


class Watcher:
    """Keeps every target of `settings` rendered from the registry and applied."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        applier: Applier,
        clock: Clock,
        read_template: Callable[[str], str] = lambda path: Path(path).read_text(),
        retry_base: float = 0.5,
        retry_cap: float = 5.0,
        metrics: WatcherMetrics | None = None,
        stale_after: float = 10.0,
        recheck: float = 60.0,
        on_status: Callable[[WatcherStatus], None] | None = None, renderer: Renderer | None = None,
        load_settings: Callable[[], Settings] | None = None, states: AppliedStates | None = None,
    ) -> None:
        self.settings = settings
        self.status = WatcherStatus()
        self.metrics = metrics or WatcherMetrics()
        # `recheck`: a target holding services back passes again this often (DNS may heal)
        self._stale_after, self._recheck = stale_after, recheck
        self._pending_since: dict[str, float] = {}
        self._store, self._clock, self._read_template = store, clock, read_template
        self._retry = (retry_base, retry_cap)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()  # put() is safe in a signal handler
        self._stopping = threading.Event()
        self._state = CatalogState(settings.prefix)
        self._loaded = False
        self._windows = {t.name: Quiescence(t.wait or settings.wait) for t in settings.targets}
        self._templates: dict[str, str] = {}
        self._applied: dict[str, Catalog] = {}  # the guard's baseline, per target
        self._baselines_read = False  # what each target applied before a restart: read at the first pass
        self._submitted: dict[str, Catalog] = {}  # handed to its lane, maybe not applied yet
        self._holds = DropHolds(settings.guard, settings.served_health, self.metrics)
        self._retry_at: dict[str, float] = {}
        self._consecutive_failures: dict[str, int] = {}
        self._watch: Watch | None = None
        self._renderer, self._load_settings = renderer or _in_process_renderer(), load_settings  # issue 10
        self._lanes = self._make_lanes(applier, states)
        self._on_status = on_status  # gets a copy of `status` after every message (lbgen.services.status_publisher)

    def _make_lanes(self, applier: Applier, states: AppliedStates | None) -> dict[str, Lane]:
        """One apply lane per LB (`Applier.lane_key`); their work, and the applied-state saver."""
        self._lane_of = {t.name: applier.lane_key(t) for t in self.settings.targets}
        self._work = LaneWork(applier, self._renderer, self.settings.served_health, self._queue.put, states,
                              self.metrics, self._stopping.is_set)
        return {key: Lane(key, self._work.apply) for key in dict.fromkeys(self._lane_of.values())}

    # --- producers -------------------------------------------------------------------------

    def follow_registry(self) -> None:
        """Producer: snapshot, then watch from revision + 1; any break or compaction → re-snapshot.
        Only `{prefix}/services/` is followed: LB nodes' status keys (`{prefix}/lb/`, written after
        each apply) must not wake every watcher into another pass, and another status, forever."""
        attempt = 0
        services = services_prefix(self.settings.prefix)
        while not self._stopping.is_set():
            try:
                # decoded here page by page while etcd serves the next one; the consumer swaps it in whole
                loaded = _Loaded(*state_from_pages(self._state.prefix, self._store.snapshot_pages(services)))
                self._queue.put(loaded)
                attempt, revision = 0, loaded.state.revision
                del loaded  # this frame outlives the watch: the consumer owns the state now
                self._watch = self._store.watch(services, revision + 1)
                for events in self._watch:
                    self._queue.put(_Changed(events))
                if not self._stopping.is_set():
                    raise StoreError("watch ended unexpectedly")
            except Compacted as e:
                log.warning("registry: %s", e)
            except StoreError as e:
                if self._stopping.is_set():
                    return
                self._queue.put(_Disconnected(str(e)))
                # a fleet's re-snapshots after a member restart spread over 0.05–1 s first (issue 13)
                delay = full_jitter(attempt, random.random(), 2 * self._retry[0], self._retry[1], self._retry[0] / 10)
                attempt += 1
                self._stopping.wait(delay)

    def templates_changed(self) -> None:
        """Producer hook (file observer): a template file changed on disk."""
        self._queue.put(_TEMPLATES_CHANGED)

    def reload(self) -> None:
        """Re-read the settings (and so every template) at the next message; safe in a signal handler."""
        self._queue.put(_RELOAD)

    def stop(self) -> None:
        """Ask every loop to end; safe from any thread or a signal handler. A render in progress is
        killed and nothing more is applied (a lane inside a reload finishes it: `stop_lanes`)."""
        self._stopping.set()
        self._renderer.close()
        self._queue.put(_STOP)
        if self._watch is not None:
            self._watch.cancel()

    def problems(self) -> list[str]:
        """Why this watcher is not healthy (for `/healthz`; `watcher_status.problems`)."""
        return problems(self.status, self._loaded, self._clock.now(), self._stale_after)

    # --- the consumer ----------------------------------------------------------------------

    def run(self) -> None:
        """The consumer loop: runs until `stop()`. Starts the registry follower itself."""
        follower = threading.Thread(target=self.follow_registry, name="registry-follower", daemon=True)
        follower.start()
        for lane in (*self._lanes.values(), self._work.saver):
            lane.start()
        try:
            while not self._stopping.is_set():
                message = self._next_message()
                while message is not None and message is not _STOP:
                    self._handle(message)
                    message = self._pending()  # drain what queued up meanwhile: render only the latest
                if message is _STOP:
                    break
                self._render_due()
                if self._on_status is not None:
                    self._on_status(copy.deepcopy(self.status))
        finally:
            self.stop()
            stop_lanes(self._lanes.values(), self._clock)
            self._work.close()
            follower.join(timeout=5)

    def _next_message(self) -> object | None:
        now = self._clock.now()
        deadlines = [d for w in self._windows.values() if (d := w.deadline()) is not None]
        deadlines += self._retry_at.values()
        deadlines += self._holds.expiries().values()
        try:
            return self._queue.get(timeout=max(0.0, min(deadlines) - now) if deadlines else None)
        except queue.Empty:
            return None

    def _pending(self) -> object | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def _handle(self, message: object) -> None:
        now = self._clock.now()
        if isinstance(message, _Loaded):
            first, self._state, self._loaded = not self._loaded, message.state, True
            self._connected(now)
            log.info("registry: snapshot at revision %s, %s keys", self._state.revision, message.keys)
            self._log_rejected(message.rejected)
            self._note_all(now, at_once=first)
        elif isinstance(message, _Changed):
            self._log_rejected(self._state.apply(message.events))
            self._note_all(now)
        elif isinstance(message, _Disconnected):
            if self.status.connected or self.status.disconnected_since is None:
                self.status.disconnected_since = now
                log.error("registry unreachable, keeping the last applied config: %s", message.error)
            self.status.connected = False
            self.status.last_error = message.error
            self.metrics.connected.set(0)
        elif message is _TEMPLATES_CHANGED:
            self._templates.clear()
            self._note_all(now)
        elif isinstance(message, Applied):
            self._applied_results(message)
        elif message is _RELOAD:
            self._reload(now)

    def _reload(self, now: float) -> None:
        """Run on the re-read settings and templates (a broken file keeps the running ones); the
        catalog, the applied state and the guard's hold are kept: only what renders changes. The
        lanes stay as they were grouped at start (a target moved to another LB: at the restart)."""
        try:
            settings, pending = reloaded(self.settings, (self._load_settings or (lambda: self.settings))())
        except LbgenError as e:
            log.error("reload: keeping the running settings: %s", e)
            return
        for line in pending:
            log.warning("reload: %s", line)
        self.settings = settings
        self._windows = {t.name: Quiescence(t.wait or settings.wait) for t in settings.targets}
        self._templates.clear()
        self._holds.guard, self._work.served_health = settings.guard, settings.served_health
        log.info("reload: settings and templates re-read for %s", ", ".join(t.name for t in settings.targets))
        self._note_all(now)

    def _connected(self, now: float) -> None:
        self.status.connected = True
        self.status.disconnected_since = None
        self.metrics.connected.set(1)

    def _note_all(self, now: float, at_once: bool = False) -> None:
        """A change for every target; `at_once`: the first complete snapshot, rendered without
        waiting out `wait.min` (later snapshots, after a break, are debounced as any change)."""
        self.status.revision = self._state.revision
        if self._loaded:
            for name, window in self._windows.items():
                if at_once:
                    window.settled(now)
                else:
                    window.note(now)
                self._pending_since.setdefault(name, now)

    def _log_rejected(self, rejected: list) -> None:
        for item in rejected:
            log.warning("registry: skipping %s at revision %s: %s", item.key, self._state.revision, item.reason)

    # --- render and apply --------------------------------------------------------------------

    def _render_due(self) -> None:
        now = self._clock.now()
        due = [t for t in self.settings.targets if self._is_due(t.name, now)]
        if not due:
            return
        for target in due:
            self._windows[target.name].fired()
            self._retry_at.pop(target.name, None)
        catalog = self._state.catalog()
        ahead: dict[str, Future[str]] = {}
        if not self._baselines_read:  # from before a restart, sharing what did not change with `catalog`
            self._baselines_read = True
            with ThreadPoolExecutor(1, thread_name_prefix="render-ahead") as pool:
                # the render worker renders `catalog` meanwhile: the guard holds nothing, mostly (issue 13)
                ahead = {t.name: pool.submit(self._render_text, t, catalog) for t in due}
                self._applied.update(self._work.load_baselines(self.settings.targets, catalog))
        rendered: dict[str, str] = {}
        catalogs: dict[str, Catalog] = {}
        for target in due:
            base = newest(self._applied.get(target.name), self._submitted.get(target.name))
            catalogs[target.name] = chosen = self._holds.catalog_for(target.name, base, catalog, now)
            early = ahead.get(target.name) if chosen is catalog else None
            if (text := self._render(target, chosen, early)) is not None:
                rendered[target.name] = text
        self.status.held = self._holds.descriptions()
        if self._stopping.is_set():  # stopped mid-render: apply nothing
            return
        sources = {t.name: self._templates[t.template] for t in due if t.name in rendered}
        for lane, job in split_by_lane(due, rendered, catalogs, self._lane_of, sources).items():
            self._lanes[lane].submit(job)
        self._submitted.update((name, catalogs[name]) for name in rendered)
        # after the submits: the lanes apply meanwhile (a first pass sets 10,000 gauges, issue 13)
        self.metrics.catalog(catalog, self.settings.served_health, len(self._state.rejected))

    def _is_due(self, name: str, now: float) -> bool:
        retry_at = self._retry_at.get(name)
        expiry = self._holds.expiries().get(name)
        return (self._windows[name].due(now) or (retry_at is not None and now >= retry_at)
                or (expiry is not None and now >= expiry))

    def _render(self, target: Target, catalog: Catalog, ahead: Future[str] | None = None) -> str | None:
        """`catalog` rendered for `target` (`ahead`: that render, started before), or None: failed."""
        try:
            text = ahead.result() if ahead is not None else self._render_text(target, catalog)
            self._clear_error(target.name, render=True)
        except (LbgenError, OSError) as e:
            if not self._stopping.is_set():
                # Out of its time or memory, the same render would burn as much again: wait for a change.
                self._fail(target, "render", str(e), retry=not isinstance(e, RenderLimit))
            return None
        return text

    def _render_text(self, target: Target, catalog: Catalog) -> str:
        source = self._templates.get(target.template) or self._read_template(target.template)
        self._templates[target.template] = source  # (from the render-ahead thread too: one dict store)
        return self._renderer.render(source, catalog, target, self.settings.served_health)

    def _applied_results(self, message: Applied) -> None:
        targets = {t.name: t for t in message.job.targets}
        for outcome in message.results:
            if outcome.ok:
                self._applied_ok(outcome, message.catalogs[outcome.target], message.quarantined[outcome.target])
                continue
            if outcome.output:  # the error holds one line of it; nginx ends with "test failed"
                log.error("%s: %s output:\n%s", outcome.target, outcome.step, outcome.output.rstrip())
            if outcome.step == "down":  # the checked config is written: the LB loads it when it starts
                self._applied[outcome.target] = message.catalogs[outcome.target]
                self.status.down[outcome.target] = outcome.error or ""
                self.metrics.lb_up.labels(outcome.target).set(0)
            self.metrics.rollbacks.labels(outcome.target).inc(outcome.rolled_back)
            self._fail(targets[outcome.target], outcome.step or "apply", outcome.error or "")

    def _applied_ok(self, outcome: TargetResult, catalog: Catalog, quarantined: Mapping[str, str]) -> None:
        name = outcome.target
        self._applied[name] = catalog
        if self.status.down.pop(name, None) is not None:
            log.warning("%s: the LB is running again; revision %s is live", name, catalog.revision)
        self._consecutive_failures.pop(name, None)
        self.status.applied_revision = catalog.revision
        self.status.applied[name] = catalog.revision
        self._clear_error(name, render=False)
        self.status.quarantined.pop(name, None)
        if quarantined:  # a value can heal without a registry change (a host name that starts to resolve)
            self.status.quarantined[name] = dict(quarantined)
            self._retry_at[name] = self._clock.now() + self._recheck
        self.metrics.applied_ok(name, catalog.revision, outcome.reloaded, outcome.method, outcome.fallback)
        self.status.went_live(name, outcome.method, outcome.fallback)
        since = self._pending_since.pop(name, None)
        if since is not None:
            self.metrics.lag.labels(name).observe(self._clock.now() - since)
        if outcome.changed:
            how = {"runtime": ", through the runtime API", "reload": ", reloaded"}.get(outcome.method, "")
            log.info("%s: applied revision %s%s", name, catalog.revision, how)

    def _clear_error(self, name: str, render: bool) -> None:
        """A render clears a render error, an apply the others: a lane's result for an older render
        must not hide the error of the render that failed after it."""
        if self.status.errors.get(name, "").startswith("render: ") == render:
            self.status.errors.pop(name, None)

    def _fail(self, target: Target, step: str, error: str, retry: bool = True) -> None:
        """Log and count a failed render or apply, and try the target again after a backoff
        (`retry`) or at the next change; the same error again is logged at debug level."""
        self.status.failures[target.name] = self.status.failures.get(target.name, 0) + 1
        self.status.last_error = f"{target.name}: {step}: {error}"
        self.metrics.renders.labels(target.name, "error").inc()
        self.metrics.failures.labels(target.name, step).inc()
        repeated = self.status.errors.get(target.name) == f"{step}: {error}"
        self.status.errors[target.name] = f"{step}: {error}"
        attempt = self._consecutive_failures.get(target.name, 0)
        self._consecutive_failures[target.name] = attempt + 1
        when = "tried again at the next change"
        if retry:
            delay = backoff(attempt, random.random(), *self._retry)
            self._retry_at[target.name] = self._clock.now() + delay
            when = f"retry in {delay:.1f}s"
        log.log(logging.DEBUG if repeated else logging.ERROR, "%s: revision %s not applied (%s failed, %s): %s",
                target.name, self._state.revision, step, when, error)


def _in_process_renderer() -> Renderer:
    """Tests' and benchmarks' renderer, imported only for them: Jinja stays out of `lbgen watch` (issue 13)."""
    from lbgen.core.render import InProcessRenderer
    return InProcessRenderer()

"""The watcher: registry snapshot + watch → catalog → quiescence → render → apply, forever.

One consumer loop owns all state (the catalog, the quiescence windows, the last applied catalog).
Producers feed it through one queue: the registry follower (snapshot, then watch from the
snapshot's revision + 1, re-snapshot after any break) and the template file observer.

It never takes a working LB down: nothing is rendered before the first complete snapshot, a broken
registry connection keeps the last applied config, a sudden drop is held by the guard, a service
the LB's checker refuses is quarantined at its last applied state while the rest goes live
(lbgen.services.quarantine), and every template, check or reload failure is logged, counted and
retried while the daemon keeps running.
"""

from __future__ import annotations

import copy
import logging
import queue
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from lbgen.core.backoff import backoff
from lbgen.core.catalog import CatalogState
from lbgen.core.guard import check_drop
from lbgen.core.model import Catalog
from lbgen.core.quarantine import checker_reason
from lbgen.core.quiescence import Quiescence
from lbgen.core.reload import reloaded
from lbgen.core.render import InProcessRenderer
from lbgen.core.schema import services_prefix
from lbgen.core.settings import Settings, Target
from lbgen.errors import Compacted, LbgenError, RenderLimit, StoreError
from lbgen.ports import Clock, Renderer, Snapshot, Store, WatchEvent
from lbgen.services.applier import Applier, TargetResult
from lbgen.services.quarantine import Quarantines
from lbgen.services.watcher_metrics import WatcherMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    snapshot: Snapshot


@dataclass(frozen=True)
class _Changed:
    events: list[WatchEvent]


@dataclass(frozen=True)
class _Disconnected:
    error: str


@dataclass(frozen=True)
class _TemplatesChanged:
    pass


_STOP, _RELOAD = object(), object()


@dataclass
class WatcherStatus:
    """What the health endpoint, metrics and `lbgen status` report; updated by the consumer only."""

    connected: bool = False
    revision: int = 0
    applied_revision: int = 0
    last_error: str = ""
    disconnected_since: float | None = None
    failures: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)  # target → the revision it last applied
    errors: dict[str, str] = field(default_factory=dict)  # target → its error, until it applies again
    quarantined: dict[str, dict[str, str]] = field(default_factory=dict)  # target → service → checker's reason


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
        load_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.status = WatcherStatus()
        self.metrics = metrics or WatcherMetrics()
        self._stale_after = stale_after
        self._recheck = recheck  # a target holding services back passes again this often (DNS may heal)
        self._pending_since: dict[str, float] = {}
        self._store = store
        self._applier = applier
        self._clock = clock
        self._read_template = read_template
        self._retry = (retry_base, retry_cap)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()  # put() is safe in a signal handler
        self._stopping = threading.Event()
        self._state = CatalogState(settings.prefix)
        self._loaded = False
        self._windows = {t.name: Quiescence(t.wait or settings.wait) for t in settings.targets}
        self._templates: dict[str, str] = {}
        self._applied: dict[str, Catalog] = {}
        self._held_since: float | None = None
        self._retry_at: dict[str, float] = {}
        self._consecutive_failures: dict[str, int] = {}
        self._watch = None
        self._quarantines = Quarantines(lambda target, text: self._applier.check_text(target, text), self.metrics)
        self._on_status = on_status  # gets a copy of `status` after every message (lbgen.services.lb_status)
        self._renderer, self._load_settings = renderer or InProcessRenderer(), load_settings  # issue 10

    # --- producers -------------------------------------------------------------------------

    def follow_registry(self) -> None:
        """Producer: snapshot, then watch from revision + 1; any break or compaction → re-snapshot.

        Only `{prefix}/services/` is followed: LB nodes' status keys (`{prefix}/lb/`, written after
        each apply) must not wake every watcher into another pass, and another status, forever."""
        attempt = 0
        services = services_prefix(self.settings.prefix)
        while not self._stopping.is_set():
            try:
                snapshot = self._store.snapshot(services)
                self._queue.put(_Loaded(snapshot))
                attempt = 0
                self._watch = self._store.watch(services, snapshot.revision + 1)
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
                delay = backoff(attempt, random.random(), *self._retry)
                attempt += 1
                self._stopping.wait(delay)

    def templates_changed(self) -> None:
        """Producer hook (file observer): a template file changed on disk."""
        self._queue.put(_TemplatesChanged())

    def reload(self) -> None:
        """Re-read the settings (and so every template) at the next message; safe in a signal handler."""
        self._queue.put(_RELOAD)

    def stop(self) -> None:
        """Ask every loop to end; safe from any thread or a signal handler. A render in progress is
        killed and nothing more is applied."""
        self._stopping.set()
        self._renderer.close()
        self._queue.put(_STOP)
        if self._watch is not None:
            self._watch.cancel()

    def problems(self) -> list[str]:
        """Why this watcher is not healthy (for `/healthz`): no snapshot yet, or a stale watch."""
        status = self.status
        if not self._loaded:
            return [f"registry: no snapshot yet{': ' + status.last_error if status.last_error else ''}"]
        since = status.disconnected_since
        if since is not None and self._clock.now() - since >= self._stale_after:
            return [f"registry: disconnected for {self._clock.now() - since:.0f}s, serving revision "
                    f"{status.applied_revision}: {status.last_error}"]
        return [f"{name}: {error.removeprefix('render: ')}" for name, error in sorted(status.errors.items())
                if error.startswith("render: ")]  # a template that does not render (`_fail`)

    # --- the consumer ----------------------------------------------------------------------

    def run(self) -> None:
        """The consumer loop: runs until `stop()`. Starts the registry follower itself."""
        follower = threading.Thread(target=self.follow_registry, name="registry-follower", daemon=True)
        follower.start()
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
            follower.join(timeout=5)

    def _next_message(self) -> object | None:
        now = self._clock.now()
        deadlines = [d for w in self._windows.values() if (d := w.deadline()) is not None]
        deadlines += self._retry_at.values()
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
            rejected = self._state.load(message.snapshot)
            self._loaded = True
            self._connected(now)
            log.info("registry: snapshot at revision %s, %s keys", message.snapshot.revision,
                     len(message.snapshot.items))
            self._log_rejected(rejected)
            self._note_all(now)
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
        elif isinstance(message, _TemplatesChanged):
            self._templates.clear()
            self._note_all(now)
        elif message is _RELOAD:
            self._reload(now)

    def _connected(self, now: float) -> None:
        self.status.connected = True
        self.status.disconnected_since = None
        self.metrics.connected.set(1)

    def _note_all(self, now: float) -> None:
        self.status.revision = self._state.revision
        if self._loaded:
            for name, window in self._windows.items():
                window.note(now)
                self._pending_since.setdefault(name, now)

    def _log_rejected(self, rejected: list) -> None:
        for item in rejected:
            log.warning("registry: skipping %s at revision %s: %s", item.key, self._state.revision, item.reason)

    # --- SIGHUP: re-read the settings (issue 10) ----------------------------------------------

    def _reload(self, now: float) -> None:
        """Run on the re-read settings and templates (a broken file keeps the running ones); the
        catalog, the applied state and the guard's hold are kept: only what renders changes."""
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
        log.info("reload: settings and templates re-read for %s", ", ".join(t.name for t in settings.targets))
        self._note_all(now)

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
        self.metrics.catalog(catalog, self.settings.served_health, len(self._state.rejected))
        rendered = {t.name: text for t in due if (text := self._render(t, catalog)) is not None}
        if rendered and not self._stopping.is_set():  # stopped mid-render: apply nothing
            self._apply(due, rendered, catalog)

    def _is_due(self, name: str, now: float) -> bool:
        retry_at = self._retry_at.get(name)
        return self._windows[name].due(now) or (retry_at is not None and now >= retry_at)

    def _render(self, target: Target, catalog: Catalog) -> str | None:
        verdict = check_drop(self._applied.get(target.name), catalog, self.settings.guard,
                             self.settings.served_health, self._held_for())
        if not verdict.allowed:
            self._held_since = self._held_since or self._clock.now()
            self._fail(target, "guard", f"held by the drop guard: {verdict.reason}")
            return None
        try:
            source = self._templates.get(target.template) or self._read_template(target.template)
            self._templates[target.template] = source
            text = self._renderer.render(source, catalog, target, self.settings.served_health)
        except (LbgenError, OSError) as e:
            if not self._stopping.is_set():
                # Out of its time or memory, the same render would burn as much again: wait for a change.
                self._fail(target, "render", str(e), retry=not isinstance(e, RenderLimit))
            return None
        return text

    def _held_for(self) -> float:
        return 0.0 if self._held_since is None else self._clock.now() - self._held_since

    def _apply(self, due: list[Target], rendered: dict[str, str], catalog: Catalog) -> None:
        targets = {t.name: t for t in due}
        for outcome in self._applier.apply(due, rendered):
            applied, held = catalog, {}
            if outcome.step == "check":
                outcome, applied, held = self._hold_back(targets[outcome.target], catalog, outcome)
            if outcome.ok:
                self._quarantines.settle(outcome.target, held, applied)
                self._applied_ok(outcome, applied)
            else:
                if outcome.output:  # the error holds one line of it; nginx ends with "test failed"
                    log.error("%s: %s output:\n%s", outcome.target, outcome.step, outcome.output.rstrip())
                self.metrics.rollbacks.labels(outcome.target).inc(outcome.rolled_back)
                self._fail(targets[outcome.target], outcome.step or "apply", outcome.error or "")

    def _hold_back(self, target: Target, catalog: Catalog, refused: TargetResult
                   ) -> tuple[TargetResult, Catalog, Mapping[str, str]]:
        """The check refused `catalog`: apply it with the services that cause it held back (issue 10
        part 3), or keep the whole last good config when the refusal is tied to no service."""
        source = self._templates[target.template]
        try:
            resolution = self._quarantines.resolve(
                target, catalog, self._applied.get(target.name),
                lambda mixed: self._renderer.render(source, mixed, target, self.settings.served_health),
                checker_reason(refused.output, refused.error or ""))
        except LbgenError as e:  # the search's final render failed: out of its limits, or stopped
            if not self._stopping.is_set():
                log.error("%s: quarantine search abandoned: %s", target.name, e)
            return refused, catalog, {}
        if resolution is None or self._stopping.is_set():  # stopped during the search: apply nothing
            return refused, catalog, {}
        [outcome] = self._applier.apply([target], {target.name: resolution.text})
        return outcome, resolution.catalog, resolution.held

    def _applied_ok(self, outcome: TargetResult, catalog: Catalog) -> None:
        name = outcome.target
        self._applied[name] = catalog
        self._consecutive_failures.pop(name, None)
        self._held_since = None
        self.status.applied_revision = catalog.revision
        self.status.applied[name] = catalog.revision
        self.status.errors.pop(name, None)
        self.status.quarantined[name] = self._quarantines.held(name)
        if not self.status.quarantined[name]:
            del self.status.quarantined[name]
        else:  # a value can heal without a registry change (a host name that starts to resolve)
            self._retry_at[name] = self._clock.now() + self._recheck
        self.metrics.renders.labels(name, "ok").inc()
        self.metrics.applied.labels(name).set(catalog.revision)
        self.metrics.reloads.labels(name).inc(outcome.reloaded)
        self.metrics.runtime_updates.labels(name).inc(outcome.method == "runtime")
        since = self._pending_since.pop(name, None)
        if since is not None:
            self.metrics.lag.labels(name).observe(self._clock.now() - since)
        if outcome.changed:
            how = {"runtime": ", through the runtime API", "reload": ", reloaded"}.get(outcome.method, "")
            log.info("%s: applied revision %s%s", name, catalog.revision, how)

    def _fail(self, target: Target, step: str, error: str, retry: bool = True) -> None:
        """Log and count a failed render or apply, and try the target again after a backoff
        (`retry`) or at the next change."""
        self.status.failures[target.name] = self.status.failures.get(target.name, 0) + 1
        self.status.last_error = f"{target.name}: {step}: {error}"
        self.metrics.renders.labels(target.name, "error").inc()
        self.metrics.failures.labels(target.name, step).inc()
        self.status.errors[target.name] = f"{step}: {error}"
        attempt = self._consecutive_failures.get(target.name, 0)
        self._consecutive_failures[target.name] = attempt + 1
        when = "tried again at the next change"
        if retry:
            delay = backoff(attempt, random.random(), *self._retry)
            self._retry_at[target.name] = self._clock.now() + delay
            when = f"retry in {delay:.1f}s"
        log.error("%s: revision %s not applied (%s failed, %s): %s",
                  target.name, self._state.revision, step, when, error)

"""What lbgen's services need from the outside world, as Protocols.

The core and the services import only these; the CLI wires in the concrete adapters
(`lbgen.adapters.*`), and tests wire in fakes that honour the same contract.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Iterator, Protocol, Sequence, TypeVar

from lbgen.core.kinds import RuntimeChange
from lbgen.core.model import Catalog
from lbgen.core.settings import Target
from lbgen.core.values import (
    CommandResult, ContainerInfo, ContainerSpec, DockerEvent, KeyValue, Snapshot, WatchEvent,
)

G = TypeVar("G")

# The values are imported for the Protocols' signatures; import them from `lbgen.core.values`.
__all__ = [
    "AppliedStates", "ConfigFiles", "Clock", "Docker", "DockerEvents", "LbControl", "Renderer", "Runner", "RuntimeApi",
    "Store", "Watch",
]


class Watch(Protocol):
    """A stream of event batches under a prefix, oldest first; `cancel()` ends the iteration.

    Iteration raises `Compacted` when the start revision is gone, and `StoreUnavailable` when the
    connection breaks; the caller resumes with `watch(prefix, last_revision + 1)` or re-snapshots.
    """

    def __iter__(self) -> Iterator[list[WatchEvent]]: ...

    def cancel(self) -> None: ...


class Store(Protocol):
    """A key-value registry with revisions, prefix watches and leases (etcd v3, or a YAML file)."""

    def snapshot(self, prefix: str) -> Snapshot: ...

    def snapshot_pages(self, prefix: str) -> Iterator[Snapshot]:
        """The snapshot in consecutive pages, each at the first page's revision: a caller can decode a
        page while the next is fetched (issue 13). Raises `Compacted` when the revision is gone
        before the last page; only a fully iterated snapshot is complete."""
        ...

    def get(self, key: str) -> KeyValue | None: ...

    def get_many(self, keys: Sequence[str]) -> list[KeyValue]:
        """Those of `keys` that exist (a few round trips, however many keys: an etcd transaction of
        reads per 128 keys)."""
        ...

    def lease_keys(self, lease: int) -> tuple[str, ...] | None:
        """The keys attached to `lease` (etcd's LeaseTimeToLive with keys=true); () when the lease is
        gone; None when this store's leases hold no keys (the file registry)."""
        ...

    def count(self, prefix: str, revision: int = 0) -> int:
        """How many keys were under `prefix` at `revision` (0: now); raises `Compacted` when that
        revision's history is gone."""
        ...

    def watch(self, prefix: str, start_revision: int) -> Watch: ...

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write `value`; returns the new revision."""
        ...

    def delete(self, key: str) -> bool:
        """Remove `key`; returns whether it existed."""
        ...

    def grant_lease(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; returns its id."""
        ...

    def keep_alive(self, lease: int) -> int:
        """Refresh `lease` once; returns the TTL granted. Raises `LeaseLost` if it has expired."""
        ...

    def revoke_lease(self, lease: int) -> None: ...

    def close(self) -> None: ...


class Runner(Protocol):
    """Runs an argv list with a timeout (never a shell string), capturing stdout and stderr."""

    def run(self, argv: list[str], timeout: float) -> CommandResult: ...


class Clock(Protocol):
    """Monotonic time and sleeping, injected so policies and loops can be tested without waiting."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


# --- Docker -------------------------------------------------------------------------------------


class DockerEvents(Protocol):
    """A stream of Docker events; `close()` ends the iteration. A broken stream raises `DockerError`."""

    def __iter__(self) -> Iterator[DockerEvent]: ...

    def close(self) -> None: ...


class Docker(Protocol):
    """The Docker Engine, as the agent and deploy use it."""

    def events(self) -> DockerEvents: ...

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        """Running containers (with `label`, only those carrying that label key or `key=value`)."""
        ...

    def inspect(self, container_id: str) -> ContainerInfo | None:
        """None when the container does not exist (any more)."""
        ...

    def create_and_start(self, spec: ContainerSpec) -> str:
        """Create and start a container; returns its id."""
        ...

    def stop(self, container_id: str, timeout: float) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def close(self) -> None: ...


# --- Applying configs to load balancers ------------------------------------------------------------


class ConfigFiles(Protocol):
    """A target's dest file: read, stage a candidate beside it, make it live, keep a last-known-good."""

    def read(self, target: Target) -> str | None:
        """The live text, or None when dest does not exist yet."""
        ...

    def stage(self, target: Target, text: str) -> Path:
        """Write a candidate where an atomic rename onto dest is possible; returns its path."""
        ...

    def discard(self, staged: Path) -> None: ...

    def commit(self, target: Target, staged: Path) -> None:
        """Replace dest with `staged`, atomically."""
        ...

    def save_lkg(self, target: Target) -> bool:
        """Keep a copy of the live dest; False when there is none."""
        ...

    def restore_lkg(self, target: Target) -> None:
        """Put the last-known-good back as dest (or remove dest when it did not exist)."""
        ...


class LbControl(Protocol[G]):
    """How lbgen drives one running load balancer of a kind (`lbgen.adapters.kinds`) for one target.

    `key` names the running LB instance: targets sharing it are reloaded once per pass. `G` is
    the kind's own notion of a generation (nginx: master and worker pids; HAProxy: `show proc`'s
    counters too; a proxy watching its file: what it reports having loaded): the applier only
    passes it back to `wait_live` and logs it. The built-in check argv is the core kind's `check`.
    """

    key: str

    def whole_config(self, staged: Path) -> AbstractContextManager[Path]:
        """The file the checker must load so it validates the whole config with `staged` in place."""
        ...

    def observe(self) -> G | None:
        """The running generation; None when the LB is not running (`down_reason` says why).
        Quick when it is down: no long wait on a socket that is gone (issue 10)."""
        ...

    def down_reason(self) -> str:
        """Why the last `observe()` found no running LB, in a few words for the error line."""
        ...

    def request_reload(self) -> None:
        """Ask the LB to load the new config, without waiting; a no-op for a proxy that watches its
        own config file."""
        ...

    def wait_live(self, before: G, timeout: float) -> G:
        """Block until the LB serves the new config (`before`: what `observe` saw before the
        change); `ApplyError` if it refused it or did not get there within `timeout` seconds."""
        ...


class RuntimeApi(Protocol):
    """A load balancer's runtime API (HAProxy's stats socket): endpoint changes without a reload."""

    def apply(self, plan: RuntimeChange) -> None:
        """Send the plan's commands, then read the state back; `ApplyError` on any refusal or mismatch."""
        ...


class AppliedStates(Protocol):
    """What each target last applied, kept across restarts for the drop guard (issue 10.6)."""

    def load(self, target: Target, current: Catalog | None = None) -> Catalog | None:
        """The catalog last applied to `target`; None when unknown (never written, or unreadable).
        Its services equal to `current`'s (the registry's catalog now) are `current`'s objects."""
        ...

    def save(self, target: Target, catalog: Catalog) -> None:
        """Remember `catalog` as applied to `target`; `ApplyError` when it cannot be written."""
        ...


class Renderer(Protocol):
    """Renders a target's template (`lbgen.core.render.render`), possibly bounded in time and memory.

    `close()` (any thread, or a signal handler) ends a render in progress, which then raises
    `TemplateError`, and refuses later ones: the watcher calls it when it stops.
    """

    def render(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str]) -> str:
        """The config text; `TemplateError` naming the template when it cannot be rendered."""
        ...

    def close(self) -> None: ...

"""What the agent reports about itself under `{prefix}/agents/{node}` (issue 15, docs/agent.md).

The agent's consumer records Docker's reachability, counts and resyncs here; any thread may record
an error (the keep-alive thread does). `due()` says what to write: a value only when something
other than its timestamp changed since the last write, so a quiet agent writes its presence once
per resync (a fleet of 1,000 agents on a 60 s resync: about 17 small writes a second, which no
watcher sees: watchers watch `{prefix}/services/` only).
"""

from __future__ import annotations

import threading
from typing import Callable

from msgspec.structs import replace

from lbgen import __version__
from lbgen.core.agent_status import AgentStatus


class Presence:
    """The agent's presence value, kept up to date and compared with the last one written."""

    def __init__(self, node: str, resync_interval: float, wall: Callable[[], float]) -> None:
        self._wall = wall
        self._lock = threading.Lock()
        self._status = AgentStatus(node, version=__version__, docker_since=wall(), resync_interval=resync_interval)
        self._written: AgentStatus | None = None

    @property
    def status(self) -> AgentStatus:
        with self._lock:
            return self._status

    def docker(self, reachable: bool, error: str = "") -> None:
        """Docker answered (or not): `docker_since` moves only when reachability changes."""
        with self._lock:
            if reachable != self._status.docker_reachable:
                self._status = replace(self._status, docker_reachable=reachable, docker_since=self._wall())
        if error:
            self.error(error)

    def error(self, text: str) -> None:
        with self._lock:
            self._status = replace(self._status, error=text, error_at=self._wall())

    def counts(self, containers: int, endpoints: int) -> None:
        with self._lock:
            self._status = replace(self._status, containers=containers, endpoints=endpoints)

    def resynced(self) -> None:
        """A full re-list of the containers and re-read of the node's keys has just succeeded."""
        with self._lock:
            self._status = replace(self._status, resync_at=self._wall())

    def due(self) -> AgentStatus | None:
        """The value to write, stamped with the time, or None when the last one written is current."""
        with self._lock:
            if self._written is not None and replace(self._written, updated_at=None) == self._status:
                return None
            return replace(self._status, updated_at=self._wall())

    def written(self, status: AgentStatus | None) -> None:
        """`status` is in the registry (None: nothing is, e.g. on a new lease: write again)."""
        with self._lock:
            self._written = status

"""Where the live HAProxy config has each endpoint, so the next render keeps it there (issue 11).

Read from the target's dest file (re-read only when its size or mtime changes), overlaid with the
last text rendered for the target: a render that is still on its way to the LB (the lanes apply
after the watcher renders) has placed new endpoints that the next render must not move either.
"""

from __future__ import annotations

import os
import threading

from lbgen.core.model import Catalog
from lbgen.core.placement import Assignment, Servers, assign, overlay, server_slots
from lbgen.core.settings import Target


class LiveSlots:
    """Per haproxy target: the live file's server slots and those of the last render."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[tuple[int, int, int], Servers]] = {}  # dest → (stat key, servers)
        self._rendered: dict[str, Servers] = {}  # target → servers of its last render
        self._lock = threading.Lock()  # lanes render quarantine probes from their own threads

    def previous(self, target: Target, catalog: Catalog) -> Assignment | None:
        """Endpoint slots to keep for `catalog`; None for a target that is not haproxy."""
        if target.kind != "haproxy":
            return None
        with self._lock:
            live, rendered = self._live(target.dest), self._rendered.get(target.name, {})
        return overlay(assign(live, catalog), assign(rendered, catalog))

    def rendered(self, target: Target, text: str) -> None:
        """Remember the servers of the text just rendered for `target`."""
        if target.kind == "haproxy":
            servers = server_slots(text)
            with self._lock:
                self._rendered[target.name] = servers

    def _live(self, dest: str) -> Servers:
        try:
            info = os.stat(dest)
            key = (info.st_ino, info.st_size, info.st_mtime_ns)
            cached = self._files.get(dest)
            if cached is None or cached[0] != key:
                with open(dest, encoding="utf-8", errors="replace") as f:
                    cached = self._files[dest] = (key, server_slots(f.read()))
            return cached[1]
        except OSError:  # no live config yet (first start), or unreadable: place by hash
            return {}

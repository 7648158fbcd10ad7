"""Where the live HAProxy config has each endpoint, so the next render keeps it there (issue 11).

Read from the target's dest file (re-read only when its size or mtime changes), overlaid with the
last text rendered for the target: a render that is still on its way to the LB (the lanes apply
after the watcher renders) has placed new endpoints that the next render must not move either.
That text is parsed only when it differs from the live file (0.25 s at 100,000 endpoints), and
the live file's slots are matched again only for the services that changed (issue 13: matching all
100,000 endpoints cost ~50 ms per render).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lbgen.core.kinds.haproxy.slots import Assignment, Servers, assign, assign_service, overlay, server_slots
from lbgen.core.model import Catalog, Service
from lbgen.core.settings import Target

_StatKey = tuple[int, int, int]


class LiveSlots:
    """`lbgen.adapters.kinds.LiveContext` of the haproxy targets of one render worker (one thread,
    `lbgen.adapters.render_worker`; it is told the texts other workers rendered): per target the
    live file's server slots and those of the last render, as the context's `previous_slots`."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[_StatKey, str, Servers]] = {}  # dest → (stat key, text, servers)
        self._rendered: dict[str, str] = {}  # target → its last rendered text
        # dest → service → (the service, its live lines, their assignment), as last matched
        self._matched: dict[str, dict[str, tuple[Service, list[tuple[int, str]], dict[str, int]]]] = {}

    def context(self, target: Target, catalog: Catalog) -> Mapping[str, Any]:
        """`previous_slots`: the endpoint slots to keep for `catalog`."""
        text, live = self._live(target.dest)
        rendered = self._rendered.get(target.name, text)
        kept = self._assigned(target.dest, live, catalog)
        return {"previous_slots": kept if rendered == text else overlay(kept, assign(server_slots(rendered), catalog))}

    def rendered(self, target: Target, text: str) -> None:
        """Remember the text just rendered for `target`."""
        self._rendered[target.name] = text

    def _assigned(self, dest: str, live: Servers, catalog: Catalog) -> Assignment:
        """`assign(live, catalog)`, matched again only for a service or live lines that are not
        the same objects as last time."""
        before, now = self._matched.get(dest, {}), {}
        found: Assignment = {}
        for service in catalog.services:
            lines = live.get(service.name)
            if not lines:
                continue
            hit = before.get(service.name)
            if hit is None or hit[0] is not service or hit[1] is not lines:
                hit = (service, lines, assign_service(lines, service))
            now[service.name] = hit
            if hit[2]:
                found[service.name] = hit[2]
        self._matched[dest] = now
        return found

    def _live(self, dest: str) -> tuple[str, Servers]:
        try:
            info = os.stat(dest)
            key = (info.st_ino, info.st_size, info.st_mtime_ns)
            cached = self._files.get(dest)
            if cached is None or cached[0] != key:
                with open(dest, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                cached = self._files[dest] = (key, text, server_slots(text))
            return cached[1], cached[2]
        except OSError:  # no live config yet (first start), or unreadable: place by hash
            return "", {}

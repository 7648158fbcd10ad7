"""Watching files on disk with watchdog: the one place that sets up an observer (issue 11).

Directories are watched, not files, so an editor that replaces a file (write a temp, rename it
over) is seen too. Only events that may have changed content are passed on; reads (`opened`,
`closed_no_write`, which our own reads cause) are not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, cast

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})


class FileWatch:
    """Calls `on_change(paths)` from watchdog's thread with the paths an event touched (source and,
    for a move, destination) in any of `directories`; the caller picks the paths it cares about."""

    def __init__(self, directories: Iterable[str], on_change: Callable[[set[str]], None], name: str = "") -> None:
        from watchdog.observers import Observer  # only when something is watched: `lbgen render` never is

        self._observer = Observer()
        self._observer.daemon = True
        if name:
            self._observer.name = name
        handler = cast("FileSystemEventHandler", _Changes(on_change))
        for directory in sorted(set(directories)):
            self._observer.schedule(handler, directory, recursive=False)
        self._observer.start()

    def stop(self, timeout: float = 5) -> None:
        """Stop the observer thread and wait for it."""
        self._observer.stop()
        self._observer.join(timeout=timeout)


class _Changes:
    """An observer only calls its handler's `dispatch`: defining one needs no watchdog import."""

    def __init__(self, on_change: Callable[[set[str]], None]) -> None:
        self._on_change = on_change

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type in CHANGES:
            touched = {str(event.src_path), str(getattr(event, "dest_path", "") or "")} - {""}
            self._on_change(touched)

"""A watcher gives back what its start-up load freed, once, after its first applied config (issue 13)."""

from __future__ import annotations

import platform

from lbgen.adapters.heap import release_free_heap
from lbgen.cli.watch import after_first_apply
from lbgen.services.watcher import WatcherStatus


def test_the_release_runs_once_after_the_first_applied_config_and_every_status_still_goes_on() -> None:
    released: list[int] = []
    seen: list[int] = []
    hook = after_first_apply(lambda status: seen.append(status.applied_revision), lambda: released.append(1))
    for revision in (0, 0, 7, 8, 9):
        hook(WatcherStatus(applied_revision=revision))
    assert released == [1]
    assert seen == [0, 0, 7, 8, 9]


def test_glibc_takes_the_free_heap_back() -> None:
    assert release_free_heap() is (platform.libc_ver()[0] == "glibc")

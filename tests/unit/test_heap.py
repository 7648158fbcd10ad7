"""A watcher gives back what its start-up load freed, once, after its first applied config (issue 13)."""

from __future__ import annotations

import platform

from lbgen.adapters.heap import SETTINGS, keep_heap_small, release_free_heap
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


def test_glibc_takes_the_malloc_caps() -> None:
    made = keep_heap_small(environ={})
    assert made == (list(SETTINGS) if platform.libc_ver()[0] == "glibc" else [])


def test_a_setting_in_the_environment_wins_and_a_refused_one_is_not_reported() -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 0 if value == 2 else 1  # this C library refuses the arena cap

    assert keep_heap_small({}, mallopt) == ["MALLOC_MMAP_THRESHOLD_"]
    calls.clear()
    assert keep_heap_small({"MALLOC_MMAP_THRESHOLD_": "65536"}, mallopt) == []
    assert calls == [SETTINGS["MALLOC_ARENA_MAX"]]

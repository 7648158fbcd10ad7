"""A watcher gives back the heap its start-up load and each later pass freed (issue 13)."""

from __future__ import annotations

import platform

from lbgen.adapters.heap import SETTINGS, HeapTrimmer, keep_heap_small, release_free_heap
from lbgen.cli.watch import releasing_heap
from lbgen.services.watcher import WatcherStatus


def test_the_heap_is_released_after_a_newer_applied_revision_as_often_as_the_trimmer_allows() -> None:
    trims: list[bool] = []
    seen: list[int] = []
    now = [100.0]
    trimmer = HeapTrimmer(1.0, lambda: now[0], trims.append)
    hook = releasing_heap(lambda status: seen.append(status.applied_revision), trimmer)
    for revision, at in ((0, 100.0), (7, 100.0), (7, 101.5), (8, 101.5), (9, 102.0), (10, 102.6), (11, 103.4)):
        now[0] = at
        hook(WatcherStatus(applied_revision=revision))
    assert trims == [True, False, False]  # 7 (collecting), 8 (1.5 s later), 10 (1.1 s after 8)
    assert seen == [0, 7, 7, 8, 9, 10, 11]


def test_the_trimmer_trims_at_most_once_per_period_unless_told_to_collect() -> None:
    trims: list[bool] = []
    now = [0.0]
    trimmer = HeapTrimmer(1.0, lambda: now[0], trims.append)
    assert [trimmer(), trimmer(), trimmer(collect=True)] == [True, False, True]
    now[0] = 0.9
    assert trimmer() is False
    now[0] = 1.0
    assert trimmer() is True
    assert trims == [False, True, False]


def test_glibc_takes_the_free_heap_back() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    assert release_free_heap() is glibc
    assert release_free_heap(collect=True) is glibc


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

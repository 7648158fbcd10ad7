"""Giving the heap a large load freed back to the operating system (issue 13).

Loading a registry snapshot allocates the raw values, their decoded form and the catalog at once;
most of the first two are freed once the catalog is built, but glibc keeps freed heap pages
mapped, so a watcher's resident size stayed at its start-up peak (3.7 MB of 70 at 10,500 keys,
bench/README.md). Each later render and apply frees what it built as well, and glibc kept those
pages too: 2.6-2.9 MB of a watcher's 62 MB at 10,500 keys after 100 changes were free heap
(three runs, 2026-12-04), and its render worker grew from 51 to 79 MB over 1,000 changes (71 MB
trimming). `malloc_trim` returns them, in 0.2 ms when there is something to return and a few
microseconds when there is not; where the C library has none (musl), nothing happens.

A watcher also caps glibc's malloc for its life (`keep_heap_small`): at most 2 arenas (glibc makes
up to 8 per core, one per thread that allocates, each holding its own freed pages), and blocks of
128 KiB or more mapped apart, so freeing one returns it at once (glibc raises that threshold to the
size of the largest block freed, so the ~0.5 MB texts of every render stayed on the heap). At 10,500
keys that kept `lbgen watch` at ~62 MB after 40 changes instead of ~68 (watch_bench's set-up, one
run each, load ~1, 2026-12-03). `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` in the environment
win over these.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import os
import time
from typing import Callable, Mapping

log = logging.getLogger(__name__)

# glibc's mallopt(3) parameters (malloc.h) and the values a watcher sets.
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
SETTINGS = {"MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 128 * 1024), "MALLOC_ARENA_MAX": (_M_ARENA_MAX, 2)}


def release_free_heap(collect: bool = False) -> bool:
    """Hand free heap pages back to the OS (after collecting cyclic garbage if `collect`: a full
    collection costs milliseconds, worth it once after the start-up load, not after every apply);
    whether the C library could."""
    if collect:
        gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the running process's C library
    except (OSError, AttributeError):
        return False
    trim(0)
    log.debug("freed heap returned to the operating system")
    return True


class HeapTrimmer:
    """`release_free_heap` at most once per `every` seconds: each trim costs the pages it returned a
    fault when they are used again (trimming after every change cost 0.25 ms of CPU per change at
    100 keys). The watcher trims after an applied revision, its render worker after an answer."""

    def __init__(self, every: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 release: Callable[[bool], object] = release_free_heap) -> None:
        self._every, self._clock, self._release = every, clock, release
        self._last = -math.inf

    def __call__(self, collect: bool = False) -> bool:
        """Trim unless the last trim is less than `every` old (`collect`: now, and collect cycles
        first); whether it trimmed."""
        now = self._clock()
        if not collect and now - self._last < self._every:
            return False
        self._last = now
        self._release(collect)
        return True


def keep_heap_small(environ: Mapping[str, str] = os.environ,
                    mallopt: Callable[[int, int], int] | None = None) -> list[str]:
    """Cap the C library's malloc as the module says (call it before the threads start); the
    settings made, by their environment names (none where the C library has no `mallopt`)."""
    if mallopt is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return []
    made = [name for name, (param, value) in SETTINGS.items() if name not in environ and mallopt(param, value) == 1]
    log.debug("malloc tuned: %s", ", ".join(made) or "nothing")
    return made

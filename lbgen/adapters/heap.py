"""Giving the heap a large load freed back to the operating system (issue 13).

Loading a registry snapshot allocates the raw values, their decoded form and the catalog at once;
most of the first two are freed once the catalog is built, but glibc keeps freed heap pages
mapped, so a watcher's resident size stayed at its start-up peak (3.7 MB of 70 at 10,500 keys,
bench/README.md). `malloc_trim` returns them; where the C library has none (musl), nothing
happens.
"""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger(__name__)


def release_free_heap() -> bool:
    """Collect cyclic garbage, then hand free heap pages back to the OS; whether the C library could."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the running process's C library
    except (OSError, AttributeError):
        return False
    trim(0)
    log.debug("freed heap returned to the operating system")
    return True

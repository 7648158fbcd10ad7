"""One of each (issue 11): the one atomic file write, the one file watch, an injected clock."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lbgen.adapters.file_watch import FileWatch
from lbgen.adapters.files import write_atomic
from lbgen.adapters.memory_store import MemoryStore
from lbgen.services.status_publisher import StatusPublisher
from tests.support.util import wait_until


def test_write_atomic_replaces_content_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "registry.yaml"
    dest.write_text("old")
    write_atomic(dest, b"new")
    assert dest.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["registry.yaml"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600  # mkstemp's mode when none is asked for
    write_atomic(dest, b"again", mode=0o644)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


def test_write_atomic_raises_and_leaves_no_temp_when_dir_is_missing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing" / "f", b"x")
    assert os.listdir(tmp_path) == []


def test_file_watch_reports_a_replaced_file_and_ignores_reads(tmp_path: Path) -> None:
    watched = tmp_path / "t.conf"
    watched.write_text("a")
    seen: list[set[str]] = []
    watch = FileWatch([str(tmp_path)], seen.append, name="test-file-watch")
    try:
        watched.read_text()
        write_atomic(watched, b"b")  # a temp file renamed over: the destination path is reported
        wait_until(lambda: any(str(watched) in paths for paths in seen), 10, "the rename over t.conf")
    finally:
        watch.stop()
    assert all("" not in paths for paths in seen)


def test_status_publisher_schedules_keep_alives_on_the_injected_clock() -> None:
    now = [100.0]
    publisher = StatusPublisher(MemoryStore(), "/lbgen", "lb-1", ["nginx"], ttl=15, clock=lambda: now[0])
    assert publisher.step() == 5.0  # granted at 100: the next keep-alive is due at 100 + 15/3
    now[0] = 103.0
    assert publisher.step() == 2.0

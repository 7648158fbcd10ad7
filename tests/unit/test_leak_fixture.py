"""The leaked-thread check of tests/conftest.py sees a thread a test left running, and only that."""

from __future__ import annotations

import threading

from tests.conftest import _leaked


def test_a_thread_left_running_is_found_and_a_stopped_one_is_not() -> None:
    before = set(threading.enumerate())
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-running", daemon=True)
    thread.start()
    try:
        assert [t.name for t in _leaked(before)] == ["left-running"]
    finally:
        stop.set()
        thread.join(timeout=5)
    assert _leaked(before) == []

"""Shared pytest setup. Fixtures for the real services live in `tests/support/` as plugins:
append yours to `pytest_plugins`.

In CI (`CI=true`) a skipped test is a failure: a missing etcd, dockerd, nginx or haproxy must
never pass silently there.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Generator

import pytest

# As lbgen.adapters.etcd_connection does before grpc loads: a test module that imports grpc or
# pyetcd itself (third-party imports sort first) would otherwise load it with fork support on, and
# then every render worker forked in that pytest process restarts gRPC's poller on descriptors it
# closes, and aborts (SIGABRT).
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

pytest_plugins: list[str] = [
    "tests.support.docker", "tests.support.etcd", "tests.support.lb", "tests.support.nginx_lua",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_skip_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_skip_in_ci(report)
    return report


# --- Leaked threads (issue 11) ----------------------------------------------------------------------
# A test (with its function-scoped fixtures) must end every thread it started: a leaked consumer or
# producer keeps running into the next test, and in a daemon it is a bug. Session- and module-scoped
# fixtures are set up before this autouse function fixture, so their threads are already in the
# "before" set. What may outlive a test, by thread name prefix:
ALLOWED_THREAD_PREFIXES = (
    # (none yet; add a prefix with the reason: a library's process-wide pool started on first use)
)
LEAK_GRACE_SECONDS = 10.0  # a stopped thread may take a moment to notice; generous for a loaded machine


def _leaked(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(ALLOWED_THREAD_PREFIXES)]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Generator[None, None, None]:
    """Fails a test that leaves a thread running after its teardown (after a grace period)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while (leaked := _leaked(before)) and time.monotonic() < deadline:
        leaked[0].join(timeout=0.1)
    if leaked:
        names = ", ".join(sorted(f"{t.name} ({getattr(t, '_target', None) or type(t).__name__})" for t in leaked))
        pytest.fail(f"{len(leaked)} thread(s) still running after the test: {names}"[:400], pytrace=False)

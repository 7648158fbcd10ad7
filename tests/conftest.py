"""Shared pytest setup. Fixtures for the real services live in `tests/support/` as plugins:
append yours to `pytest_plugins`.

In CI (`CI=true`) a skipped test is a failure: a missing etcd, dockerd, nginx or haproxy must
never pass silently there.
"""

from __future__ import annotations

import os
from typing import Generator

import pytest

pytest_plugins: list[str] = ["tests.support.docker", "tests.support.etcd", "tests.support.lb"]

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

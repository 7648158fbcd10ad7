"""The monitoring kit against the real promtool (Debian's prometheus package): the rules load, their
unit tests (monitoring/prometheus/lbgen.rules.test.yml) pass, the scrape config example is valid,
and every Grafana query is valid PromQL. Which metrics they name: tests/unit/test_monitoring.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.etcd import require_binary

pytestmark = pytest.mark.integration

PROMETHEUS = Path(__file__).resolve().parents[2] / "monitoring/prometheus"
DASHBOARD = PROMETHEUS.parent / "grafana/lbgen-fleet.json"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    """Run promtool; its whole output is the failure message when it exits non-zero."""
    require_binary("promtool", "promtool (Debian package prometheus)")
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def test_rules_load() -> None:
    assert "SUCCESS" in promtool("check", "rules", "lbgen.rules.yml")


def test_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "lbgen.rules.test.yml")


def test_scrape_config_example_is_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.example.yml")


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    # promtool checks PromQL in rule files only: each query becomes a recording rule.
    group = {"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump({"groups": [group]}))
    assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)

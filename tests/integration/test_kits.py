"""The LB-node kits' target profiles (nginx/lbgen.yaml, haproxy/lbgen.yaml) run their real checkers:
a refused config must come back with the checker's reason, not only an exit status (issue 14)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.etcd import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

BROKEN = {
    "nginx": ("events {}\nhttp { lbgen_no_such_directive; }\n", 'unknown directive "lbgen_no_such_directive"'),
    "haproxy": ("global\nfrontend f\n  lbgen_no_such_keyword\n", "unknown keyword 'lbgen_no_such_keyword'"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_kit_check_says_why_a_config_is_refused(kind: str, tmp_path: Path) -> None:
    (target,) = yaml.safe_load((ROOT / kind / "lbgen.yaml").read_text())["targets"]
    require_binary(target["check"][0], kind)
    config, reason = BROKEN[kind]
    staged = tmp_path / "staged.conf"
    staged.write_text(config)
    argv = [str(staged) if arg == "{staged}" else str(arg) for arg in target["check"]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert reason in done.stdout + done.stderr, f"{argv} hid the reason: {done.stdout + done.stderr!r}"

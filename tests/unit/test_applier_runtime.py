"""The applier's runtime path with a scripted runner and a fake runtime API: when it is taken, that
the file is still written, and every way it falls back to the reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lbgen.adapters.files import LocalFiles
from lbgen.core.kinds.haproxy.runtime_plan import RuntimePlan
from lbgen.core.settings import Target
from lbgen.errors import ApplyError
from lbgen.services.applier import Applier
from tests.unit.test_applier import FakeRunner, Script, failing, make_target

OLD = "backend web\n    server slot1 10.0.0.1:80 weight 1\n    server slot2 127.0.0.1:1 disabled weight 1\n"
ADDED = OLD.replace("127.0.0.1:1 disabled", "10.0.0.2:80")
GROWN = ADDED + "    server slot3 10.0.0.3:80 weight 1\n    server slot4 127.0.0.1:1 disabled weight 1\n"


@dataclass
class FakeRuntime:
    """Records each plan; raises `error` when set."""

    error: str | None = None
    plans: list[RuntimePlan] = field(default_factory=list)

    def apply(self, plan: RuntimePlan) -> None:
        self.plans.append(plan)
        if self.error:
            raise ApplyError(self.error)


def setup(tmp_path: Path, api: FakeRuntime | None, script: Script | None = None,
          **kw: object) -> tuple[Applier, FakeRunner, Target]:
    runner = FakeRunner(script) if script else FakeRunner()
    target = make_target(tmp_path, content=OLD, **{"runtime": True, "kind": "haproxy", **kw})  # type: ignore[arg-type]
    return Applier(LocalFiles(), runner, runtimes=lambda t: api), runner, target


def test_a_slot_change_goes_through_the_runtime_api_and_is_still_written(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    applier, runner, target = setup(tmp_path, runtime)
    [result] = applier.apply([target], {"lb": ADDED})
    assert (result.ok, result.wrote, result.reloaded, result.method) == (True, True, False, "runtime")
    assert runtime.plans[0].commands == ("set server web/slot2 addr 10.0.0.2 port 80", "set server web/slot2 state ready")
    assert Path(target.dest).read_text() == ADDED, "a later reload or restart must come up in the same state"
    assert runner.ran("check") == 1 and runner.ran("reload") == 0


@pytest.mark.parametrize("runtime, kw, text, fallback", [
    (FakeRuntime(error="runtime state differs: web/slot2"), {}, ADDED, "runtime state differs"),
    (FakeRuntime(), {}, GROWN, ""),
    (FakeRuntime(), {"runtime": False}, ADDED, ""),
    (None, {}, ADDED, ""),
], ids=["read-back-mismatch", "slots-exhausted", "opted-out", "no-runtime-api"])
def test_otherwise_the_change_is_reloaded(
    tmp_path: Path, runtime: FakeRuntime | None, kw: dict[str, object], text: str, fallback: str
) -> None:
    applier, runner, target = setup(tmp_path, runtime, **kw)  # type: ignore[arg-type]
    [result] = applier.apply([target], {"lb": text})
    assert (result.ok, result.wrote, result.reloaded, result.method) == (True, True, True, "reload")
    assert result.fallback.startswith(fallback) and bool(result.fallback) == bool(fallback)
    assert runner.ran("reload") == 1 and Path(target.dest).read_text() == text
    if runtime is not None and text == GROWN:
        assert runtime.plans == [], "no runtime command when the structure changed"


def test_a_failed_check_sends_no_runtime_command(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    applier, _, target = setup(tmp_path, runtime, script=failing("check"))
    [result] = applier.apply([target], {"lb": ADDED})
    assert (result.ok, result.step, result.method) == (False, "check", "none")
    assert runtime.plans == [] and Path(target.dest).read_text() == OLD


def test_a_failed_fallback_reload_restores_the_lkg(tmp_path: Path) -> None:
    applier, runner, target = setup(tmp_path, FakeRuntime(error="refused"), script=failing("reload"))
    [result] = applier.apply([target], {"lb": ADDED})
    assert (result.ok, result.step, result.rolled_back, result.fallback) == (False, "reload", True, "refused")
    assert Path(target.dest).read_text() == OLD and runner.ran("reload") == 2


@pytest.mark.parametrize("text, runtime", [(ADDED, True), (GROWN, False), (OLD, False)],
                         ids=["slots-only", "slots-exhausted", "no-change"])
def test_the_dry_run_says_whether_the_runtime_api_would_do(tmp_path: Path, text: str, runtime: bool) -> None:
    api = FakeRuntime()
    applier, runner, target = setup(tmp_path, api)
    [preview] = applier.preview([target], {"lb": text})
    assert (preview.valid, preview.runtime) == (True, runtime)
    assert api.plans == [] and runner.ran("reload") == 0 and Path(target.dest).read_text() == OLD

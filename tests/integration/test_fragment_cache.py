"""The fragment cache against the real checkers (issue 13): through the bounded renderer, as
`lbgen watch` renders, a sequence of registry changes gives at every step the text an uncached
render gives, written where the live config lives (so HAProxy's live slots read it back), and
the real `nginx -t` / `haproxy -c` accept it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.adapters.kinds import kind_adapter
from lbgen.core.model import DEFAULT_SERVED_HEALTH
from lbgen.core.render import render
from lbgen.core.settings import Target
from tests.unit.fragment_cases import IP_ADDRESSES, catalog_of, catalogs, changes, shipped
from tests.unit.test_fragments import diff

pytestmark = pytest.mark.integration


def _checker(kind: str, config: Path, workdir: Path) -> list[str]:
    program = shutil.which(kind)
    if program is None:
        pytest.skip(f"{kind} is not installed")
    if kind == "nginx":
        return [program, "-t", "-c", str(config), "-p", str(workdir)]
    return [program, "-c", "-f", str(config)]


def _target(kind: str, workdir: Path) -> Target:
    variables = {"pid": f"{workdir}/{kind}.pid", "error_log": f"{workdir}/error.log", "access_log": "off",
                 "temp_dir": str(workdir), "stats_socket": f"{workdir}/admin.sock", "status_port": 18999,
                 "stats_port": 18998}
    return Target(name=kind, template=f"{kind}.j2", dest=str(workdir / f"{kind}.conf"), kind=kind, vars=variables)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cached_bounded_renders_match_and_the_real_checker_accepts_them(kind: str, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        target, source, renderer = _target(kind, workdir), shipped(kind), BoundedRenderer()
        make_live = kind_adapter(kind).live_context
        live = make_live() if make_live else None
        services = data.draw(catalogs(IP_ADDRESSES))
        for revision in range(1, 4):
            catalog = catalog_of(services, revision)
            expected = render(source, catalog, target, kind_context=live.context(target, catalog) if live else None)
            got = renderer.render(source, catalog, target, DEFAULT_SERVED_HEALTH)
            assert got == expected, diff(expected, got)
            Path(target.dest).write_text(got)  # applied: the next render reads its slots back
            if live:
                live.rendered(target, got)
            verdict = subprocess.run(_checker(kind, Path(target.dest), workdir), capture_output=True, text=True,
                                     timeout=60)
            assert verdict.returncode == 0, verdict.stderr[-2000:]
            services = data.draw(changes(services, IP_ADDRESSES))

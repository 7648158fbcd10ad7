"""A new LB kind without editing lbgen (issue 11): a core module and an adapter module, nothing else.

The kind here, `filewatch`, is a fake proxy that watches its own config file, as Traefik's file
provider does: no signal to send, no worker generation. It loads dest by itself when dest changes
and writes what it loaded (or refused) to a state file; its control's `request_reload` is a no-op
and `wait_live` polls that state. The fixture puts the two modules in a temp dir added to the
registries' `__path__`, and restores them after.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lbgen.adapters.kinds as adapter_kinds
import lbgen.core.kinds as core_kinds
from lbgen.adapters.files import LocalFiles
from lbgen.adapters.kinds import control_for, runtime_for
from lbgen.adapters.process import SubprocessRunner, SystemClock
from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.render import render
from lbgen.core.settings import Target, parse_settings
from lbgen.services.applier import Applier

CORE_MODULE = '''
"""A proxy that reloads by itself when its config file changes."""
import sys
from lbgen.core.kinds import LbKind

KIND = LbKind(name="filewatch", check=(sys.executable, "-c", "import sys; open(sys.argv[1]).read()", "{staged}"))
'''

ADAPTER_MODULE = '''
"""Its control: nothing to ask, wait until the proxy's state file says it loaded dest."""
import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path

from lbgen.adapters.kinds import KindAdapter
from lbgen.errors import ApplyError


class FileWatchControl:
    def __init__(self, target, clock):
        self._target, self._clock = target, clock
        self._state = Path(target.vars["state"])
        self.key = f"filewatch:{self._state}"

    def whole_config(self, staged):
        return nullcontext(staged)

    def observe(self):
        try:
            return json.loads(self._state.read_text())
        except (OSError, ValueError):
            return None

    def down_reason(self):
        return f"no state in {self._state}"

    def request_reload(self):
        """The proxy watches its own file: nothing to ask."""

    def wait_live(self, before, timeout):
        want = hashlib.sha256(Path(self._target.dest).read_bytes()).hexdigest()
        deadline = self._clock.now() + timeout
        while self._clock.now() < deadline:
            state = self.observe() or {}
            if state.get("loaded") == want:
                return state
            if state.get("refused") == want:
                raise ApplyError(f"{self._target.name}: the proxy refused the new config")
            self._clock.sleep(0.01)
        raise ApplyError(f"{self._target.name}: the proxy did not load the new config in {timeout:g}s")


ADAPTER = KindAdapter(control=FileWatchControl)
'''


class FakeProxy:
    """Polls `config`; loads each new text (refuses one holding `refuse me`) and says so in `state`."""

    def __init__(self, config: Path, state: Path) -> None:
        self.config, self.state = config, state
        self.served = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake filewatch proxy")

    def __enter__(self) -> FakeProxy:
        """Started, and running: it has loaded the config there is (waits up to 30 s)."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.state.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.state.exists(), "the fake proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        seen = None
        while not self._stop.wait(0.005):
            data = self.config.read_bytes() if self.config.exists() else b""
            if data != seen:
                seen = data
                digest = hashlib.sha256(data).hexdigest()
                if b"refuse me" in data:
                    self._say({"refused": digest})
                else:
                    self.served = data.decode()
                    self._say({"loaded": digest})

    def _say(self, state: dict[str, str]) -> None:
        """Replace the state file whole: the control never reads half of it."""
        part = self.state.with_suffix(".part")
        part.write_text(json.dumps(state))
        os.replace(part, self.state)


@pytest.fixture
def filewatch_kind(tmp_path: Path) -> Iterator[None]:
    core_dir, adapter_dir = tmp_path / "core_kinds", tmp_path / "adapter_kinds"
    for directory, text in ((core_dir, CORE_MODULE), (adapter_dir, ADAPTER_MODULE)):
        directory.mkdir()
        (directory / "filewatch.py").write_text(textwrap.dedent(text))
    saved = (list(core_kinds.__path__), list(adapter_kinds.__path__))
    core_kinds.__path__.append(str(core_dir))
    adapter_kinds.__path__.append(str(adapter_dir))
    try:
        yield
    finally:
        core_kinds.__path__[:], adapter_kinds.__path__[:] = saved
        for module in ("lbgen.core.kinds.filewatch", "lbgen.adapters.kinds.filewatch"):
            sys.modules.pop(module, None)
        core_kinds._load.cache_clear()
        adapter_kinds._load.cache_clear()


TEMPLATE = ("{% for s in services %}{% for e in s.endpoints %}{{ s.name }} {{ e.address }}:{{ e.port }}\n"
            "{% endfor %}{% endfor %}")


def catalog(revision: int, *ports: int) -> Catalog:
    endpoints = tuple(Endpoint(f"e{p}", "10.0.0.1", p) for p in ports)
    return Catalog(revision, (Service("web", {}, endpoints),))


def settings_target(tmp_path: Path) -> Target:
    settings = parse_settings({
        "registry": "http://127.0.0.1:2379",
        "targets": [{"name": "proxy", "template": "proxy.j2", "dest": "proxy.conf", "kind": "filewatch",
                     "vars": {"state": str(tmp_path / "state.json")}}],
    }, str(tmp_path))
    return settings.targets[0]


def test_a_kind_added_beside_lbgen_is_configured_rendered_and_applied(filewatch_kind: None, tmp_path: Path) -> None:
    assert "filewatch" in core_kinds.kind_names()
    target = settings_target(tmp_path)
    assert (target.kind, target.check, target.runtime) == ("filewatch", (), False)
    clock = SystemClock()
    applier = Applier(LocalFiles(), SubprocessRunner(), controls=lambda t: control_for(t, clock),
                      runtimes=lambda t: runtime_for(t, clock))
    first, second = (render(TEMPLATE, catalog(n, *ports), target) for n, ports in ((1, (80,)), (2, (80, 81))))
    Path(target.dest).write_text(first)
    with FakeProxy(Path(target.dest), tmp_path / "state.json") as proxy:
        assert applier.lane_key(target) == f"filewatch:{tmp_path / 'state.json'}"
        [result] = applier.apply([target], {"proxy": second})
        assert (result.ok, result.reloaded, result.method) == (True, True, "reload"), result.error
        assert proxy.served == second == "web 10.0.0.1:80\nweb 10.0.0.1:81\n"


def test_a_config_the_watching_proxy_refuses_is_rolled_back(filewatch_kind: None, tmp_path: Path) -> None:
    target = settings_target(tmp_path)
    clock = SystemClock()
    applier = Applier(LocalFiles(), SubprocessRunner(), controls=lambda t: control_for(t, clock))
    Path(target.dest).write_text("good\n")
    with FakeProxy(Path(target.dest), tmp_path / "state.json") as proxy:
        [result] = applier.apply([target], {"proxy": "refuse me\n"})
        assert (result.ok, result.rolled_back, result.step) == (False, True, "reload")
        assert "refused the new config" in (result.error or "")
        assert Path(target.dest).read_text() == proxy.served == "good\n"


def test_the_kind_is_gone_once_the_fixture_has_restored_the_registries() -> None:
    assert "filewatch" not in core_kinds.kind_names()

"""`lbgen render` as an operator runs it: the dry-run preview and the one-shot apply, with the real
templates and the real `nginx -t` / `haproxy -c`, against etcd and against a YAML snapshot.

No LB runs here: `lbgen render` then writes the validated configs without reloading (the LB loads
them when it starts); reloads are the watcher stories' business (test_watcher_e2e.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.cli import main
from tests.support.etcd import EtcdServer, require_binary
from tests.support.util import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def settings_for(workdir: Path, registry: str, prefix: str, **nginx: object) -> Path:
    """lbgen.yaml for an nginx and a HAProxy target rendered into `workdir` (`nginx` overrides keys)."""
    for program in ("nginx", "haproxy"):
        require_binary(program, program)
    d = str(workdir / "run")  # nginx -t creates its temp dirs and error log here
    targets: list[dict[str, object]] = [
        {"name": "nginx", "template": str(ROOT / "templates/nginx.conf.j2"), "dest": "out/nginx.conf",
         "check": ["nginx", "-t", "-q", "-c", "{staged}"], "timeout": "10s",
         "vars": {"pid": f"{d}/nginx.pid", "error_log": f"{d}/error.log", "access_log": "off", "temp_dir": d}},
        {"name": "haproxy", "template": str(ROOT / "templates/haproxy.cfg.j2"), "dest": "out/haproxy.cfg",
         "check": ["haproxy", "-c", "-q", "-f", "{staged}"], "timeout": "10s",
         "vars": {"pid": f"{d}/haproxy.pid", "stats_socket": f"{d}/stats.sock", "master_socket": f"{d}/master.sock"}},
    ]
    targets[0].update(nginx)
    (workdir / "run").mkdir(exist_ok=True)
    (workdir / "out").mkdir(exist_ok=True)
    path = workdir / "lbgen.yaml"
    path.write_text(yaml.safe_dump({"registry": registry, "prefix": prefix, "targets": targets}, sort_keys=False))
    return path


def lbgen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


ENDPOINT = {"address": "127.0.0.1", "node": "host-a", "health": "healthy"}


@pytest.fixture
def etcd(etcd_server: EtcdServer, etcd_prefix: str) -> Iterator[EtcdStore]:
    """A client on the shared etcd, with service `web` (one endpoint on port 18081) under the prefix."""
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd_server.client_port),)))
    store.put(f"{etcd_prefix}/services/web/spec", json.dumps({"listen": free_port(), "mode": "http"}).encode())
    store.put(f"{etcd_prefix}/services/web/endpoints/host-a.web.1", json.dumps({**ENDPOINT, "port": 18081}).encode())
    try:
        yield store
    finally:
        store.close()


def files_in(workdir: Path) -> set[str]:
    return {p.name for p in (workdir / "out").iterdir()}


def test_dry_run_previews_then_render_applies_then_dry_run_shows_only_the_change(
    tmp_path: Path, etcd: EtcdStore, etcd_server: EtcdServer, etcd_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, etcd_server.url, etcd_prefix)
    before = files_in(tmp_path)

    code, out, err = lbgen(capsys, "-c", str(settings), "--dry-run")
    assert code == 0, err
    assert "=== nginx\n--- /dev/null" in out and "=== haproxy\n--- /dev/null" in out
    assert "+        server 127.0.0.1:18081 weight=1;" in out
    assert "--- nginx: check passed" in out and "--- haproxy: check passed" in out
    assert files_in(tmp_path) == before, "a dry run writes nothing (no dest, no staged file left)"

    code, out, err = lbgen(capsys, "-c", str(settings))
    assert code == 0, err
    assert "nginx: wrote revision" in out and "haproxy: wrote revision" in out
    assert "not live: nginx is not running" in out, "no LB runs here: nothing may claim it applied"
    live = (tmp_path / "out/nginx.conf").read_text()
    assert "server 127.0.0.1:18081 weight=1;" in live

    assert lbgen(capsys, "-c", str(settings), "--dry-run")[1].count("no change") == 2

    etcd.put(f"{etcd_prefix}/services/web/endpoints/host-a.web.1", json.dumps({**ENDPOINT, "port": 18082}).encode())
    code, out, _ = lbgen(capsys, "-c", str(settings), "--dry-run", "--target", "nginx")
    assert code == 0
    assert "-        server 127.0.0.1:18081 weight=1;\n+        server 127.0.0.1:18082 weight=1;" in out
    assert "haproxy" not in out, "--target limits the preview"
    assert (tmp_path / "out/nginx.conf").read_text() == live


def test_dry_run_against_a_yaml_snapshot(
    tmp_path: Path, etcd: EtcdStore, etcd_server: EtcdServer, etcd_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, etcd_server.url, etcd_prefix)
    assert lbgen(capsys, "-c", str(settings))[0] == 0
    live = (tmp_path / "out/nginx.conf").read_text(), (tmp_path / "out/haproxy.cfg").read_text()
    snapshot = tmp_path / "registry.yaml"
    spec = json.loads(etcd.get(f"{etcd_prefix}/services/web/spec").value)  # type: ignore[union-attr]
    snapshot.write_text(yaml.safe_dump({"services": {"web": {
        "spec": spec, "endpoints": {"host-b.web.1": {**ENDPOINT, "node": "host-b", "port": 18090}}}}}))

    code, out, _ = lbgen(capsys, "-c", str(settings), "--dry-run", "--registry", f"file:{snapshot}", "--prefix", "/lbgen")
    assert code == 0, out
    assert "-        server 127.0.0.1:18081 weight=1;\n+        server 127.0.0.1:18090 weight=1;" in out
    assert "--- nginx: check passed" in out and "--- haproxy: check passed" in out
    assert ((tmp_path / "out/nginx.conf").read_text(), (tmp_path / "out/haproxy.cfg").read_text()) == live


def test_a_config_the_checker_refuses_fails_the_dry_run_and_the_render(
    tmp_path: Path, etcd: EtcdStore, etcd_server: EtcdServer, etcd_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "bad.conf.j2"
    template.write_text((ROOT / "templates/nginx.conf.j2").read_text().replace(
        "server_tokens off;", "server_tokens off;\n    no_such_directive on;"))
    settings = settings_for(tmp_path, etcd_server.url, etcd_prefix, template=str(template))

    candidate = f"{tmp_path / 'out/nginx.conf'} (candidate)"
    code, out, err = lbgen(capsys, "-c", str(settings), "--dry-run")
    assert code == 5, "README: a config the checker refuses exits 5 (1 is a template error)"
    assert "--- nginx: check FAILED" in out and 'unknown directive "no_such_directive"' in out
    assert f"in {candidate}:" in out and ".lbgen" not in out, "the staged file is named by its dest"
    assert "--- haproxy: check passed" in out
    assert err.strip().splitlines()[-1].startswith("Error: ")

    code, _, err = lbgen(capsys, "-c", str(settings))
    assert code == 5
    line = next(line for line in err.splitlines() if line.startswith("nginx: check failed (live config untouched)"))
    assert '[emerg]' in line and 'unknown directive "no_such_directive"' in line, "the checker's reason, not 'test failed'"
    assert f"in {candidate}:" in line and ".lbgen" not in line
    assert not (tmp_path / "out/nginx.conf").exists() and (tmp_path / "out/haproxy.cfg").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"reload": "nginx -s reload"}, "targets[0].reload: expected a list of strings"),
    ({"check": ["nginx", "-t"]}, "targets[0].check: must name the candidate file with {staged}"),
    ({"relaod": ["true"]}, "targets[0].relaod: unknown"),
], ids=["shell-line", "check-without-staged", "typo"])
def test_bad_settings_name_the_file_and_field_and_exit_2(
    tmp_path: Path, change: dict[str, object], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, "file:registry.yaml", "/lbgen", **change)
    code, out, err = lbgen(capsys, "-c", str(settings), "--dry-run")
    assert code == 2 and out == ""
    assert err.startswith(f"Error: {settings}: {message}"), err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_template_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "registry.yaml").write_text("services: {}\n")
    missing = tmp_path / "nope.conf.j2"
    settings = settings_for(tmp_path, "file:registry.yaml", "/lbgen", template=str(missing))
    code, out, err = lbgen(capsys, "-c", str(settings))
    assert code == 1
    assert f"nginx: render failed: template {missing}: No such file or directory\n" in err
    assert err.endswith("Error: 1 target(s) failed to render: nginx\n")
    assert "haproxy: wrote revision" in out, "the other target is still rendered"
    assert not (tmp_path / "out/nginx.conf").exists()

    code = main(["watch", "-c", str(settings)])  # for the daemon it is a start-up error
    assert code == 2
    assert capsys.readouterr().err == f"Error: template {missing}: No such file or directory\n"


def test_an_unknown_target_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tmp_path, "file:registry.yaml", "/lbgen")
    code, out, err = lbgen(capsys, "-c", str(settings), "--target", "nope")
    assert code == 2 and out == ""
    assert err == "Error: --target nope: no such target (settings have: nginx, haproxy)\n"


def test_a_wrong_prefix_is_refused_by_the_drop_guard_unless_forced(
    tmp_path: Path, etcd: EtcdStore, etcd_server: EtcdServer, etcd_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10.6: `--prefix /typo` wrote an nginx config with no upstreams."""
    settings = settings_for(tmp_path, etcd_server.url, etcd_prefix)
    assert lbgen(capsys, "-c", str(settings))[0] == 0
    live = (tmp_path / "out/nginx.conf").read_text()
    assert (tmp_path / "out/.nginx.conf.applied.json").exists(), "render keeps what it applied beside dest"

    code, out, err = lbgen(capsys, "-c", str(settings), "--prefix", f"{etcd_prefix}-typo")
    assert code == 7, err
    assert "nginx: refused by the drop guard, " in err and "service web would be left with no served endpoints" in err
    assert err.strip().splitlines()[-1] == ("Error: 2 target(s) refused by the drop guard: nginx, haproxy "
                                            "(--force applies them)")
    assert (tmp_path / "out/nginx.conf").read_text() == live

    (tmp_path / "out/.nginx.conf.applied.json").unlink()  # no state: the live file alone guards
    code, _, err = lbgen(capsys, "-c", str(settings), "--prefix", f"{etcd_prefix}-typo", "--target", "nginx")
    assert code == 7 and "no served endpoint in the registry" in err
    assert lbgen(capsys, "-c", str(settings), "--prefix", f"{etcd_prefix}-typo", "--dry-run")[0] == 7

    code, out, err = lbgen(capsys, "-c", str(settings), "--prefix", f"{etcd_prefix}-typo", "--force")
    assert code == 0 and "drop guard overridden by --force" in err
    assert "server 127.0.0.1:18081" not in (tmp_path / "out/nginx.conf").read_text()

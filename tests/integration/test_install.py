"""`make install` / `make uninstall` and `pipx install .` as an operator runs them (docs/install.md),
into a root under a temp directory: the real /opt, /usr/local and /etc are never touched.

One install serves the module (it builds a virtualenv from PyPI or pip's cache, ~15 s); the tests
that re-install and uninstall it run last, in one xdist group with the others.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lbgen.core.kinds.nginx import control_socket
from tests.support.etcd import EtcdServer, require_binary

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("install")]

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("lbgen-agent.service", "lbgen-watch-nginx.service", "lbgen-watch-haproxy.service", "lbgen-dashboard.service")


class Root:
    """The paths of one install under `base`, as `make install` is told them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.prefix = base / "usr/local"
        self.home = base / "opt/lbgen"
        self.etc = base / "etc/lbgen"
        self.units = self.prefix / "lib/systemd/system"
        self.bin = self.prefix / "bin/lbgen"

    def run_make(self, action: str) -> subprocess.CompletedProcess[str]:
        """`make install|uninstall` with this root's paths."""
        args = [f"PREFIX={self.prefix}", f"LBGEN_HOME={self.home}", f"SYSCONFDIR={self.base / 'etc'}",
                "LBGEN_USER="]  # no system user: that would touch the real /etc/passwd
        # Under `make test` the outer make's variables would reach this make through MAKEFLAGS.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        return subprocess.run(["make", "-s", "-C", str(ROOT), action, *args],
                              env=env, capture_output=True, text=True, timeout=600)

    def make(self, action: str) -> subprocess.CompletedProcess[str]:
        """`run_make`, failing the test on a non-zero exit."""
        done = self.run_make(action)
        assert done.returncode == 0, f"make {action} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done


def shipped(root: Root, source: str) -> str:
    """What install writes for a shipped file: its text with the default paths made this root's."""
    text = (ROOT / source).read_text()
    for default, local in (("/usr/local/bin/lbgen", str(root.bin)),
                           ("/usr/local/share/doc/lbgen", str(root.prefix / "share/doc/lbgen")),
                           ("/etc/lbgen", str(root.etc)), ("/opt/lbgen", str(root.home))):
        text = text.replace(default, local)
    return text


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Root:
    require_binary("make", "make")
    installed = Root(tmp_path_factory.mktemp("root"))
    installed.make("install")
    return installed


def test_installed_lbgen_runs_from_its_virtualenv(root: Root) -> None:
    assert os.readlink(root.bin) == str(root.home / "bin/lbgen")
    done = subprocess.run([str(root.bin), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "watch" in done.stdout and "agent" in done.stdout
    version = subprocess.run([str(root.bin), "--version"], capture_output=True, text=True, timeout=60)
    assert re.search(r"\d+\.\d+", version.stdout + version.stderr)


def test_installed_lbgen_writes_and_reads_a_real_etcd(root: Root, etcd_server: EtcdServer, etcd_prefix: str) -> None:
    """The virtualenv's etcd client (gRPC, protobuf) works, not only the argument parser."""
    env = {**os.environ, "LBGEN_REGISTRY": etcd_server.url, "LBGEN_PREFIX": etcd_prefix}
    put = subprocess.run([str(root.bin), "registry", "put", "services/web/spec", '{"listen": 8080}'],
                         env=env, capture_output=True, text=True, timeout=60)
    assert put.returncode == 0, put.stderr
    ls = subprocess.run([str(root.bin), "registry", "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0 and "web  listen=8080" in ls.stdout, ls.stdout + ls.stderr


def test_every_file_of_the_package_is_installed(root: Root) -> None:
    """Data files beside the modules (templates, static pages) need package_data in setup.cfg."""
    (installed,) = root.home.glob("lib/python3*/site-packages/lbgen")

    def files(top: Path) -> set[str]:
        return {str(p.relative_to(top)) for p in top.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

    assert files(ROOT / "lbgen") - files(installed) == set()


def test_installed_units_pass_systemd_analyze_verify(root: Root) -> None:
    require_binary("systemd-analyze", "systemd-analyze (Debian package systemd)")
    paths = [str(root.units / name) for name in UNITS]
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=120)
    # verify exits 0 on an unknown key or a bad value, with a warning: any output is a finding.
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def test_the_nginx_drop_in_makes_the_control_socket_directory_private(root: Root) -> None:
    """nginx binds the Lua balancer's control socket in a directory that must exist first (after a
    boot /run is empty) and that only root may enter; a stale socket would stop nginx's start."""
    text = (root.units / "nginx.service.d/lbgen-runtime.conf").read_text()
    assert "ExecStartPre=/bin/mkdir -p -m 0700 /run/lbgen-nginx" in text
    assert "ExecStartPre=/bin/rm -f /run/lbgen-nginx/control.sock" in text
    assert control_socket({}) == "/run/lbgen-nginx/control.sock"  # the unit and the default agree


@pytest.mark.parametrize("name", UNITS)
def test_every_path_a_unit_names_was_installed(root: Root, name: str) -> None:
    text = (root.units / name).read_text()
    docs = re.search(r"^Documentation=(.+)$", text, re.M)
    assert docs is not None
    for url in docs.group(1).split():
        assert url.startswith("file:") and Path(url[5:]).is_file(), url
    exec_start = re.search(r"^ExecStart=(\S+)", text, re.M)
    assert exec_start is not None and exec_start.group(1) == str(root.bin)
    for setting in re.findall(r"^(?:EnvironmentFile=-?|ExecStart=\S+ watch -c )(\S+)", text, re.M):
        assert Path(setting).is_file(), f"{name} names {setting}, which install did not write"


def test_kit_settings_templates_and_monitoring_kit_are_installed(root: Root) -> None:
    for source, dest in (("nginx/lbgen.yaml", "nginx.yaml"), ("haproxy/lbgen.yaml", "haproxy.yaml"),
                         ("templates/nginx.conf.j2", "templates/nginx.conf.j2"),
                         ("agent/lbgen-agent.env", "lbgen-agent.env")):
        assert (root.etc / dest).read_text() == shipped(root, source), dest
    assert (root.etc / "lbgen-agent.env").stat().st_mode & 0o007 == 0  # may hold the etcd password
    kit = root.prefix / "share/doc/lbgen/monitoring"
    assert (kit / "prometheus/lbgen.rules.yml").is_file() and (kit / "grafana/lbgen-fleet.json").is_file()


def test_reinstall_keeps_edited_settings_and_updates_the_rest(root: Root) -> None:
    edited = root.etc / "nginx.yaml"
    edited.write_text(edited.read_text() + "# the operator's line\n")
    # haproxy.yaml as an older lbgen shipped it, untouched since: the manifest records that text.
    older = root.etc / "haproxy.yaml"
    older.write_text("# haproxy.yaml of an older lbgen\n")
    manifest = root.home / "lbgen-etc.sha256"
    lines = [line for line in manifest.read_text().splitlines() if not line.endswith(" haproxy.yaml")]
    digest = hashlib.sha256(older.read_bytes()).hexdigest()
    manifest.write_text("\n".join([*lines, f"{digest} haproxy.yaml"]) + "\n")

    done = root.make("install")

    assert edited.read_text().endswith("# the operator's line\n")
    assert (root.etc / "nginx.yaml.lbgen-new").read_text() == shipped(root, "nginx/lbgen.yaml")
    assert f"kept {edited}" in done.stdout
    assert older.read_text() == shipped(root, "haproxy/lbgen.yaml")
    assert not (root.etc / "haproxy.yaml.lbgen-new").exists()
    assert subprocess.run([str(root.bin), "--help"], capture_output=True, timeout=60).returncode == 0


def test_uninstall_removes_all_but_edited_settings_and_is_idempotent(root: Root) -> None:
    edited = {root.etc / "lbgen-watch-nginx.env": "LBGEN_WATCH_ARGS=--node lb-1\n",
              root.etc / "templates/nginx.conf.j2": "# the operator's template\n"}
    for path, text in edited.items():
        path.write_text(text)

    root.make("uninstall")
    root.make("uninstall")

    assert not root.home.exists() and not root.bin.is_symlink()
    assert not any((root.units / name).exists() for name in UNITS)
    assert not (root.units / "nginx.service.d").exists()
    assert not (root.prefix / "share/doc/lbgen").exists()
    left = {p for p in root.etc.rglob("*") if p.is_file()}
    assert left - {root.etc / "nginx.yaml"} == set(edited)  # nginx.yaml: edited by the re-install test
    assert all(path.read_text() == text for path, text in edited.items())


def test_install_refuses_to_replace_an_lbgen_it_did_not_install(tmp_path: Path) -> None:
    other = Root(tmp_path)
    other.bin.parent.mkdir(parents=True)
    other.bin.write_text("#!/bin/sh\necho someone else's lbgen\n")
    done = other.run_make("install")
    assert done.returncode != 0
    assert f"{other.bin} exists and is not lbgen's link" in done.stderr
    assert other.bin.read_text().startswith("#!/bin/sh")
    assert not other.home.exists() and not other.etc.exists()  # refused before anything was written


def test_pipx_install_from_a_checkout(tmp_path: Path) -> None:
    require_binary("pipx", "pipx (Debian package pipx)")
    checkout = tmp_path / "lbgen-src"  # a copy: pip leaves build/ and *.egg-info in the directory
    checkout.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "lbgen", checkout / "lbgen", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    done = subprocess.run(["pipx", "install", "."], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    help_text = subprocess.run([str(tmp_path / "bin/lbgen"), "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "watch" in help_text.stdout, help_text.stderr

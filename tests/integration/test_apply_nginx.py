"""The apply pipeline against a real nginx: check, swap, HUP, new workers, rollback."""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from lbgen.adapters.files import lkg_path
from lbgen.services.applier import Applier
from tests.support.lb import Backend, ConfFor, Lb, get, nginx_conf, nginx_proxy, real_controls, serves
from tests.support.util import wait_until

pytestmark = pytest.mark.integration

StartNginx = Callable[[ConfFor], Lb]


def proxy_to(backend: Backend) -> ConfFor:
    return lambda lb_dir, port: nginx_proxy(lb_dir, port, backend.port)


def workers(lb: Lb) -> frozenset[int]:
    control = real_controls(lb.target())
    generation = control.observe() if control else None
    assert generation is not None, "nginx is not running"
    return generation.workers


def test_a_good_change_starts_new_workers_that_serve_the_new_backend(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    old, new = backend("old"), backend("new")
    lb = nginx_lb(proxy_to(old))
    assert get(lb.port) == "old"
    before = workers(lb)
    [result] = applier.apply([lb.target()], {"nginx": nginx_proxy(lb.dir, lb.port, new.port)})
    assert (result.ok, result.wrote, result.reloaded) == (True, True, True), result.error
    assert workers(lb) - before, "no new workers"
    serves(lb.port, "new", timeout=1.0)  # verified: the old workers have been told to stop listening


def test_a_custom_reload_command_is_followed_by_the_built_in_wait_for_new_workers(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    old, new = backend("old"), backend("new")
    lb = nginx_lb(proxy_to(old))
    before = workers(lb)
    target = lb.target(reload=("nginx", "-p", str(lb.dir), "-c", str(lb.conf), "-s", "reload"))
    [result] = applier.apply([target], {"nginx": nginx_proxy(lb.dir, lb.port, new.port)})
    assert result.reloaded, result.error
    assert workers(lb) - before, f"apply() returned before nginx had started new workers: {before} → {workers(lb)}"
    serves(lb.port, "new", timeout=1.0)


def test_a_config_failing_the_check_leaves_dest_and_nginx_untouched(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    lb = nginx_lb(proxy_to(backend("old")))
    live, before = lb.conf.read_text(), workers(lb)
    broken = live.replace("proxy_pass", "proxy_passs")
    [result] = applier.apply([lb.target()], {"nginx": broken})
    assert (result.ok, result.step, result.wrote) == (False, "check", False)
    assert 'unknown directive "proxy_passs"' in result.output
    assert lb.conf.read_text() == live and workers(lb) == before and get(lb.port) == "old"


def test_a_reload_nginx_rejects_is_rolled_back_and_the_old_backend_keeps_serving(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    old = backend("old")
    lb = nginx_lb(proxy_to(old))
    live = lb.conf.read_text()
    with socket.socket() as taken:  # nginx -t does not bind, so only the reload can find this out
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        extra = f"\n  server {{ listen 127.0.0.1:{taken.getsockname()[1]}; return 200; }}"
        [result] = applier.apply([lb.target()], {"nginx": nginx_proxy(lb.dir, lb.port, old.port, extra)})
    assert (result.ok, result.wrote, result.rolled_back) == (False, True, True), result.error
    assert "rejected the new config" in (result.error or "")
    assert lb.conf.read_text() == live and lkg_path(lb.conf).read_text() == live
    assert "Address already in use" in lb.log()
    assert get(lb.port) == "old"


def test_a_hanging_reload_command_is_killed_at_its_timeout(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    lb = nginx_lb(proxy_to(backend("old")))
    live, marker = lb.conf.read_text(), f"lbgen-hang-{uuid.uuid4().hex}"
    # The command hangs in a child it forked: the whole process group must die.
    child = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1]])"
    hang = [sys.executable, "-c", child, marker]
    target = lb.target(reload=tuple(hang), timeout=0.5)
    started = time.monotonic()
    [result] = applier.apply([target], {"nginx": live.replace("worker_connections 64", "worker_connections 65")})
    took = time.monotonic() - started
    assert "timed out" in (result.error or "") and "rollback failed" in (result.error or "")
    assert took < 30, f"two 0.5 s timeouts took {took:.1f} s: the 60 s hang was waited for"
    assert lb.conf.read_text() == live, "the LKG is back on disk even though its reload hung too"
    # SIGKILL reaches the whole group at once, but a loaded machine takes a moment to reap them
    wait_until(lambda: not _processes_with(marker), 10, "the hanging command's children to die")
    assert get(lb.port) == "old"


def test_a_conf_d_fragment_is_validated_inside_a_shadow_of_the_main_config(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    old, new = backend("old"), backend("new")
    upstreams = f"upstream old {{ server 127.0.0.1:{old.port}; }}\nupstream new {{ server 127.0.0.1:{new.port}; }}\n"

    def main(lb_dir: Path, port: int) -> str:
        (lb_dir / "conf.d").mkdir()
        (lb_dir / "conf.d" / "0-upstreams.conf").write_text(upstreams)
        (lb_dir / "conf.d" / "site.conf").write_text(_site(port, "old"))
        return nginx_conf(lb_dir, port, "  include conf.d/*.conf;")

    lb = nginx_lb(main)
    site = lb.dir / "conf.d" / "site.conf"
    target = lb.target(name="site", dest=str(site), vars={"pid": str(lb.pid_file), "main_config": str(lb.conf)})
    # Valid only together with 0-upstreams.conf (a lone fragment cannot even be checked).
    [good] = applier.apply([target], {"site": _site(lb.port, "new")})
    assert good.ok and good.reloaded, good.error
    assert get(lb.port) == "new"
    # Valid alone, invalid in the whole config: upstream "old" is already defined in another fragment.
    duplicate = _site(lb.port, "new") + f"upstream old {{ server 127.0.0.1:{old.port}; }}\n"
    [bad] = applier.apply([target], {"site": duplicate})
    assert (bad.step, bad.wrote) == ("check", False) and 'duplicate upstream "old"' in bad.output
    assert site.read_text() == _site(lb.port, "new") and get(lb.port) == "new"
    assert sorted(os.listdir(lb.dir / "conf.d")) == [".site.conf.lkg", "0-upstreams.conf", "site.conf"]
    assert not [name for name in os.listdir(lb.dir) if name.endswith(".shadow")]


def test_the_main_config_and_a_fragment_of_one_nginx_changed_together_reload_it_once(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    old, new = backend("old"), backend("new")

    def main(lb_dir: Path, port: int) -> str:
        (lb_dir / "conf.d").mkdir()
        (lb_dir / "conf.d" / "site.conf").write_text(_site(port, f"127.0.0.1:{old.port}"))
        return nginx_conf(lb_dir, port, "  include conf.d/*.conf;")

    lb = nginx_lb(main)
    site = lb.dir / "conf.d" / "site.conf"
    facts = {"pid": str(lb.pid_file), "main_config": str(lb.conf)}
    targets = [lb.target(), lb.target(name="site", dest=str(site), vars=facts)]
    rendered = {"nginx": lb.conf.read_text() + "# v2\n", "site": _site(lb.port, f"127.0.0.1:{new.port}")}
    results = applier.apply(targets, rendered)
    assert [(r.wrote, r.reloaded) for r in results] == [(True, True), (True, True)], results
    assert lb.log().count("(SIGHUP) received") == 1
    serves(lb.port, "new", timeout=1.0)


def test_dry_run_gives_nginx_t_verdicts_and_touches_nothing(
    nginx_lb: StartNginx, backend: Callable[[str], Backend], applier: Applier
) -> None:
    lb = nginx_lb(proxy_to(backend("old")))
    live, before = lb.conf.read_text(), workers(lb)
    target = lb.target()
    good = applier.preview([target], {"nginx": live.replace("worker_connections 64", "worker_connections 65")})
    bad = applier.preview([target], {"nginx": live.replace("events {", "events {{")})
    same = applier.preview([target], {"nginx": live})
    assert [(p.valid, bool(p.diff)) for p in good + bad + same] == [(True, True), (False, True), (True, False)]
    assert "emerg" in bad[0].check_output
    assert lb.conf.read_text() == live and workers(lb) == before
    assert sorted(os.listdir(lb.dir)) == sorted(n for n in os.listdir(lb.dir) if not n.startswith("."))


def _site(port: int, upstream: str) -> str:
    return f"server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://{upstream}; }} }}\n"


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found

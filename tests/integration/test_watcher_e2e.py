"""`lbgen watch` end to end: real etcd, real nginx and HAProxy, the default templates, curl through both.

Each story starts its own LB node: settings in a temp dir (copies of templates/*.j2, every pid, log
and socket path under the temp dir), `python -m lbgen watch -c lbgen.yaml` as a subprocess, and, once
the watcher has written the first configs, nginx on 127.0.0.1 and HAProxy on 127.0.0.2, both on
the service's listen port. Backends are tiny HTTP servers answering their own name. Stories that
stop, compact or wipe etcd get a private etcd; the others share one etcd under unique prefixes.
Reloads are counted from the watcher's log (the applier logs `<targets>: reloaded` once per reload).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import yaml

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from tests.support.etcd import ETCD_BINARY, EtcdFactory, EtcdServer, require_binary
from tests.support.lb import Backend
from tests.support.lb import _stop as stop  # SIGTERM, SIGKILL after a deadline
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NGINX_ADDR, HAPROXY_ADDR = "127.0.0.1", "127.0.0.2"


def get(address: str, port: int, timeout: float = 2.0) -> str:
    """The body answered on http://address:port/ ("" for any error or non-2xx)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=timeout) as response:
            return str(response.read().decode())
    except OSError:
        return ""


class Node:
    """One LB node: its settings, its `lbgen watch`, nginx and HAProxy, and a client on its etcd."""

    def __init__(self, workdir: Path, etcd: EtcdServer, wait: str, metrics: str = "off") -> None:
        self.dir = workdir
        self.metrics = metrics
        self.etcd = etcd
        self.prefix = f"/t/{uuid.uuid4().hex[:12]}/lbgen"
        self.port = free_port()
        self.store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd.client_port),)))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.lbs: dict[str, subprocess.Popen[bytes]] = {}  # "nginx", "haproxy": their masters
        self.watcher: subprocess.Popen[bytes] | None = None
        self.nginx_conf, self.haproxy_conf = workdir / "nginx.conf", workdir / "haproxy.cfg"
        self.log_path = workdir / "watch.log"
        for name in ("nginx.conf.j2", "haproxy.cfg.j2"):
            shutil.copy(ROOT / "templates" / name, workdir / name)
        self.settings = workdir / "lbgen.yaml"
        self.settings.write_text(yaml.safe_dump(self._settings(wait), sort_keys=False))

    def _settings(self, wait: str) -> dict[str, object]:
        d = str(self.dir)
        nginx_vars = {"listen_address": NGINX_ADDR, "pid": f"{d}/nginx.pid", "error_log": f"{d}/nginx-error.log",
                      "access_log": "off", "temp_dir": d, "worker_processes": 1, "worker_shutdown_timeout": "2s"}
        haproxy_vars = {"listen_address": HAPROXY_ADDR, "pid": f"{d}/haproxy.pid", "stats_socket": f"{d}/stats.sock",
                        "master_socket": f"{d}/master.sock", "hard_stop_after": "2s", "timeout_connect": "1s"}
        return {
            "registry": self.etcd.url, "prefix": self.prefix, "wait": wait,
            "guard": {"max_drop": "50%", "to_zero": True, "hold_max": "2m"},
            "targets": [
                {"name": "nginx", "template": "nginx.conf.j2", "dest": "nginx.conf", "timeout": "10s",
                 "check": ["nginx", "-t", "-q", "-c", "{staged}"], "vars": nginx_vars},
                {"name": "haproxy", "template": "haproxy.cfg.j2", "dest": "haproxy.cfg", "timeout": "10s",
                 "check": ["haproxy", "-c", "-q", "-f", "{staged}"], "vars": haproxy_vars},
            ],
        }

    # --- the registry, as agents and operators write it ----------------------------------------

    def key(self, service: str, eid: str | None = None) -> str:
        base = f"{self.prefix}/services/{service}"
        return f"{base}/spec" if eid is None else f"{base}/endpoints/{eid}"

    def put_spec(self, service: str = "web", **spec: object) -> int:
        return self.store.put(self.key(service), json.dumps({"listen": self.port, "mode": "http", **spec}).encode())

    def put_endpoint(self, eid: str, port: int, service: str = "web", **fields: object) -> int:
        value = {"address": "127.0.0.1", "port": port, "node": "host-a", "health": "healthy", **fields}
        return self.store.put(self.key(service, eid), json.dumps(value).encode())

    def delete(self, service: str, eid: str | None = None) -> None:
        assert self.store.delete(self.key(service, eid))

    # --- processes ----------------------------------------------------------------------------------

    def start(self) -> Node:
        """Start `lbgen watch`; once it wrote both configs, start nginx and HAProxy on them."""
        self.start_watch()
        wait_until(lambda: self.nginx_conf.exists() and self.haproxy_conf.exists(), 20, "the first configs")
        self._spawn("nginx", ["nginx", "-c", str(self.nginx_conf), "-g", "daemon off;"])
        self._spawn("haproxy", ["haproxy", "-W", "-S", f"{self.dir}/master.sock,mode,600", "-f", str(self.haproxy_conf)])
        return self

    def start_watch(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "lbgen", "watch", "-c", str(self.settings), "--metrics-addr", self.metrics]
        with self.log_path.open("ab") as log:
            self.watcher = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=self.dir)
        self.processes.append(self.watcher)
        self.wait_log("registry: snapshot at revision")

    def _spawn(self, name: str, argv: list[str]) -> None:
        """An LB in a session of its own, as a daemonized one runs: a master killed with -9 leaves
        its workers in that session (and process group), where `close` still finds them."""
        with (self.dir / f"{name}.out").open("wb") as out:
            self.lbs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        self.processes.append(self.lbs[name])

    def close(self) -> None:
        for process in self.processes:  # the watcher first: never stop an LB under a reload
            stop(process)
        for process in self.lbs.values():  # orphaned workers of a master killed by a test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self.store.close()

    # --- observations -------------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def mark(self) -> int:
        """A position in the watcher's log: `count(..., since=mark)` only sees what came after."""
        return len(self.log())

    def count(self, text: str, since: int = 0) -> int:
        return self.log()[since:].count(text)

    def wait_log(self, text: str, since: int = 0, timeout: float = 20.0) -> None:
        def seen() -> bool:
            assert self.watcher is None or self.watcher.poll() is None, f"lbgen watch exited:\n{self.log()[-3000:]}"
            return text in self.log()[since:]
        wait_until(seen, timeout, f"{text!r} in the watcher's log")

    def wait_applied(self, port: int, served: bool = True) -> None:
        """Both configs serve the endpoint on `port` (or neither does). HAProxy keeps a registered
        but unserved endpoint in a disabled slot, hence "address weight", which only served lines have."""
        line = f"127.0.0.1:{port} weight"

        def applied() -> bool:
            return all((line in conf.read_text()) == served for conf in (self.nginx_conf, self.haproxy_conf))
        wait_until(applied, 10, f"{line!r} {'in' if served else 'out of'} both configs")

    def serves(self, body: str, timeout: float = 10.0) -> None:
        """Both nginx and HAProxy answer `body` on the service port."""
        for address in (NGINX_ADDR, HAPROXY_ADDR):
            wait_until(partial(self._answers, address, body), timeout, f"{address}:{self.port} to answer {body!r}",
                       interval=0.02)

    def _answers(self, address: str, body: str) -> bool:
        return get(address, self.port) == body

    def answers(self) -> tuple[str, str]:
        return get(NGINX_ADDR, self.port), get(HAPROXY_ADDR, self.port)


NodeFactory = Callable[..., Node]


def serve_web(node: Node, backend: Callable[[str], Backend]) -> Node:
    """Register service `web` with backend `a`, start the node, and wait until both LBs serve it."""
    node.put_spec()
    node.put_endpoint("host-a.web.1", backend("a").port)
    node.start()
    node.serves("a")
    return node


def replace_file(path: Path, text: str) -> None:
    """Write as editors and config management do: a new file renamed over the old one."""
    temp = path.with_name(f".{path.name}.new")
    temp.write_text(text)
    temp.replace(path)


def holds(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert that `predicate` stays true for `seconds` (checked every 50 ms)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert predicate(), f"no longer {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A private etcd for the stories that only write to it (unique prefixes)."""
    require_binary(ETCD_BINARY, "etcd")
    for program in ("nginx", "haproxy"):
        require_binary(program, program)
    factory = EtcdFactory(tmp_path_factory.mktemp("etcd-e2e"))
    try:
        yield factory()
    finally:
        factory.close()


@pytest.fixture
def node(tmp_path: Path, shared_etcd: EtcdServer, backend: Callable[[str], Backend]) -> Iterator[NodeFactory]:
    """`node(etcd=None, wait="0")` → a started Node serving service `web` from backend `a`."""
    nodes: list[Node] = []

    def make(etcd: EtcdServer | None = None, wait: str = "0") -> Node:
        workdir = tmp_path / f"node{len(nodes)}"
        workdir.mkdir()
        made = Node(workdir, etcd or shared_etcd, wait)
        nodes.append(made)
        return serve_web(made, backend)

    yield make
    for made in nodes:
        made.close()


# --- stories --------------------------------------------------------------------------------------


def test_endpoint_changes_are_served_by_nginx_and_haproxy(node: NodeFactory, backend: Callable[[str], Backend]) -> None:
    n, b, c = node(wait="20ms:100ms"), backend("b"), backend("c")

    n.put_endpoint("host-a.web.2", b.port)
    n.delete("web", "host-a.web.1")
    n.serves("b")
    n.wait_applied(b.port)

    n.put_endpoint("host-a.web.2", c.port)  # changed in place: same id, another port
    n.serves("c")
    n.wait_applied(b.port, served=False)

    n.put_endpoint("host-b.web.1", b.port)
    n.wait_applied(b.port)
    n.put_endpoint("host-a.web.2", c.port, health="unhealthy")  # registered, no longer served
    n.wait_applied(c.port, served=False)
    n.serves("b")


def test_a_burst_of_1000_puts_reloads_once_or_twice_and_ends_in_the_final_state(
    node: NodeFactory, backend: Callable[[str], Backend]
) -> None:
    # min 500 ms: a loaded CI machine pauses mid-burst; max 10 s: the burst fits in one window
    n, final = node(wait="500ms:10s"), backend("final")
    mark = n.mark()
    dead_ports = [free_port() for _ in range(10)]  # intermediate states point at nothing

    def put(i: int) -> int:
        return n.put_endpoint("host-a.web.1", dead_ports[i % 10], weight=1 + i % 5)

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(999)))
    final_revision = n.put_endpoint("host-a.web.1", final.port)
    n.serves("final")
    for lb in ("nginx", "haproxy"):
        n.wait_log(f"{lb}: applied revision {final_revision}", since=mark)
    reloads = {lb: n.count(f"{lb}: reloaded", since=mark) for lb in ("nginx", "haproxy")}
    # Only an endpoint's port and weight change: HAProxy takes it through the Runtime API (issue 7).
    reloads["haproxy runtime"] = n.count("runtime command(s) applied and verified, no reload", since=mark)
    took = time.monotonic() - started
    assert 1 <= reloads["nginx"] <= 2 and reloads["haproxy"] == 0, f"{reloads} for a burst of {took:.1f} s"
    assert 1 <= reloads["haproxy runtime"] <= 2, f"{reloads} for a burst of {took:.1f} s"
    assert f"127.0.0.1:{final.port} weight=1;" in n.nginx_conf.read_text()


def test_with_quiescence_off_a_burst_is_drained_not_replayed(node: NodeFactory, backend: Callable[[str], Backend]) -> None:
    """`wait: 0` renders every change at once, but only the latest state: changes that queued up
    during a pass are folded into the next one instead of costing one reload each."""
    n, final = node(wait="0"), backend("final")
    mark = n.mark()
    dead_ports = [free_port() for _ in range(10)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: n.put_endpoint("host-a.web.1", dead_ports[i % 10]), range(999)))
    final_revision = n.put_endpoint("host-a.web.1", final.port)
    n.serves("final", timeout=20)  # one pass per queued change would take minutes
    n.wait_log(f"haproxy: applied revision {final_revision}", since=mark)
    assert n.count("nginx: reloaded", since=mark) < 50


def test_bad_values_are_skipped_and_the_rest_is_served(node: NodeFactory, backend: Callable[[str], Backend]) -> None:
    n, b = node(), backend("b")
    mark = n.mark()
    evil = n.key("web", "host-x.web.9")
    n.store.put(evil, b'{"address": "127.0.0.1; include /etc/passwd", "port": 80}')
    n.store.put(n.key("web", "host-x.web.8"), b"not json")
    zoned = n.key("web", "host-x.web.7")  # issue 10: a zone id carrying a whole `server` line
    n.store.put(zoned, json.dumps({"address": "::1%x\n    server evil 127.0.0.1:9 weight 256\n#",
                                   "port": 8000}).encode())
    n.delete("web", "host-a.web.1")
    n.put_endpoint("host-b.web.1", b.port)
    n.serves("b")
    n.wait_log(f"skipping {evil}", since=mark)
    n.wait_log(f"skipping {zoned}", since=mark)
    live = n.nginx_conf.read_text() + n.haproxy_conf.read_text()
    assert "passwd" not in live and "evil" not in live


def test_a_template_error_and_a_failing_check_leave_the_live_config_untouched(
    node: NodeFactory, backend: Callable[[str], Backend]
) -> None:
    n, b, c = node(), backend("b"), backend("c")
    template, original = n.dir / "nginx.conf.j2", (n.dir / "nginx.conf.j2").read_text()
    live = n.nginx_conf.read_text()

    mark = n.mark()
    replace_file(template, original + "{{ vars.no_such_var }}\n")  # StrictUndefined: a render error
    n.wait_log("template changed on disk", since=mark)
    n.put_endpoint("host-a.web.1", b.port)
    n.wait_log("nginx: revision", since=mark)
    n.wait_log("no_such_var", since=mark)
    wait_until(lambda: get(HAPROXY_ADDR, n.port) == "b", 10, "haproxy to apply the change on its own")
    assert n.nginx_conf.read_text() == live and get(NGINX_ADDR, n.port) == "a"

    mark = n.mark()
    replace_file(template, original.replace("server_tokens off;", "server_tokens off;\n    no_such_directive on;"))
    n.put_endpoint("host-a.web.1", c.port)
    n.wait_log("no_such_directive", since=mark)  # nginx -t's output is in the log
    wait_until(lambda: get(HAPROXY_ADDR, n.port) == "c", 10, "haproxy to apply the change on its own")
    assert n.nginx_conf.read_text() == live and get(NGINX_ADDR, n.port) == "a"
    # Retries keep checking (and quarantine-probing) staged candidates in nginx's lane meanwhile: a
    # candidate left behind is one that never goes away.
    wait_until(lambda: not list(n.dir.glob("*.lbgen")), 10, "no staged candidate left behind", interval=0.01)

    replace_file(template, original)  # fixed: the next pass applies the latest state
    n.serves("c")


def test_a_failing_reload_restores_the_last_good_config_and_nginx_keeps_serving(node: NodeFactory) -> None:
    n = node()
    live = n.nginx_conf.read_text()
    blocker = socket.socket()
    blocker.bind((NGINX_ADDR, 0))  # only on nginx's address: HAProxy on 127.0.0.2 can take the port
    blocker.listen()
    new_port = blocker.getsockname()[1]
    try:
        mark = n.mark()
        n.store.put(n.key("web"), json.dumps({"listen": new_port, "mode": "http"}).encode())
        n.wait_log("last-known-good restored and reloaded", since=mark)
        assert n.nginx_conf.read_text() == live
        assert get(NGINX_ADDR, n.port) == "a", "nginx serves its last good config"
        wait_until(lambda: get(HAPROXY_ADDR, new_port) == "a", 10, "haproxy on the new port")
    finally:
        blocker.close()
    wait_until(lambda: get(NGINX_ADDR, new_port) == "a", 15, "nginx on the new port once it is free (retried)")


def test_the_drop_guard_holds_a_delete_everything(node: NodeFactory, backend: Callable[[str], Backend]) -> None:
    n, b, c = node(), backend("b"), backend("c")
    n.put_endpoint("host-a.web.2", b.port)
    n.wait_applied(b.port)
    live = n.nginx_conf.read_text(), n.haproxy_conf.read_text()
    mark = n.mark()
    n.etcd.etcdctl("del", "--prefix", f"{n.prefix}/")  # one revision: every key of the catalog gone
    n.wait_log("drop guard: holding web at the last applied state", since=mark)
    assert (n.nginx_conf.read_text(), n.haproxy_conf.read_text()) == live
    assert n.answers()[0] in ("a", "b") and n.answers()[1] in ("a", "b")

    n.put_spec()
    n.put_endpoint("host-c.web.1", c.port)  # registrations back: changes flow again
    n.serves("c")


def test_etcd_stopped_keeps_serving_and_later_changes_apply_within_seconds(
    node: NodeFactory, etcd_factory: Callable[..., EtcdServer], backend: Callable[[str], Backend]
) -> None:
    etcd = etcd_factory()
    n, b = node(etcd=etcd), backend("b")
    live = n.nginx_conf.read_text(), n.haproxy_conf.read_text()
    mark = n.mark()
    etcd.stop()
    n.wait_log("registry unreachable, keeping the last applied config", since=mark)
    holds(lambda: n.answers() == ("a", "a"), 3.0, "both LBs serving during the outage")
    assert (n.nginx_conf.read_text(), n.haproxy_conf.read_text()) == live

    etcd.start()
    n.put_endpoint("host-a.web.1", b.port)
    n.serves("b", timeout=8)  # the watcher retries every <= 5 s (confd: 91 s after a 5-minute outage)


def test_compaction_while_the_watcher_is_away_forces_a_resync(
    node: NodeFactory, etcd_factory: Callable[..., EtcdServer], backend: Callable[[str], Backend]
) -> None:
    """A watcher that stops reading (SIGSTOP) falls behind; etcd compacts past it; it re-snapshots."""
    etcd = etcd_factory()
    n, b = node(etcd=etcd), backend("b")
    assert n.watcher is not None
    mark = n.mark()
    n.watcher.send_signal(signal.SIGSTOP)
    try:
        # Keys under the watched services/ prefix but outside the contract: the watch carries them,
        # the catalog ignores them.
        filler = b"x" * 20_000
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: n.store.put(f"{n.prefix}/services/filler/blob/{i % 50}", filler), range(1500)))
        revision = n.put_endpoint("host-a.web.1", b.port)
        n.store.compact(revision)
    finally:
        n.watcher.send_signal(signal.SIGCONT)
    n.serves("b")
    n.wait_log("registry: snapshot at revision", since=mark)
    assert "compacted" in n.log()[mark:].lower()


def test_etcd_restored_from_scratch_is_detected_and_re_snapshotted(
    node: NodeFactory, etcd_factory: Callable[..., EtcdServer], backend: Callable[[str], Backend]
) -> None:
    etcd = etcd_factory()
    n, b = node(etcd=etcd), backend("b")
    for i in range(50):  # the old revision is well above what the new etcd will reach
        n.store.put(f"{n.prefix}/junk/{i}", b"x")
    live = n.nginx_conf.read_text(), n.haproxy_conf.read_text()
    mark = n.mark()
    etcd.wipe()
    n.wait_log("drop guard: holding web", since=mark, timeout=15)  # the new, empty etcd was snapshotted
    assert (n.nginx_conf.read_text(), n.haproxy_conf.read_text()) == live
    assert n.answers() == ("a", "a")

    n.put_spec()  # agents register again on the new etcd, at low revisions
    n.put_endpoint("host-b.web.1", b.port)
    n.serves("b")

"""`lbgen registry ls|get|put|rm` as an operator uses it, against real etcd and the YAML file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.cli import main
from tests.support.etcd import EtcdServer
from tests.support.util import free_port

pytestmark = pytest.mark.integration

GOOD = '{"address": "127.0.0.1", "port": 18081, "weight": 1, "node": "host-a", "health": "healthy", "x-new": 1}'


@pytest.fixture(params=["etcd", "file"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The options that point the command at a fresh registry of each backend."""
    if request.param == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        return ["--registry", server.url, "--prefix", request.getfixturevalue("etcd_prefix")]
    return ["--registry", f"file:{tmp_path / 'registry.yaml'}", "--prefix", "/lbgen"]


def lbgen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["registry", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_put_get_ls_rm_round_trip(registry: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert lbgen(capsys, "put", "services/web/spec", '{"listen": 8080, "mode": "http"}', *registry)[0] == 0
    assert lbgen(capsys, "put", "services/web/endpoints/host-a.web.1", GOOD, *registry)[0] == 0
    drained = GOOD.replace('"weight": 1', '"weight": 0').replace("18081", "18082")
    assert lbgen(capsys, "put", "services/web/endpoints/host-b.web.1", drained, *registry)[0] == 0

    code, out, _ = lbgen(capsys, "get", "services/web/endpoints/host-a.web.1", *registry)
    assert code == 0 and json.loads(out)["x-new"] == 1, "unknown fields are kept for newer readers"

    code, out, _ = lbgen(capsys, "ls", *registry)
    assert code == 0
    assert "1 services, 2 endpoints, 0 rejected" in out
    assert "web  listen=8080 mode=http" in out
    assert "host-a.web.1  127.0.0.1:18081  weight=1  health=healthy  node=host-a  served" in out
    assert "host-b.web.1  127.0.0.1:18082  weight=0  health=healthy  node=host-a  drained (weight 0)" in out

    assert lbgen(capsys, "rm", "services/web/endpoints/host-b.web.1", *registry)[0] == 0
    code, _, err = lbgen(capsys, "rm", "services/web/endpoints/host-b.web.1", *registry)
    assert code == 1 and err.startswith("Error: ") and "no such key" in err
    assert "1 endpoints" in lbgen(capsys, "ls", "web", *registry)[1]


@pytest.mark.parametrize(("key", "value", "why"), [
    ("services/web/endpoints/a", '{"address": "1.2.3.4; evil", "port": 80}', "not an IPv4 address"),
    ("services/web/endpoints/a", json.dumps({"address": "::1%x\n    server evil 127.0.0.1:9 weight 256\n#",
                                              "port": 8000}), "not an IPv4 address"),
    ("services/web/endpoints/a", '{"address": "1.2.3.4", "port": 0}', "port 0"),
    ("services/web/endpoints/a", "not json", "not JSON"),
    ("services/web/spec", '{"mode": "udp"}', "mode 'udp'"),
    ("services/web/whatever", "{}", "not a registry entry"),
    ("lb/node-1", "{}", "not a registry entry"),
], ids=["injection", "zone-injection", "port", "json", "spec", "unknown-key", "lb-reserved"])
def test_put_refuses_invalid_values_with_exit_2(
    registry: list[str], capsys: pytest.CaptureFixture[str], key: str, value: str, why: str
) -> None:
    code, _, err = lbgen(capsys, "put", key, value, *registry)
    assert code == 2 and err.startswith("Error: ") and why in err and len(err.strip().splitlines()) == 1


def test_ls_flags_rejected_values_and_why(etcd_server: EtcdServer, etcd_prefix: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd_server.client_port),)))
    store.put(f"{etcd_prefix}/services/web/endpoints/ok", b'{"address": "127.0.0.1", "port": 80}')
    store.put(f"{etcd_prefix}/services/web/endpoints/bad", b'{"address": "127.0.0.1", "port": "80"}')
    store.put(f"{etcd_prefix}/lb/node-1", b'{"revision": 7}')
    store.close()
    code, out, _ = lbgen(capsys, "ls", "--registry", etcd_server.url, "--prefix", etcd_prefix)
    assert code == 0 and "1 endpoints, 1 rejected" in out
    assert f"{etcd_prefix}/services/web/endpoints/bad  port '80': expected an integer" in out
    assert 'node-1  {"revision": 7}' in out
    code, out, err = lbgen(capsys, "get", "services/web/endpoints/bad", "--registry", etcd_server.url,
                           "--prefix", etcd_prefix)
    assert code == 0 and "port '80'" in err
    code, out, err = lbgen(capsys, "get", "lb/node-1", "--registry", etcd_server.url, "--prefix", etcd_prefix)
    assert (code, out, err) == (0, '{"revision": 7}\n', "")


def test_ls_of_a_missing_service_is_an_error(registry: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    lbgen(capsys, "put", "services/web/spec", '{"listen": 80}', *registry)
    code, _, err = lbgen(capsys, "ls", "nope", *registry)
    assert code == 1 and "no service 'nope'" in err


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["ls", "--registry", "nonsense"], 2, "Error: registry 'nonsense': expected etcd://"),
    (["ls", "--registry", "file:/nonexistent/registry.yaml"], 2, "/nonexistent/registry.yaml: No such file"),
    (["ls", "--registry", "file:r.yaml", "--ca", "ca.pem"], 2, "--ca: only for an etcd registry"),
    (["ls", "--registry", "etcd://127.0.0.1:1", "--user", "root"], 2, "needs --password"),
], ids=["bad-url", "missing-file", "tls-on-file", "user-without-password"])
def test_bad_options_print_one_error_line(argv: list[str], code: int, message: str,
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LBGEN_ETCD_PASSWORD", raising=False)
    got, _, err = lbgen(capsys, *argv)
    assert got == code and message in err and len(err.strip().splitlines()) == 1


def test_etcd_down_is_an_error_naming_the_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, _, err = lbgen(capsys, "ls", "--registry", f"etcd://127.0.0.1:{port}")
    assert code == 3 and err.startswith(f"Error: etcd 127.0.0.1:{port}: snapshot '/lbgen/': unavailable")


@pytest.mark.parametrize("key", ["/etc/passwd", "/lbgen-other/services/web/spec", "/lbgenx"], ids=["abs", "sibling", "prefix-lookalike"])
def test_rm_refuses_keys_outside_the_prefix(registry: list[str], key: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = lbgen(capsys, "rm", key, *registry)
    assert code == 2 and err.startswith(f"Error: {key}: outside the prefix ") and len(err.strip().splitlines()) == 1


def test_badly_named_keys_are_listed_as_rejected_and_can_be_removed(
        etcd_server: EtcdServer, etcd_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd_server.client_port),)))
    store.put(f"{etcd_prefix}/services/wéb/spec", b'{"listen": 80}')
    store.put(f"{etcd_prefix}/services/web/endpoints/a;b", b'{"address": "127.0.0.1", "port": 80}')
    store.put(f"{etcd_prefix}/services/web/endpoints/ok", b'{"address": "127.0.0.1", "port": 81}')
    store.close()
    options = ["--registry", etcd_server.url, "--prefix", etcd_prefix]
    code, out, _ = lbgen(capsys, "ls", *options)
    assert code == 0 and "1 endpoints, 2 rejected" in out
    assert f"{etcd_prefix}/services/wéb/spec  service name 'wéb': must match" in out
    assert f"{etcd_prefix}/services/web/endpoints/a;b  endpoint id 'a;b': must match" in out

    code = main(["status", "--check", *options])
    out = capsys.readouterr().out
    assert code == 1 and f"{etcd_prefix}/services/wéb/spec: rejected: service name 'wéb'" in out

    assert lbgen(capsys, "rm", "services/wéb/spec", *options)[0] == 0
    assert lbgen(capsys, "rm", "services/web/endpoints/a;b", *options)[0] == 0
    assert "1 endpoints, 0 rejected" in lbgen(capsys, "ls", *options)[1]

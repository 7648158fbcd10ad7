"""etcd with TLS (server and client certificates) and with password auth, through `EtcdStore`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.cli import main
from lbgen.errors import StoreError
from tests.support.etcd import (
    ETCDCTL_BINARY, EtcdFactory, EtcdServer, TlsFiles, WatchReader, make_tls_files, require_binary,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path)


def config(server: EtcdServer, **options: Any) -> EtcdConfig:
    return EtcdConfig(endpoints=(("127.0.0.1", server.client_port),), tls=True, timeout=3.0, **options)


def test_mutual_tls_works_and_a_client_without_a_certificate_is_refused(
    etcd_factory: EtcdFactory, tls: TlsFiles
) -> None:
    server = etcd_factory(tls=tls, client_cert_auth=True)
    store = EtcdStore(config(server, ca=str(tls.ca), cert=str(tls.cert), key=str(tls.key)))
    reader = WatchReader(store.watch("/tls/", store.snapshot("/tls/").revision + 1))
    store.put("/tls/a", b"1")
    assert [e.key for e in reader.events(1)] == ["/tls/a"]
    reader.close()
    store.close()

    anonymous = EtcdStore(config(server, ca=str(tls.ca)))
    with pytest.raises(StoreError, match=f"etcd 127.0.0.1:{server.client_port}: get '/tls/a'"):
        anonymous.get("/tls/a")
    anonymous.close()


def test_password_auth_survives_an_etcd_restart_and_a_wrong_password_is_refused(
    etcd_factory: EtcdFactory, tls: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    require_binary(ETCDCTL_BINARY, "etcdctl")
    server = etcd_factory(tls=tls)
    server.etcdctl("user", "add", "root:s3cret")
    server.etcdctl("auth", "enable")
    store = EtcdStore(config(server, ca=str(tls.ca), user="root", password="s3cret"))
    store.put("/auth/a", b"1")
    server.stop()  # simple tokens live in etcd's memory: the restart invalidates ours
    server.start()
    with caplog.at_level(logging.INFO, logger="lbgen.adapters.etcd_connection"):
        assert store.get("/auth/a") is not None
    assert "auth token rejected" in caplog.text, "the old token was still accepted: the test proves nothing"
    store.close()

    intruder = EtcdStore(config(server, ca=str(tls.ca), user="root", password="wrong"))
    with pytest.raises(StoreError, match="authentication failed"):
        intruder.get("/auth/a")
    intruder.close()


def test_registry_cli_uses_tls_files_and_the_password_from_the_environment(
    etcd_factory: EtcdFactory, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require_binary(ETCDCTL_BINARY, "etcdctl")
    server = etcd_factory(tls=tls, client_cert_auth=True)
    server.etcdctl("user", "add", "root:s3cret")
    server.etcdctl("auth", "enable")
    monkeypatch.setenv("LBGEN_ETCD_PASSWORD", "s3cret")
    options = ["--registry", server.url, "--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key),
               "--user", "root"]
    assert main(["registry", "put", "services/web/spec", '{"listen": 443}', *options]) == 0
    assert main(["registry", "ls", *options]) == 0
    assert "web  listen=443" in capsys.readouterr().out
    monkeypatch.setenv("LBGEN_ETCD_PASSWORD", "wrong")
    assert main(["registry", "ls", *options]) == 3
    assert "authentication failed" in capsys.readouterr().err


def test_a_user_limited_to_the_prefix_lists_its_lease_s_keys_and_counts_its_history(
    etcd_factory: EtcdFactory, tls: TlsFiles
) -> None:
    """What an agent and `lbgen status` need of etcd (issue 15) with only a role on the prefix."""
    require_binary(ETCDCTL_BINARY, "etcdctl")
    server = etcd_factory(tls=tls)
    for argv in (("user", "add", "root:s3cret"), ("role", "add", "agent"),
                 ("role", "grant-permission", "agent", "--prefix=true", "readwrite", "/lbgen/"),
                 ("user", "add", "host-a:pw"), ("user", "grant-role", "host-a", "agent"), ("auth", "enable")):
        server.etcdctl(*argv)
    store = EtcdStore(config(server, ca=str(tls.ca), user="host-a", password="pw"))
    lease = store.grant_lease(30)
    revision = store.put("/lbgen/services/web/endpoints/host-a.w.80", b"{}", lease=lease)
    store.put("/lbgen/agents/host-a", b"{}", lease=lease)
    store.delete("/lbgen/services/web/endpoints/host-a.w.80")
    assert store.lease_keys(lease) == ("/lbgen/agents/host-a",)
    assert [kv.key for kv in store.get_many(["/lbgen/agents/host-a", "/lbgen/x"])] == ["/lbgen/agents/host-a"]
    assert (store.count("/lbgen/services/", revision), store.count("/lbgen/services/")) == (1, 0)
    with pytest.raises(StoreError, match="permission denied"):
        store.count("/other/")
    store.close()

"""The YAML registry file: edits become watch events, broken edits are refused, writes are atomic."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from lbgen.adapters.file_store import FileStore
from lbgen.errors import ConfigError, StoreError
from tests.support.etcd import WatchReader
from tests.support.util import wait_until

pytestmark = pytest.mark.integration

REGISTRY = """\
services:
  web:
    spec: {listen: 8080, mode: http}
    endpoints:
      host-a.web.1: {address: 127.0.0.1, port: 18081, weight: 1, health: healthy}
"""
WEB = "/lbgen/services/web"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    return path


@pytest.fixture
def store(path: Path) -> Iterator[FileStore]:
    store = FileStore(path)
    yield store
    store.close()


def test_the_file_maps_to_the_etcd_keys_with_json_values(store: FileStore) -> None:
    snapshot = store.snapshot("/lbgen/")
    assert {kv.key: json.loads(kv.value) for kv in snapshot.items} == {
        f"{WEB}/spec": {"listen": 8080, "mode": "http"},
        f"{WEB}/endpoints/host-a.web.1": {"address": "127.0.0.1", "port": 18081, "weight": 1, "health": "healthy"},
    }


def test_yaml_only_values_become_the_strings_python_writes_for_them(tmp_path: Path) -> None:
    """A timestamp, a boolean key (`on`), binary data: each reaches the registry value as `str()` or
    JSON writes it, then faces the schema like any value (encoding must not reinterpret them)."""
    path = tmp_path / "registry.yaml"
    path.write_text("services:\n  web:\n    endpoints:\n      a: {address: 127.0.0.1, port: 80, "
                    "meta: {built: 2020-01-02 03:04:05, on: x, null: y, blob: !!binary eA==}}\n")
    store = FileStore(path)
    try:
        (item,) = store.snapshot("/lbgen/").items
    finally:
        store.close()
    assert json.loads(item.value)["meta"] == {"built": "2020-01-02 03:04:05", "true": "x", "null": "y", "blob": "b'x'"}


def test_editing_the_file_in_place_becomes_watch_events(store: FileStore, path: Path) -> None:
    reader = WatchReader(store.watch("/lbgen/", store.snapshot("/lbgen/").revision + 1))
    try:
        path.write_text(REGISTRY.replace("18081", "18082") + "      host-b.web.1: {address: 127.0.0.2, port: 80}\n")
        events = reader.events(2)
    finally:
        reader.close()
    assert sorted((e.kind, e.key.rsplit("/", 1)[1]) for e in events) == [("put", "host-a.web.1"), ("put", "host-b.web.1")]
    assert len({e.revision for e in events}) == 1, "one reload of the file is one change"


def test_an_editor_replacing_the_file_is_seen(store: FileStore, path: Path) -> None:
    reader = WatchReader(store.watch("/lbgen/", 0))
    try:
        swap = path.with_name("registry.yaml.swp")
        swap.write_text("services:\n  web:\n    spec: {listen: 9090}\n")
        os.replace(swap, path)
        events = reader.events(2)
    finally:
        reader.close()
    assert sorted((e.kind, e.key) for e in events) == [
        ("delete", f"{WEB}/endpoints/host-a.web.1"), ("put", f"{WEB}/spec")]


def test_a_broken_edit_keeps_the_previous_content_and_logs_file_and_line(
    store: FileStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = WatchReader(store.watch("/lbgen/", 0))
    before = store.snapshot("/lbgen/")
    try:
        with caplog.at_level(logging.ERROR, logger="lbgen.adapters.file_store"):
            path.write_text(REGISTRY + "  api: [oops\n")
            wait_until(lambda: [r for r in caplog.records if "keeping the previous content" in r.getMessage()],
                       5, "the broken file to be refused")
        assert caplog.records[0].getMessage().startswith(f"{path}:7:")
        assert store.snapshot("/lbgen/") == before
        path.write_text(REGISTRY.replace("18081", "18083"))  # fixed: the watch goes on
        events = reader.events(1)
    finally:
        reader.close()
    assert json.loads(events[0].value)["port"] == 18083


def test_a_broken_file_at_start_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("services:\n  web: {spec: {listen: 80}\n  api: x\n")
    with pytest.raises(ConfigError, match=rf"{path}:3:\d+: "):
        FileStore(path)


@pytest.mark.parametrize("text, where", [
    ("- a\n- b\n", "expected a mapping with a 'services' key"),
    ("services: [web]\n", "services: expected a mapping"),
    ("services:\n  web: {listen: 80}\n", "services.web: expected a mapping with 'spec'"),
    ("services:\n  web: {endpoints: [a]}\n", "services.web.endpoints: expected a mapping"),
], ids=["list", "services-list", "no-spec-key", "endpoints-list"])
def test_a_file_of_the_wrong_shape_is_refused_with_the_path(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where):
        FileStore(path)


def test_badly_named_entries_reach_the_catalog_to_be_rejected(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """`web;x` and `a b` become keys that the catalog rejects (listed by `registry ls` and
    `status`); a name that cannot be a key segment (`a/b`, a number) is skipped and logged."""
    path = tmp_path / "registry.yaml"
    path.write_text("services:\n  'web;x': {spec: {listen: 80}}\n  ok:\n    endpoints:\n      'a b': {port: 1}\n"
                    "      'a/b': {port: 2}\n      7: {port: 3}\n")
    with caplog.at_level(logging.ERROR):
        store = FileStore(path)
    keys = [kv.key for kv in store.snapshot("/lbgen/").items]
    assert sorted(keys) == ["/lbgen/services/ok/endpoints/a b", "/lbgen/services/web;x/spec"]
    assert [r.getMessage().split(": skipped")[0] for r in caplog.records] == [
        f"{path}: services.ok.endpoints.a/b", f"{path}: services.ok.endpoints.7"]


def test_put_and_delete_rewrite_the_file_atomically(store: FileStore, path: Path) -> None:
    store.put(f"{WEB}/endpoints/host-b.web.1", b'{"address": "127.0.0.2", "port": 80}')
    store.put("/lbgen/services/api/spec", b'{"listen": 9000}')
    store.delete(f"{WEB}/endpoints/host-a.web.1")
    store.delete(f"{WEB}/spec")
    assert yaml.safe_load(path.read_text()) == {"services": {
        "web": {"endpoints": {"host-b.web.1": {"address": "127.0.0.2", "port": 80}}},
        "api": {"spec": {"listen": 9000}},
    }}
    assert [p.name for p in path.parent.iterdir()] == ["registry.yaml"], "a temp file was left behind"
    store.delete(f"{WEB}/endpoints/host-b.web.1")
    assert "web" not in yaml.safe_load(path.read_text())["services"]


def test_a_service_with_nothing_yet_is_accepted_and_can_be_filled(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("services:\n  web:\n")
    store = FileStore(path)
    assert store.snapshot("/lbgen/").items == ()
    store.put(f"{WEB}/spec", b'{"listen": 80}')
    assert yaml.safe_load(path.read_text()) == {"services": {"web": {"spec": {"listen": 80}}}}


def test_put_refuses_keys_the_file_cannot_hold_and_non_json(store: FileStore) -> None:
    with pytest.raises(StoreError, match="can be stored"):
        store.put("/elsewhere/x", b"{}")
    with pytest.raises(StoreError, match="not JSON"):
        store.put(f"{WEB}/spec", b"listen=80")


def test_a_write_never_overwrites_a_broken_edit_in_progress(store: FileStore, path: Path) -> None:
    path.write_text(REGISTRY + "  api: [oops\n")
    with pytest.raises(ConfigError, match=rf"^{path}:7:1: "):
        store.put(f"{WEB}/spec", b'{"listen": 1}')
    assert path.read_text().endswith("[oops\n")


def test_status_keys_and_leases_live_in_memory_only(store: FileStore, path: Path) -> None:
    lease = store.grant_lease(1)
    assert store.keep_alive(lease) == 1
    store.put("/lbgen/lb/node-1", b'{"revision": 3}', lease=lease)
    assert store.get("/lbgen/lb/node-1") is not None
    assert path.read_text() == REGISTRY

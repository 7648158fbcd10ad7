"""Every registry setting form parses; every bad one is refused naming the value."""

import pytest

from lbgen.core.registry_url import RegistryUrl, parse_registry_url
from lbgen.errors import ConfigError


@pytest.mark.parametrize(("value", "expected"), [
    ("etcd://127.0.0.1:2379", RegistryUrl("etcd", (("127.0.0.1", 2379),))),
    ("http://etcd-1.example:23790/", RegistryUrl("etcd", (("etcd-1.example", 23790),))),
    ("https://etcd-1:2379", RegistryUrl("etcd", (("etcd-1", 2379),), tls=True)),
    ("etcd://localhost", RegistryUrl("etcd", (("localhost", 2379),))),
    ("etcd://[::1]:2379", RegistryUrl("etcd", (("::1", 2379),))),
    ("etcd://a:1, etcd://b:2,etcd://a:1", RegistryUrl("etcd", (("a", 1), ("b", 2)))),
    (["https://a:1", "https://b:2"], RegistryUrl("etcd", (("a", 1), ("b", 2)), tls=True)),
    ("file:registry.yaml", RegistryUrl("file", path="registry.yaml")),
    ("file:/etc/lbgen/registry.yaml", RegistryUrl("file", path="/etc/lbgen/registry.yaml")),
    ("file:///etc/lbgen/registry.yaml", RegistryUrl("file", path="/etc/lbgen/registry.yaml")),
    (["file:r.yaml"], RegistryUrl("file", path="r.yaml")),
], ids=["etcd", "http", "https", "default-port", "ipv6", "cluster-dedup", "yaml-list", "file-relative",
        "file-absolute", "file-url", "file-in-list"])
def test_good_values_parse(value: str | list[str], expected: RegistryUrl) -> None:
    assert parse_registry_url(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("", "empty"),
    ("127.0.0.1:2379", "expected etcd://HOST:PORT"),
    ("etcd://host:99999", "port '99999'"),
    ("etcd://host:abc", "port 'abc'"),
    ("etcd://bad_host:2379", "'bad_host' is not a host name"),
    ("etcd://host:2379/v3/kv", "expected etcd://"),
    ("redis://host:6379", "expected etcd://"),
    ("file:", "expected file:PATH"),
    ("file:a.yaml,etcd://b:1", "cannot be part of a list"),
    ("etcd://a:1,https://b:2", "mixes https://"),
    ([2379], "is not a string"),
], ids=["empty", "no-scheme", "port-range", "port-text", "host-charset", "path", "scheme", "file-empty",
        "file-in-list", "mixed-tls", "not-a-string"])
def test_bad_values_name_the_value(value: str | list[object], message: str) -> None:
    with pytest.raises(ConfigError, match="registry .*" + message.replace("(", r"\(")):
        parse_registry_url(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["etcd://a:1,etcd://[::1]:2", "https://a:1", "file:r.yaml"])
def test_str_round_trips(value: str) -> None:
    assert str(parse_registry_url(value)) == value

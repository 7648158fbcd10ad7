"""Settings: valid files load to the documented values; every mistake names its field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from lbgen.core.durations import format_duration, parse_duration
from lbgen.core.kinds import guess_kind, kind_names, lb_kind
from lbgen.core.settings import GUARD_OFF, Guard, Wait, parse_settings, parse_wait
from lbgen.errors import ConfigError

from tests.unit.catalogs import ROOT

BASE: dict[str, Any] = {
    "registry": "etcd://127.0.0.1:2379",
    "targets": [{
        "name": "nginx",
        "template": "templates/nginx.conf.j2",
        "dest": "/etc/nginx/nginx.conf",
        "check": ["nginx", "-t", "-q", "-c", "{staged}"],
        "reload": ["nginx", "-s", "reload"],
    }],
}


CHECKED = ", ".join(name for name in kind_names() if lb_kind(name).check)  # kinds with a built-in checker


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field set (`targets.0.mode`); value `...` deletes the field."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return data


def test_minimal_settings_get_documented_defaults() -> None:
    settings = parse_settings(BASE, "/srv/lb")
    target = settings.targets[0]
    assert str(settings.registry) == "etcd://127.0.0.1:2379"
    assert settings.prefix == "/lbgen"
    assert settings.wait == Wait(0.1, 1.0)
    assert settings.served_health == {"healthy", "none"}
    assert settings.guard == Guard(max_drop=0.5, to_zero=True, hold_max=120.0)
    assert target.template == "/srv/lb/templates/nginx.conf.j2"
    assert target.dest == "/etc/nginx/nginx.conf"
    assert target.kind == "nginx"
    assert (target.mode, target.timeout, target.wait, dict(target.vars)) == (0o644, 30.0, None, {})
    assert (target.render_timeout, target.render_memory) == (10.0, 256 * 1024**2)


def test_a_partial_section_keeps_the_documented_defaults_of_the_rest() -> None:
    """The defaults come from the parser's own constants (a Struct's class attribute is a field
    descriptor, not its default)."""
    settings = parse_settings({**BASE, "guard": {"max_drop": "25%"}, "etcd": {"ca": "ca.pem"}}, "/srv/lb")
    assert settings.guard == Guard(max_drop=0.25, to_zero=True, hold_max=120.0)
    assert settings.etcd.timeout == 5.0



def test_full_target_and_top_level_fields() -> None:
    data = with_("targets.0.vars", {"pid": "/run/nginx.pid", "min_slots": 8})
    data.update(prefix="lbgen/", wait="50ms:2s", served_health=["healthy"],
                guard={"max_drop": "25%", "to_zero": False, "hold_max": "5m"},
                registry=["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
                etcd={"ca": "pki/ca.pem", "user": "lbgen", "password_file": "/etc/lbgen/pass", "timeout": "2s"})
    data["targets"][0].update(mode="0640", owner="root", group=0, wait="10ms", timeout="5s",
                              render_timeout="2s", render_memory="256m",
                              verify=["curl", "-fsS", "http://127.0.0.1:18999/healthz"], kind="generic")
    settings = parse_settings(data, "/srv/lb")
    target = settings.targets[0]
    assert settings.prefix == "/lbgen"
    assert settings.wait == Wait(0.05, 2.0)
    assert settings.served_health == {"healthy"}
    assert settings.guard == Guard(0.25, False, 300.0)
    assert str(settings.registry) == "https://10.0.0.1:2379,https://10.0.0.2:2379"
    assert settings.etcd.ca == "/srv/lb/pki/ca.pem" and settings.etcd.timeout == 2.0
    assert (target.mode, target.owner, target.group, target.kind) == (0o640, "root", "0", "generic")
    assert target.wait == Wait(0.01, 0.04) and target.timeout == 5.0
    assert (target.render_timeout, target.render_memory) == (2.0, 256 * 1024**2)
    assert target.vars == {"pid": "/run/nginx.pid", "min_slots": 8}


@pytest.mark.parametrize("registry, expected", [
    ("file:registry.yaml", "file:/srv/lb/registry.yaml"),
    ("file:/var/lib/lbgen/registry.yaml", "file:/var/lib/lbgen/registry.yaml"),
    ("etcd://[::1]:2379", "etcd://[::1]:2379"),
    (["etcd://a:2379", "etcd://b:2379"], "etcd://a:2379,etcd://b:2379"),
    ("http://a:2379,http://b", "etcd://a:2379,etcd://b:2379"),
], ids=["relative-file", "absolute-file", "ipv6", "cluster", "comma-list-and-default-port"])
def test_registry_forms(registry: Any, expected: str) -> None:
    settings = parse_settings(with_("registry", registry), "/srv/lb")
    assert str(settings.registry) == expected


@pytest.mark.parametrize("value, expected", [
    ("100ms:1s", Wait(0.1, 1.0)),
    ("100ms", Wait(0.1, 0.4)),
    ("2s:2s", Wait(2.0, 2.0)),
    ("0", Wait(0.0, 0.0)),
    (0, Wait(0.0, 0.0)),
    ("1.5s:1m", Wait(1.5, 60.0)),
], ids=["min-max", "max-defaults-to-4x", "equal", "off-string", "off-int", "fractions"])
def test_wait_forms(value: Any, expected: Wait) -> None:
    assert parse_wait(value) == expected
    assert parse_wait(value).enabled == (expected.min > 0)


@pytest.mark.parametrize("value", ["5", "1s:100ms", "fast", "1x", "-1s", True, None, "1s:2s:3s"])
def test_bad_waits_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_wait(value)


@pytest.mark.parametrize("text, seconds", [("100ms", 0.1), ("2m", 120.0), ("1h", 3600.0), ("0", 0.0)])
def test_durations_round_trip(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == (text if text != "0" else "0ms")


@pytest.mark.parametrize("data, message", [
    (with_("targets.0.reload", "nginx -s reload"), "targets[0].reload: expected a list of strings"),
    (with_("targets.0.reload", ["sleep", 1]), "targets[0].reload[1]: expected a non-empty string, got 1"),
    (with_("targets.0.check", [True, "{staged}"]), "targets[0].check[0]: expected a non-empty string, got True"),
    (with_("targets.0.check", ["x", "y" * 500]), "targets[0].check: must name the candidate file"),
    (with_("targets.0.check", ["x", ["y" * 500]]), "targets[0].check[1]: expected a non-empty string, got [" + "'" + "y" * 98),
    (with_("targets.0.check", ...), "targets[0]: no check: set check (an argv naming {staged}), a kind with a "
                                    f"built-in checker ({CHECKED}), or check: none"),
    (with_("targets.0.check", "None"), "targets[0].check: expected a list of strings, got str"),
    (with_("targets.0.reload", []), "targets[0].reload: expected a non-empty list"),
    (with_("targets.0.check", ["nginx", "-t"]), "targets[0].check: must name the candidate file with {staged}"),
    (with_("targets.0.check", ["x", "{stagged}"]), "targets[0].check: unknown placeholder {stagged}"),
    (with_("targets.0.relaod", ["x"]), "targets[0].relaod: unknown setting (did you mean 'reload'?)"),
    (with_("targets.0.name", ...), "targets[0].name: required"),
    ({"registry": "etcd://a:1", "targets": [{"name": "n", "templte": "t.j2", "dest": "d", "check": "none"}]},
     "targets[0].templte: unknown setting (did you mean 'template'?)"),
    (with_("targets.0.name", "a b"), "targets[0].name: 'a b': must match"),
    (with_("targets.0.kind", "apache"), f"targets[0].kind: expected one of {', '.join(kind_names())}"),
    (with_("targets.0.mode", "rw-r--r--"), 'targets[0].mode: expected an octal mode like 0644'),
    (with_("targets.0.mode", 0o17777), "targets[0].mode: mode 17777 is out of range"),
    (with_("targets.0.owner", "root; rm"), "targets[0].owner: 'root; rm': not a user or group name"),
    (with_("targets.0.vars", {"bad-name": 1}), "targets[0].vars: 'bad-name': variable names are identifiers"),
    (with_("targets.0.vars", ["pid"]), "targets[0].vars: expected a mapping, got list"),
    (with_("targets.0.timeout", "0"), "targets[0].timeout: expected a duration above 0"),
    (with_("targets.0.render_timeout", "0"), "targets[0].render_timeout: expected a duration above 0"),
    (with_("targets.0.render_timeout", "2h"), "targets[0].render_timeout: expected at most 1h"),
    (with_("targets.0.render_memory", "64 MB"), "targets[0].render_memory: expected a size like 64m"),
    (with_("targets.0.render_memory", "1m"), "targets[0].render_memory: expected at least 4m"),
    (with_("targets.0.render_memory", True), "targets[0].render_memory: expected a size like 64m"),
    (with_("targets.0.runtime", "yes"), "targets[0].runtime: expected true or false"),
    ({**BASE, "targets": [{**BASE["targets"][0], "kind": "generic", "runtime": True}]},
     "targets[0].runtime: only haproxy, nginx targets have a runtime API (kind is generic)"),
    (with_("targets.0.wait", "soon"), "targets[0].wait: expected a duration like 100ms"),
    (with_("targets.0.template", ""), "targets[0].template: expected a non-empty string"),
    (with_("targets", []), "targets: expected at least one target"),
    (with_("targets", {"name": "x"}), "targets: expected a list, got dict"),
    (with_("targets.0", "nginx"), "targets[0]: expected a mapping, got str"),
    (with_("registry", ...), "registry: required"),
    (with_("registry", "127.0.0.1:2379"), "registry: '127.0.0.1:2379': expected etcd://HOST:PORT"),
    (with_("registry", ["file:a.yaml", "etcd://b:1"]), "registry: ['file:a.yaml', 'etcd://b:1']: a file registry"),
    (with_("registry", ["etcd://a:1", "https://b:1"]), "registry: ['etcd://a:1', 'https://b:1']: mixes https://"),
    (with_("registry", "etcd://a:99999"), "registry: 'etcd://a:99999': port '99999' is not a number"),
    (with_("registry", 2379), "registry: expected a URL or a list of URLs, got 2379"),
    (with_("registry", [2379]), "registry: [2379]: 2379 is not a string"),
    (with_("prefix", "/lb gen"), "prefix: prefix '/lb gen': only letters"),
    (with_("served_health", ["healthy", "ok"]), "served_health: expected a non-empty list of healthy"),
    (with_("served_health", []), "served_health: expected a non-empty list"),
    (with_("wait", "1s:100ms"), "wait: max 100ms is shorter than min 1s"),
    (with_("guard", {"max_drop": "150%"}), "guard.max_drop: expected a share like 50%"),
    (with_("guard", {"max_drop": "half"}), "guard.max_drop: expected a share like 50%"),
    (with_("guard", {"to_zero": "yes"}), "guard.to_zero: expected true or false"),
    (with_("guard", {"maxdrop": "10%"}), "guard.maxdrop: unknown setting (did you mean 'max_drop'?)"),
    (with_("etcd", {"cert": "c.pem"}), "etcd: cert and key go together"),
    (with_("etcd", {"user": "u"}), "etcd: user and password_file go together"),
    (with_("etcd", {"password": "hunter2"}), "etcd.password: unknown setting (did you mean 'password_file'?)"),
    (with_("targes", []), "targes: unknown setting (did you mean 'targets'?)"),
    ([1, 2], "settings: expected a mapping, got list"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 60 and ":" in v else None)
def test_errors_name_the_field_path(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, "/srv/lb")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_duplicate_names_and_destinations_are_refused() -> None:
    data = copy.deepcopy(BASE)
    data["targets"].append(dict(data["targets"][0], dest="/tmp/other.conf"))
    with pytest.raises(ConfigError, match=r"^targets\[1\]\.name: same as targets\[0\]\.name$"):
        parse_settings(data, "/")
    data["targets"][1]["name"] = "other"
    data["targets"][1]["dest"] = "/etc/nginx/../nginx/nginx.conf"
    with pytest.raises(ConfigError, match=r"^targets\[1\]\.dest: same as targets\[0\]\.dest$"):
        parse_settings(data, "/")


@pytest.mark.parametrize("guard, expected, enabled", [
    (False, GUARD_OFF, False), ("off", GUARD_OFF, False), ({}, Guard(), True),
    ({"max_drop": "100%", "to_zero": False}, Guard(1.0, False), False),
    ({"max_drop": "100%"}, Guard(1.0, True), True), ({"max_drop": 0.3}, Guard(max_drop=0.3), True),
    ({"hold_max": 0}, Guard(hold_max=0.0), True),
], ids=["false", "off", "empty", "both-off", "to-zero-only", "fraction", "hold-forever"])
def test_guard_forms(guard: Any, expected: Guard, enabled: bool) -> None:
    parsed = parse_settings(with_("guard", guard), "/").guard
    assert parsed == expected
    assert parsed.enabled is enabled


@pytest.mark.parametrize("check, kind", [
    ((), "generic"), (("/usr/sbin/nginx", "-t"), "nginx"), (("haproxy", "-c"), "haproxy"), (("sh", "-c"), "generic"),
])
def test_kind_is_guessed_from_the_checker(check: tuple[str, ...], kind: str) -> None:
    assert guess_kind(check) == kind


@pytest.mark.parametrize("kind, runtime, vars, expected", [
    ("haproxy", None, {"stats_socket": "/run/haproxy/admin.sock"}, True),
    ("haproxy", None, {}, False),
    ("haproxy", False, {"stats_socket": "/run/haproxy/admin.sock"}, False),
    ("haproxy", True, {}, True),
    ("nginx", None, {"stats_socket": "/run/x.sock"}, False),
    ("nginx", False, {}, False),
    ("nginx", True, {}, True),
], ids=["haproxy-with-socket", "haproxy-without", "opted-out", "opted-in", "nginx", "nginx-off", "nginx-on"])
def test_runtime_updates_default_on_for_haproxy_with_a_stats_socket(
    kind: str, runtime: bool | None, vars: dict[str, str], expected: bool
) -> None:
    data = with_("targets.0.kind", kind)
    data["targets"][0].update(vars=vars, runtime=runtime)
    assert parse_settings(data, "/").targets[0].runtime is expected


def test_yaml_octal_mode_is_read_as_written() -> None:
    data = yaml.safe_load("mode: 0640")  # YAML 1.1 turns this into 416
    assert parse_settings(with_("targets.0.mode", data["mode"]), "/").targets[0].mode == 0o640


@pytest.mark.parametrize("path", ["examples/lbgen.yaml", "nginx/lbgen.yaml", "haproxy/lbgen.yaml"])
def test_shipped_settings_files_are_valid(path: str) -> None:
    file = ROOT / path
    settings = parse_settings(yaml.safe_load(file.read_text()), str(file.parent))
    assert settings.targets and all(t.check and t.kind in ("nginx", "haproxy") for t in settings.targets)



@pytest.mark.parametrize(("target", "kind", "check"), [
    ({"check": "none"}, "generic", ()),
    ({"kind": "nginx"}, "nginx", ()),
    ({"kind": "haproxy"}, "haproxy", ()),
    ({"check": ["test", "-s", "{staged}"]}, "generic", ("test", "-s", "{staged}")),
    ({"kind": "generic", "check": "none"}, "generic", ()),
], ids=["check-none", "nginx-built-in", "haproxy-built-in", "own-check", "generic-none"])
def test_a_target_is_validated_unless_it_says_check_none(target: dict[str, Any], kind: str,
                                                         check: tuple[str, ...]) -> None:
    data = {"registry": "file:r.yaml", "targets": [{"name": "t", "template": "t.j2", "dest": "out", **target}]}
    parsed = parse_settings(data, "/srv/lb").targets[0]
    assert (parsed.kind, parsed.check) == (kind, check)


def test_a_generic_target_without_a_check_is_refused() -> None:
    data = {"registry": "file:r.yaml", "targets": [{"name": "t", "template": "t.j2", "dest": "out", "kind": "generic"}]}
    with pytest.raises(ConfigError, match=r"^targets\[0\]: no check: .* or check: none to go live unvalidated$"):
        parse_settings(data, "/srv/lb")

"""Watcher settings (`lbgen.yaml`): the values, and their validation from an already-parsed YAML mapping.

Loading is pure: the CLI reads and parses the file (`adapters.yaml_file.load_yaml`), then calls
`parse_settings(data, base_dir)` with the file's directory.
Every problem raises `ConfigError` naming the field path (`targets[1].reload: expected a list of
strings`); unknown keys are errors too, since a typo silently ignored is a setting silently lost.
"""

from __future__ import annotations

import posixpath
import re
from types import MappingProxyType
from typing import Any, Callable, Mapping

import msgspec
from msgspec.structs import replace

from lbgen.core.durations import parse_duration, parse_size
from lbgen.core.bounded import quote
from lbgen.core.kinds import guess_kind, kind_names, lb_kind
from lbgen.core.fields import Section, SourceInt, expect_list, expect_str, expect_str_list
from lbgen.core.model import DEFAULT_SERVED_HEALTH, HEALTH_STATES
from lbgen.core.registry_url import RegistryUrl, parse_registry_url
from lbgen.core.schema import NAME_RE, normalize_prefix
from lbgen.errors import ConfigError, InvalidValue

MIB = 1024**2
RENDER_MEMORY_MIN = 4 * MIB  # below this not even a small template renders
RENDER_TIMEOUT_MAX = 3600.0
RENDER_TIMEOUT_DEFAULT = 10.0
RENDER_MEMORY_DEFAULT = 256 * MIB  # a 10,000-service HAProxy render needs ~56 MiB (bench/render_bench.py --bounded)
PLACEHOLDERS = ("staged", "dest")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


class Wait(msgspec.Struct, frozen=True):
    """Quiescence: render once changes stop for `min` seconds, or at the latest `max` after the first.

    `Wait(0, 0)` is off: every change renders at once.
    """

    min: float
    max: float

    @property
    def enabled(self) -> bool:
        return self.min > 0


class Guard(msgspec.Struct, frozen=True):
    """The drop guard: a render that suddenly loses too many served endpoints is held back.

    `max_drop` is the share (0..1) of all served endpoints one render may remove (1.0 = no limit);
    `to_zero` holds a render that leaves a service which had served endpoints with none;
    `hold_max` seconds after a drop was first held it is applied anyway (0 = hold until restart).
    """

    max_drop: float = 0.5
    to_zero: bool = True
    hold_max: float = 120.0

    @property
    def enabled(self) -> bool:
        return self.max_drop < 1.0 or self.to_zero


GUARD_OFF = Guard(max_drop=1.0, to_zero=False, hold_max=0.0)
DEFAULT_WAIT = Wait(0.1, 1.0)


class EtcdOptions(msgspec.Struct, frozen=True):
    """How to reach etcd: TLS material, user and password file (read by the adapter), RPC timeout."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_file: str | None = None
    timeout: float = 5.0


class Target(msgspec.Struct, frozen=True):
    """One rendered file and how to make it live.

    `check`, `reload` and `verify` are argv lists; `{staged}` is replaced by the path of the
    candidate file and `{dest}` by the live one. An empty `check` means the kind's built-in one,
    or, for a kind without one (generic), an explicit `check: none` (settings refuse it without).
    `kind` (a module of `lbgen.core.kinds`: `nginx`, `haproxy`, `generic`) selects how the whole
    config is validated and how a reload is verified. `runtime` (kinds with a runtime API): apply changes that
    only move endpoints without a reload: haproxy through the stats socket (`vars.stats_socket`,
    issue 7, docs/haproxy-runtime.md), nginx through its Lua balancer's control socket (issue 12,
    docs/nginx-runtime.md).
    `render_timeout` (seconds) and `render_memory` (bytes) bound one render of the template
    (issue 10: a template that loops forever or grows without end is refused, the daemon lives on).
    """

    name: str
    template: str
    dest: str
    check: tuple[str, ...] = ()
    reload: tuple[str, ...] = ()
    verify: tuple[str, ...] = ()
    kind: str = "generic"
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None
    vars: Mapping[str, Any] = {}
    wait: Wait | None = None
    timeout: float = 30.0
    runtime: bool = False
    render_timeout: float = RENDER_TIMEOUT_DEFAULT
    render_memory: int = RENDER_MEMORY_DEFAULT


class Settings(msgspec.Struct, frozen=True):
    """Everything `lbgen watch` and `lbgen render` need, validated."""

    registry: RegistryUrl
    targets: tuple[Target, ...]
    prefix: str = "/lbgen"
    wait: Wait = DEFAULT_WAIT
    served_health: frozenset[str] = DEFAULT_SERVED_HEALTH
    guard: Guard = Guard()
    etcd: EtcdOptions = EtcdOptions()



def parse_settings(data: Any, base_dir: str) -> Settings:
    """Validate a parsed `lbgen.yaml`; relative paths resolve against `base_dir` (the file's directory)."""
    root = Section(data, "")
    resolve = _resolver(base_dir)
    settings = Settings(
        registry=root.take("registry", lambda v: parse_registry_setting(v, resolve)),
        prefix=root.take("prefix", _parse_prefix, "/lbgen"),
        wait=root.take("wait", parse_wait, DEFAULT_WAIT),
        served_health=root.take("served_health", _parse_served_health, DEFAULT_SERVED_HEALTH),
        guard=root.take("guard", _parse_guard, Guard()),
        etcd=root.take("etcd", lambda v: _parse_etcd(v, resolve), EtcdOptions()),
        targets=root.take("targets", lambda v: _parse_targets(v, resolve)),
    )
    root.done()
    return settings


def parse_wait(value: Any) -> Wait:
    """`"100ms:1s"`, `"100ms"` (max = 4 x min, as consul-template), or `"0"` / `0` (off)."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None:
        raise ValueError(f"expected min:max like 100ms:1s, got {quote(value)}")
    low_text, _, high_text = text.partition(":")
    low = parse_duration(low_text)
    high = parse_duration(high_text) if high_text else 4 * low
    if high < low:
        raise ValueError(f"max {high_text} is shorter than min {low_text}")
    return Wait(low, high)


def parse_registry_setting(value: Any, resolve: Callable[[str], str]) -> RegistryUrl:
    """The registry URL(s) (`lbgen.core.registry_url`); a relative `file:` path resolves with `resolve`."""
    if not isinstance(value, (str, list)):
        raise ValueError(f"expected a URL or a list of URLs, got {quote(value)}")
    try:
        url = parse_registry_url(value)
    except ConfigError as e:
        raise ValueError(str(e).removeprefix("registry ")) from e
    return replace(url, path=resolve(url.path)) if url.kind == "file" else url


def _resolver(base_dir: str) -> Callable[[str], str]:
    def resolve(path: str) -> str:
        if not path:
            raise ValueError("expected a path")
        return posixpath.normpath(posixpath.join(base_dir, path))

    return resolve


def _parse_prefix(value: Any) -> str:
    try:
        return normalize_prefix(expect_str(value))
    except InvalidValue as e:
        raise ValueError(str(e)) from e


def _parse_served_health(value: Any) -> frozenset[str]:
    states = expect_str_list(value)
    unknown = [s for s in states if s not in HEALTH_STATES]
    if unknown or not states:
        raise ValueError(f"expected a non-empty list of {', '.join(HEALTH_STATES)}, got {quote(value)}")
    return frozenset(states)


def _parse_share(value: Any) -> float:
    text = str(value).strip() if not isinstance(value, bool) else ""
    number = text[:-1] if text.endswith("%") else text
    try:
        share = float(number) / (100 if text.endswith("%") else 1)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1 or not text:
        raise ValueError(f"expected a share like 50% (0% to 100%), got {quote(value)}")
    return share


def _parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {quote(value)}")
    return value


def _parse_guard(value: Any) -> Guard:
    if value is False or value == "off":
        return GUARD_OFF
    section, default = Section(value, "guard"), Guard()
    guard = Guard(
        max_drop=section.take("max_drop", _parse_share, default.max_drop),
        to_zero=section.take("to_zero", _parse_bool, default.to_zero),
        hold_max=section.take("hold_max", parse_duration, default.hold_max),
    )
    section.done()
    return guard


def _parse_etcd(value: Any, resolve: Callable[[str], str]) -> EtcdOptions:
    section = Section(value, "etcd")
    path = lambda v: resolve(expect_str(v))  # noqa: E731
    options = EtcdOptions(
        ca=section.take("ca", path, None),
        cert=section.take("cert", path, None),
        key=section.take("key", path, None),
        user=section.take("user", expect_str, None),
        password_file=section.take("password_file", path, None),
        timeout=section.take("timeout", _positive_duration, EtcdOptions().timeout),
    )
    section.done()
    if (options.cert is None) != (options.key is None):
        raise ConfigError("etcd: cert and key go together")
    if (options.user is None) != (options.password_file is None):
        raise ConfigError("etcd: user and password_file go together")
    return options


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration above 0, got {quote(value)}")
    return seconds


def _render_timeout(value: Any) -> float:
    seconds = _positive_duration(value)
    if seconds > RENDER_TIMEOUT_MAX:
        raise ValueError(f"expected at most 1h, got {quote(value)}")
    return seconds


def _render_memory(value: Any) -> int:
    size = parse_size(value)
    if size < RENDER_MEMORY_MIN:
        raise ValueError(f"expected at least 4m, got {quote(value)}")
    return size


def _parse_targets(value: Any, resolve: Callable[[str], str]) -> tuple[Target, ...]:
    items = expect_list(value)
    if not items:
        raise ValueError("expected at least one target")
    targets = tuple(_parse_target(item, f"targets[{i}]", resolve) for i, item in enumerate(items))
    for attribute in ("name", "dest"):
        seen: dict[str, int] = {}
        for i, target in enumerate(targets):
            other = seen.setdefault(getattr(target, attribute), i)
            if other != i:
                raise ConfigError(f"targets[{i}].{attribute}: same as targets[{other}].{attribute}")
    return targets


def _parse_target(value: Any, path: str, resolve: Callable[[str], str]) -> Target:
    section = Section(value, path)
    check = section.take("check", _parse_check, None)
    target = Target(
        name=section.take("name", _parse_name),
        template=section.take("template", lambda v: resolve(expect_str(v))),
        dest=section.take("dest", lambda v: resolve(expect_str(v))),
        check=check or (),
        reload=section.take("reload", _argv_with_placeholders, ()),
        verify=section.take("verify", _argv_with_placeholders, ()),
        kind=section.take("kind", _parse_kind, guess_kind(check or ())),
        mode=section.take("mode", _parse_mode, 0o644),
        owner=section.take("owner", _parse_account, None),
        group=section.take("group", _parse_account, None),
        vars=section.take("vars", _parse_vars, MappingProxyType({})),
        wait=section.take("wait", parse_wait, None),
        timeout=section.take("timeout", _positive_duration, 30.0),
        render_timeout=section.take("render_timeout", _render_timeout, RENDER_TIMEOUT_DEFAULT),
        render_memory=section.take("render_memory", _render_memory, RENDER_MEMORY_DEFAULT),
    )
    target = replace(target, runtime=_runtime(section.take("runtime", _parse_bool, None), target, path))
    section.done()
    if target.check and not any("{staged}" in arg for arg in target.check):
        raise ConfigError(f"{path}.check: must name the candidate file with {{staged}}")
    if check is None and not lb_kind(target.kind).check:
        checked = ", ".join(name for name in kind_names() if lb_kind(name).check)
        raise ConfigError(f"{path}: no check: set check (an argv naming {{staged}}), a kind with a built-in "
                          f"checker ({checked}), or check: none to go live unvalidated")
    return target


def _parse_check(value: Any) -> tuple[str, ...]:
    """The checker's argv, or `none`: an explicit choice to apply this target unvalidated."""
    return () if value == "none" else _argv_with_placeholders(value)


def _runtime(chosen: bool | None, target: Target, path: str) -> bool:
    """The kind decides the default from the target's vars (haproxy: on when they name its stats
    socket); `runtime: true` for a kind without a runtime API is an error."""
    default = lb_kind(target.kind).runtime_default
    if chosen is None:
        return default is not None and default(target.vars)
    if chosen and default is None:
        with_api = ", ".join(name for name in kind_names() if lb_kind(name).runtime_default is not None)
        raise ConfigError(f"{path}.runtime: only {with_api} targets have a runtime API (kind is {target.kind})")
    return chosen


def _parse_name(value: Any) -> str:
    name = expect_str(value)
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"{quote(name)}: must match {NAME_RE.pattern}")
    return name


def _parse_kind(value: Any) -> str:
    if value not in kind_names():
        raise ValueError(f"expected one of {', '.join(kind_names())}, got {quote(value)}")
    return str(value)


def _argv_with_placeholders(value: Any) -> tuple[str, ...]:
    argv = expect_str_list(value)
    if not argv:
        raise ValueError("expected a non-empty list of strings (an argv, not a shell line)")
    for arg in argv:
        for name in _PLACEHOLDER_RE.findall(arg):
            if name not in PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{name}}} in {quote(arg)} (known: {{staged}}, {{dest}})")
    return argv


def _parse_mode(value: Any) -> int:
    """The digits are octal as `chmod` reads them, quoted or not: `644`, `0644`, `"0644"`, `0o644`.
    (YAML 1.1 alone would read `644` as decimal, mode 1204, and `0644` as octal.)"""
    if isinstance(value, int) and not isinstance(value, (bool, SourceInt)):
        return _check_mode(value)  # from Python, not YAML: the number is the mode
    text = value.text if isinstance(value, SourceInt) else value if isinstance(value, str) else None
    if text is None or not re.fullmatch(r"(0o?)?[0-7]{3,4}", text):
        raise ValueError(f'expected an octal mode like 0644, got {quote(value)}')
    return _check_mode(int(text.removeprefix("0o"), 8))


def _check_mode(mode: int) -> int:
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode {mode:o} is out of range")
    return mode


def _parse_account(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    name = expect_str(value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?", name):
        raise ValueError(f"{quote(name)}: not a user or group name")
    return name


def _parse_vars(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{quote(key)}: variable names are identifiers (letters, digits, _)")
    return MappingProxyType(dict(value))

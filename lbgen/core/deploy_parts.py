"""Parts of a deploy service spec with their own parsers: env, mounts, logs and the health check.

`${PORT}` (and `${BIND}`, on a host with a bind address) in argv lists are replaced per replica, so
images without a shell can still be told where to listen.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from lbgen.core.bounded import quote
from lbgen.core.deploy_checks import argv, boolean, duration, host_path, int_in
from lbgen.core.fields import Section, expect_list
from lbgen.errors import ConfigError

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class HealthCheck(msgspec.Struct, frozen=True):
    """A Docker HEALTHCHECK: `test` in Engine form (`CMD ...`, `CMD-SHELL ...` or `NONE`)."""

    test: tuple[str, ...]
    interval: float = 5.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 0.0

    def to_engine(self, port: int, bind: str = "") -> dict[str, object]:
        """The Engine API HealthConfig (durations in ns), `${PORT}` (and `${BIND}`) replaced."""
        ns = 1_000_000_000
        return {
            "Test": list(with_port(self.test, port, bind)),
            "Interval": int(self.interval * ns),
            "Timeout": int(self.timeout * ns),
            "Retries": self.retries,
            "StartPeriod": int(self.start_period * ns),
        }


def with_port(args: tuple[str, ...], port: int, bind: str = "") -> tuple[str, ...]:
    """`args` with `${PORT}` replaced by the replica's port, and `${BIND}` by its host's bind
    address when the host has one (for images without a shell)."""
    replaced = tuple(a.replace("${PORT}", str(port)) for a in args)
    return tuple(a.replace("${BIND}", bind) for a in replaced) if bind else replaced


def parse_env(path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of NAME: value, got {type(value).__name__}")
    env = {}
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise ConfigError(f"{path}.{name}: expected an env name like LOG_LEVEL")
        if name == "PORT":
            raise ConfigError(f"{path}.PORT: set by lbgen to each replica's port; remove it")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(f"{path}.{name}: expected a string or number, got {quote(item)}")
        env[name] = str(item)
    return dict(sorted(env.items()))


def _volume(value: Any) -> tuple[str, str, bool]:
    """`/host:/container` or `/host:/container:ro|rw`."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"expected /host/path:/container/path[:ro|rw], got {quote(value)}")
    return host_path(parts[0]), host_path(parts[1]), parts[2:] == ["ro"]


def parse_volumes(path: str, value: Any) -> tuple[tuple[str, str, bool], ...]:
    volumes = []
    for i, item in enumerate(expect_list(value)):
        try:
            volumes.append(_volume(item))
        except ValueError as e:
            raise ConfigError(f"{path}[{i}]: {e}") from e
    return tuple(volumes)


def parse_logs(path: str, value: Any) -> tuple[str, str]:
    fields = Section(value, path)
    logs = (fields.take("host", host_path), fields.take("container", host_path))
    fields.done()
    return logs


def parse_healthcheck(path: str, value: Any) -> HealthCheck:
    fields = Section(value, path)
    if fields.take("disable", boolean, False):
        fields.done()
        return HealthCheck(("NONE",))
    check = HealthCheck(
        fields.take("cmd", _cmd),
        interval=fields.take("interval", duration, 5.0),
        timeout=fields.take("timeout", duration, 3.0),
        retries=fields.take("retries", int_in(1, 100), 3),
        start_period=fields.take("start_period", duration, 0.0),
    )
    fields.done()
    return check


def _cmd(value: Any) -> tuple[str, ...]:
    """A list runs as argv (`CMD`), a string through the container's shell (`CMD-SHELL`)."""
    if isinstance(value, str) and value.strip():
        return ("CMD-SHELL", value)
    return ("CMD",) + argv(value)

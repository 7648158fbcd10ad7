"""Watcher settings (`lbgen.yaml`): the values. Loading and validation build these from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from lbgen.core.model import DEFAULT_SERVED_HEALTH


@dataclass(frozen=True)
class Wait:
    """Quiescence: render once changes stop for `min` seconds, or at the latest `max` after the first."""

    min: float
    max: float


@dataclass(frozen=True)
class Target:
    """One rendered file and how to make it live.

    `check`, `reload` and `verify` are argv lists; `{staged}` in `check` is replaced by the path of
    the candidate file. `kind` (`nginx`, `haproxy` or `generic`) selects how the whole config is
    validated and how a reload is verified.
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
    vars: Mapping[str, Any] = field(default_factory=dict)
    wait: Wait | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class Settings:
    """Everything `lbgen watch` and `lbgen render` need, validated."""

    registry: tuple[str, ...]
    targets: tuple[Target, ...]
    prefix: str = "/lbgen"
    wait: Wait = Wait(0.1, 1.0)
    served_health: frozenset[str] = DEFAULT_SERVED_HEALTH

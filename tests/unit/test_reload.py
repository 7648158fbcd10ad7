"""What a SIGHUP may change in a running watcher (lbgen.core.reload)."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from lbgen.core.registry_url import RegistryUrl
from lbgen.core.reload import reloaded
from lbgen.core.settings import EtcdOptions, Guard, Settings, Target, Wait
from lbgen.errors import ConfigError

RUNNING = Settings(registry=RegistryUrl("file", path="/srv/registry.yaml"), prefix="/lbgen",
                   targets=(Target(name="a", template="a.j2", dest="/a"), Target(name="b", template="b.j2", dest="/b")))


def test_targets_wait_health_and_guard_change_at_once() -> None:
    new = replace(RUNNING, wait=Wait(1, 2), guard=Guard(max_drop=0.1), served_health=frozenset({"healthy"}),
                  targets=(replace(RUNNING.targets[1], template="c.j2", render_timeout=2.0), RUNNING.targets[0]))
    settings, pending = reloaded(RUNNING, new)
    assert settings == new and pending == []


def test_registry_prefix_and_etcd_wait_for_a_restart() -> None:
    new = replace(RUNNING, registry=RegistryUrl("etcd", endpoints=(("127.0.0.1", 2379),)), prefix="/other",
                  etcd=EtcdOptions(timeout=1.0), wait=Wait(1, 2))
    settings, pending = reloaded(RUNNING, new)
    assert (settings.registry, settings.prefix, settings.etcd, settings.wait) == (
        RUNNING.registry, "/lbgen", RUNNING.etcd, Wait(1, 2))
    assert pending == [f"{name}: changed in the file, takes effect at the next restart"
                       for name in ("registry", "prefix", "etcd")]


@pytest.mark.parametrize("targets", [(RUNNING.targets[0],), RUNNING.targets + (replace(RUNNING.targets[0], name="c"),)],
                         ids=["removed", "added"])
def test_adding_or_removing_a_target_is_refused(targets: tuple[Target, ...]) -> None:
    with pytest.raises(ConfigError, match=r"^targets: adding or removing a target needs a restart \(running: a, b"):
        reloaded(RUNNING, replace(RUNNING, targets=targets))

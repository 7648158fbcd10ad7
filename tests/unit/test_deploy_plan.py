"""Deploy plans: which replica is created, recreated, kept or removed, on which port, in which batch."""

from __future__ import annotations

from typing import Any

import pytest

from lbgen.core.deploy_plan import DeployPlan, plan_deploy, plan_removal
from lbgen.errors import ConfigError
from tests.unit.deploy_fakes import deployed, make_spec

OLD = make_spec(env={"VERSION": "1"})
STALE = {"lbgen.deploy.config-hash": "0ld"}


def _batches(plan: DeployPlan) -> list[list[tuple[str, str, int, int]]]:
    """Each batch as (action, replica, old port, new port)."""
    return [
        [(s.action, s.subject, s.old.port if s.old else 0, s.port) for s in batch.steps] for batch in plan.batches
    ]


def _three_running(**kwargs: Any) -> list:
    return [deployed(OLD, r, 18080 + r, **kwargs) for r in (1, 2, 3)]


CASES: list[tuple[str, dict[str, Any], list, list]] = [
    ("first deploy", {}, [],
     [[("create", "web.1", 0, 18081)], [("create", "web.2", 0, 18082)], [("create", "web.3", 0, 18083)]]),
    ("first deploy, parallelism 2", {"update": {"parallelism": 2}}, [],
     [[("create", "web.1", 0, 18081), ("create", "web.2", 0, 18082)], [("create", "web.3", 0, 18083)]]),
    ("unchanged", {}, _three_running(), []),
    ("env change, start-first walks the spare port", {"env": {"VERSION": "2"}}, _three_running(),
     [[("recreate", "web.1", 18081, 18084)], [("recreate", "web.2", 18082, 18081)],
      [("recreate", "web.3", 18083, 18082)]]),
    ("env change, stop-first reuses ports", {"env": {"VERSION": "2"}, "update": {"order": "stop-first"}},
     _three_running(),
     [[("recreate", "web.1", 18081, 18081)], [("recreate", "web.2", 18082, 18082)],
      [("recreate", "web.3", 18083, 18083)]]),
    ("start-first, parallelism 2", {"env": {"VERSION": "2"}, "update": {"parallelism": 2}}, _three_running(),
     [[("recreate", "web.1", 18081, 18084), ("recreate", "web.2", 18082, 18085)],
      [("recreate", "web.3", 18083, 18081)]]),
    ("scale up keeps the others", {"replicas": 5}, _three_running(),
     [[("create", "web.4", 0, 18084)], [("create", "web.5", 0, 18085)]]),
    ("scale down removes the highest", {"replicas": 1}, _three_running(),
     [[("remove", "web.2", 18082, 0), ("remove", "web.3", 18083, 0)]]),
    ("exited container is recreated", {}, [*_three_running()[:2], deployed(OLD, 3, 18083, state="exited")],
     [[("recreate", "web.3", 18083, 18084)]]),
    ("duplicate replica: keep the one in sync", {},
     [*_three_running(), deployed(OLD, 1, 18084, labels=STALE)], [[("remove", "web.1", 18084, 0)]]),
    ("port outside the pool", {}, [*_three_running()[:2], deployed(OLD, 3, 18099)],
     [[("recreate", "web.3", 18099, 18083)]]),
    ("label without hash", {}, _three_running(labels={"lbgen.deploy.config-hash": ""}),
     [[("recreate", "web.1", 18081, 18084)], [("recreate", "web.2", 18082, 18081)],
      [("recreate", "web.3", 18083, 18082)]]),
]


@pytest.mark.parametrize("web, containers, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(web: dict[str, Any], containers: list, expected: list) -> None:
    spec = make_spec(**{"env": {"VERSION": "1"}, **web})
    plan = plan_deploy(spec, containers)
    assert _batches(plan) == expected
    assert plan.changes is bool(expected)


def test_unchanged_spec_keeps_everything() -> None:
    plan = plan_deploy(OLD, _three_running())
    assert [(s.action, s.subject) for s in plan.untouched] == [("keep", "web.1"), ("keep", "web.2"), ("keep", "web.3")]
    assert plan.lines()[0] == "project demo: 0 to create, 0 to recreate, 0 to remove, 3 unchanged"


def test_new_containers_carry_the_new_config() -> None:
    new = make_spec(env={"VERSION": "2"})
    step = plan_deploy(new, _three_running()).steps[0]
    assert step.new is not None and step.new.env["VERSION"] == "2"
    assert step.new.name == "demo-web-1-p18084"
    assert step.new.labels["lbgen.deploy.config-hash"] == new.services[0].config_hash()
    assert step.reason.startswith("config changed (")


def test_orphans_are_kept_unless_asked() -> None:
    orphans = [deployed(OLD, 1, 19001, labels={"lbgen.service": "api"})]
    plan = plan_deploy(OLD, [*_three_running(), *orphans])
    assert [(s.action, s.subject) for s in plan.untouched][-1] == ("orphan", "api.1")
    assert not plan.changes
    removing = plan_deploy(OLD, [*_three_running(), *orphans], remove_orphans=True)
    assert _batches(removing) == [[("remove", "api.1", 19001, 0)]]


def test_only_limits_the_plan_to_named_services() -> None:
    assert plan_deploy(make_spec(), [], only=["api"]).batches == ()


def test_exhausted_pool_is_an_error_before_anything_runs() -> None:
    new = make_spec(env={"VERSION": "2"}, ports="18081-18084")
    leftovers = [*_three_running(), deployed(OLD, 4, 18084, state="exited")]  # holds the only spare
    with pytest.raises(ConfigError, match=r"services.web: no free port in 18081-18084 for web.1"):
        plan_deploy(new, leftovers)


def test_printed_plan_shows_batches_and_moves() -> None:
    lines = plan_deploy(make_spec(env={"VERSION": "2"}), _three_running()).lines()
    assert lines[0] == "project demo: 0 to create, 3 to recreate, 0 to remove, 0 unchanged"
    assert lines[1] == "  batch 1 (web, start-first):"
    assert lines[2].split() [:5] == ["recreate", "web.1", "demo-web-1-p18081", "→", "demo-web-1-p18084"]


def test_removal_takes_every_container_in_one_batch_without_min_healthy() -> None:
    plan = plan_removal(OLD, _three_running())
    assert _batches(plan) == [[("remove", "web.1", 18081, 0), ("remove", "web.2", 18082, 0),
                               ("remove", "web.3", 18083, 0)]]
    assert plan.batches[0].policy.min_healthy == 0
    assert plan_removal(OLD, _three_running(), only=["api"]).batches == ()

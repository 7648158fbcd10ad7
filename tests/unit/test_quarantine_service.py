"""lbgen.services.quarantine with a fake renderer and checker: the resolution it hands the watcher,
and the log lines and metrics of `Quarantines.settle`."""

from __future__ import annotations

import logging

import pytest

from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.settings import Target
from lbgen.errors import CommandFailed, TemplateError
from lbgen.services.quarantine import Quarantines, search
from lbgen.services.watcher_metrics import WatcherMetrics

TARGET = Target(name="nginx", template="t.j2", dest="/unused")


def svc(name: str, address: str = "127.0.0.1") -> Service:
    return Service(name, {"listen": 80}, (Endpoint("e", address, 80),))


APPLIED = Catalog(1, (svc("api"), svc("web")))
NEW = Catalog(2, (svc("api", "api.example"), svc("new", "no-such-host.invalid"), svc("web", "no-such-host.invalid")))


def render(catalog: Catalog) -> str:
    return "".join(f"{s.name}={s.all_endpoints[0].address};" for s in catalog.services)


def check(target: Target, text: str) -> CommandFailed | None:
    if "no-such-host" not in text:
        return None
    line = f'2026/12/03 15:58:30 [emerg] 7#7: host not found in upstream "no-such-host.invalid:80" in /e/.n.conf.ab12cd34.lbgen:{text.index("no-such")}'
    return CommandFailed(["nginx", "-t"], 1, line + "\nnginx: configuration file test failed\n")


def test_search_holds_the_refused_services_and_renders_the_rest() -> None:
    resolution = search(TARGET, NEW, APPLIED, render, check, "refused")
    assert resolution is not None
    assert resolution.text == "api=api.example;web=127.0.0.1;", "web at its last state, new left out"
    assert resolution.catalog.revision == 2 and [s.name for s in resolution.catalog.services] == ["api", "web"]
    assert set(resolution.held) == {"new", "web"}
    assert all(r.startswith('[emerg] host not found in upstream "no-such-host.invalid:80" in /e/n.conf (candidate):')
               for r in resolution.held.values()), resolution.held


def test_search_counts_a_render_error_as_a_refusal_and_none_when_tied_to_no_service() -> None:
    def broken(catalog: Catalog) -> str:
        raise TemplateError("t.j2:3: UndefinedError: 'vars' has no attribute 'x'")

    assert search(TARGET, NEW, APPLIED, broken, check, "refused") is None


def test_settle_logs_one_line_per_start_and_end_and_sets_the_gauges(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    metrics = WatcherMetrics()
    quarantines = Quarantines(check, metrics)
    quarantines.settle("nginx", {"web": "[emerg] host not found"}, Catalog(5, (svc("web"),)))
    quarantines.settle("nginx", {"web": "[emerg] host not found", "new": "[emerg] x"}, Catalog(6, (svc("web"),)))
    sample = metrics.registry.get_sample_value
    assert sample("lbgen_watcher_quarantined_services", {"target": "nginx"}) == 2
    assert quarantines.held("nginx") == {"web": "[emerg] host not found", "new": "[emerg] x"}
    quarantines.settle("nginx", {}, Catalog(7))
    assert sample("lbgen_watcher_quarantined_services", {"target": "nginx"}) == 0
    assert quarantines.held("nginx") == {}
    assert [r.getMessage() for r in caplog.records] == [
        "nginx: service web quarantined at revision 5, kept at its last applied state: [emerg] host not found",
        "nginx: service new quarantined at revision 6, left out of the config (never applied since this "
        "watcher started): [emerg] x",
        "nginx: service new released from quarantine at revision 7 (the checker accepts it)",
        "nginx: service web released from quarantine at revision 7 (the checker accepts it)",
    ]

"""HAProxy's live slots (issue 13): matched again only for the services that changed, with the
same result as matching every service, as the catalog and the live file change."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from lbgen.adapters.kinds.haproxy.live_slots import LiveSlots
from lbgen.core.kinds.haproxy.slots import previous_slots
from lbgen.core.render import render
from lbgen.core.settings import Target
from tests.unit.fragment_cases import catalog_of, catalogs, changes, shipped


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_previous_slots_equal_a_whole_match_of_the_live_file(tmp_path: Path, data: st.DataObject) -> None:
    dest = tmp_path / "haproxy.cfg"
    dest.unlink(missing_ok=True)
    target = Target(name="h", template="h.j2", dest=str(dest), kind="haproxy", vars={"min_slots": 2})
    live, services = LiveSlots(), data.draw(catalogs())
    for revision in range(1, data.draw(st.integers(2, 6))):
        catalog = catalog_of(services, revision)
        expected = previous_slots(dest.read_text() if dest.exists() else "", catalog)
        assert live.context(target, catalog) == {"previous_slots": expected}
        if data.draw(st.booleans()):  # this render went live
            dest.write_text(render(shipped("haproxy"), catalog, target, kind_context={"previous_slots": expected}))
        services = data.draw(changes(services))

"""What the bounded renderer tells its worker per render (issue 13): only what the worker does not
hold. The parent's side (`_Handle.request`) and the worker's (`Worker`, its catalog) are run here
without a process: every catalog the worker rebuilds equals the parent's, unchanged services stay
the same objects, and nothing unchanged is sent."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings, strategies as st

from lbgen.adapters.bounded_render import _Handle
from lbgen.adapters.render_wire import CatalogDelta, Request, encode_request
from lbgen.adapters.render_worker import Worker
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.settings import Target

TARGET = Target(name="t", template="t.j2", dest="/dev/null", kind="generic")


def service(name: str, port: int = 80) -> Service:
    return Service(name, {"listen": 80}, (Endpoint("e", "10.0.0.1", port),))


def pair(first: Catalog) -> tuple[_Handle, Worker]:
    """A handle and a worker as a fork leaves them: both hold `first`."""
    handle, worker = _Handle(0, -1, -1), Worker(None, True)
    handle.forked(first)
    handle.record("source", TARGET, DEFAULT_SERVED_HEALTH, None)
    worker._take(first)
    return handle, worker


def sent(handle: _Handle, worker: Worker, catalog: Catalog, **job: object) -> Request:
    """The request for `catalog`, through pickle, taken in by the worker."""
    request = handle.request(str(job.get("source", "source")), catalog, job.get("target", TARGET),  # type: ignore[arg-type]
                             job.get("served_health", DEFAULT_SERVED_HEALTH), job.get("last"))  # type: ignore[arg-type]
    data = encode_request(request)
    read: Request = pickle.loads(data[8:])
    worker._take(read.catalog)
    return read


def test_the_same_catalog_target_and_source_send_nothing_but_the_name() -> None:
    first = Catalog(1, (service("a"), service("b")))
    handle, worker = pair(first)
    assert sent(handle, worker, first) == Request("t")


def test_a_changed_service_is_sent_alone_and_the_others_stay_the_same_objects() -> None:
    a, b = service("a"), service("b")
    handle, worker = pair(Catalog(1, (a, b)))
    changed = service("b", 81)
    request = sent(handle, worker, Catalog(2, (a, changed)))
    assert request.catalog == CatalogDelta(2, (changed,), (), None)
    assert worker._catalog == Catalog(2, (a, changed)) and worker._catalog.services[0] is a


@pytest.mark.parametrize("names", [("a", "c"), ("c", "a", "b"), ("a", "b", "c", "d"), ()],
                         ids=["removed", "reordered", "added", "emptied"])
def test_removed_added_and_reordered_services_send_the_new_order(names: tuple[str, ...]) -> None:
    known = {n: service(n) for n in "abc"}
    handle, worker = pair(Catalog(1, tuple(known.values())))
    now = Catalog(2, tuple(known.get(n) or service(n) for n in names))
    request = sent(handle, worker, now)
    assert isinstance(request.catalog, CatalogDelta) and request.catalog.order == names
    assert request.catalog.removed == tuple(n for n in "abc" if n not in names)
    assert worker._catalog == now


def test_a_catalog_with_a_name_twice_is_sent_whole() -> None:
    handle, worker = pair(Catalog(1, (service("a"),)))
    twice = Catalog(2, (service("a"), service("a", 81)))
    assert sent(handle, worker, twice).catalog == twice
    assert worker._catalog == twice
    after = Catalog(3, (service("a", 82),))
    sent(handle, worker, after)
    assert worker._catalog == after


def test_a_new_target_source_or_served_health_is_sent_once() -> None:
    first = Catalog(1, (service("a"),))
    handle, worker = pair(first)
    other = Target(name="t", template="t.j2", dest="/dev/null", kind="generic", vars={"x": 1})
    served = frozenset({"healthy"})
    request = sent(handle, worker, first, target=other, source="new", served_health=served)
    assert (request.target, request.source, request.served_health) == (other, "new", served)
    assert sent(handle, worker, first, target=other, source="new", served_health=served) == Request("t")


def test_the_last_text_goes_to_a_worker_that_did_not_render_it() -> None:
    first = Catalog(1, (service("a"),))
    handle, worker = pair(first)
    assert sent(handle, worker, first, last=(7, "by another worker")).rendered == "by another worker"
    assert sent(handle, worker, first, last=(7, "by another worker")).rendered is None  # told once


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(80, 82)), max_size=6), min_size=1,
                max_size=6))
def test_any_sequence_of_catalogs_arrives_as_the_parent_has_it(steps: list[list[tuple[str, int]]]) -> None:
    cache: dict[tuple[str, int], Service] = {}  # an unchanged service is the same object, as the reducer keeps it
    catalogs = [Catalog(n, tuple(cache.setdefault(k, service(*k)) for k in step)) for n, step in enumerate(steps)]
    handle, worker = pair(catalogs[0])
    for now in catalogs[1:]:
        sent(handle, worker, now)
        assert worker._catalog == now

"""The dashboard's service parts with fakes: the hub (fan-out, replay, bounds), the feed on a
`MemoryStore` (document, changes, outage and recovery), the route table (token, Host, JSON API)
and the static page (no inline script, no HTML insertion, no other origin)."""

from __future__ import annotations

import configparser
import fnmatch
import json
import queue
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from lbgen.cli import main
from lbgen.core.overview import build_overview, status_document
from lbgen.core.web import SSE_HEARTBEAT, Request
from lbgen.adapters.memory_store import MemoryStore
from lbgen.services.dashboard.feed import FleetFeed
from lbgen.services.dashboard.hub import EventStream, Hub
from lbgen.services.dashboard.routes import STATIC, dashboard_routes
from tests.support.util import wait_until

P = "/lbgen"
WALL = 1_800_000_000.0
LOCAL = {"host": "127.0.0.1:9200"}
ENDPOINT = b'{"address": "127.0.0.1", "port": 8080, "node": "host-a", "health": "healthy"}'


class Reader:
    """Reads an event stream on a thread; `next(event)` waits for the next event of that name."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.items: queue.Queue[bytes | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.stream:
                self.items.put(frame)
        finally:
            self.items.put(None)

    def next(self, event: str, where: Callable[[Any], bool] = lambda data: True) -> Any:
        while True:
            frame = self.items.get(timeout=10)
            assert frame is not None, f"the stream ended before a {event!r} event"
            match = re.fullmatch(rb"event: (\w+)\ndata: (.*)\n\n", frame, re.S)
            if match and match[1].decode() == event and where(data := json.loads(match[2])):
                return data

    def ended(self) -> bool:
        self.thread.join(timeout=10)
        return not self.thread.is_alive()


# --- the hub -------------------------------------------------------------------------------------


def test_a_new_stream_starts_with_every_slots_latest_event() -> None:
    hub = Hub()
    hub.publish("status", "status", {"revision": 1})
    hub.publish("status", "status", {"revision": 2})
    hub.publish("connection", "connected", {})
    reader = Reader(hub.subscribe())
    assert reader.next("status") == {"revision": 2}
    assert reader.next("connected") == {}
    hub.publish("connection", "disconnected", {"error": "x"})
    assert reader.next("disconnected") == {"error": "x"}
    hub.close()
    assert reader.ended()


def test_the_number_of_streams_is_bounded_and_a_closed_one_frees_its_place() -> None:
    hub = Hub(max_clients=2)
    first, second = hub.subscribe(), hub.subscribe()
    assert first is not None and second is not None
    assert hub.subscribe() is None
    first.close()
    assert hub.clients == 1 and hub.subscribe() is not None


def test_a_stream_that_falls_behind_is_ended_and_dropped() -> None:
    hub = Hub(backlog=3)
    stream = hub.subscribe()
    assert stream is not None
    for n in range(5):
        hub.publish("status", "status", n)
    assert hub.clients == 0
    assert list(stream) == [b"retry: 2000\n\n"]  # the backlog was cleared: the browser reconnects


def test_an_idle_stream_sends_heartbeats() -> None:
    hub = Hub(heartbeat=0.01)
    stream = iter(hub.subscribe())
    assert next(stream).startswith(b"retry:")
    assert next(stream) == SSE_HEARTBEAT


def test_a_closed_hub_accepts_no_stream() -> None:
    hub = Hub()
    hub.close()
    assert hub.subscribe() is None


# --- the feed ------------------------------------------------------------------------------------


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.put(f"{P}/services/web/spec", b'{"listen": 80}')
    store.put(f"{P}/services/web/endpoints/host-a.web.1", ENDPOINT)
    return store


@pytest.fixture
def hub() -> Iterator[Hub]:
    hub = Hub()
    yield hub
    hub.close()


@pytest.fixture
def feed(store: MemoryStore, hub: Hub) -> Iterator[FleetFeed]:
    feed = FleetFeed(store, P, "memory:", hub, wall=lambda: WALL, retry=lambda attempt: 0.01)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    yield feed
    feed.stop()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the feed did not stop"


def services(document: dict) -> list[str]:
    return [s["name"] for s in document["services"]]


def test_the_document_is_lbgen_status_of_the_registry(store: MemoryStore, hub: Hub, feed: FleetFeed) -> None:
    reader = Reader(hub.subscribe())
    published = reader.next("status")
    expected = status_document("memory:", build_overview(P, store.snapshot(f"{P}/")), WALL)
    assert published == expected == feed.document()
    assert reader.next("connected")["revision"] == store.revision
    # the first snapshot's keys seed the recent changes, newest first, seen "before start"
    assert [(c["key"], c["time"]) for c in feed.changes()] == [
        (f"{P}/services/web/endpoints/host-a.web.1", None), (f"{P}/services/web/spec", None)]


def test_a_put_anywhere_under_the_prefix_is_pushed_with_its_change(store: MemoryStore, hub: Hub, feed: FleetFeed) -> None:
    reader = Reader(hub.subscribe())
    reader.next("connected")
    revision = store.put(f"{P}/services/api/endpoints/host-b.api.1", ENDPOINT.replace(b"host-a", b"host-b"))
    changes = reader.next("changes", lambda d: d[0]["revision"] == revision)
    assert changes[0] == {"key": f"{P}/services/api/endpoints/host-b.api.1", "kind": "put",
                          "revision": revision, "time": WALL}
    assert services(reader.next("status", lambda d: d["revision"] == revision)) == ["api", "web"]
    marker = store.put(f"{P}/drain/host-a.web.1", b"{}")
    document = reader.next("status", lambda d: d["revision"] == marker)
    assert document["services"][1]["endpoints"][0]["draining"] is True


def test_an_outage_is_pushed_and_the_recovery_too(store: MemoryStore, hub: Hub, feed: FleetFeed) -> None:
    reader = Reader(hub.subscribe())
    reader.next("connected")
    store.set_available(False)
    lost = reader.next("disconnected")
    assert (lost["connected"], lost["since"], lost["revision"]) == (False, WALL, store.revision)
    assert feed.problems() and feed.problems()[0].startswith("registry: ")
    assert services(feed.document() or {}) == ["web"]  # the last known fleet is still shown
    store.set_available(True)
    reader.next("connected")
    assert feed.problems() == []
    assert store.delete(f"{P}/services/web/endpoints/host-a.web.1")
    revision = store.revision
    assert reader.next("status", lambda d: d["revision"] == revision)["services"][0]["endpoints"] == []


def test_refresh_pushes_the_document_again_with_its_ages_counting(store: MemoryStore, hub: Hub) -> None:
    store.put(f"{P}/lb/lb-1", json.dumps({"revision": 1, "updated_at": WALL - 2}).encode())
    now = [WALL]
    feed = FleetFeed(store, P, "memory:", hub, wall=lambda: now[0])
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    try:
        reader = Reader(hub.subscribe())
        assert reader.next("status")["lb_nodes"][0]["age"] == 2.0
        now[0] += 5
        feed.refresh()
        assert reader.next("status")["lb_nodes"][0]["age"] == 7.0
    finally:
        feed.stop()
        thread.join(timeout=10)


def test_stop_ends_the_feed_while_the_registry_is_down(store: MemoryStore, hub: Hub) -> None:
    store.set_available(False)
    feed = FleetFeed(store, P, "memory:", hub, retry=lambda attempt: 60.0)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    wait_until(lambda: feed.problems() != ["registry: not connected yet"], 10, "the first failure")
    feed.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert feed.document() is None


# --- the routes ----------------------------------------------------------------------------------


def call(routes: dict, path: str, headers: dict | None = None, **query: str) -> Any:
    return routes[path](Request("GET", path, query, {**LOCAL, **(headers or {})}))


def test_the_json_api_serves_the_feeds_document(feed: FleetFeed, hub: Hub) -> None:
    routes = dashboard_routes(feed, hub, None)
    wait_until(feed.document, 10, "the first snapshot")
    response = call(routes, "/api/status")
    assert response.status == 200 and response.content_type == "application/json"
    assert json.loads(response.body) == feed.document()
    changes = json.loads(call(routes, "/api/changes").body)
    assert (changes["connected"], len(changes["changes"])) == (True, 2)
    assert call(routes, "/healthz").status == 200


def test_before_the_first_snapshot_the_api_and_health_say_why(store: MemoryStore, hub: Hub) -> None:
    feed = FleetFeed(store, P, "memory:", hub)
    routes = dashboard_routes(feed, hub, None)
    assert call(routes, "/api/status").status == 503
    assert call(routes, "/healthz").body == b"registry: not connected yet\n"


def test_with_a_token_only_the_data_needs_it(feed: FleetFeed, hub: Hub) -> None:
    routes = dashboard_routes(feed, hub, "s3cret")
    wait_until(feed.document, 10, "the first snapshot")
    for path in ("/api/status", "/api/changes", "/events"):
        assert call(routes, path).status == 401, path
        assert call(routes, path, token="nope").status == 401, path
    assert call(routes, "/api/status", {"authorization": "Bearer s3cret"}).status == 200
    response = call(routes, "/events", token="s3cret")
    assert response.status == 200 and response.content_type.startswith("text/event-stream")
    response.stream.close()
    for path in STATIC:  # the page and its files hold no data
        assert call(routes, path, {"host": "dash.example:9200"}).status == 200


def test_without_a_token_a_foreign_host_name_is_refused(feed: FleetFeed, hub: Hub) -> None:
    routes = dashboard_routes(feed, hub, None)
    for path in routes:
        assert call(routes, path, {"host": "rebound.attacker.example"}).status == 421, path


def test_events_beyond_the_bound_are_refused(feed: FleetFeed) -> None:
    hub = Hub(max_clients=1)
    routes = dashboard_routes(feed, hub, None)
    first = call(routes, "/events")
    assert call(routes, "/events").status == 503
    first.stream.close()
    assert call(routes, "/events").status == 200


# --- the page ------------------------------------------------------------------------------------


def static(name: str) -> str:
    return resources.files("lbgen.services.dashboard").joinpath("static", name).read_text()


def test_the_page_has_no_inline_script_no_inline_style_and_no_other_origin() -> None:
    html = static("index.html")
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="static/dashboard.js" defer>']
    assert not re.search(r"\son\w+\s*=|\sstyle\s*=|<style", html, re.I)
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", static(name), re.I), name


def test_the_script_never_inserts_html() -> None:
    script = static("dashboard.js")
    forbidden = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\s*['\"]on"
    assert not re.search(forbidden, script)
    assert "textContent" in script and ".append(" in script


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "off"], "--listen 'off': the dashboard needs an address"),
    (["--listen", "localhost:9200"], "--listen 'localhost:9200': expected IP:PORT"),
    (["--token", "a", "--token-file", "t"], "--token and --token-file: give one of them"),
    (["--token-file", "/nonexistent/token"], "--token-file /nonexistent/token: "),
    (["--token", "  "], "the dashboard token is empty"),
], ids=["off", "name", "both tokens", "missing file", "empty token"])
def test_bad_options_exit_2_with_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    assert main(["dashboard", "--registry", f"file:{tmp_path}/r.yaml", *args]) == 2
    assert capsys.readouterr().err.startswith(f"Error: {message}")


def test_every_static_file_is_served_and_installed() -> None:
    folder = Path(str(resources.files("lbgen.services.dashboard").joinpath("static")))
    files = sorted(p.name for p in folder.iterdir())
    assert sorted(name for name, _ in STATIC.values()) == files
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    patterns = [p.strip() for p in setup["options.package_data"]["lbgen.services.dashboard"].split(",")]
    assert all(any(fnmatch.fnmatch(f"static/{name}", p) for p in patterns) for name in files), patterns

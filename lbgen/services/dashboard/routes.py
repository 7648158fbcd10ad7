"""The dashboard's route table: the page, its static files, the JSON API, the event stream, health.

Only the data needs the token (`/api/*`, `/events`): the page and its script and style hold no
data, and a browser fetches them without one. Without a token, every route answers only requests
whose `Host` is an IP literal or `localhost` (another site's page cannot read it through DNS
rebinding). Values from the registry are hostile: the page inserts each one as text, and the
Content-Security-Policy allows no inline script, no other origin and no framing.
"""

from __future__ import annotations

from importlib import resources

from lbgen.core.web import Request, Response, Route, json_response, require_local_host, require_token, text
from lbgen.services.dashboard.feed import FleetFeed
from lbgen.services.dashboard.hub import Hub
from lbgen.services.metrics import health_route

# On every answer of the dashboard's server.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the page's address may carry ?token=
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}

STATIC = {  # path → (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


def dashboard_routes(feed: FleetFeed, hub: Hub, token: str | None) -> dict[str, Route]:
    """Every route of `lbgen dashboard`; the data ones need `token` when one is given."""
    data = {"/api/status": status_route(feed), "/api/changes": changes_route(feed), "/events": events_route(hub)}
    if token:
        data = {path: require_token(route, token) for path, route in data.items()}
    routes = {**static_routes(), **data, "/healthz": health_route(feed.problems)}
    if not token:
        routes = {path: require_local_host(route) for path, route in routes.items()}
    return routes


def static_routes() -> dict[str, Route]:
    """The page and its files, read once from the package."""
    folder = resources.files(__package__).joinpath("static")
    return {path: _static(folder.joinpath(name).read_bytes(), kind) for path, (name, kind) in STATIC.items()}


def _static(body: bytes, content_type: str) -> Route:
    response = Response(200, body, content_type, {"Cache-Control": "no-cache"})
    return lambda request: response


def status_route(feed: FleetFeed) -> Route:
    """`/api/status`: the `lbgen status --json` document; 503 until the registry was read once."""

    def status(request: Request) -> Response:
        document = feed.document()
        if document is None:
            return json_response({"error": f"no registry snapshot yet: {feed.connection()['error']}"}, 503)
        return json_response(document)

    return status


def changes_route(feed: FleetFeed) -> Route:
    """`/api/changes`: the registry connection and the recent changes, newest first."""
    return lambda request: json_response({**feed.connection(), "changes": feed.changes()})


def events_route(hub: Hub) -> Route:
    """`/events`: a stream of server-sent events (`status`, `changes`, `connected`, `disconnected`)."""

    def events(request: Request) -> Response:
        stream = hub.subscribe()
        if stream is None:
            return text(503, f"too many dashboard clients (at most {hub.max_clients}); retry later",
                        {"Retry-After": "10"})
        return Response(200, content_type="text/event-stream; charset=utf-8", stream=stream,
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return events


"""The fleet dashboard (`lbgen dashboard`): a read-only page of the whole fleet, live.

- `feed.FleetFeed` follows the registry (snapshot + watch on the whole prefix), recomputes the
  `lbgen status --json` document after each change and remembers the recent changes;
- `hub.Hub` fans its events out to the browsers' event streams (server-sent events), bounded;
- `routes.dashboard_routes` is the route table: the page and its static files, the JSON API
  (`/api/status`, `/api/changes`), the event stream (`/events`) and `/healthz`.

The CLI puts the routes on lbgen's one HTTP server (`lbgen.adapters.http_server`).
"""

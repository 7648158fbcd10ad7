"""Prometheus metrics and a health check, as routes of lbgen's HTTP server (`lbgen.core.web`).

`GET /metrics` serves a `CollectorRegistry`; `GET /healthz` answers 200 `ok` or 503 with one line
per problem that the health check reports (e.g. "etcd: connection refused"). The CLI puts these
routes, and any others (the dashboard), on one `lbgen.adapters.http_server`.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from lbgen.core.web import Request, Response, Route, text

HealthCheck = Callable[[], Iterable[str]]


class Health:
    """Named components, each up or down with a reason; thread-safe, read by `/healthz`."""

    def __init__(self, *components: str) -> None:
        self._lock = threading.Lock()
        self._problems = {name: "not connected yet" for name in components}

    def up(self, component: str) -> None:
        with self._lock:
            self._problems[component] = ""

    def down(self, component: str, reason: str) -> None:
        with self._lock:
            self._problems[component] = reason

    def is_up(self, component: str) -> bool:
        with self._lock:
            return not self._problems.get(component)

    def problems(self) -> list[str]:
        """One `component: reason` line per component that is down."""
        with self._lock:
            return [f"{name}: {reason}" for name, reason in sorted(self._problems.items()) if reason]


def health_route(check: HealthCheck) -> Route:
    """`/healthz`: 200 `ok`, or 503 with one line per problem."""

    def healthz(request: Request) -> Response:
        problems = list(check())
        return text(503, "\n".join(problems)) if problems else text(200, "ok")

    return healthz


def metrics_route(registry: CollectorRegistry) -> Route:
    """`/metrics`: the registry in the exposition format the scraper asks for (`Accept`)."""

    def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, encode(registry), content_type)

    return metrics


def metrics_routes(registry: CollectorRegistry, check: HealthCheck) -> dict[str, Route]:
    """The routes every lbgen daemon serves: `/metrics` and `/healthz`."""
    return {"/metrics": metrics_route(registry), "/healthz": health_route(check)}

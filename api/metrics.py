"""Prometheus metrics (``vigil_api_*``) in a registry owned by one app instance.

A registry per app rather than the global one: tests and the benchmark build many apps
in one process, and the global registry refuses duplicate metric names.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vigil_api_requests_total", "HTTP requests answered",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "vigil_api_request_duration_seconds", "Time to answer a request",
            ["method", "route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.commands = Counter(
            "vigil_api_commands_published_total", "Commands published to Kafka",
            ["command"], registry=self.registry,
        )
        self.config_events = Counter(
            "vigil_api_config_events_published_total", "Config events published to Kafka",
            ["event"], registry=self.registry,
        )
        self.access_records = Counter(
            "vigil_api_access_records_total",
            "Requests put on the access record (api/access.py), by outcome",
            ["outcome"], registry=self.registry,
        )
        self.access_records_failed = Counter(
            "vigil_api_access_records_failed_total",
            "Access records the broker did not accept (each also logged as an error)",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "vigil_api_rate_limited_total", "Requests refused by the per-key rate limit",
            registry=self.registry,
        )
        self.stream_subscribers = Gauge(
            "vigil_api_stream_subscribers", "Open live alert streams", registry=self.registry,
        )
        self.in_flight = Gauge(
            "vigil_api_requests_in_flight", "Requests being answered", registry=self.registry,
        )


class MetricsMiddleware:
    """Counts and times every request by its route template (never the raw path, whose
    ids would explode label cardinality).

    The template is read after the request from the endpoint the router recorded in
    the scope, instead of matching every route's regex again on each request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: list) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._paths = {getattr(r, "endpoint", None): getattr(r, "path", "other")
                       for r in routes}

    def _template(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is not None and endpoint in self._paths:
            return self._paths[endpoint]
        for route in self.routes:  # the router did not get that far (e.g. 413)
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = self._template(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)

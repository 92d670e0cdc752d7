"""The app factory: everything the API needs comes in as arguments.

`create_app(settings, db_engine, producer)` is what `vigil api serve`, the tests and the
benchmark all build, so what is tested is what runs. Nothing here reads the environment
except through the settings objects handed in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from api import (
    access,
    alerts,
    cameras,
    config_routes,
    detections,
    events,
    evidence,
    health,
    notifications,
    recordings,
    reports,
    search,
    stream,
    system,
)
from api.access_log import AccessLogMiddleware
from api.auth import KeyStore
from api.console import pages as console_pages
from api.deps import Deps
from api.errors import EXCEPTION_HANDLERS
from api.limits import BodySizeLimitMiddleware
from api.metrics import ApiMetrics, MetricsMiddleware
from api.openapi import build_openapi
from api.publisher import Publisher
from api.routing import Endpoint, to_route
from api.settings import ApiSettings, load_api_settings
from api.users import LoginPolicy, UserStore
from schemas.producer import EventProducer
from schemas.read_model import get_read_model_settings
from vigil.ratelimit import RateLimiter
from vigil.settings import Settings

log = logging.getLogger(__name__)


def all_endpoints() -> list[Endpoint]:
    """Every endpoint, in matching order (the stream before ``/alerts/{alert_id}``)."""
    return [
        *health.ROUTES,
        *stream.ROUTES,
        *alerts.ROUTES,
        *cameras.ROUTES,
        *events.ROUTES,
        *evidence.ROUTES,
        *recordings.ROUTES,
        *search.ROUTES,
        *detections.ROUTES,
        *config_routes.ROUTES,
        *notifications.ROUTES,
        *reports.ROUTES,
        *system.ROUTES,
        *access.routes(),
    ]


def create_app(
    settings: Settings,
    db_engine: Engine,
    producer: EventProducer,
    *,
    api_settings: ApiSettings | None = None,
    read_schema: str | None = None,
    object_store: Any = None,
    embed_image: Callable[[bytes], Awaitable[list[float]]] | None = None,
    triton_probe: Callable[[], Awaitable[str | None]] | None = None,
    create_key_table: bool = True,
) -> Starlette:
    """Build the API.

    `db_engine` reaches the read models (in `read_schema`, by default the projector's
    ``VIGIL_PROJECTOR_SCHEMA``) and the API's own key table; `producer` publishes
    commands and config events. `object_store` (a ``minio.Minio``) presigns snapshot
    URLs; `embed_image` turns an uploaded image into an appearance vector (Triton), and
    without it image search answers 503.
    """
    api = api_settings or load_api_settings()
    read_model = get_read_model_settings()
    schema = read_schema or read_model.schema_name
    metrics = ApiMetrics()
    keys = KeyStore(db_engine, api.keys_schema, cache_s=api.key_cache_s)
    users = UserStore(db_engine, api.keys_schema, session_ttl_s=api.session_ttl_s,
                      idle_timeout_s=api.session_idle_s,
                      policy=LoginPolicy(slow_after=api.login_slow_after,
                                         max_failures=api.login_max_failures,
                                         lockout_s=api.login_lockout_s))
    if create_key_table:
        keys.ensure_schema()
        users.ensure_schema()
    deps = Deps(
        settings=settings, api=api, engine=db_engine, read_schema=schema,
        publisher=Publisher(producer), keys=keys,
        limiter=RateLimiter(api.rate_limit_per_s, api.rate_limit_burst),
        anon_limiter=RateLimiter(api.anon_rate_limit_per_s, api.anon_rate_limit_burst),
        metrics=metrics, object_store=object_store, embed_image=embed_image,
        users=users, embedding_retention_h=read_model.embedding_retention_h,
    )
    deps.extra["access"] = access.AccessRecorder(producer, metrics.access_records_failed)
    if triton_probe is not None:
        deps.extra["triton_probe"] = triton_probe
    hub = stream.AlertHub(deps)
    deps.extra["hub"] = hub

    endpoints = all_endpoints()
    routes: list[BaseRoute] = [to_route(ep) for ep in endpoints]
    routes += console_pages.routes()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await deps.publisher.start()
        try:
            yield
        finally:
            await hub.stop()
            await deps.publisher.stop()

    middleware = [Middleware(AccessLogMiddleware),
                  Middleware(MetricsMiddleware, metrics=metrics, routes=routes),
                  Middleware(BodySizeLimitMiddleware, max_bytes=api.max_body_bytes)]
    if api.cors_origins:
        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=api.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        ))
    app = Starlette(
        routes=routes, middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.deps = deps
    app.state.endpoints = endpoints
    app.state.openapi = build_openapi(endpoints)
    return app

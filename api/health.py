"""Health: `/health` is static (a load balancer may hit it every second), `/health/ready`
probes each dependency with its own timeout and reports each one, `/health/deep` adds
the read model's freshness and Triton."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

import anyio.to_thread
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.deps import Deps, deps_of
from api.routing import Endpoint
from schemas.tables import projector_offsets


class Check(BaseModel):
    status: Literal["ok", "fail", "skipped"]
    latency_ms: float
    detail: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "fail"]


class ReadyOut(BaseModel):
    status: Literal["ok", "fail"]
    checks: dict[str, Check]


async def _timed(probe: Callable[[], Awaitable[str | None]], timeout: float) -> Check:
    start = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe(), timeout)
        return Check(status="ok", latency_ms=(time.perf_counter() - start) * 1e3,
                     detail=detail)
    except TimeoutError:
        return Check(status="fail", latency_ms=(time.perf_counter() - start) * 1e3,
                     detail=f"no answer within {timeout:g} s")
    except Exception as exc:  # a probe reports, it never raises
        return Check(status="fail", latency_ms=(time.perf_counter() - start) * 1e3,
                     detail=f"{type(exc).__name__}: {str(exc)[:200]}")


def _probes(deps: Deps) -> dict[str, Callable[[], Awaitable[str | None]]]:
    async def postgres() -> str | None:
        def q() -> None:
            with deps.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        await anyio.to_thread.run_sync(q, abandon_on_cancel=True)
        return None

    async def kafka() -> str | None:
        producer = deps.publisher.producer.producer

        def q() -> str:
            md = producer.list_topics(timeout=deps.api.ready_timeout_s)
            return f"{len(md.brokers)} broker(s)"
        return await anyio.to_thread.run_sync(q, abandon_on_cancel=True)

    async def object_store() -> str | None:
        if deps.object_store is None:
            raise RuntimeError("not configured")
        bucket = deps.settings.bucket_snapshots

        def q() -> str:
            return "bucket present" if deps.object_store.bucket_exists(bucket) else (
                "bucket missing")
        return await anyio.to_thread.run_sync(q, abandon_on_cancel=True)

    return {"postgres": postgres, "kafka": kafka, "object_store": object_store}


async def _run(checks: dict[str, Callable[[], Awaitable[str | None]]], timeout: float
               ) -> dict[str, Check]:
    results = await asyncio.gather(*(_timed(p, timeout) for p in checks.values()))
    return dict(zip(checks, results, strict=True))


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def health_ready(request: Request) -> Response:
    deps = deps_of(request)
    checks = await _run(_probes(deps), deps.api.ready_timeout_s)
    ok = all(c.status == "ok" for c in checks.values())
    out = ReadyOut(status="ok" if ok else "fail", checks=checks)
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if ok else 503)


async def health_deep(request: Request) -> Response:
    deps = deps_of(request)
    probes = _probes(deps)

    async def read_model() -> str | None:
        stmt = sa.select(sa.func.max(projector_offsets.c.updated_at))
        last = await deps.read(lambda conn: conn.execute(stmt).scalar())
        if last is None:
            return "projector has not written yet"
        age = (datetime.now(UTC) - last).total_seconds()
        return f"last projector commit {age:.1f} s ago"

    async def triton() -> str | None:
        probe = deps.extra.get("triton_probe")
        if probe is None:
            raise RuntimeError("not configured")
        return await probe()  # type: ignore[no-any-return]

    probes["read_model"] = read_model
    probes["triton"] = triton
    checks = await _run(probes, deps.api.ready_timeout_s)
    required = ("postgres", "kafka", "object_store", "read_model")
    ok = all(checks[name].status == "ok" for name in required)
    out = ReadyOut(status="ok" if ok else "fail", checks=checks)
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    registry = deps_of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


ROUTES: list[Endpoint] = [
    Endpoint("GET", "/health", health, "Liveness: static, no dependency touched",
             permission=None, responses={200: HealthOut}, tag="health"),
    Endpoint("GET", "/health/ready", health_ready,
             "Readiness: PostgreSQL, Kafka, object store, each with its own timeout",
             permission=None, responses={200: ReadyOut, 503: ReadyOut}, tag="health"),
    Endpoint("GET", "/health/deep", health_deep,
             "Readiness plus read-model freshness and Triton",
             permission=None, responses={200: ReadyOut, 503: ReadyOut}, tag="health"),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics (vigil_api_*)",
             permission=None, responses={200: None}, tag="health",
             media_type="text/plain"),
    Endpoint("GET", "/openapi.json", openapi_json, "This document",
             permission=None, responses={200: None}, tag="health"),
]


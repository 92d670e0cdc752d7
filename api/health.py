"""Health: `/health` is static (a load balancer may hit it every second), `/health/ready`
probes each dependency with its own timeout and reports each one, `/health/deep` adds
the read model's freshness and Triton."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from schemas.read_model import get_read_model_settings
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
    #: the parts that failed (deep health only), so a 503 names them up front
    failed: list[str] | None = None


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


def _watermarks(deps: Deps, topics: set[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, high) watermark of every partition of `topics`, through one consumer the app
    keeps for it (never subscribed, it only asks for offsets)."""
    from confluent_kafka import Consumer, TopicPartition

    from vigil.kafka import consumer_config

    consumer = deps.extra.get("watermark_consumer")
    if consumer is None:
        # never subscribed, but librdkafka still asks for its group's coordinator: the
        # group is under the API principal's own prefix (tools/devstack/kafka_security.py)
        consumer = Consumer(consumer_config(
            f"{deps.settings.topic_prefix}-api-health",
            **{"bootstrap.servers": deps.settings.kafka_bootstrap}))
        deps.extra["watermark_consumer"] = consumer
    timeout = deps.api.ready_timeout_s
    out = {}
    for topic in sorted(topics):
        md = consumer.list_topics(topic, timeout=timeout).topics[topic]
        for p in md.partitions:
            out[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                             timeout=timeout)
    return out


@dataclass(frozen=True)
class ProjectorLag:
    """How far the live projector is behind the end of the log it folds."""

    consumer: str
    partitions: int
    #: (topic, partition) -> events not yet projected (only partitions that are behind)
    behind: dict[tuple[str, int], int]
    last_commit_at: datetime


async def projector_lag(deps: Deps) -> ProjectorLag | None:
    """The projector's lag from its committed offsets and Kafka's watermarks; None when it
    has never committed. Used by the deep health check and the console's System page."""
    t = projector_offsets.c
    stmt = sa.select(t.consumer, t.topic, t.partition, t.next_offset, t.updated_at)
    every = await deps.read(lambda conn: conn.execute(stmt).all())
    if not every:
        return None
    # the live projector's rows (VIGIL_PROJECTOR_CONSUMER), else the latest writer's
    names = {r.consumer for r in every}
    live = get_read_model_settings().consumer
    if live not in names:
        live = max(every, key=lambda r: r.updated_at).consumer
    rows = {(r.topic, r.partition): r for r in every if r.consumer == live}
    marks = await anyio.to_thread.run_sync(
        lambda: _watermarks(deps, {tp[0] for tp in rows}), abandon_on_cancel=True)
    # a partition never committed counts from its log start
    behind = {tp: high - (rows[tp].next_offset if tp in rows else low)
              for tp, (low, high) in marks.items()}
    return ProjectorLag(consumer=live, partitions=len(marks),
                        behind={tp: n for tp, n in behind.items() if n > 0},
                        last_commit_at=max(r.updated_at for r in rows.values()))


async def health_deep(request: Request) -> Response:
    """Readiness plus Triton and the read model's freshness; 503 names the failing part.

    The read model is stale when Kafka holds events the projector has not committed and
    its last commit is older than ``VIGIL_PROJECTOR_READ_MODEL_STALE_S``: an idle system
    is fresh however long ago the last event was, a stuck projector is not.
    """
    deps = deps_of(request)
    probes = _probes(deps)
    limit = get_read_model_settings().read_model_stale_s

    async def read_model() -> str | None:
        lag = await projector_lag(deps)
        if lag is None:  # a fresh install: nothing projected, nothing missed
            return "projector has not committed yet"
        if not lag.behind:
            return f"caught up on {lag.partitions} partition(s)"
        age = (datetime.now(UTC) - lag.last_commit_at).total_seconds()
        pending = sum(lag.behind.values())
        detail = (f"{pending} event(s) not projected on {len(lag.behind)} partition(s), "
                  f"last projector commit {age:.0f} s ago")
        if age > limit:
            raise RuntimeError(f"stale: {detail} (limit {limit:g} s)")
        return detail

    async def triton() -> str | None:
        probe = deps.extra.get("triton_probe")
        if probe is None:
            raise RuntimeError("not configured")
        return await probe()

    probes["read_model"] = read_model
    probes["triton"] = triton
    checks = await _run(probes, deps.api.ready_timeout_s)
    failed = [name for name, c in checks.items() if c.status != "ok"]
    out = ReadyOut(status="fail" if failed else "ok", checks=checks, failed=failed)
    return JSONResponse(out.model_dump(mode="json", exclude_none=True),
                        status_code=503 if failed else 200)


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
             "Readiness plus read-model freshness and Triton; 503 lists the failed parts",
             permission=None, responses={200: ReadyOut, 503: ReadyOut}, tag="health"),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics (vigil_api_*)",
             permission=None, responses={200: None}, tag="health",
             media_type="text/plain"),
    Endpoint("GET", "/openapi.json", openapi_json, "This document",
             permission=None, responses={200: None}, tag="health"),
]


"""What the on-call operator checks besides edges and streams: inference latency and
degraded state, how far the projector is behind, and what it could not fold.

One read route (``GET /api/v1/system``), which the console's System page embeds and
refreshes. Everything comes from the read model plus Kafka's watermarks:

- inference: per camera, the analysed frames of the window with the p50 / p95 / max of
  `inference_ms` (from ``frame_analyses``), and per inference worker whether its last
  health event says degraded (``health_events``: InferenceDegraded / InferenceRecovered);
- projector lag: events in Kafka the projector has not committed (the deep health
  check's computation, api/health.py); Kafka not answering is reported, not raised;
- dead letters: how many messages the projector dead-lettered, and the newest few.

Scope: per-camera figures follow the caller's sites. Workers, lag and dead letters are
about the whole deployment (a dead letter's reason may name any site's camera), so a
site-scoped caller gets ``null`` for them and a note saying why.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.common import json_response, site_filter
from api.deps import deps_of
from api.health import projector_lag
from api.routing import Endpoint
from schemas.tables import cameras, frame_analyses, health_events, projector_dead_letters
from vigil.redact import redact

log = logging.getLogger(__name__)

NEWEST_DEAD_LETTERS = 20


class SystemQuery(BaseModel):
    window_s: int = Field(900, ge=60, le=86_400,
                          description="inference figures over the last window_s seconds")


class CameraInference(BaseModel):
    camera_id: str
    site_id: str | None
    frames: int
    skipped: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    last_analysed_at: datetime | None


class WorkerInference(BaseModel):
    worker_id: str
    state: Literal["degraded", "ok"]
    since: datetime
    reason: str | None


class InferenceOut(BaseModel):
    window_s: int
    cameras: list[CameraInference]
    #: null for a site-scoped caller (workers serve every site)
    workers: list[WorkerInference] | None


class PartitionLag(BaseModel):
    topic: str
    partition: int
    behind: int


class LagOut(BaseModel):
    status: Literal["ok", "behind", "not_started", "unknown"]
    detail: str
    consumer: str | None = None
    total_behind: int | None = None
    last_commit_at: datetime | None = None
    partitions: list[PartitionLag] = Field(default_factory=list)


class DeadLetterOut(BaseModel):
    topic: str
    partition: int
    offset: int
    reason: str
    dead_lettered_at: datetime


class DeadLettersOut(BaseModel):
    total: int
    newest: list[DeadLetterOut]


class SystemOut(BaseModel):
    generated_at: datetime
    inference: InferenceOut
    projector_lag: LagOut | None
    dead_letters: DeadLettersOut | None
    note: str | None = None


async def _inference(request: Request, since: datetime, window_s: int) -> InferenceOut:
    principal = principal_of(request)
    fa = frame_analyses.c
    ms = fa.inference_ms
    live = sa.not_(fa.skipped)
    stmt = (sa.select(
        fa.camera_id, cameras.c.site_id, sa.func.count().label("frames"),
        sa.func.count().filter(fa.skipped).label("skipped"),
        sa.func.percentile_cont(0.5).within_group(ms).filter(live).label("p50_ms"),
        sa.func.percentile_cont(0.95).within_group(ms).filter(live).label("p95_ms"),
        sa.func.max(ms).filter(live).label("max_ms"),
        sa.func.max(fa.occurred_at).label("last_analysed_at"))
        .select_from(frame_analyses.join(cameras, cameras.c.camera_id == fa.camera_id))
        .where(fa.occurred_at >= since, site_filter(principal, cameras.c.site_id))
        .group_by(fa.camera_id, cameras.c.site_id).order_by(fa.camera_id))
    he = health_events.c
    workers_stmt = (sa.select(he.worker_id, he.event_type, he.occurred_at, he.reason)
                    .where(he.event_type.in_(("InferenceDegraded", "InferenceRecovered")),
                           he.worker_id.is_not(None))
                    .distinct(he.worker_id)
                    .order_by(he.worker_id, he.occurred_at.desc(), he.event_id.desc()))
    scoped = principal.sites is not None

    def load(conn: sa.Connection) -> tuple[list[Any], list[Any]]:
        cams = conn.execute(stmt).all()
        return cams, ([] if scoped else conn.execute(workers_stmt).all())

    cams, workers = await deps_of(request).read(load)
    return InferenceOut(
        window_s=window_s,
        cameras=[CameraInference.model_validate(r._mapping) for r in cams],
        workers=None if scoped else [
            WorkerInference(worker_id=w.worker_id,
                            state="degraded" if w.event_type == "InferenceDegraded" else "ok",
                            since=w.occurred_at, reason=redact(w.reason) if w.reason else None)
            for w in workers])


async def _lag(request: Request) -> LagOut:
    deps = deps_of(request)
    try:
        lag = await asyncio.wait_for(projector_lag(deps), deps.api.ready_timeout_s * 2)
    except Exception as exc:  # Kafka away: the page says so instead of failing
        log.warning("projector lag unavailable", extra={"reason": str(exc)[:200]})
        return LagOut(status="unknown",
                      detail=f"Kafka's offsets could not be read: {type(exc).__name__}")
    if lag is None:
        return LagOut(status="not_started", detail="the projector has not committed yet")
    total = sum(lag.behind.values())
    parts = [PartitionLag(topic=t, partition=p, behind=n)
             for (t, p), n in sorted(lag.behind.items())]
    return LagOut(status="behind" if total else "ok",
                  detail=(f"{total} event(s) not projected on {len(parts)} of "
                          f"{lag.partitions} partition(s)") if total else
                  f"caught up on {lag.partitions} partition(s)",
                  consumer=lag.consumer, total_behind=total,
                  last_commit_at=lag.last_commit_at, partitions=parts)


async def _dead_letters(request: Request) -> DeadLettersOut:
    t = projector_dead_letters.c

    def load(conn: sa.Connection) -> tuple[int, list[Any]]:
        total = conn.execute(sa.select(sa.func.count()).select_from(
            projector_dead_letters)).scalar_one()
        rows = conn.execute(sa.select(projector_dead_letters)
                            .order_by(t.dead_lettered_at.desc(), t.topic, t.partition,
                                      t.offset.desc())
                            .limit(NEWEST_DEAD_LETTERS)).all()
        return int(total), rows

    total, rows = await deps_of(request).read(load)
    return DeadLettersOut(total=total, newest=[
        DeadLetterOut(topic=r.topic, partition=r.partition, offset=r.offset,
                      reason=redact(r.reason)[:500], dead_lettered_at=r.dead_lettered_at)
        for r in rows])


async def system_status(request: Request, query: SystemQuery) -> Response:
    principal = principal_of(request)
    now = datetime.now(UTC)
    inference = await _inference(request, now - timedelta(seconds=query.window_s),
                                 query.window_s)
    if principal.sites is not None:
        return json_response(SystemOut(
            generated_at=now, inference=inference, projector_lag=None, dead_letters=None,
            note="projector lag, dead letters and inference workers concern every site: "
                 "they are shown to users who are not limited to sites"))
    lag, dead = await asyncio.gather(_lag(request), _dead_letters(request))
    return json_response(SystemOut(generated_at=now, inference=inference,
                                   projector_lag=lag, dead_letters=dead))


ROUTES = [
    Endpoint("GET", "/api/v1/system", system_status,
             "Inference latency per camera and worker state, projector lag, dead letters "
             "(deployment-wide parts only for callers not limited to sites)",
             query=SystemQuery, responses={200: SystemOut}, tag="system"),
]

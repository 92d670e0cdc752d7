"""Detections (one box of one analysed frame), newest first: what the console's Explore
page shows as people to start an appearance search from ("find similar").

Only the box, label, score, camera and time leave the API (never an embedding); the
picture is the console's cropped thumbnail (`/console/detections/{id}/thumbnail`), which
checks the site scope the same way. Erased detections are never listed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal, principal_of
from api.common import check_id, check_range, json_response, page_size, site_filter
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from schemas.tables import cameras, detections, frames

MAX_CAMERAS = 50


class DetectionQuery(BaseModel):
    camera: list[str] | None = Field(None, description="repeatable")
    label: str | None = Field("person", max_length=64, description="empty: every label")
    searchable: bool = Field(True, description="only detections with an appearance "
                                               "embedding (those 'find similar' can use)")
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(48, ge=1)


class DetectionOut(BaseModel):
    detection_id: str
    camera_id: str
    site_id: str | None
    occurred_at: datetime
    frame_sequence: int
    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    searchable: bool


class DetectionList(BaseModel):
    items: list[DetectionOut]


_FROM = detections.join(cameras, cameras.c.camera_id == detections.c.camera_id)
_COLS = [detections.c[n] for n in DetectionOut.model_fields
         if n not in ("site_id", "searchable")]


async def list_detections(request: Request, query: DetectionQuery) -> Response:
    check_range(query.since, query.until)
    if query.camera and (len(query.camera) > MAX_CAMERAS
                         or any(len(c) > 200 for c in query.camera)):
        raise ApiError(422, f"at most {MAX_CAMERAS} camera ids of at most 200 characters")
    principal = principal_of(request)
    limit = page_size(request, query.limit)
    d = detections.c
    stmt = (sa.select(*_COLS, cameras.c.site_id, d.has_embedding.label("searchable"))
            .select_from(_FROM)
            .where(sa.not_(d.erased), site_filter(principal, cameras.c.site_id)))
    if query.camera:
        stmt = stmt.where(d.camera_id.in_(query.camera))
    if query.label:
        stmt = stmt.where(d.label == query.label)
    if query.searchable:
        stmt = stmt.where(d.has_embedding)
    if query.since:
        stmt = stmt.where(d.occurred_at >= query.since)
    if query.until:
        stmt = stmt.where(d.occurred_at < query.until)
    stmt = stmt.order_by(d.occurred_at.desc(), d.detection_id).limit(limit)
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    return json_response(DetectionList(items=[DetectionOut.model_validate(r._mapping)
                                              for r in rows]))


async def detection_frame(request: Request, principal: Principal, detection_id: str
                          ) -> sa.Row[Any] | None:
    """A visible, not erased detection with its frame's stored picture ref (None when
    another site's, erased, unknown, or its frame was never stored)."""
    check_id(detection_id, "detection")
    d = detections.c
    stmt = (sa.select(d.detection_id, d.camera_id, d.x1, d.y1, d.x2, d.y2,
                      frames.c.object_ref, frames.c.width, frames.c.height)
            .select_from(_FROM.join(frames, frames.c.event_id == d.frame_event_id))
            .where(d.detection_id == detection_id, sa.not_(d.erased),
                   site_filter(principal, cameras.c.site_id))
            .order_by(d.occurred_at.desc()).limit(1))
    return await deps_of(request).read(lambda conn: conn.execute(stmt).first())


ROUTES = [
    Endpoint("GET", "/api/v1/detections", list_detections,
             "Detections (boxes) newest first, by default people that appearance search "
             "can start from; no embeddings", query=DetectionQuery,
             responses={200: DetectionList}, tag="search", personal_data=True),
]

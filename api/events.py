"""Scene events (zone entries, rule hits, tracks, ...) with keyset pagination.

Pages are ordered by (occurred_at, event_id) descending and the cursor carries the last
row's pair, so a page is one index range scan however deep the client pages, and rows
inserted meanwhile never shift a page (unlike OFFSET).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.common import (
    Page,
    PageQuery,
    check_id,
    check_range,
    decode_cursor,
    encode_cursor,
    json_response,
    page_size,
    presign,
    site_filter,
)
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from projections.tables import cameras, scene_events

EventType = Literal["ZoneEntered", "ZoneExited", "LineCrossed", "RuleTriggered",
                    "RuleCleared", "TrackSummary"]


class EventOut(BaseModel):
    event_id: str
    event_type: str
    occurred_at: datetime
    camera_id: str
    site_id: str | None
    zone_id: str | None
    line_id: str | None
    track_id: str | None
    rule_id: str | None
    rule_type: str | None
    severity: str | None


class EventDetail(EventOut):
    causation_id: str | None
    correlation_id: str | None
    payload: dict[str, Any]
    snapshot_url: str | None = Field(None, description="presigned, expires quickly")


class EventPage(Page):
    items: list[EventOut]


class EventQuery(PageQuery):
    camera: list[str] | None = Field(None, description="repeatable")
    type: list[EventType] | None = Field(None, description="repeatable")
    since: datetime | None = Field(None, description="at or after (ISO 8601)")
    until: datetime | None = Field(None, description="before (ISO 8601)")


_FROM = scene_events.outerjoin(cameras, cameras.c.camera_id == scene_events.c.camera_id)
_COLS = [scene_events.c[n] for n in EventOut.model_fields if n != "site_id"]


async def list_events(request: Request, query: EventQuery) -> Response:
    principal = principal_of(request)
    check_range(query.since, query.until)
    if query.camera and any(len(c) > 200 for c in query.camera):
        raise ApiError(422, "camera ids are at most 200 characters")
    limit = page_size(request, query.limit)
    stmt = (sa.select(*_COLS, cameras.c.site_id).select_from(_FROM)
            .where(site_filter(principal, cameras.c.site_id)))
    if query.camera:
        stmt = stmt.where(scene_events.c.camera_id.in_(query.camera))
    if query.type:
        stmt = stmt.where(scene_events.c.event_type.in_(query.type))
    if query.since:
        stmt = stmt.where(scene_events.c.occurred_at >= query.since)
    if query.until:
        stmt = stmt.where(scene_events.c.occurred_at < query.until)
    if query.cursor:
        at, eid = decode_cursor(query.cursor, (datetime, str))
        stmt = stmt.where(sa.tuple_(scene_events.c.occurred_at, scene_events.c.event_id)
                          < (at, eid))
    stmt = stmt.order_by(scene_events.c.occurred_at.desc(),
                         scene_events.c.event_id.desc()).limit(limit + 1)
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    items = [EventOut.model_validate(r._mapping) for r in rows[:limit]]
    cursor = None
    if len(rows) > limit:
        cursor = encode_cursor(items[-1].occurred_at, items[-1].event_id)
    return json_response(EventPage(items=items, next_cursor=cursor))


async def get_event(request: Request) -> Response:
    event_id = check_id(request.path_params["event_id"], "event")
    principal = principal_of(request)
    stmt = (sa.select(scene_events, cameras.c.site_id).select_from(_FROM)
            .where(scene_events.c.event_id == event_id,
                   site_filter(principal, cameras.c.site_id)))
    row = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if row is None:
        raise ApiError(404, "event not found", details={"event_id": event_id})
    # Only now, after the site-scope check, is a snapshot URL signed.
    ref = (row.payload or {}).get("frame_ref")
    url = await presign(request, ref, deps_of(request).settings.bucket_snapshots)
    data = dict(row._mapping)
    return json_response(EventDetail(**{k: data.get(k) for k in EventDetail.model_fields
                                        if k != "snapshot_url"}, snapshot_url=url))


ROUTES = [
    Endpoint("GET", "/api/v1/events", list_events, "Scene events, filtered, keyset pages",
             query=EventQuery, responses={200: EventPage}, tag="events"),
    Endpoint("GET", "/api/v1/events/{event_id}", get_event,
             "A scene event with a short-lived snapshot URL",
             responses={200: EventDetail}, tag="events"),
]

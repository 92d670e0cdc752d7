"""Scene events (zone entries, rule hits, tracks, ...) with keyset pagination.

Pages are ordered by (occurred_at, event_id) descending and the cursor carries the last
row's pair, so a page is one index range scan however deep the client pages, and rows
inserted meanwhile never shift a page (unlike OFFSET).
"""

from __future__ import annotations

import functools
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
    bound_page,
    bound_sites,
    check_id,
    check_range,
    decode_cursor,
    json_response,
    page_response,
    page_size,
    presign,
    site_filter,
)
from api.deps import deps_of
from api.errors import ApiError
from api.evidence import EvidenceOut, evidence_for
from api.routing import Endpoint
from schemas.tables import TS, cameras, scene_events

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
    #: a RuleTriggered's still evidence (frame, annotated frame, thumbnail)
    evidence: list[EvidenceOut] = Field(default_factory=list)


class EventPage(Page):
    items: list[EventOut]


class EventQuery(PageQuery):
    camera: list[str] | None = Field(None, description="repeatable")
    type: list[EventType] | None = Field(None, description="repeatable")
    zone: str | None = Field(None, max_length=200, description="zone id")
    rule: str | None = Field(None, max_length=200, description="rule id (rule events)")
    since: datetime | None = Field(None, description="at or after (ISO 8601)")
    until: datetime | None = Field(None, description="before (ISO 8601)")


_FROM = scene_events.outerjoin(cameras, cameras.c.camera_id == scene_events.c.camera_id)
_COLS = [scene_events.c[n] for n in EventOut.model_fields if n != "site_id"]


@functools.lru_cache(maxsize=256)
def _list_stmt(scoped: bool, camera: bool, type_: bool, since: bool, until: bool,
               cursor: bool, zone: bool = False, rule: bool = False) -> sa.Select[Any]:
    """The listing for one combination of filters, built once (see `bound_page`)."""
    stmt = sa.select(*_COLS, cameras.c.site_id).select_from(_FROM)
    if scoped:
        stmt = stmt.where(bound_sites(cameras.c.site_id))
    if camera:
        stmt = stmt.where(scene_events.c.camera_id.in_(sa.bindparam("camera",
                                                                    expanding=True)))
    if type_:
        stmt = stmt.where(scene_events.c.event_type.in_(sa.bindparam("type",
                                                                     expanding=True)))
    if zone:
        stmt = stmt.where(scene_events.c.zone_id == sa.bindparam("zone", type_=sa.Text))
    if rule:
        stmt = stmt.where(scene_events.c.rule_id == sa.bindparam("rule", type_=sa.Text))
    if since:
        stmt = stmt.where(scene_events.c.occurred_at >= sa.bindparam("since", type_=TS))
    if until:
        stmt = stmt.where(scene_events.c.occurred_at < sa.bindparam("until", type_=TS))
    if cursor:
        stmt = stmt.where(sa.tuple_(scene_events.c.occurred_at, scene_events.c.event_id)
                          < sa.tuple_(sa.bindparam("c_at", type_=TS),
                                      sa.bindparam("c_id", type_=sa.Text)))
    order = [scene_events.c.occurred_at.desc(), scene_events.c.event_id.desc()]
    return bound_page(stmt, EventOut, order, ("occurred_at", "event_id"))


async def list_events(request: Request, query: EventQuery) -> Response:
    principal = principal_of(request)
    check_range(query.since, query.until)
    if query.camera and any(len(c) > 200 for c in query.camera):
        raise ApiError(422, "camera ids are at most 200 characters")
    limit = page_size(request, query.limit)
    params: dict[str, Any] = {"lim": limit, "lim1": limit + 1}
    if principal.sites is not None:
        params["sites"] = sorted(principal.sites)
    if query.cursor:
        params["c_at"], params["c_id"] = decode_cursor(query.cursor, (datetime, str))
    for name in ("camera", "type", "zone", "rule", "since", "until"):
        value = getattr(query, name)
        if value:
            params[name] = value
    stmt = _list_stmt(principal.sites is not None, bool(query.camera), bool(query.type),
                      bool(query.since), bool(query.until), bool(query.cursor),
                      bool(query.zone), bool(query.rule))
    row = await deps_of(request).read(lambda conn: conn.execute(stmt, params).one())
    return page_response(row, limit)


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
    found = (await evidence_for(request, [row.event_id])
             if row.event_type == "RuleTriggered" else [])
    if url is None and found and not found[0].erased:
        url = found[0].snapshot_url
    return json_response(EventDetail(**{k: data.get(k) for k in EventDetail.model_fields
                                        if k not in ("snapshot_url", "evidence")},
                                     snapshot_url=url, evidence=found))


ROUTES = [
    Endpoint("GET", "/api/v1/events", list_events, "Scene events, filtered, keyset pages",
             query=EventQuery, responses={200: EventPage}, tag="events"),
    Endpoint("GET", "/api/v1/events/{event_id}", get_event,
             "A scene event with a short-lived snapshot URL",
             responses={200: EventDetail}, tag="events", personal_data=True),  # snapshot
]

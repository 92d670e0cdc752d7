"""Cameras and sites, limited to the key's sites."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.common import (
    Page,
    PageQuery,
    check_id,
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
from schemas.tables import cameras, edges, frames, lines, rules, sites, zones
from vigil.redact import redact


class CameraOut(BaseModel):
    camera_id: str
    site_id: str | None
    edge_id: str | None
    name: str | None
    timezone: str | None
    enabled: bool | None
    stream_state: str
    stream_reason: str | None
    stream_changed_at: datetime | None
    last_frame_at: datetime | None
    last_frame_seq: int | None

    @field_validator("stream_reason")
    @classmethod
    def _redacted(cls, v: str | None) -> str | None:
        """Rows are redacted by the projector; this guards a row written before that."""
        return redact(v) if v else v


class ZoneOut(BaseModel):
    zone_id: str
    camera_id: str
    name: str
    kind: str
    polygon: list[dict[str, float]]
    configured_at: datetime


class LineOut(BaseModel):
    line_id: str
    camera_id: str
    name: str
    a: dict[str, float]
    b: dict[str, float]
    configured_at: datetime


class RuleOut(BaseModel):
    rule_id: str
    camera_id: str
    rule_type: str
    zone_id: str | None
    line_id: str | None
    severity: str
    enabled: bool
    schedule: dict[str, Any]
    classes: list[str]
    dwell_s: float
    gap_tolerance_s: float
    min_people: int
    clear_below: int
    window_s: float
    direction: str | None
    #: the rule's own alert policy; null: the site-wide policy applies
    cooldown_s: float | None
    escalation_s: float | None
    max_escalation_level: int | None
    auto_resolve: bool | None
    configured_at: datetime


class LastFrame(BaseModel):
    event_id: str
    sequence: int
    occurred_at: datetime
    width: int
    height: int
    url: str | None = Field(None, description="short-lived presigned URL, when stored")


class CameraDetail(CameraOut):
    zones: list[ZoneOut]
    lines: list[LineOut]
    rules: list[RuleOut]
    last_frame: LastFrame | None


class CameraPage(Page):
    items: list[CameraOut]


class CameraQuery(PageQuery):
    site: str | None = Field(None, max_length=200)


class EdgeOut(BaseModel):
    edge_id: str
    status: str
    version: str | None
    last_heartbeat_at: datetime | None
    offline_since: datetime | None
    spool_backlog: int | None


class SiteOut(BaseModel):
    site_id: str
    last_heartbeat_at: datetime | None
    cameras: int
    edges: list[EdgeOut]


class SiteList(BaseModel):
    items: list[SiteOut]


_CAMERA_COLS = [cameras.c[n] for n in CameraOut.model_fields]


async def list_cameras(request: Request, query: CameraQuery) -> Response:
    principal = principal_of(request)
    limit = page_size(request, query.limit)
    stmt = sa.select(*_CAMERA_COLS).where(
        cameras.c.deleted_at.is_(None), site_filter(principal, cameras.c.site_id)
    )
    if query.site:
        stmt = stmt.where(cameras.c.site_id == query.site)
    if query.cursor:
        (after,) = decode_cursor(query.cursor, (str,))
        stmt = stmt.where(cameras.c.camera_id > after)
    stmt = stmt.order_by(cameras.c.camera_id).limit(limit + 1)
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    items = [CameraOut.model_validate(r._mapping) for r in rows[:limit]]
    cursor = encode_cursor(items[-1].camera_id) if len(rows) > limit else None
    return json_response(CameraPage(items=items, next_cursor=cursor))


async def visible_camera(request: Request, camera_id: str) -> sa.Row[Any]:
    """The camera if it exists, is not deleted and is in the key's sites; else 404."""
    check_id(camera_id, "camera")
    stmt = sa.select(*_CAMERA_COLS).where(
        cameras.c.camera_id == camera_id, cameras.c.deleted_at.is_(None),
        site_filter(principal_of(request), cameras.c.site_id),
    )
    row = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if row is None:
        raise ApiError(404, "camera not found", details={"camera_id": camera_id})
    return row


async def get_camera(request: Request) -> Response:
    row = await visible_camera(request, request.path_params["camera_id"])
    cid = row.camera_id

    def load(conn: sa.Connection) -> tuple[Any, Any, Any, Any]:
        z = conn.execute(
            sa.select(zones).where(zones.c.camera_id == cid, zones.c.deleted_at.is_(None))
            .order_by(zones.c.zone_id)).all()
        ln = conn.execute(
            sa.select(lines).where(lines.c.camera_id == cid, lines.c.deleted_at.is_(None))
            .order_by(lines.c.line_id)).all()
        r = conn.execute(
            sa.select(rules).where(rules.c.camera_id == cid, rules.c.deleted_at.is_(None))
            .order_by(rules.c.rule_id)).all()
        f = conn.execute(
            sa.select(frames).where(frames.c.camera_id == cid)
            .order_by(frames.c.occurred_at.desc()).limit(1)).first()
        return z, ln, r, f

    z, ln, r, f = await deps_of(request).read(load)
    last = None
    if f is not None:
        url = await presign(request, f.object_ref, deps_of(request).settings.bucket_frames)
        last = LastFrame(event_id=f.event_id, sequence=f.sequence, occurred_at=f.occurred_at,
                         width=f.width, height=f.height, url=url)
    detail = CameraDetail(
        **CameraOut.model_validate(row._mapping).model_dump(),
        zones=[ZoneOut.model_validate(x._mapping) for x in z],
        lines=[LineOut.model_validate(x._mapping) for x in ln],
        rules=[RuleOut.model_validate(x._mapping) for x in r],
        last_frame=last,
    )
    return json_response(detail)


async def list_sites(request: Request) -> Response:
    principal = principal_of(request)

    def load(conn: sa.Connection) -> tuple[Any, Any, Any]:
        s = conn.execute(sa.select(sites).where(site_filter(principal, sites.c.site_id))
                         .order_by(sites.c.site_id)).all()
        e = conn.execute(sa.select(edges).where(site_filter(principal, edges.c.site_id))
                         .order_by(edges.c.edge_id)).all()
        c = conn.execute(
            sa.select(cameras.c.site_id, sa.func.count())
            .where(cameras.c.deleted_at.is_(None), site_filter(principal, cameras.c.site_id))
            .group_by(cameras.c.site_id)).all()
        return s, e, c

    s, e, c = await deps_of(request).read(load)
    counts = {site: n for site, n in c}
    by_site: dict[str, list[EdgeOut]] = {}
    for edge in e:
        by_site.setdefault(edge.site_id, []).append(EdgeOut.model_validate(edge._mapping))
    ids = sorted({row.site_id for row in s} | set(by_site) | {k for k in counts if k})
    last = {row.site_id: row.last_heartbeat_at for row in s}
    items = [SiteOut(site_id=sid, last_heartbeat_at=last.get(sid), cameras=counts.get(sid, 0),
                     edges=by_site.get(sid, [])) for sid in ids]
    return json_response(SiteList(items=items))


ROUTES = [
    Endpoint("GET", "/api/v1/cameras", list_cameras, "List cameras with their stream status",
             query=CameraQuery, responses={200: CameraPage}, tag="cameras"),
    Endpoint("GET", "/api/v1/cameras/{camera_id}", get_camera,
             "A camera: status, last frame, zones, lines and rules",
             responses={200: CameraDetail}, tag="cameras",
             personal_data=True),  # the last frame's picture
    Endpoint("GET", "/api/v1/sites", list_sites, "Sites with their edges' status",
             responses={200: SiteList}, tag="cameras"),
]

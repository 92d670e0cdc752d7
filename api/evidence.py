"""An alert's still evidence (EvidenceCaptured, projected into ``evidence``): the frame as
captured, the annotated rendering and the thumbnail, as short-lived presigned URLs.

Alert and event details embed it (`evidence_for`); ``GET /api/v1/evidence/{id}`` serves
one item and answers 410 once an erasure has removed it, so a client holding an id learns
that the pictures are gone for good rather than that they never existed. URLs are signed
only after the site-scope check (an evidence item of another site is a 404, like a
missing one). See docs/evidence.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.common import check_id, json_response, presign, site_filter
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from schemas.tables import cameras, clips, evidence


class EvidenceOut(BaseModel):
    """One rule hit's pictures. URLs are null once erased (and when no store is set)."""

    evidence_id: str
    rule_event_id: str
    camera_id: str
    rule_id: str
    rule_type: str
    frame_event_id: str
    frame_at: datetime
    width: int
    height: int
    track_ids: list[str]
    erased: bool
    snapshot_url: str | None = Field(None, description="the frame as captured; presigned")
    annotated_url: str | None = Field(None, description="boxes, tracks, zone, caption")
    thumbnail_url: str | None = Field(None, description="small JPEG for lists")
    clip_status: Literal["pending", "complete", "partial", "no_recording"] = Field(
        "pending", description="pending until the window's segments are in")
    clip_reason: str = Field("", description="why a clip is partial or missing")
    clip_url: str | None = Field(None, description="MP4 a browser plays; presigned")
    clip_start_at: datetime | None = None
    clip_end_at: datetime | None = None


_COLS = (evidence.c.event_id, evidence.c.rule_event_id, evidence.c.camera_id,
         evidence.c.rule_id, evidence.c.rule_type, evidence.c.frame_event_id,
         evidence.c.frame_at, evidence.c.width, evidence.c.height, evidence.c.track_ids,
         evidence.c.erased, evidence.c.snapshot_ref, evidence.c.annotated_ref,
         evidence.c.thumbnail_ref)


async def _out(request: Request, row: Any) -> EvidenceOut:
    bucket = deps_of(request).settings.bucket_snapshots
    urls: dict[str, Any] = {}
    if not row.erased:
        for name in ("snapshot", "annotated", "thumbnail"):
            urls[f"{name}_url"] = await presign(request, getattr(row, f"{name}_ref"), bucket)
    stmt = (sa.select(clips.c.status, clips.c.reason, clips.c.clip_ref, clips.c.erased,
                      clips.c.clip_start_at, clips.c.clip_end_at)
            .where(clips.c.evidence_id == row.event_id)
            .order_by(clips.c.log_offset.desc()).limit(1))
    clip = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if clip is not None:
        urls.update(clip_status=clip.status, clip_reason=clip.reason,
                    clip_start_at=clip.clip_start_at, clip_end_at=clip.clip_end_at)
        if not (clip.erased or row.erased):
            urls["clip_url"] = await presign(request, clip.clip_ref, bucket)
    return EvidenceOut(
        evidence_id=row.event_id, rule_event_id=row.rule_event_id, camera_id=row.camera_id,
        rule_id=row.rule_id, rule_type=row.rule_type, frame_event_id=row.frame_event_id,
        frame_at=row.frame_at, width=row.width, height=row.height,
        track_ids=list(row.track_ids), erased=row.erased, **urls)


async def evidence_for(request: Request, rule_event_ids: Sequence[str]) -> list[EvidenceOut]:
    """The evidence of these rule hits (call after the caller's own site-scope check)."""
    ids = sorted({i for i in rule_event_ids if i})
    if not ids:
        return []
    stmt = (sa.select(*_COLS).where(evidence.c.rule_event_id.in_(ids))
            .order_by(evidence.c.occurred_at, evidence.c.event_id))
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    return [await _out(request, r) for r in rows]


async def get_evidence(request: Request) -> Response:
    evidence_id = check_id(request.path_params["evidence_id"], "evidence")
    principal = principal_of(request)
    stmt = (sa.select(*_COLS)
            .select_from(evidence.outerjoin(cameras,
                                            cameras.c.camera_id == evidence.c.camera_id))
            .where(evidence.c.event_id == evidence_id,
                   site_filter(principal, cameras.c.site_id)))
    row = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if row is None:
        raise ApiError(404, "evidence not found", details={"evidence_id": evidence_id})
    if row.erased:
        raise ApiError(410, "this evidence was erased (right to erasure) and is gone for good",
                       details={"evidence_id": evidence_id})
    return json_response(await _out(request, row))


ROUTES = [
    Endpoint("GET", "/api/v1/evidence/{evidence_id}", get_evidence,
             "A rule hit's still evidence: frame, annotated frame and thumbnail URLs "
             "(short-lived); 410 once erased",
             responses={200: EvidenceOut}, errors=(410,), tag="evidence",
             personal_data=True),  # snapshots: on the access record (api/access.py)
]

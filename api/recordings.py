"""Recorded video in the API: a camera's segments for a time range, and exports of a range
as one MP4 (docs/evidence.md, "Recordings and exports").

- ``GET /api/v1/cameras/{id}/recordings?from&to``: the segments (span, size, presigned URL)
  and the gaps between them; no video at all in the range is a 404 naming the gap.
- ``POST /api/v1/exports`` (camera, from, to): 202 with the export's state; the MP4 is
  built in the background by `vigil.clip_builder` (the same cut-and-remux as alert
  clips). An export's id is a function of (camera, from, to), so asking twice returns the
  same export instead of building it again. Its state lives next to it in the object
  store (``<topic prefix>/exports/<id>/state.json``), so every API process and a
  restarted one see it; a build that stopped with its process shows as ``failed`` once
  it is stale.
- ``GET /api/v1/exports/{id}``: that state, with a presigned URL once ``done``.

A range over the configured maximum answers 422; site scoping as everywhere (another
site's camera or export is a 404).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.cameras import visible_camera
from api.common import check_id, json_response, presign
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from schemas.events import derived_event_id
from schemas.tables import recordings

log = logging.getLogger(__name__)

#: a gap between two segments shorter than this is jitter, not missing video
GAP_TOLERANCE_S = 1.5
MAX_SEGMENTS = 2000
_EXPORT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: a "running" export not updated for this long was interrupted (its process stopped)
STALE_S = 900.0


class Range(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from", description="start (ISO 8601, with offset)")
    to: datetime = Field(description="end (ISO 8601, with offset)")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.from_.tzinfo is None or self.to.tzinfo is None:
            raise ValueError("from and to need a UTC offset")
        if self.to <= self.from_:
            raise ValueError("to must be after from")
        return self


class SegmentOut(BaseModel):
    segment_id: str
    start_at: datetime
    end_at: datetime
    duration_s: float
    size_bytes: int
    url: str | None = Field(None, description="presigned, expires quickly")


class GapOut(BaseModel):
    start_at: datetime
    end_at: datetime


class RecordingsOut(BaseModel):
    camera_id: str
    start_at: datetime
    end_at: datetime
    segments: list[SegmentOut]
    gaps: list[GapOut]


class ExportBody(Range):
    camera_id: str = Field(min_length=1, max_length=200)


class ExportOut(BaseModel):
    export_id: str
    camera_id: str
    start_at: datetime
    end_at: datetime
    state: Literal["pending", "running", "done", "failed"]
    partial: bool = False
    reason: str = ""
    size_bytes: int = 0
    url: str | None = Field(None, description="the MP4 once done; presigned")


def _check_range(r: Range, max_s: float) -> None:
    span = (r.to - r.from_).total_seconds()
    if span > max_s:
        raise ApiError(422, f"the range is {span:g} s; at most {max_s:g} s are allowed",
                       details={"max_range_s": max_s})


def gaps_of(segs: list[Any], start: datetime, end: datetime) -> list[GapOut]:
    out: list[GapOut] = []
    tol = timedelta(seconds=GAP_TOLERANCE_S)
    at = start
    for s in segs:
        if s.start_at - at > tol:
            out.append(GapOut(start_at=at, end_at=min(s.start_at, end)))
        at = max(at, s.end_at)
    if end - at > tol:
        out.append(GapOut(start_at=at, end_at=end))
    return out


async def _segments(request: Request, camera_id: str, start: datetime, end: datetime
                    ) -> list[Any]:
    stmt = (sa.select(recordings.c.event_id, recordings.c.object_ref, recordings.c.start_at,
                      recordings.c.end_at, recordings.c.size_bytes)
            .where(recordings.c.camera_id == camera_id, recordings.c.end_at > start,
                   recordings.c.start_at < end)
            .order_by(recordings.c.start_at, recordings.c.event_id).limit(MAX_SEGMENTS))
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    # the same segment announced twice (at-least-once) is listed once
    seen: set[tuple[Any, ...]] = set()
    out = []
    for r in rows:
        k = (r.object_ref, r.start_at)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _no_video(camera_id: str, start: datetime, end: datetime) -> ApiError:
    return ApiError(404, f"no video of camera {camera_id} from {start.isoformat()} to "
                         f"{end.isoformat()}",
                    details={"camera_id": camera_id,
                             "gap": {"start_at": start.isoformat(), "end_at": end.isoformat()}})


async def list_recordings(request: Request, query: Range) -> Response:
    cam = await visible_camera(request, request.path_params["camera_id"])
    _check_range(query, deps_of(request).api.recordings_max_range_s)
    segs = await _segments(request, cam.camera_id, query.from_, query.to)
    if not segs:
        raise _no_video(cam.camera_id, query.from_, query.to)
    bucket = deps_of(request).settings.bucket_segments
    items = [SegmentOut(segment_id=s.event_id, start_at=s.start_at, end_at=s.end_at,
                        duration_s=(s.end_at - s.start_at).total_seconds(),
                        size_bytes=s.size_bytes, url=await presign(request, s.object_ref, bucket))
             for s in segs]
    return json_response(RecordingsOut(camera_id=cam.camera_id, start_at=query.from_,
                                       end_at=query.to, segments=items,
                                       gaps=gaps_of(segs, query.from_, query.to)))


# ----------------------------------------------------------------------------- exports
def export_id_for(prefix: str, camera_id: str, start: datetime, end: datetime) -> str:
    """An export's id: a function of the range, under the deployment's topic prefix (which
    also heads its keys, so deployments sharing a bucket never see each other's)."""
    return derived_event_id("export", prefix, camera_id, start.isoformat(), end.isoformat())


def _folder(export_id: str) -> str:
    from vigil.settings import get_settings

    return f"{get_settings().topic_prefix}/exports/{export_id}"


def _state_key(export_id: str) -> str:
    return f"{_folder(export_id)}/state.json"


def _read_state(store: Any, bucket: str, export_id: str) -> dict[str, Any] | None:
    from minio.error import S3Error

    try:
        resp = store.get_object(bucket, _state_key(export_id))
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise
    try:
        return dict(json.loads(resp.read()))
    finally:
        resp.close()
        resp.release_conn()


def _write_state(store: Any, bucket: str, state: dict[str, Any]) -> None:
    data = json.dumps({**state, "updated": time.time()}).encode()
    if not store.bucket_exists(bucket):
        store.make_bucket(bucket)
    store.put_object(bucket, _state_key(state["export_id"]), io.BytesIO(data), len(data),
                     content_type="application/json")


def _build(store: Any, settings: Any, state: dict[str, Any], segs: list[Any]) -> None:
    """The export, in a thread: fetch the segments, cut and remux, store, record."""
    from vigil.clip_builder import Segment, build_clip
    from vigil.objects import get_bytes, split_ref

    bucket = settings.bucket_snapshots
    try:
        _write_state(store, bucket, {**state, "state": "running"})
        data, skipped = [], []
        for s in segs:
            b, k = split_ref(s.object_ref, settings.bucket_segments, settings.buckets)
            try:
                data.append(Segment(s.object_ref, s.start_at, s.end_at, get_bytes(b, k, store)))
            except Exception as exc:
                skipped.append(f"{s.object_ref}: {type(exc).__name__}")
        result = build_clip(data, datetime.fromisoformat(state["start_at"]),
                            datetime.fromisoformat(state["end_at"]))
        skipped += [f"{r}: {why}" for r, why in result.skipped]
        if result.mp4 is None:
            _write_state(store, bucket, {**state, "state": "failed", "partial": True,
                                         "reason": "no playable video in the range; "
                                                   + "; ".join(skipped)[:1500]})
            return
        key = f"{_folder(state['export_id'])}/export.mp4"
        store.put_object(bucket, key, io.BytesIO(result.mp4), len(result.mp4),
                         content_type="video/mp4")
        reason = "; ".join(skipped + [f"gap {a.isoformat()}..{b.isoformat()}"
                                      for a, b in result.gaps])[:2000]
        _write_state(store, bucket, {**state, "state": "done", "ref": f"s3://{bucket}/{key}",
                                     "partial": bool(result.partial or skipped),
                                     "reason": reason, "size_bytes": len(result.mp4)})
    except Exception as exc:  # recorded, never lost: the client sees "failed" and why
        log.exception("export %s failed", state["export_id"])
        try:
            _write_state(store, bucket, {**state, "state": "failed",
                                         "reason": f"{type(exc).__name__}: {exc}"[:500]})
        except Exception:
            log.exception("export %s: recording the failure failed", state["export_id"])


async def _export_out(request: Request, st: dict[str, Any]) -> ExportOut:
    state = st.get("state", "failed")
    reason = str(st.get("reason", ""))
    if state in ("pending", "running") and time.time() - float(st.get("updated", 0)) > STALE_S:
        state, reason = "failed", "interrupted (the API process building it stopped)"
    url = None
    if state == "done":
        url = await presign(request, st.get("ref"), deps_of(request).settings.bucket_snapshots)
    return ExportOut(export_id=st["export_id"], camera_id=st["camera_id"],
                     start_at=st["start_at"], end_at=st["end_at"], state=state,
                     partial=bool(st.get("partial")), reason=reason,
                     size_bytes=int(st.get("size_bytes", 0)), url=url)


def _store(request: Request) -> Any:
    store = deps_of(request).object_store
    if store is None:
        raise ApiError(503, "no object store configured")
    return store


async def create_export(request: Request, body: ExportBody) -> Response:
    cam = await visible_camera(request, body.camera_id)
    _check_range(body, deps_of(request).api.export_max_range_s)
    deps = deps_of(request)
    store = _store(request)
    export_id = export_id_for(deps.settings.topic_prefix, cam.camera_id, body.from_, body.to)
    bucket = deps.settings.bucket_snapshots
    existing = await _state(request, export_id)
    if existing is not None:
        out = await _export_out(request, existing)
        if out.state != "failed":
            return json_response(out, status=200 if out.state == "done" else 202)
    segs = await _segments(request, cam.camera_id, body.from_, body.to)
    if not segs:
        raise _no_video(cam.camera_id, body.from_, body.to)
    state = {"export_id": export_id, "camera_id": cam.camera_id, "site_id": cam.site_id,
             "start_at": body.from_.isoformat(), "end_at": body.to.isoformat(),
             "state": "pending"}
    try:
        await anyio.to_thread.run_sync(lambda: _write_state(store, bucket, state))
    except Exception as exc:
        log.warning("recording export %s failed: %s", export_id, exc)
        raise ApiError(503, "the object store did not answer") from None
    tasks: set[asyncio.Task[Any]] = deps.extra.setdefault("export_tasks", set())
    task = asyncio.create_task(asyncio.to_thread(_build, store, deps.settings, state, segs))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return json_response(await _export_out(request, {**state, "updated": time.time()}),
                         status=202)


async def _state(request: Request, export_id: str) -> dict[str, Any] | None:
    store = _store(request)
    bucket = deps_of(request).settings.bucket_snapshots
    try:
        return await anyio.to_thread.run_sync(lambda: _read_state(store, bucket, export_id))
    except Exception as exc:
        log.warning("reading export %s failed: %s", export_id, exc)
        raise ApiError(503, "the object store did not answer") from None


async def get_export(request: Request) -> Response:
    export_id = check_id(request.path_params["export_id"], "export")
    if not _EXPORT_ID.fullmatch(export_id):  # ids are UUIDs: anything else does not exist
        raise ApiError(404, "export not found", details={"export_id": export_id})
    st = await _state(request, export_id)
    sites = principal_of(request).sites
    if st is None or (sites is not None and st.get("site_id") not in sites):
        raise ApiError(404, "export not found", details={"export_id": export_id})
    return json_response(await _export_out(request, st))


ROUTES = [
    Endpoint("GET", "/api/v1/cameras/{camera_id}/recordings", list_recordings,
             "A camera's recorded segments in a time range (presigned URLs) and the gaps; "
             "404 naming the gap when there is no video",
             query=Range, responses={200: RecordingsOut}, tag="recordings",
             personal_data=True),  # video: on the access record (api/access.py)
    Endpoint("POST", "/api/v1/exports", create_export,
             "Export a camera's video for a time range as one MP4, built in the background; "
             "202 with its state (asking again for the same range returns the same export)",
             permission="act", body=ExportBody,
             responses={202: ExportOut, 200: ExportOut}, errors=(404, 503),
             tag="recordings"),
    Endpoint("GET", "/api/v1/exports/{export_id}", get_export,
             "An export's state, with a presigned URL once done",
             responses={200: ExportOut}, errors=(503,), tag="recordings",
             personal_data=True),  # the export's video URL
]

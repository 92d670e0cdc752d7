"""`vigil erase --detection ID...`: the right to erasure for appearance data.

The erasure is first *published* (AppearanceErased on the privacy topic, which is never
deleted) and only then applied, so that every future replay honours it: the projector
records the ids in ``erased_detections`` and never inserts an embedding for them again,
whichever topic it reads first. Applying it here as well (embeddings rows, snapshot
objects) makes the effect immediate instead of waiting for the projector.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import psycopg
from minio import Minio
from minio.error import S3Error

from projections.migrate import set_search_path
from projections.settings import ProjectorSettings
from projections.writer import OPS
from schemas.events import AppearanceErased
from schemas.producer import EventProducer
from vigil.errors import VigilError
from vigil.objects import make_client
from vigil.settings import Settings

log = logging.getLogger(__name__)


def _minio(s: Settings) -> Minio:
    return make_client(settings=s)


def snapshot_refs_for(conn: psycopg.Connection, detection_ids: list[str]) -> list[str]:
    """Alert snapshots that may show these people: alerts on the same camera whose evidence
    window covers the detection (per the read model), and the evidence objects (frame,
    annotated rendering, thumbnail) of those alerts and of every frame that shows one of
    them. Add others with --snapshot."""
    rows = conn.execute(
        "SELECT DISTINCT a.snapshot_ref FROM detections d JOIN alerts a "
        "ON a.camera_id = d.camera_id AND d.occurred_at BETWEEN a.first_evidence_at "
        "AND a.last_evidence_at WHERE d.detection_id = ANY(%s) "
        "AND a.snapshot_ref IS NOT NULL", (detection_ids,)).fetchall()
    refs = {r[0] for r in rows}
    # the still evidence of rule hits (docs/evidence.md): every picture whose frame shows
    # one of these detections, and every picture of an alert whose window covers one
    rows = conn.execute(
        "SELECT v.snapshot_ref, v.annotated_ref, v.thumbnail_ref FROM evidence v "
        "WHERE v.detection_ids && %s::text[] OR v.rule_event_id IN ("
        " SELECT ae.causation_id FROM detections d JOIN alerts a "
        " ON a.camera_id = d.camera_id AND d.occurred_at BETWEEN a.first_evidence_at "
        " AND a.last_evidence_at JOIN alert_events ae ON ae.alert_id = a.alert_id "
        " WHERE d.detection_id = ANY(%s) AND ae.causation_id IS NOT NULL)",
        (detection_ids, detection_ids)).fetchall()
    for row in rows:
        refs.update(row)
    # and the clips of those rule hits
    rows = conn.execute(
        "SELECT c.clip_ref FROM clips c JOIN evidence v ON v.event_id = c.evidence_id "
        "WHERE c.clip_ref IS NOT NULL AND (v.snapshot_ref = ANY(%s) "
        "OR v.annotated_ref = ANY(%s))", (sorted(refs), sorted(refs))).fetchall()
    refs.update(r[0] for r in rows)
    return sorted(refs)


def delete_objects(s: Settings, refs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    client = _minio(s)
    for ref in refs:
        u = urlparse(ref)
        if u.scheme != "s3":
            out[ref] = "skipped (not an s3:// ref)"
            continue
        try:
            client.remove_object(u.netloc, u.path.lstrip("/"))
            out[ref] = "deleted"
        except S3Error as exc:
            out[ref] = f"error: {exc.code}"
    return out


def erase(s: Settings, ps: ProjectorSettings, schema: str, detection_ids: list[str],
          requested_by: str, reason: str, extra_refs: list[str] | None = None
          ) -> dict[str, Any]:
    if not detection_ids:
        raise VigilError("nothing to erase: give at least one detection id")
    with psycopg.connect(s.database_dsn) as conn:
        set_search_path(conn, schema)
        refs = sorted(set(snapshot_refs_for(conn, detection_ids)) | set(extra_refs or []))
    event = AppearanceErased.create(producer="vigil-erase", detection_ids=list(detection_ids),
                                    snapshot_refs=refs, requested_by=requested_by,
                                    reason=reason)
    producer = EventProducer()
    producer.send("privacy", "erasure", event)
    if producer.flush(30):
        raise VigilError("AppearanceErased was not acknowledged by Kafka; nothing erased")
    with psycopg.connect(s.database_dsn) as conn, conn.transaction():
        set_search_path(conn, schema)
        conn.execute(
            "INSERT INTO erased_detections (detection_id, erasure_event_id, erased_at) "
            "SELECT unnest(%s::text[]), %s, %s ON CONFLICT DO NOTHING",
            (list(detection_ids), event.event_id, event.occurred_at))
        deleted = conn.execute("DELETE FROM embeddings WHERE detection_id = ANY(%s)",
                               (list(detection_ids),)).rowcount
        if refs:  # what the projector does too, once it reads the event
            conn.execute(OPS["erase_evidence"], (refs, refs, refs))
            conn.execute(OPS["erase_clips"], (refs,))
    objects = delete_objects(s, refs) if refs else {}
    log.info("erased", extra={"event_id": event.event_id, "embeddings": deleted})
    return {"event_id": event.event_id, "embeddings_deleted": deleted, "objects": objects}

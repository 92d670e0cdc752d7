"""Every retention period of the operations plan, in one table (docs/operations.md,
"Retention"), with the function that applies it.

Why one table: several parts of the system keep data (read models, the object store, the
edge's recordings), and a period that lives next to its code only is a period nobody can
review. A part that keeps something adds a `RetentionPolicy` here with `register`; the
retention service (projections/retention_service.py) runs them all, in order, and records
what each did. An applier gets a connection whose search_path is the read-model schema,
the object store client (or None), the run's `now` and the settings (a
`RetentionContext`), and returns what it removed.

Where a table is partitioned, old partitions are dropped (never rows deleted); other
tables delete rows older than the cutoff; object-store entries are deleted through the
read-model rows that reference them, so an object is never orphaned in the read model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import psycopg

from projections.settings import ProjectorSettings

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RetentionContext:
    """What an applier gets: a connection whose search_path is the read-model schema
    (autocommit), the object store client (or None), the run's `now` and settings."""

    conn: psycopg.Connection
    store: Any
    now: datetime
    ps: ProjectorSettings
    dsn: str
    schema: str


#: context -> what it removed (counts, names)
Applier = Callable[[RetentionContext], dict[str, Any]]

#: Rows deleted per statement, so a large backlog never holds one long transaction.
BATCH = 5000


@dataclass(frozen=True)
class RetentionPolicy:
    name: str
    #: "postgres" or "object_store" (where the data lives)
    store: str
    #: the period, from the settings (so an operator can change it per site)
    period: Callable[[ProjectorSettings], timedelta]
    #: what happens after the period
    action: str
    #: the operations plan's row it implements
    plan: str
    apply: Applier


POLICIES: list[RetentionPolicy] = []


def register(policy: RetentionPolicy) -> RetentionPolicy:
    if any(p.name == policy.name for p in POLICIES):
        raise ValueError(f"retention policy {policy.name!r} registered twice")
    POLICIES.append(policy)
    return policy


def _delete_old(conn: psycopg.Connection, table: str, column: str, cutoff: datetime,
                extra: str = "", returning: str = "") -> tuple[int, list[Any]]:
    """Delete rows older than `cutoff` in batches; (rows deleted, returned values)."""
    total = 0
    out: list[Any] = []
    ret = f" RETURNING {returning}" if returning else ""
    while True:
        rows = conn.execute(
            f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {column} < %s"
            f" {extra} LIMIT {BATCH}){ret}", (cutoff,))
        n = rows.rowcount
        if returning:
            out.extend(r[0] for r in rows.fetchall() if r[0])
        total += n
        if n < BATCH:
            return total, out


def _remove_objects(store: Any, refs: list[str]) -> int:
    """Delete s3://bucket/key objects; a missing object is already gone."""
    if store is None:
        return 0
    removed = 0
    for ref in refs:
        u = urlparse(ref)
        if u.scheme != "s3" or not u.netloc:
            continue
        store.remove_object(u.netloc, u.path.lstrip("/"))  # idempotent in S3
        removed += 1
    return removed


def _frames(ctx: RetentionContext) -> dict[str, Any]:
    conn, store = ctx.conn, ctx.store
    cutoff = ctx.now - timedelta(days=ctx.ps.frame_retention_days)
    frames, refs = _delete_old(conn, "frames", "occurred_at", cutoff, returning="object_ref")
    analyses, _ = _delete_old(conn, "frame_analyses", "occurred_at", cutoff)
    return {"frames_deleted": frames, "frame_analyses_deleted": analyses,
            "frame_objects_deleted": _remove_objects(store, refs)}


def _snapshots(ctx: RetentionContext) -> dict[str, Any]:
    conn, store = ctx.conn, ctx.store
    cutoff = ctx.now - timedelta(days=ctx.ps.snapshot_retention_days)
    with conn.transaction():
        refs = [r[0] for r in conn.execute(
            "SELECT snapshot_ref FROM alerts WHERE raised_at < %s AND snapshot_ref IS NOT NULL"
            " FOR UPDATE", (cutoff,)).fetchall()]
        removed = _remove_objects(store, refs)
        conn.execute("UPDATE alerts SET snapshot_ref = NULL WHERE raised_at < %s "
                     "AND snapshot_ref IS NOT NULL", (cutoff,))
    return {"snapshots_deleted": removed}


def _evidence(ctx: RetentionContext) -> dict[str, Any]:
    """An alert's rendered evidence (annotated snapshot, thumbnail) and its clip age like
    the alert's snapshot: after the plan's period for event clips both the objects and
    the rows go. Rows are deleted, not blanked: every picture column is required, and an
    evidence row without its pictures would only be a dead link in the console."""
    conn, store = ctx.conn, ctx.store
    cutoff = ctx.now - timedelta(days=ctx.ps.snapshot_retention_days)
    with conn.transaction():
        rows = conn.execute(
            "DELETE FROM evidence WHERE occurred_at < %s "
            "RETURNING annotated_ref, thumbnail_ref", (cutoff,)).fetchall()
        pictures = _remove_objects(store, [ref for row in rows for ref in row if ref])
        clips = conn.execute(
            "DELETE FROM clips WHERE window_end < %s RETURNING clip_ref", (cutoff,)).fetchall()
        clip_objects = _remove_objects(store, [r[0] for r in clips if r[0]])
    return {"evidence_deleted": len(rows), "evidence_objects_deleted": pictures,
            "clips_deleted": len(clips), "clip_objects_deleted": clip_objects}


def _health(ctx: RetentionContext) -> dict[str, Any]:
    cutoff = ctx.now - timedelta(days=ctx.ps.health_retention_days)
    n, _ = _delete_old(ctx.conn, "health_events", "occurred_at", cutoff)
    return {"health_events_deleted": n}


def _alerts(ctx: RetentionContext) -> dict[str, Any]:
    cutoff = ctx.now - timedelta(days=ctx.ps.alert_retention_days)
    n, _ = _delete_old(ctx.conn, "alerts", "raised_at", cutoff, extra="AND state = 'RESOLVED'")
    return {"alerts_deleted": n}


def _detections_and_embeddings(ctx: RetentionContext) -> dict[str, Any]:
    from projections.retention import expire_detections_and_embeddings

    return expire_detections_and_embeddings(ctx.conn, ctx.ps, ctx.now)


def _recordings(ctx: RetentionContext) -> dict[str, Any]:
    """Recorded video segments, aged by the object's LastModified
    (projections/recording_retention.py)."""
    from projections.recording_retention import expire_recordings
    from vigil.objects import client
    from vigil.settings import get_settings

    return expire_recordings(client(), get_settings().bucket_segments, ctx.dsn, ctx.schema,
                             ctx.ps.recording_retention_days, now=ctx.now)


register(RetentionPolicy(
    "embeddings+detections", "postgres",
    lambda ps: timedelta(days=ps.detection_retention_days),
    "embeddings deleted after VIGIL_PROJECTOR_EMBEDDING_RETENTION_H (72 h); detection "
    "partitions older than the period folded into daily counts and dropped",
    "detection metadata: 1 year, then anonymised and aggregated", _detections_and_embeddings))
register(RetentionPolicy(
    "frames", "postgres", lambda ps: timedelta(days=ps.frame_retention_days),
    "frames and frame_analyses rows deleted, with the frame images they reference",
    "raw video: 90 days", _frames))
register(RetentionPolicy(
    "snapshots", "object_store", lambda ps: timedelta(days=ps.snapshot_retention_days),
    "alert snapshot images deleted from the object store, the alert keeps no reference",
    "event clips (alerts): 1 year", _snapshots))
register(RetentionPolicy(
    "evidence", "object_store", lambda ps: timedelta(days=ps.snapshot_retention_days),
    "rendered evidence (annotated snapshot, thumbnail) and alert clips deleted from the "
    "object store with their evidence and clips rows", "event clips (alerts): 1 year",
    _evidence))
register(RetentionPolicy(
    "recordings", "object_store", lambda ps: timedelta(days=ps.recording_retention_days),
    "video segments deleted from the object store 30 days after they were stored, with "
    "their recordings rows", "raw video recordings (cloud copy)", _recordings))
register(RetentionPolicy(
    "alerts", "postgres", lambda ps: timedelta(days=ps.alert_retention_days),
    "resolved alerts deleted from the read model (the alerts topic keeps them)",
    "alert history: 2 years", _alerts))
register(RetentionPolicy(
    "health", "postgres", lambda ps: timedelta(days=ps.health_retention_days),
    "health events (edge, stream and inference transitions, retention runs) deleted from "
    "the read model (the health topic keeps its own retention)",
    "system health logs: 90 days", _health))

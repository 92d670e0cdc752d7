"""Retention of embeddings and detections: personal data expires, history shrinks to counts.
(One policy of projections/retention_policies.py; `vigil db retention` runs them all.)

- embeddings: a daily partition entirely older than VIGIL_PROJECTOR_EMBEDDING_RETENTION_H
  (72 h) is dropped whole, its HNSW graph with it (appearance descriptors are personal
  data; the Kafka topic keeps them 72 h too). Deleting rows out of a graph instead would
  leave it to VACUUM to repair, the costliest thing one can ask of an HNSW index; a row
  therefore stays on disk up to a day past 72 h, and the API never serves it then
  (api/search.py). Days ahead are created here too;
- detection partitions (months) entirely older than VIGIL_PROJECTOR_DETECTION_RETENTION_DAYS
  are folded into ``detection_daily_counts`` and dropped, in one transaction per month,
  so a crash never loses a month's counts nor counts it twice;
- partitions for the coming months are created ahead.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from projections.migrate import (
    EMBEDDING_DAYS_AHEAD,
    embedding_partitions,
    ensure_embedding_partitions,
    ensure_partitions,
    set_search_path,
)
from projections.settings import ProjectorSettings

log = logging.getLogger(__name__)


def _partitions(conn: psycopg.Connection) -> list[tuple[str, datetime]]:
    """(name, upper bound) of every detections partition."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'detections'::regclass"
    ).fetchall()
    out = []
    for name, bound in rows:
        # FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')
        upper = bound.split("TO ('", 1)[1].split("'", 1)[0]
        out.append((name, datetime.fromisoformat(upper).astimezone(UTC)))
    return sorted(out, key=lambda r: r[1])


def expire_detections_and_embeddings(conn: psycopg.Connection, ps: ProjectorSettings,
                                     now: datetime) -> dict[str, Any]:
    """The embeddings and detections policy (projections/retention_policies.py), on a
    connection whose search_path is the read-model schema."""
    report: dict[str, Any] = {"dropped_partitions": [],
                              **expire_embeddings(conn, ps.embedding_retention_h, now)}
    det_cutoff = now - timedelta(days=ps.detection_retention_days)
    for name, upper in _partitions(conn):
        if upper > det_cutoff:
            continue
        with conn.transaction():
            conn.execute(sql.SQL(
                "INSERT INTO detection_daily_counts AS t (day, camera_id, label, "
                "detections, frames) SELECT (occurred_at AT TIME ZONE 'UTC')::date, "
                "camera_id, label, count(*), count(DISTINCT event_id) FROM {} "
                "GROUP BY 1, 2, 3 ON CONFLICT (day, camera_id, label) DO UPDATE SET "
                "detections = t.detections + EXCLUDED.detections, "
                "frames = t.frames + EXCLUDED.frames").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        report["dropped_partitions"].append(name)
    with conn.transaction():
        report["partitions_ensured"] = ensure_partitions(
            conn, date(now.year, now.month, 1), ahead=ps.partitions_ahead)
    return report


def expire_embeddings(conn: psycopg.Connection, retention_h: float, now: datetime
                      ) -> dict[str, Any]:
    """Drop every embeddings partition whose whole day is older than `retention_h`, and
    create the days ahead. One short transaction per partition: DROP takes the parent's
    lock, so a lock wait is bounded (a partition left for the next run is reported)."""
    cutoff = now - timedelta(hours=retention_h)
    dropped, busy, rows = [], [], 0
    for name, day in embedding_partitions(conn):
        if datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) > cutoff:
            continue
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '10s'")
                est = conn.execute("SELECT reltuples::bigint FROM pg_class "
                                   "WHERE oid = %s::regclass", (name,)).fetchone()
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        except psycopg.errors.LockNotAvailable:
            busy.append(name)
            continue
        dropped.append(name)
        rows += max(0, int(est[0])) if est else 0
    with conn.transaction():
        ahead = ensure_embedding_partitions(conn, now.astimezone(UTC).date(),
                                            ahead=EMBEDDING_DAYS_AHEAD)
    report: dict[str, Any] = {"embeddings_dropped_partitions": dropped,
                              "embeddings_rows_dropped_estimate": rows,
                              "embeddings_partitions_ensured": ahead}
    if busy:
        report["embeddings_partitions_busy"] = busy
    return report


def run_retention(dsn: str, schema: str, ps: ProjectorSettings,
                  now: datetime | None = None) -> dict[str, Any]:
    """Only the embeddings and detections policy (the other policies run through
    projections/retention_service.py)."""
    now = now or datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        report = {"schema": schema, **expire_detections_and_embeddings(conn, ps, now)}
    log.info("retention done", extra=report)
    return report

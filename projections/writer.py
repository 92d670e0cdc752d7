"""Applies a `handlers.Batch` to PostgreSQL (search_path already set to the schema).

Bulk rows go through COPY into a temporary staging table and then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: COPY is the fast path, the INSERT is
what makes redelivered or duplicated events harmless. Low-volume state statements run in
pipeline mode in arrival order (per-key order matters for alerts and config).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from projections.handlers import Batch, PackedVector
from projections.migrate import ensure_embedding_partitions, ensure_partitions

#: Column lists of the insert-only tables, in handler tuple order.
APPEND_COLUMNS: dict[str, tuple[str, ...]] = {
    "frames": ("event_id", "camera_id", "edge_id", "sequence", "occurred_at", "width",
               "height", "motion_score", "object_ref", "has_jpeg", "log_partition",
               "log_offset"),
    "recordings": ("event_id", "camera_id", "edge_id", "object_ref", "start_at", "end_at",
                   "size_bytes", "container", "log_partition", "log_offset"),
    "frame_analyses": ("event_id", "frame_event_id", "camera_id", "edge_id",
                       "frame_sequence", "occurred_at", "skipped", "detection_count",
                       "detector_model", "detector_version", "embedder_model",
                       "inference_ms", "frame_ref", "log_partition", "log_offset"),
    "detections": ("detection_id", "occurred_at", "event_id", "frame_event_id", "camera_id",
                   "frame_sequence", "label", "score", "x1", "y1", "x2", "y2",
                   "has_embedding", "log_partition", "log_offset"),
    "embeddings": ("detection_id", "event_id", "camera_id", "frame_sequence", "occurred_at",
                   "model", "embedding", "log_partition", "log_offset"),
    "scene_events": ("event_id", "event_type", "occurred_at", "camera_id", "zone_id",
                     "line_id", "track_id", "rule_id", "rule_type", "severity",
                     "causation_id", "correlation_id", "payload", "log_partition",
                     "log_offset"),
    "alert_events": ("event_id", "alert_id", "incident_key", "event_type", "occurred_at",
                     "version", "causation_id", "correlation_id", "payload",
                     "log_partition", "log_offset"),
    "commands": ("event_id", "command_type", "alert_id", "operator", "occurred_at",
                 "expected_version", "payload", "log_partition", "log_offset"),
    "notifications": ("event_id", "alert_id", "alert_event_id", "status", "destination",
                      "channel", "attempts", "status_code", "reason", "occurred_at",
                      "log_partition", "log_offset"),
    "health_events": ("event_id", "event_type", "occurred_at", "edge_id", "site_id",
                      "camera_id", "worker_id", "reason", "payload", "log_partition",
                      "log_offset"),
    "erasures": ("event_id", "occurred_at", "requested_by", "reason", "detection_ids",
                 "snapshot_refs"),
    "evidence": ("event_id", "rule_event_id", "camera_id", "rule_id", "rule_type", "zone_id",
                 "line_id", "frame_event_id", "analysis_event_id", "occurred_at",
                 "frame_at", "width", "height", "snapshot_ref", "annotated_ref",
                 "thumbnail_ref", "track_ids", "detection_ids",
                 "highlighted_detection_ids", "log_partition", "log_offset"),
    "clips": ("event_id", "evidence_id", "rule_event_id", "camera_id", "window_start",
              "window_end", "status", "reason", "clip_ref", "clip_start_at", "clip_end_at",
              "size_bytes", "segment_refs", "skipped", "gaps", "log_partition",
              "log_offset"),
}

#: Extra filtering/columns when moving staged rows into their table.
_SELECT_FROM_STAGE: dict[str, str] = {
    # An erased detection keeps its box (not personal data) but is flagged.
    "detections": "SELECT {cols}, EXISTS (SELECT 1 FROM erased_detections x "
                  "WHERE x.detection_id = s.detection_id) FROM {stage} s",
    # An erased appearance never comes back, whatever order the topics are read in.
    "embeddings": "SELECT {cols} FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM "
                  "erased_detections x WHERE x.detection_id = s.detection_id)",
    # Evidence an erasure already names stays erased, whichever topic is read first.
    "evidence": "SELECT {cols}, EXISTS (SELECT 1 FROM erasures x WHERE s.snapshot_ref = "
                "ANY(x.snapshot_refs) OR s.annotated_ref = ANY(x.snapshot_refs) OR "
                "s.thumbnail_ref = ANY(x.snapshot_refs)) FROM {stage} s",
    "clips": "SELECT {cols}, EXISTS (SELECT 1 FROM erasures x WHERE s.clip_ref = "
             "ANY(x.snapshot_refs)) FROM {stage} s",
}
_EXTRA_COLUMNS = {"detections": ("erased",), "evidence": ("erased",), "clips": ("erased",)}

#: Tables staged with binary COPY (plain column types only, no JSON): no text formatting
#: of floats and timestamps on our side, no parsing on the server's; embeddings need it
#: because their vectors are already packed (`handlers.pack_vector`).
BINARY_COPY = frozenset({"frames", "frame_analyses", "detections", "embeddings"})


class _PackedVectorDumper(Dumper):
    """Passes a `PackedVector` through as the binary value of the `halfvec` column."""

    format = Format.BINARY

    def dump(self, obj: PackedVector) -> bytes:
        return obj


_NEWER = "({t}.{at}, {t}.{eid}) < (EXCLUDED.{at}, EXCLUDED.{eid}) OR {t}.{at} IS NULL"

OPS: dict[str, str] = {
    "alert_raised": """
        INSERT INTO alerts (alert_id, incident_key, state, severity, site_id, camera_id,
            zone_id, rule_id, rule_type, level, occurrences, version, raised_at, updated_at,
            first_evidence_at, last_evidence_at, snapshot_ref, raised_event_id, last_event_id)
        VALUES (%s, %s, 'NEW', %s, %s, %s, %s, %s, %s, 0, 1, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (alert_id) DO NOTHING""",
    "alert_repeated": """
        UPDATE alerts SET occurrences = %s, last_evidence_at = %s, version = %s,
            updated_at = %s, last_event_id = %s
        WHERE alert_id = %s AND version < %s""",
    "alert_escalated": """
        UPDATE alerts SET state = 'ESCALATED', level = %s, escalated_at = %s, version = %s,
            updated_at = %s, last_event_id = %s
        WHERE alert_id = %s AND version < %s""",
    "alert_acknowledged": """
        UPDATE alerts SET state = 'ACKNOWLEDGED', acknowledged_at = %s, acknowledged_by = %s,
            ack_note = %s, version = %s, updated_at = %s, last_event_id = %s
        WHERE alert_id = %s AND version < %s""",
    "alert_resolved": """
        UPDATE alerts SET state = 'RESOLVED', resolved_at = %s, resolved_by = %s,
            resolution = %s, auto_resolved = %s, version = %s, updated_at = %s,
            last_event_id = %s
        WHERE alert_id = %s AND version < %s""",
    "alert_assigned": """
        UPDATE alerts SET assigned_to = NULLIF(%s, ''), version = %s, updated_at = %s,
            last_event_id = %s
        WHERE alert_id = %s AND version < %s""",
    "alert_commented": """
        UPDATE alerts SET version = %s, updated_at = %s, last_event_id = %s
        WHERE alert_id = %s AND version < %s""",
    "camera_configured": """
        INSERT INTO cameras AS t (camera_id, site_id, edge_id, name, timezone, enabled,
            configured_at, config_event_id, stream_state)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'unknown')
        ON CONFLICT (camera_id) DO UPDATE SET site_id = EXCLUDED.site_id,
            edge_id = EXCLUDED.edge_id, name = EXCLUDED.name, timezone = EXCLUDED.timezone,
            enabled = EXCLUDED.enabled, configured_at = EXCLUDED.configured_at,
            config_event_id = EXCLUDED.config_event_id, deleted_at = NULL
        WHERE """ + _NEWER.format(t="t", at="configured_at", eid="config_event_id"),
    "site_seen": "INSERT INTO sites (site_id) VALUES (%s) ON CONFLICT DO NOTHING",
    "zone_configured": """
        INSERT INTO zones AS t (zone_id, camera_id, name, kind, polygon, configured_at,
            config_event_id) VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (zone_id) DO UPDATE SET camera_id = EXCLUDED.camera_id,
            name = EXCLUDED.name, kind = EXCLUDED.kind, polygon = EXCLUDED.polygon,
            configured_at = EXCLUDED.configured_at,
            config_event_id = EXCLUDED.config_event_id, deleted_at = NULL
        WHERE """ + _NEWER.format(t="t", at="configured_at", eid="config_event_id"),
    "line_configured": """
        INSERT INTO lines AS t (line_id, camera_id, name, a, b, configured_at,
            config_event_id) VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (line_id) DO UPDATE SET camera_id = EXCLUDED.camera_id,
            name = EXCLUDED.name, a = EXCLUDED.a, b = EXCLUDED.b,
            configured_at = EXCLUDED.configured_at,
            config_event_id = EXCLUDED.config_event_id, deleted_at = NULL
        WHERE """ + _NEWER.format(t="t", at="configured_at", eid="config_event_id"),
    "rule_configured": """
        INSERT INTO rules AS t (rule_id, camera_id, rule_type, zone_id, line_id, severity,
            enabled, schedule, classes, dwell_s, gap_tolerance_s, min_people, clear_below,
            window_s, direction, cooldown_s, escalation_s, max_escalation_level,
            auto_resolve, configured_at, config_event_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                %s, %s)
        ON CONFLICT (rule_id) DO UPDATE SET camera_id = EXCLUDED.camera_id,
            rule_type = EXCLUDED.rule_type, zone_id = EXCLUDED.zone_id,
            line_id = EXCLUDED.line_id, severity = EXCLUDED.severity,
            enabled = EXCLUDED.enabled, schedule = EXCLUDED.schedule,
            classes = EXCLUDED.classes, dwell_s = EXCLUDED.dwell_s,
            gap_tolerance_s = EXCLUDED.gap_tolerance_s, min_people = EXCLUDED.min_people,
            clear_below = EXCLUDED.clear_below, window_s = EXCLUDED.window_s,
            direction = EXCLUDED.direction, cooldown_s = EXCLUDED.cooldown_s,
            escalation_s = EXCLUDED.escalation_s,
            max_escalation_level = EXCLUDED.max_escalation_level,
            auto_resolve = EXCLUDED.auto_resolve, configured_at = EXCLUDED.configured_at,
            config_event_id = EXCLUDED.config_event_id, deleted_at = NULL
        WHERE """ + _NEWER.format(t="t", at="configured_at", eid="config_event_id"),
    "route_configured": """
        INSERT INTO routes AS t (route_id, site_id, cameras, rule_types, severities,
            event_types, levels, channels, recipients, quiet_start, quiet_end, timezone,
            enabled, configured_at, config_event_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (route_id) DO UPDATE SET site_id = EXCLUDED.site_id,
            cameras = EXCLUDED.cameras, rule_types = EXCLUDED.rule_types,
            severities = EXCLUDED.severities, event_types = EXCLUDED.event_types,
            levels = EXCLUDED.levels, channels = EXCLUDED.channels,
            recipients = EXCLUDED.recipients, quiet_start = EXCLUDED.quiet_start,
            quiet_end = EXCLUDED.quiet_end, timezone = EXCLUDED.timezone,
            enabled = EXCLUDED.enabled, configured_at = EXCLUDED.configured_at,
            config_event_id = EXCLUDED.config_event_id, deleted_at = NULL
        WHERE """ + _NEWER.format(t="t", at="configured_at", eid="config_event_id"),
    "edge_status": """
        INSERT INTO edges AS t (edge_id, site_id, status, status_changed_at, status_event_id,
            offline_since, missed_heartbeats) VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (edge_id) DO UPDATE SET site_id = COALESCE(t.site_id, EXCLUDED.site_id),
            status = EXCLUDED.status, status_changed_at = EXCLUDED.status_changed_at,
            status_event_id = EXCLUDED.status_event_id,
            offline_since = EXCLUDED.offline_since,
            missed_heartbeats = EXCLUDED.missed_heartbeats
        WHERE """ + _NEWER.format(t="t", at="status_changed_at", eid="status_event_id"),
    "stream_state": """
        INSERT INTO cameras AS t (camera_id, edge_id, stream_state, stream_reason,
            stream_changed_at, stream_event_id) VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (camera_id) DO UPDATE SET stream_state = EXCLUDED.stream_state,
            stream_reason = EXCLUDED.stream_reason,
            stream_changed_at = EXCLUDED.stream_changed_at,
            stream_event_id = EXCLUDED.stream_event_id
        WHERE """ + _NEWER.format(t="t", at="stream_changed_at", eid="stream_event_id"),
    # The hash chain (projections/access_log.py): the next seq and the link to the newest
    # row, computed in the same statement; a redelivered event is not chained twice.
    "access_recorded": """
        INSERT INTO access_log (event_id, occurred_at, actor_kind, actor_id, actor_name,
            role, method, route, operation, resource_ids, client_address, status, outcome,
            content_hash, seq, prev_hash, hash, log_partition, log_offset)
        SELECT v.*, COALESCE(l.seq, 0) + 1, COALESCE(l.hash, ''),
            encode(sha256(convert_to(COALESCE(l.hash, '') || %s::text, 'UTF8')), 'hex'),
            %s::integer, %s::bigint
        FROM (SELECT %s::text, %s::timestamptz, %s::text, %s::text, %s::text, %s::text,
                     %s::text, %s::text, %s::text, %s::text[], %s::text, %s::integer,
                     %s::text, %s::text) AS v
        LEFT JOIN LATERAL (SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1) l
            ON true
        WHERE NOT EXISTS (SELECT 1 FROM access_log WHERE event_id = %s)""",
    "erase": """
        WITH ids AS (SELECT unnest(%s::text[]) AS detection_id),
        ins AS (INSERT INTO erased_detections (detection_id, erasure_event_id, erased_at)
                SELECT detection_id, %s, %s FROM ids ON CONFLICT DO NOTHING),
        del AS (DELETE FROM embeddings e USING ids WHERE e.detection_id = ids.detection_id)
        UPDATE detections d SET erased = true FROM ids
        WHERE d.detection_id = ids.detection_id AND NOT d.erased""",
    "erase_evidence": """
        UPDATE evidence SET erased = true
        WHERE NOT erased AND (snapshot_ref = ANY(%s::text[])
            OR annotated_ref = ANY(%s::text[]) OR thumbnail_ref = ANY(%s::text[]))""",
    "erase_clips": """
        UPDATE clips SET erased = true WHERE NOT erased AND clip_ref = ANY(%s::text[])""",
}
for _kind, (_table, _key) in {"camera": ("cameras", "camera_id"), "zone": ("zones", "zone_id"),
                              "line": ("lines", "line_id"),
                              "rule": ("rules", "rule_id"),
                              "route": ("routes", "route_id")}.items():
    OPS[f"delete_{_kind}"] = (
        f"UPDATE {_table} SET deleted_at = %s, configured_at = %s, config_event_id = %s "
        f"WHERE {_key} = %s AND ((configured_at, config_event_id) < (%s, %s) "
        f"OR configured_at IS NULL)"
    )

_LAST_FRAME = """
    INSERT INTO cameras AS t (camera_id, last_frame_at, last_frame_seq, last_frame_event_id,
        stream_state) VALUES (%s, %s, %s, %s, 'unknown')
    ON CONFLICT (camera_id) DO UPDATE SET last_frame_at = EXCLUDED.last_frame_at,
        last_frame_seq = EXCLUDED.last_frame_seq,
        last_frame_event_id = EXCLUDED.last_frame_event_id
    WHERE (t.last_frame_at, t.last_frame_seq, t.last_frame_event_id)
          < (EXCLUDED.last_frame_at, EXCLUDED.last_frame_seq, EXCLUDED.last_frame_event_id)
       OR t.last_frame_at IS NULL"""

_HEARTBEAT = """
    INSERT INTO edges AS t (edge_id, last_heartbeat_at, last_heartbeat_event_id, site_id,
        version, interval_s, streams, disk_free_bytes, memory_rss_bytes, spool_backlog,
        spool_evicted, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'unknown')
    ON CONFLICT (edge_id) DO UPDATE SET last_heartbeat_at = EXCLUDED.last_heartbeat_at,
        last_heartbeat_event_id = EXCLUDED.last_heartbeat_event_id,
        site_id = EXCLUDED.site_id, version = EXCLUDED.version,
        interval_s = EXCLUDED.interval_s, streams = EXCLUDED.streams,
        disk_free_bytes = EXCLUDED.disk_free_bytes,
        memory_rss_bytes = EXCLUDED.memory_rss_bytes,
        spool_backlog = EXCLUDED.spool_backlog, spool_evicted = EXCLUDED.spool_evicted
    WHERE """ + _NEWER.format(t="t", at="last_heartbeat_at", eid="last_heartbeat_event_id")

_SITE_HEARTBEAT = """
    INSERT INTO sites AS t (site_id, last_heartbeat_at) VALUES (%s, %s)
    ON CONFLICT (site_id) DO UPDATE SET last_heartbeat_at = EXCLUDED.last_heartbeat_at
    WHERE t.last_heartbeat_at < EXCLUDED.last_heartbeat_at OR t.last_heartbeat_at IS NULL"""

#: Order in which append tables are written (erasures before embeddings is not needed for
#: correctness, but keeps a batch that holds both tidy).
APPEND_ORDER = ("erasures", "frames", "recordings", "frame_analyses", "detections",
                "embeddings", "scene_events", "alert_events", "commands", "notifications",
                "health_events", "evidence", "clips")


class Writer:
    """Writes batches on one connection; remembers which detection partitions exist."""

    def __init__(self, partitions_ahead: int = 2) -> None:
        self.partitions_ahead = partitions_ahead
        self._months: set[date] = set()
        self._days: set[date] = set()
        self._stages: set[str] = set()
        #: per binary staging table, the type oids of the copied columns
        self._stage_types: dict[str, list[int]] = {}

    def reset(self) -> None:
        """Forget cached partitions and staging tables (after a reconnect or rollback)."""
        self._months.clear()
        self._days.clear()
        self._stages.clear()
        self._stage_types.clear()

    def write(self, conn: psycopg.Connection, batch: Batch) -> None:
        new_months = sorted(batch.months - self._months)
        new_days = sorted(batch.days - self._days)
        if new_months or new_days:  # replay workers run in parallel: one creates, the
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('vigil-partitions:' "
                         "|| current_schema()))")  # others wait
        for month in new_months:
            ensure_partitions(conn, month, ahead=self.partitions_ahead)
        for day in new_days:  # normally created ahead already (retention, upgrade)
            ensure_embedding_partitions(conn, day)
        self._months |= batch.months
        self._days |= batch.days
        for table in APPEND_ORDER:
            rows = batch.appends.get(table)
            if rows:
                self._copy_insert(conn, table, rows)
        if batch.ops:
            with conn.cursor() as cur:
                for key, params in batch.ops:
                    cur.execute(OPS[key], params)
        if batch.last_frame:
            with conn.cursor() as cur:
                cur.executemany(_LAST_FRAME, [(cam, *row) for cam, row in
                                              sorted(batch.last_frame.items())])
        if batch.last_heartbeat:
            with conn.cursor() as cur:
                rows = sorted(batch.last_heartbeat.items())
                cur.executemany(_HEARTBEAT, [(edge, *r) for edge, r in rows])
                cur.executemany(_SITE_HEARTBEAT, [(r[2], r[0]) for _, r in rows])

    def _copy_insert(self, conn: psycopg.Connection, table: str, rows: list[tuple[Any, ...]]
                     ) -> None:
        cols = APPEND_COLUMNS[table]
        stage = f"_stage_{table}"
        if stage not in self._stages:
            conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            for extra in _EXTRA_COLUMNS.get(table, ()):
                conn.execute(f"ALTER TABLE {stage} DROP COLUMN IF EXISTS {extra}")
            if table in BINARY_COPY:
                self._stage_types[stage] = self._column_types(conn, stage, cols)
            self._stages.add(stage)
        collist = ", ".join(cols)
        types = self._stage_types.get(stage)
        fmt = " (FORMAT BINARY)" if types else ""
        with conn.cursor() as cur, cur.copy(f"COPY {stage} ({collist}) FROM STDIN{fmt}") as copy:
            if types:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        scols = ", ".join(f"s.{c}" for c in cols)
        select = _SELECT_FROM_STAGE.get(table, "SELECT {cols} FROM {stage} s").format(
            stage=stage, cols=scols)
        all_cols = ", ".join(cols + _EXTRA_COLUMNS.get(table, ()))
        conn.execute(f"INSERT INTO {table} ({all_cols}) {select} ON CONFLICT DO NOTHING")

    @staticmethod
    def _column_types(conn: psycopg.Connection, stage: str, cols: tuple[str, ...]
                      ) -> list[int]:
        """Type oids of `cols` of the staging table; registers the vector dumper for this
        connection when one of them is pgvector's `halfvec`."""
        rows = conn.execute(
            "SELECT a.attname, a.atttypid::int, t.typname FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped", (f"pg_temp.{stage}",)).fetchall()
        by_name = {name: (oid, typname) for name, oid, typname in rows}
        for oid, typname in by_name.values():
            if typname == "halfvec":
                dumper = type("PackedVectorDumper", (_PackedVectorDumper,), {"oid": oid})
                conn.adapters.register_dumper(PackedVector, dumper)
        return [by_name[c][0] for c in cols]

"""Read-model tables (SQLAlchemy Core), the contract between projector and API.

The tables are declared once, *without* a schema; the PostgreSQL schema is chosen per
connection with ``schema_translate_map`` (see `in_schema`). That is what lets `replay`
build the very same tables into a fresh schema and compare them with the live one.
The DDL itself lives in ``projections/migrations/*.sql`` (the source of truth for
indexes, partitions and the vector dimension); these definitions mirror it column for
column and `tests/unit/test_projection_tables.py` keeps them honest.

Conventions:
- every row is a pure function of the log (no wall-clock "projected_at" columns), so a
  rebuild compares equal; timestamps are event time, ``timestamptz`` UTC;
- ``log_partition`` / ``log_offset`` on event tables point back into the topic, so the
  audit can fetch the original evidence from Kafka;
- config entities are never physically deleted: ``deleted_at`` is set by EntityDeleted
  and cleared by a later *Configured event.

Usage from the API::

    from schemas.tables import alerts, in_schema
    async/sync conn = in_schema(conn, "vigil")
    conn.execute(select(alerts).where(alerts.c.state == "NEW"))
"""

from __future__ import annotations

from typing import TypeVar

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP

DEFAULT_SCHEMA = "vigil"

metadata = MetaData()

TS = TIMESTAMP(timezone=True)

_C = TypeVar("_C")


def in_schema(conn: _C, schema: str = DEFAULT_SCHEMA) -> _C:
    """Bind a Connection/Engine (sync or async) to the read-model schema `schema`."""
    return conn.execution_options(schema_translate_map={None: schema})  # type: ignore[attr-defined]


def _log_position(nullable: bool = False) -> list[Column]:
    """Where the row's source event sits in the log (migration 0002 added it, nullable,
    to the tables that had none)."""
    return [Column("log_partition", Integer, nullable=nullable),
            Column("log_offset", BigInteger, nullable=nullable)]


# ------------------------------------------------------------------------ configuration
sites = Table(
    "sites", metadata,
    Column("site_id", Text, primary_key=True),
    # Latest heartbeat of any edge of the site (event time).
    Column("last_heartbeat_at", TS),
)

edges = Table(
    "edges", metadata,
    Column("edge_id", Text, primary_key=True),
    Column("site_id", Text),
    Column("version", Text),
    Column("last_heartbeat_at", TS),
    Column("last_heartbeat_event_id", Text),
    Column("interval_s", Double),
    Column("streams", JSONB),  # list of StreamStatus dicts from the last heartbeat
    Column("disk_free_bytes", BigInteger),
    Column("memory_rss_bytes", BigInteger),
    Column("spool_backlog", BigInteger),
    Column("spool_evicted", BigInteger),
    Column("status", Text, nullable=False),  # "online" | "offline" | "unknown"
    Column("status_changed_at", TS),
    Column("status_event_id", Text),
    Column("offline_since", TS),
    Column("missed_heartbeats", Integer),
)

cameras = Table(
    "cameras", metadata,
    Column("camera_id", Text, primary_key=True),
    Column("site_id", Text),
    Column("edge_id", Text),
    Column("name", Text),
    Column("timezone", Text),
    Column("enabled", Boolean),
    Column("configured_at", TS),
    Column("config_event_id", Text),
    Column("deleted_at", TS),
    Column("last_frame_at", TS),
    Column("last_frame_seq", BigInteger),
    Column("last_frame_event_id", Text),
    Column("stream_state", Text, nullable=False),  # "up" | "down" | "unknown"
    Column("stream_reason", Text),
    Column("stream_changed_at", TS),
    Column("stream_event_id", Text),
)

zones = Table(
    "zones", metadata,
    Column("zone_id", Text, primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),  # "zone" | "perimeter"
    Column("polygon", JSONB, nullable=False),  # [{"x": .., "y": ..}, ...]
    Column("configured_at", TS, nullable=False),
    Column("config_event_id", Text, nullable=False),
    Column("deleted_at", TS),
)

lines = Table(
    "lines", metadata,
    Column("line_id", Text, primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("a", JSONB, nullable=False),  # {"x": .., "y": ..}
    Column("b", JSONB, nullable=False),
    Column("configured_at", TS, nullable=False),
    Column("config_event_id", Text, nullable=False),
    Column("deleted_at", TS),
)

rules = Table(
    "rules", metadata,
    Column("rule_id", Text, primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("rule_type", Text, nullable=False),
    Column("zone_id", Text),
    Column("line_id", Text),
    Column("severity", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("schedule", JSONB, nullable=False),  # {"kind":..,"start":..,"end":..}
    Column("classes", ARRAY(Text), nullable=False),
    Column("dwell_s", Double, nullable=False),
    Column("gap_tolerance_s", Double, nullable=False),
    Column("min_people", Integer, nullable=False),
    Column("clear_below", Integer, nullable=False),
    Column("window_s", Double, nullable=False),
    Column("direction", Text),
    # the rule's own alert policy; NULL: the site-wide policy (migration 0042)
    Column("cooldown_s", Double),
    Column("escalation_s", Double),
    Column("max_escalation_level", Integer),
    Column("auto_resolve", Boolean),
    Column("configured_at", TS, nullable=False),
    Column("config_event_id", Text, nullable=False),
    Column("deleted_at", TS),
)

#: notification routes (RouteConfigured); the notifier folds its own copy from vigil.config
routes = Table(
    "routes", metadata,
    Column("route_id", Text, primary_key=True),
    Column("site_id", Text),
    Column("cameras", ARRAY(Text), nullable=False),
    Column("rule_types", ARRAY(Text), nullable=False),
    Column("severities", ARRAY(Text), nullable=False),
    Column("event_types", ARRAY(Text), nullable=False),
    Column("levels", ARRAY(Integer), nullable=False),
    Column("channels", ARRAY(Text), nullable=False),
    Column("recipients", ARRAY(Text), nullable=False),
    Column("quiet_start", Text),
    Column("quiet_end", Text),
    Column("timezone", Text),
    Column("enabled", Boolean, nullable=False),
    Column("configured_at", TS, nullable=False),
    Column("config_event_id", Text, nullable=False),
    Column("deleted_at", TS),
)

# ------------------------------------------------------------------------ video
frames = Table(
    "frames", metadata,
    Column("event_id", Text, primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("edge_id", Text, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("motion_score", Double, nullable=False),
    Column("object_ref", Text),
    Column("has_jpeg", Boolean, nullable=False),
    *_log_position(),
)

recordings = Table(
    "recordings", metadata,
    Column("event_id", Text, primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("edge_id", Text, nullable=False),
    Column("object_ref", Text, nullable=False),
    Column("start_at", TS, nullable=False),
    Column("end_at", TS, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("container", Text, nullable=False),
    *_log_position(nullable=True),
)

#: One row per FrameAnalyzed event (including skipped frames and frames with no boxes).
frame_analyses = Table(
    "frame_analyses", metadata,
    Column("event_id", Text, primary_key=True),
    Column("frame_event_id", Text),  # causation_id = the FrameCaptured event id
    Column("camera_id", Text, nullable=False),
    Column("edge_id", Text, nullable=False),
    Column("frame_sequence", BigInteger, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("skipped", Boolean, nullable=False),
    Column("detection_count", Integer, nullable=False),
    Column("detector_model", Text, nullable=False),
    Column("detector_version", Text, nullable=False),
    Column("embedder_model", Text),
    Column("inference_ms", Double, nullable=False),
    Column("frame_ref", Text),
    *_log_position(),
)

#: Range-partitioned by month on occurred_at; primary key (detection_id, occurred_at).
detections = Table(
    "detections", metadata,
    Column("detection_id", Text, primary_key=True),
    Column("occurred_at", TS, primary_key=True),
    Column("event_id", Text, nullable=False),  # the FrameAnalyzed event
    Column("frame_event_id", Text),  # the FrameCaptured event
    Column("camera_id", Text, nullable=False),
    Column("frame_sequence", BigInteger, nullable=False),
    Column("label", Text, nullable=False),
    Column("score", Double, nullable=False),
    Column("x1", Double, nullable=False),
    Column("y1", Double, nullable=False),
    Column("x2", Double, nullable=False),
    Column("y2", Double, nullable=False),
    Column("has_embedding", Boolean, nullable=False),
    Column("erased", Boolean, nullable=False),  # AppearanceErased named this detection
    *_log_position(nullable=True),
)

#: Written by retention before old detection partitions are dropped.
detection_daily_counts = Table(
    "detection_daily_counts", metadata,
    Column("day", Date, primary_key=True),
    Column("camera_id", Text, primary_key=True),
    Column("label", Text, primary_key=True),
    Column("detections", BigInteger, nullable=False),
    Column("frames", BigInteger, nullable=False),
)

#: Appearance descriptors: halfvec(VIGIL_PROJECTOR_EMBEDDING_DIM), partitioned by UTC day,
#: one HNSW cosine graph per day (migration 0044, docs/architecture.md).
embeddings = Table(
    "embeddings", metadata,
    Column("detection_id", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("camera_id", Text, nullable=False),
    Column("frame_sequence", BigInteger, nullable=False),
    Column("occurred_at", TS, primary_key=True),
    Column("model", Text, nullable=False),
    Column("embedding", HALFVEC(), nullable=False),
    *_log_position(nullable=True),
)

# ------------------------------------------------------------------------ scene
#: Every vigil.scene event; the typed columns are those shared by several event types.
scene_events = Table(
    "scene_events", metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("camera_id", Text, nullable=False),
    Column("zone_id", Text),
    Column("line_id", Text),
    Column("track_id", Text),
    Column("rule_id", Text),
    Column("rule_type", Text),
    Column("severity", Text),
    Column("causation_id", Text),
    Column("correlation_id", Text),
    Column("payload", JSONB, nullable=False),  # the whole event as JSON
    *_log_position(),
)

# ------------------------------------------------------------------------ alerts
#: Current state of every alert: the fold of its vigil.alerts events (guarded by version).
alerts = Table(
    "alerts", metadata,
    Column("alert_id", Text, primary_key=True),
    Column("incident_key", Text, nullable=False),
    Column("state", Text, nullable=False),  # NEW | ACKNOWLEDGED | ESCALATED | RESOLVED
    Column("severity", Text, nullable=False),
    Column("site_id", Text),
    Column("camera_id", Text, nullable=False),
    Column("zone_id", Text),
    Column("rule_id", Text, nullable=False),
    Column("rule_type", Text, nullable=False),
    Column("level", Integer, nullable=False),  # escalation level, 0 = never escalated
    Column("occurrences", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("raised_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),  # occurred_at of the last folded event
    Column("first_evidence_at", TS, nullable=False),
    Column("last_evidence_at", TS, nullable=False),
    Column("snapshot_ref", Text),
    Column("escalated_at", TS),
    Column("acknowledged_at", TS),
    Column("acknowledged_by", Text),
    Column("ack_note", Text),
    Column("resolved_at", TS),
    Column("resolved_by", Text),
    Column("resolution", Text),
    Column("auto_resolved", Boolean),
    Column("raised_event_id", Text, nullable=False),  # RuleTriggered chain starts here
    Column("last_event_id", Text, nullable=False),
    Column("assigned_to", Text),  # AlertAssigned; None = nobody
)

#: Full history: every vigil.alerts event, CommandRejected included.
alert_events = Table(
    "alert_events", metadata,
    Column("event_id", Text, primary_key=True),
    Column("alert_id", Text, nullable=False),
    Column("incident_key", Text),  # None for CommandRejected
    Column("event_type", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("version", Integer),  # None for CommandRejected
    Column("causation_id", Text),
    Column("correlation_id", Text),
    Column("payload", JSONB, nullable=False),
    *_log_position(),
)

#: Operator commands as published (vigil.commands); outcome is in alert_events.
commands = Table(
    "commands", metadata,
    Column("event_id", Text, primary_key=True),  # = command id
    Column("command_type", Text, nullable=False),
    Column("alert_id", Text, nullable=False),
    Column("operator", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("expected_version", Integer),
    Column("payload", JSONB, nullable=False),
    *_log_position(),
)

notifications = Table(
    "notifications", metadata,
    Column("event_id", Text, primary_key=True),
    Column("alert_id", Text, nullable=False),
    Column("alert_event_id", Text, nullable=False),
    Column("status", Text, nullable=False),  # "delivered" | "failed"
    Column("destination", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status_code", Integer),
    Column("reason", Text),
    Column("occurred_at", TS, nullable=False),
    *_log_position(nullable=True),
)

# ------------------------------------------------------------------------ health
health_events = Table(
    "health_events", metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("edge_id", Text),
    Column("site_id", Text),
    Column("camera_id", Text),
    Column("worker_id", Text),
    Column("reason", Text),
    Column("payload", JSONB, nullable=False),
    *_log_position(nullable=True),
)

# ------------------------------------------------------------------------ access record
access_log = Table(
    "access_log", metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("occurred_at", TS, nullable=False),
    Column("actor_kind", Text, nullable=False),
    Column("actor_id", Text, nullable=False),
    Column("actor_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("resource_ids", ARRAY(Text), nullable=False),
    Column("client_address", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    *_log_position(),
)

# ------------------------------------------------------------------------ evidence
#: One row per EvidenceCaptured: a rule hit's snapshot, annotated snapshot and thumbnail.
evidence = Table(
    "evidence", metadata,
    Column("event_id", Text, primary_key=True),
    Column("rule_event_id", Text, nullable=False),
    Column("camera_id", Text, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("rule_type", Text, nullable=False),
    Column("zone_id", Text),
    Column("line_id", Text),
    Column("frame_event_id", Text, nullable=False),
    Column("analysis_event_id", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("frame_at", TS, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("snapshot_ref", Text, nullable=False),
    Column("annotated_ref", Text, nullable=False),
    Column("thumbnail_ref", Text, nullable=False),
    Column("track_ids", ARRAY(Text), nullable=False),
    Column("detection_ids", ARRAY(Text), nullable=False),
    Column("highlighted_detection_ids", ARRAY(Text), nullable=False),
    Column("erased", Boolean, nullable=False),
    *_log_position(),
)

#: One row per ClipRecorded: a rule hit's clip, or why there is none.
clips = Table(
    "clips", metadata,
    Column("event_id", Text, primary_key=True),
    Column("evidence_id", Text, nullable=False),
    Column("rule_event_id", Text, nullable=False),
    Column("camera_id", Text, nullable=False),
    Column("window_start", TS, nullable=False),
    Column("window_end", TS, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("clip_ref", Text),
    Column("clip_start_at", TS),
    Column("clip_end_at", TS),
    Column("size_bytes", BigInteger, nullable=False),
    Column("segment_refs", ARRAY(Text), nullable=False),
    Column("skipped", JSONB, nullable=False),
    Column("gaps", JSONB, nullable=False),
    Column("erased", Boolean, nullable=False),
    *_log_position(),
)

# ------------------------------------------------------------------------ privacy
erasures = Table(
    "erasures", metadata,
    Column("event_id", Text, primary_key=True),
    Column("occurred_at", TS, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detection_ids", ARRAY(Text), nullable=False),
    Column("snapshot_refs", ARRAY(Text), nullable=False),
)

#: Every detection id ever erased: embeddings for these ids are never (re)inserted.
erased_detections = Table(
    "erased_detections", metadata,
    Column("detection_id", Text, primary_key=True),
    Column("erasure_event_id", Text, nullable=False),
    Column("erased_at", TS, nullable=False),
)

# ------------------------------------------------------------------------ bookkeeping
#: The projector's read position, written in the same transaction as the rows.
projector_offsets = Table(
    "projector_offsets", metadata,
    Column("consumer", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", TS, nullable=False),
)

#: Messages the projector could not fold (also sent to the DLQ topic).
projector_dead_letters = Table(
    "projector_dead_letters", metadata,
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("dead_lettered_at", TS, nullable=False),
)

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("checksum", Text, nullable=False),
    Column("applied_at", TS, nullable=False),
)

#: Tables that replay --verify compares (bookkeeping is not part of the read model).
READ_MODEL_TABLES: tuple[Table, ...] = (
    sites, edges, cameras, zones, lines, rules, routes, frames, recordings, frame_analyses,
    detections, detection_daily_counts, embeddings, scene_events, alerts, alert_events,
    commands, notifications, health_events, erasures, erased_detections, evidence,
    clips,
)
BOOKKEEPING_TABLES: tuple[Table, ...] = (
    projector_offsets, projector_dead_letters, schema_migrations,
)

"""One fold function per event type: event -> rows/statements added to a `Batch`.

Folds are pure with respect to the database: they only describe writes, and
`Batch.write` applies them in one transaction. Every write is idempotent and
order-tolerant so that redelivery, duplicates (same event id at another offset) and any
batch chunking give the same final state (docs/architecture.md, "Read models"):

- append tables (frames, detections, scene_events, alert_events, ...) are keyed by event
  id (or detection id) and inserted with ``ON CONFLICT DO NOTHING``;
- state tables (alerts, cameras, edges, config entities) are updated only when the event
  is newer than what the row already reflects: alerts by ``version`` (strictly increasing
  per alert, one partition per incident), the others by ``(event time, event id)``;
- erasure is a set (``erased_detections``) checked on every embedding insert, so the
  order in which the privacy topic and the embeddings topic are read does not matter.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from projections.access_log import FIELDS as ACCESS_FIELDS
from projections.access_log import content_hash
from schemas import events as ev
from schemas.synthetic import is_synthetic
from vigil.errors import VigilError
from vigil.redact import redact


class HandlerError(VigilError):
    """The event decoded but cannot be folded (bad values): it goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class Position:
    topic: str
    partition: int
    offset: int


class PackedVector(bytes):
    """A vector in pgvector's binary wire form of ``halfvec`` (uint16 dim, uint16 0, then
    IEEE half-precision values, big-endian).

    Packing 192 floats costs ~4 us; formatting them as text (the other wire form) ~150 us,
    which was the largest single cost of a replay of an embedding-heavy log. Packing to
    half precision here is the same rounding the server's float4 -> halfvec cast does.
    """


_VECTOR_FORMATS: dict[int, struct.Struct] = {}


def pack_vector(values: list[float]) -> PackedVector:
    n = len(values)
    fmt = _VECTOR_FORMATS.get(n)
    if fmt is None:
        fmt = _VECTOR_FORMATS.setdefault(n, struct.Struct(f">HH{n}e"))
    try:
        return PackedVector(fmt.pack(n, 0, *values))
    except (struct.error, OverflowError) as exc:  # beyond half precision (|x| > 65504)
        raise HandlerError(f"embedding value out of range: {exc}") from exc


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, bytes):
        return base64.b64encode(o).decode()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def payload(event: ev.Event, drop: tuple[str, ...] = ()) -> str:
    """The event as canonical JSON (sorted keys) for the JSONB payload columns."""
    d = dataclasses.asdict(event)
    for k in drop:
        d.pop(k, None)
    return json.dumps(d, default=_json_default, sort_keys=True, separators=(",", ":"))


@dataclass
class Batch:
    """Writes collected from a run of events, applied by `projections.writer`."""

    #: Insert-only rows per table (ON CONFLICT DO NOTHING), in arrival order.
    appends: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    #: Ordered state statements (sql key, params): applied in arrival order.
    ops: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    #: Per-key "latest wins" reductions for high-volume state (camera last frame, edges).
    last_frame: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    last_heartbeat: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: Months touched by detections, so their partitions exist before the insert.
    months: set[date] = field(default_factory=set)
    #: UTC days touched by embeddings (daily partitions), likewise.
    days: set[date] = field(default_factory=set)
    events: int = 0

    def append(self, table: str, row: tuple[Any, ...]) -> None:
        self.appends.setdefault(table, []).append(row)

    def op(self, key: str, params: tuple[Any, ...]) -> None:
        self.ops.append((key, params))


Fold = Callable[[Batch, Any, Position, int], None]
FOLDS: dict[type[ev.Event], Fold] = {}


def folds(cls: type[ev.Event]) -> Callable[[Fold], Fold]:
    def deco(fn: Fold) -> Fold:
        FOLDS[cls] = fn
        return fn

    return deco


def fold(batch: Batch, event: ev.Event, pos: Position, embedding_dim: int) -> None:
    """Add `event`'s writes to `batch`; raises HandlerError for an unfoldable event."""
    fn = FOLDS.get(type(event))
    if fn is None:
        raise HandlerError(f"no projection for event type {type(event).__name__}")
    fn(batch, event, pos, embedding_dim)
    batch.events += 1


def _newer(a: tuple[Any, ...] | None, b: tuple[Any, ...]) -> bool:
    return a is None or (b[0], b[1]) > (a[0], a[1])


# ------------------------------------------------------------------------ frames & video
@folds(ev.FrameCaptured)
def fold_frame_captured(b: Batch, e: ev.FrameCaptured, p: Position, _d: int) -> None:
    b.append("frames", (e.event_id, e.camera_id, e.edge_id, e.sequence, e.occurred_at,
                        e.width, e.height, e.motion_score, e.object_ref, e.jpeg is not None,
                        p.partition, p.offset))
    if is_synthetic(e.camera_id):
        return  # the probe's frame: in the tables, never among the cameras
    cur = b.last_frame.get(e.camera_id)
    row = (e.occurred_at, e.sequence, e.event_id)
    if cur is None or row > cur:
        b.last_frame[e.camera_id] = row


@folds(ev.SegmentRecorded)
def fold_segment_recorded(b: Batch, e: ev.SegmentRecorded, p: Position, _d: int) -> None:
    b.append("recordings", (e.event_id, e.camera_id, e.edge_id, e.object_ref, e.start_at,
                            e.end_at, e.size_bytes, e.container, p.partition, p.offset))


@folds(ev.FrameAnalyzed)
def fold_frame_analyzed(b: Batch, e: ev.FrameAnalyzed, p: Position, _d: int) -> None:
    b.append("frame_analyses", (
        e.event_id, e.causation_id, e.camera_id, e.edge_id, e.frame_sequence, e.occurred_at,
        e.skipped, len(e.detections), e.detector_model, e.detector_version, e.embedder_model,
        e.inference_ms, e.frame_ref, p.partition, p.offset))
    if e.detections:
        b.months.add(date(e.occurred_at.year, e.occurred_at.month, 1))
    for d in e.detections:
        b.append("detections", (
            d.detection_id, e.occurred_at, e.event_id, e.causation_id, e.camera_id,
            e.frame_sequence, d.label, d.score, d.x1, d.y1, d.x2, d.y2, d.has_embedding,
            p.partition, p.offset))


@folds(ev.AppearanceEmbedded)
def fold_appearance_embedded(b: Batch, e: ev.AppearanceEmbedded, p: Position, dim: int) -> None:
    if len(e.vector) != dim:
        raise HandlerError(f"embedding has {len(e.vector)} dimensions, the read model {dim}")
    vec = pack_vector(e.vector)
    at = e.occurred_at.astimezone(UTC)
    b.days.add(date(at.year, at.month, at.day))
    b.append("embeddings", (e.detection_id, e.event_id, e.camera_id, e.frame_sequence,
                            e.occurred_at, e.model, vec, p.partition, p.offset))


# ------------------------------------------------------------------------ heartbeats
@folds(ev.EdgeHeartbeat)
def fold_edge_heartbeat(b: Batch, e: ev.EdgeHeartbeat, p: Position, _d: int) -> None:
    cur = b.last_heartbeat.get(e.edge_id)
    if cur is None or (e.occurred_at, e.event_id) > (cur[0], cur[1]):
        streams = json.dumps([dataclasses.asdict(s) for s in e.streams],
                             default=_json_default, sort_keys=True)
        b.last_heartbeat[e.edge_id] = (
            e.occurred_at, e.event_id, e.site_id, e.version, e.interval_s, streams,
            e.disk_free_bytes, e.memory_rss_bytes, e.spool_backlog, e.spool_evicted)


# ------------------------------------------------------------------------ scene
def _scene(b: Batch, e: ev.Event, p: Position, **cols: Any) -> None:
    b.append("scene_events", (
        e.event_id, e.event_type, e.occurred_at, cols["camera_id"], cols.get("zone_id"),
        cols.get("line_id"), cols.get("track_id"), cols.get("rule_id"), cols.get("rule_type"),
        cols.get("severity"), e.causation_id, e.correlation_id, payload(e), p.partition,
        p.offset))


@folds(ev.ZoneEntered)
def fold_zone_entered(b: Batch, e: ev.ZoneEntered, p: Position, _d: int) -> None:
    _scene(b, e, p, camera_id=e.camera_id, zone_id=e.zone_id, track_id=e.track_id)


@folds(ev.ZoneExited)
def fold_zone_exited(b: Batch, e: ev.ZoneExited, p: Position, _d: int) -> None:
    _scene(b, e, p, camera_id=e.camera_id, zone_id=e.zone_id, track_id=e.track_id)


@folds(ev.LineCrossed)
def fold_line_crossed(b: Batch, e: ev.LineCrossed, p: Position, _d: int) -> None:
    _scene(b, e, p, camera_id=e.camera_id, line_id=e.line_id, track_id=e.track_id)


@folds(ev.RuleTriggered)
def fold_rule_triggered(b: Batch, e: ev.RuleTriggered, p: Position, _d: int) -> None:
    _scene(b, e, p, camera_id=e.camera_id, zone_id=e.zone_id, rule_id=e.rule_id,
           rule_type=e.rule_type, severity=e.severity,
           track_id=e.track_ids[0] if len(e.track_ids) == 1 else None)


@folds(ev.RuleCleared)
def fold_rule_cleared(b: Batch, e: ev.RuleCleared, p: Position, _d: int) -> None:
    _scene(b, e, p, camera_id=e.camera_id, zone_id=e.zone_id, rule_id=e.rule_id,
           rule_type=e.rule_type)


@folds(ev.TrackSummary)
def fold_track_summary(b: Batch, e: ev.TrackSummary, p: Position, _d: int) -> None:
    _scene(b, e, p, camera_id=e.camera_id, track_id=e.track_id)


# ------------------------------------------------------------------------ evidence
@folds(ev.EvidenceCaptured)
def fold_evidence_captured(b: Batch, e: ev.EvidenceCaptured, p: Position, _d: int) -> None:
    b.append("evidence", (
        e.event_id, e.rule_event_id, e.camera_id, e.rule_id, e.rule_type, e.zone_id,
        e.line_id, e.frame_event_id, e.analysis_event_id, e.occurred_at, e.frame_at,
        e.width, e.height, e.snapshot_ref, e.annotated_ref, e.thumbnail_ref,
        list(e.track_ids), list(e.detection_ids), list(e.highlighted_detection_ids),
        p.partition, p.offset))


@folds(ev.ClipRecorded)
def fold_clip_recorded(b: Batch, e: ev.ClipRecorded, p: Position, _d: int) -> None:
    skipped = json.dumps([{"ref": s.ref, "reason": s.reason} for s in e.skipped])
    gaps = json.dumps([{"start_at": g.start_at.isoformat(), "end_at": g.end_at.isoformat()}
                       for g in e.gaps])
    b.append("clips", (
        e.event_id, e.evidence_id, e.rule_event_id, e.camera_id, e.window_start,
        e.window_end, e.status, e.reason, e.clip_ref, e.clip_start_at, e.clip_end_at,
        e.size_bytes, list(e.segment_refs), skipped, gaps, p.partition, p.offset))


# ------------------------------------------------------------------------ commands
def _command(b: Batch, e: ev.AcknowledgeAlert | ev.ResolveAlert | ev.AssignAlert
             | ev.CommentOnAlert, p: Position) -> None:
    b.append("commands", (e.event_id, e.event_type, e.alert_id, e.operator, e.occurred_at,
                          getattr(e, "expected_version", None), payload(e), p.partition,
                          p.offset))


@folds(ev.AcknowledgeAlert)
def fold_acknowledge_alert(b: Batch, e: ev.AcknowledgeAlert, p: Position, _d: int) -> None:
    _command(b, e, p)


@folds(ev.ResolveAlert)
def fold_resolve_alert(b: Batch, e: ev.ResolveAlert, p: Position, _d: int) -> None:
    _command(b, e, p)


@folds(ev.AssignAlert)
def fold_assign_alert(b: Batch, e: ev.AssignAlert, p: Position, _d: int) -> None:
    _command(b, e, p)


@folds(ev.CommentOnAlert)
def fold_comment_on_alert(b: Batch, e: ev.CommentOnAlert, p: Position, _d: int) -> None:
    _command(b, e, p)


# ------------------------------------------------------------------------ alerts
def _alert_event(b: Batch, e: ev.Event, p: Position, alert_id: str, incident_key: str | None,
                 version: int | None) -> None:
    b.append("alert_events", (e.event_id, alert_id, incident_key, e.event_type, e.occurred_at,
                              version, e.causation_id, e.correlation_id, payload(e),
                              p.partition, p.offset))


@folds(ev.AlertRaised)
def fold_alert_raised(b: Batch, e: ev.AlertRaised, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, e.incident_key, e.version)
    b.op("alert_raised", (e.alert_id, e.incident_key, e.severity, e.site_id, e.camera_id,
                          e.zone_id, e.rule_id, e.rule_type, e.version, e.occurred_at,
                          e.occurred_at, e.first_evidence_at, e.last_evidence_at,
                          e.snapshot_ref, e.event_id, e.event_id))


@folds(ev.AlertRepeated)
def fold_alert_repeated(b: Batch, e: ev.AlertRepeated, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, e.incident_key, e.version)
    b.op("alert_repeated", (e.occurrences, e.last_evidence_at, e.version, e.occurred_at,
                            e.event_id, e.alert_id, e.version))


@folds(ev.AlertEscalated)
def fold_alert_escalated(b: Batch, e: ev.AlertEscalated, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, e.incident_key, e.version)
    b.op("alert_escalated", (e.level, e.occurred_at, e.version, e.occurred_at, e.event_id,
                             e.alert_id, e.version))


@folds(ev.AlertAcknowledged)
def fold_alert_acknowledged(b: Batch, e: ev.AlertAcknowledged, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, e.incident_key, e.version)
    b.op("alert_acknowledged", (e.occurred_at, e.operator, e.note, e.version, e.occurred_at,
                                e.event_id, e.alert_id, e.version))


@folds(ev.AlertResolved)
def fold_alert_resolved(b: Batch, e: ev.AlertResolved, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, e.incident_key, e.version)
    b.op("alert_resolved", (e.occurred_at, e.operator, e.resolution, e.automatic, e.version,
                            e.occurred_at, e.event_id, e.alert_id, e.version))


@folds(ev.AlertAssigned)
def fold_alert_assigned(b: Batch, e: ev.AlertAssigned, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, e.incident_key, e.version)
    b.op("alert_assigned", (e.assignee, e.version, e.occurred_at, e.event_id, e.alert_id,
                            e.version))


@folds(ev.AlertCommented)
def fold_alert_commented(b: Batch, e: ev.AlertCommented, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, e.incident_key, e.version)
    b.op("alert_commented", (e.version, e.occurred_at, e.event_id, e.alert_id, e.version))


@folds(ev.CommandRejected)
def fold_command_rejected(b: Batch, e: ev.CommandRejected, p: Position, _d: int) -> None:
    _alert_event(b, e, p, e.alert_id, None, None)


# ------------------------------------------------------------------------ notifications
@folds(ev.NotificationDelivered)
def fold_notification_delivered(
    b: Batch, e: ev.NotificationDelivered, p: Position, _d: int
) -> None:
    b.append("notifications", (e.event_id, e.alert_id, e.alert_event_id, "delivered",
                               e.destination, e.channel, e.attempts, e.status_code, None,
                               e.occurred_at, p.partition, p.offset))


@folds(ev.NotificationFailed)
def fold_notification_failed(b: Batch, e: ev.NotificationFailed, p: Position, _d: int) -> None:
    b.append("notifications", (e.event_id, e.alert_id, e.alert_event_id, "failed",
                               e.destination, e.channel, e.attempts, None, e.reason,
                               e.occurred_at, p.partition, p.offset))


@folds(ev.RetryNotification)
def fold_retry_notification(b: Batch, e: ev.RetryNotification, p: Position, _d: int) -> None:
    """The operator's retry request is part of the alert's notification history."""
    b.append("notifications", (e.event_id, e.alert_id, e.notification_event_id,
                               "retry-requested", "", "", 0, None,
                               f"requested by {e.requested_by}", e.occurred_at, p.partition,
                               p.offset))


# ------------------------------------------------------------------------ config
@folds(ev.CameraConfigured)
def fold_camera_configured(b: Batch, e: ev.CameraConfigured, p: Position, _d: int) -> None:
    b.op("camera_configured", (e.camera_id, e.site_id, e.edge_id, e.name, e.timezone,
                               e.enabled, e.occurred_at, e.event_id))
    b.op("site_seen", (e.site_id,))


@folds(ev.ZoneConfigured)
def fold_zone_configured(b: Batch, e: ev.ZoneConfigured, p: Position, _d: int) -> None:
    poly = json.dumps([{"x": q.x, "y": q.y} for q in e.polygon])
    b.op("zone_configured", (e.zone_id, e.camera_id, e.name, e.kind, poly, e.occurred_at,
                             e.event_id))


@folds(ev.LineConfigured)
def fold_line_configured(b: Batch, e: ev.LineConfigured, p: Position, _d: int) -> None:
    b.op("line_configured", (e.line_id, e.camera_id, e.name,
                             json.dumps({"x": e.a.x, "y": e.a.y}),
                             json.dumps({"x": e.b.x, "y": e.b.y}), e.occurred_at, e.event_id))


@folds(ev.RuleConfigured)
def fold_rule_configured(b: Batch, e: ev.RuleConfigured, p: Position, _d: int) -> None:
    sched = json.dumps(dataclasses.asdict(e.schedule), sort_keys=True)
    b.op("rule_configured", (
        e.rule_id, e.camera_id, e.rule_type, e.zone_id, e.line_id, e.severity, e.enabled,
        sched, list(e.classes), e.dwell_s, e.gap_tolerance_s, e.min_people, e.clear_below,
        e.window_s, e.direction, e.cooldown_s, e.escalation_s, e.max_escalation_level,
        e.auto_resolve, e.occurred_at, e.event_id))


@folds(ev.RouteConfigured)
def fold_route_configured(b: Batch, e: ev.RouteConfigured, p: Position, _d: int) -> None:
    """The notifier folds routes from vigil.config itself (agents/notifier.py); this copy
    is what the API shows (GET /api/v1/routes)."""
    b.op("route_configured", (
        e.route_id, e.site_id, list(e.cameras), list(e.rule_types), list(e.severities),
        list(e.event_types), [int(v) for v in e.levels], list(e.channels),
        list(e.recipients), e.quiet_start, e.quiet_end, e.timezone, e.enabled,
        e.occurred_at, e.event_id))


ENTITY_TABLES = {"camera": ("cameras", "camera_id"), "zone": ("zones", "zone_id"),
                 "line": ("lines", "line_id"), "rule": ("rules", "rule_id"),
                 "route": ("routes", "route_id")}


@folds(ev.EntityDeleted)
def fold_entity_deleted(b: Batch, e: ev.EntityDeleted, p: Position, _d: int) -> None:
    if e.entity_kind not in ENTITY_TABLES:
        raise HandlerError(f"EntityDeleted of unknown kind {e.entity_kind!r}")
    b.op(f"delete_{e.entity_kind}", (e.occurred_at, e.occurred_at, e.event_id, e.entity_id,
                                     e.occurred_at, e.event_id))


# ------------------------------------------------------------------------ health
def _health(b: Batch, e: ev.Event, p: Position, **cols: Any) -> None:
    # Reasons quote error messages; events written by an edge from before redaction may
    # still carry a camera password, which must not reach the read model (vigil.redact).
    reason = cols.get("reason")
    b.append("health_events", (e.event_id, e.event_type, e.occurred_at, cols.get("edge_id"),
                               cols.get("site_id"), cols.get("camera_id"),
                               cols.get("worker_id"), redact(reason) if reason else reason,
                               redact(payload(e)),
                               p.partition, p.offset))


@folds(ev.EdgeOffline)
def fold_edge_offline(b: Batch, e: ev.EdgeOffline, p: Position, _d: int) -> None:
    _health(b, e, p, edge_id=e.edge_id, site_id=e.site_id)
    b.op("edge_status", (e.edge_id, e.site_id, "offline", e.occurred_at, e.event_id,
                         e.last_seen_at, e.missed_heartbeats))


@folds(ev.EdgeOnline)
def fold_edge_online(b: Batch, e: ev.EdgeOnline, p: Position, _d: int) -> None:
    _health(b, e, p, edge_id=e.edge_id, site_id=e.site_id)
    b.op("edge_status", (e.edge_id, e.site_id, "online", e.occurred_at, e.event_id, None, 0))


@folds(ev.StreamDown)
def fold_stream_down(b: Batch, e: ev.StreamDown, p: Position, _d: int) -> None:
    _health(b, e, p, edge_id=e.edge_id, camera_id=e.camera_id, reason=e.reason)
    b.op("stream_state", (e.camera_id, e.edge_id, "down", redact(e.reason), e.occurred_at,
                          e.event_id))


@folds(ev.StreamUp)
def fold_stream_up(b: Batch, e: ev.StreamUp, p: Position, _d: int) -> None:
    _health(b, e, p, edge_id=e.edge_id, camera_id=e.camera_id)
    b.op("stream_state", (e.camera_id, e.edge_id, "up", None, e.occurred_at, e.event_id))


@folds(ev.InferenceDegraded)
def fold_inference_degraded(b: Batch, e: ev.InferenceDegraded, p: Position, _d: int) -> None:
    _health(b, e, p, worker_id=e.worker_id, reason=e.reason)


@folds(ev.InferenceRecovered)
def fold_inference_recovered(b: Batch, e: ev.InferenceRecovered, p: Position, _d: int) -> None:
    _health(b, e, p, worker_id=e.worker_id)


@folds(ev.RetentionRun)
def fold_retention_run(b: Batch, e: ev.RetentionRun, p: Position, _d: int) -> None:
    """Kept with the health events: what retention did, queryable next to outages."""
    _health(b, e, p, worker_id="retention", reason=e.error)


# ------------------------------------------------------------------------ privacy
@folds(ev.AppearanceErased)
def fold_appearance_erased(b: Batch, e: ev.AppearanceErased, p: Position, _d: int) -> None:
    b.append("erasures", (e.event_id, e.occurred_at, e.requested_by, e.reason,
                          list(e.detection_ids), list(e.snapshot_refs)))
    b.op("erase", (list(e.detection_ids), e.event_id, e.occurred_at))
    if e.snapshot_refs:
        refs = list(e.snapshot_refs)
        b.op("erase_evidence", (refs, refs, refs))
        b.op("erase_clips", (refs,))


# ------------------------------------------------------------------------ access record
@folds(ev.AccessRecorded)
def fold_access_recorded(b: Batch, e: ev.AccessRecorded, p: Position, _d: int) -> None:
    """Chained onto the access record in log order (projections/access_log.py)."""
    h = content_hash({f: getattr(e, f) for f in ACCESS_FIELDS})
    # parameters in the order of the statement (writer.OPS["access_recorded"])
    b.op("access_recorded", (h, p.partition, p.offset,
                             *(getattr(e, f) for f in ACCESS_FIELDS), h, e.event_id))

"""Vigil's events: one frozen record per event, all sharing one envelope.

The Python records mirror the committed `.avsc` files in `schemas/avro/` field for field;
`tests/unit/test_schemas.py` fails if they drift apart. The `.avsc` files are the public
contract (downstream consumers need nothing else); these classes exist so that agents and
projections handle typed records instead of dicts read by string key.

Timestamps are timezone-aware UTC datetimes (Avro `timestamp-micros`).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Self

#: Namespace of every record; a record's full Avro name is NAMESPACE + "." + class name.
NAMESPACE = "vigil.events"

#: UUID namespace for ids derived from inputs (replays must produce identical events).
DERIVED_ID_NAMESPACE = uuid.UUID("6f1c2a52-5d0e-4c77-9a52-8a0f4e1b7c10")


def utcnow() -> datetime:
    """Wall-clock time in UTC, truncated to what Avro timestamp-micros keeps."""
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


_DERIVED_NS_BYTES = DERIVED_ID_NAMESPACE.bytes


def derived_event_id(*parts: object) -> str:
    """An event id that is a pure function of its inputs, so a replay yields the same id.

    It is ``str(uuid.uuid5(DERIVED_ID_NAMESPACE, "|".join(map(str, parts))))`` (a unit
    test holds it to that), computed without building a `uuid.UUID`: the scene agent
    derives one per output, thousands in a second when a rule fires on every camera,
    and the UUID object was 60 % of the cost."""
    d = bytearray(hashlib.sha1(_DERIVED_NS_BYTES + "|".join(map(str, parts)).encode(),
                               usedforsecurity=False).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x50  # version 5
    d[8] = (d[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The envelope every event carries.

    `occurred_at` is event time (for frames: capture time), never processing time.
    `causation_id` is the id of the event that directly caused this one and
    `correlation_id` the id of the first event of the chain, so an alert can be traced
    back to the frames that caused it.
    """

    event_id: str
    event_type: str
    occurred_at: datetime
    producer: str
    causation_id: str | None = None
    correlation_id: str | None = None


    @classmethod
    def create(
        cls,
        *,
        producer: str,
        occurred_at: datetime | None = None,
        cause: Event | None = None,
        event_id: str | None = None,
        **fields: object,
    ) -> Self:
        """Build an event, filling the envelope; `cause` links causation and correlation."""
        causation_id = fields.pop("causation_id", None)
        correlation_id = fields.pop("correlation_id", None)
        if cause is not None:
            causation_id = cause.event_id
            correlation_id = cause.correlation_id or cause.event_id
        return cls(
            event_id=event_id or new_event_id(),
            event_type=cls.__name__,
            occurred_at=occurred_at or utcnow(),
            producer=producer,
            causation_id=causation_id,  # type: ignore[arg-type]
            correlation_id=correlation_id,  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )

    def evolve(self, **changes: object) -> Self:
        return replace(self, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- shared parts


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """A point in normalised image coordinates: (0, 0) top-left, (1, 1) bottom-right."""

    x: float
    y: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Detection:
    """One detected object; box corners in normalised image coordinates."""

    detection_id: str
    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    has_embedding: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStatus:
    camera_id: str
    state: str  # "up" | "down" | "reconnecting"
    fps: float
    frames_captured: int
    frames_dropped: int
    last_frame_at: datetime | None = None
    #: recorded segments waiting for upload; segments lost before their upload (v2)
    segments_pending: int = 0
    segments_evicted: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When a rule is armed. kind: "always", "night" (22:00-06:00) or "custom" (start/end
    as HH:MM in the camera's time zone; start > end wraps past midnight)."""

    kind: str = "always"
    start: str | None = None
    end: str | None = None


# --------------------------------------------------------------------------- vigil.frames


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameCaptured(Event):
    """A decimated camera frame. Exactly one of `jpeg` (inline) and `object_ref` is set."""

    edge_id: str
    camera_id: str
    sequence: int
    width: int
    height: int
    motion_score: float
    jpeg: bytes | None = None
    object_ref: str | None = None
    keyframe_only: bool = False


# --------------------------------------------------------------------------- vigil.heartbeats


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeHeartbeat(Event):
    edge_id: str
    site_id: str
    version: str
    interval_s: float
    streams: list[StreamStatus]
    disk_free_bytes: int
    memory_rss_bytes: int
    spool_backlog: int
    spool_evicted: int
    #: the recording buffer: segments waiting for upload, bytes on disk (v2)
    record_backlog: int = 0
    record_buffer_bytes: int = 0


# --------------------------------------------------------------------------- vigil.recordings


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentRecorded(Event):
    edge_id: str
    camera_id: str
    object_ref: str
    start_at: datetime
    end_at: datetime
    size_bytes: int
    container: str = "mp4"


# --------------------------------------------------------------------------- vigil.detections


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameAnalyzed(Event):
    """Inference result for one frame; `occurred_at` is the frame's capture time and
    `causation_id` the frame's event id. `skipped` frames were seen but not run through
    the detector (no motion)."""

    edge_id: str
    camera_id: str
    frame_sequence: int
    width: int
    height: int
    skipped: bool
    detections: list[Detection]
    detector_model: str
    detector_version: str
    embedder_model: str | None = None
    embedder_version: str | None = None
    inference_ms: float = 0.0
    frame_ref: str | None = None


# --------------------------------------------------------------------------- vigil.embeddings


@dataclass(frozen=True, slots=True, kw_only=True)
class AppearanceEmbedded(Event):
    """Appearance descriptor of one person crop. Personal data: short retention topic."""

    camera_id: str
    detection_id: str
    frame_sequence: int
    model: str
    vector: list[float]


# --------------------------------------------------------------------------- vigil.scene


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneEntered(Event):
    camera_id: str
    zone_id: str
    track_id: str
    #: the track's object class (person, car, ...): counts per zone, class and hour
    label: str = "person"


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneExited(Event):
    camera_id: str
    zone_id: str
    track_id: str
    entered_at: datetime
    dwell_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LineCrossed(Event):
    camera_id: str
    line_id: str
    track_id: str
    direction: str  # "forward" (left-to-right of a->b) | "backward"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleTriggered(Event):
    """A rule fired. `value` is what was measured (dwell seconds, people count) and
    `threshold` what it was compared with."""

    camera_id: str
    zone_id: str | None = None
    rule_id: str
    rule_type: str  # loitering | crowd | perimeter | line_crossing
    severity: str  # info | warning | critical
    value: float
    threshold: float
    track_ids: list[str]
    first_evidence_at: datetime
    last_evidence_at: datetime
    evidence_event_ids: list[str]
    frame_ref: str | None = None
    #: The rule's alert policy (v2): auto-resolve on RuleCleared, and the cooldown in
    #: seconds during which a new hit counts as a repeat. None = the site-wide default.
    auto_resolve: bool | None = None
    cooldown_s: float | None = None
    #: (v3) the detection id of each track in the frame that completed the evidence, so
    #: the evidence stage can highlight them without re-running the tracker.
    detection_ids: list[str] = field(default_factory=list)
    #: (v4) when an unacknowledged alert of this rule escalates, and how far; None = default.
    escalation_s: float | None = None
    max_escalation_level: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleCleared(Event):
    camera_id: str
    zone_id: str | None = None
    rule_id: str
    rule_type: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackSummary(Event):
    """Emitted when a track ends: its life in event time."""

    camera_id: str
    track_id: str
    label: str
    first_seen_at: datetime
    last_seen_at: datetime
    observations: int


# --------------------------------------------------------------------------- vigil.evidence


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceCaptured(Event):
    """The still evidence of one rule hit is stored: the frame as captured, an annotated
    rendering and a thumbnail. Published only after the objects exist; `causation_id` is
    the RuleTriggered event id and the object keys derive from it (docs/evidence.md)."""

    camera_id: str
    rule_event_id: str
    rule_id: str
    rule_type: str
    zone_id: str | None = None
    line_id: str | None = None
    frame_event_id: str
    analysis_event_id: str
    frame_at: datetime
    first_evidence_at: datetime
    last_evidence_at: datetime
    width: int
    height: int
    snapshot_ref: str
    annotated_ref: str
    thumbnail_ref: str
    track_ids: list[str]
    detection_ids: list[str]
    highlighted_detection_ids: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipSkip:
    """A segment left out of a clip, and why."""

    ref: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipGap:
    """A span of the window with no video."""

    start_at: datetime
    end_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipRecorded(Event):
    """A rule hit's clip from the recorded segments (docs/evidence.md, "Clips"):
    complete, partial (`skipped`, `gaps`) or no_recording (`reason`)."""

    camera_id: str
    evidence_id: str
    rule_event_id: str
    window_start: datetime
    window_end: datetime
    status: str  # complete | partial | no_recording
    reason: str = ""
    clip_ref: str | None = None
    clip_start_at: datetime | None = None
    clip_end_at: datetime | None = None
    size_bytes: int = 0
    segment_refs: list[str]
    skipped: list[ClipSkip]
    gaps: list[ClipGap]


# --------------------------------------------------------------------------- vigil.commands


@dataclass(frozen=True, slots=True, kw_only=True)
class AcknowledgeAlert(Event):
    """Operator intent; `event_id` is the command id. `expected_version` guards against
    acting on a stale view (optional)."""

    alert_id: str
    operator: str
    note: str = ""
    expected_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveAlert(Event):
    alert_id: str
    operator: str
    resolution: str = ""
    expected_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignAlert(Event):
    """Operator intent: hand the alert to `assignee` (a console user name or a team);
    an empty `assignee` unassigns it."""

    alert_id: str
    operator: str
    assignee: str
    expected_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommentOnAlert(Event):
    """Operator intent: add a note to the alert's history (allowed in every state)."""

    alert_id: str
    operator: str
    text: str


# --------------------------------------------------------------------------- vigil.alerts


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised(Event):
    alert_id: str
    incident_key: str
    site_id: str | None = None
    camera_id: str
    zone_id: str | None = None
    rule_id: str
    rule_type: str
    severity: str
    first_evidence_at: datetime
    last_evidence_at: datetime
    snapshot_ref: str | None = None
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRepeated(Event):
    """The incident fired again while its alert was open or cooling down."""

    alert_id: str
    incident_key: str
    occurrences: int
    last_evidence_at: datetime
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEscalated(Event):
    """Escalation is the one wall-clock decision; `deadline_at` is when it was due and
    `occurred_at` when it actually fired (later if no worker was running)."""

    alert_id: str
    incident_key: str
    level: int
    deadline_at: datetime
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertAcknowledged(Event):
    alert_id: str
    incident_key: str
    operator: str
    note: str
    command_id: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertAssigned(Event):
    alert_id: str
    incident_key: str
    operator: str
    assignee: str
    command_id: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertCommented(Event):
    alert_id: str
    incident_key: str
    operator: str
    text: str
    command_id: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertResolved(Event):
    alert_id: str
    incident_key: str
    operator: str | None = None
    resolution: str
    automatic: bool
    command_id: str | None = None
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRejected(Event):
    """A command that could not be applied; `causation_id` is the command id."""

    command_id: str
    command_type: str
    alert_id: str
    operator: str
    reason: str


# --------------------------------------------------------------------------- vigil.notifications


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationDelivered(Event):
    alert_id: str
    alert_event_id: str
    destination: str
    channel: str
    attempts: int
    status_code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationFailed(Event):
    alert_id: str
    alert_event_id: str
    destination: str
    channel: str
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryNotification(Event):
    """Operator command (API or `vigil notify retry`) to the notifier, on vigil.notifications:
    deliver a failed notification again. `notification_event_id` "*" = every failed one."""

    notification_event_id: str
    alert_id: str
    requested_by: str


# --------------------------------------------------------------------------- vigil.config


@dataclass(frozen=True, slots=True, kw_only=True)
class CameraConfigured(Event):
    camera_id: str
    site_id: str
    edge_id: str
    name: str
    timezone: str = "UTC"
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneConfigured(Event):
    """A polygon zone; kind "zone" or "perimeter"."""

    zone_id: str
    camera_id: str
    name: str
    kind: str
    polygon: list[Point]


@dataclass(frozen=True, slots=True, kw_only=True)
class LineConfigured(Event):
    """A directed line a->b; "forward" is crossing from its left side to its right side."""

    line_id: str
    camera_id: str
    name: str
    a: Point
    b: Point


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleConfigured(Event):
    """A rule on a zone or line. Unused parameters keep their defaults.

    The alert policy (`cooldown_s`, `escalation_s`, `max_escalation_level`,
    `auto_resolve`) is the rule's own only when set; None (v2) means the site-wide policy
    (VIGIL_ALERTS_*). Before v2 they always had a value (900 s escalation and so on),
    which silently overrode the site's policy for every rule."""

    rule_id: str
    camera_id: str
    rule_type: str  # loitering | crowd | perimeter | line_crossing
    zone_id: str | None = None
    line_id: str | None = None
    severity: str = "warning"
    enabled: bool = True
    schedule: Schedule = field(default_factory=Schedule)
    classes: list[str] = field(default_factory=lambda: ["person"])
    dwell_s: float = 300.0
    gap_tolerance_s: float = 10.0
    min_people: int = 5
    clear_below: int = 3
    window_s: float = 10.0
    direction: str | None = None  # line_crossing: "forward" | "backward" | None (both)
    cooldown_s: float | None = None
    escalation_s: float | None = None
    max_escalation_level: int | None = None
    auto_resolve: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfigured(Event):
    """A notification route (schemas/site_config.py RouteModel, docs/notifications.md)."""

    route_id: str
    site_id: str | None = None
    cameras: list[str] = field(default_factory=list)
    rule_types: list[str] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    channels: list[str]
    recipients: list[str] = field(default_factory=list)
    quiet_start: str | None = None
    quiet_end: str | None = None
    timezone: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityDeleted(Event):
    """Written next to a tombstone so that the deletion itself is part of the history."""

    entity_kind: str
    entity_id: str


# --------------------------------------------------------------------------- vigil.health


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeOffline(Event):
    edge_id: str
    site_id: str
    last_seen_at: datetime
    missed_heartbeats: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeOnline(Event):
    edge_id: str
    site_id: str
    offline_since: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamDown(Event):
    edge_id: str
    camera_id: str
    reason: str
    attempt: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamUp(Event):
    edge_id: str
    camera_id: str
    down_since: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceDegraded(Event):
    worker_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceRecovered(Event):
    worker_id: str
    degraded_since: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionRun(Event):
    """One run of the retention service (projections/retention_service.py), on the health
    topic keyed ``retention``: the durable record that retention ran, and what it did."""

    schema_name: str
    outcome: str
    started_at: datetime
    duration_s: float
    report: str
    error: str | None = None


# --------------------------------------------------------------------------- vigil.privacy


@dataclass(frozen=True, slots=True, kw_only=True)
class AppearanceErased(Event):
    """Right to erasure: these detections' embeddings and snapshots are gone for good, and
    every replay must honour it."""

    detection_ids: list[str]
    snapshot_refs: list[str]
    requested_by: str
    reason: str


# --------------------------------------------------------------------------- vigil.access


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRecorded(Event):
    """One API request that read personal data or changed something: who, what, from
    where, with what outcome. Never the data itself: ids only (docs/security.md)."""

    actor_kind: str  # "key" (an API key) or "user" (a console session)
    actor_id: str  # key id, or user id; "anonymous" when no valid credential was sent
    actor_name: str
    role: str
    method: str
    route: str  # the route template, e.g. /api/v1/cameras/{camera_id}
    operation: str
    resource_ids: list[str]  # "name=value" of the ids the request named
    client_address: str
    status: int
    outcome: str  # ok | denied | not_found | rejected | error


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        FrameCaptured,
        EdgeHeartbeat,
        SegmentRecorded,
        FrameAnalyzed,
        AppearanceEmbedded,
        ZoneEntered,
        ZoneExited,
        LineCrossed,
        RuleTriggered,
        RuleCleared,
        TrackSummary,
        EvidenceCaptured,
        ClipRecorded,
        AcknowledgeAlert,
        ResolveAlert,
        AssignAlert,
        CommentOnAlert,
        AlertRaised,
        AlertRepeated,
        AlertEscalated,
        AlertAcknowledged,
        AlertResolved,
        AlertAssigned,
        AlertCommented,
        CommandRejected,
        NotificationDelivered,
        NotificationFailed,
        RetryNotification,
        CameraConfigured,
        ZoneConfigured,
        LineConfigured,
        RuleConfigured,
        RouteConfigured,
        EntityDeleted,
        EdgeOffline,
        EdgeOnline,
        StreamDown,
        AccessRecorded,
        StreamUp,
        InferenceDegraded,
        InferenceRecovered,
        RetentionRun,
        AppearanceErased,
    )
}

"""`vigil projector check`: no stored offset past an event whose row is missing.

The projector's promise (docs/faults.md, "The projector's invariant"): every event of a
projected topic below the offset stored in ``projector_offsets`` is in the read model
(or dead-lettered). Issue 24 was a breach of exactly that: a PostgreSQL crash lost
acknowledged commits and the projector stored later offsets over them, so the read
model silently missed events no projector would ever read again. Counting rows cannot
see it (the log holds duplicates, retention drops rows); this reads the log from its
start up to the stored offsets and looks every event up by its identity.

What counts as "its row", per event type: the row keyed by the event id in the table it
is appended to; for configuration and heartbeats (state, not history), the entity row.
Accounted for without a row: messages in ``projector_dead_letters``, tombstones,
appearance embeddings that were erased or are older than their retention, and entity
deletions. The cost is one read of the retained log: a tool for faults and audits, not
for a hot path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from projections.migrate import set_search_path
from projections.offsets import load_offsets
from schemas import events as ev
from schemas.codec import CodecError, default_codec
from vigil.kafka import consumer_config, offset_of

#: event type -> (table, key column, event attribute) of the row that proves it landed
_ROW: dict[str, tuple[str, str, str]] = {
    "FrameCaptured": ("frames", "event_id", "event_id"),
    "SegmentRecorded": ("recordings", "event_id", "event_id"),
    "FrameAnalyzed": ("frame_analyses", "event_id", "event_id"),
    "AppearanceEmbedded": ("embeddings", "event_id", "event_id"),
    "EdgeHeartbeat": ("edges", "edge_id", "edge_id"),
    "CameraConfigured": ("cameras", "camera_id", "camera_id"),
    "ZoneConfigured": ("zones", "zone_id", "zone_id"),
    "LineConfigured": ("lines", "line_id", "line_id"),
    "RuleConfigured": ("rules", "rule_id", "rule_id"),
    "RouteConfigured": ("routes", "route_id", "route_id"),
    "AppearanceErased": ("erasures", "event_id", "event_id"),
    "AcknowledgeAlert": ("commands", "event_id", "event_id"),
    "ResolveAlert": ("commands", "event_id", "event_id"),
    "NotificationDelivered": ("notifications", "event_id", "event_id"),
    "NotificationFailed": ("notifications", "event_id", "event_id"),
    "RetryNotification": ("notifications", "event_id", "event_id"),
    "AssignAlert": ("commands", "event_id", "event_id"),
    "CommentOnAlert": ("commands", "event_id", "event_id"),
    "AccessRecorded": ("access_log", "event_id", "event_id"),
    "EvidenceCaptured": ("evidence", "event_id", "event_id"),
    "ClipRecorded": ("clips", "event_id", "event_id"),
}
#: folded event types with no row of their own to look for (EntityDeleted updates a row
#: that may never have existed)
NO_ROW = frozenset({"EntityDeleted"})
for _t in ("ZoneEntered", "ZoneExited", "LineCrossed", "RuleTriggered", "RuleCleared",
           "TrackSummary"):
    _ROW[_t] = ("scene_events", "event_id", "event_id")
for _t in ("AlertRaised", "AlertRepeated", "AlertEscalated", "AlertAcknowledged",
           "AlertResolved", "AlertAssigned", "AlertCommented", "CommandRejected"):
    _ROW[_t] = ("alert_events", "event_id", "event_id")
for _t in ("EdgeOffline", "EdgeOnline", "StreamDown", "StreamUp", "InferenceDegraded",
           "InferenceRecovered", "RetentionRun"):
    _ROW[_t] = ("health_events", "event_id", "event_id")

#: How many missing events the report lists (the counts are always complete).
MAX_LISTED = 200


@dataclass
class PartitionReport:
    topic: str
    partition: int
    log_start: int
    log_end: int
    #: the projector's next offset to read (-1 = never committed)
    stored: int
    checked: int = 0
    missing: int = 0


@dataclass
class CheckReport:
    schema: str
    consumer: str
    checked: int = 0
    dead_lettered: int = 0
    #: events of a type this check has no row for (named in `unchecked_types`): a new
    #: event type needs its entry in `_ROW`
    unchecked: int = 0
    unchecked_types: list[str] = field(default_factory=list)
    #: (topic, partition, offset, event type, key) of events below the stored offset
    #: without their row, at most MAX_LISTED of them
    missing: list[tuple[str, int, int, str, str]] = field(default_factory=list)
    missing_total: int = 0
    partitions: list[PartitionReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing_total == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def text(self) -> str:
        lines = [f"projector check of schema {self.schema} (consumer {self.consumer}): "
                 f"{self.checked} event(s) below the stored offsets, {self.dead_lettered} "
                 f"dead-lettered, {self.missing_total} without their row"]
        if self.unchecked:
            lines.append(f"  {self.unchecked} event(s) of types with no row to check: "
                         f"{', '.join(self.unchecked_types)}")
        for p in self.partitions:
            if p.missing or p.log_end > max(p.stored, 0):
                lines.append(f"  {p.topic}[{p.partition}]: log {p.log_start}..{p.log_end}, "
                             f"stored {p.stored}, checked {p.checked}, missing {p.missing}")
        for m in self.missing[:20]:
            lines.append(f"  MISSING {m[0]}[{m[1]}] offset {m[2]}: {m[3]} {m[4]}")
        return "\n".join(lines)


def _consumer(bootstrap: str) -> Consumer:
    """Assigned, never committing; TLS/SASL from the settings like every client."""
    return Consumer(consumer_config("vigil-projector-check", **{
        "bootstrap.servers": bootstrap, "enable.partition.eof": True}))


def partition_positions(dsn: str, schema: str, prefix: str, bootstrap: str,
                        consumer_name: str = "projector") -> list[PartitionReport]:
    """Per projected partition: log start and end, and the stored offset. Cheap (no log
    read): what a fault scenario prints when its pipeline does not drain."""
    from projections.projector import projected_watermarks

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        set_search_path(conn, schema)
        stored = load_offsets(conn, consumer_name)
    c = _consumer(bootstrap)
    out = []
    try:
        for topic, p, lo, hi in projected_watermarks(c, prefix):
            out.append(PartitionReport(topic, p, lo, hi, stored.get((topic, p), -1)))
    finally:
        c.close()
    return out


def check_schema(dsn: str, schema: str, prefix: str, bootstrap: str,
                 consumer_name: str = "projector", timeout_s: float = 300.0) -> CheckReport:
    """Read every projected partition from its log start to its stored offset and report
    the events whose row is not in `schema`."""
    report = CheckReport(schema, consumer_name)
    report.partitions = partition_positions(dsn, schema, prefix, bootstrap, consumer_name)
    codec = default_codec()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        set_search_path(conn, schema)
        dead = {(t, p, o) for t, p, o in conn.execute(
            'SELECT topic, partition, "offset" FROM projector_dead_letters').fetchall()}
        embedding_h = _embedding_retention_h()
        for part in report.partitions:
            upto = part.stored
            if upto <= part.log_start:
                continue
            # (offset, event type, table, key column, key, extra) awaiting a lookup
            wanted: list[tuple[int, str, str, str, str, Any]] = []
            for msg in _read(bootstrap, part.topic, part.partition, part.log_start, upto,
                             timeout_s):
                part.checked += 1
                report.checked += 1
                if (part.topic, part.partition, msg.offset()) in dead:
                    report.dead_lettered += 1
                    continue
                value = msg.value()
                if value is None:
                    continue  # tombstone
                try:
                    event = codec.decode(value)
                except CodecError:
                    _missing(report, part, msg.offset(), "undecodable", "(not dead-lettered)")
                    continue
                row = _ROW.get(type(event).__name__)
                if row is None:
                    if type(event).__name__ not in NO_ROW:
                        report.unchecked += 1
                        if type(event).__name__ not in report.unchecked_types:
                            report.unchecked_types.append(type(event).__name__)
                    continue
                table, col, attr = row
                wanted.append((msg.offset(), type(event).__name__, table, col,
                               str(getattr(event, attr)), event))
            _look_up(conn, report, part, wanted, embedding_h)
    return report


def _embedding_retention_h() -> float:
    from projections.settings import get_projector_settings

    return get_projector_settings().embedding_retention_h


def _read(bootstrap: str, topic: str, partition: int, start: int, upto: int,
          timeout_s: float) -> Any:
    """Messages of one partition with start <= offset < upto."""
    import time

    from confluent_kafka import KafkaError

    c = _consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msgs = c.consume(500, timeout=1.0)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return
                    continue
                if offset_of(m) >= upto:
                    return
                yield m
                if offset_of(m) + 1 >= upto:
                    return
        raise TimeoutError(f"could not read {topic}[{partition}] up to {upto}")
    finally:
        c.close()


def _look_up(conn: psycopg.Connection, report: CheckReport, part: PartitionReport,
             wanted: list[tuple[int, str, str, str, str, Any]], embedding_h: float) -> None:
    by_table: dict[tuple[str, str], set[str]] = {}
    for _off, _typ, table, col, key, _e in wanted:
        by_table.setdefault((table, col), set()).add(key)
    found: dict[tuple[str, str], set[str]] = {}
    for (table, col), keys in by_table.items():
        found[(table, col)] = {r[0] for r in conn.execute(
            f"SELECT {col}::text FROM {table} WHERE {col}::text = ANY(%s)",
            (sorted(keys),)).fetchall()}
    erased: set[str] = set()
    if any(t == "AppearanceEmbedded" for _, t, *_ in wanted):
        erased = {r[0] for r in conn.execute(
            "SELECT detection_id FROM erased_detections").fetchall()}
    cutoff = datetime.now(UTC) - timedelta(hours=embedding_h)
    for off, typ, table, col, key, event in wanted:
        if key in found[(table, col)]:
            continue
        if isinstance(event, ev.AppearanceEmbedded) and (
                event.detection_id in erased or event.occurred_at < cutoff):
            continue  # erased, or expired by retention: gone on purpose
        _missing(report, part, off, typ, key)


def _missing(report: CheckReport, part: PartitionReport, offset: int, typ: str,
             key: str) -> None:
    part.missing += 1
    report.missing_total += 1
    if len(report.missing) < MAX_LISTED:
        report.missing.append((part.topic, part.partition, offset, typ, key))

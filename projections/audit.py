"""`vigil audit alert ID`: why did this alert fire? The evidence chain, read from the log.

alert events (raised, repeated, escalated, acknowledged, resolved, rejections)
  -> operator commands that caused acknowledge/resolve
  -> scene events (RuleTriggered, by the alert events' causation ids)
    -> FrameAnalyzed detections (the RuleTriggered evidence ids)
      -> FrameCaptured frames (the analyses' causation ids: object/snapshot refs)

The read model is only an index here: it says at which topic/partition/offset an event
sits. Every event printed is fetched from Kafka and decoded, and its id is checked, so
the chain is what the log says, not what a projection made of it. Events that have aged
out of their topic (frames keep 7 days) are reported as such.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from projections.handlers import _json_default
from projections.migrate import set_search_path
from schemas import events as ev
from schemas.codec import CodecError, default_codec
from vigil.kafka import consumer_config, offset_of


@dataclass
class Node:
    kind: str
    event_id: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    status: str = "ok"  # ok | not-projected | gone-from-log | id-mismatch
    event: dict[str, Any] | None = None
    children: list[Node] = field(default_factory=list)

    def summary(self) -> str:
        e = self.event or {}
        keys = ("event_type", "occurred_at", "state", "level", "operator", "rule_type",
                "value", "threshold", "camera_id", "frame_sequence", "object_ref",
                "snapshot_ref", "reason", "resolution", "note")
        parts = [f"{k}={e[k]}" for k in keys if e.get(k) not in (None, "")]
        if "detections" in e:
            parts.append("detections=" + ", ".join(
                f"{d['label']}:{d['score']:.2f}[{d['detection_id'][:8]}]"
                for d in e["detections"]))
        where = f"{self.topic}[{self.partition}]@{self.offset}" if self.topic else "?"
        return f"{self.kind} {self.event_id} {where} {self.status} " + " ".join(parts)


@dataclass
class AuditChain:
    alert_id: str
    found: bool
    roots: list[Node]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def text(self) -> str:
        if not self.found:
            return f"alert {self.alert_id}: not found in the read model"
        out = [f"alert {self.alert_id}"]

        def walk(n: Node, depth: int) -> None:
            out.append("  " * depth + "- " + n.summary())
            for c in n.children:
                walk(c, depth + 1)

        for r in self.roots:
            walk(r, 1)
        return "\n".join(out)


class LogReader:
    """Fetches single messages by (topic, partition, offset) and decodes them."""

    def __init__(self, prefix: str) -> None:
        self.consumer = Consumer(consumer_config(f"{prefix}.audit.{uuid.uuid4().hex[:8]}"))
        self.codec = default_codec()

    def fetch(self, topic: str, partition: int, offset: int, timeout: float = 10.0
              ) -> ev.Event | None:
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.consumer.poll(0.5)
            if m is None or m.error() is not None:
                continue
            at = offset_of(m)
            if at < offset:
                continue
            if at > offset:  # offset deleted by retention/compaction
                return None
            try:
                return self.codec.decode(m.value())
            except CodecError:
                return None
        return None

    def close(self) -> None:
        self.consumer.close()


def _as_dict(e: ev.Event) -> dict[str, Any]:
    d = dataclasses.asdict(e)
    d.pop("jpeg", None)
    if isinstance(e, ev.FrameCaptured):
        d["has_jpeg"] = e.jpeg is not None
    return json.loads(json.dumps(d, default=_json_default))


def audit_alert(dsn: str, schema: str, prefix: str, alert_id: str) -> AuditChain:
    with psycopg.connect(dsn) as conn:
        set_search_path(conn, schema)
        rows = conn.execute(
            "SELECT event_id, event_type, log_partition, log_offset FROM alert_events "
            "WHERE alert_id = %s ORDER BY log_partition, log_offset", (alert_id,)).fetchall()
        if not rows:
            return AuditChain(alert_id, False, [])
        reader = LogReader(prefix)
        try:
            return AuditChain(alert_id, True, _build(conn, reader, prefix, rows))
        finally:
            reader.close()


def _lookup(conn: psycopg.Connection, table: str, event_id: str) -> tuple[int, int] | None:
    row = conn.execute(f"SELECT log_partition, log_offset FROM {table} WHERE event_id = %s",
                       (event_id,)).fetchone()
    return (row[0], row[1]) if row else None


def _node(conn: psycopg.Connection, reader: LogReader, kind: str, table: str, topic: str,
          event_id: str) -> tuple[Node, ev.Event | None]:
    pos = _lookup(conn, table, event_id)
    if pos is None:
        return Node(kind, event_id, status="not-projected"), None
    node = Node(kind, event_id, topic, pos[0], pos[1])
    event = reader.fetch(topic, pos[0], pos[1])
    if event is None:
        node.status = "gone-from-log"
    elif event.event_id != event_id:
        node.status = "id-mismatch"
    else:
        node.event = _as_dict(event)
    return node, event


def _build(conn: psycopg.Connection, reader: LogReader, prefix: str,
           rows: list[tuple[str, str, int, int]]) -> list[Node]:
    roots = []
    seen_scene: set[str] = set()
    for event_id, _etype, _p, _o in rows:
        node, event = _node(conn, reader, "alert", "alert_events", f"{prefix}.alerts",
                            event_id)
        roots.append(node)
        if event is None:
            continue
        command_id = getattr(event, "command_id", None)
        if command_id:
            cnode, _ = _node(conn, reader, "command", "commands", f"{prefix}.commands",
                             command_id)
            node.children.append(cnode)
        if isinstance(event, ev.AlertRaised | ev.AlertRepeated) and event.causation_id \
                and event.causation_id not in seen_scene:
            seen_scene.add(event.causation_id)
            snode, scene = _node(conn, reader, "scene", "scene_events", f"{prefix}.scene",
                                 event.causation_id)
            node.children.append(snode)
            if isinstance(scene, ev.RuleTriggered):
                for eid in scene.evidence_event_ids:
                    dnode, analysis = _node(conn, reader, "detections", "frame_analyses",
                                            f"{prefix}.detections", eid)
                    snode.children.append(dnode)
                    if isinstance(analysis, ev.FrameAnalyzed) and analysis.causation_id:
                        fnode, _ = _node(conn, reader, "frame", "frames", f"{prefix}.frames",
                                         analysis.causation_id)
                        dnode.children.append(fnode)
    return roots

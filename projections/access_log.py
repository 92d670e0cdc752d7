"""The access record's hash chain: how a row's content is hashed, and `verify_access`
(`vigil audit verify-access`), which proves the read model is the log, whole and unedited.

The chain is built by the projector as it folds ``AccessRecorded`` events from the
one-partition ``vigil.access`` topic, in log order (projections/writer.py, op
``access_recorded``): ``seq`` counts from 1, ``content_hash`` is the SHA-256 of the row's
recorded fields in a canonical form (`content_hash`), and
``hash = sha256(prev_hash || content_hash)`` with ``prev_hash`` the previous row's hash
('' for the first). Verification walks the rows in ``seq`` order and recomputes both, then
compares the rows with the topic itself:

- an edited row no longer matches its content hash (and, if the hash was recomputed too,
  the next row's link);
- a deleted row leaves a ``seq`` gap and a broken link; deleting the newest rows leaves
  the chain whole, so the topic comparison finds events the table no longer holds (up to
  the projector's stored position: later records are pending, not missing);
- a row added by hand is not on the log.

Kafka's side: the topic keeps records forever; records removed from its head (retention
misconfigured, DeleteRecords) show as a log start offset above 0.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: The recorded fields, in the order they are hashed.
FIELDS = ("event_id", "occurred_at", "actor_kind", "actor_id", "actor_name", "role",
          "method", "route", "operation", "resource_ids", "client_address", "status",
          "outcome")


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def content_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the recorded fields of an event or a row, canonically encoded."""
    doc = [_canonical(record[f]) for f in FIELDS]
    return hashlib.sha256(json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
                          .encode()).hexdigest()


def chain_hash(prev_hash: str, content: str) -> str:
    """The link: sha256(prev_hash || content_hash), as the projector's SQL computes it."""
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


@dataclass
class AccessVerification:
    rows: int = 0
    log_records: int = 0
    log_start_offset: int = 0
    #: records on the log past the projector's position: not folded yet, not a problem
    pending: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < 1000:  # a wholesale rewrite need not list every row
            self.problems.append(problem)


def verify_rows(rows: Iterable[Mapping[str, Any]], out: AccessVerification) -> dict[str, str]:
    """Check the chain of `rows` (in seq order); returns event_id -> content hash."""
    prev_hash, expected_seq = "", 1
    seen: dict[str, str] = {}
    for row in rows:
        out.rows += 1
        seq = row["seq"]
        if seq != expected_seq:
            out.add(f"seq {expected_seq}..{seq - 1} missing (rows deleted)" if seq > expected_seq
                    else f"seq {seq} out of order")
        if row["prev_hash"] != prev_hash:
            out.add(f"seq {seq}: link broken (prev_hash does not match the row before)")
        recomputed = content_hash(row)
        if recomputed != row["content_hash"]:
            out.add(f"seq {seq}: content edited (event {row['event_id']})")
        if chain_hash(row["prev_hash"], row["content_hash"]) != row["hash"]:
            out.add(f"seq {seq}: hash does not match its content and link")
        seen[row["event_id"]] = recomputed
        prev_hash, expected_seq = row["hash"], seq + 1
    return seen


def _log_events(bootstrap_topic: str, timeout_s: float
                ) -> tuple[int, list[tuple[int, Any]]]:
    """(log start offset, every (offset, AccessRecorded) of the topic from its start)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from schemas.codec import default_codec
    from vigil.kafka import consumer_config, offset_of

    c = Consumer(consumer_config(f"verify-access-{uuid.uuid4().hex[:8]}",
                                 **{"enable.partition.eof": True}))
    codec = default_codec()
    try:
        md = c.list_topics(bootstrap_topic, timeout=15).topics[bootstrap_topic]
        if md.error is not None:
            raise RuntimeError(f"topic {bootstrap_topic}: {md.error}")
        events: list[Any] = []
        start_offset = 0
        for p in sorted(md.partitions):
            low, high = c.get_watermark_offsets(TopicPartition(bootstrap_topic, p),
                                                timeout=15)
            start_offset = max(start_offset, low)
            if high <= low:
                continue
            c.assign([TopicPartition(bootstrap_topic, p, low)])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                msg = c.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err:
                    if err.code() == KafkaError._PARTITION_EOF:
                        break
                    raise RuntimeError(f"reading {bootstrap_topic}: {err}")
                events.append((offset_of(msg), codec.decode(msg.value())))
                if offset_of(msg) + 1 >= high:
                    break
        return start_offset, events
    finally:
        c.close()


def _projected_upto(conn: Any, schema: str, topic: str | None) -> int:
    """The projector's next offset on the access topic (records below it are folded)."""
    from psycopg import sql

    if topic is None:
        return 0
    row = conn.execute(sql.SQL("SELECT max(next_offset) AS o FROM {}.projector_offsets "
                               "WHERE topic = %s").format(sql.Identifier(schema)),
                       (topic,)).fetchone()
    value = row["o"] if isinstance(row, dict) else (row[0] if row else None)
    return int(value or 0)


def verify_access(dsn: str, schema: str, topic: str | None = None,
                  timeout_s: float = 60.0, conn: Any = None) -> AccessVerification:
    """Verify the chain in `schema`.access_log and, with `topic`, compare it with the log.

    `conn` (a psycopg connection) reads the table inside the caller's transaction."""
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    out = AccessVerification()
    query = sql.SQL("SELECT * FROM {}.access_log ORDER BY seq").format(sql.Identifier(schema))
    if conn is not None:
        with conn.cursor(row_factory=dict_row) as cur:
            in_table = verify_rows(cur.execute(query), out)
        position = _projected_upto(conn, schema, topic)
    else:
        with psycopg.connect(dsn, row_factory=dict_row) as c:
            in_table = verify_rows(c.execute(query), out)
            position = _projected_upto(c, schema, topic)
    if topic is None:
        return out
    out.log_start_offset, events = _log_events(topic, timeout_s)
    if out.log_start_offset > 0:
        out.add(f"{topic}: the log starts at offset {out.log_start_offset}, records before "
                "it were removed")
    on_log: set[str] = set()
    for offset, e in events:
        out.log_records += 1
        if offset >= position:
            out.pending += 1
            continue
        if e.event_id in on_log:
            continue  # a producer retry: the projector keeps the first
        on_log.add(e.event_id)
        stored = in_table.get(e.event_id)
        if stored is None:
            out.add(f"event {e.event_id} ({e.occurred_at.isoformat()}) is on the log but "
                    "not in the access record")
        elif stored != content_hash({f: getattr(e, f) for f in FIELDS}):
            out.add(f"event {e.event_id}: the access record differs from the log")
    for event_id in sorted(set(in_table) - on_log):
        out.add(f"row of event {event_id} is not on the log (added by hand?)")
    return out

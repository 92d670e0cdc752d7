"""The projector's read position, kept in PostgreSQL next to the read models.

Kafka's committed group offsets are never used: the position that counts is the one
written in the same transaction as the rows it produced, so after a crash the projector
resumes exactly after the last batch that committed (no loss, no double apply).
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from projections.handlers import Position

TopicPartitionKey = tuple[str, int]


def load_offsets(conn: psycopg.Connection, consumer: str) -> dict[TopicPartitionKey, int]:
    """{(topic, partition): next offset to read} for `consumer`."""
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM projector_offsets WHERE consumer = %s",
        (consumer,),
    ).fetchall()
    return {(t, p): o for t, p, o in rows}


def next_offsets(positions: Iterable[Position]) -> dict[TopicPartitionKey, int]:
    """Highest offset + 1 per partition among the consumed messages."""
    out: dict[TopicPartitionKey, int] = {}
    for pos in positions:
        key = (pos.topic, pos.partition)
        if pos.offset + 1 > out.get(key, -1):
            out[key] = pos.offset + 1
    return out


def store_offsets(conn: psycopg.Connection, consumer: str,
                  offsets: dict[TopicPartitionKey, int]) -> None:
    """Upsert the offsets; never moves a position backwards (GREATEST)."""
    if not offsets:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO projector_offsets AS t (consumer, topic, partition, next_offset, "
            "updated_at) VALUES (%s, %s, %s, %s, now()) "
            "ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
            "next_offset = GREATEST(t.next_offset, EXCLUDED.next_offset), updated_at = now()",
            [(consumer, t, p, o) for (t, p), o in sorted(offsets.items())],
        )

"""A tiny Faust app that proves the broker choice (Kafka 3.9.1) works for Faust.

It consumes Avro `EdgeHeartbeat` events from ``<prefix>.heartbeats``, counts them per
edge in a RocksDB table (rocksdict driver, like the real agents) and emits an Avro
`EdgeOffline` to ``<prefix>.health`` whose ``missed_heartbeats`` carries the counter (a
probe, not the event's real meaning). The count is idempotent by event id, because a
redelivered event after a crash must not count twice.

Run: ``python tests/integration/faust_probe_app.py worker -l warning`` with
KAFKA_BOOTSTRAP, VIGIL_TOPIC_PREFIX, PROBE_APP_ID and PROBE_DATADIR set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import faust

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.codec import default_codec
from schemas.events import EdgeHeartbeat, EdgeOffline

PREFIX = os.environ["VIGIL_TOPIC_PREFIX"]

app = faust.App(
    os.environ["PROBE_APP_ID"],
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP']}",
    store="rocksdb://",
    datadir=os.environ["PROBE_DATADIR"],
    processing_guarantee="at_least_once",
    topic_partitions=2,
    topic_replication_factor=1,
    web_enabled=False,
    # the killed worker's group membership must expire quickly for the restart
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
    broker_commit_every=1,
    broker_commit_interval=0.5,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    key_serializer="raw",
    value_serializer="json",
)

heartbeats = app.topic(f"{PREFIX}.heartbeats", key_serializer="raw", value_serializer="raw")
health = app.topic(f"{PREFIX}.health", key_serializer="raw", value_serializer="raw")

counts = app.Table(
    "probe-counts",
    partitions=2,
    key_type=str,  # values: the app's json serializer (value_type=dict is not a Faust type)
    options={"driver": "rocksdict", "block_cache_size": 8 << 20, "write_buffer_size": 4 << 20},
)


@app.agent(heartbeats, concurrency=1)
async def count(stream: faust.StreamT) -> None:
    codec = default_codec()
    async for key, value in stream.items():
        event = codec.decode(value)
        assert isinstance(event, EdgeHeartbeat)
        edge = event.edge_id
        state = counts.get(edge) or {"count": 0, "seen": []}
        if event.event_id not in state["seen"]:
            state = {"count": state["count"] + 1,
                     "seen": [*state["seen"], event.event_id][-100:]}
            counts[edge] = state
        out = EdgeOffline.create(
            producer="faust-probe", cause=event, edge_id=event.edge_id,
            site_id=event.site_id, last_seen_at=event.occurred_at,
            missed_heartbeats=state["count"],
        )
        await health.send(key=key, value=codec.encode(out))


if __name__ == "__main__":
    app.main()

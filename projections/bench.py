"""`vigil bench projection`: detection rows/s through the projector vs plain COPY.

The projector run includes everything a live projector does (Kafka fetch, Avro decode,
fold, COPY into staging, INSERT ... ON CONFLICT into the partitioned table, offsets in the
same transaction). The baseline is a plain COPY of the very same rows into an
unindexed, unpartitioned table, measured in the same run — the ceiling of what
PostgreSQL can ingest here. A replay of a mixed workload gives events/s for `replay`.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from datetime import timedelta

import psycopg

from projections.migrate import set_search_path, upgrade
from projections.projector import Projector
from projections.replay import drop_schema, replay_into
from projections.settings import ProjectorSettings
from projections.workload import T0, mixed_workload, publish
from schemas import events as ev
from vigil.bench import BenchResult


def _detections_workload(frames: int, per_frame: int, cameras: int = 8
                         ) -> list[tuple[str, str, ev.Event]]:
    out: list[tuple[str, str, ev.Event]] = []
    for f in range(frames):
        cam = f"bench-cam-{f % cameras}"
        dets = [ev.Detection(detection_id=f"{f}-{d}", label="person", score=0.9,
                             x1=0.1, y1=0.1, x2=0.2, y2=0.4) for d in range(per_frame)]
        out.append(("detections", cam, ev.FrameAnalyzed.create(
            producer="bench", occurred_at=T0 + timedelta(milliseconds=200 * f),
            edge_id="e", camera_id=cam, frame_sequence=f, width=640, height=480,
            skipped=False, detections=dets, detector_model="m", detector_version="1")))
    return out


def _delete_topics(bootstrap: str, prefix: str) -> None:
    from confluent_kafka.admin import AdminClient

    from schemas.topics import CATALOG

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.delete_topics([t.name(prefix) for t in CATALOG]).values():
        with contextlib.suppress(Exception):
            fut.result(30)


def run(quick: bool = False) -> BenchResult:
    from schemas.codec import default_codec
    from schemas.topics import apply_topics
    from vigil.settings import get_settings

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    old_prefix = os.environ.get("VIGIL_TOPIC_PREFIX")
    os.environ["VIGIL_TOPIC_PREFIX"] = prefix
    get_settings.cache_clear()
    default_codec.cache_clear()
    s = get_settings()
    dsn = s.database_dsn
    schema, replay_schema = prefix, f"{prefix}_replay"
    frames, per_frame = (1000, 10) if quick else (5000, 20)
    ps = ProjectorSettings(schema_name=schema, max_batch=20000, min_batch=500)
    try:
        apply_topics(s.kafka_bootstrap, prefix, partitions_override=4)
        items = _detections_workload(frames, per_frame)
        publish(items)
        rows = frames * per_frame
        upgrade(dsn, schema, ps.embedding_dim)

        proj = Projector(dsn=dsn, schema=schema, prefix=prefix, settings=ps, stop_at="end")
        t = time.perf_counter()
        proj.run()
        projected_s = time.perf_counter() - t
        proj.close()

        # Baseline: plain COPY of the same rows, same run, same machine.
        with psycopg.connect(dsn) as conn:
            set_search_path(conn, schema)
            conn.execute("CREATE TABLE copy_baseline (LIKE detections)")
            conn.commit()
            t = time.perf_counter()
            with conn.cursor() as cur, cur.copy("COPY copy_baseline FROM STDIN") as cp:
                for _suffix, _key, e in items:
                    assert isinstance(e, ev.FrameAnalyzed)
                    for d in e.detections:
                        cp.write_row((d.detection_id, e.occurred_at, e.event_id, None,
                                      e.camera_id, e.frame_sequence, d.label, d.score, d.x1,
                                      d.y1, d.x2, d.y2, d.has_embedding, False))
            conn.commit()
            copy_s = time.perf_counter() - t
            n = conn.execute("SELECT count(*) FROM detections").fetchone()[0]
            assert n == rows, f"projected {n} rows, expected {rows}"

        # Replay: a mixed workload (all topics) rebuilt from offset 0.
        mixed = mixed_workload(seed=11, cameras=4, frames_per_camera=100 if quick else 400,
                               alerts=8)
        publish(mixed)
        total_events = len(items) + len(mixed)
        t = time.perf_counter()
        stats = replay_into(dsn, prefix, ps, replay_schema, force=True)
        replay_s = time.perf_counter() - t
        assert stats.messages == total_events
    finally:
        drop_schema(dsn, schema)
        drop_schema(dsn, replay_schema)
        _delete_topics(s.kafka_bootstrap, prefix)
        if old_prefix is None:
            os.environ.pop("VIGIL_TOPIC_PREFIX", None)
        else:
            os.environ["VIGIL_TOPIC_PREFIX"] = old_prefix
        get_settings.cache_clear()
        default_codec.cache_clear()
    ours = rows / projected_s
    base = rows / copy_s
    return BenchResult(
        name="projection", value=ours, unit="detections/s", baseline=base,
        ratio=ours / base,
        details={"detection_rows": rows, "frames": frames, "projected_s": projected_s,
                 "copy_s": copy_s, "replay_events": total_events, "replay_s": replay_s,
                 "replay_events_per_s": total_events / replay_s,
                 "replay_1m_events_estimate_s": 1_000_000 / (total_events / replay_s),
                 "target_detections_per_s": 20_000, "quick": quick},
    )

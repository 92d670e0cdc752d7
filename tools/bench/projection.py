"""`vigil bench projection`: detection rows/s through the projector vs plain COPY.

The projector run includes everything a live projector does (Kafka fetch, Avro decode,
fold, COPY into staging, INSERT ... ON CONFLICT into the partitioned table, offsets in the
same transaction). The baseline is a plain COPY of the very same rows into an
unindexed, unpartitioned table, measured in the same run — the ceiling of what
PostgreSQL can ingest here.

Replay: an embedding-heavy log of ``VIGIL_BENCH_REPLAY_EVENTS`` events (default 1,000,000;
100,000 with --quick), 64 cameras over 72 h (so the embeddings fill four daily
partitions), plus the two workloads above is rebuilt from offset 0 by `replay_into`
(parallel consumers, indexes built per day after the load, or during it where a core is
free). The rebuilt schema is then searched, and its oldest full day dropped, by
`tools.bench.appearance` (search latency and recall at k = 20, retention drop time);
the same module compares vector with halfvec on clustered vectors. Same-run comparison:
the previous way of rebuilding (one consumer, B-tree indexes updated row by row, only
HNSW built after the load; with today's writer, so the packed vectors and binary COPY
help both) against `replay_into`, both over the first
``VIGIL_BENCH_REPLAY_BASELINE_EVENTS`` events of the same log (default 150,000): a prefix,
so the baseline does not double the run time, and equal sizes, because the HNSW build
grows faster than linearly and rates of logs of different sizes do not compare.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from datetime import timedelta

import psycopg

from projections.migrate import set_search_path, upgrade
from projections.projector import Projector, projected_suffixes
from projections.replay import drop_schema, replay_into
from projections.settings import ProjectorSettings
from schemas import events as ev
from tools.bench import appearance
from tools.bench.runner import BenchResult
from tools.bench.workload import T0, mixed_workload, publish, replay_log

#: the replay log's span and cameras: the appearance search target's 72 h of 64 cameras
REPLAY_SPAN_S = 72 * 3600
REPLAY_CAMERAS = 64


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


def _prefix_targets(prefix: str, fraction: float) -> dict[tuple[str, int], int]:
    """Stop offsets at the first `fraction` of every projected partition."""
    from confluent_kafka import Consumer, TopicPartition

    from vigil.kafka import consumer_config

    fraction = min(1.0, fraction)
    probe = Consumer(consumer_config(f"{prefix}.bench-probe"))
    targets: dict[tuple[str, int], int] = {}
    try:
        md = probe.list_topics(timeout=15)
        for suffix in projected_suffixes():
            meta = md.topics.get(f"{prefix}.{suffix}")
            for p in (meta.partitions if meta is not None else ()):
                tp = (f"{prefix}.{suffix}", p)
                lo, hi = probe.get_watermark_offsets(TopicPartition(*tp), timeout=10)
                targets[tp] = lo + int((hi - lo) * fraction)
    finally:
        probe.close()
    return targets


def _baseline_replay(dsn: str, prefix: str, ps: ProjectorSettings, schema: str,
                     targets: dict[tuple[str, int], int]) -> tuple[int, float]:
    """The previous rebuild up to `targets`: one consumer, secondary B-trees maintained
    row by row, only the HNSW index built after the load."""
    upgrade(dsn, schema, ps.embedding_dim)
    t = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        hnsw = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND "
                            "indexname = 'embeddings_hnsw'", (schema,)).fetchone()[0]
        # a partitioned index reads "ON ONLY parent", which would build no partition's
        hnsw = hnsw.replace(" ON ONLY ", " ON ", 1)
        conn.execute("DROP INDEX embeddings_hnsw")
    proj = Projector(dsn=dsn, schema=schema, prefix=prefix, settings=ps,
                     consumer_name="replay", stop_at=targets,
                     group_id=f"{prefix}.bench-baseline")
    try:
        messages = proj.run().messages
    finally:
        proj.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(hnsw)
    return messages, time.perf_counter() - t


def run(quick: bool = False) -> BenchResult:
    from schemas.codec import default_codec
    from schemas.topics import apply_topics, delete_topics
    from vigil.settings import get_settings

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    old_prefix = os.environ.get("VIGIL_TOPIC_PREFIX")
    os.environ["VIGIL_TOPIC_PREFIX"] = prefix
    get_settings.cache_clear()
    default_codec.cache_clear()
    s = get_settings()
    dsn = s.database_dsn
    schema, replay_schema, base_schema = prefix, f"{prefix}_replay", f"{prefix}_base"
    quant_schema = f"{prefix}_quant"
    replay_n = int(os.environ.get("VIGIL_BENCH_REPLAY_EVENTS",
                                  100_000 if quick else 1_000_000))
    baseline_n = int(os.environ.get("VIGIL_BENCH_REPLAY_BASELINE_EVENTS",
                                    30_000 if quick else 150_000))
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
                for i, (_suffix, _key, e) in enumerate(items):
                    assert isinstance(e, ev.FrameAnalyzed)
                    for d in e.detections:
                        cp.write_row((d.detection_id, e.occurred_at, e.event_id, None,
                                      e.camera_id, e.frame_sequence, d.label, d.score, d.x1,
                                      d.y1, d.x2, d.y2, d.has_embedding, False, 0, i))
            conn.commit()
            copy_s = time.perf_counter() - t
            n = conn.execute("SELECT count(*) FROM detections").fetchone()[0]
            assert n == rows, f"projected {n} rows, expected {rows}"

        # Replay: a mixed workload (every topic, every fold) and an embedding-heavy log.
        mixed = mixed_workload(seed=11, cameras=4, frames_per_camera=20, alerts=8)
        publish(mixed)
        t = time.perf_counter()
        publish(replay_log(replay_n, cameras=REPLAY_CAMERAS, span_s=REPLAY_SPAN_S))
        seed_s = time.perf_counter() - t
        total_events = len(items) + len(mixed) + replay_n
        t = time.perf_counter()
        stats = replay_into(dsn, prefix, ps, replay_schema, force=True)
        replay_s = time.perf_counter() - t
        assert stats.messages >= total_events, (stats.messages, total_events)
        total_events = stats.messages  # replay_log rounds up to whole frames
        # Appearance search over what the replay built (72 h x 64 cameras), then the
        # retention drop of one full day of it, then vector vs halfvec.
        search = appearance.search(dsn, s.database_url, replay_schema, since=T0,
                                   until=T0 + timedelta(seconds=REPLAY_SPAN_S + 1),
                                   queries=100 if quick else 200)
        drop = appearance.retention_drop(dsn, replay_schema)
        quant = appearance.quantization(dsn, quant_schema,
                                        persons=400 if quick else 2000)
        drop_schema(dsn, quant_schema)
        # Same-run comparison at equal size (the HNSW build grows faster than linearly,
        # so rates of logs of different sizes do not compare): the previous rebuild and
        # this one over the same prefix of the log.
        targets = _prefix_targets(prefix, baseline_n / total_events)
        base_msgs, base_s = _baseline_replay(dsn, prefix, ps, base_schema, targets)
        drop_schema(dsn, base_schema)
        t = time.perf_counter()
        prefix_msgs = replay_into(dsn, prefix, ps, replay_schema, force=True,
                                  stop_at=targets).messages
        prefix_s = time.perf_counter() - t
        assert prefix_msgs == base_msgs, (prefix_msgs, base_msgs)
    finally:
        drop_schema(dsn, schema)
        drop_schema(dsn, replay_schema)
        drop_schema(dsn, base_schema)
        drop_schema(dsn, quant_schema)
        with contextlib.suppress(Exception):  # cleanup must not hide the run's error
            delete_topics(s.kafka_bootstrap, prefix)
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
                 "replay_load_s": stats.load_s, "replay_index_build_s": stats.index_s,
                 "replay_hnsw_build_s": stats.hnsw_s, "replay_btree_build_s": stats.btree_s,
                 "replay_workers": stats.workers, "replay_seed_s": seed_s,
                 "replay_index_overlap": ps.replay_index_overlap,
                 "replay_days_indexed_during_load": stats.days_indexed_during_load,
                 "replay_hnsw_during_load_s": stats.hnsw_during_load_s,
                 # linear: an under-estimate below 1M (the HNSW build grows faster)
                 "replay_1m_events_linear_estimate_s": 1_000_000 / (total_events / replay_s),
                 "replay_baseline": "previous rebuild (one consumer, B-tree indexes "
                                    "maintained during the load, HNSW built after) vs this "
                                    "one, both over the same prefix of the log",
                 "replay_prefix_events": base_msgs, "replay_baseline_s": base_s,
                 "replay_baseline_events_per_s": base_msgs / base_s,
                 "replay_prefix_s": prefix_s,
                 "replay_prefix_events_per_s": prefix_msgs / prefix_s,
                 "replay_ratio": base_s / prefix_s,
                 "replay_log": "embedding-heavy: per frame 1 FrameCaptured, 1 FrameAnalyzed "
                               "(3 boxes), 3 AppearanceEmbedded (192-d halfvec, clustered "
                               "by track like re-identification vectors); 64 cameras over "
                               "72 h, 4 partitions per topic",
                 "search": search, "retention_drop": drop, "quantization": quant,
                 "target_detections_per_s": 20_000, "target_replay_1m_s": 120,
                 "target_search_p95_ms": 50, "target_search_recall_at_20": 0.95,
                 "target_retention_drop_s": 1.0, "quick": quick},
    )

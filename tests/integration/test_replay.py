"""`vigil replay --into` / `--verify` against real Kafka + PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from projections.migrate import upgrade
from projections.projector import Projector
from projections.replay import drop_schema
from projections.settings import ProjectorSettings, get_projector_settings
from schemas.producer import EventProducer
from tools.bench.workload import mixed_workload, publish
from vigil.settings import get_settings
from vigil_cli.main import main

pytestmark = pytest.mark.integration


@pytest.fixture
def live(topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A live schema (named after the prefix) projected from a mixed workload."""
    dsn = get_settings().database_dsn
    monkeypatch.setenv("VIGIL_PROJECTOR_SCHEMA", topic_prefix)
    get_projector_settings.cache_clear()
    upgrade(dsn, topic_prefix, 192)
    publish(mixed_workload(seed=7, cameras=2, frames_per_camera=15, alerts=3, erase=2))
    proj = Projector(dsn=dsn, schema=topic_prefix, prefix=topic_prefix,
                     settings=ProjectorSettings(), stop_at="end", producer=EventProducer())
    proj.run(max_seconds=60)
    proj.close()
    yield topic_prefix
    drop_schema(dsn, topic_prefix)
    get_projector_settings.cache_clear()


def test_replay_verify_passes_then_detects_tampering(
    live: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--verify"]) == 0
    assert "EQUAL" in capsys.readouterr().out
    with psycopg.connect(get_settings().database_dsn) as c:
        c.execute(f"UPDATE {live}.alerts SET state = 'NEW' WHERE state = 'RESOLVED'")
        c.execute(f"DELETE FROM {live}.frames WHERE event_id IN "
                  f"(SELECT event_id FROM {live}.frames LIMIT 1)")
    assert main(["replay", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "DIFF alerts" in out and "content differs" in out
    assert "DIFF frames" in out and "only in replay" in out


def test_replay_into_fresh_schema_honours_erasure(
    live: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{live}_rebuilt"
    dsn = get_settings().database_dsn
    try:
        assert main(["replay", "--into", target]) == 0
        with psycopg.connect(dsn) as c:
            erased = c.execute(f"SELECT detection_id FROM {target}.erased_detections").fetchall()
            assert len(erased) == 2
            assert c.execute(f"SELECT count(*) FROM {target}.embeddings WHERE detection_id = "
                             f"ANY(%s)", ([e[0] for e in erased],)).fetchone()[0] == 0
            for table in ("alerts", "detections", "frames", "embeddings", "cameras"):
                n_live = c.execute(f"SELECT count(*) FROM {live}.{table}").fetchone()[0]
                n_new = c.execute(f"SELECT count(*) FROM {target}.{table}").fetchone()[0]
                assert n_live == n_new, table
        assert main(["replay", "--into", target]) == 2  # exists: refuses without --force
    finally:
        drop_schema(dsn, target)


def test_verify_leaves_out_rows_whose_events_retention_deleted(
    live: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Early segments gone (log-start offset moved, as retention does): the live rows
    folded from them cannot be rebuilt, so they are not differences — but counted."""
    import json

    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from schemas.topics import topic_name
    from vigil.kafka import consumer_config

    s = get_settings()
    cut: dict[str, int] = {}
    probe = Consumer(consumer_config(f"{live}.probe"))
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    for suffix in ("frames", "embeddings", "alerts"):
        topic = topic_name(suffix)
        tps = []
        for p in range(2):
            _lo, hi = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            tps.append(TopicPartition(topic, p, hi // 2))
        for fut in admin.delete_records(tps).values():
            fut.result(30)
        cut[suffix] = sum(tp.offset for tp in tps)
    starts = [probe.get_watermark_offsets(TopicPartition(topic_name("frames"), p),
                                          timeout=10)[0] for p in range(2)]
    probe.close()
    assert sum(starts) == cut["frames"] > 0  # the log start really moved

    assert main(["replay", "--verify", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["equal"] is True
    excluded = result["excluded"]
    assert excluded["frames"] == cut["frames"]
    assert 0 < excluded["embeddings"] <= cut["embeddings"]  # erased ones are gone anyway
    assert excluded["alert_events"] == cut["alerts"] and excluded["alerts"] >= 1
    # a row above the cut-off is still compared
    with psycopg.connect(s.database_dsn) as c:
        c.execute(f"DELETE FROM {live}.frames WHERE event_id IN (SELECT event_id FROM "
                  f"{live}.frames ORDER BY log_offset DESC LIMIT 1)")
    assert main(["replay", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "not compared (source events deleted by retention): " in out
    assert "DIFF frames" in out and "only in replay" in out


def test_parallel_rebuild_equals_single_consumer_and_live(live: str) -> None:
    """Partition-parallel workers (separate processes, disjoint partitions, each batch
    committed with its offsets) give the same read models as one consumer: replay twice,
    same checksums; both equal the live schema."""
    from projections.replay import compare_schemas, replay_into

    dsn = get_settings().database_dsn
    ps = ProjectorSettings(schema_name=live)
    par, one = f"{live}_par", f"{live}_one"
    try:
        stats = replay_into(dsn, live, ps, par, workers=2, parallel_min=0)
        assert stats.workers == 2 and stats.dead_letters == 0
        single = replay_into(dsn, live, ps, one, workers=1)
        assert single.workers == 1 and single.messages == stats.messages
        with psycopg.connect(dsn) as c:
            assert compare_schemas(c, par, one) == []
            assert compare_schemas(c, live, par) == []
            # the indexes dropped for the bulk load are all back
            n_idx = "SELECT count(*) FROM pg_indexes WHERE schemaname = %s"
            assert c.execute(n_idx, (par,)).fetchone() == c.execute(n_idx, (live,)).fetchone()
    finally:
        drop_schema(dsn, par)
        drop_schema(dsn, one)


def test_bulk_load_restores_every_index_when_the_load_fails(topic_prefix: str) -> None:
    """A bulk load that fails still leaves the schema with every index it had, the HNSW
    graph included, and reports the B-tree and HNSW build times apart."""
    from projections.replay import bulk_load

    dsn = get_settings().database_dsn
    schema = f"{topic_prefix}_bulk"
    q = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1"
    upgrade(dsn, schema, 192)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            before = c.execute(q, (schema,)).fetchall()
        timing: dict[str, float] = {}
        with pytest.raises(RuntimeError, match="load failed"), \
                bulk_load(dsn, schema, 64, timing=timing):
            with psycopg.connect(dsn, autocommit=True) as c:
                during = {n for n, _ in c.execute(q, (schema,)).fetchall()}
            assert "embeddings_hnsw" not in during and len(during) < len(before)
            raise RuntimeError("load failed")
        with psycopg.connect(dsn, autocommit=True) as c:
            assert c.execute(q, (schema,)).fetchall() == before
        assert set(timing) == {"index_s", "btree_s", "hnsw_s"}
    finally:
        drop_schema(dsn, schema)

"""Erasure (`vigil erase`) and retention (`vigil db retention`) on a real database."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlparse

import psycopg
import pytest

from projections.erasure import _minio
from projections.migrate import (
    embedding_partitions,
    ensure_embedding_partitions,
    ensure_partitions,
    set_search_path,
    upgrade,
)
from projections.projector import Projector
from projections.replay import drop_schema
from projections.retention import run_retention
from projections.settings import ProjectorSettings, get_projector_settings
from tools.bench.workload import mixed_workload, publish
from vigil.settings import get_settings
from vigil_cli.main import main

pytestmark = pytest.mark.integration


def test_erase_publishes_deletes_and_survives_reprojection(
    topic_prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = get_settings()
    dsn = s.database_dsn
    monkeypatch.setenv("VIGIL_PROJECTOR_SCHEMA", topic_prefix)
    get_projector_settings.cache_clear()
    upgrade(dsn, topic_prefix, 192)
    try:
        publish(mixed_workload(seed=5, cameras=1, frames_per_camera=4, alerts=1, erase=0))
        _project(topic_prefix)
        with psycopg.connect(dsn) as c:
            set_search_path(c, topic_prefix)
            victim = c.execute("SELECT detection_id FROM embeddings ORDER BY 1 LIMIT 1"
                               ).fetchone()[0]
            snap = c.execute("SELECT snapshot_ref FROM alerts").fetchone()[0]
        u = urlparse(snap)
        client = _minio(s)
        if not client.bucket_exists(u.netloc):
            client.make_bucket(u.netloc)
        client.put_object(u.netloc, u.path.lstrip("/"), io.BytesIO(b"jpeg"), 4)

        assert main(["erase", "--detection", victim, "--reason", "test"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["embeddings_deleted"] == 1
        assert out["objects"] == {snap: "deleted"}
        # The projector folds the published erasure; a full re-read never brings it back.
        with psycopg.connect(dsn) as c:
            c.execute(f"DELETE FROM {topic_prefix}.projector_offsets")
        _project(topic_prefix)
        with psycopg.connect(dsn) as c:
            set_search_path(c, topic_prefix)
            assert c.execute("SELECT count(*) FROM embeddings WHERE detection_id = %s",
                             (victim,)).fetchone()[0] == 0
            assert c.execute("SELECT erased FROM detections WHERE detection_id = %s",
                             (victim,)).fetchone()[0] is True
            assert c.execute("SELECT count(*) FROM erasures").fetchone()[0] == 1
    finally:
        drop_schema(dsn, topic_prefix)
        get_projector_settings.cache_clear()


def _project(schema: str) -> None:
    proj = Projector(dsn=get_settings().database_dsn, schema=schema, prefix=schema,
                     settings=ProjectorSettings(), stop_at="end")
    proj.run(max_seconds=60)
    proj.close()


def test_retention_drops_only_expired_embedding_days_and_folds_old_months_into_counts(
    topic_prefix: str,
) -> None:
    dsn = get_settings().database_dsn
    schema = topic_prefix
    upgrade(dsn, schema, 4)
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    old = datetime(2025, 3, 10, 8, tzinfo=UTC)
    try:
        with psycopg.connect(dsn) as c:
            set_search_path(c, schema)
            ensure_partitions(c, date(2025, 3, 1))
            ensure_partitions(c, date(2026, 11, 1))
            for i, at in enumerate([old, old, old + timedelta(days=1), now]):
                c.execute("INSERT INTO detections VALUES (%s, %s, %s, NULL, 'cam', 1, "
                          "'person', 0.9, 0, 0, 1, 1, false, false)", (f"d{i}", at, f"e{i}"))
            ensure_embedding_partitions(c, date(2026, 11, 18), ahead=5)
            # 11-19 ends 88 h before `now`, 11-20 ends 60 h before it (partly expired:
            # kept whole), 11-23 is today
            times = [datetime(2026, 11, 19, 3, tzinfo=UTC), datetime(2026, 11, 19, 23, tzinfo=UTC),
                     datetime(2026, 11, 20, 1, tzinfo=UTC), now - timedelta(hours=1)]
            for i, at in enumerate(times):
                c.execute("INSERT INTO embeddings VALUES (%s, 'e', 'cam', 1, %s, 'm', "
                          "'[1,2,3,4]')", (f"d{i}", at))
        report = run_retention(dsn, schema, ProjectorSettings(embedding_dim=4), now=now)
        assert report["embeddings_dropped_partitions"] == ["embeddings_d20261118",
                                                           "embeddings_d20261119"]
        assert report["dropped_partitions"] == ["detections_y2025m03"]
        with psycopg.connect(dsn) as c:
            set_search_path(c, schema)
            assert [r[0] for r in c.execute("SELECT detection_id FROM embeddings ORDER BY 1")
                    ] == ["d2", "d3"]
            days = [d for _, d in embedding_partitions(c)]
            assert days[0] == date(2026, 11, 20)  # the first not wholly expired day
            assert date(2026, 11, 25) in days  # created ahead of `now`
            counts = c.execute("SELECT day, detections, frames FROM detection_daily_counts "
                               "ORDER BY day").fetchall()
            assert counts == [(date(2025, 3, 10), 2, 2), (date(2025, 3, 11), 1, 1)]
            assert c.execute("SELECT count(*) FROM detections").fetchone()[0] == 1
    finally:
        drop_schema(dsn, schema)

"""`vigil replay --into` / `--verify` against real Kafka + PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from projections.migrate import upgrade
from projections.projector import Projector
from projections.replay import drop_schema
from projections.settings import ProjectorSettings, get_projector_settings
from projections.workload import mixed_workload, publish
from vigil.cli import main
from vigil.kafka import EventProducer
from vigil.settings import get_settings

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

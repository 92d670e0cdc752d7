"""Appearance embeddings as daily halfvec partitions (migration 0044) on a real database:
the migration from `vector`, search over a window of days, erasure across days and its
replay, and the replay's per-day index builds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from api.deps import make_engine
from api.search import neighbours_statement, run_search
from projections.migrate import (
    embedding_partitions,
    ensure_embedding_partitions,
    set_search_path,
    upgrade,
)
from projections.projector import Projector
from projections.replay import DayIndexer, bulk_load, drop_schema, replay_into
from projections.settings import ProjectorSettings, get_projector_settings
from schemas import events as ev
from schemas.tables import in_schema
from tools.bench.workload import publish, reid_vectors
from vigil.settings import get_settings
from vigil_cli.main import main

pytestmark = pytest.mark.integration

DAY0 = datetime(2026, 11, 20, tzinfo=UTC)
COLS = ("detection_id, event_id, camera_id, frame_sequence, occurred_at, model, "
        "log_partition, log_offset")


def _text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.9g}" for x in v) + "]"


def _exact(base: np.ndarray, q: np.ndarray, k: int, exclude: int | None = None) -> list[int]:
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    sims = b @ (q / np.linalg.norm(q))
    if exclude is not None:
        sims[exclude] = -np.inf
    return [int(i) for i in np.argsort(-sims)[:k]]


@pytest.fixture
def schema(topic_prefix: str) -> Iterator[str]:
    name = f"{topic_prefix}_emb"
    yield name
    drop_schema(get_settings().database_dsn, name)


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    eng = make_engine(get_settings().database_url, pool_size=1)
    yield eng
    eng.dispose()


def _search(engine: sa.Engine, schema: str, vec: np.ndarray, k: int, *, since: datetime,
            until: datetime | None = None, exclude: str | None = None,
            index_only: bool = False) -> list[sa.Row]:
    with engine.connect() as c:
        if index_only:  # no sort, no scan: only the HNSW graphs can answer in order
            c.exec_driver_sql("SET enable_seqscan = off")
            c.exec_driver_sql("SET enable_sort = off")
        try:
            return run_search(in_schema(c, schema), neighbours_statement(
                vec.tolist(), k, since=since, until=until, exclude=exclude), k, 64)
        finally:
            c.exec_driver_sql("RESET ALL")


def test_migration_from_vector_keeps_every_row_and_answers_the_same_neighbours(
        schema: str, engine: sa.Engine) -> None:
    dsn = get_settings().database_dsn
    upgrade(dsn, schema, 192, target=43)  # the schema as it was: one vector(192) table
    rng = np.random.default_rng(11)
    base = reid_vectors(rng, rng.normal(size=(60, 192)), 20).reshape(-1, 192)
    step = timedelta(hours=72) / len(base)
    with psycopg.connect(dsn) as c:
        set_search_path(c, schema)
        assert c.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                         "attrelid = 'embeddings'::regclass AND attname = 'embedding'"
                         ).fetchone() == ("vector(192)",)
        with c.cursor().copy(f"COPY embeddings ({COLS}, embedding) FROM STDIN") as cp:
            for i, v in enumerate(base):
                cp.write_row((f"d{i:04d}", f"e{i}", f"cam{i % 7}", i, DAY0 + step * i, "m",
                              i % 2, i, _text(v)))
        c.commit()
        before = c.execute(f"SELECT {COLS} FROM embeddings ORDER BY 1").fetchall()

    assert upgrade(dsn, schema, 192) == ["0044_embeddings_halfvec_daily"]

    with psycopg.connect(dsn) as c:
        set_search_path(c, schema)
        assert c.execute(f"SELECT {COLS} FROM embeddings ORDER BY 1").fetchall() == before
        assert c.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                         "attrelid = 'embeddings'::regclass AND attname = 'embedding'"
                         ).fetchone() == ("halfvec(192)",)
        # every row sits in the partition of its UTC day, each day with its own graph
        misplaced = c.execute(
            "SELECT count(*) FROM embeddings WHERE tableoid::regclass::text <> "
            "'embeddings_d' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYYMMDD')"
        ).fetchone()[0]
        assert misplaced == 0
        days = {d for _, d in embedding_partitions(c)}
        assert {date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)} <= days
        graphs = {r[0] for r in c.execute(
            "SELECT tablename FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE "
            "'%%USING hnsw (embedding halfvec_cosine_ops)%%'", (schema,)).fetchall()}
        assert {n for n, _ in embedding_partitions(c)} <= graphs

    # the same nearest neighbours as exact search on the old float32 vectors, answered
    # by the day graphs (sorting and scanning disabled), within the recall bound
    recalls = []
    for i in rng.choice(len(base), 30, replace=False):
        rows = _search(engine, schema, base[i], 10, since=DAY0 - timedelta(days=1),
                       exclude=f"d{i:04d}", index_only=True)
        got = {r.detection_id for r in rows}
        want = {f"d{j:04d}" for j in _exact(base, base[i], 10, exclude=int(i))}
        recalls.append(len(got & want) / 10)
    assert np.mean(recalls) >= 0.95, recalls


def test_search_over_a_window_merges_the_top_k_of_only_its_days(
        schema: str, engine: sa.Engine) -> None:
    dsn = get_settings().database_dsn
    upgrade(dsn, schema, 192)
    rng = np.random.default_rng(5)
    person = rng.normal(size=192)
    rows = []
    for d in range(4):  # 2026-11-20 .. 23: three of the person's sightings a day + crowd
        day = DAY0 + timedelta(days=d)
        for j in range(3):
            rows.append((f"p-{d}-{j}", day + timedelta(hours=3 + 6 * j),
                         person + rng.normal(0, 0.5, 192)))
        for j in range(150):
            rows.append((f"o-{d}-{j}", day + timedelta(minutes=9 * j), rng.normal(size=192)))
    with psycopg.connect(dsn) as c:
        set_search_path(c, schema)
        ensure_embedding_partitions(c, DAY0.date(), ahead=3)
        with c.cursor().copy("COPY embeddings (detection_id, event_id, camera_id, "
                             "frame_sequence, occurred_at, model, embedding) FROM STDIN") as cp:
            for det, at, v in rows:
                cp.write_row((det, f"e-{det}", "cam", 1, at, "m", _text(v)))
        c.commit()
        c.execute("ANALYZE embeddings")
        c.commit()
    query = person + rng.normal(0, 0.5, 192)
    since, until = DAY0 + timedelta(days=1), DAY0 + timedelta(days=3)  # the 21st and 22nd

    top = _search(engine, schema, query, 6, since=since, until=until, index_only=True)
    assert {r.detection_id for r in top} == {f"p-{d}-{j}" for d in (1, 2) for j in range(3)}
    dists = [r.distance for r in top]
    assert dists == sorted(dists)
    wide = _search(engine, schema, query, 20, since=since, until=until, index_only=True)
    assert [r.detection_id for r in wide[:6]] == [r.detection_id for r in top]
    assert len(wide) == 20 and all(since <= r.occurred_at < until for r in wide)
    # the whole four days: the person's twelve sightings first
    everything = _search(engine, schema, query, 12, since=DAY0, index_only=True)
    assert {r.detection_id[:2] for r in everything} == {"p-"}

    # only the window's days are read, through their graphs, merged in distance order
    with engine.connect() as c:
        c.exec_driver_sql(f"SET search_path TO {schema}, public")
        c.exec_driver_sql("SET enable_seqscan = off")
        c.exec_driver_sql("SET enable_sort = off")
        stmt = neighbours_statement(query.tolist(), 6, since=since, until=until)
        sql_text = str(stmt.compile(dialect=engine.dialect,
                                    compile_kwargs={"literal_binds": True}))
        plan = "\n".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + sql_text))
        c.exec_driver_sql("RESET ALL")
    assert "Merge Append" in plan
    assert "embeddings_d20261121_embedding_idx" in plan
    assert "embeddings_d20261122_embedding_idx" in plan
    assert "embeddings_d20261120" not in plan and "embeddings_d20261123" not in plan


def _embedded(det: str, at: datetime, vec: np.ndarray, cam: str = "cam-1"
              ) -> tuple[str, str, ev.Event]:
    return ("embeddings", cam, ev.AppearanceEmbedded.create(
        producer="t", occurred_at=at, camera_id=cam, detection_id=det, frame_sequence=1,
        model="m", vector=[float(x) for x in vec]))


def test_erasure_removes_a_person_from_every_day_and_a_replay_honours_it(
        topic_prefix: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    dsn = get_settings().database_dsn
    monkeypatch.setenv("VIGIL_PROJECTOR_SCHEMA", topic_prefix)
    get_projector_settings.cache_clear()
    rebuilt = f"{topic_prefix}_rebuilt"
    upgrade(dsn, topic_prefix, 192)
    rng = np.random.default_rng(9)
    person = rng.normal(size=192)
    items = []
    for d in range(4):
        day = DAY0 + timedelta(days=d, hours=8)
        items.append(_embedded(f"p-{d}", day, person + rng.normal(0, 0.5, 192)))
        items += [_embedded(f"o-{d}-{j}", day + timedelta(minutes=j), rng.normal(size=192),
                            cam=f"cam-{j % 3}") for j in range(10)]
    try:
        publish(items)
        proj = Projector(dsn=dsn, schema=topic_prefix, prefix=topic_prefix,
                         settings=ProjectorSettings(), stop_at="end")
        proj.run(max_seconds=60)
        proj.close()
        with psycopg.connect(dsn) as c:
            set_search_path(c, topic_prefix)
            homes = c.execute("SELECT DISTINCT tableoid::regclass::text FROM embeddings "
                              "WHERE detection_id LIKE 'p-%%'").fetchall()
            assert len(homes) == 4  # one sighting in each day's partition

        person_ids = [f"p-{d}" for d in range(4)]
        assert main(["erase", "--detection", *person_ids, "--reason", "test"]) == 0
        assert json.loads(capsys.readouterr().out)["embeddings_deleted"] == 4
        with psycopg.connect(dsn) as c:
            set_search_path(c, topic_prefix)
            assert c.execute("SELECT count(*) FROM embeddings WHERE detection_id LIKE "
                             "'p-%%'").fetchone()[0] == 0
            assert c.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 40

        # a rebuild from offset 0 reads the embeddings again and keeps the person out,
        # building a graph per day (during the load when it can: "on")
        ps = ProjectorSettings(schema_name=topic_prefix, replay_index_overlap="on")
        replay_into(dsn, topic_prefix, ps, rebuilt, workers=1)
        with psycopg.connect(dsn) as c:
            set_search_path(c, rebuilt)
            assert c.execute("SELECT count(*) FROM embeddings WHERE detection_id LIKE "
                             "'p-%%'").fetchone()[0] == 0
            assert c.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 40
            attached = {r[0] for r in c.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'embeddings_hnsw'::regclass").fetchall()}
            assert {f"{n}_embedding_idx" for n, _ in embedding_partitions(c)} == attached
    finally:
        drop_schema(dsn, topic_prefix)
        drop_schema(dsn, rebuilt)
        get_projector_settings.cache_clear()


def test_day_indexer_builds_passed_days_and_the_final_build_adopts_them(schema: str) -> None:
    """A day's graph is built once the load's watermark is past it, and the parent index
    created after the load attaches that graph instead of building it again."""
    dsn = get_settings().database_dsn
    upgrade(dsn, schema, 8)
    rng = np.random.default_rng(2)
    with bulk_load(dsn, schema, 64) as dropped:
        hnsw = next(d for _, d in dropped if " USING hnsw " in d)
        with psycopg.connect(dsn) as c:
            set_search_path(c, schema)
            ensure_embedding_partitions(c, DAY0.date(), ahead=1)
            for i in range(200):
                c.execute("INSERT INTO embeddings (detection_id, event_id, camera_id, "
                          "frame_sequence, occurred_at, model, embedding) VALUES "
                          "(%s, 'e', 'cam', 1, %s, 'm', %s)",
                          (f"d{i}", DAY0 + timedelta(hours=i % 48), _text(rng.normal(size=8))))
            c.commit()
        # the load has reached 06:00 on the second day: only the first is complete
        mark = (DAY0 + timedelta(days=1, hours=6)).timestamp()
        indexer = DayIndexer(dsn, schema, hnsw, 64, lambda: mark)
        indexer.start()
        deadline = time.monotonic() + 30
        while "embeddings_d20261120" not in indexer.built and time.monotonic() < deadline:
            time.sleep(0.2)
        indexer.finish()
        assert set(indexer.built) == {"embeddings_d20261120"}
        with psycopg.connect(dsn) as c:
            first = c.execute("SELECT %s::regclass::oid",
                              (f"{schema}.embeddings_d20261120_embedding_idx",)).fetchone()[0]
    with psycopg.connect(dsn) as c:
        set_search_path(c, schema)
        attached = dict(c.execute(
            "SELECT c.relname, c.oid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'embeddings_hnsw'::regclass").fetchall())
    assert attached["embeddings_d20261120_embedding_idx"] == first  # adopted, not rebuilt
    assert "embeddings_d20261121_embedding_idx" in attached

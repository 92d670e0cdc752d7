"""Appearance embeddings at fleet scale, measured inside `vigil bench projection`.

Three measurements (docs/benchmarks.md, "Appearance embeddings"):

- `quantization`: does half precision lose anything? Clustered re-identification-like
  vectors (`workload.reid_vectors`) go into a ``vector(192)`` and a ``halfvec(192)`` table,
  each with the production HNSW index (m = 16, ef_construction = 64). Fresh draws of the
  same people are the queries. Against exact float32 search (numpy): recall@10/@20 of
  both indexes, and same-person nearest-neighbour accuracy of exact float32, exact half
  precision and both indexes.
- `search`: the API's own statement (`api.search.neighbours_statement`, run through
  `run_search` with the API's default ef) over the replayed schema — 72 h of 64 cameras,
  four daily partitions — at k = 20: latency percentiles, and recall@10/@20 against an
  exact scan of the same stored values.
- `retention_drop`: one whole day dropped by `projections.retention.expire_embeddings`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from api.deps import make_engine
from api.search import neighbours_statement, run_search
from api.settings import ApiSettings
from projections.migrate import embedding_partitions, set_search_path
from projections.retention import expire_embeddings
from schemas.tables import in_schema
from tools.bench.runner import percentile
from tools.bench.workload import reid_vectors

HNSW = "USING hnsw (embedding {ops}) WITH (m = 16, ef_construction = 64)"


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _exact_top(base: np.ndarray, queries: np.ndarray, k: int,
               exclude: list[int] | None = None) -> np.ndarray:
    """Row indexes of the k most cosine-similar rows of `base` per query (best first);
    `exclude[i]` (a row) is never a neighbour of query i."""
    b = _unit(base.astype(np.float32))
    out = []
    for start in range(0, len(queries), 50):
        q = _unit(queries[start:start + 50].astype(np.float32))
        sims = q @ b.T
        if exclude is not None:
            for j in range(len(q)):
                sims[j, exclude[start + j]] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(part, order, axis=1))
    return np.vstack(out)


def _recall(got: list[list[int]], exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(g[:k]) & set(e[:k].tolist())) / k
                          for g, e in zip(got, exact, strict=True)]))


def _text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in v) + "]"


def quantization(dsn: str, schema: str, *, persons: int = 2000, per_person: int = 25,
                 queries: int = 200, seed: int = 7) -> dict[str, Any]:
    """vector vs halfvec: index recall and same-person accuracy (module docstring)."""
    rng = np.random.default_rng(seed)
    dim = 192
    centres = rng.normal(0.0, 1.0, (persons, dim))
    base = reid_vectors(rng, centres, per_person).reshape(-1, dim)
    owner = np.repeat(np.arange(persons), per_person)
    who = rng.choice(persons, queries, replace=False)
    qs = reid_vectors(rng, centres[who], 1).reshape(-1, dim)
    exact = _exact_top(base, qs, 20)
    exact_half = _exact_top(base.astype(np.float16), qs.astype(np.float16), 1)
    out: dict[str, Any] = {"vectors": len(base), "persons": persons, "queries": queries,
                           "dim": dim, "ef_search": ApiSettings().search_ef,
                           "same_person_nn_exact_float32":
                               float(np.mean(owner[exact[:, 0]] == who)),
                           "same_person_nn_exact_float16":
                               float(np.mean(owner[exact_half[:, 0]] == who))}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        set_search_path(conn, schema)
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(f"SET hnsw.ef_search = {max(20, ApiSettings().search_ef)}")
        for typ, ops in (("vector", "vector_cosine_ops"), ("halfvec", "halfvec_cosine_ops")):
            table = f"q_{typ}"
            conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, "
                         f"embedding {typ}({dim}) NOT NULL)")
            with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as cp:
                for i, v in enumerate(base):
                    cp.write_row((i, _text(v)))
            t = time.perf_counter()
            conn.execute(f"CREATE INDEX ON {table} " + HNSW.format(ops=ops))
            out[f"{typ}_hnsw_build_s"] = time.perf_counter() - t
            got = []
            for q in qs:
                rows = conn.execute(f"SELECT id FROM {table} ORDER BY embedding <=> %s::{typ} "
                                    "LIMIT 20", (_text(q),)).fetchall()
                got.append([r[0] for r in rows])
            out[f"{typ}_recall_at_10"] = _recall(got, exact, 10)
            out[f"{typ}_recall_at_20"] = _recall(got, exact, 20)
            out[f"same_person_nn_{typ}_hnsw"] = float(np.mean(
                [bool(g) and owner[g[0]] == w for g, w in zip(got, who, strict=True)]))
    return out


def search(dsn: str, database_url: str, schema: str, since: datetime, until: datetime, *,
           queries: int = 200, k: int = 20) -> dict[str, Any]:
    """The API's statement, on the API's engine, over the replayed embeddings (module
    docstring)."""
    ef = ApiSettings().search_ef
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        conn.execute("ANALYZE embeddings")
        total = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]  # type: ignore[index]
        cams = conn.execute("SELECT count(DISTINCT camera_id) FROM embeddings"
                            ).fetchone()[0]  # type: ignore[index]
        parts = [n for n, _ in embedding_partitions(conn)
                 if conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{n}")').fetchone()[0]]  # type: ignore[index]
        # every vector, for the exact answers (cast to float4: the stored values exactly)
        ids, vecs = [], []
        with conn.cursor() as cur:
            cur.execute("SELECT detection_id, embedding::vector::text FROM embeddings")
            for det, txt in cur:
                ids.append(det)
                vecs.append(np.array(txt[1:-1].split(","), dtype=np.float32))
    base = np.vstack(vecs)
    rng = np.random.default_rng(3)
    pick = rng.choice(len(ids), queries, replace=False)
    exact = _exact_top(base, base[pick], k, exclude=pick.tolist())
    index = {d: i for i, d in enumerate(ids)}
    engine = make_engine(database_url, pool_size=1)
    got, lat = [], []
    try:
        with engine.connect() as c:
            conn = in_schema(c, schema)
            for i in pick:
                stmt = neighbours_statement(base[i].tolist(), k, since=since, until=until,
                                            exclude=ids[i])
                t = time.perf_counter()
                rows = run_search(conn, stmt, k, ef)
                lat.append((time.perf_counter() - t) * 1000)
                got.append([index[r.detection_id] for r in rows])
    finally:
        engine.dispose()
    return {"embeddings": total, "cameras": cams, "partitions": len(parts), "k": k,
            "ef_search": ef, "queries": queries, "window_h": (until - since) / timedelta(hours=1),
            "p50_ms": percentile(lat, 0.5), "p95_ms": percentile(lat, 0.95),
            "p99_ms": percentile(lat, 0.99), "recall_at_10": _recall(got, exact, 10),
            "recall_at_20": _recall(got, exact, 20),
            "statement": "api.search.neighbours_statement + run_search (the API's), "
                         "queries = stored detections (excluded from their own answer)"}


def retention_drop(dsn: str, schema: str) -> dict[str, Any]:
    """Drop the oldest whole day of the replayed embeddings (after any partial first day),
    the way the retention policy does; the timed call drops exactly one full day."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        days = [(n, d) for n, d in embedding_partitions(conn)
                if conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{n}")').fetchone()[0]]  # type: ignore[index]
        if len(days) < 3:
            return {"skipped": "fewer than three days of embeddings"}
        # first (partial) day goes untimed; the second is a full day
        first, second = days[0][1], days[1][1]
        def cutoff(d: Any) -> datetime:
            return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1, hours=72,
                                                                            seconds=1)
        expire_embeddings(conn, 72.0, cutoff(first))
        rows = conn.execute(f'SELECT count(*) FROM "{days[1][0]}"').fetchone()[0]  # type: ignore[index]
        size = conn.execute("SELECT pg_total_relation_size(%s::regclass)",
                            (days[1][0],)).fetchone()[0]  # type: ignore[index]
        t = time.perf_counter()
        report = expire_embeddings(conn, 72.0, cutoff(second))
        took = time.perf_counter() - t
    return {"partition": days[1][0], "rows": rows, "bytes_with_indexes": size,
            "drop_s": took, "dropped": report["embeddings_dropped_partitions"]}


"""Replay: rebuild every read model from offset 0 into a fresh schema, and verify.

`replay_into` runs a second projector (its own consumer name and schema) from the start
of every topic up to the end offsets seen when it starts. `verify` rebuilds into a
temporary schema up to exactly the offsets the live projector has committed, then
compares the two schemas table by table (row count + an order-independent checksum over
each row's JSON, bookkeeping columns excluded) inside one REPEATABLE READ snapshot, and
lists the differing primary keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from projections import tables
from projections.migrate import set_search_path, upgrade
from projections.offsets import load_offsets
from projections.projector import Projector, RunStats
from projections.settings import ProjectorSettings
from vigil.errors import VigilError

#: Columns that describe the projection run rather than the log (excluded from compare).
BOOKKEEPING_COLUMNS: dict[str, tuple[str, ...]] = {}


def _schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                        (schema,)).fetchone() is not None


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def replay_into(dsn: str, prefix: str, settings: ProjectorSettings, schema: str, *,
                force: bool = False, stop_at: str | dict[Any, int] = "end",
                consumer_name: str = "replay") -> RunStats:
    """Build the read models from offset 0 into the (new) schema `schema`."""
    if schema == settings.schema_name and not force:
        raise VigilError(f"refusing to replay into the live schema {schema!r}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if _schema_exists(conn, schema) and not force:
            raise VigilError(f"schema {schema!r} exists; use --force to rebuild it")
    if force:
        drop_schema(dsn, schema)
    upgrade(dsn, schema, settings.embedding_dim)
    with deferred_vector_index(dsn, schema):
        proj = Projector(dsn=dsn, schema=schema, prefix=prefix, settings=settings,
                         consumer_name=consumer_name, stop_at=stop_at,
                         group_id=f"{prefix}.replay.{schema}.{uuid.uuid4().hex[:8]}")
        try:
            return proj.run()
        finally:
            proj.close()


@contextmanager
def deferred_vector_index(dsn: str, schema: str) -> Iterator[None]:
    """Build the HNSW index once after a bulk rebuild instead of row by row during it:
    inserting into an HNSW graph is the most expensive write of a replay."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        row = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND "
                           "indexname = 'embeddings_hnsw'", (schema,)).fetchone()
        if row:
            conn.execute("DROP INDEX embeddings_hnsw")
    try:
        yield
    finally:
        if row:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '256MB'")
                conn.execute(row[0])


@dataclass
class TableDiff:
    table: str
    live_rows: int
    replay_rows: int
    live_checksum: str | None
    replay_checksum: str | None
    differing_keys: list[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    live_schema: str
    replay_schema: str
    tables: int
    differences: list[TableDiff]
    offsets_equal: bool
    replayed_messages: int

    @property
    def equal(self) -> bool:
        return not self.differences and self.offsets_equal

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["equal"] = self.equal
        return d

    def text(self) -> str:
        lines = [f"replay --verify: {self.tables} tables, live {self.live_schema} vs "
                 f"rebuild {self.replay_schema} ({self.replayed_messages} messages replayed)"]
        if not self.offsets_equal:
            lines.append("  live projector moved while verifying: offsets differ")
        for d in self.differences:
            lines.append(f"  DIFF {d.table}: rows live={d.live_rows} replay={d.replay_rows}")
            lines.extend(f"       key {k}" for k in d.differing_keys)
        lines.append("EQUAL" if self.equal else "DIFFERENT")
        return "\n".join(lines)


def _row_hashes_sql(schema: str, table: tables.Table) -> sql.Composed:
    """SELECT pk-json, md5(row-json minus bookkeeping) for every row of `table`."""
    pk = [c.name for c in table.primary_key.columns]
    excluded = BOOKKEEPING_COLUMNS.get(table.name, ())
    row = sql.SQL("to_jsonb(t)")
    for col in excluded:
        row = sql.SQL("({} - {})").format(row, sql.Literal(col))
    pk_json = sql.SQL("jsonb_build_array({})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in pk))
    return sql.SQL("SELECT {pk}::text AS k, md5(({row})::text) AS h FROM {s}.{t} t").format(
        pk=pk_json, row=row, s=sql.Identifier(schema), t=sql.Identifier(table.name))


def compare_schemas(conn: psycopg.Connection, live: str, replay: str,
                    max_keys: int = 20) -> list[TableDiff]:
    """Per-table row counts and checksums; differing keys for tables that differ."""
    diffs = []
    for table in tables.READ_MODEL_TABLES:
        summary = {}
        for schema in (live, replay):
            q = sql.SQL("SELECT count(*), md5(string_agg(h, '' ORDER BY h)) FROM ({}) x").format(
                _row_hashes_sql(schema, table))
            summary[schema] = conn.execute(q).fetchone()
        (ln, lc), (rn, rc) = summary[live], summary[replay]
        if ln == rn and lc == rc:
            continue
        q = sql.SQL(
            "SELECT coalesce(a.k, b.k), a.h IS NULL, b.h IS NULL FROM ({}) a "
            "FULL JOIN ({}) b ON a.k = b.k WHERE a.h IS DISTINCT FROM b.h "
            "ORDER BY 1 LIMIT {}").format(
            _row_hashes_sql(live, table), _row_hashes_sql(replay, table), sql.Literal(max_keys))
        keys = []
        for k, missing_live, missing_replay in conn.execute(q):
            what = "only in replay" if missing_live else (
                "only in live" if missing_replay else "content differs")
            keys.append(f"{k} ({what})")
        diffs.append(TableDiff(table.name, ln, rn, lc, rc, keys))
    return diffs


def verify(dsn: str, prefix: str, settings: ProjectorSettings, *, live_schema: str,
           keep: bool = False, attempts: int = 5) -> VerifyResult:
    """Rebuild into a temporary schema and compare it with `live_schema`."""
    tmp = f"{live_schema}_verify_{uuid.uuid4().hex[:8]}"
    live_consumer = settings.consumer
    replayed = 0
    try:
        upgrade(dsn, tmp, settings.embedding_dim)
        # The temporary schema is never searched: no HNSW index needed at all.
        with psycopg.connect(dsn, autocommit=True) as conn:
            set_search_path(conn, tmp)
            conn.execute("DROP INDEX embeddings_hnsw")
        for attempt in range(attempts):
            with psycopg.connect(dsn, autocommit=True) as conn:
                set_search_path(conn, live_schema)
                target = load_offsets(conn, live_consumer)
            proj = Projector(dsn=dsn, schema=tmp, prefix=prefix, settings=settings,
                             consumer_name="replay", stop_at=target,
                             group_id=f"{prefix}.verify.{tmp}")
            try:
                replayed += proj.run().messages
            finally:
                proj.close()
            with psycopg.connect(dsn) as conn:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                set_search_path(conn, live_schema)
                live_now = load_offsets(conn, live_consumer)
                set_search_path(conn, tmp)
                rebuilt = load_offsets(conn, "replay")
                same = {k: v for k, v in live_now.items() if v} == {
                    k: v for k, v in rebuilt.items() if v}
                if same or attempt == attempts - 1:
                    diffs = compare_schemas(conn, live_schema, tmp)
                    return VerifyResult(live_schema, tmp, len(tables.READ_MODEL_TABLES), diffs,
                                        same, replayed)
        raise AssertionError("unreachable")
    finally:
        if not keep:
            drop_schema(dsn, tmp)

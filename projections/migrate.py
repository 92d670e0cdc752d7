"""Schema migrations: ordered SQL files, applied once per schema, recorded with a checksum.

Why not Alembic: every read-model schema (live, replay targets, one per test) must be
built by the same DDL, and the DDL includes things Alembic autogenerate cannot express
(monthly and daily partitions, HNSW index options, a configurable vector dimension). A dozen lines
that run ``migrations/NNNN_name.sql`` in order inside ``search_path = <schema>, public``
keep the DDL readable as SQL and need no extra dependency. Each file runs in its own
transaction with its ``schema_migrations`` row; an edited, already-applied file is an
error (checksum) rather than a silent drift.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from vigil.errors import ConfigError, VigilError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise VigilError(f"migration file {path.name} is not named NNNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise VigilError("two migrations share a version number")
    return out


def set_search_path(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))


def upgrade(dsn: str, schema: str, embedding_dim: int, target: int | None = None
            ) -> list[str]:
    """Bring `schema` up to the newest migration (or to version `target`, for tests of a
    migration); returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Extensions are database-wide; keep `vector` in public so every schema sees it.
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"vigil-migrate:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        set_search_path(conn, schema)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL)"
        )
        done = {
            v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")
        }
        for mig in load_migrations():
            if target is not None and mig.version > target:
                break
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    raise VigilError(
                        f"migration {mig.version:04d}_{mig.name} was edited after it was "
                        f"applied to schema {schema!r}; add a new migration instead"
                    )
                continue
            ddl = mig.text.replace("{{embedding_dim}}", str(int(embedding_dim)))
            conn.execute(ddl.encode())
            conn.execute(
                "INSERT INTO schema_migrations VALUES (%s, %s, %s, %s)",
                (mig.version, mig.name, mig.checksum, datetime.now(UTC)),
            )
            applied_now.append(f"{mig.version:04d}_{mig.name}")
        have = conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'embeddings'::regclass "
            "AND attname = 'embedding'"
        ).fetchone()
        if have and have[0] != embedding_dim:
            raise ConfigError(
                f"schema {schema!r} stores halfvec({have[0]}) embeddings but "
                f"VIGIL_PROJECTOR_EMBEDDING_DIM={embedding_dim}; a new migration is needed"
            )
        today = datetime.now(UTC).date()
        ensure_partitions(conn, today, ahead=2)
        if conn.execute("SELECT relkind FROM pg_class WHERE oid = 'embeddings'::regclass"
                        ).fetchone() == ("p",):  # partitioned by day (0044 on)
            ensure_embedding_partitions(conn, today, ahead=EMBEDDING_DAYS_AHEAD)
    if applied_now:
        log.info("migrations applied", extra={"schema": schema, "applied": applied_now})
    return applied_now


def month_start(d: date) -> date:
    return date(d.year, d.month, 1)


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def partition_name(month: date) -> str:
    return f"detections_y{month.year:04d}m{month.month:02d}"


def ensure_partitions(conn: psycopg.Connection, day: date, ahead: int = 0) -> list[str]:
    """Create the detections partitions for `day`'s month and `ahead` months after it.

    Needs search_path set to the read-model schema. Idempotent.
    """
    created = []
    first = month_start(day)
    for i in range(ahead + 1):
        lo = add_months(first, i)
        hi = add_months(lo, 1)
        name = partition_name(lo)
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF detections "
                "FOR VALUES FROM ({}) TO ({})"
            ).format(
                sql.Identifier(name),
                sql.Literal(f"{lo.isoformat()} 00:00:00+00"),
                sql.Literal(f"{hi.isoformat()} 00:00:00+00"),
            )
        )
        created.append(name)
    return created


#: Daily embeddings partitions are created this many days ahead (by `upgrade` and by every
#: retention run); the writer creates a missing day on demand as well.
EMBEDDING_DAYS_AHEAD = 2


def embedding_partition_name(day: date) -> str:
    return f"embeddings_d{day.year:04d}{day.month:02d}{day.day:02d}"


def embedding_partitions(conn: psycopg.Connection) -> list[tuple[str, date]]:
    """(name, day) of every embeddings partition, oldest first (search_path set)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'embeddings'::regclass").fetchall()
    out = []
    for (name,) in rows:
        if name.startswith("embeddings_d") and len(name) == 20 and name[12:].isdigit():
            out.append((name, date(int(name[12:16]), int(name[16:18]), int(name[18:20]))))
    return sorted(out, key=lambda r: r[1])


def ensure_embedding_partitions(conn: psycopg.Connection, day: date, ahead: int = 0
                                ) -> list[str]:
    """Create the embeddings partitions of `day` and the `ahead` days after it (UTC days;
    search_path set to the read-model schema). Idempotent. Each new partition gets the
    parent's indexes, the HNSW graph included, when the parent has them (not during a
    replay's bulk load, which builds them per day itself)."""
    created = []
    for i in range(ahead + 1):
        lo = day + timedelta(days=i)
        name = embedding_partition_name(lo)
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF embeddings "
                "FOR VALUES FROM ({}) TO ({})"
            ).format(
                sql.Identifier(name),
                sql.Literal(f"{lo.isoformat()} 00:00:00+00"),
                sql.Literal(f"{(lo + timedelta(days=1)).isoformat()} 00:00:00+00"),
            )
        )
        created.append(name)
    return created

"""Replay: rebuild every read model from offset 0 into a fresh schema, and verify.

`replay_into` rebuilds from the start of every topic up to the end offsets seen when it
starts, as a bulk load (`rebuild`: secondary indexes built once at the end, one consumer
process per disjoint set of partitions, privacy first). `verify` rebuilds into a
temporary schema up to exactly the offsets the live projector has committed, then
compares the two schemas table by table (row count + an order-independent checksum over
each row's JSON, bookkeeping columns excluded) inside one REPEATABLE READ snapshot, and
lists the differing primary keys. Rows folded from events that retention has already
deleted (offset below their partition's log-start offset) cannot be rebuilt: they are
left out of the comparison and counted per table.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from projections.migrate import embedding_partitions, set_search_path, upgrade
from projections.offsets import load_offsets
from projections.projector import Projector, RunStats
from projections.settings import ProjectorSettings
from schemas import events as ev
from schemas import tables
from vigil.errors import VigilError
from vigil.kafka import consumer_config

log = logging.getLogger(__name__)

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
                consumer_name: str = "replay", workers: int | None = None,
                parallel_min: int | None = None) -> RunStats:
    """Build the read models from offset 0 into the (new) schema `schema`."""
    if schema == settings.schema_name and not force:
        raise VigilError(f"refusing to replay into the live schema {schema!r}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if _schema_exists(conn, schema) and not force:
            raise VigilError(f"schema {schema!r} exists; use --force to rebuild it")
    if force:
        drop_schema(dsn, schema)
    upgrade(dsn, schema, settings.embedding_dim)
    return rebuild(dsn, prefix, settings, schema, stop_at=stop_at,
                   consumer_name=consumer_name, workers=workers, parallel_min=parallel_min)


def rebuild(dsn: str, prefix: str, settings: ProjectorSettings, schema: str, *,
            stop_at: str | dict[Any, int], consumer_name: str = "replay",
            workers: int | None = None, indexes: bool = True,
            parallel_min: int | None = None) -> RunStats:
    """Project the log into the freshly migrated `schema` as a bulk load.

    Why it is fast, and still exactly-once:
    - secondary indexes (and the HNSW graph) are dropped first and built once at the end
      (`bulk_load`); primary keys stay, they are what absorbs duplicates;
    - the privacy topic is read to its target first, in this process, so every erasure is
      committed before any embedding arrives (a concurrent insert could not see it);
    - the other partitions are split into `workers` disjoint sets balanced by message
      count, each consumed by its own process (decoding is the CPU cost, and one Python
      process uses one core) that commits its rows with its partitions' offsets in one
      transaction; folds are order-tolerant, so the interleaving does not change the
      result.
    `indexes=False` (verify's throw-away schema) leaves the secondary indexes away; below
    `parallel_min` messages (default PARALLEL_MIN_MESSAGES) one process does it all.
    """
    n_workers = workers or settings.replay_workers or os.cpu_count() or 1
    plan = _plan(prefix, stop_at)
    stats = RunStats()
    started = time.perf_counter()
    timing: dict[str, float] = {}
    privacy = [tp for tp in plan.targets if tp[0] == f"{prefix}.privacy"]
    rest = [tp for tp in plan.targets if tp not in privacy]
    shards = _split(rest, plan.sizes, n_workers,
                    PARALLEL_MIN_MESSAGES if parallel_min is None else parallel_min)
    overlap = indexes and index_overlap(settings.replay_index_overlap, max(1, len(shards)))
    # one slot per shard: how far in event time its embeddings partitions are loaded
    marks = multiprocessing.get_context("spawn").Array("d", [-math.inf] * max(1, len(shards)),
                                                       lock=False)
    with bulk_load(dsn, schema, settings.replay_index_mem_mb, restore=indexes, timing=timing,
                   index_workers=settings.replay_index_workers) as dropped:
        indexer = None
        hnsw = [d for _n, d in dropped if " USING hnsw " in d and _on_embeddings(d)]
        if overlap and hnsw:
            indexer = DayIndexer(dsn, schema, hnsw[0], settings.replay_index_mem_mb,
                                 lambda: min(marks))
            indexer.start()
        try:
            if privacy:
                _merge(stats, _run_shard(dsn, prefix, settings, schema, consumer_name,
                                         privacy, plan.targets, "p"))
            if len(shards) <= 1:
                for shard in shards:
                    _merge(stats, _run_shard(dsn, prefix, settings, schema, consumer_name,
                                             shard, plan.targets, "0", marks, 0))
            else:
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=len(shards), mp_context=ctx,
                                         initializer=_share_marks, initargs=(marks,)) as pool:
                    futures = [pool.submit(_run_shard, dsn, prefix, settings, schema,
                                           consumer_name, shard, plan.targets, str(i), None, i)
                               for i, shard in enumerate(shards)]
                    for fut in futures:
                        _merge(stats, fut.result())
        finally:
            if indexer is not None:
                indexer.finish()
                stats.days_indexed_during_load = len(indexer.built)
                stats.hnsw_during_load_s = sum(indexer.built.values())
        timing["load_s"] = time.perf_counter() - started
    stats.workers = max(1, len(shards))
    stats.load_s = timing["load_s"]
    stats.index_s = timing.get("index_s", 0.0)
    stats.hnsw_s = timing.get("hnsw_s", 0.0)
    stats.btree_s = timing.get("btree_s", 0.0)
    log.info("rebuild done", extra={"schema": schema, "messages": stats.messages,
                                    "workers": stats.workers, "load_s": round(stats.load_s, 2),
                                    "index_s": round(stats.index_s, 2),
                                    "hnsw_s": round(stats.hnsw_s, 2),
                                    "btree_s": round(stats.btree_s, 2),
                                    "days_indexed_during_load": stats.days_indexed_during_load,
                                    "hnsw_during_load_s": round(stats.hnsw_during_load_s, 2)})
    return stats


def index_overlap(mode: str, load_processes: int) -> bool:
    """Build finished days' HNSW graphs during the load? "auto": when the cores outnumber
    the load's consumer processes, so the build takes a core the load leaves idle. Each
    consumer keeps its own PostgreSQL backend busy as well, so on a machine with no core
    to spare the build only slows the load down (measured on the bench, one graph built
    during the load took 243 s instead of 169 s after it, README "Replay and verify")."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return (os.cpu_count() or 1) > load_processes


def _on_embeddings(ddl: str) -> bool:
    return ".embeddings USING " in ddl.replace(" ON ONLY ", " ON ", 1)


class DayIndexer(threading.Thread):
    """Builds the HNSW graph of every embeddings day the load has passed, one day at a
    time on its own connection, while the later days load (`rebuild`).

    "Passed" is the load's event-time watermark: every consumer reports how far its
    embeddings partitions got (each partition is in event order, as produced), and a day
    is built once the slowest is `SLACK_S` past its end. An embedding that arrives even
    later is simply inserted into that day's graph. The parent table's index, created
    after the load, takes over (attaches) these graphs and builds the remaining days.
    """

    #: seconds past a day's end before it counts as loaded (late embeddings)
    SLACK_S = 300.0

    def __init__(self, dsn: str, schema: str, parent_ddl: str, mem_mb: int,
                 watermark: Callable[[], float]) -> None:
        super().__init__(name="replay-day-indexer", daemon=True)
        self.dsn, self.schema, self.mem_mb = dsn, schema, mem_mb
        # "CREATE INDEX embeddings_hnsw ON ONLY s.embeddings USING hnsw (...) WITH (...)"
        self.method = parent_ddl[parent_ddl.index(" USING "):]
        self.watermark = watermark
        #: partition -> seconds its graph took
        self.built: dict[str, float] = {}
        self._done = threading.Event()
        self.error: BaseException | None = None

    def finish(self) -> None:
        """The load is over: finish the build under way (if any) and stop."""
        self._done.set()
        self.join()
        if self.error is not None:  # the final index build covers the days left
            log.warning("day index build failed during the load",
                        extra={"schema": self.schema, "error": str(self.error)[:300]})

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                set_search_path(conn, self.schema)
                conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(
                    sql.Literal(f"{int(self.mem_mb)}MB")))
                # the load's consumers have the other cores
                conn.execute("SET max_parallel_maintenance_workers = 0")
                while not self._done.wait(0.5):
                    self._build_passed(conn)
        except BaseException as exc:
            self.error = exc

    def _build_passed(self, conn: psycopg.Connection) -> None:
        mark = self.watermark()
        for name, day in embedding_partitions(conn):
            end = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + 86_400
            if name in self.built or end + self.SLACK_S > mark:
                continue
            if self._done.is_set():
                return
            t = time.perf_counter()
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{}").format(
                sql.Identifier(f"{name}_embedding_idx"), sql.Identifier(self.schema),
                sql.Identifier(name)).as_string(conn).encode() + self.method.encode())
            self.built[name] = time.perf_counter() - t
            log.info("day index built during the load", extra={
                "schema": self.schema, "partition": name, "s": round(self.built[name], 2)})


#: this worker process's watermark slots (`_share_marks`, set once per process)
_MARKS: Sequence[float] | None = None


def _share_marks(marks: Sequence[float]) -> None:
    global _MARKS
    _MARKS = marks


class _Watermark:
    """A replay consumer's progress in event time over its embeddings partitions: the
    oldest of their newest committed embeddings, +inf once all are at their target."""

    def __init__(self, partitions: list[tuple[str, int]], targets: dict[tuple[str, int], int],
                 marks: Sequence[float] | None, slot: int) -> None:
        self.pending = {tp: -math.inf for tp in partitions if tp[0].endswith(".embeddings")}
        self.targets = targets
        self.marks, self.slot = marks, slot
        self._publish()

    def __call__(self, items: list[Any]) -> None:
        for it in items:
            tp = (it.pos.topic, it.pos.partition)
            if tp not in self.pending:
                continue
            if it.pos.offset + 1 >= self.targets.get(tp, 0):
                del self.pending[tp]
            elif isinstance(it.event, ev.AppearanceEmbedded):
                at = it.event.occurred_at.timestamp()
                if at > self.pending[tp]:
                    self.pending[tp] = at
        self._publish()

    def done(self) -> None:
        self.pending.clear()
        self._publish()

    def _publish(self) -> None:
        if self.marks is not None:
            self.marks[self.slot] = min(self.pending.values(), default=math.inf)  # type: ignore[index]


@dataclass
class _Plan:
    #: (topic, partition) -> offset to stop at
    targets: dict[tuple[str, int], int]
    #: (topic, partition) -> messages to read (target - log start)
    sizes: dict[tuple[str, int], int]


def _plan(prefix: str, stop_at: str | dict[Any, int]) -> _Plan:
    from projections.projector import projected_suffixes

    consumer = Consumer(consumer_config(f"{prefix}.replay-plan.{uuid.uuid4().hex[:8]}"))
    try:
        md = consumer.list_topics(timeout=15)
        targets: dict[tuple[str, int], int] = {}
        sizes: dict[tuple[str, int], int] = {}
        for suffix in projected_suffixes():
            topic = f"{prefix}.{suffix}"
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for p in sorted(meta.partitions):
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                end = hi if stop_at == "end" else stop_at.get((topic, p), 0)  # type: ignore[union-attr]
                targets[(topic, p)] = end
                sizes[(topic, p)] = max(0, end - max(lo, 0))
        return _Plan(targets, sizes)
    finally:
        consumer.close()


#: Below this many messages a rebuild runs in one process (spawning costs ~1 s each).
PARALLEL_MIN_MESSAGES = 50_000


def _split(tps: list[tuple[str, int]], sizes: dict[tuple[str, int], int], n: int,
           parallel_min: int = PARALLEL_MIN_MESSAGES) -> list[list[tuple[str, int]]]:
    """Disjoint partition sets with about equal message counts (largest first, each to
    the lightest set); empty partitions are dropped, one set if the work is small."""
    work = sorted((tp for tp in tps if sizes.get(tp, 0) > 0), key=lambda tp: (-sizes[tp], tp))
    if n <= 1 or sum(sizes[tp] for tp in work) < parallel_min:
        return [work] if work else []
    bins: list[tuple[int, list[tuple[str, int]]]] = [(0, []) for _ in range(n)]
    for tp in work:
        i = min(range(n), key=lambda k: bins[k][0])
        bins[i] = (bins[i][0] + sizes[tp], [*bins[i][1], tp])
    return [sorted(b) for _, b in bins if b]


def _run_shard(dsn: str, prefix: str, settings: ProjectorSettings, schema: str,
               consumer_name: str, partitions: list[tuple[str, int]],
               targets: dict[tuple[str, int], int], shard: str,
               marks: Sequence[float] | None = None, slot: int = 0) -> RunStats:
    """One rebuild consumer over `partitions` (runs in a worker process or in-line); it
    reports its event-time progress into `marks[slot]` (in a worker: the process's
    shared slots) for the `DayIndexer`."""
    mark = _Watermark(partitions, targets, marks if marks is not None else _MARKS, slot)
    proj = Projector(dsn=dsn, schema=schema, prefix=prefix, settings=settings,
                     consumer_name=consumer_name, partitions=partitions,
                     stop_at={tp: targets[tp] for tp in partitions}, shard=f":{shard}",
                     group_id=f"{prefix}.replay.{schema}.{shard}.{uuid.uuid4().hex[:8]}",
                     fast_commit=True, on_committed=mark)
    try:
        return proj.run()
    finally:
        mark.done()
        proj.close()


def _merge(total: RunStats, part: RunStats) -> None:
    total.batches += part.batches
    total.messages += part.messages
    total.dead_letters += part.dead_letters
    total.db_retries += part.db_retries
    for k, v in part.by_topic.items():
        total.by_topic[k] = total.by_topic.get(k, 0) + v


def index_build_workers(configured: int) -> int:
    """Parallel maintenance workers for the index builds after a bulk load: `configured`,
    or (0) one fewer than the cores, because the leader process builds too. Measured on
    the 2-core bench machine, HNSW graph of 595 k 192-d vectors: 328 s with no worker,
    169 s with 1, 192 s with PostgreSQL's default of 2 (three processes on two cores)."""
    return configured if configured > 0 else max(0, (os.cpu_count() or 1) - 1)


@contextmanager
def bulk_load(dsn: str, schema: str, index_mem_mb: int, *, restore: bool = True,
              timing: dict[str, float] | None = None,
              index_workers: int = 0) -> Iterator[list[tuple[str, str]]]:
    """Drop the secondary indexes of `schema` for a bulk load and build them once after.

    Maintaining a dozen B-trees and an HNSW graph row by row is most of PostgreSQL's work
    during a replay; one sorted build per index at the end is several times cheaper (and
    the HNSW build runs in memory when its graph fits in `index_mem_mb`, with
    `index_build_workers(index_workers)` parallel workers). Primary keys stay: they
    deduplicate. The indexes are restored also when the load fails, so the schema is
    never left without them.

    Yields the dropped (name, definition) pairs. Building a partitioned index attaches
    a partition's equivalent index when it already has one, so the days `rebuild` built
    during the load (`DayIndexer`) are not built again.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        defs = conn.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = %s AND NOT t.relispartition AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid) ORDER BY 1",
            (schema,)).fetchall()
        for name, _ in defs:
            conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema),
                                                           sql.Identifier(name)))
    try:
        yield defs
    finally:
        if restore and defs:
            started = time.perf_counter()
            spent = {"btree_s": 0.0, "hnsw_s": 0.0}
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(
                    sql.Literal(f"{int(index_mem_mb)}MB")))
                conn.execute(sql.SQL("SET max_parallel_maintenance_workers = {}").format(
                    sql.Literal(index_build_workers(index_workers))))
                # the HNSW graph last: it is the largest
                for _name, ddl in sorted(defs, key=lambda d: " USING hnsw " in d[1]):
                    t = time.perf_counter()
                    # a partitioned table's index is reported "ON ONLY parent", which would
                    # build no index on the partitions
                    conn.execute(ddl.replace(" ON ONLY ", " ON ", 1).encode())
                    spent["hnsw_s" if " USING hnsw " in ddl else "btree_s"] += (
                        time.perf_counter() - t)
            if timing is not None:
                timing["index_s"] = time.perf_counter() - started
                timing.update(spent)


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
    #: rows left out of the comparison per table: their source events are below their
    #: partition's log-start offset (deleted by retention), so no rebuild can have them
    excluded: dict[str, int] = field(default_factory=dict)

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
        if self.excluded:
            lines.append("  not compared (source events deleted by retention): " + ", ".join(
                f"{t} {n}" for t, n in sorted(self.excluded.items())))
        for d in self.differences:
            lines.append(f"  DIFF {d.table}: rows live={d.live_rows} replay={d.replay_rows}")
            lines.extend(f"       key {k}" for k in d.differing_keys)
        lines.append("EQUAL" if self.equal else "DIFFERENT")
        return "\n".join(lines)


#: Source topic of each table whose rows record their log position (partition, offset).
SOURCE_TOPICS: dict[str, str] = {
    "frames": "frames", "frame_analyses": "detections", "detections": "detections",
    "embeddings": "embeddings", "recordings": "recordings", "scene_events": "scene",
    "alert_events": "alerts", "commands": "commands", "notifications": "notifications",
    "health_events": "health", "evidence": "evidence",
    "clips": "evidence",
}

Starts = dict[tuple[str, int], int]
#: table -> schema -> "row t was folded from an event retention deleted" (SQL predicate)
Expired = dict[str, Callable[[str], sql.Composable]]


def log_starts(prefix: str) -> Starts:
    """Log-start offset of every projected partition whose early log is gone (> 0)."""
    plan_consumer = Consumer(consumer_config(f"{prefix}.verify-starts.{uuid.uuid4().hex[:8]}"))
    try:
        md = plan_consumer.list_topics(timeout=15)
        out: Starts = {}
        for suffix in {*SOURCE_TOPICS.values()}:
            topic = f"{prefix}.{suffix}"
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for p in meta.partitions:
                lo, _hi = plan_consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                              timeout=10)
                if lo > 0:
                    out[(topic, p)] = lo
        return out
    finally:
        plan_consumer.close()


def _below_start(alias: str, topic: str, starts: Starts) -> sql.Composable | None:
    cuts = sorted((p, o) for (t, p), o in starts.items() if t == topic)
    if not cuts:
        return None
    a = sql.Identifier(alias)
    whens = sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(sql.Literal(p), sql.Literal(o))
                              for p, o in cuts)
    return sql.SQL("coalesce({a}.log_offset < CASE {a}.log_partition {w} ELSE 0 END, false)"
                   ).format(a=a, w=whens)


def expired_rows(prefix: str, starts: Starts) -> Expired:
    """Predicates for rows whose source events are below their partition's log start.

    Append rows carry their own position; an alert (a fold of its history) is out when
    any of its events is. Applied to both schemas, so it does not matter whether the
    rebuild read an event just before retention deleted it.
    """
    out: Expired = {}
    for table, suffix in SOURCE_TOPICS.items():
        pred = _below_start("t", f"{prefix}.{suffix}", starts)
        if pred is not None:
            out[table] = lambda _schema, pred=pred: pred
    alerts = _below_start("e", f"{prefix}.alerts", starts)
    if alerts is not None:
        out["alerts"] = lambda schema: sql.SQL(
            "t.alert_id IN (SELECT e.alert_id FROM {}.alert_events e WHERE {})").format(
            sql.Identifier(schema), alerts)
    return out


def _row_hashes_sql(schema: str, table: tables.Table,
                    skip: Callable[[str], sql.Composable] | None = None) -> sql.Composed:
    """SELECT pk-json, md5(row-json minus bookkeeping) for every row of `table` (except
    those `skip` selects)."""
    pk = [c.name for c in table.primary_key.columns]
    excluded = BOOKKEEPING_COLUMNS.get(table.name, ())
    row = sql.SQL("to_jsonb(t)")
    for col in excluded:
        row = sql.SQL("({} - {})").format(row, sql.Literal(col))
    pk_json = sql.SQL("jsonb_build_array({})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in pk))
    where = sql.SQL("") if skip is None else sql.SQL(" WHERE NOT ({})").format(skip(schema))
    return sql.SQL("SELECT {pk}::text AS k, md5(({row})::text) AS h FROM {s}.{t} t{w}").format(
        pk=pk_json, row=row, s=sql.Identifier(schema), t=sql.Identifier(table.name), w=where)


def count_expired(conn: psycopg.Connection, schema: str, expired: Expired) -> dict[str, int]:
    """Rows per table of `schema` that `expired` leaves out of the comparison."""
    out = {}
    for table, pred in sorted(expired.items()):
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}.{} t WHERE {}").format(
            sql.Identifier(schema), sql.Identifier(table), pred(schema))).fetchone()
        if n and n[0]:
            out[table] = int(n[0])
    return out


def compare_schemas(conn: psycopg.Connection, live: str, replay: str,
                    max_keys: int = 20, expired: Expired | None = None) -> list[TableDiff]:
    """Per-table row counts and checksums; differing keys for tables that differ. Rows
    `expired` selects (source events deleted by retention) are left out on both sides."""
    diffs = []
    expired = expired or {}
    for table in tables.READ_MODEL_TABLES:
        summary = {}
        skip = expired.get(table.name)
        for schema in (live, replay):
            q = sql.SQL("SELECT count(*), md5(string_agg(h, '' ORDER BY h)) FROM ({}) x").format(
                _row_hashes_sql(schema, table, skip))
            summary[schema] = conn.execute(q).fetchone()
        (ln, lc), (rn, rc) = summary[live], summary[replay]
        if ln == rn and lc == rc:
            continue
        q = sql.SQL(
            "SELECT coalesce(a.k, b.k), a.h IS NULL, b.h IS NULL FROM ({}) a "
            "FULL JOIN ({}) b ON a.k = b.k WHERE a.h IS DISTINCT FROM b.h "
            "ORDER BY 1 LIMIT {}").format(
            _row_hashes_sql(live, table, skip), _row_hashes_sql(replay, table, skip),
            sql.Literal(max_keys))
        keys = []
        for k, missing_live, missing_replay in conn.execute(q):
            what = "only in replay" if missing_live else (
                "only in live" if missing_replay else "content differs")
            keys.append(f"{k} ({what})")
        diffs.append(TableDiff(table.name, ln, rn, lc, rc, keys))
    return diffs


def _offsets_match(live: dict[tuple[str, int], int], rebuilt: dict[tuple[str, int], int],
                   starts: Starts) -> bool:
    """The rebuild reached the live positions; a partition whose whole log up to the live
    position was deleted by retention has nothing to rebuild and counts as reached."""
    for tp, offset in live.items():
        got = rebuilt.get(tp, 0)
        if offset and got != offset and not (got == 0 and starts.get(tp, 0) >= offset):
            return False
    return all(tp in live for tp, o in rebuilt.items() if o)


def verify(dsn: str, prefix: str, settings: ProjectorSettings, *, live_schema: str,
           keep: bool = False, attempts: int = 5) -> VerifyResult:
    """Rebuild into a temporary schema and compare it with `live_schema`."""
    tmp = f"{live_schema}_verify_{uuid.uuid4().hex[:8]}"
    live_consumer = settings.consumer
    replayed = 0
    try:
        upgrade(dsn, tmp, settings.embedding_dim)
        for attempt in range(attempts):
            with psycopg.connect(dsn, autocommit=True) as conn:
                set_search_path(conn, live_schema)
                target = load_offsets(conn, live_consumer)
            # The temporary schema is only scanned: no secondary index is built at all.
            replayed += rebuild(dsn, prefix, settings, tmp, stop_at=target,
                                indexes=False).messages
            with psycopg.connect(dsn) as conn:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                set_search_path(conn, live_schema)
                live_now = load_offsets(conn, live_consumer)
                set_search_path(conn, tmp)
                rebuilt = load_offsets(conn, "replay")
                starts = log_starts(prefix)
                same = _offsets_match(live_now, rebuilt, starts)
                if same or attempt == attempts - 1:
                    expired = expired_rows(prefix, starts)
                    diffs = compare_schemas(conn, live_schema, tmp, expired=expired)
                    return VerifyResult(live_schema, tmp, len(tables.READ_MODEL_TABLES), diffs,
                                        same, replayed, count_expired(conn, live_schema,
                                                                      expired))
        raise AssertionError("unreachable")
    finally:
        if not keep:
            drop_schema(dsn, tmp)

"""`vigil project`: fold every public topic into the read models, exactly once.

How a batch is made durable (docs/architecture.md, "Read models"):

1. the consumer is *assigned* (no group rebalancing) every partition of every public
   topic and seeks to the offsets stored in ``projector_offsets`` — Kafka's group offsets
   are never read or committed;
2. a batch of messages is decoded and folded (`handlers`) into rows; undecodable or
   unfoldable messages are dead-lettered (DLQ topic + ``projector_dead_letters``);
3. rows, dead-letter records and the new offsets are written in ONE transaction. A crash
   before COMMIT re-reads the batch; after COMMIT it is never read again. Duplicates that
   slip through anyway (the same event id at two offsets, e.g. an edge restart) are
   absorbed by the idempotent writes.

Batching adapts: the consumer asks for `target` messages with a `max_wait_ms` timeout;
a full batch doubles `target` (backlog: fewer, larger transactions), a short one halves
it (live: low latency). PostgreSQL down: the projector reconnects with backoff,
then re-reads from the offsets stored in PostgreSQL (not from its consumer's position):
a server crash can lose commits it had already acknowledged (``synchronous_commit=off``),
so after a lost connection only the database knows what was written (docs/projections.md,
"Resuming after a database error"). SIGTERM: the current batch is committed, then the loop exits.
The privacy topic is read up to its end before anything else, so a rebuild knows every
erasure before it sees the data it erases. Partitions added to a topic at run time are
picked up by a metadata refresh every ``metadata_refresh_s`` and read from their stored
offset (offset 0 when new), without a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import Counter, Gauge, Histogram
from psycopg.pq import TransactionStatus

from projections.handlers import Batch, HandlerError, Position, fold
from projections.migrate import set_search_path
from projections.offsets import load_offsets, next_offsets, store_offsets
from projections.settings import ProjectorSettings
from schemas.codec import CodecError, default_codec
from schemas.events import Event
from schemas.producer import EventProducer
from schemas.topics import CATALOG
from vigil.kafka import consumer_config

log = logging.getLogger(__name__)

EVENTS = Counter("vigil_projector_events_total", "Events folded into read models", ["topic"])
DEAD = Counter("vigil_projector_dead_letters_total", "Messages sent to the DLQ", ["topic"])
BATCH = Histogram("vigil_projector_batch_size", "Messages per committed batch",
                  buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000))
FLUSH = Histogram("vigil_projector_flush_seconds", "Time to write and commit one batch")
LAG = Gauge("vigil_projector_lag", "Messages behind the end of the partition",
            ["topic", "partition"])
DB_RETRIES = Counter("vigil_projector_db_retries_total", "Batch commits retried (DB down)")
REWINDS = Counter("vigil_projector_rewinds_total",
                  "Re-reads from the stored offsets after a lost database connection")
#: Read-model freshness: seconds since this projector last knew it had folded everything
#: Kafka held (a poll that came back empty). Idle and caught up stays near 0; a projector
#: that is stuck, or falling behind a busy stream, grows it (VigilReadModelStale).
READ_MODEL_AGE = Gauge("vigil_projector_read_model_age_seconds",
                       "seconds since the projector was last caught up with Kafka")

#: Topics with no events for the read models.
SKIPPED_SUFFIXES = ("dlq", "alert-ticks")


#: Watermark errors of a partition whose leader is not elected yet (a fresh topic).
_NO_LEADER_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT,
                  KafkaError._TRANSPORT, KafkaError._UNKNOWN_PARTITION}


def projected_suffixes() -> list[str]:
    """Public topics, privacy first (erasures must be known before the data they erase)."""
    names = [t.suffix for t in CATALOG if t.public and t.suffix not in SKIPPED_SUFFIXES]
    return sorted(names, key=lambda s: s != "privacy")


class _Stopped(Exception):
    """Stop requested while the batch could not be committed."""


class _Rewind(Exception):
    """The connection the consumer's positions were loaded on is gone.

    What the consumer read since then may not all be in the database: a batch in flight
    when the connection broke, and, after a server crash, even batches whose COMMIT was
    acknowledged (with ``synchronous_commit=off`` the server acknowledges before the WAL
    is on disk). Committing the next batch regardless would store offsets past rows that
    are not there, so the batch is abandoned and the consumer re-seeks to the offsets
    PostgreSQL holds now.
    """


def next_batch_target(got: int, target: int, lo: int, hi: int) -> int:
    """Adaptive batching: a full fetch means backlog, so ask for twice as much next time
    (fewer, larger transactions); a fetch under half full means we are live, so halve it
    (the timeout, not the size, ends the batch and latency stays at max_wait_ms)."""
    if got >= target:
        return min(hi, target * 2)
    if got < target // 2:
        return max(lo, target // 2)
    return target


@dataclass
class RunStats:
    batches: int = 0
    messages: int = 0
    dead_letters: int = 0
    db_retries: int = 0
    #: re-reads from the stored offsets after a lost connection (`_Rewind`)
    rewinds: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    #: rebuilds only: parallel consumers, bulk-load and index-build seconds (the latter
    #: split into the HNSW graph's and the B-trees')
    workers: int = 1
    load_s: float = 0.0
    index_s: float = 0.0
    hnsw_s: float = 0.0
    btree_s: float = 0.0
    #: embeddings days whose HNSW graph was built during the load, and those seconds
    #: (they overlap load_s; hnsw_s is what was left after the load)
    days_indexed_during_load: int = 0
    hnsw_during_load_s: float = 0.0


@dataclass
class _Item:
    msg: Message
    pos: Position
    event: Event | None
    error: str | None
    dead_lettered: bool = False


class Projector:
    """One consumer that folds all projected topics into the schema `schema`.

    `stop_at`: None = run until stopped; "end" = stop at the end offsets seen at start
    (replay); a dict {(topic, partition): offset} = stop exactly there (replay --verify).
    """

    def __init__(self, *, dsn: str, schema: str, prefix: str, settings: ProjectorSettings,
                 consumer_name: str | None = None, stop_at: str | dict[Any, int] | None = None,
                 producer: EventProducer | None = None, group_id: str | None = None,
                 kafka_overrides: dict[str, Any] | None = None,
                 partitions: list[tuple[str, int]] | None = None, shard: str = "",
                 fast_commit: bool = False,
                 on_committed: Callable[[list[Any]], None] | None = None) -> None:
        self.dsn = dsn
        self.schema = schema
        self.prefix = prefix
        self.settings = settings
        self.consumer_name = consumer_name or settings.consumer
        self.stop_at = stop_at
        self.producer = producer
        self.codec = default_codec()
        self.topics = [f"{prefix}.{s}" for s in projected_suffixes()]
        self.privacy_topic = f"{prefix}.privacy"
        #: a replay worker owns exactly these partitions (None = every partition, and new
        #: ones as they appear)
        self.fixed_partitions = partitions
        self._shard = shard
        #: synchronous_commit=off: a commit lost in a server crash takes its offsets with
        #: it, so the batch is simply read again — used by rebuilds, where it pays most
        self._fast_commit = fast_commit
        #: called with the items of every committed batch (a replay's progress report)
        self._on_committed = on_committed
        self._stored: dict[tuple[str, int], int] = {}
        self._stopping = False
        self._conn: psycopg.Connection | None = None
        #: bumped for every new connection; `_positions_gen` is the one on which the
        #: consumer's positions were loaded: a batch is only committed on that connection
        self._conn_gen = 0
        self._positions_gen = -1
        #: names this projector's PostgreSQL sessions (application_name), so a stale one of
        #: its own can be recognised after a network cut
        self._session_name = f"vigil-projector:{uuid.uuid4().hex[:12]}"
        from projections.writer import Writer

        self.writer = Writer(settings.partitions_ahead)
        self.stats = RunStats()
        #: wall-clock time at which a poll last found nothing left to fold
        self.caught_up_at = time.time()
        READ_MODEL_AGE.set_function(lambda: max(0.0, time.time() - self.caught_up_at))
        cfg = consumer_config(group_id or f"{prefix}.projector.{schema}.{self.consumer_name}",
                              **{"statistics.interval.ms": 5000, "stats_cb": self._on_stats,
                                 "enable.partition.eof": False,
                                 "fetch.wait.max.ms": 100, **(kafka_overrides or {})})
        self.consumer = Consumer(cfg)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit it and return."""
        self._stopping = True

    def close(self) -> None:
        self.consumer.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.producer is not None:
            self.producer.flush(30)

    # ------------------------------------------------------------------ database
    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # Keepalives on both ends: after a network cut the server must notice the dead
            # session within seconds, or its advisory lock (below) would keep the
            # reconnected projector waiting until the kernel gives up (hours).
            conn = psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=5,
                application_name=self._session_name,
                keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                options="-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2"
                        " -c tcp_keepalives_count=3",
            )
            set_search_path(conn, self.schema)
            if self._fast_commit:
                conn.execute("SET synchronous_commit = off")
            # One projector per (schema, consumer): a second one would fight over offsets.
            # The session lock goes away with the connection, also on SIGKILL.
            # Replay workers own disjoint partitions and lock their shard only.
            lock = f"vigil-projector:{self.schema}:{self.consumer_name}{self._shard}"
            waited = 0.0
            while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                                   (lock,)).fetchone()[0]:  # type: ignore[index]
                # A session of our own earlier connection, cut off by a network failure
                # but still alive on the server (a half-open path), keeps the lock. It
                # is ours beyond doubt (same session name), so end it; other projectors'
                # sessions are never touched.
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE application_name = %s AND pid <> pg_backend_pid()",
                             (self._session_name,))
                if waited == 0.0:
                    log.warning("another projector holds this schema; waiting",
                                extra={"schema": self.schema})
                time.sleep(1.0)
                waited += 1.0
            self._conn = conn
            self._conn_gen += 1
            self.writer.reset()
        return self._conn

    def _drop_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self.writer.reset()

    def _with_db_retry(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """Run fn(conn); on connection loss wait (backoff, capped) and retry, forever
        unless stopped — the batch stays in memory meanwhile, so nothing is lost."""
        delay = 0.5
        while True:
            try:
                return fn(self._db())
            except psycopg.OperationalError as exc:
                self._drop_db()
                if self._stopping:  # SIGTERM while the database is away: the batch was
                    raise _Stopped from exc  # not committed, so it is simply read again
                self.stats.db_retries += 1
                DB_RETRIES.inc()
                log.warning("PostgreSQL unavailable, retrying", extra={
                    "error": str(exc)[:300], "delay_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------------ kafka
    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
            for tname, t in stats.get("topics", {}).items():
                for pid, p in t.get("partitions", {}).items():
                    lag = p.get("consumer_lag", -1)
                    if int(pid) >= 0 and lag >= 0:
                        LAG.labels(tname, pid).set(lag)
        except (ValueError, KeyError, TypeError):
            pass

    def _partitions(self, quiet: bool = False) -> list[tuple[str, int]]:
        if self.fixed_partitions is not None:
            return list(self.fixed_partitions)
        md = self.consumer.list_topics(timeout=15)
        out = []
        for t in self.topics:
            meta = md.topics.get(t)
            if meta is None or meta.error is not None:
                if not quiet:
                    log.warning("topic missing, not projected", extra={"topic": t})
                continue
            out.extend((t, p) for p in sorted(meta.partitions))
        return out

    def _watermarks(self, t: str, p: int) -> tuple[int, int]:
        """(log start, log end) of one partition. A topic created moments ago may have no
        leader yet (NOT_LEADER_FOR_PARTITION): retried for a while, as the broker says."""
        deadline = time.monotonic() + 30
        while True:
            try:
                lo, hi = self.consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                return lo, hi
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                code = err.code() if isinstance(err, KafkaError) else None
                if code not in _NO_LEADER_YET or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Log-start offsets: where a partition's retained log begins."""
        return {(t, p): self._watermarks(t, p)[0] for t, p in tps}

    def _end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {(t, p): self._watermarks(t, p)[1] for t, p in tps}

    # ------------------------------------------------------------------ main loop
    def run(self, max_seconds: float | None = None) -> RunStats:
        """Project until stopped, `max_seconds` elapsed, or the stop offsets are reached."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        tps = self._partitions()
        targets: dict[tuple[str, int], int] | None
        if self.stop_at == "end":
            targets = self._end_offsets(tps)
        elif isinstance(self.stop_at, dict):
            targets = {tp: self.stop_at.get(tp, 0) for tp in tps}
        else:
            targets = None
        privacy = [tp for tp in tps if tp[0] == self.privacy_topic]
        try:
            if privacy:  # erasures first, up to their current end
                ends = self._end_offsets(privacy)
                if targets is not None:
                    ends = {tp: min(o, targets[tp]) for tp, o in ends.items()}
                self._phase(privacy, ends, deadline)
            if not self._stopping and (deadline is None or time.monotonic() < deadline):
                self._phase(tps, targets, deadline)
        except _Stopped:
            log.warning("stopped before the last batch could be committed; it will be re-read")
        return self.stats

    def _phase(self, tps: list[tuple[str, int]], targets: dict[tuple[str, int], int] | None,
               deadline: float | None) -> None:
        self._assign(tps)
        pending = self._pending(tps, targets)
        target_n = self.settings.min_batch
        timeout = self.settings.max_wait_ms / 1000
        refresh_every = self.settings.metadata_refresh_s
        next_refresh = time.monotonic() + refresh_every
        while not self._stopping:
            if targets is not None and not pending:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if targets is None and time.monotonic() >= next_refresh:
                tps = self._refresh_partitions(tps)
                next_refresh = time.monotonic() + refresh_every
            msgs = self.consumer.consume(num_messages=target_n, timeout=timeout)
            if not msgs:
                self.caught_up_at = time.time()
            good: list[Message] = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error", extra={"error": str(err)})
                    continue
                tp = (m.topic(), m.partition())
                if targets is not None:
                    if m.offset() >= targets.get(tp, 0):
                        pending.discard(tp)
                        self.consumer.pause([TopicPartition(*tp)])
                        continue
                    if m.offset() + 1 >= targets[tp]:
                        pending.discard(tp)
                good.append(m)
            if good:
                try:
                    self._project(good)
                except _Rewind:
                    tps = self._rewind(tps)
                    pending = self._pending(tps, targets)
                    continue
            if targets is not None and pending:
                # Transaction markers occupy offsets but are never delivered.
                for tp_obj in self.consumer.position([TopicPartition(*tp) for tp in pending]):
                    key = (tp_obj.topic, tp_obj.partition)
                    if tp_obj.offset >= 0 and tp_obj.offset >= targets.get(key, 0):
                        pending.discard(key)
            target_n = next_batch_target(len(msgs), target_n, self.settings.min_batch,
                                         self.settings.max_batch)

    def _pending(self, tps: list[tuple[str, int]],
                 targets: dict[tuple[str, int], int] | None) -> set[tuple[str, int]]:
        """Partitions still short of their stop offset (none when running unbounded).

        Partitions already at their target need nothing; empty ones neither, nor those
        whose retained log (from the log-start offset on) ends before it."""
        if targets is None:
            return set()
        stored = self._stored
        maybe = [tp for tp in tps if stored.get(tp, 0) < targets.get(tp, 0)]
        starts = self._start_offsets([tp for tp in maybe if tp not in stored])
        return {tp for tp in maybe
                if max(stored.get(tp, 0), starts.get(tp, 0)) < targets.get(tp, 0)}

    def _assign(self, tps: list[tuple[str, int]]) -> None:
        """Assign `tps` at the offsets stored in PostgreSQL (the source of truth), offset 0
        (log start) for partitions never committed. From here on the consumer's positions
        are valid for this connection only (`_Rewind`)."""
        self._stored = self._with_db_retry(lambda c: load_offsets(c, self.consumer_name))
        self._positions_gen = self._conn_gen
        self.consumer.assign([TopicPartition(t, p, self._stored.get((t, p), OFFSET_BEGINNING))
                              for t, p in tps])

    def _rewind(self, tps: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Re-seek every partition to its stored offset after a lost connection; what the
        consumer had read past them is read again (the writes are idempotent). Paused
        partitions (a replay's, at their stop offset) are resumed: their stored offset may
        now be behind the stop offset again."""
        self.stats.rewinds += 1
        REWINDS.inc()
        self._assign(tps)
        self.consumer.resume([TopicPartition(t, p) for t, p in tps])
        log.warning("database connection was lost: re-reading from the stored offsets",
                    extra={"schema": self.schema, "partitions": len(tps)})
        return tps

    def _refresh_partitions(self, tps: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Pick up partitions (and topics) created since the last look, without a restart.

        Called between batches, when everything consumed so far is committed: the stored
        offsets equal the consumer's positions, so re-assigning every partition from them
        loses and repeats nothing.
        """
        try:
            now = self._partitions(quiet=True)
        except KafkaException as exc:  # broker away: try again at the next interval
            log.warning("metadata refresh failed", extra={"error": str(exc)})
            return tps
        new = sorted(set(now) - set(tps))
        if not new:
            return tps
        log.info("new partitions, consuming them from their stored offset or 0",
                 extra={"partitions": [f"{t}[{p}]" for t, p in new]})
        merged = sorted(set(tps) | set(now))
        self._assign(merged)
        return merged

    # ------------------------------------------------------------------ one batch
    def _decode(self, msgs: list[Message]) -> list[_Item]:
        items = []
        for m in msgs:
            pos = Position(m.topic(), m.partition(), m.offset())
            value = m.value()
            if value is None:  # a compacted-topic tombstone; EntityDeleted carries the meaning
                items.append(_Item(m, pos, None, None))
                continue
            try:
                items.append(_Item(m, pos, self.codec.decode(value), None))
            except CodecError as exc:
                items.append(_Item(m, pos, None, f"decode: {exc}"))
        return items

    def _fold(self, items: list[_Item]) -> Batch:
        dim = self.settings.embedding_dim
        while True:
            batch = Batch()
            try:
                for it in items:
                    if it.event is not None and it.error is None:
                        try:
                            fold(batch, it.event, it.pos, dim)
                        except HandlerError as exc:  # raised before any row was added
                            it.error = f"fold: {exc}"
                        except Exception as exc:
                            it.error = f"fold: {type(exc).__name__}: {exc}"
                            raise
                return batch
            except Exception:
                continue

    def _project(self, msgs: list[Message]) -> None:
        items = self._decode(msgs)
        batch = self._fold(items)
        try:
            self._commit(items, batch)
        except psycopg.Error as exc:  # a row the database refuses: find it, one by one
            log.warning("batch refused, isolating the poison message",
                        extra={"error": str(exc)[:300], "size": len(items)})
            self._after_refusal()
            for it in items:
                single = self._fold([it])
                try:
                    self._commit([it], single)
                except psycopg.Error as exc1:
                    self._after_refusal()
                    it.error = f"database: {type(exc1).__name__}: {exc1}"[:2000]
                    self._commit([it], Batch())

    def _after_refusal(self) -> None:
        """After a statement the database refused: keep the connection if it is back to
        idle (the transaction was rolled back; positions stay valid), else drop it, and
        the next commit re-reads from the stored offsets (`_Rewind`)."""
        conn = self._conn
        if conn is None or conn.closed or \
                conn.info.transaction_status != TransactionStatus.IDLE:
            self._drop_db()
        else:
            self.writer.reset()

    def _commit(self, items: list[_Item], batch: Batch) -> None:
        dead = [it for it in items if it.error is not None]
        for it in dead:
            self._dead_letter(it)
        if dead and self.producer is not None and self.producer.flush(30) > 0:
            raise RuntimeError("DLQ messages not delivered; not committing the batch")
        offsets = next_offsets(it.pos for it in items)
        started = time.perf_counter()

        def write(conn: psycopg.Connection) -> None:
            if self._conn_gen != self._positions_gen:
                raise _Rewind  # reconnected since the positions were loaded
            try:
                with conn.transaction():
                    self.writer.write(conn, batch)
                    if dead:
                        with conn.cursor() as cur:
                            cur.executemany(
                                "INSERT INTO projector_dead_letters (topic, partition, "
                                '"offset", reason) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING',
                                [(d.pos.topic, d.pos.partition, d.pos.offset, d.error)
                                 for d in dead])
                    store_offsets(conn, self.consumer_name, offsets)
            except psycopg.Error:
                self.writer.reset()
                raise

        self._with_db_retry(write)
        FLUSH.observe(time.perf_counter() - started)
        BATCH.observe(len(items))
        self.stats.batches += 1
        self.stats.messages += len(items)
        self.stats.dead_letters += len(dead)
        for it in items:
            if it.error is None and it.event is not None:
                short = it.pos.topic.rsplit(".", 1)[-1]
                self.stats.by_topic[short] = self.stats.by_topic.get(short, 0) + 1
                EVENTS.labels(short).inc()
        for d in dead:
            DEAD.labels(d.pos.topic.rsplit(".", 1)[-1]).inc()
        if self._on_committed is not None:
            self._on_committed(items)

    def _dead_letter(self, it: _Item) -> None:
        if it.dead_lettered:
            return
        it.dead_lettered = True
        log.warning("poison message", extra={"topic": it.pos.topic, "partition": it.pos.partition,
                                             "offset": it.pos.offset, "reason": it.error})
        if self.producer is not None:
            self.producer.dead_letter(it.msg.key(), it.msg.value(), it.error or "", "projector",
                                      source=it.msg)

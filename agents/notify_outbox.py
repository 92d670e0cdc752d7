"""The notifier's durable state: one SQLite file of deliveries, alert contexts and dedup.

Why a local file: the notifier is one process per site (deliveries are slow, retried for
up to a day, and must survive restarts); its progress must outlive the Kafka offsets it
commits. The order of effects makes delivery at-least-once per (alert event, route,
recipient) without ever re-sending what was confirmed:

1. an alert event is turned into delivery rows (``INSERT OR IGNORE`` by delivery id, a
   hash of alert event id, route, channel and recipient) and committed to SQLite;
2. only then is the Kafka offset committed, so a crash before (1) replays the event and
   produces the same ids, which are ignored if already there;
3. a row is sent, then marked ``sent`` in one SQLite transaction (WAL: durable across a
   crash of the process; a power loss may forget the newest marks, which re-sends them).
   A crash between send and mark re-sends that one message (the receiver sees the same
   delivery id in ``Message-ID`` / ``X-Vigil-Delivery-Id`` / the JSON body); a row marked
   sent is never picked again;
4. the ``NotificationDelivered`` / ``NotificationFailed`` event is published afterwards
   from the ``reported`` flag, with an id derived from the delivery id and its
   generation, so a re-publish after a crash is deduplicated downstream.

Holding a delivery for its annotated snapshot (docs/notifications.md) is only a later
``next_at`` and the rule hit it ``awaits``: the row is in this file from intake on, so a
crash while holding loses nothing. An ``EvidenceCaptured`` is written to ``evidence``
and rewrites the rows awaiting it in the same transaction, before its Kafka offset is
committed; a row whose hold ran out is sent with what it has.

`vigil notify retry` re-arms failed rows in this file; the notifier polls it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id   TEXT PRIMARY KEY,
    alert_id      TEXT NOT NULL,
    alert_event_id TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    route_id      TEXT NOT NULL,
    channel       TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    message       TEXT NOT NULL,
    status        TEXT NOT NULL,       -- pending | sent | failed | suppressed
    attempts      INTEGER NOT NULL DEFAULT 0,
    generation    INTEGER NOT NULL DEFAULT 0,
    next_at       REAL NOT NULL,
    created_at    REAL NOT NULL,
    raised_at     REAL,                -- the alert event's occurred_at (latency metric)
    sent_at       REAL,
    last_error    TEXT NOT NULL DEFAULT '',
    status_code   INTEGER,
    reported      INTEGER NOT NULL DEFAULT 1,
    awaits        TEXT                 -- rule hit whose annotated snapshot it waits for
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_at);
CREATE INDEX IF NOT EXISTS deliveries_unreported ON deliveries (reported);
CREATE TABLE IF NOT EXISTS alerts (alert_id TEXT PRIMARY KEY, context TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dedup (key TEXT PRIMARY KEY, at REAL NOT NULL);
-- EvidenceCaptured seen on vigil.evidence, by rule hit (RuleTriggered event id)
CREATE TABLE IF NOT EXISTS evidence (rule_event_id TEXT PRIMARY KEY,
                                     annotated_ref TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS evidence_at ON evidence (at);
"""
#: columns added after the first release, for outbox files written before them
_ADDED = {"deliveries": [("awaits", "TEXT")]}


@dataclass(frozen=True, slots=True)
class Row:
    delivery_id: str
    alert_id: str
    alert_event_id: str
    event_type: str
    route_id: str
    channel: str
    recipient: str
    message: dict[str, Any]
    status: str
    attempts: int
    generation: int
    next_at: float
    created_at: float
    raised_at: float | None
    sent_at: float | None
    last_error: str
    status_code: int | None


_COLS = ", ".join(Row.__slots__)  # type: ignore[attr-defined]


def _row(r: tuple[Any, ...]) -> Row:
    vals = list(r)
    vals[7] = json.loads(vals[7])
    return Row(*vals)


class Outbox:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of the process (SIGKILL included); only a
        # power loss may forget the last commits, which then re-sends (never drops) them
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        for table, cols in _ADDED.items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for name, decl in cols:
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
        self.db.execute("CREATE INDEX IF NOT EXISTS deliveries_awaits ON deliveries (awaits)")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ contexts, dedup
    def context(self, alert_id: str) -> dict[str, Any] | None:
        r = self.db.execute("SELECT context FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        return json.loads(r[0]) if r else None

    def seen_within(self, key: str, now: float, window_s: float) -> bool:
        r = self.db.execute("SELECT at FROM dedup WHERE key=?", (key,)).fetchone()
        return r is not None and now - r[0] < window_s

    # ------------------------------------------------------------------ intake
    def intake(self, alert_id: str, context: dict[str, Any], rows: Iterable[dict[str, Any]],
               dedup: Iterable[tuple[str, float]]) -> int:
        """One alert event's effects in one transaction; returns rows newly inserted."""
        inserted = 0
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO alerts VALUES (?, ?)",
                            (alert_id, json.dumps(context, default=str)))
            for row in rows:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO deliveries (delivery_id, alert_id, alert_event_id, "
                    "event_type, route_id, channel, recipient, message, status, next_at, "
                    "created_at, raised_at, reported, awaits) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (row["delivery_id"], alert_id, row["alert_event_id"], row["event_type"],
                     row["route_id"], row["channel"], row["recipient"],
                     json.dumps(row["message"], default=str), row["status"], row["next_at"],
                     row["created_at"], row["raised_at"], 1, row.get("awaits")))
                inserted += cur.rowcount
            for key, at in dedup:
                self.db.execute("INSERT OR REPLACE INTO dedup VALUES (?, ?)", (key, at))
        return inserted

    # ------------------------------------------------------------------ evidence
    def annotated_ref(self, rule_event_id: str) -> str | None:
        r = self.db.execute("SELECT annotated_ref FROM evidence WHERE rule_event_id=?",
                            (rule_event_id,)).fetchone()
        return r[0] if r else None

    def record_evidence(self, rule_event_id: str, annotated_ref: str, now: float,
                        keep_s: float) -> int:
        """Remember a rule hit's annotated snapshot and hand it to the pending rows that
        await it (they become due now); returns how many rows were released. One
        transaction, so a crash leaves either both or neither."""
        released = 0
        with self._tx():
            self.db.execute("DELETE FROM evidence WHERE at<?", (now - keep_s,))
            self.db.execute("INSERT OR REPLACE INTO evidence VALUES (?, ?, ?)",
                            (rule_event_id, annotated_ref, now))
            waiting = self.db.execute(
                "SELECT delivery_id, message FROM deliveries WHERE awaits=? AND "
                "status='pending'", (rule_event_id,)).fetchall()
            for did, raw in waiting:
                msg = json.loads(raw)
                msg.update(snapshot_ref=annotated_ref, annotated=True)
                self.db.execute(
                    "UPDATE deliveries SET message=?, awaits=NULL, next_at=MIN(next_at, ?) "
                    "WHERE delivery_id=? AND status='pending'",
                    (json.dumps(msg, default=str), now, did))
                released += 1
        return released

    # ------------------------------------------------------------------ dispatch
    def due(self, now: float, limit: int, exclude: set[str]) -> list[Row]:
        rows = self.db.execute(
            f"SELECT {_COLS} FROM deliveries WHERE status='pending' AND next_at<=? "
            "ORDER BY next_at, created_at LIMIT ?", (now, limit + len(exclude))).fetchall()
        return [r for r in map(_row, rows) if r.delivery_id not in exclude][:limit]

    def next_due_at(self) -> float | None:
        r = self.db.execute("SELECT MIN(next_at) FROM deliveries WHERE status='pending'"
                            ).fetchone()
        return r[0] if r else None

    def defer(self, delivery_id: str, next_at: float) -> None:
        """Rate limited: try again later without counting an attempt."""
        self.db.execute("UPDATE deliveries SET next_at=? WHERE delivery_id=? AND "
                        "status='pending'", (next_at, delivery_id))

    def mark_sent(self, delivery_id: str, now: float, status_code: int | None,
                  attempts: int) -> bool:
        """False when the row was not pending any more (it is confirmed once, never twice)."""
        cur = self.db.execute(
            "UPDATE deliveries SET status='sent', sent_at=?, status_code=?, attempts=?, "
            "reported=0 WHERE delivery_id=? AND status='pending'",
            (now, status_code, attempts, delivery_id))
        return cur.rowcount == 1

    def mark_retry(self, delivery_id: str, attempts: int, next_at: float, error: str) -> None:
        self.db.execute("UPDATE deliveries SET attempts=?, next_at=?, last_error=? "
                        "WHERE delivery_id=? AND status='pending'",
                        (attempts, next_at, error, delivery_id))

    def mark_failed(self, delivery_id: str, attempts: int, error: str) -> None:
        self.db.execute("UPDATE deliveries SET status='failed', attempts=?, last_error=?, "
                        "reported=0 WHERE delivery_id=? AND status='pending'",
                        (attempts, error, delivery_id))

    def unreported(self, limit: int = 500) -> list[Row]:
        rows = self.db.execute(f"SELECT {_COLS} FROM deliveries WHERE reported=0 LIMIT ?",
                               (limit,)).fetchall()
        return [_row(r) for r in rows]

    def mark_reported(self, delivery_id: str, generation: int) -> None:
        self.mark_reported_all([(delivery_id, generation)])

    def mark_reported_all(self, rows: list[tuple[str, int]]) -> None:
        with self._tx():
            self.db.executemany("UPDATE deliveries SET reported=1 WHERE delivery_id=? AND "
                                "generation=?", rows)

    # ------------------------------------------------------------------ operator
    def retry(self, delivery_ids: list[str] | None, now: float | None = None) -> int:
        """Re-arm failed deliveries (all when `delivery_ids` is None) for a new round of
        attempts; a new generation gives the next outcome event a new id."""
        now = time.time() if now is None else now
        sql = ("UPDATE deliveries SET status='pending', attempts=0, next_at=?, created_at=?, "
               "generation=generation+1, last_error='' WHERE status='failed'")
        if delivery_ids is None:
            return self.db.execute(sql, (now, now)).rowcount
        n = 0
        with self._tx():
            for d in delivery_ids:
                n += self.db.execute(sql + " AND delivery_id=?", (now, now, d)).rowcount
        return n

    def rows(self, status: str | None = None, limit: int = 1000) -> list[Row]:
        if status is None:
            q = self.db.execute(f"SELECT {_COLS} FROM deliveries ORDER BY created_at LIMIT ?",
                                (limit,))
        else:
            q = self.db.execute(f"SELECT {_COLS} FROM deliveries WHERE status=? "
                                "ORDER BY created_at LIMIT ?", (status, limit))
        return [_row(r) for r in q.fetchall()]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"
                                    ).fetchall())

    def _tx(self) -> _Tx:
        return _Tx(self.db)


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

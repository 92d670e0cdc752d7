"""Retention that runs itself: every policy of projections/retention_policies.py, on a
timer in the projector (``VIGIL_PROJECTOR_RETENTION_INTERVAL_S``, 6 h) or once with
`vigil db retention`.

Each run is recorded twice, because a cleanup that silently stopped is how disks fill up:
- a `RetentionRun` event on the health topic (what each policy removed, or the error),
  folded into ``health_events`` by the projector;
- metrics: ``vigil_retention_runs_total{outcome}``,
  ``vigil_retention_last_success_timestamp_seconds`` and
  ``vigil_retention_removed_total{policy}``; the rules VigilRetentionFailed and
  VigilRetentionNotRunning page when a run fails or none succeeded for a day.

A failing policy does not stop the others: each runs in its own try, and the run is
"failed" if any failed (the error names the policy).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge

from projections.migrate import set_search_path
from projections.retention_policies import POLICIES, RetentionContext
from projections.settings import ProjectorSettings
from schemas.events import RetentionRun
from vigil.redact import redact

log = logging.getLogger(__name__)
PRODUCER = "vigil-retention/1"

RUNS = Counter("vigil_retention_runs_total", "retention runs by outcome", ["outcome"])
LAST_SUCCESS = Gauge("vigil_retention_last_success_timestamp_seconds",
                     "Unix time of the last retention run that succeeded")
REMOVED = Counter("vigil_retention_removed_total",
                  "rows, partitions and objects removed by retention", ["policy"])
for _outcome in ("ok", "failed"):
    RUNS.labels(_outcome)


#: Report entries that name partitions rather than count what was removed (the embeddings'
#: dropped days count through their rows, `embeddings_rows_dropped_estimate`).
NOT_REMOVED = frozenset({"partitions_ensured", "embeddings_partitions_ensured",
                         "embeddings_dropped_partitions", "embeddings_partitions_busy"})


def run_all(dsn: str, schema: str, ps: ProjectorSettings, store: Any = None,
            producer: Any = None, now: datetime | None = None) -> dict[str, Any]:
    """Apply every policy once; returns the report (also published as RetentionRun)."""
    started = datetime.now(UTC)
    now = now or started
    t0 = time.monotonic()
    report: dict[str, Any] = {}
    errors: list[str] = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        set_search_path(conn, schema)
        ctx = RetentionContext(conn, store, now, ps, dsn, schema)
        for policy in POLICIES:
            try:
                done = policy.apply(ctx)
            except Exception as exc:  # one policy failing must not stop the others
                log.exception("retention policy failed", extra={"policy": policy.name})
                errors.append(f"{policy.name}: {type(exc).__name__}: {exc}")
                continue
            report[policy.name] = done
            n = sum(len(v) if isinstance(v, list) else v for k, v in done.items()
                    if k not in NOT_REMOVED and isinstance(v, int | list))
            REMOVED.labels(policy.name).inc(n)
    outcome = "failed" if errors else "ok"
    RUNS.labels(outcome).inc()
    if not errors:
        LAST_SUCCESS.set(time.time())
    error = redact("; ".join(errors))[:2000] if errors else None
    event = RetentionRun.create(
        producer=PRODUCER, schema_name=schema, outcome=outcome, started_at=started,
        duration_s=round(time.monotonic() - t0, 3), report=json.dumps(report, default=str),
        error=error)
    if producer is not None:
        producer.send("health", "retention", event)
        producer.flush(30)
    log.info("retention run %s", outcome, extra={"schema": schema, "report": report,
                                                  "error": error, "event_id": event.event_id})
    return {"outcome": outcome, "event_id": event.event_id, "report": report,
            "error": error}


def object_store() -> Any:
    """The object store client of the settings (None if it cannot be built)."""
    from projections.erasure import _minio
    from vigil.settings import get_settings

    try:
        return _minio(get_settings())
    except Exception:
        log.exception("no object store client: object-store policies will fail")
        return None


class RetentionTimer:
    """Runs `run_all` every `interval_s` in a daemon thread of the projector, the first
    run one interval after start (not at once: a projector restarting in a crash loop must
    not hammer the database with deletions). Never raises: a failed run is recorded and
    retried next time."""

    def __init__(self, dsn: str, schema: str, ps: ProjectorSettings, producer: Any,
                 interval_s: float) -> None:
        self.args = (dsn, schema, ps)
        self.producer = producer
        self.interval_s, self.first_after_s = interval_s, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> RetentionTimer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        wait = self.first_after_s
        while not self._stop.wait(wait):
            try:
                run_all(*self.args, store=object_store(), producer=self.producer)
            except Exception:  # the database away: counted, retried at the next interval
                RUNS.labels("failed").inc()
                log.exception("retention run failed")
            wait = self.interval_s

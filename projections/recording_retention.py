"""Recording retention: video segments older than VIGIL_PROJECTOR_RECORDING_RETENTION_DAYS
(30, the operations plan's figure for recordings) are deleted from the object store and
from the `recordings` read model, by a timer in the projector (`RetentionTimer`, every
VIGIL_PROJECTOR_RETENTION_INTERVAL_S) and by `vigil db retention`.

Why age by the object's LastModified and not by the segment's event time: event time is
the camera's clock, and for a recorded file or a synthetic scene it is the file's own
(months in the past for the demo's scenes); the retention promise is "kept for 30 days
after it was stored", which the store's own timestamp says.

Each deletion is recorded: a log line naming camera, key and age, and the counter
``vigil_retention_deleted_total{kind="recording_segment"}``. The read-model rows of the
objects deleted go in the same pass (``kind="recording_row"``); rows of objects the pass
did not delete are never touched, whatever the bucket listing says (a wrong endpoint or
an object written by another tool must not empty the read model).

Known limit: the rows are deleted outside the event log, so a replay run while Kafka
still holds the `SegmentRecorded` of a deleted segment (the topic keeps 30 days too, up
to one log segment longer) rebuilds its row, pointing at nothing, until the topic drops
the event.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from minio import Minio
from minio.deleteobjects import DeleteObject
from prometheus_client import Counter, Gauge

from projections.migrate import set_search_path

log = logging.getLogger(__name__)

DELETED = Counter("vigil_retention_deleted_total",
                  "objects and rows deleted by retention", ["kind"])
LAST_RUN = Gauge("vigil_retention_last_run_timestamp_seconds",
                 "when the recording retention pass last completed (unix time)")
FAILED = Counter("vigil_retention_failures_total", "retention passes that failed", ["kind"])

_BATCH = 1000  # DeleteObjects takes up to 1000 keys per request


def expire_recordings(store: Minio, bucket: str, dsn: str, schema: str,
                      retention_days: float, now: datetime | None = None) -> dict[str, Any]:
    """One retention pass; returns a report (counts, cutoff)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days)
    with psycopg.connect(dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        expired: list[tuple[str, datetime]] = []
        kept = 0
        if store.bucket_exists(bucket):
            for obj in store.list_objects(bucket, recursive=True):
                if obj.object_name is None:
                    continue
                if obj.last_modified is not None and obj.last_modified < cutoff:
                    expired.append((obj.object_name, obj.last_modified))
                else:
                    kept += 1
        deleted: list[str] = []
        for i in range(0, len(expired), _BATCH):
            chunk = expired[i:i + _BATCH]
            errors = list(store.remove_objects(
                bucket, [DeleteObject(name) for name, _ in chunk]))
            failed = {e.name for e in errors}
            for err in errors:
                log.warning("retention could not delete a segment: %s", err.message,
                            extra={"key": err.name})
            for name, modified in chunk:
                if name in failed:
                    kept += 1
                    continue
                deleted.append(f"s3://{bucket}/{name}")
                DELETED.labels("recording_segment").inc()
                log.info("recording segment expired and deleted",
                         extra={"key": name, "camera_id": name.split("/", 1)[0],
                                "stored_at": modified.isoformat(),
                                "age_days": round((now - modified).total_seconds() / 86400,
                                                  1)})
        rows = 0
        if deleted:
            rows = conn.execute("DELETE FROM recordings WHERE object_ref = ANY(%s)",
                                (deleted,)).rowcount
            DELETED.labels("recording_row").inc(rows)
    report = {"bucket": bucket, "cutoff": cutoff.isoformat(),
              "segments_deleted": len(deleted), "rows_deleted": rows, "segments_kept": kept}
    LAST_RUN.set(now.timestamp())
    log.info("recording retention done", extra=report)
    return report


class RetentionTimer(threading.Thread):
    """Runs `expire_recordings` every `interval_s` in the projector process, first after
    `first_delay_s`. A failed pass is logged and counted and tried at the next interval:
    the projector's own work is never stopped by it."""

    def __init__(self, interval_s: float, run: Any, first_delay_s: float = 60.0):
        super().__init__(name="recording-retention", daemon=True)
        self.interval_s, self.run_pass, self.first_delay_s = interval_s, run, first_delay_s
        self.stop_event = threading.Event()
        self.passes = 0

    def run(self) -> None:
        wait = self.first_delay_s
        while not self.stop_event.wait(wait):
            wait = self.interval_s
            try:
                self.run_pass()
                self.passes += 1
            except Exception:
                FAILED.labels("recording_segment").inc()
                log.exception("recording retention pass failed; next try in %.0f s",
                              self.interval_s)

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
deleted objects go in the same pass. A row whose object is gone for another reason
(deleted by hand, an older pass that died after deleting the object) is removed too, but
only if the row existed before the bucket was listed: a segment is announced only after
its object exists, so such a row really points at nothing, while a row projected after
the listing may belong to an object the listing could not see yet.
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
        prefix = f"s3://{bucket}/"
        known = {ref for (ref,) in conn.execute("SELECT object_ref FROM recordings")
                 if ref.startswith(prefix)}
        expired: list[tuple[str, datetime]] = []
        present: set[str] = set()
        listed = store.bucket_exists(bucket)
        if listed:
            for obj in store.list_objects(bucket, recursive=True):
                if obj.object_name is None:
                    continue
                ref = f"s3://{bucket}/{obj.object_name}"
                if obj.last_modified is not None and obj.last_modified < cutoff:
                    expired.append((obj.object_name, obj.last_modified))
                else:
                    present.add(ref)
        deleted = 0
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
                    continue
                deleted += 1
                DELETED.labels("recording_segment").inc()
                log.info("recording segment expired and deleted",
                         extra={"key": name, "camera_id": name.split("/", 1)[0],
                                "stored_at": modified.isoformat(),
                                "age_days": round((now - modified).total_seconds() / 86400,
                                                  1)})
            present.update(f"s3://{bucket}/{n}" for n in failed)
        # no bucket at all is more likely a wrong endpoint than a store emptied: keep rows
        gone = [ref for ref in known if ref not in present] if listed else []
        rows = 0
        if gone:
            rows = conn.execute("DELETE FROM recordings WHERE object_ref = ANY(%s)",
                                (gone,)).rowcount
            DELETED.labels("recording_row").inc(rows)
    report = {"bucket": bucket, "cutoff": cutoff.isoformat(), "segments_deleted": deleted,
              "rows_deleted": rows, "segments_kept": len(present)}
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

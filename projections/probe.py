"""The synthetic end-to-end probe: a test frame through the pipeline to the read model.

Every `VIGIL_PROJECTOR_PROBE_INTERVAL_S` (300 s, the operations plan's cadence; the first
one interval after start) the projector publishes one blank frame under the reserved probe
camera (schemas/synthetic.py) to the frames topic and waits until its analysis is in the
read model (a `frame_analyses` row caused by that frame): edge topic -> worker (decode,
Triton detector) -> detections topic -> projector -> PostgreSQL, the path every camera's
frames take. The time from publish to visible row is exported:

- ``vigil_probe_latency_seconds`` (histogram) and ``vigil_probe_last_latency_seconds``;
- ``vigil_probe_runs_total{outcome}``: ok, timeout (not in the read model within
  `VIGIL_PROJECTOR_PROBE_TIMEOUT_S`), failed (could not publish or query);
- ``vigil_probe_last_success_timestamp_seconds``.

Why in the projector: it runs once per read-model schema (an advisory lock), so the probe
has exactly one sender and one exporter, and it already holds a producer and the database.
A blank frame yields no detections, so no track, scene event or alert; the camera is never
configured, so operators do not see it (docs/operations.md, "Synthetic probe").
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg import sql

from schemas.events import FrameCaptured
from schemas.synthetic import PROBE_CAMERA_ID, PROBE_EDGE_ID

log = logging.getLogger(__name__)

LATENCY = Histogram("vigil_probe_latency_seconds",
                    "Synthetic frame: publish to its analysis visible in the read model",
                    buckets=(0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60))
LAST_LATENCY = Gauge("vigil_probe_last_latency_seconds",
                     "Latency of the last successful synthetic probe")
LAST_SUCCESS = Gauge("vigil_probe_last_success_timestamp_seconds",
                     "Unix time of the last successful synthetic probe")
RUNS = Counter("vigil_probe_runs_total", "Synthetic probes, by outcome", ["outcome"])
for _outcome in ("ok", "timeout", "failed"):
    RUNS.labels(_outcome)

WIDTH, HEIGHT = 320, 240
POLL_S = 0.1


@cache
def blank_jpeg() -> bytes:
    """A uniform grey frame: the detector runs on it and finds nothing."""
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((HEIGHT, WIDTH, 3), 128, np.uint8))
    assert ok
    return bytes(buf)


class Probe:
    """Sends probe frames on a timer in a daemon thread; never raises into the projector."""

    def __init__(self, dsn: str, schema: str, producer: Any, interval_s: float,
                 timeout_s: float) -> None:
        self.dsn, self.schema, self.producer = dsn, schema, producer
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def run_once(self) -> float | None:
        """One probe; its latency in seconds, or None if it failed (counted either way)."""
        frame = FrameCaptured.create(
            producer="vigil-probe/1", edge_id=PROBE_EDGE_ID, camera_id=PROBE_CAMERA_ID,
            sequence=time.time_ns() // 1_000_000, width=WIDTH, height=HEIGHT,
            motion_score=1.0, jpeg=blank_jpeg())
        query = sql.SQL("SELECT 1 FROM {}.frame_analyses WHERE frame_event_id = %s").format(
            sql.Identifier(self.schema))
        started = time.monotonic()
        try:
            self.producer.send("frames", PROBE_CAMERA_ID, frame)
            if self.producer.flush(self.timeout_s):
                raise RuntimeError("the probe frame was not delivered to Kafka")
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                while conn.execute(query, (frame.event_id,)).fetchone() is None:
                    if time.monotonic() - started > self.timeout_s or self._stop.is_set():
                        RUNS.labels("timeout").inc()
                        log.warning("synthetic probe frame not in the read model in time",
                                    extra={"event_id": frame.event_id,
                                           "timeout_s": self.timeout_s})
                        return None
                    time.sleep(POLL_S)
        except Exception as exc:  # Kafka or PostgreSQL away: that is what the probe reports
            RUNS.labels("failed").inc()
            log.warning("synthetic probe failed: %s", exc, extra={"event_id": frame.event_id})
            return None
        latency = time.monotonic() - started
        LATENCY.observe(latency)
        LAST_LATENCY.set(latency)
        LAST_SUCCESS.set(time.time())
        RUNS.labels("ok").inc()
        log.info("synthetic probe ok", extra={"event_id": frame.event_id,
                                              "latency_s": round(latency, 3)})
        return latency

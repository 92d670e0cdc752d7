"""Uploads recorded segments from the edge's buffer (edge_producer/segments.py) to the
object store and announces each with `SegmentRecorded`, strictly in recording order.

The order of one segment's steps is what makes a crash or an outage cost nothing:
1. the object is written (skipped if an object of the same size is there already: the
   key is a pure function of camera and start time, so a retry rewrites nothing);
2. `SegmentRecorded` is produced and its Kafka acknowledgement awaited (its event id is
   derived from edge, camera and key, so a repeat is deduplicated downstream);
3. only then is the segment marked uploaded (an atomic rename in the buffer).
A failure at any step leaves the segment at the head of the queue; it is retried with
backoff (doubling, with jitter, up to `backoff_max_s`) until it succeeds, and nothing
behind it overtakes it. A SIGKILL between 2 and 3 re-announces one segment with the same
event id; nothing else is ever sent twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge_producer import metrics
from edge_producer.segments import Segment, SegmentBuffer
from schemas.events import SegmentRecorded, derived_event_id
from vigil.retry import Backoff

log = logging.getLogger(__name__)

#: key -> size of the stored object, or None if there is none
StatObject = Callable[[str], int | None]
#: (key, data) -> object ref ("s3://bucket/key")
PutObject = Callable[[str, bytes], str]
#: publish an event and return once Kafka acknowledged it (raise otherwise)
Announce = Callable[[SegmentRecorded], None]


def segment_event_id(edge_id: str, seg: Segment) -> str:
    return derived_event_id("SegmentRecorded", edge_id, seg.camera_id, seg.key)


class SegmentUploader(threading.Thread):
    """One thread per edge: segments go up one at a time, oldest first."""

    def __init__(self, buffer: SegmentBuffer, *, edge_id: str, producer_name: str,
                 stat: StatObject, put: PutObject, ref: Callable[[str], str],
                 announce: Announce, backoff: tuple[float, float]):
        super().__init__(name="edge-segment-uploader", daemon=True)
        self.buffer = buffer
        self.edge_id, self.producer_name = edge_id, producer_name
        self.stat, self.put, self.ref, self.announce = stat, put, ref, announce
        self.backoff_initial, self.backoff_max = backoff
        self.stop_event = threading.Event()
        self.store_up = True
        self.uploaded = 0
        self.failures = 0

    def event_for(self, seg: Segment, ref: str) -> SegmentRecorded:
        return SegmentRecorded.create(
            producer=self.producer_name, occurred_at=seg.end_at,
            event_id=segment_event_id(self.edge_id, seg), edge_id=self.edge_id,
            camera_id=seg.camera_id, object_ref=ref, start_at=seg.start_at,
            end_at=seg.end_at, size_bytes=seg.size)

    def upload_one(self, seg: Segment) -> None:
        """Steps 1-3 for one segment; raises on any failure (the caller backs off)."""
        self.buffer.begin_upload(seg)
        ok = False
        try:
            if self.stat(seg.key) == seg.size:
                ref = self.ref(seg.key)  # there already: an earlier attempt got this far
            else:
                ref = self.put(seg.key, seg.path.read_bytes())
            self.announce(self.event_for(seg, ref))
            ok = True
        finally:
            self.buffer.end_upload(seg, ok)
        self.uploaded += 1
        metrics.SEGMENTS_UPLOADED.labels(seg.camera_id).inc()

    def run(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max, jitter=(0.8, 1.2))
        while not self.stop_event.is_set():
            metrics.RECORDING_BACKLOG.set(len(self.buffer.pending()))
            seg = self.buffer.wait_pending(0.5)
            if seg is None:
                continue
            try:
                self.upload_one(seg)
            except FileNotFoundError:
                continue  # evicted before it could be read: counted by the buffer
            except Exception as exc:
                self.failures += 1
                metrics.RECORDING_FAILED.labels(seg.camera_id).inc()
                if self.store_up:
                    log.warning("segment upload failed; retrying with backoff: %s", exc,
                                extra={"camera_id": seg.camera_id, "key": seg.key})
                self.store_up = False
                metrics.OBJECT_STORE_UP.set(0)
                if self.stop_event.wait(backoff.failed()):
                    return
                continue
            if not self.store_up:
                log.info("segment uploads resumed",
                         extra={"pending": len(self.buffer.pending())})
            self.store_up = True
            metrics.OBJECT_STORE_UP.set(1)
            backoff.reset()

    def drain(self, timeout: float) -> bool:
        """Wait (bounded) until nothing is pending; True if the buffer is drained."""
        deadline = time.monotonic() + timeout
        while self.buffer.pending() and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.05)
        return not self.buffer.pending()

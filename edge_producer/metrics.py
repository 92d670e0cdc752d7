"""Prometheus metrics of the edge (``vigil_edge_*``), fed by camera loops and by Kafka
delivery callbacks, so "produced" means acknowledged by the broker, not just queued."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES_CAPTURED = Counter("vigil_edge_frames_captured_total", "decimated frames", ["camera_id"])
FRAMES_PRODUCED = Counter("vigil_edge_frames_produced_total", "frames acked by Kafka",
                          ["camera_id"])
FRAMES_DROPPED = Counter("vigil_edge_frames_dropped_total", "frames lost (spool eviction)",
                         ["camera_id"])
FRAMES_SPOOLED = Counter("vigil_edge_frames_spooled_total",
                         "frames written while Kafka was unreachable", ["camera_id"])
DECODE_FPS = Gauge("vigil_edge_decode_fps", "decimated frames per second", ["camera_id"])
RECONNECTS = Counter("vigil_edge_reconnects_total", "source reconnect attempts", ["camera_id"])
PRODUCE_LATENCY = Histogram("vigil_edge_produce_latency_seconds",
                            "capture to Kafka acknowledgement",
                            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
SPOOL_BACKLOG = Gauge("vigil_edge_spool_backlog", "records waiting in the spool")
SPOOL_EVICTED = Counter("vigil_edge_spool_evicted_total", "records evicted from a full spool")
KAFKA_UP = Gauge("vigil_edge_kafka_up", "1 when the last delivery succeeded")
KAFKA_AUTH_FAILURES = Counter(
    "vigil_edge_kafka_auth_failures_total",
    "deliveries Kafka refused for lack of an ACL or a failed login (fix the principal)")
#: 1 while frames are read from the camera, 0 while it is down/reconnecting (the same
#: transitions as the StreamUp/StreamDown events); edge_id so one Prometheus can tell edges
#: apart when two sites reuse a camera id.
STREAM_UP = Gauge("vigil_edge_stream_up", "1 when the camera stream is read, 0 when down",
                  ["edge_id", "camera_id"])
SEGMENTS_RECORDED = Counter("vigil_edge_segments_recorded_total",
                            "video segments finished into the local recording buffer",
                            ["camera_id"])
SEGMENTS_UPLOADED = Counter("vigil_edge_segments_uploaded_total",
                            "segments stored in the object store and announced",
                            ["camera_id"])
#: the loss the recording buffer declares: a never-uploaded segment deleted by its bounds
#: (size, age) or a full disk, or a segment that could not be written for a full disk
SEGMENTS_EVICTED = Counter("vigil_edge_segments_evicted_total",
                           "segments lost before their upload (buffer bounds, full disk)",
                           ["camera_id"])
RECORD_BUFFER_BYTES = Gauge("vigil_edge_record_buffer_bytes",
                            "bytes of segments in the local recording buffer")
OBJECT_STORE_UP = Gauge("vigil_edge_object_store_up", "1 when the last segment upload succeeded")
#: Finished segments in the edge's recording buffer not yet uploaded and announced; they
#: go up in order once the object store answers (edge_producer/uploader.py).
RECORDING_BACKLOG = Gauge("vigil_edge_recording_backlog", "segments waiting for upload")
#: each failed upload attempt (the segment stays first in line and is retried)
RECORDING_FAILED = Counter("vigil_edge_recording_upload_failures_total",
                           "failed segment upload attempts (each is retried)", ["camera_id"])
#: Free bytes on the edge's state disk (spool, recordings), as sent in each heartbeat.
DISK_FREE = Gauge("vigil_edge_state_disk_free_bytes", "free bytes on the edge's state disk")

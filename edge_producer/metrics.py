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
#: 1 while frames are read from the camera, 0 while it is down/reconnecting (the same
#: transitions as the StreamUp/StreamDown events); edge_id so one Prometheus can tell edges
#: apart when two sites reuse a camera id.
STREAM_UP = Gauge("vigil_edge_stream_up", "1 when the camera stream is read, 0 when down",
                  ["edge_id", "camera_id"])
#: Finished recording segments not yet stored in the object store (uploads run in the
#: camera thread, so more than one per camera means uploads are falling behind).
RECORDING_BACKLOG = Gauge("vigil_edge_recording_backlog", "segments waiting for upload")
RECORDING_FAILED = Counter("vigil_edge_recording_upload_failures_total",
                           "segments whose upload failed", ["camera_id"])
#: Free bytes on the edge's state disk (spool, recordings), as sent in each heartbeat.
DISK_FREE = Gauge("vigil_edge_state_disk_free_bytes", "free bytes on the edge's state disk")

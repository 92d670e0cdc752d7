"""Recording: cut the camera's compressed stream into ~10 s MP4 segments without
re-encoding (packets are remuxed as they are), store them in the `video-segments` bucket
and announce each with `SegmentRecorded` on the recordings topic.

Segments start on keyframes so each one plays on its own; a segment therefore lasts at
least `segment_s` and at most `segment_s` plus one GOP.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import av

from edge_producer import metrics
from schemas.events import SegmentRecorded

log = logging.getLogger(__name__)

Upload = Callable[[str, bytes], str]  # (key, data) -> object ref


class SegmentRecorder:
    def __init__(self, edge_id: str, camera_id: str, segment_s: float, upload: Upload,
                 publish: Callable[[SegmentRecorded], None], producer_name: str):
        self.edge_id, self.camera_id = edge_id, camera_id
        self.segment_s = segment_s
        self.upload, self.publish = upload, publish
        self.producer_name = producer_name
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"vigil-rec-{camera_id}-"))
        self._out: av.container.OutputContainer | None = None
        self._ostream: av.VideoStream | None = None
        self._start_t = 0.0
        self._last_t = 0.0
        self._start_at: datetime | None = None
        self._path: Path | None = None

    def packet(self, packet: av.Packet, stream: av.VideoStream, t: float,
               at: datetime) -> None:
        """Feed one demuxed packet; `t` its time in seconds and `at` its event time."""
        if packet.dts is None or packet.size == 0:
            return
        if self._out is not None and packet.is_keyframe and t - self._start_t >= self.segment_s:
            self.close()
        if self._out is None:
            if not packet.is_keyframe:
                return  # wait for a keyframe to start a playable segment
            self._path = self._tmpdir / f"{at.strftime('%Y%m%dT%H%M%S.%f')}.mp4"
            self._out = av.open(str(self._path), "w")
            self._ostream = self._out.add_stream_from_template(stream)
            self._start_t, self._start_at = t, at
        packet.stream = self._ostream
        self._out.mux(packet)
        self._last_t = t

    def close(self) -> None:
        """Finish the open segment, upload it and publish `SegmentRecorded`."""
        if self._out is None or self._path is None or self._start_at is None:
            return
        self._out.close()
        self._out = None
        data = self._path.read_bytes()
        self._path.unlink(missing_ok=True)
        start_at = self._start_at
        end_at = start_at + timedelta(seconds=max(self._last_t - self._start_t, 0.0))
        key = f"{self.camera_id}/{start_at.strftime('%Y/%m/%d/%H%M%S.%f')}.mp4"
        metrics.RECORDING_BACKLOG.inc()
        try:
            ref = self.upload(key, data)
        except Exception:
            log.exception("segment upload failed", extra={"camera_id": self.camera_id})
            metrics.RECORDING_FAILED.labels(self.camera_id).inc()
            return
        finally:
            metrics.RECORDING_BACKLOG.dec()
        self.publish(SegmentRecorded.create(
            producer=self.producer_name, occurred_at=end_at, edge_id=self.edge_id,
            camera_id=self.camera_id, object_ref=ref, start_at=start_at, end_at=end_at,
            size_bytes=len(data)))

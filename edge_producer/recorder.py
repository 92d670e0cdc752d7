"""Recording: cut the camera's compressed stream into ~10 s MP4 segments without
re-encoding (packets are remuxed as they are) and hand each finished one to the edge's
recording buffer (edge_producer/segments.py), from which the uploader stores it in the
`video-segments` bucket and announces it with `SegmentRecorded`.

Segments start on keyframes so each one plays on its own; a segment therefore lasts at
least `segment_s` and at most `segment_s` plus one GOP. Writing goes to local disk only,
so a slow or unreachable object store never stalls the camera loop.

A full disk is not a camera failure: the segment being written is dropped (counted per
camera), the oldest segment of the buffer is deleted to make room, and the next keyframe
starts a new segment.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from pathlib import Path

import av

from edge_producer import metrics
from edge_producer.segments import SegmentBuffer, is_disk_full

log = logging.getLogger(__name__)


class SegmentRecorder:
    def __init__(self, camera_id: str, segment_s: float, buffer: SegmentBuffer):
        self.camera_id = camera_id
        self.segment_s = segment_s
        self.buffer = buffer
        self._out: av.container.OutputContainer | None = None
        self._ostream: av.VideoStream | None = None
        self._start_t = 0.0
        self._last_t = 0.0
        self._start_at: datetime | None = None
        self._path: Path | None = None
        #: inside a segment that is in the buffer already (a file source read again)
        self._skipping = False

    def packet(self, packet: av.Packet, stream: av.VideoStream, t: float,
               at: datetime) -> None:
        """Feed one demuxed packet; `t` its time in seconds and `at` its event time."""
        if packet.dts is None or packet.size == 0:
            return
        if packet.is_keyframe and t - self._start_t >= self.segment_s:
            if self._out is not None:
                self.close()
            self._skipping = False
        if self._skipping:
            return
        try:
            if self._out is None:
                if not packet.is_keyframe:
                    return  # wait for a keyframe to start a playable segment
                if self.buffer.has(self.camera_id, at):
                    self._skipping, self._start_t = True, t
                    return
                self._path = self.buffer.part_path(self.camera_id, at)
                self._start_t, self._start_at = t, at
                self._out = av.open(str(self._path), "w", format="mp4")
                self._ostream = self._out.add_stream_from_template(stream)
            packet.stream = self._ostream
            self._out.mux(packet)
            self._last_t = t
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self._abort(f"disk full: {exc}")
            self.buffer.free_space()

    def _abort(self, reason: str) -> None:
        out, path = self._out, self._path
        self._out, self._path, self._start_at = None, None, None
        if out is not None:
            with contextlib.suppress(OSError):
                out.close()
        if path is not None:
            self.buffer.discard(self.camera_id, path, reason)

    def close(self) -> None:
        """Finish the open segment and commit it to the buffer (queued for upload)."""
        if self._out is None or self._path is None or self._start_at is None:
            return
        try:
            self._out.close()
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self._out = None
            self._abort(f"disk full: {exc}")
            self.buffer.free_space()
            return
        self._out = None
        start_at = self._start_at
        end_at = start_at + timedelta(seconds=max(self._last_t - self._start_t, 0.0))
        self.buffer.commit(self.camera_id, start_at, end_at, self._path)
        metrics.SEGMENTS_RECORDED.labels(self.camera_id).inc()
        self._path, self._start_at = None, None

"""One MP4 from recorded segments for a time window: cut on keyframes, remuxed, never
re-encoded (docs/evidence.md, "Clips").

Pure with respect to Kafka and the store: segment bytes in, clip bytes and a report out,
so the clip agent and the export job share it and the unit tests drive it with real
H.264 segments. The output is fragment-free MP4 with the index at the front
(``movflags=faststart``), which a browser ``<video>`` starts playing before it has
downloaded everything.

Rules:
- the clip starts on the last keyframe at or before the window's start (so the first
  frame decodes), or on the first keyframe after it when the recording starts later;
- it ends with the last packet at or before the window's end;
- timestamps are rebased onto one timeline: a segment's packets are placed at the
  segment's own start time (event time, from SegmentRecorded) plus their offset in it;
- a segment that does not open or demux (corrupt, truncated) is skipped, its reason
  recorded, and the clip marked partial; so is a gap between segments.
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import av

#: a gap between two segments shorter than this is jitter, not missing video
GAP_TOLERANCE = timedelta(seconds=1.5)


@dataclass(frozen=True, slots=True)
class Segment:
    ref: str
    start_at: datetime
    end_at: datetime
    data: bytes


@dataclass
class ClipResult:
    mp4: bytes | None
    start_at: datetime | None
    end_at: datetime | None
    partial: bool
    #: (segment ref, why it was skipped)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (from, to) spans of the window with no video
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)
    packets: int = 0

    @property
    def duration_s(self) -> float:
        if self.start_at is None or self.end_at is None:
            return 0.0
        return (self.end_at - self.start_at).total_seconds()


@dataclass
class _Packet:
    at: datetime
    keyframe: bool
    packet: Any
    stream: Any


def _demux(seg: Segment) -> tuple[list[_Packet], Any]:
    """Every video packet of a segment with its event time; raises on a bad segment."""
    container = av.open(io.BytesIO(seg.data), "r")
    try:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        out: list[_Packet] = []
        first: int | None = None
        for pkt in container.demux(stream):
            if pkt.dts is None or pkt.size == 0:
                continue
            pts = pkt.pts if pkt.pts is not None else pkt.dts
            if first is None:
                first = pts
            offset = float((pts - first) * pkt.time_base)
            out.append(_Packet(seg.start_at + timedelta(seconds=offset), pkt.is_keyframe,
                               pkt, stream))
        if not out:
            raise ValueError("no video packets")
        return out, container
    except Exception:
        container.close()
        raise


def build_clip(segments: list[Segment], start: datetime, end: datetime) -> ClipResult:
    """The clip of [start, end] from `segments` (any order); `mp4` None if nothing of the
    window was recorded."""
    result = ClipResult(None, None, None, partial=False)
    chosen: list[tuple[Segment, list[_Packet], Any]] = []
    for seg in sorted(segments, key=lambda s: s.start_at):
        if seg.end_at < start - timedelta(seconds=30) or seg.start_at > end:
            continue  # keyframe search may need a little before the window, not more
        try:
            packets, container = _demux(seg)
        except Exception as exc:
            result.skipped.append((seg.ref, f"{type(exc).__name__}: {exc}"[:300]))
            result.partial = True
            continue
        chosen.append((seg, packets, container))
    try:
        timeline = [p for _, packets, _ in chosen for p in packets]
        if not timeline:
            result.gaps.append((start, end))
            result.partial = True
            return result
        keys_before = [i for i, p in enumerate(timeline) if p.keyframe and p.at <= start]
        first = keys_before[-1] if keys_before else next(
            (i for i, p in enumerate(timeline) if p.keyframe and p.at >= start), None)
        if first is None:
            result.gaps.append((start, end))
            result.partial = True
            return result
        picked = [p for p in timeline[first:] if p.at <= end]
        if not picked:
            result.gaps.append((start, end))
            result.partial = True
            return result
        # gaps: before the first picture, between segments, after the last
        if picked[0].at > start + GAP_TOLERANCE:
            result.gaps.append((start, picked[0].at))
        for (a, _, _), (b, _, _) in itertools.pairwise(chosen):
            if b.start_at - a.end_at > GAP_TOLERANCE and a.end_at < end and b.start_at > start:
                result.gaps.append((a.end_at, b.start_at))
        if picked[-1].at < end - GAP_TOLERANCE - timedelta(seconds=1):
            result.gaps.append((picked[-1].at, end))
        if result.gaps:
            result.partial = True
        result.mp4 = _remux(picked)
        result.start_at, result.end_at = picked[0].at, picked[-1].at
        result.packets = len(picked)
        return result
    finally:
        for _, _, container in chosen:
            container.close()


def _remux(packets: list[_Packet]) -> bytes:
    t0 = packets[0].at
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="vigil-clip-")
    os.close(fd)
    try:
        out = av.open(path, "w", format="mp4", options={"movflags": "+faststart"})
        try:
            ostream = out.add_stream_from_template(packets[0].stream)
            tb = Fraction(1, 90_000)
            ostream.time_base = tb
            last_dts = -1
            for p in packets:
                pkt = p.packet
                ts = round((p.at - t0).total_seconds() / tb)
                # the source's pts-dts offset (B-frames) is kept, in the new time base
                delta = 0
                if pkt.pts is not None and pkt.dts is not None:
                    delta = round(float((pkt.pts - pkt.dts) * pkt.time_base) / tb)
                dts = max(ts - delta, last_dts + 1)
                pkt.dts, pkt.pts = dts, max(ts, dts)
                pkt.time_base = tb
                pkt.stream = ostream
                out.mux(pkt)
                last_dts = dts
        finally:
            out.close()
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)

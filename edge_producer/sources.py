"""Decode a camera source with PyAV and decimate it to the configured rate.

Decoding is the edge's main cost, so frames that will not be sent are not decoded where
the codec allows it: between due frames the decoder skips non-reference frames
(``skip_frame="NONREF"``), and in keyframe-only mode (while spooling) everything but
keyframes (``"NONKEY"``). Reference frames must still be decoded for the next due frame
to be correct, which is why "NONREF" and not "NONKEY" is the normal mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np

from vigil.errors import VigilError
from vigil.redact import redact


class SourceError(VigilError):
    """A camera source could not be opened or decoded; the message names the source.

    The message is redacted when the error is made (PyAV/ffmpeg errors quote the URL with
    its password), so whatever later logs, publishes or shows it carries no credential.
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    pts_s: float  # seconds since the start of the source
    occurred_at: datetime
    image: np.ndarray  # BGR
    keyframe: bool


class Decimator:
    """Pick frames at `fps` by their timestamps: frame t is due when t >= next due time.

    Due times are multiples of 1/fps from the first frame, so the output is deterministic
    for a given input and never drifts, whatever the input frame rate."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next_due: float | None = None

    def set_fps(self, fps: float) -> None:
        self.period = 1.0 / fps

    def due(self, t: float) -> bool:
        if self.next_due is None:
            self.next_due = t
        if t + 1e-6 >= self.next_due:
            steps = int((t + 1e-6 - self.next_due) // self.period) + 1
            self.next_due += steps * self.period
            return True
        return False


def decode_decimated(
    url: str,
    fps: Callable[[], float],
    keyframes_only: Callable[[], bool],
    start_at: datetime | None,
    *,
    realtime: bool = False,
    stop: Callable[[], bool] = lambda: False,
    open_timeout_s: float = 10.0,
    max_side: int | None = None,
    on_packet: Callable[[av.Packet, av.VideoStream, float, datetime], None] | None = None,
) -> Iterator[DecodedFrame]:
    """Yield decimated frames of `url`. `start_at` None means live: wall-clock event time."""
    path = url[len("file://"):] if url.startswith("file://") else url
    # TCP for RTSP (no lost UDP packets); a short probe so a stream starts in ~1 s, not 5
    options = {"rtsp_transport": "tcp", "analyzeduration": "1000000", "probesize": "500000"}
    try:
        container = av.open(path, options=options if "://" in path else {},
                            timeout=(open_timeout_s, open_timeout_s))
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {url}: {exc}") from exc
    try:
        if not container.streams.video:
            raise SourceError(f"{url} has no video stream")
        stream = container.streams.video[0]
        # no frame threading: it adds decoder delay, which would make the skip decisions
        # below land on the wrong frames; cameras are parallel across threads anyway
        stream.thread_type = "SLICE"
        ctx = stream.codec_context
        dec = Decimator(fps())
        rate = stream.average_rate or stream.guessed_rate or 25
        frame_dt = 1.0 / float(rate)
        wall0 = time.monotonic()
        t_first: float | None = None
        try:
            pkt_t0: float | None = None
            for packet in container.demux(stream):
                if stop():
                    return
                decoded = packet.decode()  # before remuxing, which retargets the packet
                if on_packet is not None and packet.pts is not None and packet.time_base:
                    pt = float(packet.pts * packet.time_base)
                    pkt_t0 = pt if pkt_t0 is None else pkt_t0
                    pt -= pkt_t0
                    at = (start_at + timedelta(seconds=pt)) if start_at else datetime.now(UTC)
                    on_packet(packet, stream, pt, at)
                for frame in decoded:
                    if frame.pts is None or frame.time_base is None:
                        continue
                    t = float(frame.pts * frame.time_base)
                    if t_first is None:
                        t_first = t
                    t -= t_first
                    kf_only = keyframes_only()
                    dec.set_fps(fps())
                    due = (frame.key_frame or not kf_only) and dec.due(t)
                    # Skip what the next due frame does not need. Near it (a few frame
                    # (3) intervals, to cover B-frame reordering) decode everything, so the
                    # due frame itself is never the one skipped.
                    if kf_only:
                        ctx.skip_frame = "NONKEY"
                    elif dec.next_due is not None and dec.next_due - t > 3 * frame_dt:
                        ctx.skip_frame = "NONREF"
                    else:
                        ctx.skip_frame = "DEFAULT"
                    if not due:
                        continue
                    if realtime:
                        delay = t - (time.monotonic() - wall0)
                        if delay > 0:
                            time.sleep(delay)
                    occurred = (start_at + timedelta(seconds=t)) if start_at else datetime.now(UTC)
                    # scale and convert in one swscale pass: cheaper than convert + resize
                    w, h = _fit(frame.width, frame.height, max_side)
                    image = frame.to_ndarray(width=w, height=h, format="bgr24",
                                             interpolation="AREA")
                    yield DecodedFrame(t, occurred, image, bool(frame.key_frame))
        except av.error.FFmpegError as exc:
            raise SourceError(f"decoding {url} failed: {exc}") from exc
    finally:
        container.close()


def _fit(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    """Size with the longest side at most `max_side` (even numbers, for swscale)."""
    if not max_side or max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(round(w * scale / 2) * 2, 2), max(round(h * scale / 2) * 2, 2)


def file_start_time(path: str) -> datetime:
    """Event time of a file's first frame when not configured: its modification time."""
    p = Path(path[len("file://"):] if path.startswith("file://") else path)
    try:
        return datetime.fromtimestamp(p.stat().st_mtime, UTC)
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc}") from exc

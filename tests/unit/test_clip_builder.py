"""The clip builder on real H.264 segments: cut on keyframes, remuxed without re-encoding,
index at the front, corrupt segments and gaps reported and the clip marked partial."""

from __future__ import annotations

import io
import os
import tempfile
from datetime import UTC, datetime, timedelta

import av
import numpy as np
import pytest

from vigil.clip_builder import Segment, build_clip

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FPS = 10


def segment(start_s: float, seconds: int, ref: str) -> Segment:
    """An MP4 of `seconds` at 10 fps, one keyframe a second, like an edge segment."""
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        with av.open(path, "w") as out:
            st = out.add_stream("libx264", rate=FPS, options={"g": str(FPS), "bf": "0"})
            st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
            for i in range(seconds * FPS):
                img = np.full((120, 160, 3), (i * 7) % 255, np.uint8)
                for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
            for pkt in st.encode():
                out.mux(pkt)
        with open(path, "rb") as fh:
            data = fh.read()
    finally:
        os.unlink(path)
    start = T0 + timedelta(seconds=start_s)
    return Segment(ref, start, start + timedelta(seconds=seconds), data)


def frames_of(mp4: bytes) -> tuple[int, float]:
    with av.open(io.BytesIO(mp4)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return n, float(c.duration or 0) / av.time_base


@pytest.fixture(scope="module")
def segs() -> list[Segment]:
    return [segment(0, 4, "s0"), segment(4, 4, "s1"), segment(8, 4, "s2")]


def test_a_window_across_segments_starts_on_a_keyframe_and_decodes(segs: list[Segment]) -> None:
    r = build_clip(segs, T0 + timedelta(seconds=2.5), T0 + timedelta(seconds=9.5))
    assert r.mp4 is not None and not r.partial and not r.skipped
    assert r.start_at == T0 + timedelta(seconds=2)  # the keyframe before the start
    assert r.end_at is not None and r.end_at >= T0 + timedelta(seconds=9.4)
    n, duration = frames_of(r.mp4)
    assert n == r.packets == 76  # 2.0 .. 9.5 s at 10 fps, every packet decodes
    assert 7.0 <= duration <= 7.8
    # faststart: the index (moov) comes before the media (mdat)
    assert r.mp4.index(b"moov") < r.mp4.index(b"mdat")


def test_a_corrupt_segment_is_skipped_with_its_reason_and_the_clip_is_partial(
        segs: list[Segment]) -> None:
    bad = Segment("s1", segs[1].start_at, segs[1].end_at, segs[1].data[:200])
    r = build_clip([segs[0], bad, segs[2]], T0 + timedelta(seconds=1), T0 + timedelta(seconds=11))
    assert r.partial and [ref for ref, _ in r.skipped] == ["s1"]
    assert r.skipped[0][1]  # the reason
    assert r.gaps and r.gaps[0][0] == segs[0].end_at
    assert r.mp4 is not None and frames_of(r.mp4)[0] == r.packets


def test_no_video_in_the_window_gives_no_clip_and_names_the_gap(segs: list[Segment]) -> None:
    r = build_clip(segs, T0 + timedelta(seconds=60), T0 + timedelta(seconds=70))
    assert r.mp4 is None and r.partial
    assert r.gaps == [(T0 + timedelta(seconds=60), T0 + timedelta(seconds=70))]

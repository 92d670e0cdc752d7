"""The edge's recording buffer and segment uploader against a fake object store and a
fake announcer (the named boundary): bounds evict oldest first and count what was never
uploaded, uploads go in order, retry until they succeed, announce only what exists, and a
restart uploads and announces nothing twice. The recorder is fed real PyAV packets."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from edge_producer.recorder import SegmentRecorder
from edge_producer.segments import SegmentBuffer
from edge_producer.uploader import SegmentUploader, segment_event_id
from schemas.events import SegmentRecorded

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _add(buf: SegmentBuffer, cam: str, i: int, size: int = 1000) -> None:
    start = T0 + timedelta(seconds=10 * i)
    part = buf.part_path(cam, start)
    part.write_bytes(bytes([i % 256]) * size)
    buf.commit(cam, start, start + timedelta(seconds=10), part)


def _starts(buf: SegmentBuffer, cam: str | None = None) -> list[int]:
    return [int((s.start_at - T0).total_seconds() // 10) for s in buf.segments(cam)]


class FakeStore:
    """The object store and Kafka, as the uploader sees them; `up` False = unreachable."""

    def __init__(self) -> None:
        self.up = True
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.announced: list[SegmentRecorded] = []
        self.fail_announce = 0

    def stat(self, key: str) -> int | None:
        if not self.up:
            raise ConnectionError("store down")
        data = self.objects.get(key)
        return None if data is None else len(data)

    def put(self, key: str, data: bytes) -> str:
        if not self.up:
            raise ConnectionError("store down")
        self.objects[key] = data
        self.puts.append(key)
        return f"s3://video-segments/{key}"

    def announce(self, ev: SegmentRecorded) -> None:
        # SegmentRecorded only for an object that exists
        assert ev.object_ref.removeprefix("s3://video-segments/") in self.objects
        if self.fail_announce:
            self.fail_announce -= 1
            raise TimeoutError("kafka down")
        self.announced.append(ev)


def _uploader(buf: SegmentBuffer, store: FakeStore) -> SegmentUploader:
    return SegmentUploader(buf, edge_id="e1", producer_name="test/0", stat=store.stat,
                           put=store.put, ref=lambda k: f"s3://video-segments/{k}",
                           announce=store.announce, backoff=(0.01, 0.05))


def _wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cond()


# ---------------------------------------------------------------------- ring buffer


def test_size_bound_evicts_oldest_first_and_counts_only_never_uploaded(
        tmp_path: Path) -> None:
    buf = SegmentBuffer(tmp_path, max_bytes=3500, max_age_s=3600)
    for i in range(3):
        _add(buf, "cam-a" if i % 2 == 0 else "cam-b", i)
    assert _starts(buf) == [0, 1, 2] and buf.size_bytes == 3000
    # the oldest (cam-a #0) was uploaded: evicting it loses nothing
    seg0 = buf.segments()[0]
    buf.begin_upload(seg0)
    buf.end_upload(seg0, ok=True)
    _add(buf, "cam-b", 3)  # 4000 > 3500: #0 goes
    assert _starts(buf) == [1, 2, 3]
    assert buf.evicted_by_camera == {}
    _add(buf, "cam-a", 4)  # #1 (cam-b, never uploaded) goes, counted
    assert _starts(buf) == [2, 3, 4]
    assert buf.evicted_by_camera == {"cam-b": 1}
    assert sorted(p.name for p in (tmp_path / "cam-b").iterdir()) == [
        s.path.name for s in buf.segments("cam-b")]


def test_age_bound_expires_by_recording_time_not_event_time(tmp_path: Path) -> None:
    # event times far in the past (a file source): nothing expires at once
    buf = SegmentBuffer(tmp_path, max_bytes=10**9, max_age_s=60)
    for i in range(3):
        _add(buf, "cam", i)
    buf.expire()
    assert _starts(buf) == [0, 1, 2]
    buf.expire(now_ns=time.time_ns() + 61 * 10**9)
    assert _starts(buf) == [2]  # the newest is kept (not even offered for upload yet)
    assert buf.evicted_by_camera == {"cam": 2}


def test_restart_keeps_order_and_state_and_discards_the_unfinished_segment(
        tmp_path: Path) -> None:
    buf = SegmentBuffer(tmp_path, max_bytes=10**9, max_age_s=3600)
    for i in range(4):
        _add(buf, "cam", i)
    first = buf.segments()[0]
    buf.begin_upload(first)
    buf.end_upload(first, ok=True)
    torn = buf.part_path("cam", T0 + timedelta(seconds=40))
    torn.write_bytes(b"half a segment")  # SIGKILL while writing
    again = SegmentBuffer(tmp_path, max_bytes=10**9, max_age_s=3600)
    assert not torn.exists()
    assert _starts(again) == [0, 1, 2, 3]
    assert [s.uploaded for s in again.segments()] == [True, False, False, False]
    assert [s.key for s in again.pending()] == [s.key for s in buf.pending()]
    assert again.has("cam", T0 + timedelta(seconds=10))


def test_eviction_of_a_segment_in_flight_counts_only_if_its_upload_fails(
        tmp_path: Path) -> None:
    buf = SegmentBuffer(tmp_path, max_bytes=2500, max_age_s=3600)
    _add(buf, "cam", 0)
    _add(buf, "cam", 1)
    seg = buf.pending()[0]
    buf.begin_upload(seg)
    _add(buf, "cam", 2)  # evicts #0 while it is being uploaded
    assert buf.evicted_by_camera == {}
    buf.end_upload(seg, ok=True)  # it made it: not lost
    assert buf.evicted_by_camera == {}
    seg = buf.pending()[0]
    buf.begin_upload(seg)
    _add(buf, "cam", 3)
    buf.end_upload(seg, ok=False)  # it did not: lost, counted once
    assert buf.evicted_by_camera == {"cam": 1}


# ---------------------------------------------------------------------- uploader


def test_outage_then_recovery_uploads_everything_in_order_once(tmp_path: Path) -> None:
    buf = SegmentBuffer(tmp_path, max_bytes=10**9, max_age_s=3600)
    store = FakeStore()
    up = _uploader(buf, store)
    up.start()
    try:
        for i in range(3):
            _add(buf, f"cam-{i % 2}", i)
        _wait(lambda: len(store.announced) == 3)
        store.up = False
        for i in range(3, 9):
            _add(buf, f"cam-{i % 2}", i)
        _wait(lambda: not up.store_up)
        assert len(buf.pending()) == 6
        store.up = True
        _wait(lambda: not buf.pending())
    finally:
        up.stop_event.set()
        up.join(5)
    keys = [s.key for s in buf.segments()]
    assert store.puts == keys  # in recording order, each object once
    assert [e.object_ref.split("/", 3)[3] for e in store.announced] == keys
    assert len({e.event_id for e in store.announced}) == 9
    assert up.failures >= 1 and all(s.uploaded for s in buf.segments())


def test_restart_after_upload_before_announce_does_not_upload_again(tmp_path: Path) -> None:
    """The edge died after the object was written but before Kafka acknowledged the
    announcement: the next start finds the object, announces it (same event id), and
    neither uploads nor announces anything twice afterwards."""
    buf = SegmentBuffer(tmp_path, max_bytes=10**9, max_age_s=3600)
    store = FakeStore()
    store.fail_announce = 1
    for i in range(2):
        _add(buf, "cam", i)
    with pytest.raises(TimeoutError):
        _uploader(buf, store).upload_one(buf.pending()[0])
    assert len(store.puts) == 1 and not store.announced
    again = SegmentBuffer(tmp_path, max_bytes=10**9, max_age_s=3600)
    up = _uploader(again, store)
    for seg in again.pending():
        up.upload_one(seg)
    assert len(store.puts) == 2  # the first object was not written again
    assert [e.event_id for e in store.announced] == [
        segment_event_id("e1", s) for s in again.segments()]
    third = SegmentBuffer(tmp_path, max_bytes=10**9, max_age_s=3600)
    assert third.pending() == []


# ---------------------------------------------------------------------- recorder


def _packets(tmp_path: Path, seconds: int = 25, fps: int = 4, gop: int = 8) -> Any:
    """A real H.264 file (keyframe every `gop` frames), demuxed into packets."""
    path = tmp_path / "src.mp4"
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.codec_context.gop_size = gop
        st.codec_context.options = {"sc_threshold": "0", "bf": "0"}
        for i in range(seconds * fps):
            img = np.full((48, 64, 3), (i * 7) % 255, dtype=np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def _feed(rec: SegmentRecorder, src: Path) -> None:
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        t0 = None
        for packet in c.demux(stream):
            if packet.pts is None:
                continue
            t = float(packet.pts * packet.time_base)
            t0 = t if t0 is None else t0
            rec.packet(packet, stream, t - t0, T0 + timedelta(seconds=t - t0))
    rec.close()


def test_recorder_cuts_playable_segments_on_keyframes_and_skips_known_ones(
        tmp_path: Path) -> None:
    src = _packets(tmp_path)
    buf = SegmentBuffer(tmp_path / "rec", max_bytes=10**9, max_age_s=3600)
    _feed(SegmentRecorder("cam", 10.0, buf), src)
    segs = buf.segments("cam")
    assert [s.start_at for s in segs] == [T0, T0 + timedelta(seconds=10),
                                          T0 + timedelta(seconds=20)]
    frames = 0
    for s in segs:
        with av.open(str(s.path)) as c:
            n = sum(1 for _ in c.decode(video=0))
            assert n > 0
            frames += n
    assert frames == 100  # every packet in exactly one segment, none re-encoded away
    # the same file read again (edge restarted on a file source): nothing new recorded
    _feed(SegmentRecorder("cam", 10.0, buf), src)
    assert [s.path for s in buf.segments("cam")] == [s.path for s in segs]


def test_recorder_frame_rate_is_kept(tmp_path: Path) -> None:
    src = _packets(tmp_path, seconds=12)
    buf = SegmentBuffer(tmp_path / "rec", max_bytes=10**9, max_age_s=3600)
    _feed(SegmentRecorder("cam", 10.0, buf), src)
    first = buf.segments("cam")[0]
    with av.open(str(first.path)) as c:
        st = c.streams.video[0]
        assert st.average_rate == Fraction(4)
        assert (st.codec_context.width, st.codec_context.height) == (64, 48)


def test_a_full_disk_drops_the_segment_being_written_and_frees_the_oldest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC from the muxer (the named boundary: the file system) is not a camera
    failure: the segment being written is dropped and counted, the oldest segment is
    deleted to make room, and recording goes on at the next keyframe."""
    import errno

    import edge_producer.recorder as recorder_mod

    src = _packets(tmp_path, seconds=35)
    buf = SegmentBuffer(tmp_path / "rec", max_bytes=10**9, max_age_s=3600)
    _add(buf, "old-cam", 0)  # an older, never-uploaded segment of another camera
    real_open = av.open
    opened: list[int] = []

    class FullDisk:
        """The second segment's file: every write fails with ENOSPC."""

        def __init__(self, out: Any) -> None:
            self.out = out

        def add_stream_from_template(self, stream: Any) -> Any:
            return self.out.add_stream_from_template(stream)

        def mux(self, _packet: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.out.close()

    def fake_open(path: str, mode: str = "r", **kw: Any) -> Any:
        out = real_open(path, mode, **kw)
        if mode == "w":
            opened.append(1)
            if len(opened) == 2:
                return FullDisk(out)
        return out

    monkeypatch.setattr(recorder_mod.av, "open", fake_open)
    rec = SegmentRecorder("cam", 10.0, buf)
    _feed(rec, src)
    monkeypatch.setattr(recorder_mod.av, "open", real_open)
    starts = [s.start_at for s in buf.segments("cam")]
    # the segment due at 10 s failed on its first packet; the next keyframe (12 s) starts
    # the next one: one GOP of video lost, declared
    assert starts == [T0 + timedelta(seconds=s) for s in (0, 12, 22, 32)]
    assert buf.segments("old-cam") == []  # freed for room, counted as never uploaded
    assert buf.evicted_by_camera == {"cam": 1, "old-cam": 1}
    assert not list((tmp_path / "rec" / "cam").glob("*.part"))

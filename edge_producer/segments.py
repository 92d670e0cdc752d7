"""The edge's recording buffer: a size- and age-bounded ring of MP4 segments on local disk,
which is also the durable queue of segments still to be uploaded.

Why the segment files are their own queue (and not records in a `Spool` pointing at them):
a segment's state must survive a SIGKILL at any instruction, and one atomic rename per
state change gives that with a single source of truth. A separate queue file would need
two writes per segment (the file and its queue record) and a crash between them leaves
either a queued record without a file or, worse, a finished file that nothing will ever
upload. The pattern is the spool's (edge_producer/spool.py): append first, send from the
head in order, advance only on acknowledgement, evict the oldest when full and count what
an eviction lost per camera instead of hiding it.

Layout under the buffer folder, one folder per camera::

    <camera>/<start>.part                 being written (a crash loses only this one)
    <camera>/<start>+<duration_us>.mp4    finished, not yet uploaded and announced
    <camera>/<start>+<duration_us>.up.mp4 uploaded and announced (kept for local replay)

``<start>`` is the segment's first packet time, ``%Y%m%dT%H%M%S.%fZ`` in UTC, so a name
sorts by time, and the object key derives from it (`Segment.key`): uploading the same
segment twice writes the same object, and its `SegmentRecorded` has the same event id.

Bounds (`max_bytes`, `max_age_s`): after every finished segment, and on a full disk, the
oldest segments are deleted, uploaded or not, oldest first by the time they were
recorded. Deleting a segment that was never uploaded is a loss; it is counted per camera
in `evicted_by_camera` (heartbeat `segments_evicted`, metric
``vigil_edge_segments_evicted_total``) and logged.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_producer import metrics

log = logging.getLogger(__name__)

_TIME_FMT = "%Y%m%dT%H%M%S.%fZ"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True, slots=True)
class Segment:
    camera_id: str
    start_at: datetime
    end_at: datetime
    path: Path
    size: int
    uploaded: bool
    #: when it was finished (wall clock, ns): the eviction order and the age bound
    recorded_ns: int

    @property
    def key(self) -> str:
        """The object key: a pure function of camera and start time (idempotent upload)."""
        return f"{self.camera_id}/{self.start_at.strftime('%Y/%m/%d/%H%M%S.%f')}.mp4"


def _name(start_at: datetime, end_at: datetime, uploaded: bool) -> str:
    dur_us = max(round((end_at - start_at).total_seconds() * 1e6), 0)
    return (f"{start_at.astimezone(UTC).strftime(_TIME_FMT)}+{dur_us}"
            f"{'.up' if uploaded else ''}.mp4")


def _parse(camera_id: str, path: Path) -> Segment | None:
    name = path.name
    if not name.endswith(".mp4"):
        return None
    stem = name[:-4]
    uploaded = stem.endswith(".up")
    stem = stem.removesuffix(".up")
    start_s, sep, dur_s = stem.partition("+")
    try:
        start_at = datetime.strptime(start_s, _TIME_FMT).replace(tzinfo=UTC)
        end_at = start_at + timedelta(microseconds=int(dur_s))
        st = path.stat()
    except (ValueError, OSError):
        return None
    if not sep:
        return None
    return Segment(camera_id, start_at, end_at, path, st.st_size, uploaded, st.st_mtime_ns)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentBuffer:
    """The ring of recorded segments of every camera of one edge (thread-safe)."""

    def __init__(self, directory: Path, max_bytes: int, max_age_s: float):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        #: never-uploaded segments deleted (bounds, full disk) or not written (full disk)
        self.evicted_by_camera: dict[str, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: every finished segment, in recording order (oldest first)
        self._segments: list[Segment] = []
        self._bytes = 0
        #: segments evicted while their upload was under way: not lost if it succeeds
        self._evicted_in_flight: set[Path] = set()
        self._in_flight: Path | None = None
        self._load()

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        found: list[Segment] = []
        for cam_dir in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            for path in sorted(cam_dir.iterdir()):
                if path.suffix == ".part":
                    # the segment being written when the edge died: its MP4 index (moov)
                    # was never written, so it cannot be played; the one loss a crash costs
                    log.warning("discarding the segment unfinished at the last stop",
                                extra={"camera_id": cam_dir.name, "path": str(path)})
                    path.unlink(missing_ok=True)
                    continue
                seg = _parse(cam_dir.name, path)
                if seg is None:
                    log.warning("ignoring an unknown file in the recording buffer",
                                extra={"path": str(path)})
                    continue
                found.append(seg)
        # recording order: finish time, then start time (mtime granularity ties)
        found.sort(key=lambda s: (s.recorded_ns, s.start_at))
        self._segments = found
        self._bytes = sum(s.size for s in found)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def pending(self) -> list[Segment]:
        """Segments not yet uploaded, oldest first."""
        with self._lock:
            return [s for s in self._segments if not s.uploaded]

    def pending_by_camera(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for s in self._segments:
                if not s.uploaded:
                    out[s.camera_id] = out.get(s.camera_id, 0) + 1
        return out

    def segments(self, camera_id: str | None = None) -> list[Segment]:
        with self._lock:
            return [s for s in self._segments if camera_id in (None, s.camera_id)]

    def has(self, camera_id: str, start_at: datetime) -> bool:
        """A segment of `camera_id` starting at `start_at` is in the buffer already (a file
        source read again after a restart records the same video: not again)."""
        with self._lock:
            return any(s.camera_id == camera_id and s.start_at == start_at
                       for s in self._segments)

    # ------------------------------------------------------------------ writing

    def part_path(self, camera_id: str, start_at: datetime) -> Path:
        """Where the recorder writes a segment until it is finished."""
        cam_dir = self.dir / camera_id
        cam_dir.mkdir(parents=True, exist_ok=True)
        return cam_dir / f"{start_at.astimezone(UTC).strftime(_TIME_FMT)}.part"

    def commit(self, camera_id: str, start_at: datetime, end_at: datetime,
               part: Path) -> Segment:
        """Make a written segment durable and queue it for upload: fsync, then rename to
        its final name (the commit point), then enforce the bounds."""
        fd = os.open(part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = part.with_name(_name(start_at, end_at, uploaded=False))
        os.replace(part, final)
        _fsync_dir(final.parent)
        st = final.stat()
        seg = Segment(camera_id, start_at, end_at, final, st.st_size, False, time.time_ns())
        with self._changed:
            self._segments.append(seg)
            self._bytes += seg.size
            self._evict_locked()
            self._changed.notify_all()
        return seg

    def discard(self, camera_id: str, part: Path, reason: str) -> None:
        """A segment that could not be written (full disk, muxer error): counted lost."""
        part.unlink(missing_ok=True)
        with self._lock:
            self._count_lost(camera_id)
        log.warning("segment not recorded: %s", reason, extra={"camera_id": camera_id})

    def free_space(self) -> bool:
        """Disk full: delete the oldest segment (counted if never uploaded). False if the
        buffer holds nothing to delete."""
        with self._lock:
            if not self._segments:
                return False
            self._drop_locked(0, "disk full")
            return True

    # ------------------------------------------------------------------ upload side

    def wait_pending(self, timeout: float) -> Segment | None:
        """The oldest segment not yet uploaded, waiting up to `timeout` for one."""
        with self._changed:
            seg = next((s for s in self._segments if not s.uploaded), None)
            if seg is None:
                self._changed.wait(timeout)
                seg = next((s for s in self._segments if not s.uploaded), None)
            return seg

    def begin_upload(self, seg: Segment) -> None:
        """Note that `seg` is being uploaded: evicted meanwhile, it counts as lost only if
        the upload then fails (`end_upload`), as the spool does for records in flight."""
        with self._lock:
            self._in_flight = seg.path
            self._evicted_in_flight.clear()

    def end_upload(self, seg: Segment, ok: bool) -> None:
        """The upload of `seg` ended. `ok`: the object exists and `SegmentRecorded` was
        acknowledged, so the file is renamed to its uploaded name (a restart neither
        uploads nor announces it again)."""
        with self._changed:
            self._in_flight = None
            if seg.path in self._evicted_in_flight:
                self._evicted_in_flight.discard(seg.path)
                if not ok:
                    self._count_lost(seg.camera_id)
                return
            if not ok:
                return
            idx = next((i for i, s in enumerate(self._segments) if s.path == seg.path), None)
            if idx is None:
                return
            done = seg.path.with_name(_name(seg.start_at, seg.end_at, uploaded=True))
            try:
                os.replace(seg.path, done)
            except FileNotFoundError:
                return
            self._segments[idx] = replace(self._segments[idx], path=done, uploaded=True)
            self._changed.notify_all()

    # ------------------------------------------------------------------ bounds

    def _count_lost(self, camera_id: str) -> None:
        self.evicted_by_camera[camera_id] = self.evicted_by_camera.get(camera_id, 0) + 1
        metrics.SEGMENTS_EVICTED.labels(camera_id).inc()

    def _drop_locked(self, idx: int, why: str) -> None:
        seg = self._segments.pop(idx)
        self._bytes -= seg.size
        try:
            seg.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # never let a stubborn file stop the recording
            log.warning("cannot delete a recorded segment: %s", exc,
                        extra={"path": str(seg.path)})
        if not seg.uploaded:
            if self._in_flight == seg.path:
                self._evicted_in_flight.add(seg.path)  # lost only if the upload fails
            else:
                self._count_lost(seg.camera_id)
            log.warning("recording buffer full (%s): segment evicted before its upload",
                        why, extra={"camera_id": seg.camera_id,
                                    "start_at": seg.start_at.isoformat(),
                                    "evicted": self.evicted_by_camera.get(seg.camera_id, 0)})

    def _evict_locked(self, now_ns: int | None = None) -> None:
        now_ns = time.time_ns() if now_ns is None else now_ns
        max_age_ns = int(self.max_age_s * 1e9)
        # never the newest segment: it has not even been offered for upload yet
        while len(self._segments) > 1 and (
                self._bytes > self.max_bytes
                or now_ns - self._segments[0].recorded_ns > max_age_ns):
            self._drop_locked(0, "size" if self._bytes > self.max_bytes else "age")

    def expire(self, now_ns: int | None = None) -> None:
        """Apply the age bound now (called periodically: a camera that stopped recording
        still has its old segments aged out)."""
        with self._lock:
            self._evict_locked(now_ns)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL

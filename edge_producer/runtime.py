"""The edge process: one thread per camera, one outbox thread to Kafka, heartbeats.

Camera threads decode, decimate, encode JPEG and append each `FrameCaptured` to the
spool (the outbox); the outbox thread sends the spool's head to Kafka in order and
acknowledges records only once Kafka did. Kafka being unreachable therefore only grows
the spool; cameras notice the backlog and drop to keyframes so the spool lasts longer.
A camera that fails backs off and reconnects on its own (1 s doubling to 60 s, with
jitter, reset by the first good frame) and never stops the others.

A full spool disk is not a camera failure: the frame the spool could not keep (or the
older ones it evicted to make room) is counted per camera in
``vigil_edge_frames_dropped_total`` and in the heartbeat's ``frames_dropped`` and
``spool_evicted``, and capture goes on. Downstream, a gap in a camera's sequence numbers
is then a declared drop, not a loss.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message

from edge_producer import metrics
from edge_producer.config import CameraConfig, EdgeConfig
from edge_producer.recorder import SegmentRecorder
from edge_producer.segments import SegmentBuffer
from edge_producer.sources import SourceError, decode_decimated, file_start_time
from edge_producer.spool import Position, Spool, SpoolFull
from edge_producer.uploader import SegmentUploader
from schemas.codec import CodecError
from schemas.events import (
    EdgeHeartbeat,
    FrameCaptured,
    SegmentRecorded,
    StreamDown,
    StreamState,
    StreamStatus,
    StreamUp,
    derived_event_id,
    utcnow,
)
from schemas.producer import EventProducer
from schemas.topics import topic_name
from vigil.kafka import auth_problem
from vigil.redact import redact
from vigil.retry import Backoff
from vigil.settings import get_settings

log = logging.getLogger(__name__)

VERSION = "0.1.0"
PRODUCER = f"edge_producer/{VERSION}"


class SequenceStore:
    """Per-camera sequence numbers that only grow, across restarts (one small file each).

    A number is used up only once its frame is durable (in the spool, or declared
    dropped): `reserve` hands out the next one without writing anything, `commit` records
    it, called by the spool while it still holds the new record back from the outbox. A
    crash between the two leaves the number free for the next frame, so a restart never
    skips one (issue 24: a kill while a recorded source waited for the spool left a hole
    in the sequence). A crash after the record is written but before `commit` is undone
    by `observe`, fed at start-up with the newest sequence still in the spool
    (docs/faults.md, "Edge sequence numbers").
    """

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._last: dict[str, int] = {}

    def last(self, camera_id: str) -> int:
        if camera_id not in self._last:
            p = self.dir / camera_id
            self._last[camera_id] = int(p.read_text()) if p.exists() else 0
        return self._last[camera_id]

    def reserve(self, camera_id: str) -> int:
        """The number the camera's next durable frame gets (nothing written yet)."""
        return self.last(camera_id) + 1

    def commit(self, camera_id: str, seq: int) -> None:
        """Record `seq` as used (it never moves back)."""
        if seq <= self.last(camera_id):
            return
        p = self.dir / camera_id
        text = str(seq).ljust(20)  # fixed width: see below
        tmp = p.with_suffix(".tmp")
        try:
            tmp.write_text(text)
            tmp.replace(p)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not p.exists():
                raise
            # disk full: overwrite in place (same width, no new block), so a full disk
            # never makes a camera reuse a sequence number
            tmp.unlink(missing_ok=True)
            with open(p, "r+") as f:
                f.write(text)
        self._last[camera_id] = seq

    def observe(self, camera_id: str, seq: int) -> None:
        """A frame with `seq` is durable (found in the spool at start-up)."""
        self.commit(camera_id, seq)

    def next(self, camera_id: str) -> int:
        """Reserve and commit at once (a number used up whether or not a frame follows)."""
        seq = self.reserve(camera_id)
        self.commit(camera_id, seq)
        return seq


def resize_longest(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


class MotionMeter:
    """Fraction of moving pixels (MOG2 on a small grey copy): cheap, and enough for the
    inference stage to skip still frames."""

    def __init__(self) -> None:
        self.mog = cv2.createBackgroundSubtractorMOG2(history=50, detectShadows=False)

    def score(self, img: np.ndarray) -> float:
        small = cv2.resize(img, (160, max(int(160 * img.shape[0] / img.shape[1]), 1)),
                           interpolation=cv2.INTER_NEAREST)
        mask = self.mog.apply(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        return float(np.count_nonzero(mask)) / mask.size


@dataclass
class CameraState:
    state: StreamState = "reconnecting"
    captured: int = 0
    dropped: int = 0
    fps: float = 0.0
    last_frame_at: datetime | None = None
    finished: bool = False
    error: str | None = None


class Outbox(threading.Thread):
    """Drains the spool to Kafka in order; acknowledges records Kafka acknowledged."""

    WINDOW = 200

    def __init__(self, spool: Spool, producer: EventProducer, backoff: tuple[float, float]):
        super().__init__(name="edge-outbox", daemon=True)
        self.spool = spool
        self.producer = producer
        self.backoff_initial, self.backoff_max = backoff
        self.stop_event = threading.Event()
        self.kafka_up = True
        self._inflight: dict[Position, bool | None] = {}
        self._order: list[Position] = []
        self._failed = False
        self._topic = topic_name("frames")
        self._sent_at: dict[Position, float] = {}
        self._auth_logged_at = -1e9

    def _on_delivery(self, pos: Position, key: bytes) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            ok = err is None
            self._inflight[pos] = ok
            if ok:
                if self.spool.delivered_after_eviction(pos):
                    log.debug("an evicted frame was delivered after all; not counted lost")
                metrics.FRAMES_PRODUCED.labels(key.decode()).inc()
                metrics.PRODUCE_LATENCY.observe(time.monotonic() - self._sent_at.pop(pos, 0))
                if not self.kafka_up:
                    log.info("kafka reachable again; replaying spool",
                             extra={"backlog": self.spool.backlog})
                self.kafka_up = True
            else:
                self._sent_at.pop(pos, None)
                if self._refused(err):
                    pass
                elif self.kafka_up:
                    log.warning("kafka delivery failed; spooling", extra={"error": str(err)})
                self._failed = True
                self.kafka_up = False
            metrics.KAFKA_UP.set(1 if self.kafka_up else 0)
        return cb

    def _refused(self, err: KafkaError | None) -> bool:
        """Report an authorization/login failure; True if `err` was one.

        Not an outage that passes by itself: it is said plainly (once a minute, not once
        per frame), the frames stay in the spool and the edge keeps running and retrying
        with back-off, so fixing the principal's ACL is all it takes."""
        problem = auth_problem(err, self._topic)
        if problem is None:
            return False
        now = time.monotonic()
        if now - self._auth_logged_at > 60:
            self._auth_logged_at = now
            log.error("%s; frames stay in the spool until it is fixed", problem,
                      extra={"error": err.name() if err else None})
        metrics.KAFKA_AUTH_FAILURES.inc()
        return True

    def _ack_prefix(self) -> None:
        """Acknowledge the spool's pending records up to the first one Kafka has not
        acknowledged. Walked on the spool's own order, not on what was sent: after a
        partial failure (some records timed out, later ones got through) acknowledging
        up to a later success would also acknowledge the earlier, undelivered records."""
        last = None
        for pos in self.spool.positions(len(self._inflight)):
            if self._inflight.get(pos) is not True:
                break
            last = pos
        if last is not None:
            self.spool.ack(last)
        if last is not None or len(self._inflight) > self.WINDOW:
            # forget resolved records that are no longer pending (acknowledged, evicted)
            head = self.spool.positions(1)
            first = (head[0].segment, head[0].offset) if head else None
            self._inflight = {p: v for p, v in self._inflight.items()
                              if v is None or (first is not None
                                               and (p.segment, p.offset) >= first)}
            self._order = [p for p in self._order if p in self._inflight]

    def run(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max, jitter=(0.8, 1.2))
        while True:
            self.producer.producer.poll(0.05)
            self._ack_prefix()
            if self._failed:
                # wait for everything in flight to resolve, then resend from the head
                if all(v is not None for v in self._inflight.values()):
                    self._inflight = {p: v for p, v in self._inflight.items() if v}
                    self._order = [p for p in self._order if p in self._inflight]
                    self._failed = False
                    if self.stop_event.wait(backoff.failed()):
                        return
                continue
            if self.kafka_up:
                backoff.reset()
            room = self.WINDOW if self.kafka_up else 1  # probe with one record while down
            room -= sum(1 for v in self._inflight.values() if v is None)
            if room > 0:
                pending = self.spool.peek(room + len(self._order), 0)
                for rec in pending:
                    if rec.pos in self._inflight:
                        continue
                    self._inflight[rec.pos] = None
                    self._order.append(rec.pos)
                    self._sent_at[rec.pos] = time.monotonic()
                    try:
                        self.producer.producer.produce(
                            self._topic, key=rec.key, value=rec.value,
                            on_delivery=self._on_delivery(rec.pos, rec.key))
                    except BufferError:
                        self._inflight.pop(rec.pos)
                        self._order.remove(rec.pos)
                        break
                    except KafkaException as exc:
                        # librdkafka already knows the topic refuses us (or is unknown):
                        # not sent; back off and try again, like a failed delivery
                        self._inflight.pop(rec.pos)
                        self._order.remove(rec.pos)
                        self._sent_at.pop(rec.pos, None)
                        err = exc.args[0] if exc.args else None
                        if not self._refused(err):
                            log.warning("kafka refused a frame; spooling",
                                        extra={"error": str(err)})
                        self._failed = True
                        self.kafka_up = False
                        metrics.KAFKA_UP.set(0)
                        break
                    room -= 1
                    if room <= 0:
                        break
            metrics.SPOOL_BACKLOG.set(self.spool.backlog)
            if self.stop_event.is_set() and (self.spool.backlog == 0 or not self.kafka_up):
                return
            if not self._inflight and self.spool.backlog == 0:
                time.sleep(0.02)


class Edge:
    def __init__(self, config: EdgeConfig, producer: EventProducer | None = None):
        self.cfg = config
        s = get_settings()
        self.state_dir = config.state_dir or (s.state_dir / "edge" / config.edge_id)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.producer = producer or EventProducer(**{
            "message.timeout.ms": int(config.message_timeout_s * 1000),
            "reconnect.backoff.max.ms": 2000,
        })
        self.spool = Spool(self.state_dir / "spool", config.spool_max_bytes,
                           config.spool_segment_bytes)
        self.seqs = SequenceStore(self.state_dir / "sequences")
        self.outbox = Outbox(self.spool, self.producer,
                             (config.backoff_initial_s, config.backoff_max_s))
        self.segments = SegmentBuffer(self.state_dir / "recordings",
                                      config.record_max_bytes, config.record_max_age_s)
        self.uploader = self._uploader()
        self.stop_event = threading.Event()
        self.cameras = {c.camera_id: CameraState() for c in config.cameras if c.enabled}
        self.threads: list[threading.Thread] = []
        self._evicted_seen = 0
        self._drops_lock = threading.Lock()
        self._lost_seen: dict[bytes, int] = {}
        self._codec = self.producer.codec
        self._recover_sequences()

    def _recover_sequences(self) -> None:
        """Carry each camera's sequence past the newest frame still in the spool: the
        process may have died after the record was written and before its number was
        committed (`SequenceStore`)."""
        for key, rec in self.spool.last_per_key().items():
            try:
                event = self._codec.decode(rec.value)
            except CodecError:  # not ours to judge here: the outbox sends it as it is
                log.warning("undecodable spool record at start-up",
                            extra={"camera_id": key.decode(errors="replace")})
                continue
            if isinstance(event, FrameCaptured):
                self.seqs.observe(event.camera_id, event.sequence)

    # ------------------------------------------------------------------ health

    @property
    def degraded(self) -> bool:
        return not self.outbox.kafka_up or self.spool.backlog > self.cfg.spool_high_water

    def degraded_for(self, cam: CameraConfig) -> bool:
        """Whether `cam` should send keyframes only right now.

        A live source (a stream, or a file paced in real time) cannot wait, so it drops to
        keyframes while the spool is backed up. A recorded file or scene played flat out
        can wait, so it waits for the backlog to drain instead: it loses no frame just
        because it reads faster than the broker takes them. While Kafka is unreachable
        every source drops to keyframes, as the spool is bounded.
        """
        if cam.kind == "stream" or cam.realtime:
            return self.degraded
        while (self.outbox.kafka_up and self.spool.backlog > self.cfg.spool_high_water
               and not self.stop_event.is_set()):
            time.sleep(0.05)
        return not self.outbox.kafka_up

    def _health(self, key: str, event: Any) -> None:
        try:
            self.producer.send("health", key, event)
        except Exception:  # health is best effort; the frames are what must not be lost
            log.exception("cannot send health event")

    def _sync_drop_metrics(self) -> None:
        """Carry the spool's per-camera losses into the metrics (counters only grow)."""
        with self._drops_lock:
            evicted = self.spool.evicted
            if evicted > self._evicted_seen:
                metrics.SPOOL_EVICTED.inc(evicted - self._evicted_seen)
                self._evicted_seen = evicted
            for key, n in list(self.spool.lost_by_key.items()):
                seen = self._lost_seen.get(key, 0)
                if n > seen:
                    metrics.FRAMES_DROPPED.labels(key.decode()).inc(n - seen)
                    self._lost_seen[key] = n

    def frames_dropped(self, camera_id: str) -> int:
        """Frames of `camera_id` that will never be sent: not encoded, or not kept by the
        spool (evicted or refused on a full disk)."""
        return (self.cameras[camera_id].dropped
                + self.spool.lost_by_key.get(camera_id.encode(), 0))

    def heartbeat(self) -> EdgeHeartbeat:
        self._sync_drop_metrics()
        self.segments.expire()
        pending = self.segments.pending_by_camera()
        evicted = self.segments.evicted_by_camera
        metrics.RECORD_BUFFER_BYTES.set(self.segments.size_bytes)
        streams = [
            StreamStatus(camera_id=cid, state=st.state, fps=round(st.fps, 3),
                         frames_captured=st.captured, frames_dropped=self.frames_dropped(cid),
                         last_frame_at=st.last_frame_at,
                         segments_pending=pending.get(cid, 0),
                         segments_evicted=evicted.get(cid, 0))
            for cid, st in sorted(self.cameras.items())
        ]
        hb = EdgeHeartbeat.create(
            producer=PRODUCER, edge_id=self.cfg.edge_id, site_id=self.cfg.site_id,
            version=VERSION, interval_s=self.cfg.heartbeat_interval_s, streams=streams,
            disk_free_bytes=shutil.disk_usage(self.state_dir).free,
            memory_rss_bytes=_rss_bytes(), spool_backlog=self.spool.backlog,
            spool_evicted=self.spool.lost, record_backlog=sum(pending.values()),
            record_buffer_bytes=self.segments.size_bytes,
        )
        metrics.DISK_FREE.set(hb.disk_free_bytes)
        metrics.SPOOL_BACKLOG.set(self.spool.backlog)
        self.producer.send("heartbeats", self.cfg.edge_id, hb)
        return hb

    # ------------------------------------------------------------------ cameras

    def _source(self, cam: CameraConfig) -> tuple[str, datetime | None]:
        if cam.kind == "sim":
            from edge_producer.sim.scenario import load_scenario
            from edge_producer.sim.video import cached_scenario_video

            scenario = load_scenario(cam.url)
            return str(cached_scenario_video(scenario, self.state_dir / "sim-cache")), \
                scenario.start
        if cam.kind == "file":
            return cam.url, cam.start_at or file_start_time(cam.url)
        return cam.source_url(), None

    def _camera_loop(self, cam: CameraConfig) -> None:
        st = self.cameras[cam.camera_id]
        backoff = Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s, jitter=(0.5, 1.0))
        attempt = 0
        down_since: datetime | None = None
        motion = MotionMeter()
        loop_offset = 0.0
        while not self.stop_event.is_set():
            try:
                url, start_at = self._source(cam)
                if start_at is not None and loop_offset:
                    from datetime import timedelta
                    start_at = start_at + timedelta(seconds=loop_offset)
                last_t = 0.0
                t_win, n_win = time.monotonic(), 0
                recorder = self._recorder(cam) if cam.record else None
                frames = decode_decimated(
                    url, lambda: cam.keyframe_fps if self.degraded_for(cam) else cam.fps,
                    lambda: self.degraded_for(cam), start_at, realtime=cam.realtime,
                    stop=self.stop_event.is_set, max_side=cam.max_side,
                    on_packet=recorder.packet if recorder else None)
                for frame in _closing(frames, recorder):
                    if st.state != "up":
                        if down_since is not None:
                            self._health(cam.camera_id, StreamUp.create(
                                producer=PRODUCER, edge_id=self.cfg.edge_id,
                                camera_id=cam.camera_id, down_since=down_since))
                        st.state, down_since, attempt = "up", None, 0
                        metrics.STREAM_UP.labels(self.cfg.edge_id, cam.camera_id).set(1)
                        backoff.reset()
                    self._emit(cam, st, frame.image, frame.occurred_at, motion)
                    last_t = frame.pts_s
                    n_win += 1
                    now = time.monotonic()
                    if now - t_win >= 5:
                        st.fps = n_win / (now - t_win)
                        metrics.DECODE_FPS.labels(cam.camera_id).set(st.fps)
                        t_win, n_win = now, 0
                if self.stop_event.is_set():
                    break
                if cam.kind in ("file", "sim"):
                    if cam.loop:
                        loop_offset += last_t + 1.0 / cam.fps
                        continue
                    st.state, st.finished = "down", True
                    log.info("camera %s: source ended", cam.camera_id,
                             extra={"camera_id": cam.camera_id})
                    return
                raise SourceError(f"{cam.url}: stream ended")
            except Exception as exc:  # any failure: report, back off, reconnect
                attempt += 1
                reason = redact(str(exc) if isinstance(exc, SourceError)
                                else f"{type(exc).__name__}: {exc}")
                st.error = reason
                metrics.RECONNECTS.labels(cam.camera_id).inc()
                if down_since is None:
                    down_since = utcnow()
                st.state = "reconnecting"
                metrics.STREAM_UP.labels(self.cfg.edge_id, cam.camera_id).set(0)
                log.error("camera %s failed (attempt %d): %s", cam.camera_id, attempt, reason,
                          extra={"camera_id": cam.camera_id, "attempt": attempt})
                self._health(cam.camera_id, StreamDown.create(
                    producer=PRODUCER, edge_id=self.cfg.edge_id, camera_id=cam.camera_id,
                    reason=reason[:1000], attempt=attempt))
                if self.stop_event.wait(backoff.failed()):
                    break

    def _recorder(self, cam: CameraConfig) -> SegmentRecorder:
        return SegmentRecorder(cam.camera_id, self.cfg.segment_s, self.segments)

    def _uploader(self) -> SegmentUploader:
        from vigil.objects import failfast_client, object_size, put_bytes, ref_for

        bucket = get_settings().bucket_segments
        return SegmentUploader(
            self.segments, edge_id=self.cfg.edge_id, producer_name=PRODUCER,
            stat=lambda key: object_size(bucket, key, failfast_client()),
            put=lambda key, data: put_bytes(bucket, key, data, "video/mp4",
                                            failfast_client()),
            ref=lambda key: ref_for(bucket, key), announce=self._announce_segment,
            backoff=(self.cfg.backoff_initial_s, self.cfg.backoff_max_s))

    def _announce_segment(self, event: SegmentRecorded) -> None:
        """Publish `SegmentRecorded` and return only once Kafka acknowledged it."""
        done = threading.Event()
        result: list[KafkaError | None] = []

        def cb(err: KafkaError | None, _msg: Message) -> None:
            result.append(err)
            done.set()

        self.producer.send("recordings", event.camera_id, event, on_delivery=cb)
        deadline = time.monotonic() + self.cfg.message_timeout_s + 5
        while not done.is_set() and time.monotonic() < deadline:
            self.producer.producer.poll(0.05)  # the outbox thread polls too; either serves
        if not done.is_set():
            raise TimeoutError("SegmentRecorded not acknowledged by Kafka in time")
        if result[0] is not None:
            raise RuntimeError(f"SegmentRecorded not delivered: {result[0]}")

    def _emit(self, cam: CameraConfig, st: CameraState, image: np.ndarray,
              occurred_at: datetime, motion: MotionMeter) -> None:
        img = resize_longest(image, cam.max_side)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, cam.jpeg_quality])
        if not ok:
            st.dropped += 1
            metrics.FRAMES_DROPPED.labels(cam.camera_id).inc()
            return
        jpeg = buf.tobytes()
        # may wait for the spool to drain (a recorded source): before a number is taken
        kf_only = self.degraded_for(cam)
        seq = self.seqs.reserve(cam.camera_id)
        jpeg_field: bytes | None = jpeg
        ref = None
        if len(jpeg) > self.cfg.inline_jpeg_max_bytes:
            from vigil.objects import store_frame

            ref = store_frame(jpeg, f"{cam.camera_id}/{seq:012d}.jpg")
            jpeg_field = None
        event = FrameCaptured.create(
            producer=PRODUCER, occurred_at=occurred_at,
            event_id=derived_event_id(self.cfg.edge_id, cam.camera_id, seq),
            edge_id=self.cfg.edge_id, camera_id=cam.camera_id, sequence=seq,
            width=img.shape[1], height=img.shape[0], motion_score=motion.score(img),
            jpeg=jpeg_field, object_ref=ref, keyframe_only=kf_only,
        )
        lost_before = self.spool.lost
        try:
            # the number is committed once the record is written, before the outbox can
            # see it (so before Kafka can acknowledge it): see SequenceStore
            self.spool.append(cam.camera_id.encode(), self._codec.encode(event),
                              on_kept=lambda: self.seqs.commit(cam.camera_id, seq))
        except SpoolFull as exc:
            self.seqs.commit(cam.camera_id, seq)  # a declared drop uses its number up
            # declared, not hidden: counted per camera (metrics, heartbeat); capture goes on
            if self.spool.refused == 1 or self.spool.refused % 100 == 0:
                log.warning("spool disk full: frame %d of %s dropped", seq, cam.camera_id,
                            extra={"camera_id": cam.camera_id, "error": str(exc),
                                   "refused": self.spool.refused})
            self._sync_drop_metrics()
            return
        if self.spool.lost != lost_before:
            log.warning("spool full: %d older frame(s) evicted",
                        self.spool.lost - lost_before,
                        extra={"camera_id": cam.camera_id, "evicted": self.spool.evicted})
            self._sync_drop_metrics()
        st.captured += 1
        st.last_frame_at = occurred_at
        metrics.FRAMES_CAPTURED.labels(cam.camera_id).inc()
        if not self.outbox.kafka_up:
            metrics.FRAMES_SPOOLED.labels(cam.camera_id).inc()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.cfg.metrics_port:
            from vigil.ops_http import OpsServer

            ops = OpsServer("edge", get_settings().metrics_host, self.cfg.metrics_port)
            ops.check("kafka", self._kafka_check)
            self.ops_server = ops.start()
        self.outbox.start()
        self.uploader.start()
        for cam in self.cfg.cameras:
            if not cam.enabled:
                continue
            t = threading.Thread(target=self._camera_loop, args=(cam,),
                                 name=f"camera-{cam.camera_id}", daemon=True)
            t.start()
            self.threads.append(t)

    def _kafka_check(self) -> str:
        """Readiness: frames still reach Kafka (while it is away they go to the spool)."""
        if not self.outbox.kafka_up:
            raise RuntimeError(f"Kafka unreachable, {self.spool.backlog} record(s) spooled")
        return f"{self.spool.backlog} record(s) in the spool"

    def all_done(self) -> bool:
        """Every camera either reached its end or is a file that keeps failing to open."""
        kinds = {c.camera_id: c.kind for c in self.cfg.cameras}
        return self.spool.backlog == 0 and not self.segments.pending() and all(
            st.finished or (kinds[cid] == "file" and st.error is not None and st.captured == 0)
            for cid, st in self.cameras.items())

    def run(self, until_done: bool = False) -> int:
        """Run until SIGTERM/SIGINT (or, with `until_done`, until every file/sim camera
        ended and the spool is drained); then flush and exit cleanly."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        next_hb = time.monotonic()
        while not self.stop_event.is_set():
            if time.monotonic() >= next_hb:
                self.heartbeat()
                next_hb += self.cfg.heartbeat_interval_s
            if until_done and self.all_done():
                break
            self.stop_event.wait(min(0.2, max(next_hb - time.monotonic(), 0.01)))
        return self.shutdown()

    def shutdown(self, timeout: float = 20.0) -> int:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout)
        self.outbox.stop_event.set()
        deadline = time.monotonic() + timeout
        # segments finished by the cameras' stop go up now if the store answers; what
        # does not make it stays in the buffer and goes first at the next start
        if self.uploader.store_up:
            self.uploader.drain(max(min(deadline - time.monotonic(), 10.0), 0.0))
        self.uploader.stop_event.set()
        while self.outbox.is_alive() and time.monotonic() < deadline:
            self.outbox.join(0.2)
        self.uploader.join(max(min(deadline - time.monotonic(), 5.0), 0.1))
        try:
            self.heartbeat()
        except Exception:
            log.exception("final heartbeat failed")
        left = self.producer.flush(max(deadline - time.monotonic(), 1.0))
        self.spool.close()
        log.info("edge stopped", extra={"backlog": self.spool.backlog, "unflushed": left})
        return 0


def _closing(frames: Any, recorder: SegmentRecorder | None) -> Any:
    """Iterate `frames`; whatever ends the iteration (the source's end, a stop, a source
    error), the segment being recorded is finished and committed, not left half-written."""
    try:
        yield from frames
    finally:
        if recorder is not None:
            try:
                recorder.close()
            except Exception:
                log.exception("finishing the last segment failed",
                              extra={"camera_id": recorder.camera_id})


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0

"""The evidence agent: every rule hit on vigil.scene -> its still evidence -> vigil.evidence.

For each RuleTriggered (docs/evidence.md):
1. find the FrameAnalyzed that completed the evidence (the hit's `causation_id`) on the
   detections topic and its FrameCaptured (the analysis' `causation_id`) on the frames
   topic (`agents.evidence_lookup`: by id, backwards from the hit's Kafka timestamp; no
   state is kept, so a restarted worker does exactly what a running one does);
2. store the frame as captured (whatever its size), an annotated rendering (every box, the
   rule's tracks highlighted with their ids, the zone or line, a caption) and a thumbnail,
   under keys that are a function of the hit's event id;
3. store the EvidenceCaptured event itself next to them (``evidence.avro``), and only then
   publish it (its id is derived from the hit's id).

Crash safety without a table: every write is idempotent (same keys, same bytes, same event
id), and the message is acked only after the publish was acknowledged. A re-delivered hit
whose ``evidence.avro`` exists is re-announced from it without any lookup or rendering,
so replays never re-render; a crash before it re-does the whole capture onto the same keys.
Consumers deduplicate the event by id.

The agent runs with concurrency=1 and has no timers and no table. A failure that is not
the hit's fault (object store or broker unavailable) is retried with back-off a bounded
number of times, then dead-lettered like every other failure with its reason: blocking
longer would stall the worker's shared consumer and with it the alert agents.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import faust
from prometheus_client import Counter, Histogram
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.app import app, topics
from agents.codec import Undecodable
from agents.dlq import dead_letter
from agents.evidence_lookup import EventLookup
from agents.evidence_render import Overlay, RenderError, annotate, thumbnail
from schemas.codec import CodecError, default_codec
from schemas.events import (
    CameraConfigured,
    Event,
    EvidenceCaptured,
    FrameAnalyzed,
    FrameCaptured,
    LineConfigured,
    RuleConfigured,
    RuleTriggered,
    ZoneConfigured,
    derived_event_id,
)
from vigil.errors import VigilError
from vigil.retry import delay_after
from vigil.settings import load_component_settings

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=Event)

PRODUCER = "vigil-evidence/1"
STAGE = "evidence"

CAPTURED = Counter("vigil_evidence_captures_total", "Rule hits handled by the evidence agent",
                   ["outcome"])
CAPTURE_LATENCY = Histogram(
    "vigil_evidence_capture_seconds",
    "Rule hit published -> its EvidenceCaptured acknowledged (snapshot available)",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)


class EvidenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_EVIDENCE_", extra="forbid",
                                      frozen=True)

    #: width of the thumbnail JPEG in pixels (aspect kept)
    thumbnail_width: int = Field(320, ge=32, le=1920)
    #: tries of a capture whose failure is not the hit's fault, before the DLQ
    attempts: int = Field(5, ge=1, le=50)
    #: back-off before the second try; doubles each time
    retry_s: float = Field(0.5, gt=0, le=60)
    #: a clip covers PRE_S before the first evidence to POST_S after the hit
    pre_s: float = Field(10.0, ge=0, le=600)
    post_s: float = Field(20.0, ge=0, le=600)
    #: first re-check of a clip whose segments have not all arrived; doubles, at most 5 min
    clip_retry_s: float = Field(5.0, gt=0, le=300)
    #: how long a clip waits for late segments before it is built with what there is
    clip_wait_max_s: float = Field(86_400.0, gt=0)
    #: a camera with no segment at all this long after its window says "no recording"
    clip_no_recording_s: float = Field(120.0, gt=0)
    #: how far before the hit's publication the recordings topic is searched
    clip_lookback_s: float = Field(3_600.0, gt=0)


@cache
def get_evidence_settings() -> EvidenceSettings:
    return load_component_settings(EvidenceSettings, "VIGIL_EVIDENCE_")


get_evidence_settings()  # fails the worker at start, naming a bad variable


class NotCapturable(VigilError):
    """The hit's evidence cannot be captured whatever we retry (its frame is gone, the
    picture does not decode): dead-lettered at once."""


# ------------------------------------------------------------------------- pure parts


def evidence_prefix(camera_id: str, at: datetime, rule_event_id: str,
                    topic_prefix: str | None = None) -> str:
    """``<topic prefix>/evidence/<camera>/<UTC date>/<rule event id>``: one folder per rule
    hit, a pure function of the hit, so every retry and replay writes the same objects.
    The topic prefix keeps deployments that share a bucket (test runs, audit replays,
    whose derived ids repeat) from finding each other's objects."""
    if topic_prefix is None:
        from vigil.settings import get_settings

        topic_prefix = get_settings().topic_prefix
    day = at.astimezone(UTC).strftime("%Y-%m-%d")
    return (f"{quote(topic_prefix, safe='-_.')}/evidence/{quote(camera_id, safe='-_.')}/"
            f"{day}/{rule_event_id}")


def measurement(t: RuleTriggered) -> str:
    if t.rule_type == "loitering":
        return f"dwell {t.value:.0f} s (threshold {t.threshold:.0f} s)"
    if t.rule_type == "crowd":
        return f"{t.value:.0f} people (at least {t.threshold:.0f})"
    if t.rule_type == "perimeter":
        return "perimeter entered"
    if t.rule_type == "line_crossing":
        return "line crossed"
    return f"value {t.value:g} (threshold {t.threshold:g})"


def caption(t: RuleTriggered, frame_at: datetime, camera: CameraConfigured | None) -> list[str]:
    """Rule, camera, the frame's local time at the camera, and what was measured."""
    tz_name = camera.timezone if camera is not None else "UTC"
    try:
        tz: Any = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz, tz_name = UTC, "UTC"
    local = frame_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    cam = f"{camera.name} ({t.camera_id})" if camera is not None and camera.name else t.camera_id
    return [f"{t.severity.upper()} {t.rule_type} {t.rule_id} - {cam}",
            f"{local} {tz_name} - {measurement(t)} - tracks {', '.join(t.track_ids)}"]


@dataclass(frozen=True, slots=True)
class SceneConfig:
    camera: CameraConfigured | None
    zone: ZoneConfigured | None
    line: LineConfigured | None


def scene_config(entities: dict[str, Event | None], t: RuleTriggered) -> SceneConfig:
    """The camera, zone and line a hit refers to, from the config topic's state."""
    camera = entities.get(f"camera/{t.camera_id}")
    rule = entities.get(f"rule/{t.rule_id}")
    zone_id = t.zone_id or (rule.zone_id if isinstance(rule, RuleConfigured) else None)
    zone = entities.get(f"zone/{zone_id}") if zone_id else None
    line_id = rule.line_id if isinstance(rule, RuleConfigured) else None
    line = entities.get(f"line/{line_id}") if line_id else None
    return SceneConfig(camera if isinstance(camera, CameraConfigured) else None,
                       zone if isinstance(zone, ZoneConfigured) else None,
                       line if isinstance(line, LineConfigured) else None)


def overlay_for(t: RuleTriggered, analysis: FrameAnalyzed, cfg: SceneConfig) -> Overlay:
    highlighted = dict(zip(t.detection_ids, t.track_ids, strict=False))
    if len(t.detection_ids) != len(t.track_ids):
        # a track not seen in this frame has no detection: pair them by position only
        # when both lists line up; otherwise label the boxes with the rule's track list
        highlighted = {d: "/".join(t.track_ids) if len(t.track_ids) <= 3 else "track"
                       for d in t.detection_ids}
    return Overlay(
        detections=analysis.detections, highlighted=highlighted,
        zone=cfg.zone.polygon if cfg.zone is not None else None,
        line=(cfg.line.a, cfg.line.b) if cfg.line is not None else None,
        caption=caption(t, analysis.occurred_at, cfg.camera))


# ------------------------------------------------------------------------- I/O parts


class Capturer:
    """Captures one hit's evidence; independent of Faust (the agent below feeds it)."""

    def __init__(self, settings: EvidenceSettings) -> None:
        from vigil.settings import get_settings

        self.s = settings
        self.vs = get_settings()
        self.bucket = self.vs.bucket_snapshots
        self.lookup = EventLookup(group_prefix=f"{app.conf.id}-evidence-lookup")
        self._config: dict[str, Event | None] = {}
        self._config_high = -1
        self._codec = default_codec()

    # -- config (the compacted topic, re-read only when its end offset moved)
    def config(self) -> dict[str, Event | None]:
        from confluent_kafka import TopicPartition

        from schemas.config_state import read_config_state

        name = str(topics.config.get_topic_name())
        _, high = self.lookup._consumer.get_watermark_offsets(TopicPartition(name, 0),
                                                              timeout=10)
        if high != self._config_high:
            self._config = read_config_state(group_prefix=f"{app.conf.id}-config-reader")
            self._config_high = high
        return self._config

    # -- objects
    def _client(self) -> Any:
        from vigil.objects import client

        return client()

    def existing_event(self, prefix: str) -> EvidenceCaptured | None:
        from vigil.objects import get_bytes

        stored = get_bytes(self.bucket, f"{prefix}/evidence.avro", self._client())
        if stored is None:
            return None
        try:
            ev = self._codec.decode(stored)
        except CodecError as exc:  # unreadable: capture again over it
            log.warning("evidence: %s/evidence.avro unreadable (%s): capturing again",
                        prefix, exc)
            return None
        return ev if isinstance(ev, EvidenceCaptured) else None

    def _put(self, key: str, data: bytes, content_type: str) -> str:
        from vigil.objects import put_bytes

        return put_bytes(self.bucket, key, data, content_type)

    def _frame_jpeg(self, frame: FrameCaptured) -> bytes:
        if frame.jpeg is not None:
            return frame.jpeg
        if not frame.object_ref:
            raise NotCapturable(f"frame {frame.event_id} has neither a JPEG nor an object")
        from vigil.objects import get_bytes, split_ref

        bucket, key = split_ref(frame.object_ref, self.vs.bucket_frames, self.vs.buckets)
        jpeg = get_bytes(bucket, key, self._client())
        if jpeg is None:
            raise NotCapturable(f"frame object {frame.object_ref} is gone")
        return jpeg

    def _find(self, cls: type[_E], topic: Any, camera_id: str, event_id: str, ts_ms: int,
              what: str, hint: str) -> tuple[_E, int]:
        """The event `event_id` of type `cls` on `topic` at or before `ts_ms`, and its
        timestamp; NotCapturable naming `what` when it is not there."""
        name = str(topic.get_topic_name())
        found = self.lookup.find(name, camera_id, event_id, ts_ms)
        if found is None or not isinstance(found[0], cls):
            raise NotCapturable(f"{what} not found on {name} {hint}")
        return found[0], found[1]

    def capture(self, t: RuleTriggered, trigger_ts_ms: int) -> EvidenceCaptured:
        """Everything but the publish, blocking (run in a thread)."""
        prefix = evidence_prefix(t.camera_id, t.occurred_at, t.event_id)
        done = self.existing_event(prefix)
        if done is not None:
            CAPTURED.labels("already_stored").inc()
            return done
        if not t.causation_id:
            raise NotCapturable("the rule hit names no frame analysis (causation_id)")
        analysis, analysis_ts = self._find(
            FrameAnalyzed, topics.detections, t.camera_id, t.causation_id, trigger_ts_ms,
            f"frame analysis {t.causation_id}", "before the hit")
        if not analysis.causation_id:
            raise NotCapturable(f"frame analysis {analysis.event_id} names no frame")
        frame, _ = self._find(FrameCaptured, topics.frames, t.camera_id,
                              analysis.causation_id, analysis_ts,
                              f"frame {analysis.causation_id}", "(past its retention?)")
        jpeg = self._frame_jpeg(frame)
        cfg = scene_config(self.config(), t)
        overlay = overlay_for(t, analysis, cfg)
        try:
            annotated = annotate(jpeg, overlay)
            thumb = thumbnail(annotated, self.s.thumbnail_width)
        except RenderError as exc:
            raise NotCapturable(str(exc)) from exc
        snapshot_ref = self._put(f"{prefix}/frame.jpg", jpeg, "image/jpeg")
        annotated_ref = self._put(f"{prefix}/annotated.jpg", annotated, "image/jpeg")
        thumbnail_ref = self._put(f"{prefix}/thumbnail.jpg", thumb, "image/jpeg")
        event = EvidenceCaptured.create(
            producer=PRODUCER, event_id=derived_event_id("EvidenceCaptured", t.event_id),
            occurred_at=t.occurred_at, cause=t, camera_id=t.camera_id,
            rule_event_id=t.event_id, rule_id=t.rule_id, rule_type=t.rule_type,
            zone_id=t.zone_id, line_id=cfg.line.line_id if cfg.line is not None else None,
            frame_event_id=frame.event_id, analysis_event_id=analysis.event_id,
            frame_at=frame.occurred_at, first_evidence_at=t.first_evidence_at,
            last_evidence_at=t.last_evidence_at, width=frame.width, height=frame.height,
            snapshot_ref=snapshot_ref, annotated_ref=annotated_ref,
            thumbnail_ref=thumbnail_ref, track_ids=list(t.track_ids),
            detection_ids=[d.detection_id for d in analysis.detections],
            highlighted_detection_ids=[d for d in t.detection_ids
                                       if d in overlay.highlighted])
        # the event is stored with its objects before it is announced: a re-delivered
        # hit is re-announced from here, never rendered again
        self._put(f"{prefix}/evidence.avro", self._codec.encode(event),
                  "application/vnd.apache.avro")
        CAPTURED.labels("captured").inc()
        return event


# ------------------------------------------------------------------------- the agent

_capturer: Capturer | None = None


def _get_capturer() -> Capturer:
    global _capturer
    if _capturer is None:
        _capturer = Capturer(get_evidence_settings())
    return _capturer


async def handle(t: RuleTriggered, event: Any) -> EvidenceCaptured:
    """One hit: capture (retrying what is not its fault), publish, wait for the ack."""
    s = get_evidence_settings()
    ts = event.message.timestamp
    ts_ms = int(ts * 1000) if ts else int(time.time() * 1000)
    for attempt in range(1, s.attempts + 1):
        try:
            cap = await asyncio.to_thread(_get_capturer)
            captured = await asyncio.to_thread(cap.capture, t, ts_ms)
            fut = await topics.evidence.send(key=t.camera_id.encode(), value=captured,
                                             force=True)
            await fut
            latency = max(0.0, time.time() - ts_ms / 1000)
            CAPTURE_LATENCY.observe(latency)
            log.info("evidence: %s of rule hit %s announced %.3f s after the hit",
                     captured.event_id, t.event_id, latency)
            return captured
        except NotCapturable:
            raise
        except Exception as exc:
            if attempt == s.attempts:
                raise
            log.warning("evidence: capture of %s failed (try %d of %d): %s", t.event_id,
                        attempt, s.attempts, exc)
            await asyncio.sleep(delay_after(attempt, s.retry_s, math.inf))
    raise AssertionError("unreachable")


@app.agent(topics.scene, concurrency=1)
async def capture_evidence(stream: faust.StreamT) -> None:
    """Rule hits in, their still evidence out; everything else on the topic is skipped.
    Every failure goes to the DLQ with its reason; the stream never stops on one hit."""
    async for event in stream.events():
        value = event.value
        try:
            if isinstance(value, Undecodable):
                await dead_letter(value, value.reason, STAGE, event)
                continue
            if not isinstance(value, RuleTriggered):
                continue
            await handle(value, event)
        except Exception as exc:
            CAPTURED.labels("dead_lettered").inc()
            log.exception("evidence: capture failed")
            try:
                await dead_letter(value, f"{type(exc).__name__}: {exc}", STAGE, event)
            except Exception:
                log.exception("evidence: dead-lettering failed")

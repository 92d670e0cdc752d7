"""The clip agent: every EvidenceCaptured -> one MP4 of its window -> ClipRecorded.

The window is VIGIL_EVIDENCE_PRE_S before the hit's first evidence to VIGIL_EVIDENCE_POST_S
after the hit (docs/evidence.md, "Clips"). Segments are found on vigil.recordings
(SegmentRecorded, the camera's partition, searched from VIGIL_EVIDENCE_CLIP_LOOKBACK_S
before the evidence was published to the partition's end), fetched from the object store
and cut/remuxed by `vigil.clip_builder` (no re-encode).

When is a clip built? Segments reach the cloud in order (the edge uploads its buffer
oldest first), so the window is final once a segment of the camera ends at or after the
window's end, or starts after it. Until then the evidence is put on the internal
``clip-retry`` topic with a ``vigil.not_before`` header and looked at again (back-off from
VIGIL_EVIDENCE_CLIP_RETRY_S, doubling, at most 5 min): a clip whose segments arrive late
(edge catching up after an outage) is built when they arrive, never skipped. After
VIGIL_EVIDENCE_CLIP_WAIT_MAX_S it is built with what there is (partial). A camera with no
segment at all, neither in the lookback nor since, VIGIL_EVIDENCE_CLIP_NO_RECORDING_S after
its window says so (status ``no_recording``) instead of waiting a day.

Crash safety as for the stills: the clip's key and event id derive from the hit; the
event is stored next to the clip (``clip.avro``) before it is published, and a redelivered
evidence finds it and re-announces it without building again. No table, no timer: the
retry topic is the only state, and a message is acked only after its successor (the clip
event or the next retry) was acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import faust

from agents.app import app, topics
from agents.codec import Undecodable
from agents.dlq import dead_letter
from agents.evidence import evidence_prefix, get_evidence_settings
from agents.evidence_lookup import EventLookup
from schemas.codec import CodecError, default_codec
from schemas.events import (
    ClipGap,
    ClipRecorded,
    ClipSkip,
    Event,
    EvidenceCaptured,
    SegmentRecorded,
    derived_event_id,
)
from vigil.clip_builder import Segment, build_clip

log = logging.getLogger(__name__)

PRODUCER = "vigil-clips/1"
STAGE = "clips"
NOT_BEFORE = "vigil.not_before"
FIRST_SEEN = "vigil.first_seen"
ATTEMPT = "vigil.attempt"
PUBLISHED_MS = "vigil.published_ms"
#: longest a not-yet-due retry is held before it is put back on the topic
HOLD_S = 1.0


class Clipper:
    """Builds one evidence's clip, or says to look again later; independent of Faust."""

    def __init__(self) -> None:
        from vigil.settings import get_settings

        self.s = get_evidence_settings()
        self.vs = get_settings()
        self.lookup = EventLookup(group_prefix=f"{app.conf.id}-evidence-lookup")
        self._codec = default_codec()

    def _client(self) -> Any:
        from vigil.objects import client

        return client()

    def _get(self, bucket: str, key: str) -> bytes | None:
        from vigil.objects import get_bytes

        return get_bytes(bucket, key, self._client())

    def attempt(self, ev: EvidenceCaptured, published_ms: int, first_seen_s: float
                ) -> ClipRecorded | None:
        """The clip event (stored before it is returned), or None: look again later."""
        prefix = evidence_prefix(ev.camera_id, ev.occurred_at, ev.rule_event_id)
        bucket = self.vs.bucket_snapshots
        stored = self._get(bucket, f"{prefix}/clip.avro")
        if stored is not None:
            try:
                done = self._codec.decode(stored)
            except CodecError as exc:  # unreadable: build again over it
                log.warning("clips: %s/clip.avro unreadable (%s): building again", prefix,
                            exc)
                done = None
            if isinstance(done, ClipRecorded):
                return done
        start = ev.first_evidence_at - timedelta(seconds=self.s.pre_s)
        end = ev.occurred_at + timedelta(seconds=self.s.post_s)
        cam = ev.camera_id

        def mine(e: Event) -> bool:
            return isinstance(e, SegmentRecorded) and e.camera_id == cam

        found = self.lookup.collect(str(topics.recordings.get_topic_name()), cam,
                                    published_ms - int(self.s.clip_lookback_s * 1000), mine)
        segs: list[SegmentRecorded] = [e for e in found if isinstance(e, SegmentRecorded)]
        final = any(s.end_at >= end or s.start_at > end for s in segs)
        waited = time.time() - first_seen_s
        if not final:
            if not segs and waited >= self.s.clip_no_recording_s:
                return self._publishable(ev, start, end, prefix, ClipRecorded.create(
                    producer=PRODUCER, **self._common(ev, start, end), status="no_recording",
                    reason=f"camera {cam} recorded nothing: no segment in the "
                           f"{self.s.clip_lookback_s:g} s before the alert nor since "
                           f"(recording off for this camera, or its edge uploads nothing)",
                    segment_refs=[], skipped=[], gaps=[ClipGap(start_at=start, end_at=end)]))
            if waited < self.s.clip_wait_max_s:
                return None
        window = [s for s in segs if s.end_at >= start - timedelta(seconds=30)
                  and s.start_at <= end]
        data: list[Segment] = []
        skipped: list[ClipSkip] = []
        from vigil.objects import split_ref

        for s in sorted(window, key=lambda s: s.start_at):
            b, k = split_ref(s.object_ref, self.vs.bucket_segments, self.vs.buckets)
            raw = self._get(b, k)
            if raw is None:
                skipped.append(ClipSkip(ref=s.object_ref, reason="object missing"))
                continue
            data.append(Segment(s.object_ref, s.start_at, s.end_at, raw))
        result = build_clip(data, start, end)
        skipped += [ClipSkip(ref=r, reason=why) for r, why in result.skipped]
        gaps = [ClipGap(start_at=a, end_at=b) for a, b in result.gaps]
        clip_ref = None
        if result.mp4 is not None:
            from vigil.objects import put_bytes

            clip_ref = put_bytes(bucket, f"{prefix}/clip.mp4", result.mp4, "video/mp4")
        status = ("no_recording" if result.mp4 is None
                  else "partial" if (result.partial or skipped) else "complete")
        reason = ""
        if status == "no_recording":
            reason = f"no video of camera {cam} between {start.isoformat()} and {end.isoformat()}"
        elif status == "partial":
            reason = "; ".join([f"skipped {s.ref}: {s.reason}" for s in skipped]
                               + [f"gap {g.start_at.isoformat()}..{g.end_at.isoformat()}"
                                  for g in gaps])[:2000]
        event = ClipRecorded.create(
            producer=PRODUCER, **self._common(ev, start, end), status=status, reason=reason,
            clip_ref=clip_ref, clip_start_at=result.start_at, clip_end_at=result.end_at,
            size_bytes=len(result.mp4 or b""), segment_refs=[d.ref for d in data],
            skipped=skipped, gaps=gaps)
        return self._publishable(ev, start, end, prefix, event)

    def _common(self, ev: EvidenceCaptured, start: Any, end: Any) -> dict[str, Any]:
        return {"event_id": derived_event_id("ClipRecorded", ev.rule_event_id),
                "occurred_at": ev.occurred_at, "cause": ev, "camera_id": ev.camera_id,
                "evidence_id": ev.event_id, "rule_event_id": ev.rule_event_id,
                "window_start": start, "window_end": end}

    def _publishable(self, ev: EvidenceCaptured, start: Any, end: Any, prefix: str,
                     event: ClipRecorded) -> ClipRecorded:
        from vigil.objects import put_bytes

        put_bytes(self.vs.bucket_snapshots, f"{prefix}/clip.avro", self._codec.encode(event),
                  "application/vnd.apache.avro")
        return event


_clipper: Clipper | None = None


def _get_clipper() -> Clipper:
    global _clipper
    if _clipper is None:
        _clipper = Clipper()
    return _clipper


def _headers(event: Any) -> dict[str, bytes]:
    raw = event.message.headers or {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {str(k): bytes(v) for k, v in items if v is not None}


async def handle(ev: EvidenceCaptured, event: Any, first_seen_s: float, attempt: int) -> None:
    s = get_evidence_settings()
    # when the evidence was first published (a retry carries it in a header)
    ts = event.message.timestamp
    published_ms = int(ts * 1000) if ts else int(time.time() * 1000)
    carried = _headers(event).get(PUBLISHED_MS)
    if carried:
        published_ms = int(carried)
    clipper = await asyncio.to_thread(_get_clipper)
    clip = await asyncio.to_thread(clipper.attempt, ev, published_ms, first_seen_s)
    key = ev.camera_id.encode()
    if clip is None:
        delay = min(s.clip_retry_s * (2 ** attempt), 300.0)
        fut = await topics.clip_retry.send(key=key, value=ev, force=True, headers={
            NOT_BEFORE: str(time.time() + delay).encode(),
            FIRST_SEEN: str(first_seen_s).encode(),
            ATTEMPT: str(attempt + 1).encode(),
            PUBLISHED_MS: str(published_ms).encode()})
        await fut
        return
    fut = await topics.evidence.send(key=key, value=clip, force=True)
    await fut
    log.info("clips: %s of %s is %s (%d bytes) %.1f s after the evidence", clip.event_id,
             ev.rule_event_id, clip.status, clip.size_bytes,
             time.time() - published_ms / 1000)


async def _guarded(value: Any, event: Any, first_seen_s: float, attempt: int) -> None:
    try:
        if isinstance(value, Undecodable):
            await dead_letter(value, value.reason, STAGE, event)
        elif isinstance(value, EvidenceCaptured):
            await handle(value, event, first_seen_s, attempt)
    except Exception as exc:
        log.exception("clips: building a clip failed")
        try:
            await dead_letter(value, f"{type(exc).__name__}: {exc}", STAGE, event)
        except Exception:
            log.exception("clips: dead-lettering failed")


@app.agent(topics.evidence, concurrency=1)
async def clip_evidence(stream: faust.StreamT) -> None:
    """Each new evidence gets its clip (or a place on the retry topic)."""
    async for event in stream.events():
        await _guarded(event.value, event, time.time(), 0)


@app.agent(topics.clip_retry, concurrency=1)
async def retry_clips(stream: faust.StreamT) -> None:
    """Evidence whose segments had not all arrived, looked at again when due. A message
    not yet due is held at most HOLD_S and then put back at the end of the topic, so no
    message is held for long and nothing due waits behind a far-off one for more than
    that."""
    async for event in stream.events():
        h = _headers(event)
        try:
            not_before = float(h.get(NOT_BEFORE, b"0"))
            first_seen = float(h.get(FIRST_SEEN, b"0")) or time.time()
            attempt = int(h.get(ATTEMPT, b"1"))
        except ValueError as exc:
            await dead_letter(event.value, f"bad retry headers: {exc}", STAGE, event)
            continue
        wait = max(0.0, not_before - time.time())
        if wait > HOLD_S:
            # not due yet: hold it briefly, then put it back at the end of the topic (a
            # message held for minutes would hold up commits and rebalances)
            await asyncio.sleep(HOLD_S)
            try:
                fut = await topics.clip_retry.send(key=event.key, value=event.value,
                                                   force=True, headers=h)
                await fut
            except Exception as exc:
                log.exception("clips: re-queueing a retry failed")
                await dead_letter(event.value, f"re-queue failed: {exc}", STAGE, event)
            continue
        if wait:
            await asyncio.sleep(wait)
        await _guarded(event.value, event, first_seen, attempt)


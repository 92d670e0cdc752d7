"""The inference agent: vigil.frames -> Triton (detector, then embedder) -> vigil.detections.

Per frame: the detector on the frame (``VIGIL_INFERENCE_DETECTOR_MODEL``: the HOG
``person_detector`` or the ONNX ``object_detector``, docs/models.md), then one batched
embedder call for that frame's person crops (vehicles are not embedded); the results fan
in to one `FrameAnalyzed` (keyed by camera) and one `AppearanceEmbedded` per person on the
short-retention embeddings topic.

Ordering with several requests in flight. The agent runs with ``concurrency=1`` and takes
frames in micro-batches (``stream.take_events``). Inside a batch, detector requests (a few
frames per request) and embedder requests (one per frame) run concurrently, bounded by
the client's semaphore; Triton's dynamic batcher merges them further. Results are then
*sent in the order the frames arrived*, so per-partition (and per-camera) order holds.
Faust acks a take-batch only when the agent asks for the next one, i.e. after every
frame of the batch was published or dead-lettered: a crash re-delivers the whole batch
(at-least-once; every output id is derived from the frame id, so duplicates are
idempotent downstream).

Triton down. A transport failure never skips a frame: the batch is retried with
exponential back-off; once the circuit breaker opens the agent publishes
`InferenceDegraded` (once), keeps probing Triton's readiness, and when it answers
publishes `InferenceRecovered` and re-runs the same batch; the backlog then drains from
Kafka. Meanwhile no frame is acked, so a restart resumes at the same place.

Poison frames (undecodable JPEG, wrong size, missing object, or rejected by the model
after `poison_retries` attempts) go to vigil.dlq with the reason and the stream goes on.
An object store that is down is not the frame's fault: like Triton down, the batch waits
(back-off, `InferenceDegraded`/`InferenceRecovered`) instead of dead-lettering frames.
Every path catches its exceptions: an exception escaping a Faust agent skips the event.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import cv2
import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from agents.codec import Undecodable
from agents.inference_settings import InferenceSettings, get_inference_settings
from agents.triton_client import (
    FrameDetections,
    InferenceRejected,
    TritonInference,
    TritonUnavailable,
)
from schemas.events import (
    AppearanceEmbedded,
    Detection,
    Event,
    FrameAnalyzed,
    FrameCaptured,
    InferenceDegraded,
    InferenceRecovered,
    derived_event_id,
    utcnow,
)
from vigil.objects import make_client, split_ref
from vigil.retry import Backoff, delay_after

log = logging.getLogger(__name__)

PRODUCER = "vigil-inference/1"
#: Class ids of the detectors' `classes` output: COCO ids, which both the HOG
#: person_detector (0 only) and the ONNX object_detector emit (docs/models.md). Any other
#: id a custom model emits is published as its number.
LABELS = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
#: Only people are embedded: the appearance embedder is a person re-identification model
#: (a crop of a car would give a meaningless vector, and personal-data events for it).
EMBED_CLASSES = (0,)

FRAMES = Counter("vigil_inference_frames_total", "Frames handled, by outcome", ["outcome"])
FRAME_LATENCY = Histogram(
    "vigil_inference_frame_seconds",
    "Inference time per frame (detector + embedder, as seen by the agent)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FRAME_AGE = Histogram(
    "vigil_inference_frame_age_seconds",
    "Frame capture -> FrameAnalyzed published (includes Kafka and queueing)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
BATCH_FRAMES = Histogram(
    "vigil_inference_batch_frames", "Frames per take-batch", buckets=(1, 2, 4, 8, 16, 32, 64)
)
FETCH_FAILURES = Counter(
    "vigil_inference_object_fetch_failures_total",
    "Object-store fetches that failed for a store reason (retried, not dead-lettered)",
)
DEGRADED = Gauge("vigil_inference_degraded", "1 while Triton is unreachable and frames wait")


class PoisonFrame(Exception):
    """This frame can never be analysed (bad bytes, wrong size, missing object)."""


class ObjectMissing(PoisonFrame):
    """The store answered: the frame's object does not exist (retried a few times)."""


class Sink(Protocol):
    """Where the pipeline's output goes (Kafka topics in the worker; lists in unit tests)."""

    async def analyzed(self, event: FrameAnalyzed) -> None: ...
    async def embedded(self, event: AppearanceEmbedded) -> None: ...
    async def health(self, event: Event, key: str) -> None: ...
    async def dead(self, item: Any, reason: str, source: Any) -> None: ...


@dataclass
class Item:
    """One taken stream event and what we learnt about it so far."""

    value: Any
    source: Any = None  # the Faust event (for DLQ headers); None in unit tests
    frame: FrameCaptured | None = None
    jpeg: bytes | None = None
    image: np.ndarray | None = None
    poison: str | None = None
    skipped: bool = False
    detections: FrameDetections | None = None
    embeddings: np.ndarray | None = None
    #: detection index -> row of `embeddings` (people only, see EMBED_CLASSES)
    embedded_rows: dict[int, int] = field(default_factory=dict)
    inference_ms: float = 0.0
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- pure helpers


def decode_frame(frame: FrameCaptured, jpeg: bytes,
                 max_pixels: int = 16_777_216) -> np.ndarray:
    """Decode and validate a frame's JPEG; PoisonFrame if it is not the promised image.

    The declared size is checked before decoding, so an oversized frame costs nothing."""
    if frame.width * frame.height > max_pixels:
        raise PoisonFrame(f"frame is {frame.width}x{frame.height}, above the "
                          f"{max_pixels}-pixel limit (VIGIL_INFERENCE_MAX_FRAME_PIXELS)")
    if not jpeg:
        raise PoisonFrame("empty image payload")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PoisonFrame("undecodable JPEG")
    h, w = image.shape[:2]
    if (w, h) != (frame.width, frame.height):
        raise PoisonFrame(f"image is {w}x{h}, event says {frame.width}x{frame.height}")
    return image


def crop_people(
    image: np.ndarray, boxes: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Crops [N, height, width, 3] of the normalised boxes, resized for the embedder."""
    ih, iw = image.shape[:2]
    crops = np.zeros((len(boxes), height, width, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        a, b = int(np.clip(x1 * iw, 0, iw - 1)), int(np.clip(y1 * ih, 0, ih - 1))
        c, d = int(np.clip(np.ceil(x2 * iw), a + 1, iw)), int(np.clip(np.ceil(y2 * ih), b + 1, ih))
        crops[i] = cv2.resize(image[b:d, a:c], (width, height), interpolation=cv2.INTER_AREA)
    return crops


def build_events(
    item: Item, s: InferenceSettings, detector_version: str, embedder_version: str
) -> tuple[FrameAnalyzed, list[AppearanceEmbedded]]:
    """The frame's FrameAnalyzed and AppearanceEmbedded events; ids derive from the frame
    id, so re-processing a frame (at-least-once) yields identical events."""
    frame = item.frame
    assert frame is not None
    dets: list[Detection] = []
    embedded: list[AppearanceEmbedded] = []
    embedder_model = s.embedder_model if item.embeddings is not None else None
    if item.detections is not None:
        for i, (box, score, cls) in enumerate(
            zip(item.detections.boxes, item.detections.scores, item.detections.classes,
                strict=True)
        ):
            det_id = derived_event_id(frame.event_id, "detection", i)
            row = item.embedded_rows.get(i)
            has_emb = item.embeddings is not None and row is not None
            dets.append(
                Detection(
                    detection_id=det_id,
                    label=LABELS.get(int(cls), str(int(cls))),
                    score=round(float(score), 4),
                    x1=float(box[0]), y1=float(box[1]), x2=float(box[2]), y2=float(box[3]),
                    has_embedding=has_emb,
                )
            )
            if has_emb and s.embeddings:
                assert item.embeddings is not None and row is not None
                embedded.append(
                    AppearanceEmbedded.create(
                        producer=PRODUCER,
                        event_id=derived_event_id(det_id, "embedding"),
                        occurred_at=frame.occurred_at,
                        cause=frame,
                        camera_id=frame.camera_id,
                        detection_id=det_id,
                        frame_sequence=frame.sequence,
                        model=f"{s.embedder_model}:{embedder_version}",
                        vector=[float(v) for v in item.embeddings[row]],
                    )
                )
    analyzed = FrameAnalyzed.create(
        producer=PRODUCER,
        event_id=derived_event_id(frame.event_id, "FrameAnalyzed"),
        occurred_at=frame.occurred_at,
        cause=frame,
        edge_id=frame.edge_id,
        camera_id=frame.camera_id,
        frame_sequence=frame.sequence,
        width=frame.width,
        height=frame.height,
        skipped=item.skipped,
        detections=dets,
        detector_model=s.detector_model,
        detector_version=detector_version,
        embedder_model=embedder_model,
        embedder_version=embedder_version if embedder_model else None,
        inference_ms=round(item.inference_ms, 3),
        frame_ref=frame.object_ref,
    )
    return analyzed, embedded


# --------------------------------------------------------------------------- pipeline


class InferencePipeline:
    """Processes one take-batch of frames: validate, infer (retrying while Triton is down),
    publish in arrival order. Independent of Faust so unit tests drive it with fakes."""

    def __init__(
        self,
        client: TritonInference,
        sink: Sink,
        settings: InferenceSettings,
        worker_id: str,
        fetch: Callable[[str], Awaitable[bytes]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.sink = sink
        self.s = settings
        self.worker_id = worker_id
        self.fetch = fetch
        self.sleep = sleep
        self.degraded_since: datetime | None = None

    async def handle(self, items: Sequence[Item]) -> None:
        BATCH_FRAMES.observe(len(items))
        for item in items:
            await self._prepare(item)
        todo = [i for i in items if i.poison is None and not i.skipped]
        await self._infer_until_done(todo)
        for item in items:  # arrival order: per-partition order is preserved
            try:
                if item.poison is not None:
                    FRAMES.labels("dead_lettered").inc()
                    await self.sink.dead(item.value, item.poison, item.source)
                    continue
                analyzed, embedded = build_events(
                    item, self.s, self.client.detector_version, self.client.embedder_version
                )
                for e in embedded:
                    await self.sink.embedded(e)
                await self.sink.analyzed(analyzed)
                FRAMES.labels("skipped" if item.skipped else "analyzed").inc()
                FRAME_LATENCY.observe(item.inference_ms / 1000)
                FRAME_AGE.observe(max(0.0, (utcnow() - analyzed.occurred_at).total_seconds()))
            except Exception as exc:  # never let one frame kill the batch
                log.exception("publishing inference result failed")
                await self._dead_safely(item, f"publish failed: {type(exc).__name__}: {exc}")

    async def _dead_safely(self, item: Item, reason: str) -> None:
        try:
            await self.sink.dead(item.value, reason, item.source)
        except Exception:
            log.exception("dead-lettering failed")

    async def _prepare(self, item: Item) -> None:
        value = item.value
        try:
            if isinstance(value, Undecodable):
                item.poison = f"undecodable event: {value.reason}"
                return
            if not isinstance(value, FrameCaptured):
                item.poison = f"unexpected event type {type(value).__name__} on frames topic"
                return
            item.frame = value
            if self.s.skip_still and value.motion_score < self.s.still_threshold:
                item.skipped = True
                return
            item.jpeg = value.jpeg if value.jpeg is not None else await self._fetch(value)
            item.image = decode_frame(value, item.jpeg, self.s.max_frame_pixels)
        except PoisonFrame as exc:
            item.poison = str(exc)
        except Exception as exc:
            item.poison = f"{type(exc).__name__}: {exc}"

    async def _fetch(self, frame: FrameCaptured) -> bytes:
        """The frame's bytes from the object store.

        Two kinds of failure, two reactions. The object is *missing* (`ObjectMissing`):
        a few short retries (an upload may still be landing), then the frame is poison.
        The *store* fails (connection refused, timeout, 5xx, denied): nothing is wrong
        with the frame, so like a Triton outage the batch waits here with back-off, without
        limit, and the agent reports itself degraded; no frame is acked meanwhile.
        """
        if not frame.object_ref:
            raise PoisonFrame("frame has neither jpeg nor object_ref")
        if self.fetch is None:
            raise PoisonFrame("object_ref given but no object store configured")
        missing = 0
        failures = 0
        backoff = Backoff(self.s.backoff_initial_s, self.s.backoff_max_s)
        while True:
            try:
                data = await self.fetch(frame.object_ref)
            except ObjectMissing as exc:
                missing += 1
                if missing >= self.s.object_missing_attempts:
                    raise ObjectMissing(f"{exc} (after {missing} attempts)") from exc
                await self.sleep(delay_after(missing, 0.2, math.inf))
                continue
            except PoisonFrame:
                raise
            except Exception as exc:  # the store, not the frame: wait and retry
                failures += 1
                FETCH_FAILURES.inc()
                reason = f"object store unavailable: {type(exc).__name__}: {exc}"
                if failures >= self.s.breaker_failures and self.degraded_since is None:
                    await self._degraded(reason)
                delay = backoff.failed()
                log.warning("fetching %s failed (%d), retrying in %.1fs: %s",
                            frame.object_ref, failures, delay, reason)
                await self.sleep(delay)
                continue
            if self.degraded_since is not None and not self.client.breaker.is_open:
                await self._recovered()
            return data

    async def _infer_until_done(self, items: list[Item]) -> None:
        """Infer every item; transport failures block here (never skip), rejections are
        retried per frame and then marked poison."""
        backoff = Backoff(self.s.backoff_initial_s, self.s.backoff_max_s)
        pending = items
        while pending:
            try:
                await self._infer(pending)
                pending = []
            except TritonUnavailable as exc:
                if self.client.breaker.is_open and self.degraded_since is None:
                    await self._degraded(str(exc))
                delay = backoff.failed()
                log.warning("triton unavailable, retrying in %.1fs: %s", delay, exc)
                await self.sleep(delay)
                if self.client.breaker.is_open:
                    await self.client.ready()  # half-open probe; closes breaker on success
                continue
            except InferenceRejected as exc:
                pending = await self._isolate(pending, exc)
            except Exception as exc:  # programming error: don't spin, poison the batch
                log.exception("inference failed unexpectedly")
                for it in pending:
                    it.poison = f"inference error: {type(exc).__name__}: {exc}"
                pending = []
        if self.degraded_since is not None and not self.client.breaker.is_open:
            await self._recovered()

    async def _isolate(self, items: list[Item], exc: Exception) -> list[Item]:
        """A batch was rejected: run the frames one by one to find the poison ones."""
        if len(items) == 1:
            it = items[0]
            it.attempts += 1
            if it.attempts < self.s.poison_retries:
                return items
            if not await self.client.ready():
                # A crashed model stub also answers with errors: that is Triton's fault,
                # not the frame's, so wait like for any outage instead of dead-lettering.
                it.attempts = 0
                await self.sleep(self.s.backoff_initial_s)
                return items
            it.poison = f"rejected by Triton after {it.attempts} attempts: {exc}"
            return []
        for it in items:
            await self._infer_until_done([it])
        return []

    async def _infer(self, items: list[Item]) -> None:
        started = time.perf_counter()
        dets = await self.client.detect([it.jpeg or b"" for it in items])
        detect_ms = (time.perf_counter() - started) * 1000

        async def embed_one(it: Item, d: FrameDetections) -> None:
            t0 = time.perf_counter()
            keep = d.scores >= self.s.min_score
            d = FrameDetections(d.boxes[keep], d.scores[keep], d.classes[keep])
            it.detections = d
            it.embeddings = None
            people = np.flatnonzero(np.isin(d.classes, EMBED_CLASSES))
            it.embedded_rows = {int(i): row for row, i in enumerate(people)}
            if len(people) and it.image is not None:
                crops = crop_people(it.image, d.boxes[people], self.s.crop_width,
                                    self.s.crop_height)
                it.embeddings = await self.client.embed(crops)
            it.inference_ms = detect_ms + (time.perf_counter() - t0) * 1000

        await asyncio.gather(*(embed_one(it, d) for it, d in zip(items, dets, strict=True)))

    async def _degraded(self, reason: str) -> None:
        self.degraded_since = utcnow()
        DEGRADED.set(1)
        event = InferenceDegraded.create(
            producer=PRODUCER, worker_id=self.worker_id, reason=reason[:500]
        )
        log.error("inference degraded: %s", reason)
        try:
            await self.sink.health(event, self.worker_id)
        except Exception:
            log.exception("could not publish InferenceDegraded")

    async def _recovered(self) -> None:
        event = InferenceRecovered.create(
            producer=PRODUCER, worker_id=self.worker_id, degraded_since=self.degraded_since
        )
        self.degraded_since = None
        DEGRADED.set(0)
        log.warning("inference recovered")
        try:
            await self.sink.health(event, self.worker_id)
        except Exception:
            log.exception("could not publish InferenceRecovered")


# --------------------------------------------------------------------------- Faust wiring


def parse_object_ref(ref: str, buckets: Sequence[str], default_bucket: str) -> tuple[str, str]:
    """(bucket, key) of "s3://bucket/key", "bucket/key" or a bare key in the frames bucket
    (vigil.objects.split_ref); a ref without bucket or key is the frame's fault."""
    bucket, key = split_ref(ref, default_bucket, tuple(buckets))
    if not bucket or not key:
        raise PoisonFrame(f"malformed object_ref {ref!r}")
    return bucket, key


def object_fetcher(timeout_s: float) -> Callable[[str], Awaitable[bytes]]:
    """An async fetch of `object_ref`s from the configured S3 store.

    The HTTP client gets short timeouts and no retries of its own: minio's defaults
    (5-minute timeouts, hidden retries) would stall a batch invisibly, while the pipeline
    retries with back-off and reports the outage. NoSuchKey / NoSuchBucket become
    `ObjectMissing` (the frame's problem); everything else propagates as a store failure.
    """
    import urllib3

    from vigil.objects import get_bytes
    from vigil.settings import get_settings

    st = get_settings()
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=urllib3.Retry(total=0),
        maxsize=4,
    )
    client = make_client(http, st)

    def get(ref: str) -> bytes:
        bucket, key = parse_object_ref(ref, st.buckets, st.bucket_frames)
        data = get_bytes(bucket, key, client)
        if data is None:
            raise ObjectMissing(f"object {bucket}/{key} not found")
        return data

    async def fetch(ref: str) -> bytes:
        return await asyncio.to_thread(get, ref)

    return fetch


def _register() -> None:
    from agents.app import app, topics
    from agents.dlq import dead_letter
    from agents.settings import get_worker_settings
    from vigil.settings import get_settings

    s = get_inference_settings()

    class KafkaSink:
        async def analyzed(self, event: FrameAnalyzed) -> None:
            await topics.detections.send(key=event.camera_id.encode(), value=event)

        async def embedded(self, event: AppearanceEmbedded) -> None:
            await topics.embeddings.send(key=event.camera_id.encode(), value=event)

        async def health(self, event: Event, key: str) -> None:
            await topics.health.send(key=key.encode(), value=event)

        async def dead(self, item: Any, reason: str, source: Any) -> None:
            await dead_letter(item, reason, stage="inference", event=source)

    @app.agent(topics.frames, concurrency=1, name="inference")
    async def inference(stream: Any) -> None:
        """Frames in micro-batches -> FrameAnalyzed / AppearanceEmbedded, in order."""
        client = TritonInference(get_settings().triton_url, s)
        pipeline = InferencePipeline(
            client, KafkaSink(), s, get_worker_settings().id,
            fetch=object_fetcher(s.object_timeout_s),
        )
        try:
            async for events in stream.take_events(s.batch_size, within=s.batch_timeout_s):
                items = [Item(value=e.value, source=e) for e in events]
                try:
                    await pipeline.handle(items)
                except Exception as exc:  # last line of defence: never skip silently
                    log.exception("inference batch failed")
                    for it in items:
                        await pipeline._dead_safely(it, f"batch failed: {exc}")
        finally:
            await client.close()


_register()

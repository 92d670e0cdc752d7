"""The inference pipeline with a fake Triton: ordering, ids, fan-in, poison, degradation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
import pytest

from agents.codec import Undecodable
from agents.inference import InferencePipeline, Item, crop_people
from agents.inference_settings import InferenceSettings
from agents.triton_client import (
    CircuitBreaker,
    FrameDetections,
    InferenceRejected,
    TritonUnavailable,
)
from schemas.events import (
    AppearanceEmbedded,
    FrameAnalyzed,
    FrameCaptured,
    InferenceDegraded,
    InferenceRecovered,
    derived_event_id,
)

W, H = 320, 240


def jpeg(w: int = W, h: int = H, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def frame(seq: int, camera: str = "cam-1", data: bytes | None = None, motion: float = 1.0,
          ) -> FrameCaptured:
    return FrameCaptured.create(
        producer="test", occurred_at=datetime(2026, 3, 2, 10, 0, seq % 60, tzinfo=UTC),
        correlation_id=f"corr-{seq}", edge_id="edge-1", camera_id=camera, sequence=seq,
        width=W, height=H, motion_score=motion, jpeg=data if data is not None else jpeg(seed=seq),
    )


class FakeTriton:
    """Duck-typed TritonInference: one box per frame; scripted transport failures."""

    def __init__(self, down_calls: int = 0, reject: set[bytes] | None = None,
                 classes: tuple[int, int] = (0, 0)) -> None:
        self.breaker = CircuitBreaker(2)
        self.classes = np.array(classes, np.int32)
        self.crops = 0
        self.down_calls = down_calls
        self.reject = reject or set()
        self.detector_version = "1"
        self.embedder_version = "1"
        self.detect_calls = 0
        self.ready_calls = 0

    async def detect(self, jpegs: list[bytes]) -> list[FrameDetections]:
        self.detect_calls += 1
        if self.breaker.is_open:
            raise TritonUnavailable("circuit breaker open")
        if self.down_calls > 0:
            self.down_calls -= 1
            self.breaker.record_failure()
            raise TritonUnavailable("UNAVAILABLE: connection refused")
        if any(j in self.reject for j in jpegs):
            raise InferenceRejected("INTERNAL: person_detector: bad input")
        self.breaker.record_success()
        await asyncio.sleep(0)
        box = np.array([[0.1, 0.1, 0.4, 0.9], [0.5, 0.2, 0.7, 0.8]], np.float32)
        return [FrameDetections(box, np.array([0.9, 0.1], np.float32),
                                self.classes.copy()) for _ in jpegs]

    async def embed(self, crops: np.ndarray) -> np.ndarray:
        assert crops.shape[1:] == (128, 64, 3)
        self.crops += len(crops)
        v = np.zeros((len(crops), 192), np.float32)
        v[:, 0] = 1.0
        return v

    async def ready(self) -> bool:
        self.ready_calls += 1
        if self.down_calls == 0:
            self.breaker.record_success()
            return True
        self.down_calls -= 1
        return False


class ListSink:
    def __init__(self) -> None:
        self.out: list[Any] = []
        self.dlq: list[tuple[Any, str]] = []

    async def analyzed(self, event: FrameAnalyzed) -> None:
        self.out.append(event)

    async def embedded(self, event: AppearanceEmbedded) -> None:
        self.out.append(event)

    async def health(self, event: Any, key: str) -> None:
        self.out.append(event)

    async def dead(self, item: Any, reason: str, source: Any) -> None:
        self.dlq.append((item, reason))


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def run(items: list[Any], client: FakeTriton, **settings: Any) -> ListSink:
    sink = ListSink()
    s = InferenceSettings(**settings)
    pipe = InferencePipeline(client, sink, s, "worker-1", sleep=_no_sleep)  # type: ignore[arg-type]
    asyncio.run(pipe.handle([Item(value=v) for v in items]))
    return sink


def analyzed(sink: ListSink) -> list[FrameAnalyzed]:
    return [e for e in sink.out if isinstance(e, FrameAnalyzed)]


def test_fan_in_ids_and_order() -> None:
    frames = [frame(i, camera=f"cam-{i % 2}") for i in range(5)]
    sink = run(frames, FakeTriton())
    out = analyzed(sink)
    assert [a.frame_sequence for a in out] == [0, 1, 2, 3, 4]
    for f, a in zip(frames, out, strict=True):
        assert a.causation_id == f.event_id
        assert a.correlation_id == f.correlation_id
        assert a.occurred_at == f.occurred_at
        assert a.event_id == derived_event_id(f.event_id, "FrameAnalyzed")
        assert len(a.detections) == 1  # the 0.1-score box is below min_score
        det = a.detections[0]
        assert det.label == "person" and det.has_embedding
        assert det.detection_id == derived_event_id(f.event_id, "detection", 0)
        assert (a.detector_model, a.embedder_model) == ("person_detector", "appearance_embedder")
    embs = [e for e in sink.out if isinstance(e, AppearanceEmbedded)]
    assert [e.detection_id for e in embs] == [a.detections[0].detection_id for a in out]
    # each frame's embedding is published before its FrameAnalyzed
    assert isinstance(sink.out[0], AppearanceEmbedded) and isinstance(sink.out[1], FrameAnalyzed)


def test_vehicles_are_labelled_by_class_and_only_people_embedded() -> None:
    client = FakeTriton(classes=(2, 0))
    sink = run([frame(1)], client, min_score=0.05)
    [a] = analyzed(sink)
    assert [(d.label, d.has_embedding) for d in a.detections] == [("car", False),
                                                                 ("person", True)]
    [emb] = [e for e in sink.out if isinstance(e, AppearanceEmbedded)]
    assert emb.detection_id == a.detections[1].detection_id and client.crops == 1
    # a frame with no person: no embedder call at all, no embedder recorded
    client = FakeTriton(classes=(7, 5))
    [a] = analyzed(run([frame(2)], client, min_score=0.05))
    assert [d.label for d in a.detections] == ["truck", "bus"] and client.crops == 0
    assert a.embedder_model is None
    # an id outside the table (a custom model's) is published as its number
    [a] = analyzed(run([frame(3)], FakeTriton(classes=(42, 0)), min_score=0.05))
    assert a.detections[0].label == "42"


def test_replay_gives_identical_events() -> None:
    frames = [frame(i) for i in range(3)]
    a, b = analyzed(run(frames, FakeTriton())), analyzed(run(frames, FakeTriton()))
    assert [x.evolve(inference_ms=0.0) for x in a] == [x.evolve(inference_ms=0.0) for x in b]


def test_poison_frames_go_to_dlq_and_the_rest_continue() -> None:
    bad_bytes = frame(1, data=b"\xff\xd8garbage")
    wrong_size = frame(2, data=jpeg(w=100, h=100))
    undecodable = Undecodable(raw=b"\x00\x01", reason="bad magic")
    sink = run([frame(0), bad_bytes, wrong_size, undecodable, frame(4)], FakeTriton())
    assert [a.frame_sequence for a in analyzed(sink)] == [0, 4]
    reasons = [r for _, r in sink.dlq]
    assert "undecodable JPEG" in reasons[0]
    assert "100x100" in reasons[1]
    assert "bad magic" in reasons[2]


def test_frame_declaring_too_many_pixels_is_poison_before_decoding() -> None:
    """The limit is checked on the declared size, so a forged header costs no decode."""
    sink = run([frame(0), frame(1)], FakeTriton(), max_frame_pixels=W * H - 1)
    assert analyzed(sink) == []
    assert len(sink.dlq) == 2
    assert all(f"{W}x{H}" in r and "VIGIL_INFERENCE_MAX_FRAME_PIXELS" in r for _, r in sink.dlq)
    ok = run([frame(0)], FakeTriton(), max_frame_pixels=W * H)
    assert [a.frame_sequence for a in analyzed(ok)] == [0]


def test_rejected_frame_is_isolated_and_dead_lettered_after_retries() -> None:
    bad = frame(1)
    assert bad.jpeg is not None
    client = FakeTriton(reject={bad.jpeg})
    sink = run([frame(0), bad, frame(2)], client, poison_retries=2)
    assert [a.frame_sequence for a in analyzed(sink)] == [0, 2]
    assert len(sink.dlq) == 1 and "after 2 attempts" in sink.dlq[0][1]


def test_triton_down_blocks_then_recovers_without_losing_frames() -> None:
    client = FakeTriton(down_calls=5)
    sink = run([frame(i) for i in range(3)], client, breaker_failures=2)
    health = [e for e in sink.out if isinstance(e, (InferenceDegraded, InferenceRecovered))]
    assert [type(e).__name__ for e in health] == ["InferenceDegraded", "InferenceRecovered"]
    assert health[1].degraded_since is not None
    assert [a.frame_sequence for a in analyzed(sink)] == [0, 1, 2]
    assert not sink.dlq
    # degraded is published before any result: results come only after recovery
    assert isinstance(sink.out[0], InferenceDegraded)
    assert client.ready_calls >= 1


def test_still_frames_skip_the_detector() -> None:
    client = FakeTriton()
    sink = run([frame(0, motion=0.0), frame(1, motion=0.5)], client,
               skip_still=True, still_threshold=0.01)
    out = analyzed(sink)
    assert [(a.frame_sequence, a.skipped, len(a.detections)) for a in out] == [
        (0, True, 0), (1, False, 1)]
    assert out[0].embedder_model is None


def test_crop_people_clamps_boxes() -> None:
    img = np.zeros((H, W, 3), np.uint8)
    boxes = np.array([[-0.2, -0.1, 0.3, 1.2], [0.99, 0.99, 1.0, 1.0]], np.float32)
    crops = crop_people(img, boxes, 64, 128)
    assert crops.shape == (2, 128, 64, 3)


def test_detector_chunks_are_balanced_across_instances() -> None:
    from agents.triton_client import split_even

    items = [bytes([i]) for i in range(9)]
    sizes = {n: [len(c) for c in split_even(items[:n], 4, 2)] for n in (0, 1, 2, 5, 8, 9)}
    assert sizes == {0: [], 1: [1], 2: [1, 1], 5: [3, 2], 8: [4, 4], 9: [3, 3, 3]}
    assert [b for c in split_even(items, 4, 2) for b in c] == items  # order kept


def test_circuit_breaker_opens_after_threshold_and_closes_on_success() -> None:
    b = CircuitBreaker(3)
    assert not b.record_failure() and not b.record_failure()
    assert b.record_failure() and b.is_open
    assert not b.record_failure()  # already open: reported once
    b.record_success()
    assert not b.is_open and b.failures == 0


def test_settings_fail_fast() -> None:
    from agents.inference_settings import load_inference_settings
    from vigil.errors import ConfigError

    with pytest.raises(ConfigError, match="VIGIL_INFERENCE_BATCHSIZE"):
        load_inference_settings({"VIGIL_INFERENCE_BATCHSIZE": "3"})
    with pytest.raises(ConfigError, match="VIGIL_INFERENCE_BATCH_SIZE"):
        load_inference_settings({"VIGIL_INFERENCE_BATCH_SIZE": "0"})
    s = load_inference_settings({"VIGIL_INFERENCE_SKIP_STILL": "true", "PATH": "/bin"})
    assert s.skip_still and s.batch_size == 8


def test_object_ref_frames_are_fetched_and_missing_objects_dead_lettered() -> None:
    from agents.inference import PoisonFrame

    stored = {"frames/cam-1/0.jpg": jpeg(seed=7)}

    async def fetch(ref: str) -> bytes:
        if ref not in stored:
            raise PoisonFrame(f"object {ref} not found")
        return stored[ref]

    ok = frame(0).evolve(jpeg=None, object_ref="frames/cam-1/0.jpg")
    missing = frame(1).evolve(jpeg=None, object_ref="frames/cam-1/1.jpg")
    sink = ListSink()
    pipe = InferencePipeline(FakeTriton(), sink, InferenceSettings(), "w",  # type: ignore[arg-type]
                             fetch=fetch, sleep=_no_sleep)
    asyncio.run(pipe.handle([Item(value=ok), Item(value=missing)]))
    out = analyzed(sink)
    assert [(a.frame_sequence, a.frame_ref) for a in out] == [(0, "frames/cam-1/0.jpg")]
    assert "not found" in sink.dlq[0][1]


def test_missing_objects_are_retried_a_few_times_then_dead_lettered() -> None:
    from agents.inference import ObjectMissing

    calls: list[str] = []

    async def fetch(ref: str) -> bytes:
        calls.append(ref)
        raise ObjectMissing(f"object {ref} not found")

    missing = frame(1).evolve(jpeg=None, object_ref="s3://frames/cam-1/1.jpg")
    sink = ListSink()
    pipe = InferencePipeline(FakeTriton(), sink, InferenceSettings(object_missing_attempts=3),
                             "w", fetch=fetch, sleep=_no_sleep)  # type: ignore[arg-type]
    asyncio.run(pipe.handle([Item(value=missing), Item(value=frame(2))]))
    assert len(calls) == 3
    assert "not found (after 3 attempts)" in sink.dlq[0][1]
    assert [a.frame_sequence for a in analyzed(sink)] == [2]  # the stream goes on
    assert not [e for e in sink.out if isinstance(e, InferenceDegraded)]


def test_object_store_outage_waits_instead_of_dead_lettering() -> None:
    """Store errors are not the frame's fault: retried without limit, degraded, recovered."""
    stored = jpeg(seed=3)
    outage = {"left": 6}
    delays: list[float] = []

    async def fetch(ref: str) -> bytes:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise ConnectionRefusedError("connection refused")
        return stored

    async def sleep(d: float) -> None:
        delays.append(d)

    f = frame(3).evolve(jpeg=None, object_ref="s3://frames/cam-1/3.jpg")
    sink = ListSink()
    s = InferenceSettings(breaker_failures=3, backoff_initial_s=0.5, backoff_max_s=2.0)
    pipe = InferencePipeline(FakeTriton(), sink, s, "w", fetch=fetch,  # type: ignore[arg-type]
                             sleep=sleep)
    asyncio.run(pipe.handle([Item(value=f)]))
    assert not sink.dlq
    assert [a.frame_sequence for a in analyzed(sink)] == [3]
    kinds = [type(e) for e in sink.out if not isinstance(e, (FrameAnalyzed, AppearanceEmbedded))]
    assert kinds == [InferenceDegraded, InferenceRecovered]
    assert "object store unavailable" in sink.out[0].reason
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]  # exponential, capped


def test_object_refs_parse_to_bucket_and_key() -> None:
    from agents.inference import PoisonFrame, parse_object_ref

    buckets = ("frames", "snapshots")
    assert parse_object_ref("s3://frames/cam-1/0.jpg", buckets, "frames") == (
        "frames", "cam-1/0.jpg")
    assert parse_object_ref("snapshots/a.jpg", buckets, "frames") == ("snapshots", "a.jpg")
    assert parse_object_ref("cam-1/0.jpg", buckets, "frames") == ("frames", "cam-1/0.jpg")
    with pytest.raises(PoisonFrame, match="malformed"):
        parse_object_ref("s3://frames", buckets, "frames")


def test_rejections_while_the_model_is_not_ready_are_not_dead_lettered() -> None:
    f = frame(0)
    assert f.jpeg is not None
    client = FakeTriton(reject={f.jpeg})
    probes: list[bool] = []

    async def ready() -> bool:
        probes.append(False)
        client.reject.clear()  # not ready now; serving again by the next attempt
        return False

    client.ready = ready  # type: ignore[method-assign]
    sink = run([f], client, poison_retries=2)
    assert [a.frame_sequence for a in analyzed(sink)] == [0]
    assert not sink.dlq and probes

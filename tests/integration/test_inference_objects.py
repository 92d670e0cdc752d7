"""Frames by object-store reference: the inference agent against the stack's real S3 store.

Large frames travel as ``object_ref`` (vigil.objects uploads them) instead of an
inline JPEG, so the agent's fetch is part of the pipeline and has the same duty as the
Triton call: tell the frame's fault from the infrastructure's.
- an uploaded frame is fetched and analysed; an object deleted before the agent got to it
  is *missing* - bounded retries, then vigil.dlq with the reason, and the stream goes on;
- the store briefly unreachable (a TCP proxy in front of it is cut) is *not* the frame's
  fault: the frames wait, InferenceDegraded / InferenceRecovered are published, nothing
  goes to the DLQ and every frame is analysed in order once the store is back.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from schemas.events import FrameAnalyzed, FrameCaptured, InferenceDegraded, InferenceRecovered
from schemas.producer import EventProducer
from tests.integration.inference_support import Reader, Worker, iou, sim_frames
from tools.devstack.process import free_port
from tools.faults.proxy import TcpProxy
from vigil.objects import client as s3_client
from vigil.objects import store_frame
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


def worker_env(vigil_env: dict[str, str], s3_endpoint: str | None = None) -> dict[str, str]:
    env = {
        **vigil_env,
        "VIGIL_WORKER_AGENTS": "inference",
        "VIGIL_WORKER_WEB_PORT": str(free_port()),
        "VIGIL_WORKER_ID": f"inf-{uuid.uuid4().hex[:6]}",
        "VIGIL_INFERENCE_BACKOFF_MAX_S": "1.0",
        "VIGIL_INFERENCE_OBJECT_TIMEOUT_S": "2.0",
        "VIGIL_INFERENCE_BREAKER_FAILURES": "2",
    }
    if s3_endpoint is not None:
        env["S3_ENDPOINT"] = s3_endpoint
    return env


def by_reference(frames: list[FrameCaptured], prefix: str) -> list[FrameCaptured]:
    """Upload each frame's JPEG with the edge's object code; events carry only the ref."""
    out = []
    for ev in frames:
        assert ev.jpeg is not None
        ref = store_frame(ev.jpeg, f"{prefix}/{ev.camera_id}/{ev.sequence:012d}.jpg")
        out.append(ev.evolve(jpeg=None, object_ref=ref))
    return out


def send(frames: list[FrameCaptured]) -> None:
    # Faust's aiokafka cannot read lz4 batches here (see test_inference_agent).
    producer = EventProducer(**{"compression.type": "none"})
    for ev in frames:
        producer.send("frames", ev.camera_id, ev)
    producer.flush()


def test_referenced_frames_are_fetched_and_a_deleted_one_is_dead_lettered(
    stack: dict[str, str], vigil_env: dict[str, str], topic_prefix: str, tmp_path: Path
) -> None:
    raw = sim_frames(start=10, count=6)
    truth = {ev.sequence: boxes for ev, boxes in raw}
    frames = by_reference([ev for ev, _ in raw], topic_prefix)
    gone = frames[2]
    assert gone.object_ref is not None
    bucket, key = gone.object_ref.removeprefix("s3://").split("/", 1)
    s3_client().remove_object(bucket, key)
    send(frames)

    detections = Reader(stack["KAFKA_BOOTSTRAP"], "detections")
    dlq = Reader(stack["KAFKA_BOOTSTRAP"], "dlq")
    try:
        with Worker(worker_env(vigil_env), tmp_path / "worker.log"):
            detections.until(lambda m: len(m) >= len(frames) - 1, 120, "FrameAnalyzed")
            dlq.until(lambda m: len(m) >= 1, 30, "DLQ message")
        out: list[FrameAnalyzed] = detections.events()
        expected = [ev for ev in frames if ev is not gone]
        assert [a.frame_sequence for a in out] == [ev.sequence for ev in expected]
        matched = total = 0
        for ev, a in zip(expected, out, strict=True):
            assert a.frame_ref == ev.object_ref and a.causation_id == ev.event_id
            total += len(truth[ev.sequence])
            matched += sum(any(iou(t, d) >= 0.5 for d in a.detections)
                           for t in truth[ev.sequence])
        print(f"\nrecall on referenced frames: {matched}/{total}")
        assert total and matched / total >= 0.8  # the fetched bytes were really analysed
        assert len(dlq.messages) == 1
        reason = dict(dlq.messages[0].headers())["vigil.error"].decode()
        assert "not found" in reason and "after 3 attempts" in reason, reason
    finally:
        detections.close()
        dlq.close()


def test_store_outage_delays_frames_but_drops_none(
    stack: dict[str, str], vigil_env: dict[str, str], topic_prefix: str, tmp_path: Path
) -> None:
    frames = by_reference([ev for ev, _ in sim_frames(start=0, count=8)], topic_prefix)
    real = urlparse(get_settings().s3_endpoint)
    proxy = TcpProxy(free_port(), real.port or 80, real.hostname or "127.0.0.1")
    proxy.start()
    detections = Reader(stack["KAFKA_BOOTSTRAP"], "detections")
    health = Reader(stack["KAFKA_BOOTSTRAP"], "health")
    dlq = Reader(stack["KAFKA_BOOTSTRAP"], "dlq")
    env = worker_env(vigil_env, f"http://127.0.0.1:{proxy.listen_port}")
    try:
        with Worker(env, tmp_path / "worker.log"):
            send(frames[:3])
            detections.until(lambda m: len(m) >= 3, 120, "first FrameAnalyzed")
            proxy.cut()  # the store is unreachable: connections reset, new ones refused
            send(frames[3:])
            health.until(lambda m: len(m) >= 1, 60, "InferenceDegraded")
            time.sleep(2.0)  # stay down a while: the frames must wait, not be dropped
            assert len(detections.until(lambda m: True, 1, "")) == 3
            proxy.restore()
            detections.until(lambda m: len(m) >= len(frames), 120, "backlog drained")
            health.until(lambda m: len(m) >= 2, 30, "InferenceRecovered")
            dlq.until(lambda m: True, 2, "")
        out: list[FrameAnalyzed] = detections.events()
        assert [a.frame_sequence for a in out] == [ev.sequence for ev in frames]
        events = health.events()
        assert [type(e) for e in events] == [InferenceDegraded, InferenceRecovered]
        assert "object store unavailable" in events[0].reason
        assert not dlq.messages, "a store outage must not dead-letter frames"
    finally:
        for r in (detections, health, dlq):
            r.close()
        proxy.close()

"""The inference agent in a real Faust worker, against a real broker and tritonserver.

- synthetic frames in -> FrameAnalyzed out, in order, with boxes that match the truth;
  a poison frame and an undecodable message go to the DLQ with a reason and the frames
  after them are still analysed;
- Triton killed mid-stream and restarted -> InferenceDegraded, InferenceRecovered, and
  every frame analysed exactly in order (nothing skipped, backlog drained).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from schemas.events import (
    AppearanceEmbedded,
    FrameAnalyzed,
    InferenceDegraded,
    InferenceRecovered,
)
from schemas.producer import EventProducer
from schemas.topics import topic_name
from tests.integration.inference_support import Reader, Worker, iou, sim_frames
from tests.integration.triton_server import TritonServer
from tools.devstack.process import free_port

pytestmark = pytest.mark.integration

TRITON_PORT = 28011  # our own server: this module kills it


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonServer]:
    server = TritonServer(TRITON_PORT)
    if server.ready():
        pytest.skip(f"port {TRITON_PORT} is taken by a tritonserver this test does not own")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def worker_env(vigil_env: dict[str, str], triton: TritonServer) -> dict[str, str]:
    return {
        **vigil_env,
        "VIGIL_WORKER_AGENTS": "inference",
        "VIGIL_WORKER_WEB_PORT": str(free_port()),
        "VIGIL_WORKER_ID": f"inf-{uuid.uuid4().hex[:6]}",
        "TRITON_URL": triton.url,
        "VIGIL_INFERENCE_BACKOFF_MAX_S": "1.0",
        "VIGIL_INFERENCE_REQUEST_TIMEOUT_S": "5.0",
    }


def test_frames_to_detections_with_poison_in_between(
    stack: dict[str, str], vigil_env: dict[str, str], triton: TritonServer, tmp_path: Path
) -> None:
    frames = sim_frames(start=10, count=8)
    poison = frames[3][0].evolve(event_id=str(uuid.uuid4()), jpeg=b"\xff\xd8\xffnot-a-jpeg",
                                 sequence=9999)
    # vigil.kafka compresses with lz4, which aiokafka (Faust) cannot read without the
    # `lz4` package; plain batches keep this test about inference.
    producer = EventProducer(**{"compression.type": "none"})
    for i, (ev, _) in enumerate(frames):
        if i == 4:
            producer.send("frames", "cam-1", poison)
            producer.send_raw(topic_name("frames"), b"cam-1", b"\x00garbage")
        producer.send("frames", "cam-1", ev)
    producer.flush()

    detections = Reader(stack["KAFKA_BOOTSTRAP"], "detections")
    dlq = Reader(stack["KAFKA_BOOTSTRAP"], "dlq")
    embeddings = Reader(stack["KAFKA_BOOTSTRAP"], "embeddings")
    try:
        with Worker(worker_env(vigil_env, triton), tmp_path / "worker.log"):
            detections.until(lambda m: len(m) >= len(frames), 180, "FrameAnalyzed")
            dlq.until(lambda m: len(m) >= 2, 30, "DLQ messages")
            embeddings.until(lambda m: len(m) >= 1, 30, "AppearanceEmbedded")
        out: list[FrameAnalyzed] = detections.events()
        assert [a.frame_sequence for a in out] == [ev.sequence for ev, _ in frames]
        matched = total = 0
        for (ev, truth), a in zip(frames, out, strict=True):
            assert a.causation_id == ev.event_id and a.occurred_at == ev.occurred_at
            assert a.detector_model == "person_detector" and a.detector_version == "1"
            total += len(truth)
            matched += sum(any(iou(t, d) >= 0.5 for d in a.detections) for t in truth)
        print(f"\nagent recall on {len(frames)} frames: {matched}/{total}")
        assert total and matched / total >= 0.8
        reasons = [dict(m.headers())["vigil.error"].decode() for m in dlq.messages]
        assert any("undecodable JPEG" in r for r in reasons), reasons
        assert any("undecodable event" in r for r in reasons), reasons
        embs: list[AppearanceEmbedded] = embeddings.events()
        ids = {d.detection_id for a in out for d in a.detections if d.has_embedding}
        assert {e.detection_id for e in embs} <= ids
        assert len(embs[0].vector) == 192
        assert abs(np.linalg.norm(embs[0].vector) - 1.0) < 1e-3
    finally:
        for r in (detections, dlq, embeddings):
            r.close()


def test_triton_killed_mid_stream_loses_nothing(
    stack: dict[str, str], vigil_env: dict[str, str], triton: TritonServer, tmp_path: Path
) -> None:
    frames = [ev for ev, _ in sim_frames(start=0, count=12)]
    # vigil.kafka compresses with lz4, which aiokafka (Faust) cannot read without the
    # `lz4` package; plain batches keep this test about inference.
    producer = EventProducer(**{"compression.type": "none"})
    detections = Reader(stack["KAFKA_BOOTSTRAP"], "detections")
    health = Reader(stack["KAFKA_BOOTSTRAP"], "health")
    try:
        with Worker(worker_env(vigil_env, triton), tmp_path / "worker.log"):
            for ev in frames[:4]:
                producer.send("frames", "cam-1", ev)
            producer.flush()
            detections.until(lambda m: len(m) >= 4, 180, "first FrameAnalyzed")
            triton.kill()
            for ev in frames[4:]:
                producer.send("frames", "cam-1", ev)
            producer.flush()
            health.until(lambda m: len(m) >= 1, 90, "InferenceDegraded")
            time.sleep(2.0)  # stay down a little: frames must wait, not be skipped
            assert len(detections.until(lambda m: True, 1, "")) == 4
            triton.start()
            detections.until(lambda m: len(m) >= len(frames), 180, "backlog drained")
            health.until(lambda m: len(m) >= 2, 30, "InferenceRecovered")
        out: list[FrameAnalyzed] = detections.events()
        assert [a.frame_sequence for a in out] == [ev.sequence for ev in frames]
        kinds = [type(e) for e in health.events()]
        assert kinds == [InferenceDegraded, InferenceRecovered]
    finally:
        detections.close()
        health.close()

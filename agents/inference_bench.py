"""`vigil bench inference`: frames/s through the real inference agent vs direct Triton calls.

Both sides run in the same process tree on the same machine in the same run, so the ratio
says what the pipeline costs on top of the models (Kafka in and out, Avro, JPEG
validation and cropping in the agent, ordering), not how fast this noisy 2-core box is:
- baseline: `TritonInference` called directly with the agent's settings (same detector
  chunking, same in-flight bound, embedder per frame), frames already in memory;
- ours: a backlog of the same frames on a fresh `vigil.frames` topic, drained by a Faust
  worker subprocess running only the inference agent; frames/s from the first to the
  last FrameAnalyzed (worker start-up excluded);
- latency: frames then published one by one at about half the measured rate, frame
  capture time (``occurred_at`` = publish time) -> FrameAnalyzed broker timestamp,
  p50/p99.
Needs Kafka and Triton (``KAFKA_BOOTSTRAP``, ``TRITON_URL``), like the stack provides.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

from vigil.bench import BenchResult

ROOT = Path(__file__).resolve().parent.parent
def demo_jpegs(count: int) -> tuple[list[bytes], int, int]:
    """JPEG frames of the demo scenario (people walking), cycled to `count`."""
    from edge_producer.sim.render import iter_frames
    from edge_producer.sim.scenario import load_scenario, resolve_scenario_path

    sc = load_scenario(resolve_scenario_path("passers_by.yaml"))
    frames = [
        cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        for f in iter_frames(sc, step=2, stop=min(sc.frame_count, 2 * count))
    ]
    return [frames[i % len(frames)] for i in range(count)], sc.width, sc.height


async def _direct(jpegs: list[bytes], url: str) -> float:
    """Frames/s calling Triton directly the way the agent does (batches of batch_size)."""
    from agents.inference import crop_people
    from agents.inference_settings import get_inference_settings
    from agents.triton_client import TritonInference

    s = get_inference_settings()
    client = TritonInference(url, s)
    try:
        await client.detect(jpegs[:1])  # warm-up
        images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
        started = time.perf_counter()
        for i in range(0, len(jpegs), s.batch_size):
            chunk = jpegs[i : i + s.batch_size]
            dets = await client.detect(chunk)

            async def embed(img: np.ndarray, boxes: np.ndarray) -> None:
                if len(boxes):
                    await client.embed(crop_people(img, boxes, s.crop_width, s.crop_height))

            await asyncio.gather(*(
                embed(images[i + k], d.boxes[d.scores >= s.min_score])
                for k, d in enumerate(dets)
            ))
        return len(jpegs) / (time.perf_counter() - started)
    finally:
        await client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(quick: bool = False) -> BenchResult:
    from confluent_kafka import Consumer

    from schemas.codec import default_codec
    from schemas.events import FrameAnalyzed, FrameCaptured, utcnow
    from schemas.topics import apply_topics
    from vigil.kafka import EventProducer
    from vigil.settings import get_settings

    n = 24 if quick else 120
    n_lat = 8 if quick else 40
    st = get_settings()
    jpegs, width, height = demo_jpegs(n)
    baseline = asyncio.run(_direct(jpegs, st.triton_url))

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    apply_topics(st.kafka_bootstrap, prefix, partitions_override=2)
    state = Path(tempfile.mkdtemp(prefix="vigil-bench-inference-"))
    env = {
        **os.environ, "VIGIL_TOPIC_PREFIX": prefix, "VIGIL_STATE_DIR": str(state),
        "VIGIL_WORKER_AGENTS": "inference", "VIGIL_WORKER_WEB_PORT": str(_free_port()),
        "VIGIL_LOG_FORMAT": "text",
    }
    os.environ["VIGIL_TOPIC_PREFIX"] = prefix
    get_settings.cache_clear()
    producer = EventProducer(**{"compression.type": "none"})  # aiokafka lacks lz4 here
    cameras = [f"cam-{i}" for i in range(4)]
    for i, jpeg in enumerate(jpegs):
        producer.send("frames", cameras[i % 4], FrameCaptured.create(
            producer="bench", edge_id="edge-1", camera_id=cameras[i % 4], sequence=i,
            width=width, height=height, motion_score=1.0, jpeg=jpeg))
    producer.flush()

    consumer = Consumer({
        "bootstrap.servers": st.kafka_bootstrap, "group.id": f"{prefix}-reader",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([f"{prefix}.detections"])
    codec = default_codec()
    log = (state / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "worker", "-l", "warn"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    seen: list[float] = []
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 120 + 2 * n
        while len(seen) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                seen.append(time.monotonic())
        if len(seen) < n:
            raise RuntimeError(f"agent analysed {len(seen)}/{n} frames; see {state}")
        ours = (n - 1) / (seen[-1] - seen[0]) if n > 1 else 0.0
        interval = 2.0 / max(ours, 0.1)
        for i in range(n_lat):
            ev = FrameCaptured.create(
                producer="bench", edge_id="edge-1", camera_id=cameras[i % 4],
                sequence=n + i, width=width, height=height, motion_score=1.0,
                jpeg=jpegs[i % len(jpegs)], occurred_at=utcnow())
            producer.send("frames", ev.camera_id, ev)
            producer.flush()
            t_end = time.monotonic() + interval
            while time.monotonic() < t_end or len(latencies) < i:
                msg = consumer.poll(0.05)
                if msg is None or msg.error():
                    if time.monotonic() > t_end + 30:
                        break
                    continue
                out = codec.decode(msg.value())
                if isinstance(out, FrameAnalyzed) and out.frame_sequence >= n:
                    _, ts = msg.timestamp()
                    latencies.append(ts / 1000 - out.occurred_at.timestamp())
        deadline = time.monotonic() + 30
        while len(latencies) < n_lat and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out = codec.decode(msg.value())
                if isinstance(out, FrameAnalyzed) and out.frame_sequence >= n:
                    latencies.append(msg.timestamp()[1] / 1000 - out.occurred_at.timestamp())
    finally:
        consumer.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return BenchResult(
        name="inference",
        value=round(ours, 3),
        unit="frames/s",
        baseline=round(baseline, 3),
        ratio=round(ours / baseline, 3) if baseline else 0.0,
        details={
            "frames": n,
            "baseline": "direct TritonInference calls, same batching and in-flight bound",
            "latency_frames": len(latencies),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
            "triton_url": st.triton_url,
            "topic_prefix": prefix,
        },
    )

"""`vigil bench edge`: CPU cost of the edge per camera-minute, against plain decoding.

Input: a synthetic 25 fps 960x1080 H.264 scene. Ours: the edge's per-camera path
(decode with non-reference frames skipped between due frames, decimate to 1 fps, resize,
MOG2 motion, JPEG, Avro encode of `FrameCaptured`), without Kafka. Baseline: PyAV
decoding every frame of the same file into a BGR array (what ``cv2.VideoCapture.read()``
hands a naive edge before it has even looked at a frame); decode-only cost is reported
alongside. ratio = baseline CPU / our CPU (higher is better).
"""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

import av
import cv2

from edge_producer.runtime import MotionMeter, resize_longest
from edge_producer.sim.scenario import load_scenario
from edge_producer.sim.video import cached_scenario_video
from edge_producer.sources import decode_decimated
from schemas.codec import default_codec
from schemas.events import FrameCaptured
from tools.bench.runner import BenchResult


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_input(duration_s: float, cache: Path) -> tuple[Path, float]:
    base = load_scenario("passers_by")
    s = base.model_copy(update={
        "name": f"bench-{int(duration_s)}s", "fps": 25.0, "duration_s": duration_s,
        "width": 960, "height": 1080,
        "actors": [a.model_copy(update={"height_px": 300}) for a in base.actors],
    })
    return cached_scenario_video(s, cache), s.start.timestamp()


def ours(path: Path) -> tuple[float, int]:
    codec = default_codec()
    motion = MotionMeter()
    t0 = _cpu()
    n = 0
    from datetime import UTC, datetime

    for f in decode_decimated(str(path), lambda: 1.0, lambda: False,
                              datetime(2026, 1, 1, tzinfo=UTC), max_side=640):
        img = resize_longest(f.image, 640)
        _ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        ev = FrameCaptured.create(producer="bench", occurred_at=f.occurred_at, edge_id="b",
                                  camera_id="c", sequence=n, width=img.shape[1],
                                  height=img.shape[0], motion_score=motion.score(img),
                                  jpeg=buf.tobytes())
        codec.encode(ev)
        n += 1
    return _cpu() - t0, n


def baseline(path: Path, convert: bool = True) -> tuple[float, int]:
    """Every frame decoded and (with `convert`) turned into a BGR array, as
    ``cv2.VideoCapture.read()`` does; without it, decode cost alone."""
    t0 = _cpu()
    n = 0
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "SLICE"
        for frame in c.decode(stream):
            if convert:
                frame.to_ndarray(format="bgr24")
            n += 1
    return _cpu() - t0, n


def run(quick: bool = False) -> BenchResult:
    cv2.setNumThreads(1)
    duration = 6.0 if quick else 40.0
    cache = Path(tempfile.gettempdir()) / "vigil-edge-bench"
    path, _ = bench_input(duration, cache)
    best_ours, best_base, best_decode = float("inf"), float("inf"), float("inf")
    frames_out = frames_in = 0
    for _ in range(1 if quick else 3):
        cpu, frames_out = ours(path)
        best_ours = min(best_ours, cpu)
        cpu, frames_in = baseline(path)
        best_base = min(best_base, cpu)
        best_decode = min(best_decode, baseline(path, convert=False)[0])
    minutes = duration / 60
    ours_pm, base_pm = best_ours / minutes, best_base / minutes
    return BenchResult(
        name="edge", value=round(ours_pm, 3), unit="cpu_s/cam_min",
        baseline=round(base_pm, 3), ratio=round(base_pm / ours_pm, 3),
        details={
            "input": "H.264 960x1080 25 fps, synthetic scene", "duration_s": duration,
            "frames_in": frames_in, "frames_out": frames_out,
            "cameras_per_core": round(60 / ours_pm, 1),
            "cameras_per_core_baseline": round(60 / base_pm, 1),
            "baseline": "PyAV decode + BGR conversion of every frame (cv2.VideoCapture-like)",
            "decode_only_cpu_s_per_cam_min": round(best_decode / minutes, 3),
            "note": "lower value is better; ratio = baseline/ours",
        },
    )

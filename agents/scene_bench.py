"""Scene benchmark, plus the synthetic trajectories it shares with the tests.

`vigil bench scene`: FrameAnalyzed events/s through the real scene agent (a Faust worker
subprocess with only the scene agent) against a raw aiokafka consumer reading the same
topic in the same run (the ratio is what means something on a shared 2-core box), and
p99 latency from publishing a detection to its scene event being readable.

The synthetic part (`Person`, `frames`) builds detection streams from simple
trajectories with known ground truth; unit tests, the integration test and the bench
all use it, so "a loiterer stands in the zone for 40 s" means the same thing everywhere.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from schemas.events import Detection, FrameAnalyzed, derived_event_id

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Person:
    """A person whose bottom-centre follows straight legs between waypoints
    (t seconds from the start, x, y); invisible before the first and after the last,
    and during `hidden` intervals [a, b) (occlusion, detector misses)."""

    waypoints: Sequence[tuple[float, float, float]]
    hidden: Sequence[tuple[float, float]] = ()
    width: float = 0.06
    height: float = 0.2
    label: str = "person"

    def at(self, t: float) -> tuple[float, float] | None:
        wp = self.waypoints
        if not wp or t < wp[0][0] or t > wp[-1][0]:
            return None
        if any(a <= t < b for a, b in self.hidden):
            return None
        for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(wp):
            if t0 <= t <= t1:
                f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)
        return (wp[-1][1], wp[-1][2])


@dataclass
class FrameSpec:
    camera_id: str
    start: datetime
    duration_s: float
    people: list[Person] = field(default_factory=list)
    period_s: float = 1.0
    edge_id: str = "edge-1"


def frames(spec: FrameSpec) -> list[FrameAnalyzed]:
    """The FrameAnalyzed stream a perfect detector would produce; deterministic ids."""
    out = []
    n = int(spec.duration_s / spec.period_s) + 1
    for seq in range(n):
        t = seq * spec.period_s
        dets = []
        for i, p in enumerate(spec.people):
            pos = p.at(t)
            if pos is None:
                continue
            x, y = pos
            dets.append(Detection(
                detection_id=f"{spec.camera_id}-{seq}-{i}", label=p.label, score=0.9,
                x1=x - p.width / 2, y1=y - p.height, x2=x + p.width / 2, y2=y,
            ))
        out.append(FrameAnalyzed(
            event_id=derived_event_id("synthetic-frame", spec.camera_id, spec.start, seq),
            event_type="FrameAnalyzed",
            occurred_at=spec.start + timedelta(seconds=t),
            producer="synthetic/1",
            edge_id=spec.edge_id, camera_id=spec.camera_id, frame_sequence=seq,
            width=1280, height=720, skipped=False, detections=dets,
            detector_model="synthetic", detector_version="1",
        ))
    return out


def merge(streams: Iterable[list[FrameAnalyzed]]) -> list[FrameAnalyzed]:
    """Interleave several cameras' frames by event time (stable)."""
    allf = [f for s in streams for f in s]
    return sorted(allf, key=lambda f: f.occurred_at)


# --------------------------------------------------------------------------- demo scenes

#: Day start (UTC) of the demo scenes; Europe/Berlin is UTC+1 in January.
DAY = datetime.fromisoformat("2026-01-15T11:00:00+00:00")
NIGHT = datetime.fromisoformat("2026-01-15T22:30:00+00:00")  # 23:30 in Berlin

BENCH_ZONE = [[0.3, 0.5], [0.7, 0.5], [0.7, 0.95], [0.3, 0.95]]
PLAZA = [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]]


def demo_site() -> dict[str, object]:
    """One camera per behaviour, so expectations are per camera (a site YAML document)."""
    cams = ["loit", "occl", "crowd6", "crowd4", "line", "day", "night"]
    zones: list[dict[str, object]] = []
    rules: list[dict[str, object]] = []
    for c in ("loit", "occl"):
        zones.append({"zone_id": f"bench-{c}", "camera_id": c, "polygon": BENCH_ZONE})
        rules.append({"rule_id": f"loiter-{c}", "rule_type": "loitering",
                      "zone_id": f"bench-{c}", "dwell_s": 20, "gap_tolerance_s": 6})
    for c in ("crowd6", "crowd4"):
        zones.append({"zone_id": f"plaza-{c}", "camera_id": c, "polygon": PLAZA})
        rules.append({"rule_id": f"crowd-{c}", "rule_type": "crowd", "zone_id": f"plaza-{c}",
                      "min_people": 5, "clear_below": 3, "window_s": 10})
    for c in ("day", "night"):
        zones.append({"zone_id": f"fence-{c}", "camera_id": c, "kind": "perimeter",
                      "polygon": [[0.55, 0.5], [0.95, 0.5], [0.95, 0.95], [0.55, 0.95]]})
        rules.append({"rule_id": f"fence-{c}", "rule_type": "perimeter",
                      "zone_id": f"fence-{c}", "severity": "critical",
                      "schedule": {"kind": "night"}})
    return {
        "site_id": "demo",
        "cameras": [{"camera_id": c, "timezone": "Europe/Berlin"} for c in cams],
        "zones": zones,
        "lines": [{"line_id": "gate", "camera_id": "line", "a": [0.5, 0.95],
                   "b": [0.5, 0.3]}],  # pointing up: forward = left to right on screen
        "rules": [*rules, {"rule_id": "gate-in", "rule_type": "line_crossing",
                           "line_id": "gate", "direction": "forward"}],
    }


def demo_streams(duration_s: float = 60.0) -> dict[str, list[FrameAnalyzed]]:
    """Per camera, the frames of the demo scenes (see `demo_site`)."""
    loiterer = Person([(2, 0.1, 0.8), (5, 0.5, 0.8), (40, 0.52, 0.8), (45, 0.95, 0.8)])
    passer = Person([(5, 0.05, 0.7), (20, 0.95, 0.7)])
    occluded = Person([(2, 0.1, 0.8), (5, 0.5, 0.8), (40, 0.52, 0.8), (45, 0.95, 0.8)],
                      hidden=[(12, 16)])
    crowd6 = [Person([(0, 0.08 + 0.15 * i, 0.7), (duration_s, 0.1 + 0.15 * i, 0.72)])
              for i in range(6)]
    crowd4 = crowd6[:4]
    ltr = Person([(0, 0.1, 0.7), (16, 0.9, 0.7)])
    rtl = Person([(20, 0.9, 0.6), (36, 0.1, 0.6)])
    intruder = Person([(2, 0.1, 0.7), (12, 0.75, 0.75), (duration_s, 0.78, 0.75)])
    specs = {
        "loit": FrameSpec("loit", DAY, duration_s, [loiterer, passer]),
        "occl": FrameSpec("occl", DAY, duration_s, [occluded]),
        "crowd6": FrameSpec("crowd6", DAY, duration_s, crowd6),
        "crowd4": FrameSpec("crowd4", DAY, duration_s, crowd4),
        "line": FrameSpec("line", DAY, duration_s, [ltr, rtl]),
        "day": FrameSpec("day", DAY, duration_s, [intruder]),
        "night": FrameSpec("night", NIGHT, duration_s, [intruder]),
    }
    return {c: frames(s) for c, s in specs.items()}


# --------------------------------------------------------------------------- benchmark


def _crowd_scene(camera: str, start: datetime, seconds: float) -> list[FrameAnalyzed]:
    people = [
        Person([(0, 0.05 + 0.1 * i, 0.5 + 0.04 * (i % 3)), (seconds, 0.1 + 0.1 * i, 0.6)])
        for i in range(8)
    ]
    return frames(FrameSpec(camera, start, seconds, people))


def run(quick: bool = False) -> object:
    """Run the scene benchmark against the stack in the environment (KAFKA_BOOTSTRAP)."""
    from vigil.bench import BenchResult

    return asyncio.run(_run(quick, BenchResult))


async def _run(quick: bool, result_cls: type) -> object:
    from aiokafka import AIOKafkaConsumer

    from schemas.topics import apply_topics, topic_name
    from vigil.kafka import EventProducer
    from vigil.settings import get_settings
    from vigil.site_config import SiteConfig, config_events

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    os.environ["VIGIL_TOPIC_PREFIX"] = prefix
    get_settings.cache_clear()
    s = get_settings()
    apply_topics(s.kafka_bootstrap, prefix, partitions_override=2)
    cameras = [f"bcam{i}" for i in range(4)]
    seconds = 150 if quick else 900
    start = datetime.fromisoformat("2026-01-15T12:00:00+00:00")
    site = SiteConfig.model_validate({
        "cameras": [{"camera_id": c} for c in cameras],
        "zones": [{"zone_id": f"z-{c}", "camera_id": c, "polygon": PLAZA} for c in cameras],
        "rules": [{"rule_id": f"crowd-{c}", "rule_type": "crowd", "zone_id": f"z-{c}",
                   "min_people": 5, "clear_below": 3, "window_s": 10} for c in cameras]
        + [{"rule_id": f"loit-{c}", "rule_type": "loitering", "zone_id": f"z-{c}",
            "dwell_s": 30} for c in cameras],
    })
    producer = EventProducer()
    for key, ev in config_events(site):
        producer.send("config", key, ev)
    producer.flush()
    stream = merge(_crowd_scene(c, start, seconds) for c in cameras)
    n = len(stream)
    det_topic = topic_name("detections")

    env = dict(os.environ, VIGIL_WORKER_AGENTS="scene", VIGIL_WORKER_WEB_PORT="16391",
               VIGIL_WORKER_ID=f"bench-{prefix}", VIGIL_LOG_FORMAT="text",
               VIGIL_STATE_DIR=str(ROOT / ".vigil" / "bench" / prefix))
    (Path(env["VIGIL_STATE_DIR"]) / "worker" / env["VIGIL_WORKER_ID"]).mkdir(
        parents=True, exist_ok=True)
    out = AIOKafkaConsumer(topic_name("scene"), bootstrap_servers=s.kafka_bootstrap,
                           auto_offset_reset="latest", enable_auto_commit=False)
    await out.start()
    log_path = Path(env["VIGIL_STATE_DIR"]) / "worker.log"
    with log_path.open("ab") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker", "-l", "warn"],
            env=env, cwd=ROOT, stdout=log_fh, stderr=subprocess.STDOUT)
    lat: list[float] = []
    try:
        # 1. latency, one frame at a time through the warm, otherwise idle worker; the
        #    first frames also wait out the worker's start-up
        lp = EventProducer(**{"linger.ms": 0})
        later = start - timedelta(days=1)
        for i in range(21 if quick else 101):
            people = [Person([(0, 0.1 + 0.1 * k, 0.6), (1, 0.1 + 0.1 * k, 0.6)])
                      for k in range(6 if i % 2 == 0 else 0)]
            f = frames(FrameSpec(cameras[0], later + timedelta(seconds=15 * i), 0, people))[0]
            f = f.evolve(event_id=str(uuid.uuid4()), frame_sequence=i)  # same camera, a day earlier
            t_send = time.perf_counter()
            lp.send("detections", f.camera_id, f)
            lp.flush()
            seen = i == 0  # the first frame closes no window
            wait_until = time.monotonic() + (120 if i < 2 else 10)
            while not seen and time.monotonic() < wait_until:
                batch = await out.getmany(timeout_ms=100)
                seen = any(batch.values())
            if seen and i >= 2:  # 0 and 1 include start-up
                lat.append(time.perf_counter() - t_send)

        # 2. throughput: publish the bulk, time until the worker has committed it all
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        tps = [TopicPartition(det_topic, p) for p in range(2)]
        t0 = time.perf_counter()
        for f in stream:
            producer.send("detections", f.camera_id, f)
        producer.flush()
        ends = await out.end_offsets(tps)
        deadline = time.monotonic() + (300 if quick else 1200)
        while time.monotonic() < deadline:
            offs = await admin.list_consumer_group_offsets(f"{prefix}-worker")
            if all(tp in offs and offs[tp].offset >= ends[tp] for tp in tps):
                break
            await asyncio.sleep(0.1)
        scene_elapsed = time.perf_counter() - t0
        await admin.close()
    finally:
        proc.kill()
        proc.wait()
        await out.stop()

    # 3. baseline: raw aiokafka consumption of the same topic (all of it), same run
    total = sum(ends.values())
    consumer = AIOKafkaConsumer(det_topic, bootstrap_servers=s.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=f"{prefix}-raw")
    await consumer.start()
    t0 = time.perf_counter()
    got = 0
    try:
        while got < total:
            batch = await consumer.getmany(timeout_ms=1000)
            got += sum(len(v) for v in batch.values())
    finally:
        await consumer.stop()
    raw_rate = total / (time.perf_counter() - t0)
    scene_rate = n / scene_elapsed
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else float("nan")
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    return result_cls(
        name="scene", value=scene_rate, unit="frames/s", baseline=raw_rate,
        ratio=scene_rate / raw_rate if raw_rate else 0.0,
        details={"frames": n, "cameras": len(cameras), "detections_per_frame": 8,
                 "p50_latency_ms": p50, "p99_latency_ms": p99, "latency_samples": len(lat),
                 "scene_elapsed_s": scene_elapsed,
                 "note": "scene rate = frames published to all committed by the worker "
                         "(commit interval 1 s bounds resolution); latency = publish of "
                         "one frame to its scene event readable by a consumer"},
    )

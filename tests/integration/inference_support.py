"""Helpers for the inference agent's integration tests: a worker subprocess, topic readers
and demo-scenario frames (shared by test_inference_agent and test_inference_objects)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
from confluent_kafka import Consumer

from schemas.codec import default_codec
from schemas.events import FrameCaptured
from schemas.topics import topic_name

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """`python -m agents.cli worker` (= `vigil worker`: agents.app with only the agents in
    VIGIL_WORKER_AGENTS) as a subprocess in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agents.cli", "worker", "-l", "info"],
                env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Reader:
    """Reads a topic from the start with its own consumer group; keeps what it saw."""

    def __init__(self, bootstrap: str, suffix: str) -> None:
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
        })
        self.consumer.subscribe([topic_name(suffix)])
        self.messages: list[Any] = []

    def until(self, pred: Any, timeout: float, what: str) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not pred(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.messages)}")
            msg = self.consumer.poll(0.5)
            if msg is not None and not msg.error():
                self.messages.append(msg)
        return self.messages

    def events(self) -> list[Any]:
        codec = default_codec()
        return [codec.decode(m.value()) for m in self.messages]

    def close(self) -> None:
        self.consumer.close()


def sim_frames(start: int, count: int) -> list[tuple[FrameCaptured, list[Any]]]:
    """FrameCaptured events (inline JPEG) of the demo scenario, with their truth boxes."""
    from edge_producer.sim.render import iter_frames
    from edge_producer.sim.scenario import load_scenario, resolve_scenario_path

    sc = load_scenario(resolve_scenario_path("passers_by.yaml"))
    out = []
    for f in iter_frames(sc, start=start, stop=start + 2 * count, step=2):
        jpeg = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        ev = FrameCaptured.create(
            producer="test", occurred_at=f.occurred_at, edge_id="edge-1", camera_id="cam-1",
            sequence=f.index, width=sc.width, height=sc.height, motion_score=1.0, jpeg=jpeg,
        )
        out.append((ev, f.boxes))
    return out


def iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union else 0.0

"""The RTSP path: the synthetic scene served over RTSP on loopback, read by the edge."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_producer.config import parse_edge_config
from edge_producer.runtime import Edge
from edge_producer.sim.render import iter_frames
from edge_producer.sim.rtsp import RtspServer
from edge_producer.sim.scenario import load_scenario
from edge_producer.sources import decode_decimated
from schemas.events import FrameCaptured, StreamDown, StreamUp
from tests.integration.test_edge_kafka import consume
from tools.devstack.process import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rtsp() -> Iterator[RtspServer]:
    s = load_scenario("loiterer").model_copy(update={"duration_s": 8.0})
    server = RtspServer(s, port=free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_stream_decodes_at_wall_clock_time(rtsp: RtspServer) -> None:
    before = datetime.now(UTC)
    frames = []
    for f in decode_decimated(rtsp.url, lambda: 1.0, lambda: False, None, max_side=640):
        frames.append(f)
        if len(frames) == 3:
            break
    assert [round(f.pts_s, 1) for f in frames] == [0.0, 1.0, 2.0]
    assert all(f.occurred_at >= before for f in frames)
    first = next(iter_frames(rtsp.scenario)).image
    assert abs(float(frames[0].image.mean()) - float(first.mean())) < 3  # same picture


def test_edge_reconnects_to_a_stream_that_comes_back(rtsp: RtspServer, stack, topic_prefix,
                                                     tmp_path: Path) -> None:
    port = free_port()
    cfg = parse_edge_config({
        "edge_id": "edge-rtsp", "site_id": "s", "state_dir": str(tmp_path / "edge"),
        "backoff_initial_s": 0.3, "backoff_max_s": 1.0, "heartbeat_interval_s": 60,
        "cameras": [{"camera_id": "cam-rtsp", "url": f"rtsp://127.0.0.1:{port}/sim"}]}, env={})
    edge = Edge(cfg)
    runner = threading.Thread(target=edge.run)
    runner.start()
    time.sleep(1.5)  # nothing listening yet: StreamDown, backing off
    server = RtspServer(rtsp.scenario, port=port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while edge.cameras["cam-rtsp"].captured < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        edge.stop_event.set()
        runner.join(30)
        server.shutdown()
        server.server_close()
    health = consume(stack["KAFKA_BOOTSTRAP"], "health", 100, timeout=8)
    assert any(isinstance(e, StreamDown) for e in health)
    assert any(isinstance(e, StreamUp) for e in health)
    frames = [e for e in consume(stack["KAFKA_BOOTSTRAP"], "frames", 2)
              if isinstance(e, FrameCaptured)]
    assert len(frames) >= 2 and frames[0].occurred_at.year >= 2026

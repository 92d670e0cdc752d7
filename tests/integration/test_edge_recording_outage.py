"""Recording at the edge against the real broker and the real S3 server: segments reach
the object store and are announced once each, through a SIGKILL and a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import av
import pytest
import yaml

from edge_producer.config import parse_edge_config
from edge_producer.runtime import Edge
from edge_producer.sim.scenario import load_scenario
from schemas.events import EdgeHeartbeat, SegmentRecorded
from tests.integration.test_edge_kafka import consume
from vigil.objects import client

pytestmark = pytest.mark.integration

#: the night scene: 40 s, a keyframe every 2 s; 4 s segments -> 10 of them
SEGMENT_S = 4.0
EXPECTED = 10


def _edge_doc(tmp_path: Path, realtime: bool) -> dict:
    return {"edge_id": "edge-rec", "site_id": "site-it", "state_dir": str(tmp_path / "edge"),
            "heartbeat_interval_s": 60, "segment_s": SEGMENT_S, "backoff_initial_s": 0.2,
            "backoff_max_s": 1.0,
            "cameras": [{"camera_id": "cam-rec", "url": "sim://night", "realtime": realtime}]}


def assert_segments_complete(segs: list[SegmentRecorded], tmp_path: Path,
                             start_at: object) -> None:
    """Every expected segment once, its object there, its first frame decodable."""
    starts = sorted(s.start_at for s in segs)
    assert len(segs) == EXPECTED, [s.start_at for s in segs]
    assert len({s.event_id for s in segs}) == EXPECTED
    assert starts == [start_at + timedelta(seconds=SEGMENT_S * i)  # type: ignore[operator]
                      for i in range(EXPECTED)]
    for s in segs:
        bucket, key = s.object_ref.removeprefix("s3://").split("/", 1)
        data = client().get_object(bucket, key).read()
        assert len(data) == s.size_bytes
        path = tmp_path / "check.mp4"
        path.write_bytes(data)
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            assert frame.width > 0


def test_recording_is_on_by_default_and_reported_in_the_heartbeat(
        stack, topic_prefix, tmp_path: Path) -> None:
    doc = _edge_doc(tmp_path, realtime=False)
    cfg = parse_edge_config(doc, env={})
    assert cfg.cameras[0].record
    edge = Edge(cfg)
    assert edge.run(until_done=True) == 0
    segs = [e for e in consume(stack["KAFKA_BOOTSTRAP"], "recordings", EXPECTED + 1,
                               timeout=15) if isinstance(e, SegmentRecorded)]
    assert_segments_complete(segs, tmp_path, load_scenario("night").start)
    beats = [e for e in consume(stack["KAFKA_BOOTSTRAP"], "heartbeats", 2, timeout=10)
             if isinstance(e, EdgeHeartbeat)]
    last = beats[-1]
    assert last.record_backlog == 0 and last.record_buffer_bytes > 0
    assert (last.streams[0].segments_pending, last.streams[0].segments_evicted) == (0, 0)
    kept = sorted((tmp_path / "edge" / "recordings" / "cam-rec").iterdir())
    assert len(kept) == EXPECTED and all(p.name.endswith(".up.mp4") for p in kept)


def test_sigkill_mid_recording_then_restart_loses_and_repeats_nothing(
        vigil_env, tmp_path: Path) -> None:
    """SIGKILL while a segment is being written: the restart discards that one file and,
    reading the same source again, records it anew; what was uploaded is neither
    uploaded nor announced again."""
    conf = tmp_path / "edge.yaml"
    conf.write_text(yaml.safe_dump(_edge_doc(tmp_path, realtime=True)))
    proc = subprocess.Popen([sys.executable, "-m", "vigil_cli", "edge", "run", "--config",
                             str(conf)], env=vigil_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    rec_dir = tmp_path / "edge" / "recordings" / "cam-rec"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = list(rec_dir.glob("*.up.mp4")) if rec_dir.exists() else []
            if len(done) >= 2 and list(rec_dir.glob("*.part")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the edge did not upload two segments in 90 s")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    uploaded_before = len(list(rec_dir.glob("*.up.mp4")))
    assert list(rec_dir.glob("*.part")), "killed while a segment was being written"
    again = Edge(parse_edge_config(_edge_doc(tmp_path, realtime=False), env={}))
    assert not list(rec_dir.glob("*.part"))
    assert again.run(until_done=True) == 0
    assert again.uploader.uploaded == EXPECTED - uploaded_before
    segs = [e for e in consume(vigil_env["KAFKA_BOOTSTRAP"], "recordings", EXPECTED + 1,
                               timeout=15) if isinstance(e, SegmentRecorded)]
    assert_segments_complete(segs, tmp_path, load_scenario("night").start)

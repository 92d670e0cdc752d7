"""Vehicles end to end: the `vehicles` scenario's frames -> inference agent with
``VIGIL_INFERENCE_DETECTOR_MODEL=object_detector`` (the scene's ONNX test graph in a real
tritonserver) -> scene agent -> the vehicle rules' alerts, in one real Faust worker.

Checks, from the topics: FrameAnalyzed carries COCO labels (car, truck, bus, motorcycle)
with boxes matching the rendered vehicles and the object_detector's served version;
no person was embedded (there is none); the tracker followed each vehicle as one track
of its class; the parked car fired the no-parking loitering rule, the motorcycle that
stopped for 8 s did not; each vehicle crossing the kerb fired the vehicle line rule at
the scenario's expected time, and the people-only rule on the same line stayed silent;
the projected read model counts detections per class and zone entries per zone, UTC
hour and class, as the daily report shows them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import pytest
import sqlalchemy as sa

from api.reports import zone_hour_counts
from edge_producer.sim import detector_graph as dg
from edge_producer.sim.render import iter_frames
from edge_producer.sim.scenario import load_scenario, resolve_scenario_path
from projections.migrate import upgrade
from projections.projector import Projector
from projections.replay import drop_schema
from projections.settings import ProjectorSettings
from schemas.codec import default_codec
from schemas.events import FrameAnalyzed, FrameCaptured, LineCrossed, RuleTriggered, TrackSummary
from schemas.producer import EventProducer
from schemas.site_config import parse_site
from tests.integration.inference_support import Reader, Worker, iou
from tests.integration.triton_server import MODELS, TritonServer, site_packages
from tools.devstack.process import free_port
from vigil.settings import get_settings
from vigil.yamlfile import load_yaml
from vigil_cli.config import apply_site

pytestmark = pytest.mark.integration

PORT = 28211 + int(os.environ.get("VIGIL_TEST_PORT_OFFSET", "0"))


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    if not (site_packages() / "onnxruntime").is_dir():
        pytest.fail("onnxruntime is missing from the Triton venv: run scripts/bootstrap.sh")
    repo = tmp_path_factory.mktemp("detectors")
    dg.detector_repository(repo, "object_detector", dg.scene_graph())
    server = TritonServer(PORT, log_file=tmp_path_factory.mktemp("log") / "triton.log",
                          repositories=(MODELS, repo),
                          models=("object_detector", "appearance_embedder"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_vehicle_rules_end_to_end(stack: dict[str, str], vigil_env: dict[str, str],
                                  topic_prefix: str, triton: TritonServer,
                                  tmp_path: Path) -> None:
    path = resolve_scenario_path("vehicles")
    sc = load_scenario(path)
    apply_site(parse_site(load_yaml(path, "scenario")))
    frames, truth = [], {}
    for f in iter_frames(sc):
        jpeg = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        frames.append(FrameCaptured.create(
            producer="test", occurred_at=f.occurred_at, edge_id="sim-edge",
            camera_id=sc.camera_id, sequence=f.index, width=sc.width, height=sc.height,
            motion_score=1.0, jpeg=jpeg))
        truth[f.index] = f.boxes
    producer = EventProducer(**{"compression.type": "none"})  # aiokafka reads no lz4 here
    for ev in frames:
        producer.send("frames", sc.camera_id, ev)
    assert producer.flush() == 0

    detections = Reader(stack["KAFKA_BOOTSTRAP"], "detections")
    scene = Reader(stack["KAFKA_BOOTSTRAP"], "scene")
    embeddings = Reader(stack["KAFKA_BOOTSTRAP"], "embeddings")
    env = {**vigil_env, "VIGIL_WORKER_AGENTS": "inference,scene",
           "VIGIL_WORKER_WEB_PORT": str(free_port()),
           "VIGIL_WORKER_ID": f"veh-{uuid.uuid4().hex[:6]}", "TRITON_URL": triton.url,
           "VIGIL_INFERENCE_DETECTOR_MODEL": "object_detector"}
    (Path(env["VIGIL_STATE_DIR"]) / "worker" / env["VIGIL_WORKER_ID"]).mkdir(parents=True)
    expected = sc.expected_alerts
    try:
        with Worker(env, tmp_path / "worker.log"):
            detections.until(lambda m: len(m) >= len(frames), 240, "FrameAnalyzed")
            codec = default_codec()
            scene.until(lambda m: sum(isinstance(codec.decode(x.value()), RuleTriggered)
                                      for x in m) >= len(expected), 120,
                        "the expected RuleTriggered")
        analyzed: list[FrameAnalyzed] = detections.events()
        assert [a.frame_sequence for a in analyzed] == [ev.sequence for ev in frames]
        matched = total = 0
        for a in analyzed:
            assert (a.detector_model, a.detector_version) == ("object_detector", "1")
            assert a.embedder_model is None
            for t in truth[a.frame_sequence]:
                total += 1
                matched += any(d.label == t.label and iou(t, d) >= 0.9 for d in a.detections)
            assert len(a.detections) == len(truth[a.frame_sequence]), a.frame_sequence
        print(f"\nvehicle boxes matched at IoU 0.9 with the right class: {matched}/{total}")
        assert total > 100 and matched == total
        assert {d.label for a in analyzed for d in a.detections} == {
            "car", "truck", "bus", "motorcycle"}
        assert embeddings.until(lambda m: True, 2, "") == []

        events = scene.events()
        fired = sorted((e.rule_id, (e.occurred_at - sc.start).total_seconds())
                       for e in events if isinstance(e, RuleTriggered))
        print(f"fired: {fired}")
        assert [r for r, _ in fired] == sorted(e.rule_id for e in expected)
        for e in expected:
            assert any(r == e.rule_id and abs(t - e.at_s) <= e.tolerance_s for r, t in fired), e
        crossings = [e for e in events if isinstance(e, LineCrossed)]
        assert len(crossings) == 4 and len({c.track_id for c in crossings}) == 4
    finally:
        for r in (detections, scene, embeddings):
            r.close()
    # each vehicle that left early enough for its track to end was one track of its class
    # (the motorcycle leaves 3 s before the last frame, its track is still alive)
    summaries = [e for e in events if isinstance(e, TrackSummary)]
    assert sorted(s.label for s in summaries) == ["bus", "car", "truck"]

    # the read model counts by class: detections per label, zone entries per zone and
    # UTC hour (the car entered the no-parking bay at 09:59:34, the motorcycle at 10:00:16)
    dsn = get_settings().database_dsn
    upgrade(dsn, topic_prefix, 192)
    try:
        proj = Projector(dsn=dsn, schema=topic_prefix, prefix=topic_prefix,
                         settings=ProjectorSettings(embedding_dim=192), stop_at="end",
                         producer=EventProducer())
        try:
            proj.run(max_seconds=120)
        finally:
            proj.close()
        engine = sa.create_engine(get_settings().database_url)
        with engine.connect() as conn:
            conn.execute(sa.text(f"SET search_path TO {topic_prefix}, public"))
            zones = zone_hour_counts(conn, sc.start, sc.start + timedelta(days=1), [])
            labels = dict(conn.execute(sa.text(
                "SELECT label, count(*) FROM detections GROUP BY label")).all())
        engine.dispose()
    finally:
        drop_schema(dsn, topic_prefix)
    assert [(r.camera_id, r.site_id, r.zone_id, r.hour, r.label, r.entries) for r in zones] == [
        ("cam-1", "sim-site", "no-parking", 9, "car", 1),
        ("cam-1", "sim-site", "no-parking", 10, "motorcycle", 1)]
    want: dict[str, int] = {}
    for boxes in truth.values():
        for b in boxes:
            want[b.label] = want.get(b.label, 0) + 1
    assert labels == want

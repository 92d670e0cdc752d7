"""The evidence agent in a real Faust worker, against real Kafka, PostgreSQL and the object
store: rule hits in, pictures stored and EvidenceCaptured out; the projector folds it; the
API hands out presigned URLs whose pictures show the boxes where the detections are; a
re-delivered hit is re-announced without rendering again; an erasure removes the pictures
and the API answers 410; a hit whose frame cannot be found goes to the DLQ with why.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from starlette.testclient import TestClient

from agents.evidence_render import BOX_COLOUR, HIGHLIGHT_COLOUR, ZONE_COLOUR, pixel_box
from schemas.codec import default_codec
from schemas.events import (
    AlertRaised,
    CameraConfigured,
    Detection,
    Event,
    EvidenceCaptured,
    FrameAnalyzed,
    FrameCaptured,
    Point,
    RuleConfigured,
    RuleTriggered,
    ZoneConfigured,
)
from schemas.topics import topic_name
from tests.integration.alerts_support import Worker
from tools.devstack.process import free_port
from tools.testkit.api import World, make_world
from vigil.settings import get_settings

pytestmark = pytest.mark.integration

W, H = 640, 480
ZONE = [Point(x=0.05, y=0.05), Point(x=0.95, y=0.05), Point(x=0.95, y=0.95),
        Point(x=0.05, y=0.95)]


def _clear() -> None:
    from schemas.codec import default_codec as dc

    get_settings.cache_clear()
    dc.cache_clear()


@pytest.fixture(scope="module")
def world(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[World, Worker]]:
    import os

    tmp = tmp_path_factory.mktemp("evidence")
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    _clear()
    worker = None
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            env = dict(os.environ)
            env.update(stack)
            env.update({"VIGIL_TOPIC_PREFIX": prefix, "VIGIL_STATE_DIR": str(tmp / "state"),
                        "VIGIL_LOG_FORMAT": "text", "VIGIL_WORKER_AGENTS": "evidence,clips",
                        # a short clip window and quick re-checks keep the test short
                        "VIGIL_EVIDENCE_PRE_S": "2", "VIGIL_EVIDENCE_POST_S": "3",
                        "VIGIL_EVIDENCE_CLIP_RETRY_S": "1",
                        "VIGIL_EVIDENCE_CLIP_NO_RECORDING_S": "4",
                        "VIGIL_WORKER_WEB_PORT": str(free_port()),
                        "VIGIL_WORKER_ID": "evidence-it"})
            (tmp / "state" / "worker").mkdir(parents=True, exist_ok=True)
            for key, ev in config_events("cam-ev"):
                w.send("config", key, ev)
            assert w.producer.flush(30) == 0
            worker = Worker(env, tmp / "worker.log")
            worker.start()
            w.add_key("viewer", "viewer")
            yield w, worker
    finally:
        if worker is not None:
            worker.stop()
        mp.undo()
        _clear()


def config_events(cam: str) -> list[tuple[str, Event]]:
    return [
        (f"camera/{cam}", CameraConfigured.create(
            producer="t", camera_id=cam, site_id="site-ev", edge_id="edge-ev", name="Lobby",
            timezone="Europe/Paris")),
        (f"zone/{cam}.z", ZoneConfigured.create(
            producer="t", zone_id=f"{cam}.z", camera_id=cam, name="hall", kind="zone",
            polygon=ZONE)),
        (f"rule/{cam}.r", RuleConfigured.create(
            producer="t", rule_id=f"{cam}.r", camera_id=cam, rule_type="loitering",
            zone_id=f"{cam}.z", dwell_s=30.0)),
    ]


def grey_jpeg() -> bytes:
    img = np.full((H, W, 3), 128, np.uint8)
    cv2.putText(img, "scene", (20, 460), cv2.FONT_HERSHEY_SIMPLEX, 1, (200, 200, 200), 2)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf)


DETS = [Detection(detection_id="", label="person", score=0.91, x1=0.10, y1=0.20, x2=0.30,
                  y2=0.70),
        Detection(detection_id="", label="person", score=0.88, x1=0.55, y1=0.25, x2=0.85,
                  y2=0.80)]


def send_hit(w: World, cam: str, *, big: bool = False, dwell_s: float = 42.0,
             now: datetime | None = None) -> tuple[RuleTriggered, list[str]]:
    """A frame, its analysis and a loitering hit on it (highlighting the second box)."""
    now = now or datetime.now(UTC)
    jpeg = grey_jpeg()
    tag = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {"jpeg": jpeg}
    if big:  # an oversized frame travels by object ref
        from vigil.objects import store_frame

        fields = {"object_ref": store_frame(jpeg, f"{cam}/{tag}.jpg")}
    frame = w.send("frames", cam, FrameCaptured.create(
        producer="t", occurred_at=now, edge_id="edge-ev", camera_id=cam, sequence=1,
        width=W, height=H, motion_score=1.0, **fields))
    dets = [replace(d, detection_id=f"{tag}-{i}") for i, d in enumerate(DETS)]
    analysis = w.send("detections", cam, FrameAnalyzed.create(
        producer="t", occurred_at=now, cause=frame, edge_id="edge-ev", camera_id=cam,
        frame_sequence=1, width=W, height=H, skipped=False, detections=dets,
        detector_model="m", detector_version="1"))
    hit = w.send("scene", cam, RuleTriggered.create(
        producer="t", occurred_at=now, cause=analysis, camera_id=cam, zone_id=f"{cam}.z",
        rule_id=f"{cam}.r", rule_type="loitering", severity="warning", value=42.0,
        threshold=30.0, track_ids=["trk-9"],
        first_evidence_at=now - timedelta(seconds=dwell_s),
        last_evidence_at=now, evidence_event_ids=[analysis.event_id],
        detection_ids=[dets[1].detection_id]))
    assert w.producer.flush(30) == 0
    return hit, [d.detection_id for d in dets]


def read_topic(suffix: str, pred: Any, timeout: float = 90.0,
               worker: Worker | None = None) -> list[tuple[Any, Any]]:
    """(message, decoded or None) from the start of the topic until pred(list) holds."""
    name = topic_name(suffix)
    c = Consumer({"bootstrap.servers": get_settings().kafka_bootstrap,
                  "group.id": f"t-{uuid.uuid4()}", "enable.auto.commit": False})
    out: list[tuple[Any, Any]] = []
    try:
        md = c.list_topics(name, timeout=10)
        c.assign([TopicPartition(name, p, 0) for p in md.topics[name].partitions])
        deadline = time.monotonic() + timeout
        while not pred(out):
            assert time.monotonic() < deadline, f"timed out on {name}: {len(out)} messages"
            if worker is not None:
                assert worker.proc is not None and worker.proc.poll() is None, "worker died"
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            try:
                ev = default_codec().decode(m.value())
            except Exception:
                ev = None
            out.append((m, ev))
        return out
    finally:
        c.close()


def evidence_of(hit: RuleTriggered, worker: Worker, n: int = 1) -> list[EvidenceCaptured]:
    def mine(out: list[tuple[Any, Any]]) -> list[EvidenceCaptured]:
        return [e for _, e in out if isinstance(e, EvidenceCaptured)
                and e.rule_event_id == hit.event_id]

    return mine(read_topic("evidence", lambda out: len(mine(out)) >= n, worker=worker))


def get_object(ref: str) -> tuple[bytes, Any]:
    from vigil.objects import client, split_ref

    s = get_settings()
    bucket, key = split_ref(ref, s.bucket_snapshots, s.buckets)
    resp = client().get_object(bucket, key)
    try:
        data = resp.read()
    finally:
        resp.close()
        resp.release_conn()
    return data, client().stat_object(bucket, key).last_modified


def near(px: np.ndarray, bgr: tuple[int, int, int], tol: int = 60) -> bool:
    return bool(np.abs(px.astype(int) - np.array(bgr)).max() <= tol)


def check_boxes(jpeg: bytes, analysis_dets: list[Detection], highlighted: set[str]) -> None:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == W
    for d in analysis_dets:
        x1, y1, x2, y2 = pixel_box(d, W, H)
        mx, my = (x1 + x2) // 2, (y1 + y2) // 2
        colour = HIGHLIGHT_COLOUR if d.detection_id in highlighted else BOX_COLOUR
        for px in (img[y1, mx], img[y2, mx], img[my, x1], img[my, x2]):
            assert near(px, colour), (d.detection_id, px, colour)
    assert near(img[H // 2, round(0.05 * W)], ZONE_COLOUR)


def test_a_rule_hit_gets_its_snapshot_annotated_snapshot_and_thumbnail(
        world: tuple[World, Worker]) -> None:
    w, worker = world
    hit, det_ids = send_hit(w, "cam-ev")
    t0 = time.monotonic()
    (ev,) = evidence_of(hit, worker)
    print(f"rule hit -> EvidenceCaptured seen by a reader: {time.monotonic() - t0:.2f} s")
    assert ev.causation_id == hit.event_id and ev.camera_id == "cam-ev"
    assert ev.detection_ids == det_ids and ev.highlighted_detection_ids == [det_ids[1]]
    assert ev.snapshot_ref.endswith(f"/{hit.event_id}/frame.jpg")
    frame, _ = get_object(ev.snapshot_ref)
    assert frame == grey_jpeg()  # the frame as captured, byte for byte
    annotated, _ = get_object(ev.annotated_ref)
    dets = [replace(d, detection_id=i) for i, d in zip(det_ids, DETS, strict=True)]
    check_boxes(annotated, dets, {det_ids[1]})
    thumb, _ = get_object(ev.thumbnail_ref)
    timg = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR)
    assert timg is not None and timg.shape[1] == 320


def test_an_oversized_frame_from_the_store_and_a_redelivered_hit_is_not_rendered_again(
        world: tuple[World, Worker]) -> None:
    w, worker = world
    hit, _ = send_hit(w, "cam-ev", big=True)
    (ev,) = evidence_of(hit, worker)
    frame, _ = get_object(ev.snapshot_ref)
    assert frame == grey_jpeg()
    _, modified = get_object(ev.annotated_ref)
    # the same hit delivered again (a crash before the commit): same event, same objects
    w.send("scene", "cam-ev", hit)
    assert w.producer.flush(30) == 0
    first, second = evidence_of(hit, worker, n=2)
    assert first.event_id == second.event_id and first == second
    assert get_object(ev.annotated_ref)[1] == modified  # not written again


def test_a_hit_whose_frame_is_missing_goes_to_the_dlq_with_why(
        world: tuple[World, Worker]) -> None:
    w, worker = world
    now = datetime.now(UTC)
    hit = w.send("scene", "cam-ev", RuleTriggered.create(
        producer="t", occurred_at=now, causation_id=f"no-such-{uuid.uuid4().hex}",
        camera_id="cam-ev", rule_id="cam-ev.r", rule_type="loitering", severity="warning",
        value=1.0, threshold=1.0, track_ids=[], first_evidence_at=now, last_evidence_at=now,
        evidence_event_ids=[]))
    assert w.producer.flush(30) == 0

    def reasons(out: list[tuple[Any, Any]]) -> list[str]:
        return [dict(m.headers() or {}).get("vigil.error", b"").decode() for m, e in out
                if isinstance(e, RuleTriggered) and e.event_id == hit.event_id]

    out = read_topic("dlq", lambda out: bool(reasons(out)), worker=worker)
    (reason,) = reasons(out)
    assert "not found" in reason and hit.causation_id in reason


def test_the_api_serves_the_evidence_and_answers_410_once_erased(
        world: tuple[World, Worker]) -> None:
    from api.app import create_app
    from api.settings import load_api_settings
    from projections.erasure import erase
    from projections.settings import ProjectorSettings

    w, worker = world
    hit, det_ids = send_hit(w, "cam-ev")
    (ev,) = evidence_of(hit, worker)
    alert_id = f"alert-{uuid.uuid4().hex[:8]}"
    w.send("alerts", alert_id, AlertRaised.create(
        producer="t", cause=hit, alert_id=alert_id, incident_key=alert_id,
        site_id="site-ev", camera_id="cam-ev", zone_id="cam-ev.z", rule_id="cam-ev.r",
        rule_type="loitering", severity="warning", first_evidence_at=hit.first_evidence_at,
        last_evidence_at=hit.last_evidence_at, version=1))
    w.project()
    from vigil.objects import client

    app = create_app(get_settings(), w.engine, w.producer, read_schema=w.schema,
                     api_settings=load_api_settings(env={}, keys_schema=w.keys_schema),
                     object_store=client())
    with TestClient(app, raise_server_exceptions=False) as c:
        body = c.get(f"/api/v1/alerts/{alert_id}", headers=w.auth("viewer")).json()
        (item,) = body["evidence"]
        assert item["evidence_id"] == ev.event_id and not item["erased"]
        annotated = httpx.get(item["annotated_url"], timeout=10)
        assert annotated.status_code == 200
        dets = [replace(d, detection_id=i) for i, d in zip(det_ids, DETS, strict=True)]
        check_boxes(annotated.content, dets, {det_ids[1]})
        for name in ("snapshot_url", "thumbnail_url"):
            assert httpx.get(item[name], timeout=10).content[:2] == b"\xff\xd8"
        event = c.get(f"/api/v1/events/{hit.event_id}", headers=w.auth("viewer")).json()
        assert [e["evidence_id"] for e in event["evidence"]] == [ev.event_id]
        assert c.get(f"/api/v1/evidence/{ev.event_id}",
                     headers=w.auth("viewer")).status_code == 200

        result = erase(get_settings(), ProjectorSettings(), w.schema, [det_ids[1]],
                       requested_by="dpo", reason="test")
        assert {ev.snapshot_ref, ev.annotated_ref, ev.thumbnail_ref} <= set(result["objects"])
        gone = c.get(f"/api/v1/evidence/{ev.event_id}", headers=w.auth("viewer"))
        assert gone.status_code == 410 and gone.json()["error"] == "gone"
        body = c.get(f"/api/v1/alerts/{alert_id}", headers=w.auth("viewer")).json()
        assert body["evidence"][0]["erased"] and body["evidence"][0]["annotated_url"] is None
    assert httpx.get(item["annotated_url"], timeout=10).status_code == 404
    # the projector agrees (a rebuild reads the privacy topic first, then the evidence)
    w.project()
    with w.engine.connect() as conn:
        import sqlalchemy as sa

        erased = conn.execute(sa.text(
            f'SELECT erased FROM "{w.schema}".evidence WHERE event_id = :e'),
            {"e": ev.event_id}).scalar()
    assert erased is True


# --------------------------------------------------------------------------- clips
FPS = 10


def encode_segment(seconds: int) -> bytes:
    """H.264 in MP4 at 10 fps, a keyframe a second, as the edge records it."""
    import os
    import tempfile

    import av

    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        with av.open(path, "w") as out:
            st = out.add_stream("libx264", rate=FPS, options={"g": str(FPS), "bf": "0"})
            st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
            for i in range(seconds * FPS):
                img = np.full((120, 160, 3), (i * 9) % 255, np.uint8)
                for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
            for pkt in st.encode():
                out.mux(pkt)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def send_segments(w: World, cam: str, start: datetime, n: int, corrupt: int | None = None
                  ) -> list[str]:
    from schemas.events import SegmentRecorded
    from vigil.objects import put_bytes

    refs = []
    for i in range(n):
        data = encode_segment(4)
        if i == corrupt:
            data = data[:300]  # truncated upload
        at = start + timedelta(seconds=4 * i)
        ref = put_bytes(get_settings().bucket_segments, f"{cam}/{uuid.uuid4().hex}.mp4",
                        data, "video/mp4")
        w.send("recordings", cam, SegmentRecorded.create(
            producer="t", occurred_at=at + timedelta(seconds=4), edge_id="edge-ev",
            camera_id=cam, object_ref=ref, start_at=at, end_at=at + timedelta(seconds=4),
            size_bytes=len(data)))
        refs.append(ref)
    assert w.producer.flush(30) == 0
    return refs


def clip_of(ev: EvidenceCaptured, worker: Worker) -> Any:
    from schemas.events import ClipRecorded

    def mine(out: list[tuple[Any, Any]]) -> list[Any]:
        return [e for _, e in out if isinstance(e, ClipRecorded) and e.evidence_id == ev.event_id]

    return mine(read_topic("evidence", lambda out: bool(mine(out)), worker=worker))[0]


def decode_clip(data: bytes) -> tuple[int, float]:
    import io

    import av

    with av.open(io.BytesIO(data)) as c:
        frames = sum(1 for _ in c.decode(c.streams.video[0]))
        return frames, float(c.duration or 0) / av.time_base


def test_a_clip_covers_the_window_even_when_its_segments_arrive_late(
        world: tuple[World, Worker]) -> None:
    w, worker = world
    now = datetime.now(UTC).replace(microsecond=0)
    hit, _ = send_hit(w, "cam-clip", dwell_s=4, now=now)  # window now-6 s .. now+3 s
    (ev,) = evidence_of(hit, worker)
    time.sleep(3)  # the edge is behind: its segments come after the hit
    refs = send_segments(w, "cam-clip", now - timedelta(seconds=8), 3)
    clip = clip_of(ev, worker)
    assert clip.status == "complete", clip.reason
    assert clip.segment_refs == refs and not clip.skipped and not clip.gaps
    assert clip.clip_start_at <= clip.window_start  # from the keyframe before the window
    assert clip.clip_end_at >= clip.window_end - timedelta(seconds=1 / FPS)
    data, _ = get_object(clip.clip_ref)
    assert data.index(b"moov") < data.index(b"mdat")  # plays before it is all downloaded
    frames, duration = decode_clip(data)
    window_s = (clip.window_end - clip.window_start).total_seconds()
    assert duration >= window_s - 0.2 and frames >= window_s * FPS
    # the API hands out the clip's URL with the stills
    from api.app import create_app
    from api.settings import load_api_settings
    from vigil.objects import client

    w.project()
    app = create_app(get_settings(), w.engine, w.producer, read_schema=w.schema,
                     api_settings=load_api_settings(env={}, keys_schema=w.keys_schema),
                     object_store=client())
    with TestClient(app, raise_server_exceptions=False) as c:
        item = c.get(f"/api/v1/evidence/{ev.event_id}", headers=w.auth("viewer")).json()
    assert item["clip_status"] == "complete", item
    got = httpx.get(item["clip_url"], timeout=10)
    assert got.status_code == 200 and got.content == data


def test_a_corrupt_segment_makes_a_partial_clip_and_a_camera_without_recording_says_so(
        world: tuple[World, Worker]) -> None:
    w, worker = world
    now = datetime.now(UTC).replace(microsecond=0)
    send_segments(w, "cam-clip2", now - timedelta(seconds=8), 3, corrupt=1)
    hit, _ = send_hit(w, "cam-clip2", dwell_s=4, now=now)
    (ev,) = evidence_of(hit, worker)
    clip = clip_of(ev, worker)
    assert clip.status == "partial" and len(clip.skipped) == 1 and clip.skipped[0].reason
    assert clip.gaps and clip.reason
    frames, _ = decode_clip(get_object(clip.clip_ref)[0])
    assert frames > 0

    hit, _ = send_hit(w, "cam-norec", dwell_s=4)
    (ev,) = evidence_of(hit, worker)
    clip = clip_of(ev, worker)
    assert clip.status == "no_recording" and clip.clip_ref is None
    assert "recorded nothing" in clip.reason


# --------------------------------------------------------------------------- API: video
def test_recordings_listing_and_an_export_of_a_range(world: tuple[World, Worker]) -> None:
    from api.app import create_app
    from api.settings import load_api_settings
    from vigil.objects import client

    w, _ = world
    w.add_key("operator", "operator")
    start = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    refs = send_segments(w, "cam-ev", start, 2)  # 08:00:00-08:00:08
    send_segments(w, "cam-ev", start + timedelta(seconds=20), 1)  # 08:00:20-08:00:24
    w.project()
    app = create_app(get_settings(), w.engine, w.producer, read_schema=w.schema,
                     api_settings=load_api_settings(env={}, keys_schema=w.keys_schema,
                                                    export_max_range_s=60),
                     object_store=client())
    h = w.auth("operator")
    q = "from=2026-02-01T08:00:00Z&to=2026-02-01T08:00:30Z"
    with TestClient(app, raise_server_exceptions=False) as c:
        body = c.get(f"/api/v1/cameras/cam-ev/recordings?{q}", headers=h).json()
        assert [s["duration_s"] for s in body["segments"]] == [4.0, 4.0, 4.0]
        assert [(g["start_at"][11:19], g["end_at"][11:19]) for g in body["gaps"]] == [
            ("08:00:08", "08:00:20"), ("08:00:24", "08:00:30")]
        seg = httpx.get(body["segments"][0]["url"], timeout=10)
        assert seg.status_code == 200 and decode_clip(seg.content)[0] == 40
        none = c.get("/api/v1/cameras/cam-ev/recordings?from=2026-02-02T08:00:00Z"
                     "&to=2026-02-02T09:00:00Z", headers=h)
        assert none.status_code == 404 and none.json()["details"]["gap"]["start_at"]
        bad = c.get("/api/v1/cameras/cam-ev/recordings?from=2026-02-01T09:00:00Z"
                    "&to=2026-02-01T08:00:00Z", headers=h)
        assert bad.status_code in (400, 422)

        export = {"camera_id": "cam-ev", "from": "2026-02-01T08:00:01Z",
                  "to": "2026-02-01T08:00:07Z"}
        too_long = {**export, "to": "2026-02-01T09:00:00Z"}
        r = c.post("/api/v1/exports", json=too_long, headers=h)
        assert r.status_code == 422 and r.json()["details"]["max_range_s"] == 60
        r = c.post("/api/v1/exports", json=export, headers=h)
        assert r.status_code == 202, r.text
        export_id = r.json()["export_id"]
        deadline = time.monotonic() + 60
        while True:
            st = c.get(f"/api/v1/exports/{export_id}", headers=h).json()
            if st["state"] in ("done", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert st["state"] == "done" and not st["partial"], st
        mp4 = httpx.get(st["url"], timeout=10).content
        frames, duration = decode_clip(mp4)
        assert frames >= 60 and 6.0 <= duration <= 7.2  # 08:00:01 (keyframe) .. 08:00:07
        again = c.post("/api/v1/exports", json=export, headers=h)
        assert again.status_code == 200 and again.json()["export_id"] == export_id
    assert refs

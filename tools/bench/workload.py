"""A synthetic, deterministic event mix covering every projected topic.

Used by the integration tests (events in -> read models out) and by the projection
benchmark, so both exercise the same folds. Everything is derived from `seed`, so two
calls give identical events (ids included).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import events as ev

PRODUCER = "workload/1"
T0 = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)

Item = tuple[str, str, ev.Event]  # (topic suffix, key, event)


def _id(seed: int, *parts: object) -> str:
    return ev.derived_event_id("workload", seed, *parts)


def _analysis(frame: ev.FrameCaptured, event_id: str, dets: list[ev.Detection]
              ) -> ev.FrameAnalyzed:
    """The detector's answer to `frame` (same camera, edge, sequence and time)."""
    return ev.FrameAnalyzed.create(
        producer=PRODUCER, occurred_at=frame.occurred_at, cause=frame, event_id=event_id,
        edge_id=frame.edge_id, camera_id=frame.camera_id, frame_sequence=frame.sequence,
        width=640, height=480, skipped=False, detections=dets, detector_model="yolo",
        detector_version="1", embedder_model="reid", inference_ms=12.5,
        frame_ref=frame.object_ref)


def mixed_workload(*, seed: int = 1, cameras: int = 2, frames_per_camera: int = 20,
                   detections_per_frame: int = 3, embedding_dim: int = 192,
                   alerts: int = 2, erase: int = 1) -> list[Item]:
    """Config, heartbeats, frames, detections, embeddings, scene, alerts, commands,
    notifications, health, recordings and an erasure, in a plausible order."""
    rnd = random.Random(seed)
    out: list[Item] = []
    site, edge = f"site-{seed}", f"edge-{seed}"

    def mk(cls: type[ev.Event], at: datetime, *parts: object, **kw: object) -> ev.Event:
        return cls.create(producer=PRODUCER, occurred_at=at, event_id=_id(seed, cls.__name__,
                                                                         *parts), **kw)

    cams = [f"cam-{seed}-{i}" for i in range(cameras)]
    for i, cam in enumerate(cams):
        out.append(("config", f"camera/{cam}", mk(ev.CameraConfigured, T0, cam, camera_id=cam,
                    site_id=site, edge_id=edge, name=f"Camera {i}")))
        zone = f"zone-{cam}"
        out.append(("config", f"zone/{zone}", mk(
            ev.ZoneConfigured, T0, zone, zone_id=zone, camera_id=cam, name="door", kind="zone",
            polygon=[ev.Point(x=0.1, y=0.1), ev.Point(x=0.9, y=0.1), ev.Point(x=0.5, y=0.9)])))
        line = f"line-{cam}"
        out.append(("config", f"line/{line}", mk(
            ev.LineConfigured, T0, line, line_id=line, camera_id=cam, name="gate",
            a=ev.Point(x=0.0, y=0.5), b=ev.Point(x=1.0, y=0.5))))
        rule = f"rule-{cam}"
        out.append(("config", f"rule/{rule}", mk(
            ev.RuleConfigured, T0, rule, rule_id=rule, camera_id=cam, rule_type="loitering",
            zone_id=zone, schedule=ev.Schedule(kind="night"))))
    # A rule that is configured and then deleted.
    out.append(("config", "rule/gone", mk(ev.RuleConfigured, T0, "gone", rule_id=f"gone-{seed}",
                camera_id=cams[0], rule_type="crowd", zone_id=f"zone-{cams[0]}")))
    out.append(("config", "rule/gone", mk(ev.EntityDeleted, T0 + timedelta(seconds=1), "gone",
                entity_kind="rule", entity_id=f"gone-{seed}")))

    detection_ids: list[tuple[str, str]] = []
    analyses: dict[str, list[str]] = {c: [] for c in cams}
    for f in range(frames_per_camera):
        at = T0 + timedelta(seconds=f)
        if f % 10 == 0:
            streams = [ev.StreamStatus(camera_id=c, state="up", fps=5.0, frames_captured=f,
                                       frames_dropped=0, last_frame_at=at) for c in cams]
            out.append(("heartbeats", edge, mk(
                ev.EdgeHeartbeat, at, f, edge_id=edge, site_id=site, version="1.0",
                interval_s=30.0, streams=streams, disk_free_bytes=10**9,
                memory_rss_bytes=10**8, spool_backlog=0, spool_evicted=0)))
        for cam in cams:
            frame = mk(ev.FrameCaptured, at, cam, f, edge_id=edge, camera_id=cam, sequence=f,
                       width=640, height=480, motion_score=rnd.random(),
                       object_ref=f"s3://frames/{cam}/{f}.jpg")
            out.append(("frames", cam, frame))
            dets = []
            for d in range(detections_per_frame):
                did = _id(seed, "det", cam, f, d)
                x = rnd.random() * 0.8
                dets.append(ev.Detection(detection_id=did, label="person", score=0.5 + d / 10,
                                         x1=x, y1=0.1, x2=x + 0.1, y2=0.6, has_embedding=True))
                detection_ids.append((cam, did))
            analysis = _analysis(frame, _id(seed, "FrameAnalyzed", cam, f), dets)
            analyses[cam].append(analysis.event_id)
            out.append(("detections", cam, analysis))
            for det in dets:
                vec = [rnd.uniform(-1, 1) for _ in range(embedding_dim)]
                out.append(("embeddings", cam, ev.AppearanceEmbedded.create(
                    producer=PRODUCER, occurred_at=at, cause=analysis,
                    event_id=_id(seed, "emb", det.detection_id), camera_id=cam,
                    detection_id=det.detection_id, frame_sequence=f, model="reid",
                    vector=vec)))
        if f == frames_per_camera // 2:
            cam = cams[-1]
            out.append(("recordings", cam, mk(
                ev.SegmentRecorded, at, cam, f, edge_id=edge, camera_id=cam,
                object_ref=f"s3://segments/{cam}/{f}.mp4", start_at=at - timedelta(seconds=10),
                end_at=at, size_bytes=123456)))
            out.append(("health", cam, mk(ev.StreamDown, at, cam, "down", edge_id=edge,
                                          camera_id=cam, reason="rtsp timeout")))
            out.append(("health", cam, mk(ev.StreamUp, at + timedelta(seconds=1), cam, "up",
                                          edge_id=edge, camera_id=cam, down_since=at)))
            out.append(("health", edge, mk(ev.EdgeOffline, at, edge, "off", edge_id=edge,
                                           site_id=site, last_seen_at=at, missed_heartbeats=3)))
            out.append(("health", edge, mk(ev.EdgeOnline, at + timedelta(seconds=2), edge, "on",
                                           edge_id=edge, site_id=site, offline_since=at)))
            out.append(("health", "w1", mk(ev.InferenceDegraded, at, "deg", worker_id="w1",
                                           reason="triton down")))

    end = T0 + timedelta(seconds=frames_per_camera)
    for a in range(alerts):
        cam = cams[a % len(cams)]
        zone, rule = f"zone-{cam}", f"rule-{cam}"
        ev_ids = analyses[cam][:3]
        entered = mk(ev.ZoneEntered, T0, "ze", a, camera_id=cam, zone_id=zone,
                     track_id=f"trk-{a}")
        out.append(("scene", cam, entered))
        trig = mk(ev.RuleTriggered, end, "rt", a, camera_id=cam, zone_id=zone, rule_id=rule,
                  rule_type="loitering", severity="warning", value=400.0, threshold=300.0,
                  track_ids=[f"trk-{a}"], first_evidence_at=T0, last_evidence_at=end,
                  evidence_event_ids=ev_ids, frame_ref=f"s3://frames/{cam}/0.jpg")
        out.append(("scene", cam, trig))
        out.append(("scene", cam, mk(ev.LineCrossed, end, "lc", a, camera_id=cam,
                                     line_id=f"line-{cam}", track_id=f"trk-{a}",
                                     direction="forward")))
        out.append(("scene", cam, mk(ev.TrackSummary, end, "ts", a, camera_id=cam,
                                     track_id=f"trk-{a}", label="person", first_seen_at=T0,
                                     last_seen_at=end, observations=frames_per_camera)))
        alert_id = _id(seed, "alert", a)
        key = f"{cam}|{zone}|{rule}"
        raised = ev.AlertRaised.create(
            producer=PRODUCER, occurred_at=end, cause=trig, event_id=_id(seed, "ar", a),
            alert_id=alert_id, incident_key=key, site_id=site, camera_id=cam, zone_id=zone,
            rule_id=rule, rule_type="loitering", severity="warning", first_evidence_at=T0,
            last_evidence_at=end, snapshot_ref=f"s3://snapshots/{alert_id}.jpg", version=1)
        out.append(("alerts", key, raised))
        t = end + timedelta(seconds=5)
        out.append(("alerts", key, mk(ev.AlertRepeated, t, "rep", a, alert_id=alert_id,
                                      incident_key=key, occurrences=2, last_evidence_at=t,
                                      version=2)))
        t += timedelta(minutes=15)
        esc = mk(ev.AlertEscalated, t, "esc", a, alert_id=alert_id, incident_key=key, level=1,
                 deadline_at=t, version=3)
        out.append(("alerts", key, esc))
        out.append(("notifications", alert_id, mk(
            ev.NotificationDelivered, t, "nd", a, alert_id=alert_id, alert_event_id=esc.event_id,
            destination="https://hook", channel="webhook", attempts=1, status_code=200)))
        out.append(("notifications", alert_id, mk(
            ev.NotificationFailed, t, "nf", a, alert_id=alert_id, alert_event_id=esc.event_id,
            destination="mailto:x", channel="email", attempts=3, reason="smtp down")))
        cmd = mk(ev.AcknowledgeAlert, t + timedelta(seconds=1), "ack", a, alert_id=alert_id,
                 operator="alice", note="on it")
        out.append(("commands", key, cmd))
        out.append(("alerts", key, mk(ev.AlertAcknowledged, t + timedelta(seconds=1), "aa", a,
                                      alert_id=alert_id, incident_key=key, operator="alice",
                                      note="on it", command_id=cmd.event_id, version=4,
                                      causation_id=cmd.event_id)))
        if a % 2 == 0:
            stale = mk(ev.ResolveAlert, t + timedelta(seconds=2), "stale", a, alert_id=alert_id,
                       operator="bob", expected_version=1)
            out.append(("commands", key, stale))
            out.append(("alerts", key, mk(ev.CommandRejected, t + timedelta(seconds=2), "rej", a,
                                          command_id=stale.event_id, command_type="ResolveAlert",
                                          alert_id=alert_id, operator="bob",
                                          reason="stale version")))
            res = mk(ev.ResolveAlert, t + timedelta(seconds=3), "res", a, alert_id=alert_id,
                     operator="alice", resolution="left")
            out.append(("commands", key, res))
            out.append(("alerts", key, mk(ev.AlertResolved, t + timedelta(seconds=3), "ares", a,
                                          alert_id=alert_id, incident_key=key, operator="alice",
                                          resolution="left", automatic=False,
                                          command_id=res.event_id, version=5)))
    erased = [did for _, did in detection_ids[:erase]]
    if erased:
        out.append(("privacy", "subject-1", mk(
            ev.AppearanceErased, end + timedelta(hours=1), "erase", requested_by="dpo",
            reason="request", detection_ids=erased,
            snapshot_refs=[f"s3://snapshots/{d}.jpg" for d in erased])))
    return out


def publish(items: Iterable[Item], producer: object | None = None) -> None:
    """Send the items with schemas.producer.EventProducer (topic prefix from settings)."""
    from schemas.producer import EventProducer

    prod = producer if isinstance(producer, EventProducer) else EventProducer()
    for suffix, key, event in items:
        prod.send(suffix, key, event)
    if prod.flush(60):
        raise RuntimeError("events not delivered")


def reid_vectors(rng: Any, centres: Any, per_centre: int) -> Any:
    """`per_centre` re-identification-like vectors around each row of `centres` (a
    person's direction, N(0, 1) per dimension) with N(0, 0.5) noise: cosine ~0.8 within
    a person, ~0 across; the shape `replay_log` gives its embeddings."""
    import numpy as np

    noise = rng.normal(0.0, 0.5, (len(centres), per_centre, centres.shape[1]))
    return (centres[:, None, :] + noise).astype(np.float32)


def replay_log(total_events: int, *, seed: int = 5, cameras: int = 8,
               detections_per_frame: int = 3, embedding_dim: int = 192,
               span_s: float | None = None) -> Iterator[Item]:
    """An embedding-heavy log of about `total_events` events for the replay benchmark.

    The shape of a busy site's history (per analysed frame: the frame, its analysis with
    `detections_per_frame` boxes and one appearance embedding per box, plus heartbeats and
    scene events), generated lazily so a million events never sit in memory at once.
    Vectors are shaped like re-identification embeddings: every box belongs to a track (a
    person followed for `track_frames` frames), whose embeddings are the track's own
    direction plus per-detection noise (cosine similarity ~0.8 within a track, ~0 across),
    so all vectors are distinct but clustered by person. The HNSW build time depends on
    that shape: uniformly random vectors, which no embedder produces, take ~4x longer to
    index. Drawn with numpy in blocks, as 100 M floats from `random` would dominate
    seeding. Frames are 200 ms apart, or spread evenly over `span_s` seconds when given
    (the bench: 72 h of 64 cameras, so the embeddings fill four daily partitions).
    """
    import numpy as np

    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    noise = np.empty((0, embedding_dim))
    tracks: dict[tuple[str, int], tuple[int, Any]] = {}
    track_frames = 50
    site, edge = f"rsite-{seed}", f"redge-{seed}"
    cams = [f"rcam-{seed}-{i}" for i in range(cameras)]
    produced = 0
    for i, cam in enumerate(cams):
        yield ("config", f"camera/{cam}", ev.CameraConfigured.create(
            producer=PRODUCER, occurred_at=T0, event_id=_id(seed, "rcam", cam), camera_id=cam,
            site_id=site, edge_id=edge, name=f"Camera {i}"))
        produced += 1
    step_ms = 200.0
    if span_s is not None:
        per_tick = cameras * (2 + detections_per_frame) + cameras / 25 + 1 / 50
        step_ms = span_s * 1000 / max(1.0, (total_events - cameras) / per_tick)
    f = 0
    while produced < total_events:
        at = T0 + timedelta(milliseconds=round(step_ms * f))
        if f % 50 == 0:
            yield ("heartbeats", edge, ev.EdgeHeartbeat.create(
                producer=PRODUCER, occurred_at=at, event_id=_id(seed, "rhb", f), edge_id=edge,
                site_id=site, version="1.0", interval_s=30.0, streams=[],
                disk_free_bytes=10**9, memory_rss_bytes=10**8, spool_backlog=0,
                spool_evicted=0))
            produced += 1
        for cam in cams:
            frame = ev.FrameCaptured.create(
                producer=PRODUCER, occurred_at=at, event_id=_id(seed, "rf", cam, f),
                edge_id=edge, camera_id=cam, sequence=f, width=640, height=480,
                motion_score=rnd.random(), object_ref=f"s3://frames/{cam}/{f}.jpg")
            dets = [ev.Detection(detection_id=_id(seed, "rd", cam, f, d), label="person",
                                 score=0.5 + d / 10, x1=0.1, y1=0.1, x2=0.3, y2=0.6,
                                 has_embedding=True) for d in range(detections_per_frame)]
            analysis = _analysis(frame, _id(seed, "ra", cam, f), dets)
            yield ("frames", cam, frame)
            yield ("detections", cam, analysis)
            produced += 2
            for k, d in enumerate(dets):
                segment = f // track_frames
                track = tracks.get((cam, k))
                if track is None or track[0] != segment:
                    track = tracks[(cam, k)] = (segment, rng.normal(0.0, 1.0, embedding_dim))
                if not len(noise):
                    noise = rng.normal(0.0, 0.5, (4096, embedding_dim))
                vector = (track[1] + noise[-1]).tolist()
                noise = noise[:-1]
                yield ("embeddings", cam, ev.AppearanceEmbedded.create(
                    producer=PRODUCER, occurred_at=at, cause=analysis,
                    event_id=_id(seed, "re", d.detection_id), camera_id=cam,
                    detection_id=d.detection_id, frame_sequence=f, model="reid",
                    vector=vector))
                produced += 1
            if f % 25 == 0:
                yield ("scene", cam, ev.ZoneEntered.create(
                    producer=PRODUCER, occurred_at=at, cause=analysis,
                    event_id=_id(seed, "rz", cam, f), camera_id=cam, zone_id=f"zone-{cam}",
                    track_id=f"trk-{cam}-{f}"))
                produced += 1
        f += 1

"""Test and benchmark support: an isolated world (topics, schema, keys) seeded through the
real projector, and the app served by a real uvicorn on loopback.

Data goes in the way production data does: events are produced to Kafka and the
projector (`projections.projector.Projector`) folds them into a fresh PostgreSQL schema.
Nothing writes read-model rows by hand.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from api.auth import KeyStore
from schemas.events import (
    AlertRaised,
    AppearanceEmbedded,
    CameraConfigured,
    EdgeHeartbeat,
    Event,
    EvidenceCaptured,
    LineConfigured,
    NotificationFailed,
    Point,
    RuleConfigured,
    RuleTriggered,
    SegmentRecorded,
    StreamStatus,
    ZoneConfigured,
    ZoneEntered,
)
from tools.devstack.process import free_port

#: Events' keys, as the catalog declares them.
T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def unit_vector(seed: int, dim: int) -> list[float]:
    rnd = random.Random(seed)
    v = [rnd.gauss(0, 1) for _ in range(dim)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


@dataclass
class World:
    """One isolated API world: its topic prefix, read-model schema and keys."""

    prefix: str
    schema: str
    keys_schema: str
    dsn: str
    engine: sa.Engine
    producer: Any
    dim: int
    keys: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def send(self, suffix: str, key: str, event: Event) -> Event:
        self.producer.send(suffix, key, event)
        return event

    def project(self, max_seconds: float = 60.0, consumer_name: str | None = None) -> None:
        """Fold everything produced so far into the schema, with the real projector (a
        fresh consumer reading every topic from its start, unless `consumer_name` names
        one whose stored offsets it resumes from, as a deployed projector does)."""
        from projections.projector import Projector
        from projections.settings import ProjectorSettings

        assert self.producer.flush(30) == 0, "events not delivered"
        proj = Projector(dsn=self.dsn, schema=self.schema, prefix=self.prefix,
                         settings=ProjectorSettings(embedding_dim=self.dim), stop_at="end",
                         consumer_name=consumer_name or f"api-test-{uuid.uuid4().hex[:6]}")
        try:
            proj.run(max_seconds=max_seconds)
        finally:
            proj.close()

    def add_key(self, label: str, role: str, sites: list[str] | None = None) -> str:
        store = KeyStore(self.engine, self.keys_schema)
        _, key = store.create(f"{label}-name", role, sites)
        self.keys[label] = key
        self.names[label] = f"{label}-name"
        return key

    def auth(self, label: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[label]}"}


@contextlib.contextmanager
def make_world(bootstrap: str, database_url: str, prefix: str | None = None,
               partitions: int = 2) -> Iterator[World]:
    """Topics under a fresh prefix, a fresh read-model schema (migrated) and key schema.

    The caller must have set ``VIGIL_TOPIC_PREFIX`` to `prefix` (producers read it).
    """
    from api.deps import make_engine
    from projections.migrate import upgrade
    from projections.settings import ProjectorSettings
    from schemas.producer import EventProducer
    from schemas.topics import apply_topics

    prefix = prefix or f"t{uuid.uuid4().hex[:10]}"
    apply_topics(bootstrap, prefix, partitions_override=partitions)
    schema = f"api_{prefix}".lower()
    keys_schema = f"apikeys_{prefix}".lower()
    dsn = "postgresql://" + database_url.split("://", 1)[1]
    dim = ProjectorSettings().embedding_dim
    upgrade(dsn, schema, dim)
    engine = make_engine(database_url, pool_size=10)
    KeyStore(engine, keys_schema).ensure_schema()
    world = World(prefix=prefix, schema=schema, keys_schema=keys_schema, dsn=dsn,
                  engine=engine, producer=EventProducer(), dim=dim)
    try:
        yield world
    finally:
        engine.dispose()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for s in (schema, keys_schema):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(s)))


SITES = {"site-a": ("edge-a", ["cam-a1", "cam-a2"]), "site-b": ("edge-b", ["cam-b1"])}


def seed_world(w: World, events_per_camera: int = 7, alerts_per_camera: int = 1,
               embeddings_per_camera: int = 3) -> dict[str, Any]:
    """A small two-site world: cameras, a zone and rule, scene events, alerts, embeddings.

    Returns the ids the tests need.
    """
    p = "seed"
    out: dict[str, Any] = {"alerts": {}, "events": {}, "detections": {}}
    # Embeddings are searchable for 72 h only (api/search.py): theirs is the last hour.
    recent = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    for site, (edge, cams) in SITES.items():
        w.send("heartbeats", edge, EdgeHeartbeat.create(
            producer=p, occurred_at=T0, edge_id=edge, site_id=site, version="1",
            interval_s=30.0,
            streams=[StreamStatus(camera_id=c, state="up", fps=5.0, frames_captured=10,
                                  frames_dropped=0, last_frame_at=T0) for c in cams],
            disk_free_bytes=10**10, memory_rss_bytes=10**8, spool_backlog=0, spool_evicted=0))
        for cam in cams:
            w.send("config", f"camera/{cam}", CameraConfigured.create(
                producer=p, occurred_at=T0, camera_id=cam, site_id=site, edge_id=edge,
                name=f"Camera {cam}"))
    w.send("config", "zone/zone-a1", ZoneConfigured.create(
        producer=p, occurred_at=T0, zone_id="zone-a1", camera_id="cam-a1", name="Door",
        kind="zone", polygon=[Point(x=0.1, y=0.1), Point(x=0.9, y=0.1),
                              Point(x=0.9, y=0.9)]))
    w.send("config", "zone/zone-b1", ZoneConfigured.create(
        producer=p, occurred_at=T0, zone_id="zone-b1", camera_id="cam-b1", name="Gate",
        kind="zone", polygon=[Point(x=0.1, y=0.1), Point(x=0.9, y=0.1),
                              Point(x=0.9, y=0.9)]))
    w.send("config", "rule/rule-a1", RuleConfigured.create(
        producer=p, occurred_at=T0, rule_id="rule-a1", camera_id="cam-a1",
        rule_type="loitering", zone_id="zone-a1"))
    for line, cam in (("line-a1", "cam-a1"), ("line-b1", "cam-b1")):
        w.send("config", f"line/{line}", LineConfigured.create(
            producer=p, occurred_at=T0, line_id=line, camera_id=cam, name="Gate",
            a=Point(x=0.0, y=0.5), b=Point(x=1.0, y=0.5)))
    # Entities the authorisation matrix may delete (a delete takes effect only once
    # projected, so the ones above stay for the other tests).
    w.send("config", "zone/zone-del", ZoneConfigured.create(
        producer=p, occurred_at=T0, zone_id="zone-del", camera_id="cam-a2", name="Tmp",
        kind="zone", polygon=[Point(x=0.1, y=0.1), Point(x=0.2, y=0.1),
                              Point(x=0.2, y=0.2)]))
    w.send("config", "line/line-del", LineConfigured.create(
        producer=p, occurred_at=T0, line_id="line-del", camera_id="cam-a2", name="Tmp",
        a=Point(x=0.1, y=0.1), b=Point(x=0.2, y=0.2)))
    w.send("config", "rule/rule-del", RuleConfigured.create(
        producer=p, occurred_at=T0, rule_id="rule-del", camera_id="cam-a2",
        rule_type="loitering", zone_id="zone-del"))
    seq = 0
    for site, (_, cams) in SITES.items():
        for cam in cams:
            ids = []
            for i in range(events_per_camera):
                e = w.send("scene", cam, ZoneEntered.create(
                    producer=p, occurred_at=T0 + timedelta(seconds=i), camera_id=cam,
                    zone_id="zone-a1", track_id=f"trk-{i}",
                    label="car" if i == events_per_camera - 1 else "person"))
                ids.append(e.event_id)
            trig = w.send("scene", cam, RuleTriggered.create(
                producer=p, occurred_at=T0 + timedelta(minutes=5), camera_id=cam,
                zone_id="zone-a1", rule_id="rule-a1", rule_type="loitering",
                severity="warning", value=320.0, threshold=300.0, track_ids=["trk-1"],
                first_evidence_at=T0, last_evidence_at=T0 + timedelta(minutes=5),
                evidence_event_ids=ids[:1], frame_ref=f"snapshots/{cam}/snap.jpg"))
            out["events"][cam] = [*ids, trig.event_id]
            folder = f"s3://snapshots/evidence/{cam}/2026-01-15/{trig.event_id}"
            evid = w.send("evidence", cam, EvidenceCaptured.create(
                producer=p, occurred_at=trig.occurred_at, cause=trig, camera_id=cam,
                rule_event_id=trig.event_id, rule_id="rule-a1", rule_type="loitering",
                zone_id="zone-a1", frame_event_id=f"frame-{cam}",
                analysis_event_id=f"analysis-{cam}", frame_at=trig.occurred_at,
                first_evidence_at=T0, last_evidence_at=trig.occurred_at,
                width=640, height=480, snapshot_ref=f"{folder}/frame.jpg",
                annotated_ref=f"{folder}/annotated.jpg",
                thumbnail_ref=f"{folder}/thumbnail.jpg", track_ids=["trk-1"],
                detection_ids=[], highlighted_detection_ids=[]))
            out.setdefault("evidence", {})[cam] = [evid.event_id]
            w.send("recordings", cam, SegmentRecorded.create(
                producer=p, occurred_at=T0 + timedelta(seconds=10), edge_id="seed-edge",
                camera_id=cam, object_ref=f"s3://video-segments/seed/{cam}/0.mp4",
                start_at=T0, end_at=T0 + timedelta(seconds=10), size_bytes=1000))
            out["alerts"][cam] = []
            for n in range(alerts_per_camera):
                alert_id = f"alert-{cam}-{n}"
                incident = f"inc-{cam}-{n}"
                w.send("alerts", incident, AlertRaised.create(
                    producer=p, occurred_at=T0 + timedelta(minutes=5, seconds=n),
                    cause=trig, alert_id=alert_id, incident_key=incident, site_id=site,
                    camera_id=cam, zone_id="zone-a1", rule_id="rule-a1",
                    rule_type="loitering", severity="warning", first_evidence_at=T0,
                    last_evidence_at=T0 + timedelta(minutes=5), snapshot_ref=None, version=1))
                out["alerts"][cam].append({"alert_id": alert_id, "incident_key": incident})
                if n == 0:  # one delivery that gave up, for the notification endpoints
                    nf = w.send("notifications", alert_id, NotificationFailed.create(
                        producer=p, occurred_at=T0 + timedelta(minutes=6), alert_id=alert_id,
                        alert_event_id=f"ev-{alert_id}", destination="ops:ops@x.example",
                        channel="mail", attempts=9, reason="ConnectionRefusedError"))
                    out.setdefault("notifications_failed", {})[cam] = nf.event_id
            out["detections"][cam] = []
            for i in range(embeddings_per_camera):
                seq += 1
                det = f"det-{cam}-{i}"
                w.send("embeddings", cam, AppearanceEmbedded.create(
                    producer=p, occurred_at=recent + timedelta(seconds=i), camera_id=cam,
                    detection_id=det, frame_sequence=seq, model="appearance_embedder",
                    vector=unit_vector(seq, w.dim)))
                out["detections"][cam].append(det)
    w.project()
    return out


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` under a real uvicorn on loopback in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-test-server", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def env_addresses() -> tuple[str, str]:
    from vigil.settings import get_settings

    s = get_settings()
    return s.kafka_bootstrap, os.environ.get("DATABASE_URL", s.database_url)

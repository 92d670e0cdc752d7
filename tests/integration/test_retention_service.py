"""Retention that runs itself, against the real PostgreSQL, object store and Kafka:

- every policy of the one table (projections/retention_policies.py) applies its period
  to its store: old frame and frame-analysis rows go with their stored frame images, old
  alert snapshots, rendered evidence and clips leave the object store with their rows,
  resolved alerts older than two years go,
  detection partitions are dropped (never rows deleted), recent data stays;
- the run is recorded as a RetentionRun event (folded by the real projector into
  health_events) and in the metrics;
- a failing store makes the run "failed", recorded the same way, while the other
  policies still run;
- the projector runs it on its own timer.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY

from projections.erasure import _minio
from projections.migrate import ensure_partitions, set_search_path, upgrade
from projections.projector import Projector
from projections.replay import drop_schema
from projections.retention_policies import POLICIES
from projections.retention_service import run_all
from projections.settings import ProjectorSettings
from schemas.producer import EventProducer
from tools.devstack.process import free_port
from vigil.settings import get_settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
BUCKET = "frames"


def _seed(dsn: str, schema: str, store: Any) -> dict[str, str]:
    """Rows as the projector would have written them, old and recent, with their objects."""
    if not store.bucket_exists(BUCKET):
        store.make_bucket(BUCKET)
    refs = {}
    for name in ("old-frame", "new-frame", "old-snap", "new-snap", "old-annotated",
                 "old-thumb", "old-clip", "new-annotated", "new-thumb", "new-clip"):
        key = f"{schema}/{name}.jpg"
        store.put_object(BUCKET, key, io.BytesIO(b"jpeg"), 4)
        refs[name] = f"s3://{BUCKET}/{key}"
    with psycopg.connect(dsn, autocommit=True) as c:
        set_search_path(c, schema)
        ensure_partitions(c, NOW.date().replace(day=1, year=NOW.year - 2), ahead=30)
        for eid, at, ref in (("f-old", NOW - timedelta(days=100), refs["old-frame"]),
                             ("f-new", NOW - timedelta(days=10), refs["new-frame"])):
            c.execute("INSERT INTO frames (event_id, camera_id, edge_id, sequence, occurred_at,"
                      " width, height, motion_score, object_ref, has_jpeg, log_partition,"
                      " log_offset) VALUES (%s, 'cam', 'e', 1, %s, 640, 480, 0, %s, true, 0,"
                      " 0)", (eid, at, ref))
            c.execute("INSERT INTO frame_analyses (event_id, frame_event_id, camera_id, edge_id,"
                      " frame_sequence, occurred_at, skipped, detection_count, detector_model,"
                      " detector_version, inference_ms, log_partition, log_offset) VALUES"
                      " (%s, %s, 'cam', 'e', 1, %s, false, 0, 'd', '1', 1.0, 0, 0)",
                      (f"a-{eid}", eid, at))
        alerts = (("al-ancient", NOW - timedelta(days=800), "RESOLVED", None),
                  ("al-ancient-open", NOW - timedelta(days=800), "NEW", None),
                  ("al-old", NOW - timedelta(days=400), "RESOLVED", refs["old-snap"]),
                  ("al-new", NOW - timedelta(days=5), "NEW", refs["new-snap"]))
        for aid, at, state, snap in alerts:
            c.execute("INSERT INTO alerts (alert_id, incident_key, state, severity, camera_id,"
                      " rule_id, rule_type, level, occurrences, version, raised_at, updated_at,"
                      " first_evidence_at, last_evidence_at, snapshot_ref, raised_event_id,"
                      " last_event_id) VALUES (%s, %s, %s, 'warning', 'cam', 'r', 'loitering',"
                      " 0, 1, 1, %s, %s, %s, %s, %s, %s, %s)",
                      (aid, aid, state, at, at, at, at, snap, f"ev-{aid}", f"ev-{aid}"))
        for eid, age in (("h-old", 100), ("h-new", 10)):  # system health: 90 days
            c.execute("INSERT INTO health_events (event_id, event_type, occurred_at, edge_id,"
                      " payload) VALUES (%s, 'EdgeOffline', %s, 'e', '{}')",
                      (eid, NOW - timedelta(days=age)))
        for age, tag in ((400, "old"), (5, "new")):  # an alert's rendered evidence and clip
            at = NOW - timedelta(days=age)
            c.execute("INSERT INTO evidence (event_id, rule_event_id, camera_id, rule_id,"
                      " rule_type, frame_event_id, analysis_event_id, occurred_at, frame_at,"
                      " width, height, snapshot_ref, annotated_ref, thumbnail_ref, track_ids,"
                      " detection_ids, highlighted_detection_ids, erased, log_partition,"
                      " log_offset) VALUES (%s, %s, 'cam', 'r', 'loitering', 'f', 'a', %s, %s,"
                      " 640, 480, %s, %s, %s, '{}', '{}', '{}', false, 0, 0)",
                      (f"ev-{tag}", f"rt-{tag}", at, at, refs[f"{tag}-frame"],
                       refs[f"{tag}-annotated"], refs[f"{tag}-thumb"]))
            c.execute("INSERT INTO clips (event_id, evidence_id, rule_event_id, camera_id,"
                      " window_start, window_end, status, reason, clip_ref, size_bytes,"
                      " segment_refs, skipped, gaps, erased, log_partition, log_offset) VALUES"
                      " (%s, %s, %s, 'cam', %s, %s, 'ready', '', %s, 4, '{}', '[]', '[]',"
                      " false, 0, 0)", (f"clip-{tag}", f"ev-{tag}", f"rt-{tag}", at,
                                        at + timedelta(seconds=20), refs[f"{tag}-clip"]))
    return refs


def _exists(store: Any, ref: str) -> bool:
    key = ref.split(f"s3://{BUCKET}/", 1)[1]
    try:
        store.stat_object(BUCKET, key)
        return True
    except Exception:
        return False


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def schema(topic_prefix: str) -> Any:
    s = get_settings()
    name = f"ret_{uuid.uuid4().hex[:8]}"
    upgrade(s.database_dsn, name, 4)
    try:
        yield name
    finally:
        drop_schema(s.database_dsn, name)


def test_every_policy_applies_its_period_and_the_run_is_recorded(schema: str) -> None:
    s = get_settings()
    store = _minio(s)
    refs = _seed(s.database_dsn, schema, store)
    ps = ProjectorSettings(embedding_dim=4)
    ok_before = _sample("vigil_retention_runs_total", outcome="ok")
    producer = EventProducer()
    result = run_all(s.database_dsn, schema, ps, store=store, producer=producer, now=NOW)
    assert result["outcome"] == "ok", result
    assert set(result["report"]) == {p.name for p in POLICIES}
    assert result["report"]["frames"] == {"frames_deleted": 1, "frame_analyses_deleted": 1,
                                          "frame_objects_deleted": 1}
    assert result["report"]["snapshots"] == {"snapshots_deleted": 1}
    assert result["report"]["alerts"] == {"alerts_deleted": 1}
    assert result["report"]["evidence"] == {"evidence_deleted": 1, "evidence_objects_deleted": 2,
                                            "clips_deleted": 1, "clip_objects_deleted": 1}
    assert result["report"]["health"] == {"health_events_deleted": 1}
    for tag, kept in (("old", False), ("new", True)):
        for what in ("annotated", "thumb", "clip"):
            assert _exists(store, refs[f"{tag}-{what}"]) is kept, (tag, what)
    dropped = result["report"]["embeddings+detections"]["dropped_partitions"]
    assert dropped and all(p.startswith("detections_y") for p in dropped)
    with psycopg.connect(s.database_dsn) as c:
        set_search_path(c, schema)
        assert [r[0] for r in c.execute("SELECT event_id FROM frames")] == ["f-new"]
        assert [r[0] for r in c.execute("SELECT event_id FROM evidence")] == ["ev-new"]
        assert [r[0] for r in c.execute(
            "SELECT event_id FROM health_events WHERE event_id LIKE 'h-%'")] == ["h-new"]
        assert [r[0] for r in c.execute("SELECT event_id FROM clips")] == ["clip-new"]
        assert [r[0] for r in c.execute("SELECT event_id FROM frame_analyses")] == ["a-f-new"]
        alerts = dict(c.execute("SELECT alert_id, snapshot_ref FROM alerts").fetchall())
        # an open alert is never deleted, however old; the old one keeps no dead link
        assert alerts == {"al-ancient-open": None, "al-old": None, "al-new": refs["new-snap"]}
        kept = [r[0] for r in c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'detections'::regclass")]
        assert not set(dropped) & set(kept) and kept
    assert not _exists(store, refs["old-frame"]) and _exists(store, refs["new-frame"])
    assert not _exists(store, refs["old-snap"]) and _exists(store, refs["new-snap"])
    assert _sample("vigil_retention_runs_total", outcome="ok") == ok_before + 1
    assert _sample("vigil_retention_last_success_timestamp_seconds") > 0

    # the event, folded by the real projector next to the other health events
    proj = Projector(dsn=s.database_dsn, schema=schema, prefix=s.topic_prefix,
                     settings=ps, stop_at="end", consumer_name="retention-test")
    try:
        proj.run(max_seconds=60)
    finally:
        proj.close()
    with psycopg.connect(s.database_dsn) as c:
        set_search_path(c, schema)
        (payload,) = c.execute("SELECT payload FROM health_events WHERE event_type = "
                               "'RetentionRun'").fetchone()
    assert payload["event_id"] == result["event_id"] and payload["outcome"] == "ok"
    assert json.loads(payload["report"])["alerts"] == {"alerts_deleted": 1}


class _BrokenStore:
    """An object store that refuses every deletion, like one with rotated credentials."""

    def remove_object(self, bucket: str, key: str) -> None:
        raise PermissionError("AccessDenied: the key was rotated")


def test_a_failing_store_fails_the_run_and_the_other_policies_still_run(schema: str) -> None:
    s = get_settings()
    _seed(s.database_dsn, schema, _minio(s))
    failed_before = _sample("vigil_retention_runs_total", outcome="failed")
    result = run_all(s.database_dsn, schema, ProjectorSettings(embedding_dim=4),
                     store=_BrokenStore(), producer=EventProducer(), now=NOW)
    assert result["outcome"] == "failed"
    assert "frames: PermissionError" in result["error"]
    assert "snapshots: PermissionError" in result["error"]
    assert result["report"]["alerts"] == {"alerts_deleted": 1}  # unaffected policy ran
    assert _sample("vigil_retention_runs_total", outcome="failed") == failed_before + 1


def test_the_projector_runs_retention_on_its_own_timer(vigil_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    port = free_port()
    schema = f"rt_{uuid.uuid4().hex[:8]}"
    env = dict(vigil_env)
    env.update({"VIGIL_PROJECTOR_SCHEMA": schema, "VIGIL_PROJECTOR_METRICS_PORT": str(port),
                "VIGIL_PROJECTOR_RETENTION_INTERVAL_S": "2"})
    log = (tmp_path / "projector.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "vigil_cli", "project"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        runs = 0.0
        while time.monotonic() < deadline and runs < 1:
            time.sleep(2)
            assert proc.poll() is None, (tmp_path / "projector.log").read_text()[-2000:]
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith('vigil_retention_runs_total{outcome="ok"}'):
                    runs = float(line.split()[-1])
        assert runs >= 1, (tmp_path / "projector.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        drop_schema(get_settings().database_dsn, schema)

"""Recording retention against the real S3 server and PostgreSQL: segments past their
retention go from the object store and the read model, each deletion logged and counted,
by one pass and by the timer of a running projector."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from projections.migrate import set_search_path, upgrade
from projections.recording_retention import expire_recordings
from projections.replay import drop_schema
from vigil.objects import client
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def schema(topic_prefix: str) -> Iterator[str]:
    dsn = get_settings().database_dsn
    upgrade(dsn, topic_prefix, 192)
    yield topic_prefix
    drop_schema(dsn, topic_prefix)


@pytest.fixture
def bucket(stack: dict[str, str]) -> Iterator[str]:
    name = f"ret-{uuid.uuid4().hex[:12]}"
    client().make_bucket(name)
    yield name
    for obj in client().list_objects(name, recursive=True):
        client().remove_object(name, obj.object_name)
    client().remove_bucket(name)


def _put(bucket: str, key: str) -> str:
    client().put_object(bucket, key, io.BytesIO(b"mp4"), 3, content_type="video/mp4")
    return f"s3://{bucket}/{key}"


def _row(schema: str, ref: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(get_settings().database_dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        conn.execute(
            "INSERT INTO recordings (event_id, camera_id, edge_id, object_ref, start_at, "
            "end_at, size_bytes, container) VALUES (%s, 'cam', 'edge', %s, %s, %s, 3, 'mp4')",
            (str(uuid.uuid4()), ref, now, now))


def _rows(schema: str) -> set[str]:
    with psycopg.connect(get_settings().database_dsn, autocommit=True) as conn:
        set_search_path(conn, schema)
        return {r for (r,) in conn.execute("SELECT object_ref FROM recordings")}


def _keys(bucket: str) -> set[str]:
    return {o.object_name for o in client().list_objects(bucket, recursive=True)}


def _deleted_count() -> float:
    return REGISTRY.get_sample_value("vigil_retention_deleted_total",
                                     {"kind": "recording_segment"}) or 0.0


def test_a_pass_deletes_expired_segments_and_their_rows_and_keeps_the_rest(
        schema: str, bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    old = [_put(bucket, f"cam/2026/01/01/00000{i}.000000.mp4") for i in range(2)]
    time.sleep(2.5)  # LastModified has one-second resolution
    young = _put(bucket, "cam/2026/01/01/000009.000000.mp4")
    elsewhere = f"s3://{bucket}/cam/2026/01/01/000005.000000.mp4"  # no such object here
    for ref in (*old, young, elsewhere):
        _row(schema, ref)
    before = _deleted_count()
    caplog.set_level("INFO", logger="projections.recording_retention")
    report = expire_recordings(client(), bucket, get_settings().database_dsn, schema,
                               retention_days=1.2 / 86400)
    assert report["segments_deleted"] == 2 and report["rows_deleted"] == 2
    assert _keys(bucket) == {"cam/2026/01/01/000009.000000.mp4"}
    assert _rows(schema) == {young, elsewhere}  # only rows of the objects it deleted
    assert _deleted_count() - before == 2
    logged = [r for r in caplog.records if r.getMessage() == "recording segment expired "
              "and deleted"]
    assert sorted(r.key for r in logged) == sorted(  # type: ignore[attr-defined]
        ref.split("/", 3)[3] for ref in old)


def test_the_running_projector_expires_segments_on_its_timer(
        vigil_env: dict[str, str], schema: str, bucket: str, tmp_path: Path) -> None:
    ref = _put(bucket, "cam/2026/01/01/000001.000000.mp4")
    _row(schema, ref)
    env = {**vigil_env, "VIGIL_PROJECTOR_SCHEMA": schema, "VIGIL_BUCKET_SEGMENTS": bucket,
           "VIGIL_PROJECTOR_RETENTION_INTERVAL_S": "1",
           "VIGIL_PROJECTOR_RECORDING_RETENTION_DAYS": str(2 / 86400)}
    log_file = tmp_path / "projector.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vigil_cli", "project"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (_keys(bucket) or _rows(schema)):
            assert proc.poll() is None, log_file.read_text()[-3000:]
            time.sleep(0.5)
        assert not _keys(bucket) and not _rows(schema), log_file.read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)
    assert "recording segment expired and deleted" in log_file.read_text()

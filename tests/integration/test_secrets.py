"""No secret leaves where it is needed: a camera whose URL (or secret file) carries a
password fails, and the password is nowhere to be found afterwards: not in the edge's
log, not on any topic, not in the read model, not in any API response."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql
from starlette.testclient import TestClient

from schemas.topics import CATALOG, topic_name
from tests.integration.test_api import build
from tools.devstack.process import free_port
from tools.testkit.api import World, make_world
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


def _clear() -> None:
    from schemas.codec import default_codec

    get_settings.cache_clear()
    default_codec.cache_clear()


@pytest.fixture
def world(stack: dict[str, str]) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    _clear()
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            w.add_key("admin", "admin")
            w.add_key("viewer", "viewer")
            yield w
    finally:
        mp.undo()
        _clear()


def all_topic_bytes(prefix: str, timeout: float = 8.0) -> bytes:
    """Every key, value and header of every catalog topic of `prefix`, concatenated."""
    c = Consumer({"bootstrap.servers": get_settings().kafka_bootstrap,
                  "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        parts = []
        for t in CATALOG:
            name = f"{prefix}.{t.suffix}"
            md = c.list_topics(name, timeout=10).topics[name]
            parts += [TopicPartition(name, p, 0) for p in md.partitions]
        c.assign(parts)
        out = bytearray()
        deadline = time.monotonic() + timeout
        idle = 0
        while time.monotonic() < deadline and idle < 6:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                idle += 1
                continue
            idle = 0
            out += (msg.key() or b"") + (msg.value() or b"")
            for k, v in msg.headers() or []:
                out += k.encode() + (v or b"")
        return bytes(out)
    finally:
        c.close()


def read_model_text(dsn: str, schema: str) -> str:
    """Every row of every table of the read-model schema, as text."""
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_type = 'BASE TABLE'", (schema,))]
        rows = []
        for t in tables:
            q = sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema),
                                                               sql.Identifier(t))
            rows += [r[0] for r in conn.execute(q)]
    return "\n".join(rows)


def test_a_failing_camera_password_appears_nowhere(world: World, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    in_url = f"Url-Pw-{uuid.uuid4().hex[:8]}"
    in_file = f"File/Pw@{uuid.uuid4().hex[:8]}"
    secret = tmp_path / "cam2.password"
    secret.write_text(in_file + "\n")
    # nothing listens on these ports: PyAV fails with the full URL in its message
    site = tmp_path / "site.yaml"
    site.write_text(
        "edge_id: edge-sec\nsite_id: site-sec\nheartbeat_interval_s: 1\n"
        "backoff_initial_s: 0.2\nbackoff_max_s: 0.5\ncameras:\n"
        f"  - {{camera_id: cam-url, url: 'rtsp://admin:{in_url}@127.0.0.1:{free_port()}/s'}}\n"
        f"  - camera_id: cam-file\n    url: 'rtsp://127.0.0.1:{free_port()}/s'\n"
        f"    credentials: {{username: viewer, password_file: '{secret}'}}\n")
    env = {**os.environ, "VIGIL_TOPIC_PREFIX": world.prefix,
           "VIGIL_STATE_DIR": str(tmp_path / "state"), "VIGIL_LOG_FORMAT": "json",
           "VIGIL_LOG_LEVEL": "DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "vigil_cli", "edge", "run", "--config",
                             str(site)], env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        # several failed attempts of each camera (the edge is up and handling signals)
        while time.monotonic() < deadline and not all(
                sum(f"camera {c} failed" in line for line in list(lines)) >= 2
                for c in ("cam-url", "cam-file")):
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    logs = "".join(lines)
    assert "Connection refused" in logs and "rtsp://admin:***@127.0.0.1" in logs
    assert "rtsp://viewer:***@127.0.0.1" in logs  # the login from the file, masked

    topics = all_topic_bytes(world.prefix)
    assert b"Connection refused" in topics  # StreamDown reasons were published

    world.project()
    model = read_model_text(world.dsn, world.schema)
    assert "rtsp://admin:***@127.0.0.1" in model

    responses: list[str] = []
    caplog.set_level(logging.DEBUG)
    with TestClient(build(world), raise_server_exceptions=False) as client:
        for label in ("admin", "viewer"):
            h = world.auth(label)
            listing = client.get("/api/v1/cameras", headers=h)
            assert listing.status_code == 200, listing.text
            cams = {c["camera_id"]: c for c in listing.json()["items"]}
            assert cams["cam-url"]["stream_state"] in ("down", "reconnecting")
            assert "Connection refused" in cams["cam-url"]["stream_reason"]
            responses.append(listing.text)
            for cid in cams:
                responses.append(client.get(f"/api/v1/cameras/{cid}", headers=h).text)
            responses.append(client.get("/api/v1/sites", headers=h).text)
            responses.append(client.get("/api/v1/cameras/nope", headers=h).text)
            responses.append(client.get("/health/ready", headers=h).text)
            responses.append(client.get("/metrics").text)
    api_logs = "\n".join(r.getMessage() + repr(vars(r)) for r in caplog.records)
    topics = all_topic_bytes(world.prefix)  # the access records are on the log now, too
    # every configured secret: camera passwords, the API keys used, the object store's
    # secret, the Kafka password when one is set
    s = get_settings()
    configured = [in_url, in_file, *world.keys.values(), s.s3_secret_key.get_secret_value()]
    if s.kafka_sasl_password is not None:
        configured.append(s.kafka_sasl_password.get_secret_value())
    for password in configured:
        for where, text in (("edge logs", logs), ("API logs", api_logs),
                            ("read model", model), ("API", "\n".join(responses))):
            assert password not in text, f"{password} leaked into the {where}"
            assert password.replace("/", "%2F").replace("@", "%40") not in text
        assert password.encode() not in topics, f"{password} leaked onto a topic"


def test_dead_letter_reasons_are_redacted(world: World) -> None:
    from schemas.producer import EventProducer

    p = EventProducer()
    p.dead_letter(b"k", b"v", "decode failed for rtsp://u:DlqSecret9@h/x", stage="test")
    assert p.flush(10) == 0
    data: Any = all_topic_bytes(world.prefix, timeout=4)
    assert b"rtsp://u:***@h/x" in data and b"DlqSecret9" not in data
    assert topic_name("dlq").startswith(world.prefix)

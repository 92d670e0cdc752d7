"""The notifier against a local webhook receiver: down for a while -> retried with backoff,
then delivered with a valid HMAC signature; a destination that keeps failing ->
NotificationFailed and the alert in the DLQ."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from agents.notify_channels import sign
from schemas.events import AlertRaised
from schemas.producer import EventProducer
from schemas.topics import topic_name
from tests.integration.alerts_support import ROOT, Reader, free_port, module_env, of_type

pytestmark = pytest.mark.integration
SECRET = "s3cret"


class Receiver:
    """http.server on 127.0.0.1 recording (headers, body) of every POST it answers 200."""

    def __init__(self, port: int, status: int = 200):
        self.port, self.got = port, []  # type: int, list[tuple[dict[str, str], bytes]]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if status == 200:
                    outer.got.append((dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def env(stack: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    yield from module_env(stack, tmp_path, {})


def test_retries_until_receiver_is_up_then_delivers(env: dict[str, str], tmp_path: Path) -> None:
    up_port, bad_port = free_port(), free_port()
    bad = Receiver(bad_port, status=500)
    env = dict(env)
    env.update({
        "VIGIL_NOTIFY_WEBHOOKS": f"ops=http://127.0.0.1:{up_port}/hook,"
                                 f"broken=http://127.0.0.1:{bad_port}/hook",
        "VIGIL_NOTIFY_SECRET": SECRET,
        "VIGIL_NOTIFY_MAX_ATTEMPTS": "8",
        "VIGIL_NOTIFY_BACKOFF_BASE_S": "0.25",
        "VIGIL_NOTIFY_BACKOFF_MAX_S": "2",
    })
    log = (tmp_path / "notifier.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "notifier"], env=env,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    notes = Reader("notifications")
    receiver = None
    try:
        now = datetime.now(UTC)
        alert = AlertRaised.create(
            producer="test", alert_id="a-1", incident_key="cam|z|r", site_id=None,
            camera_id="cam", zone_id="z", rule_id="r", rule_type="loitering",
            severity="critical", first_evidence_at=now, last_evidence_at=now,
            snapshot_ref=None, version=1)
        producer = EventProducer()
        producer.send("alerts", "cam|z|r", alert)
        producer.flush()
        time.sleep(4.0)  # the receiver is down meanwhile: connection refused, retries
        receiver = Receiver(up_port)
        evs = notes.wait_for(lambda e: len(e) >= 2, 60)
        (ok,) = of_type(evs, "NotificationDelivered")
        assert ok.destination == "ops" and ok.attempts > 1 and ok.status_code == 200
        assert ok.alert_event_id == alert.event_id
        (failed,) = of_type(evs, "NotificationFailed")
        assert failed.destination == "broken" and failed.attempts == 8
        assert "HTTP 500" in failed.reason
        (headers, body) = receiver.got[0]
        assert headers["X-Vigil-Signature"] == sign(SECRET, body)
        assert headers["X-Vigil-Event-Id"] == alert.event_id
        assert json.loads(body)["alert_id"] == "a-1"
        dlq = Consumer({"bootstrap.servers": env["KAFKA_BOOTSTRAP"], "group.id": "dlq-check"})
        name = topic_name("dlq")
        dlq.assign([TopicPartition(name, p, 0)
                    for p in dlq.list_topics(name, timeout=10).topics[name].partitions])
        msgs = [m for m in (dlq.poll(1.0) for _ in range(10)) if m is not None and not m.error()]
        dlq.close()
        assert any(dict(m.headers() or []).get("vigil.stage") == b"notifier" for m in msgs)
    finally:
        proc.terminate()
        proc.wait(15)
        notes.close()
        bad.close()
        if receiver is not None:
            receiver.close()

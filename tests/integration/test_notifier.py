"""The notifier against a local webhook receiver: down for a while -> retried with backoff,
then delivered with a valid HMAC signature; a destination that keeps failing ->
NotificationFailed with the reason. Also the HTTP-based channels (chat, SMS/push
provider) and SMTP with STARTTLS and auth, each against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agents.notify_channels import (
    ChatConfig,
    EmailConfig,
    HttpProviderConfig,
    Message,
    make_channel,
    sign,
)
from agents.notify_templates import Templates
from schemas.events import AlertRaised
from schemas.producer import EventProducer
from tests.integration.alerts_support import ROOT, Reader, free_port, module_env, of_type
from tests.integration.notify_support import (
    Authenticator,
    NotifierProc,
    SmtpSink,
    self_signed_cert,
)

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
        "VIGIL_NOTIFY_STATE_FILE": str(tmp_path / "outbox.sqlite"),
    })
    proc = NotifierProc(env, tmp_path / "notifier.log")
    notes = Reader("notifications")
    receiver = None
    try:
        proc.start()
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
        # no route configured: the default route sends every alert event to every channel
        assert (ok.destination, ok.channel) == ("default", "ops")
        assert ok.attempts > 1 and ok.status_code == 200
        assert ok.alert_event_id == alert.event_id
        (failed,) = of_type(evs, "NotificationFailed")
        assert failed.channel == "broken" and failed.attempts == 8
        assert "HTTP 500" in failed.reason
        (headers, body) = receiver.got[0]
        assert headers["X-Vigil-Signature"] == sign(SECRET, body)
        assert headers["X-Vigil-Event-Id"] == alert.event_id
        assert json.loads(body)["alert_id"] == "a-1"
        assert json.loads(body)["delivery_id"] == headers["X-Vigil-Delivery-Id"]

        # the operator fixes the receiver and retries the failed delivery from the CLI
        listed = subprocess.run(
            [sys.executable, "-m", "vigil_cli", "notify", "failed", "--outbox",
             env["VIGIL_NOTIFY_STATE_FILE"]], env=env, cwd=ROOT, capture_output=True,
            text=True, timeout=60, check=True)
        (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert entry["notification_event_id"] == failed.event_id
        assert entry["channel"] == "broken" and "HTTP 500" in entry["reason"]
        bad.close()
        bad = Receiver(bad_port)
        subprocess.run([sys.executable, "-m", "vigil_cli", "notify", "retry", failed.event_id,
                        "--alert-id", "a-1", "--by", "test-operator"], env=env, cwd=ROOT,
                       capture_output=True, timeout=60, check=True)
        evs = notes.wait_for(lambda e: len(of_type(e, "NotificationDelivered")) >= 2, 60)
        again = [e for e in of_type(evs, "NotificationDelivered") if e.channel == "broken"]
        assert len(again) == 1 and len(bad.got) == 1
        retried = of_type(evs, "RetryNotification")
        assert [r.requested_by for r in retried] == ["test-operator"]
    finally:
        proc.stop()
        notes.close()
        bad.close()
        if receiver is not None:
            receiver.close()


def _msg(recipient: str = "ops@x.example") -> Message:
    return Message("d-1", "AlertRaised", "e-1", {
        "alert_id": "a-1", "camera_id": "cam-1", "zone_id": "z1", "rule_type": "loitering",
        "severity": "warning", "site_id": "s1"}, recipient=recipient,
        console_url="https://console/alerts/a-1")


def test_chat_and_http_provider_channels_post_their_formats() -> None:
    rec = Receiver(free_port())
    templates = Templates()
    url = f"http://127.0.0.1:{rec.port}/hook"
    chans = [make_channel(ChatConfig(name="slack", url=url), templates),
             make_channel(ChatConfig(name="teams", url=url, flavor="teams"), templates),
             make_channel(HttpProviderConfig(name="sms", url=url, token="tok-1"), templates)]

    async def go() -> list[bool]:
        out = [(await c.send(_msg("+4917012345"))).ok for c in chans]
        for c in chans:
            await c.close()
        return out

    try:
        assert asyncio.run(go()) == [True, True, True]
        (h1, slack), (_, teams), (h3, sms) = rec.got
        assert json.loads(slack)["text"].startswith("*[WARNING] loitering at cam-1 / z1*\n")
        assert "https://console/alerts/a-1" in json.loads(slack)["text"]
        t = json.loads(teams)
        assert (t["@type"], t["summary"]) == ("MessageCard", "[WARNING] loitering at cam-1 / z1")
        s = json.loads(sms)
        assert (s["to"], s["delivery_id"]) == ("+4917012345", "d-1")
        assert h3["Authorization"] == "Bearer tok-1" and h1["X-Vigil-Delivery-Id"] == "d-1"
    finally:
        rec.close()


def test_email_over_starttls_with_auth(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    sink = SmtpSink(free_port(), tls_context=ctx, require_starttls=True, auth_required=True,
                    authenticator=Authenticator("vigil", "pw-1"))
    sink.start()
    templates = Templates()

    def channel(password: str, security: str = "starttls") -> Any:
        return make_channel(EmailConfig(name="mail", port=sink.port, security=security,
                                        username="vigil", password=password,
                                        validate_certs=False), templates)

    try:
        ok = asyncio.run(channel("pw-1").send(_msg()))
        assert ok.ok, ok.reason
        ((rcpts, m),) = sink.messages()
        assert rcpts == ["ops@x.example"] and m["Subject"] == "[WARNING] loitering at cam-1 / z1"
        refused = asyncio.run(channel("wrong").send(_msg()))
        assert not refused.ok and not refused.retryable  # 535: a retry cannot fix it
        assert "pw-1" not in refused.reason and "wrong" not in refused.reason
        plain = asyncio.run(channel("pw-1", "none").send(_msg()))
        assert not plain.ok  # the server insists on STARTTLS before AUTH
        assert len(sink.messages()) == 1
    finally:
        sink.stop()

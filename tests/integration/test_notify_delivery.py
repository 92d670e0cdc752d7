"""The notifier end to end with real counterparts: Kafka, the object store, an SMTP server
(aiosmtpd) and an MQTT broker (mosquitto) with an independent subscriber; for the
annotated snapshot also a Faust worker running the alerts and evidence agents.

Each test has its own topic prefix (routes live on the config topic) and SMTP port; the
broker is shared by the module. No timing asserts: "late" means "after an outage"."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.events import (
    AlertEscalated,
    AlertRaised,
    CameraConfigured,
    EvidenceCaptured,
    RouteConfigured,
)
from schemas.producer import EventProducer
from tests.integration.alerts_support import Reader, Worker, free_port, module_env, of_type
from tests.integration.notify_support import Mosquitto, NotifierProc, SmtpSink, Subscriber

pytestmark = pytest.mark.integration
JPEG = b"\xff\xd8\xff\xe0" + b"annotated-snapshot" * 50 + b"\xff\xd9"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    m = Mosquitto(free_port(), tmp_path_factory.mktemp("mqtt"))
    yield m
    m.stop()


@pytest.fixture
def env(stack: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("S3_ENDPOINT", stack["S3_ENDPOINT"])
    from vigil.objects import client

    client.cache_clear()
    yield from module_env(stack, tmp_path, {})
    client.cache_clear()


def channels_file(tmp: Path, smtp_port: int, mqtt_port: int | None = None) -> Path:
    f = tmp / "channels.yaml"
    lines = [f"- {{name: mail, kind: email, host: 127.0.0.1, port: {smtp_port}, "
             "security: none, sender: 'vigil@site-1.example', rate_per_min: 6000}"]
    if mqtt_port is not None:
        lines.append(f"- {{name: ha, kind: mqtt, host: 127.0.0.1, port: {mqtt_port}}}")
    f.write_text("\n".join(lines) + "\n")
    return f


def notifier_env(env: dict[str, str], tmp: Path, channels: Path, **extra: str) -> dict[str, str]:
    e = dict(env)
    e.update({"VIGIL_NOTIFY_FILE": str(channels),
              "VIGIL_NOTIFY_CONSOLE_URL": "https://console.site-1.example",
              "VIGIL_NOTIFY_STATE_FILE": str(tmp / "outbox.sqlite"),
              "VIGIL_NOTIFY_BACKOFF_BASE_S": "0.5", "VIGIL_NOTIFY_BACKOFF_MAX_S": "4"})
    e.update(extra)
    return e


def publish_config(*routes: RouteConfigured, tz: str = "UTC") -> None:
    p = EventProducer()
    p.send("config", "camera/cam-1", CameraConfigured.create(
        producer="test", camera_id="cam-1", site_id="site-1", edge_id="e1", name="Gate",
        timezone=tz))
    for r in routes:
        p.send("config", f"route/{r.route_id}", r)
    p.flush()


def route(route_id: str, **kw: Any) -> RouteConfigured:
    return RouteConfigured.create(producer="test", route_id=route_id, **kw)


def alert(alert_id: str, severity: str = "warning", snapshot: str | None = None,
          hit: str | None = None) -> AlertRaised:
    """A loitering alert; `hit` = the RuleTriggered it was raised from (causation), whose
    EvidenceCaptured the notifier holds a first email for."""
    now = datetime.now(UTC)
    return AlertRaised.create(
        producer="test", alert_id=alert_id, incident_key=f"cam-1|z1|{alert_id}",
        site_id="site-1", camera_id="cam-1", zone_id="z1", rule_id=f"r-{alert_id}",
        rule_type="loitering", severity=severity, first_evidence_at=now, last_evidence_at=now,
        snapshot_ref=snapshot, version=1, causation_id=hit)


def attachment(msg: Any) -> tuple[str, str, bytes] | None:
    for part in msg.walk():
        if part.get_filename():
            return (part.get_filename(), part.get_content_type(),
                    part.get_payload(decode=True))
    return None


def body_text(msg: Any) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            return str(part.get_payload(decode=True).decode())
    raise AssertionError("no text/plain part")


def read_object(ref: str) -> bytes:
    from vigil.objects import client, split_ref
    from vigil.settings import get_settings

    s = get_settings()
    bucket, key = split_ref(ref, s.bucket_snapshots, s.buckets)
    resp = client().get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def send_alerts(*events: Any) -> None:
    p = EventProducer()
    for ev in events:
        p.send("alerts", ev.incident_key, ev)
    p.flush()


def test_alert_reaches_email_with_snapshot_and_mqtt(env: dict[str, str], tmp_path: Path,
                                                   broker: Mosquitto) -> None:
    from vigil.objects import store_snapshot

    ref = store_snapshot(JPEG, f"test/{tmp_path.name}/a-1.jpg")
    smtp = SmtpSink(free_port())
    smtp.start()
    sub = Subscriber(broker.port)
    publish_config(route("ops", channels=["mail", "ha"], recipients=["ops@site-1.example"]))
    proc = NotifierProc(notifier_env(env, tmp_path, channels_file(tmp_path, smtp.port,
                                                                  broker.port),
                                     VIGIL_NOTIFY_EVIDENCE_WAIT_S="2"),
                        tmp_path / "notifier.log")
    notes = Reader("notifications")
    try:
        proc.start()
        # raised from a rule hit whose evidence never arrives: held 2 s, then the frame
        ev = alert("a-1", "critical", snapshot=ref, hit="hit-without-evidence")
        send_alerts(ev)
        ((rcpts, msg),) = smtp.wait_for(lambda m: len(m) >= 1, 60)
        assert rcpts == ["ops@site-1.example"]
        assert msg["To"] == "ops@site-1.example"
        assert msg["From"] == "vigil@site-1.example"
        assert msg["Subject"] == "[CRITICAL] loitering at cam-1 / z1"
        assert msg["X-Vigil-Event-Id"] == ev.event_id
        assert msg["Message-ID"] == f"<{msg['X-Vigil-Delivery-Id']}@vigil>"
        text, snap = None, None
        for part in msg.walk():
            if part.get_content_type() == "text/plain":
                text = part.get_payload(decode=True).decode()
            if part.get_filename():
                snap = (part.get_filename(), part.get_content_type(),
                        part.get_payload(decode=True))
        assert text is not None and "https://console.site-1.example/alerts/a-1" in text
        assert "Severity: critical" in text and "Site: site-1" in text
        assert snap == ("a-1.jpg", "image/jpeg", JPEG)
        assert ("The annotated snapshot was not ready within 2 s of the alert; the camera's "
                "frame is attached instead.") in " ".join(text.split())

        got = sub.wait_for(lambda m: any(t.endswith("/alerts") for t, _, _ in m), 30)
        (topic, body, _), = [(t, b, r) for t, b, r in got if t.endswith("/alerts")]
        assert topic == "vigil/site-1/cam-1/alerts"
        payload = json.loads(body)
        assert (payload["alert_id"], payload["event_type"], payload["severity"]) == (
            "a-1", "AlertRaised", "critical")
        late = Subscriber(broker.port, "vigil/notifier/availability")  # joins afterwards
        avail = late.wait_for(lambda m: bool(m), 10)
        late.close()
        assert avail[0][1:] == (b"online", True)  # retained

        evs = notes.wait_for(lambda e: len(of_type(e, "NotificationDelivered")) >= 2, 30)
        assert {e.channel for e in of_type(evs, "NotificationDelivered")} == {"mail", "ha"}
    finally:
        proc.stop()
        notes.close()
        sub.close()
        smtp.stop()


def test_routing_by_severity_level_and_quiet_hours(env: dict[str, str], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    quiet = ((now - timedelta(hours=1)).strftime("%H:%M"),
             (now + timedelta(hours=1)).strftime("%H:%M"))
    smtp = SmtpSink(free_port())
    smtp.start()
    publish_config(
        route("ops", channels=["mail"], recipients=["ops@x.example"], levels=[0]),
        route("lead", channels=["mail"], recipients=["lead@x.example"], levels=[1]),
        route("admin", channels=["mail"], recipients=["admin@x.example"], levels=[2]),
        route("night", channels=["mail"], recipients=["night@x.example"], levels=[0],
              quiet_start=quiet[0], quiet_end=quiet[1]))
    proc = NotifierProc(notifier_env(env, tmp_path, channels_file(tmp_path, smtp.port)),
                        tmp_path / "notifier.log")
    notes = Reader("notifications")
    try:
        proc.start()
        warn, crit = alert("a-warn", "warning"), alert("a-crit", "critical")
        esc = AlertEscalated.create(producer="test", alert_id="a-crit",
                                    incident_key=crit.incident_key, level=2,
                                    deadline_at=now, version=2)
        send_alerts(warn, crit, esc)
        notes.wait_for(lambda e: len(of_type(e, "NotificationDelivered")) >= 4, 60)
        time.sleep(2)  # anything misrouted would arrive meanwhile
        got = sorted((r[0], m["X-Vigil-Event-Type"], m["Subject"].split()[-1])
                     for r, m in smtp.messages())
        assert [(r, t) for r, t, _ in got] == [
            ("admin@x.example", "AlertEscalated"),  # level 2: the admin route only
            ("night@x.example", "AlertRaised"),     # critical despite quiet hours
            ("ops@x.example", "AlertRaised"),
            ("ops@x.example", "AlertRaised")]
        night = [m for r, m in smtp.messages() if r == ["night@x.example"]]
        assert night[0]["Subject"].startswith("[CRITICAL]")  # the warning was held back
        assert len(of_type(notes.events(), "NotificationDelivered")) == 4
    finally:
        proc.stop()
        notes.close()
        smtp.stop()


def test_smtp_down_for_a_minute_then_back_delivers_once(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    smtp = SmtpSink(free_port())  # not started: connection refused
    publish_config(route("ops", channels=["mail"], recipients=["ops@x.example"]))
    proc = NotifierProc(notifier_env(env, tmp_path, channels_file(tmp_path, smtp.port)),
                        tmp_path / "notifier.log")
    notes = Reader("notifications")
    try:
        proc.start()
        send_alerts(alert("a-late", "critical"))
        time.sleep(60)  # the outage
        assert smtp.messages() == []
        smtp.start()
        smtp.wait_for(lambda m: len(m) >= 1, 60)
        evs = notes.wait_for(lambda e: len(of_type(e, "NotificationDelivered")) >= 1, 30)
        time.sleep(3)  # a duplicate would arrive meanwhile
        assert len(smtp.messages()) == 1
        (ok,) = of_type(notes.events(), "NotificationDelivered")
        assert ok.attempts > 1 and ok.alert_id == "a-late"
        assert of_type(evs, "NotificationFailed") == []
    finally:
        proc.stop()
        notes.close()
        smtp.stop()


def test_sigkill_mid_send_delivers_each_and_confirms_none_twice(env: dict[str, str],
                                                                tmp_path: Path) -> None:
    smtp = SmtpSink(free_port(), delay_s=0.4)  # stored, then the 250 comes late
    smtp.start()
    publish_config(route("ops", channels=["mail"], recipients=["ops@x.example"]))
    nenv = notifier_env(env, tmp_path, channels_file(tmp_path, smtp.port),
                        VIGIL_NOTIFY_CONCURRENCY="2")
    proc = NotifierProc(nenv, tmp_path / "notifier.log")
    notes = Reader("notifications")
    alerts = [alert(f"k-{i}") for i in range(12)]
    try:
        proc.start()
        send_alerts(*alerts)
        smtp.wait_for(lambda m: len(m) >= 4, 60)
        proc.kill9()  # with sends in flight
        received_before = len(smtp.messages())
        proc.start()
        smtp.wait_for(lambda m: len({mm["X-Vigil-Event-Id"] for _, mm in m}) >= 12, 90)
        evs = notes.wait_for(lambda e: len({x.event_id for x in of_type(
            e, "NotificationDelivered")}) >= 12, 60)
        time.sleep(2)
        notes.poll(1.0)
        evs = notes.events()
        delivered = of_type(evs, "NotificationDelivered")
        # every alert delivered; each delivery confirmed under exactly one id
        assert {e.alert_id for e in delivered} == {a.alert_id for a in alerts}
        by_alert: dict[str, set[str]] = {}
        for e in delivered:
            by_alert.setdefault(e.alert_event_id, set()).add(e.event_id)
        assert all(len(ids) == 1 for ids in by_alert.values()) and len(by_alert) == 12
        ids = [m["X-Vigil-Delivery-Id"] for _, m in smtp.messages()]
        assert len(set(ids)) == 12
        # at-least-once: only messages in flight at the kill may arrive twice
        assert len(ids) - 12 <= 2 and received_before >= 4
    finally:
        proc.stop()
        notes.close()
        smtp.stop()


class _Sender:
    """What `send_hit` needs of a testkit World: `send` and `producer`."""

    def __init__(self, producer: EventProducer):
        self.producer = producer

    def send(self, suffix: str, key: str, event: Any) -> Any:
        self.producer.send(suffix, key, event)
        return event


def test_rule_alert_email_carries_the_annotated_snapshot(env: dict[str, str], tmp_path: Path,
                                                         broker: Mosquitto) -> None:
    """A rule hit through the real alerts and evidence agents: the email's attachment is
    the evidence agent's annotated rendering (the very object in the store), not the
    frame; MQTT gets the alert too."""
    from tests.integration.test_evidence_agent import config_events, send_hit

    smtp = SmtpSink(free_port())
    smtp.start()
    sub = Subscriber(broker.port)
    p = EventProducer()
    for key, ev in config_events("cam-ev"):
        p.send("config", key, ev)
    p.send("config", "route/ops", route("ops", channels=["mail", "ha"],
                                        recipients=["ops@site-ev.example"]))
    p.flush()
    worker = Worker({**env, "VIGIL_WORKER_AGENTS": "alerts,evidence",
                     "VIGIL_WORKER_ID": "notify-evidence"}, tmp_path / "worker.log")
    # the bound is generous: a loaded machine renders slowly, and the test is about what
    # is attached, not how fast
    proc = NotifierProc(notifier_env(env, tmp_path, channels_file(tmp_path, smtp.port,
                                                                  broker.port),
                                     VIGIL_NOTIFY_EVIDENCE_WAIT_S="120"),
                        tmp_path / "notifier.log")
    evidence = Reader("evidence")
    try:
        worker.start()
        proc.start()
        hit, _ = send_hit(_Sender(p), "cam-ev")  # type: ignore[arg-type]
        ((rcpts, msg),) = smtp.wait_for(lambda m: len(m) >= 1, 180)
        (cap,) = [e for e in evidence.wait_for(lambda e: bool(of_type(e, "EvidenceCaptured")),
                                               60) if isinstance(e, EvidenceCaptured)]
        assert cap.rule_event_id == hit.event_id
        annotated, frame = read_object(cap.annotated_ref), read_object(cap.snapshot_ref)
        assert annotated != frame
        assert rcpts == ["ops@site-ev.example"] and msg["X-Vigil-Event-Type"] == "AlertRaised"
        name, ctype, data = attachment(msg) or ("", "", b"")
        assert (ctype, data) == ("image/jpeg", annotated)  # the annotated object, byte for byte
        assert name.endswith("-annotated.jpg")
        assert "not ready" not in body_text(msg)
        # the alert names no site; the notifier takes it from the camera's configuration
        got = sub.wait_for(lambda m: any(t == "vigil/site-ev/cam-ev/alerts" for t, _, _ in m),
                           30)
        payload = json.loads(next(b for t, b, _ in got if t == "vigil/site-ev/cam-ev/alerts"))
        assert payload["rule_id"] == "cam-ev.r" and payload["event_type"] == "AlertRaised"
        time.sleep(2)  # a second mail (the raw one after the hold) would arrive meanwhile
        assert len(smtp.messages()) == 1
    finally:
        proc.stop()
        worker.stop()
        evidence.close()
        sub.close()
        smtp.stop()


def test_sigkill_while_holding_for_evidence_loses_nothing(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """Killed while an email waits for its annotated snapshot: after the restart the
    evidence still releases it, once, with the annotated picture."""
    import sqlite3

    from vigil.objects import store_snapshot

    smtp = SmtpSink(free_port())
    smtp.start()
    publish_config(route("ops", channels=["mail"], recipients=["ops@x.example"]))
    nenv = notifier_env(env, tmp_path, channels_file(tmp_path, smtp.port),
                        VIGIL_NOTIFY_EVIDENCE_WAIT_S="300")
    proc = NotifierProc(nenv, tmp_path / "notifier.log")
    outbox = tmp_path / "outbox.sqlite"
    try:
        proc.start()
        send_alerts(alert("a-held", "critical", hit="hit-held"))
        end = time.monotonic() + 60
        while time.monotonic() < end:  # the held row is in the outbox
            with sqlite3.connect(outbox) as db:
                if db.execute("SELECT COUNT(*) FROM deliveries WHERE awaits='hit-held' AND "
                              "status='pending'").fetchone()[0]:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the email was never held for its evidence")
        proc.kill9()
        assert smtp.messages() == []
        ref = store_snapshot(JPEG, f"test/{tmp_path.name}/annotated.jpg")
        now = datetime.now(UTC)
        p = EventProducer()
        p.send("evidence", "cam-1", EvidenceCaptured.create(
            producer="test", causation_id="hit-held", camera_id="cam-1",
            rule_event_id="hit-held", rule_id="r-a-held", rule_type="loitering",
            frame_event_id="f", analysis_event_id="an", frame_at=now, first_evidence_at=now,
            last_evidence_at=now, width=640, height=480, snapshot_ref=ref,
            annotated_ref=ref, thumbnail_ref=ref, track_ids=["t1"], detection_ids=["d1"],
            highlighted_detection_ids=["d1"]))
        p.flush()
        proc.start()
        ((_, msg),) = smtp.wait_for(lambda m: len(m) >= 1, 60)
        name, _, data = attachment(msg) or ("", "", b"")
        assert data == JPEG and name == "a-held-annotated.jpg"
        time.sleep(2)
        assert len(smtp.messages()) == 1
    finally:
        proc.stop()
        smtp.stop()

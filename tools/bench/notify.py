"""`vigil bench notify`: AlertRaised on Kafka -> message received by an SMTP server and by
an MQTT subscriber, through a real notifier process, at 100 alerts/s.

Baseline, same run, same servers: the raw channel send (EmailChannel / MqttChannel
`send` called directly, no Kafka, no outbox, no routing), timed from the call to the
moment the server side has the message. ``value`` is the end-to-end p99 over both
channels in ms; ``ratio`` = baseline p99 / end-to-end p99 (higher is better; 1.0 = the
notifier adds nothing over the bare protocol exchange). Seed target: delivery < 5 s.

The alerts name no rule hit, so the notifier's hold of a first email for the annotated
snapshot (docs/notifications.md) is not part of these figures; in a deployment that
email goes when the evidence agent has rendered (or after VIGIL_NOTIFY_EVIDENCE_WAIT_S).

Needs the dev stack (Kafka) and Debian's mosquitto; everything binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import email
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.events import AlertRaised, CameraConfigured, RouteConfigured
from schemas.topics import apply_topics, delete_topics
from tools.bench.runner import BenchResult
from tools.devstack.process import free_port
from vigil.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
RATE_PER_S = 100.0


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, round(q * (len(xs) - 1)))], 1) if xs else float("nan")


class _Arrivals:
    """Arrival time (perf_counter) by key, filled by the SMTP handler / MQTT callback."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, key: str) -> None:
        with self.lock:
            self.at.setdefault(key, time.perf_counter())

    def count(self, keys: set[str]) -> int:
        with self.lock:
            return len(keys & self.at.keys())


class _SmtpHandler:
    def __init__(self, arrivals: _Arrivals):
        self.arrivals = arrivals

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content)
        self.arrivals.add(str(msg["X-Vigil-Event-Id"]))
        return "250 OK"


def _mosquitto(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _subscriber(port: int, arrivals: _Arrivals) -> Any:
    import paho.mqtt.client as mqtt

    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}")
    c.on_connect = lambda cl, *_a: cl.subscribe("vigil/+/+/alerts", qos=1)
    c.on_subscribe = lambda *_a: ready.set()
    c.on_message = lambda _c, _u, m: arrivals.add(json.loads(m.payload)["event_id"])
    deadline = time.monotonic() + 20
    while True:
        try:
            c.connect("127.0.0.1", port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    c.loop_start()
    if not ready.wait(10):
        raise RuntimeError("MQTT subscription not acknowledged")
    return c


def _alert(i: int, run: str) -> AlertRaised:
    now = datetime.now(UTC)
    return AlertRaised.create(
        producer="bench", alert_id=f"{run}-{i}", incident_key=f"cam-1|z1|{run}-{i}",
        site_id="site-1", camera_id="cam-1", zone_id="z1", rule_id="r1",
        rule_type="loitering", severity="critical", first_evidence_at=now,
        last_evidence_at=now, snapshot_ref=None, version=1)


def _wait(arrivals: list[_Arrivals], keys: set[str], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(a.count(keys) < len(keys) for a in arrivals):
        time.sleep(0.05)


async def _raw(n: int, smtp_port: int, mqtt_port: int, mail: _Arrivals, mq: _Arrivals
               ) -> tuple[list[float], list[float]]:
    """The baseline: the bare channel sends, paced like the end-to-end run."""
    from agents.notify_channels import EmailConfig, Message, MqttConfig, make_channel
    from agents.notify_templates import Templates

    t = Templates()
    em = make_channel(EmailConfig(name="mail", port=smtp_port, security="none"), t)
    mqc = make_channel(MqttConfig(name="ha", port=mqtt_port), t)
    sent: dict[str, float] = {}
    tasks = []
    sem = asyncio.Semaphore(16)  # the notifier's default concurrency

    async def one(key: str, ch: Any, rcpt: str) -> None:
        async with sem:
            msg = Message(delivery_id=key, event_type="AlertRaised", alert_event_id=key,
                          payload={"event_id": key, "alert_id": key, "camera_id": "cam-1",
                                   "site_id": "site-1", "severity": "critical"},
                          recipient=rcpt)
            await ch.send(msg)

    start = time.perf_counter()
    for i in range(n):
        key = f"raw-{uuid.uuid4().hex}"
        await asyncio.sleep(max(0.0, start + i / RATE_PER_S - time.perf_counter()))
        sent[key] = time.perf_counter()
        tasks += [asyncio.create_task(one(key, em, "ops@bench.example")),
                  asyncio.create_task(one(key, mqc, ""))]
    await asyncio.gather(*tasks)
    await asyncio.to_thread(_wait, [mail, mq], set(sent), 30)
    await em.close()
    await mqc.close()
    lat_mail = [(mail.at[k] - s) * 1000 for k, s in sent.items() if k in mail.at]
    lat_mq = [(mq.at[k] - s) * 1000 for k, s in sent.items() if k in mq.at]
    return lat_mail, lat_mq


def run(quick: bool = False) -> BenchResult:
    from aiosmtpd.controller import Controller

    from schemas.producer import EventProducer

    n = 200 if quick else 1000
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    settings = get_settings()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    apply_topics(settings.kafka_bootstrap, prefix, partitions_override=2)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-notify-bench-"))
    mail, mq = _Arrivals(), _Arrivals()
    smtp_port, mqtt_port = free_port(), free_port()
    smtp = Controller(_SmtpHandler(mail), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    broker = _mosquitto(mqtt_port, tmp)
    notifier: subprocess.Popen[bytes] | None = None
    sub = None
    os.environ["VIGIL_TOPIC_PREFIX"] = prefix
    get_settings.cache_clear()
    try:
        sub = _subscriber(mqtt_port, mq)
        raw_mail, raw_mq = asyncio.run(_raw(n, smtp_port, mqtt_port, mail, mq))

        channels = tmp / "channels.yaml"
        channels.write_text(
            f"- {{name: mail, kind: email, host: 127.0.0.1, port: {smtp_port}, "
            "security: none, rate_per_min: 1000000, burst: 10000}\n"
            f"- {{name: ha, kind: mqtt, host: 127.0.0.1, port: {mqtt_port}}}\n")
        producer = EventProducer()
        producer.send("config", "camera/cam-1", CameraConfigured.create(
            producer="bench", camera_id="cam-1", site_id="site-1", edge_id="e1", name="c"))
        for rid, ch, rcpt in (("ops-mail", "mail", ["ops@bench.example"]),
                              ("ops-mqtt", "ha", [])):
            producer.send("config", f"route/{rid}", RouteConfigured.create(
                producer="bench", route_id=rid, channels=[ch], recipients=rcpt))
        producer.flush()
        env = dict(os.environ, VIGIL_TOPIC_PREFIX=prefix, VIGIL_STATE_DIR=str(tmp),
                   VIGIL_NOTIFY_FILE=str(channels), VIGIL_LOG_FORMAT="text")
        log = (tmp / "notifier.log").open("wb")
        notifier = subprocess.Popen([sys.executable, "-m", "agents.cli", "notifier"],
                                    env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + 90
        while b"notifier started" not in (tmp / "notifier.log").read_bytes():
            if notifier.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"notifier did not start; see {tmp / 'notifier.log'}")
            time.sleep(0.2)

        run_id = uuid.uuid4().hex[:6]
        sent: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(n):
            ev = _alert(i, run_id)
            time.sleep(max(0.0, start + i / RATE_PER_S - time.perf_counter()))
            sent[ev.event_id] = time.perf_counter()
            producer.send("alerts", ev.incident_key, ev)
        producer.flush()
        offered_s = time.perf_counter() - start
        _wait([mail, mq], set(sent), 60)
        e2e_mail = [(mail.at[k] - s) * 1000 for k, s in sent.items() if k in mail.at]
        e2e_mq = [(mq.at[k] - s) * 1000 for k, s in sent.items() if k in mq.at]
    finally:
        if notifier is not None and notifier.poll() is None:
            notifier.terminate()
            try:
                notifier.wait(20)
            except subprocess.TimeoutExpired:
                notifier.kill()
        if sub is not None:
            sub.loop_stop()
            sub.disconnect()
        broker.terminate()
        broker.wait(10)
        smtp.stop()
        os.environ.pop("VIGIL_TOPIC_PREFIX", None)
        get_settings.cache_clear()
        delete_topics(settings.kafka_bootstrap, prefix)

    e2e_all, raw_all = e2e_mail + e2e_mq, raw_mail + raw_mq
    p99, base99 = _pct(e2e_all, 0.99), _pct(raw_all, 0.99)
    return BenchResult(
        name="notify", value=p99, unit="ms (p99, AlertRaised -> received, email+MQTT)",
        baseline=base99, ratio=round(base99 / p99, 3) if p99 else 0.0,
        details={
            "alerts": n, "rate_per_s": RATE_PER_S, "offered_rate_per_s": round(n / offered_s, 1),
            "email": {"received": len(e2e_mail), "p50_ms": _pct(e2e_mail, 0.5),
                      "p99_ms": _pct(e2e_mail, 0.99), "max_ms": _pct(e2e_mail, 1.0),
                      "raw_p50_ms": _pct(raw_mail, 0.5), "raw_p99_ms": _pct(raw_mail, 0.99)},
            "mqtt": {"received": len(e2e_mq), "p50_ms": _pct(e2e_mq, 0.5),
                     "p99_ms": _pct(e2e_mq, 0.99), "max_ms": _pct(e2e_mq, 1.0),
                     "raw_p50_ms": _pct(raw_mq, 0.5), "raw_p99_ms": _pct(raw_mq, 0.99)},
            "p50_ms": _pct(e2e_all, 0.5),
            "raw_p50_ms": _pct(raw_all, 0.5),
            "mean_ms": round(statistics.fmean(e2e_all), 1) if e2e_all else None,
            "lost": 2 * n - len(e2e_all),
            "seed_target_ms": 5000, "aim_p99_ms": 1000,
            # the bench's alerts name no rule hit (no causation id), so no email is held
            # for its annotated snapshot: these figures are the delivery path alone
            "evidence_hold": "not exercised",
        })

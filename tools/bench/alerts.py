"""`vigil bench alerts`: rule hit -> AlertRaised latency and commands/s through a real worker.

Baseline, same broker, same run: the raw produce -> consume round trip of one message
(confluent producer, one consumer), which is the floor for any Kafka hop. The alert path
is two hops (scene -> alert-input -> alerts) plus a broker-acknowledged send before each
state write (see agents/alerts.py), so its latency is expected to be a small multiple of
the baseline; ``ratio`` = baseline p50 / alert p50 (higher is better, 1.0 = no overhead
over a single raw hop).

Commands/s: N acknowledgements of open alerts (plus rejected duplicates) sent in a burst,
timed until every outcome (AlertAcknowledged or CommandRejected) is on the alerts topic.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.codec import default_codec
from schemas.events import AcknowledgeAlert, AlertRaised, Event, RuleTriggered
from schemas.topics import apply_topics
from tools.bench.runner import BenchResult, percentile
from vigil.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


class _Bus:
    def __init__(self, bootstrap: str, prefix: str):
        self.prefix = prefix
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0,
                                  "partitioner": "murmur2_random", "acks": "all"})
        self.consumer = Consumer({"bootstrap.servers": bootstrap,
                                  "group.id": f"bench-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False})

    def name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def follow(self, suffix: str) -> None:
        name = self.name(suffix)
        md = self.consumer.list_topics(name, timeout=10)
        self.consumer.assign([TopicPartition(name, p, 0) for p in md.topics[name].partitions])

    def send(self, suffix: str, key: str, value: bytes | Event) -> None:
        raw = value if isinstance(value, bytes) else default_codec().encode(value)
        self.producer.produce(self.name(suffix), key=key.encode(), value=raw)
        self.producer.flush(10)

    def next_event(self, timeout: float = 30.0) -> tuple[bytes, Event | bytes]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            try:
                return msg.key(), default_codec().decode(msg.value())
            except Exception:
                return msg.key(), msg.value()
        raise TimeoutError("no message")


def _hit(camera: str) -> RuleTriggered:
    now = datetime.now(UTC)
    return RuleTriggered.create(
        producer="bench", occurred_at=now, camera_id=camera, zone_id="z", rule_id="r",
        rule_type="loitering", severity="warning", value=1.0, threshold=1.0, track_ids=[],
        first_evidence_at=now, last_evidence_at=now, evidence_event_ids=[])


def run(quick: bool = False) -> BenchResult:
    settings = get_settings()
    n = 30 if quick else 200
    n_cmds = 100 if quick else 1000
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    apply_topics(settings.kafka_bootstrap, prefix, partitions_override=2)
    state = Path(tempfile.mkdtemp(prefix="vigil-alerts-bench-"))
    (state / "worker").mkdir(parents=True)
    env = dict(os.environ, VIGIL_TOPIC_PREFIX=prefix, VIGIL_STATE_DIR=str(state),
               VIGIL_WORKER_AGENTS="alerts", VIGIL_WORKER_WEB_PORT="16990",
               VIGIL_LOG_FORMAT="text", VIGIL_ALERTS_TICK_S="5")
    log = (state / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "agents.cli", "worker"], env=env,
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Worker ready" not in (state / "worker.log").read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
            time.sleep(0.5)

        # baseline: raw round trip on the same broker
        raw_bus = _Bus(settings.kafka_bootstrap, prefix)
        raw_bus.follow("notifications")
        raw = []
        for i in range(n):
            t0 = time.perf_counter()
            raw_bus.send("notifications", f"k{i}", b"x" * 200)
            raw_bus.next_event()
            raw.append((time.perf_counter() - t0) * 1000)

        # rule hit -> AlertRaised, one incident at a time
        bus = _Bus(settings.kafka_bootstrap, prefix)
        bus.follow("alerts")
        lat, alerts = [], []
        for i in range(n):
            t0 = time.perf_counter()
            bus.send("scene", f"cam{i}", _hit(f"cam{i}"))
            while True:
                _, ev = bus.next_event()
                if isinstance(ev, AlertRaised):
                    alerts.append(ev)
                    break
            lat.append((time.perf_counter() - t0) * 1000)

        # commands/s: a burst of acks over the open alerts (first wins, the rest rejected)
        cmds = [AcknowledgeAlert.create(producer="bench", alert_id=a.alert_id, operator="b")
                for _, a in zip(range(n_cmds), _cycle(alerts), strict=False)]
        t0 = time.perf_counter()
        for c, a in zip(cmds, _cycle(alerts), strict=False):
            bus.producer.produce(bus.name("commands"), key=a.incident_key.encode(),
                                 value=default_codec().encode(c))
            bus.producer.poll(0)
        bus.producer.flush(30)
        seen = 0
        while seen < len(cmds):
            bus.next_event(60)
            seen += 1
        cps = len(cmds) / (time.perf_counter() - t0)
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
    p50, p50_raw = statistics.median(lat), statistics.median(raw)
    return BenchResult(
        name="alerts", value=p50, unit="ms p50", baseline=p50_raw, ratio=p50_raw / p50,
        details={"alert_p99_ms": percentile(lat, 0.99), "raw_p99_ms": percentile(raw, 0.99),
                 "commands_per_s": cps, "samples": n, "commands": len(cmds),
                 "partitions": 2},
    )


def _cycle(items: list[AlertRaised]):  # type: ignore[no-untyped-def]
    while True:
        yield from items

"""`vigil notifier`: alert events -> webhooks, recorded on vigil.notifications.

A separate process (plain aiokafka, not Faust): notification delivery is slow, retried
and rate limited, and must not hold up the alerts agent's partitions.

Per alert event and destination:
- retries with exponential backoff (base * 2^n, capped) up to `max_attempts`; the
  partition waits meanwhile, so deliveries of one incident stay in order;
- a per-destination token bucket (`rate_per_min`) paces deliveries;
- cooldown: an `AlertRepeated` for an incident delivered to a destination less than
  `cooldown_s` ago is skipped (state changes are always delivered). Only a *successful*
  delivery starts the cooldown, so a failed send never consumes it;
- success -> NotificationDelivered, last attempt failed -> NotificationFailed and the
  original alert bytes to the DLQ with the reason.

Offsets are committed after every destination of a message is settled (at-least-once);
notification event ids are derived from (alert event id, destination), so a redelivery
after a crash produces the same ids, and receivers dedup by ``X-Vigil-Event-Id``.

Destinations: ``VIGIL_NOTIFY_WEBHOOKS`` = comma-separated ``name=url`` and the shared
``VIGIL_NOTIFY_SECRET``, or ``VIGIL_NOTIFY_FILE`` = a YAML list of
``{name, channel, url, secret, rate_per_min}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.notifier_ops import NOTIFICATIONS
from agents.notify_channels import CHANNELS, Channel, Destination
from schemas.codec import CodecError, default_codec
from schemas.events import (
    AlertRepeated,
    CommandRejected,
    Event,
    NotificationDelivered,
    NotificationFailed,
    derived_event_id,
)
from schemas.topics import topic_name
from vigil.errors import ConfigError
from vigil.logs import event_context
from vigil.metrics import DLQ_MESSAGES
from vigil.settings import get_settings, load_component_settings

log = logging.getLogger(__name__)
PRODUCER = "vigil-notifier/1"


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_NOTIFY_", extra="forbid", frozen=True)

    webhooks: str = ""
    secret: SecretStr = SecretStr("")
    file: Path | None = None
    max_attempts: int = Field(6, ge=1)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    rate_per_min: float = Field(60.0, gt=0)
    cooldown_s: float = Field(300.0, ge=0)
    group: str = "notifier"
    #: Prometheus endpoint (vigil_dlq_messages_total, process metrics) on
    #: VIGIL_METRICS_HOST; 0 = none.
    metrics_port: int = Field(0, ge=0, le=65535)

    def destinations(self) -> list[Destination]:
        dests: list[Destination] = []
        for item in filter(None, (s.strip() for s in self.webhooks.split(","))):
            name, _, url = item.partition("=")
            if not url:
                raise ConfigError(f"VIGIL_NOTIFY_WEBHOOKS: {item!r} is not name=url")
            dests.append(Destination(name, "webhook", url, self.secret.get_secret_value(),
                                     self.rate_per_min))
        if self.file is not None:
            for d in yaml.safe_load(self.file.read_text()) or []:
                d.setdefault("channel", "webhook")
                d.setdefault("rate_per_min", self.rate_per_min)
                if d["channel"] not in CHANNELS:
                    raise ConfigError(f"{self.file}: unknown channel {d['channel']!r}")
                dests.append(Destination(**d))
        return dests


@cache
def get_notify_settings() -> NotifySettings:
    return load_component_settings(NotifySettings, "VIGIL_NOTIFY_")


class TokenBucket:
    """`rate_per_min` tokens a minute, burst of max(1, rate/6)."""

    def __init__(self, rate_per_min: float):
        self.rate = rate_per_min / 60.0
        self.capacity = max(1.0, rate_per_min / 6.0)
        self.tokens = self.capacity
        self.at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


def payload_of(event: Event) -> dict[str, Any]:
    body = dataclasses.asdict(event)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in body.items()}


class Notifier:
    def __init__(self, cfg: NotifySettings, producer: AIOKafkaProducer):
        self.cfg = cfg
        self.producer = producer
        self.dests = cfg.destinations()
        self.channels: dict[str, Channel] = {n: c() for n, c in CHANNELS.items()}
        self.buckets = {d.name: TokenBucket(d.rate_per_min) for d in self.dests}
        #: (destination, incident) -> monotonic time of the last successful delivery
        self.last_ok: dict[tuple[str, str], float] = {}

    async def _record(self, ev: Event, key: str) -> None:
        await self.producer.send_and_wait(topic_name("notifications"), key=key.encode(),
                                          value=default_codec().encode(ev))

    async def handle(self, alert: Event, raw: bytes) -> None:
        if isinstance(alert, CommandRejected) or not hasattr(alert, "alert_id"):
            return
        incident = getattr(alert, "incident_key", "")
        for dest in self.dests:
            ck = (dest.name, incident)
            if isinstance(alert, AlertRepeated) and ck in self.last_ok and (
                    time.monotonic() - self.last_ok[ck] < self.cfg.cooldown_s):
                continue
            await self._deliver(dest, alert, raw, ck)

    async def _deliver(self, dest: Destination, alert: Event, raw: bytes,
                       ck: tuple[str, str]) -> None:
        alert_id: str = alert.alert_id  # type: ignore[attr-defined]
        channel = self.channels[dest.channel]
        outcome = None
        attempt = 0
        for attempt in range(1, self.cfg.max_attempts + 1):
            await self.buckets[dest.name].take()
            outcome = await channel.deliver(dest, alert.event_id, payload_of(alert))
            if outcome.ok or not outcome.retryable:
                break
            if attempt < self.cfg.max_attempts:
                delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (attempt - 1))
                log.info("delivery to %s failed (%s), retry in %.1fs", dest.name,
                         outcome.reason, delay)
                await asyncio.sleep(delay)
        assert outcome is not None
        common = {"producer": PRODUCER, "cause": alert, "alert_id": alert_id,
                  "alert_event_id": alert.event_id, "destination": dest.name,
                  "channel": dest.channel, "attempts": attempt}
        NOTIFICATIONS.labels(dest.channel, "delivered" if outcome.ok else "failed").inc()
        if outcome.ok:
            self.last_ok[ck] = time.monotonic()
            log.info("delivered to %s", dest.name, extra={
                "alert_id": alert_id, "channel": dest.channel, "attempts": attempt})
            await self._record(NotificationDelivered.create(
                event_id=derived_event_id("NotificationDelivered", alert.event_id, dest.name),
                status_code=outcome.status_code, **common), alert_id)
            return
        await self._record(NotificationFailed.create(
            event_id=derived_event_id("NotificationFailed", alert.event_id, dest.name),
            reason=outcome.reason, **common), alert_id)
        await self.producer.send_and_wait(
            topic_name("dlq"), key=alert_id.encode(), value=raw,
            headers=[("vigil.error", f"{dest.name}: {outcome.reason}"[:2000].encode()),
                     ("vigil.stage", b"notifier")])
        DLQ_MESSAGES.labels("notifier").inc()

    async def close(self) -> None:
        for c in self.channels.values():
            await c.close()


async def run(stop: asyncio.Event | None = None) -> None:
    cfg = get_notify_settings()
    s = get_settings()
    stop = stop or asyncio.Event()
    ops = None
    if cfg.metrics_port:
        from agents.notifier_ops import NotifierOps

        ops = NotifierOps(s.metrics_host, cfg.metrics_port).start()
    consumer = AIOKafkaConsumer(
        topic_name("alerts"), bootstrap_servers=s.kafka_bootstrap,
        group_id=f"{s.topic_prefix}-{cfg.group}", enable_auto_commit=False,
        auto_offset_reset="earliest", client_id=f"notifier-{uuid.uuid4().hex[:6]}",
        **s.aiokafka_security(),
    )
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all",
                                enable_idempotence=True, **s.aiokafka_security())
    await producer.start()
    await consumer.start()
    notifier = Notifier(cfg, producer)
    if ops is not None:  # Alertmanager's ops alerts through the same destinations
        from agents.notifier_ops import deliver_ops_alert

        ops.attach(asyncio.get_running_loop(),
                   lambda event_id, payload: deliver_ops_alert(notifier, event_id, payload))
    log.info("notifier started with %d destination(s)", len(notifier.dests))
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            if ops is not None:
                await ops.polled(consumer)
            for _tp, msgs in batch.items():
                for msg in msgs:
                    try:
                        event = default_codec().decode(msg.value)
                    except CodecError as exc:
                        await producer.send_and_wait(
                            topic_name("dlq"), key=msg.key, value=msg.value,
                            headers=[("vigil.error", str(exc)[:2000].encode()),
                                     ("vigil.stage", b"notifier")])
                        DLQ_MESSAGES.labels("notifier").inc()
                        continue
                    try:
                        with event_context(event):
                            await notifier.handle(event, msg.value)
                    except Exception as exc:  # one bad message must not stop delivery
                        log.exception("notification failed")
                        await producer.send_and_wait(
                            topic_name("dlq"), key=msg.key, value=msg.value,
                            headers=[("vigil.error", repr(exc)[:2000].encode()),
                                     ("vigil.stage", b"notifier")])
                        DLQ_MESSAGES.labels("notifier").inc()
            if batch:
                await consumer.commit()
    finally:
        if ops is not None:
            ops.stop()
        await notifier.close()
        await consumer.stop()
        await producer.stop()


async def _run_until_signalled() -> None:
    """SIGTERM/SIGINT end the loop after the batch in hand is delivered and committed, then
    consumer and producer close cleanly: a restart neither skips nor (beyond the batch being
    retried, deduplicated downstream by event id) repeats notifications."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)
    log.info("notifier stopped")


def main() -> int:
    from vigil.logs import setup_logging

    setup_logging(service="notifier")  # JSON, with vigil.redact's filter on the handler
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_until_signalled())
    return 0

"""`vigil notifier`: alert events -> routes -> channels, durably, recorded on
vigil.notifications. docs/notifications.md is the operator's guide.

A separate process (plain aiokafka, not Faust): delivery is slow, retried for up to a day
and rate limited, and must not hold up the alerts agent's partitions.

Four inputs:
- ``vigil.config`` (read whole from the start, then followed): routes (`RouteConfigured`)
  and cameras (site and time zone for routing and quiet hours);
- ``vigil.alerts``: each alert event becomes delivery rows in the outbox
  (agents/notify_outbox.py), one per (route, channel, recipient) the routing picks
  (agents/notify_routes.py), then its offset is committed;
- ``vigil.evidence``: `EvidenceCaptured` names a rule hit's annotated snapshot. The evidence
  agent renders it from the same RuleTriggered the alert came from, usually a few seconds
  after the AlertRaised, so a rule alert's first message on a channel that attaches
  pictures (email) is queued with ``next_at`` up to ``VIGIL_NOTIFY_EVIDENCE_WAIT_S`` later
  and released as soon as the evidence arrives; past the bound it goes with the raw frame
  and says so. The hold is a column of the outbox row, so a crash while holding loses
  nothing and sends nothing twice;
- ``vigil.notifications``: `RetryNotification` commands from the API or `vigil notify retry`.

A dispatcher sends due rows with bounded concurrency: per channel and recipient a token
bucket (vigil/ratelimit.py) paces sends (a rate-limited row waits without spending an
attempt); a failure is retried with exponential backoff (``VIGIL_NOTIFY_BACKOFF_*``) until
``VIGIL_NOTIFY_RETRY_FOR_S`` (24 h) after it was queued, then `NotificationFailed` with the
last reason. Success -> `NotificationDelivered`. Both events' ids derive from the delivery
id and its retry generation.

Channels: ``VIGIL_NOTIFY_FILE`` = YAML list of channel entries (`ChannelConfig`:
``{name, kind: email|mqtt|webhook|chat|http, ...}``; an entry without ``kind`` is the old
webhook form ``{name, url, secret, rate_per_min}``), and/or ``VIGIL_NOTIFY_WEBHOOKS`` =
comma-separated ``name=url`` signed with ``VIGIL_NOTIFY_SECRET``. Without any route in the
site configuration every alert event goes to every channel.
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
from typing import Annotated, Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.notify_channels import Channel, ChannelConfig, Message, WebhookConfig, make_channel
from agents.notify_metrics import LATENCY, NOTIFICATIONS, OLDEST_PENDING, PENDING
from agents.notify_outbox import Outbox, Row
from agents.notify_routes import (
    AlertContext,
    Route,
    backoff_s,
    dedup_key,
    default_routes,
    targets,
)
from agents.notify_templates import Templates
from schemas.codec import CodecError, default_codec
from schemas.events import (
    AlertEscalated,
    AlertRaised,
    AlertRepeated,
    CameraConfigured,
    EntityDeleted,
    Event,
    EvidenceCaptured,
    NotificationDelivered,
    NotificationFailed,
    RetryNotification,
    RouteConfigured,
    derived_event_id,
)
from schemas.site_config import SCENE_RULE_TYPES
from schemas.topics import topic_name
from vigil.errors import ConfigError
from vigil.logs import event_context, log_context
from vigil.metrics import DLQ_MESSAGES
from vigil.ratelimit import RateLimiter
from vigil.settings import get_settings, load_component_settings

log = logging.getLogger(__name__)
PRODUCER = "vigil-notifier/2"
ALERT_EVENTS = ("AlertRaised", "AlertRepeated", "AlertEscalated", "AlertAcknowledged",
                "AlertResolved")

_CHANNELS: TypeAdapter[list[ChannelConfig]] = TypeAdapter(
    list[Annotated[ChannelConfig, Field(discriminator="kind")]])


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_NOTIFY_", extra="forbid", frozen=True)

    webhooks: str = ""
    secret: SecretStr = SecretStr("")
    file: Path | None = None
    #: base URL of the operator console; messages link to <console_url>/alerts/<alert_id>
    console_url: str = ""
    #: the outbox (SQLite); default <VIGIL_STATE_DIR>/notifier/outbox.sqlite
    state_file: Path | None = None
    templates_dir: Path | None = None
    #: give up (NotificationFailed) this long after a delivery was queued
    retry_for_s: float = Field(86400.0, gt=0)
    #: optional cap on attempts as well (None: only retry_for_s ends the retries)
    max_attempts: int | None = Field(None, ge=1)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(900.0, gt=0)
    #: default per-recipient rate for channels configured through VIGIL_NOTIFY_WEBHOOKS
    rate_per_min: float = Field(60.0, gt=0)
    #: an alert's repeats within this long of its last message to a recipient are dropped
    cooldown_s: float = Field(300.0, ge=0)
    #: a rule alert's first email waits at most this long for its annotated snapshot
    #: (EvidenceCaptured), then goes with the raw frame; 0 = never wait
    evidence_wait_s: float = Field(5.0, ge=0, le=300)
    #: how long an EvidenceCaptured is remembered for alert events that come after it
    evidence_keep_s: float = Field(86400.0, gt=0)
    #: sends in flight at once (across channels)
    concurrency: int = Field(16, ge=1, le=256)
    group: str = "notifier"
    #: Prometheus endpoint on VIGIL_METRICS_HOST; 0 = none.
    metrics_port: int = Field(0, ge=0, le=65535)

    def channel_configs(self) -> list[ChannelConfig]:
        out: list[ChannelConfig] = []
        for item in filter(None, (s.strip() for s in self.webhooks.split(","))):
            name, _, url = item.partition("=")
            if not url:
                raise ConfigError(f"VIGIL_NOTIFY_WEBHOOKS: {item!r} is not name=url")
            out.append(WebhookConfig(name=name, url=url, secret=self.secret,
                                     rate_per_min=self.rate_per_min))
        if self.file is not None:
            try:
                raw = yaml.safe_load(self.file.read_text()) or []
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"VIGIL_NOTIFY_FILE {self.file}: {exc}") from None
            if not isinstance(raw, list):
                raise ConfigError(f"{self.file}: expected a list of channels")
            items = []
            for d in raw:
                d = dict(d) if isinstance(d, dict) else d
                if isinstance(d, dict) and "kind" not in d:
                    d["kind"] = d.pop("channel", "webhook")  # the pre-routing form
                items.append(d)
            try:
                out.extend(_CHANNELS.validate_python(items))
            except ValidationError as exc:
                problems = "; ".join(
                    f"[{'.'.join(map(str, e['loc']))}]: {e['msg']}" for e in exc.errors())
                raise ConfigError(f"{self.file}: invalid channel configuration: {problems}"
                                  ) from None
        names = [c.name for c in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"notifier channels: duplicate name(s) {dupes}")
        return out

    def outbox_path(self) -> Path:
        return self.state_file or get_settings().state_dir / "notifier" / "outbox.sqlite"


@cache
def get_notify_settings() -> NotifySettings:
    return load_component_settings(NotifySettings, "VIGIL_NOTIFY_")


def payload_of(event: Event) -> dict[str, Any]:
    body = dataclasses.asdict(event)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in body.items()}


def route_of(ev: RouteConfigured) -> Route:
    return Route(route_id=ev.route_id, channels=tuple(ev.channels),
                 recipients=tuple(ev.recipients), site_id=ev.site_id,
                 cameras=tuple(ev.cameras), rule_types=tuple(ev.rule_types),
                 severities=tuple(ev.severities), event_types=tuple(ev.event_types),
                 levels=tuple(int(v) for v in ev.levels), quiet_start=ev.quiet_start,
                 quiet_end=ev.quiet_end, timezone=ev.timezone, enabled=ev.enabled)


@dataclasses.dataclass(frozen=True, slots=True)
class _Picture:
    ref: str | None
    annotated: bool = False
    wait_s: float = 0.0
    awaits: str | None = None


def delivery_id(alert_event_id: str, route_id: str, channel: str, recipient: str) -> str:
    return derived_event_id("delivery", alert_event_id, route_id, channel, recipient)


def outcome_event_id(kind: str, row: Row) -> str:
    return derived_event_id(kind, row.delivery_id, row.generation)


def snapshot_fetcher() -> Any:
    """ref -> (bytes, filename) from the object store (default bucket: snapshots)."""
    from vigil.objects import client, split_ref

    s = get_settings()

    def get(ref: str) -> tuple[bytes, str]:
        bucket, key = split_ref(ref, s.bucket_snapshots, s.buckets)
        resp = client().get_object(bucket, key)
        try:
            return resp.read(), key.rsplit("/", 1)[-1]
        finally:
            resp.close()
            resp.release_conn()

    async def fetch(ref: str) -> tuple[bytes, str]:
        return await asyncio.to_thread(get, ref)

    return fetch


class Notifier:
    """Routing, intake into the outbox and dispatch; the Kafka plumbing is in `run`."""

    def __init__(self, cfg: NotifySettings, producer: Any, outbox: Outbox,
                 channels: dict[str, Channel], clock: Any = time.time):
        self.cfg = cfg
        self.producer = producer
        self.outbox = outbox
        self.channels = channels
        self.clock = clock
        self.routes: dict[str, Route] = {}
        #: camera_id -> (site_id, time zone) from CameraConfigured
        self.cameras: dict[str, tuple[str, str]] = {}
        self.limiters = {n: RateLimiter(c.cfg.rate_per_min / 60.0, getattr(c.cfg, "burst", None)
                                        or max(1, int(c.cfg.rate_per_min / 6)))
                         for n, c in channels.items()}
        self.inflight: set[str] = set()
        self.wake = asyncio.Event()
        #: set when a row settles: the reporter publishes every settled row in one batch,
        #: so a send never waits for a Kafka round trip of its own (at 100 alerts/s the
        #: per-send report, serialised on the lock, capped delivery near 70/s)
        self.settled = asyncio.Event()
        #: one reporter at a time, so concurrent sends do not publish a row twice
        self._reporting = asyncio.Lock()

    # ------------------------------------------------------------------ config
    def apply_config(self, key: str, event: Event | None) -> None:
        kind, _, ident = key.partition("/")
        if isinstance(event, RouteConfigured):
            self.routes[event.route_id] = route_of(event)
        elif isinstance(event, CameraConfigured):
            self.cameras[event.camera_id] = (event.site_id, event.timezone)
        elif (event is None or isinstance(event, EntityDeleted)) and kind == "route":
            self.routes.pop(ident, None)

    def active_routes(self) -> list[Route]:
        return list(self.routes.values()) or default_routes(sorted(self.channels))

    # ------------------------------------------------------------------ intake
    def _context(self, alert: Event) -> AlertContext:
        alert_id: str = alert.alert_id  # type: ignore[attr-defined]
        if isinstance(alert, AlertRaised):
            site = alert.site_id or self.cameras.get(alert.camera_id, (None, ""))[0]
            return AlertContext(
                alert_id=alert_id, camera_id=alert.camera_id, site_id=site,
                rule_id=alert.rule_id, rule_type=alert.rule_type, severity=alert.severity,
                zone_id=alert.zone_id, snapshot_ref=alert.snapshot_ref,
                rule_event_id=alert.causation_id if alert.rule_type in SCENE_RULE_TYPES
                else None)
        stored = self.outbox.context(alert_id)
        if stored is not None:
            stored["told_levels"] = tuple(stored.get("told_levels") or ())
            return AlertContext(**stored)
        # an alert raised before this notifier's outbox existed: route on what we know
        return AlertContext(alert_id=alert_id, camera_id=str(
            getattr(alert, "incident_key", "").split("|")[0]))

    def intake(self, alert: Event) -> int:
        """Turn one alert event into outbox rows; returns how many are new."""
        etype = type(alert).__name__
        if etype not in ALERT_EVENTS:
            return 0
        ctx = self._context(alert)
        level = alert.level if isinstance(alert, AlertEscalated) else None
        if level is not None:
            ctx = dataclasses.replace(ctx, level=level)
        now = self.clock()
        tz = self.cameras.get(ctx.camera_id, ("", "UTC"))[1] or "UTC"
        picked = targets(self.active_routes(), etype, ctx, alert.occurred_at, tz, level)
        known = {k: v for k, v in dataclasses.asdict(ctx).items()
                 if k not in ("told_levels", "level", "rule_event_id")}
        # the alert's own fields win, but not with a None over what the context knows: a
        # rule alert's AlertRaised has no site_id, its camera's configuration has
        payload = {**known, **{k: v for k, v in payload_of(alert).items()
                               if v is not None or known.get(k) is None}, "level": ctx.level}
        console = (f"{self.cfg.console_url.rstrip('/')}/alerts/{ctx.alert_id}"
                   if self.cfg.console_url else "")
        raised_at = alert.occurred_at.timestamp()
        annotated_ref = (self.outbox.annotated_ref(ctx.rule_event_id) if ctx.rule_event_id
                         else None)
        rows, dedup = [], []
        for t in picked:
            if t.channel not in self.channels:
                log.warning("route %s names unknown channel %s", t.route_id, t.channel)
            picture = self._picture(etype, ctx, t.channel, annotated_ref, t.suppressed)
            key = dedup_key(ctx, etype, t.channel, t.recipient)
            if isinstance(alert, AlertRepeated) and key and self.outbox.seen_within(
                    key, now, self.cfg.cooldown_s):
                NOTIFICATIONS.labels(t.channel, "deduplicated").inc()
                continue
            if key and not t.suppressed:
                dedup.append((key, now))
            did = delivery_id(alert.event_id, t.route_id, t.channel, t.recipient)
            msg = Message(delivery_id=did, event_type=etype, alert_event_id=alert.event_id,
                          payload=payload, recipient=t.recipient, route_id=t.route_id,
                          console_url=console, snapshot_ref=picture.ref,
                          annotated=picture.annotated, evidence_wait_s=picture.wait_s)
            if t.suppressed:
                NOTIFICATIONS.labels(t.channel, "suppressed").inc()
            rows.append({"delivery_id": did, "alert_event_id": alert.event_id,
                         "event_type": etype, "route_id": t.route_id, "channel": t.channel,
                         "recipient": t.recipient, "message": dataclasses.asdict(msg),
                         "status": "suppressed" if t.suppressed else "pending",
                         "next_at": now + picture.wait_s, "created_at": now,
                         "raised_at": raised_at, "awaits": picture.awaits})
        if picked:
            ctx = dataclasses.replace(ctx, told_levels=tuple(sorted(
                set(ctx.told_levels) | {ctx.level})))
        n = self.outbox.intake(ctx.alert_id, dataclasses.asdict(ctx), rows, dedup)
        if n:
            self.wake.set()
        return n

    def _picture(self, etype: str, ctx: AlertContext, channel: str,
                 annotated_ref: str | None, suppressed: bool) -> _Picture:
        """What a delivery attaches: the annotated snapshot once known; before that, on
        the alert's first message of a channel that attaches pictures, a hold for it
        (the rule hit's evidence is usually seconds behind the alert); else the frame."""
        if not getattr(self.channels.get(channel), "attaches_snapshot", False):
            return _Picture(ctx.snapshot_ref)
        if annotated_ref:
            return _Picture(annotated_ref, annotated=True)
        if (etype == "AlertRaised" and ctx.rule_event_id and not suppressed
                and self.cfg.evidence_wait_s > 0):
            return _Picture(ctx.snapshot_ref, wait_s=self.cfg.evidence_wait_s,
                            awaits=ctx.rule_event_id)
        return _Picture(ctx.snapshot_ref)

    def evidence(self, ev: EvidenceCaptured) -> int:
        """A rule hit's annotated snapshot: remembered for the alert's later messages,
        and handed to the deliveries holding for it, which become due at once."""
        now = self.clock()
        if now - ev.occurred_at.timestamp() > self.cfg.evidence_keep_s:
            return 0  # history read on a first start: no alert that old still waits
        n = self.outbox.record_evidence(ev.rule_event_id, ev.annotated_ref, now,
                                        self.cfg.evidence_keep_s)
        if n:
            log.info("annotated snapshot of rule hit %s released %d held delivery(ies)",
                     ev.rule_event_id, n)
            self.wake.set()
        return n

    def retry(self, cmd: RetryNotification) -> int:
        if cmd.notification_event_id == "*":
            n = self.outbox.retry(None, self.clock())
        else:
            ids = [r.delivery_id for r in self.outbox.rows("failed", 100_000)
                   if outcome_event_id("NotificationFailed", r) == cmd.notification_event_id]
            n = self.outbox.retry(ids, self.clock())
        log.info("retry requested by %s for %s: %d delivery(ies) re-armed", cmd.requested_by,
                 cmd.notification_event_id, n)
        self.wake.set()
        return n

    # ------------------------------------------------------------------ dispatch
    async def dispatch_once(self) -> int:
        """Start every due row (up to the concurrency); returns how many started."""
        room = self.cfg.concurrency - len(self.inflight)
        if room <= 0:
            return 0
        rows = self.outbox.due(self.clock(), room, self.inflight)
        for row in rows:
            self.inflight.add(row.delivery_id)
            task = asyncio.create_task(self._send(row))
            task.add_done_callback(lambda _t, d=row.delivery_id: self._done(d))
        return len(rows)

    def _done(self, delivery: str) -> None:
        self.inflight.discard(delivery)
        self.wake.set()

    async def _send(self, row: Row) -> None:
        p = row.message.get("payload", {})
        ids = {"event_id": row.alert_event_id,
               "correlation_id": p.get("correlation_id") or row.alert_event_id,
               "causation_id": p.get("causation_id") or row.alert_event_id}
        try:
            with log_context(**ids):  # log lines of a delivery name its alert event
                await self._send_row(row)
        except Exception:  # a bug in one send must not stop the others; it is retried
            log.exception("delivery %s crashed", row.delivery_id)
            self.outbox.mark_retry(row.delivery_id, row.attempts + 1,
                                   self.clock() + self.cfg.backoff_max_s, "internal error")

    async def _send_row(self, row: Row) -> None:
        channel = self.channels.get(row.channel)
        if channel is None:
            self.outbox.mark_failed(row.delivery_id, row.attempts,
                                    f"no channel named {row.channel!r} is configured")
            NOTIFICATIONS.labels(row.channel, "failed").inc()
            self.settled.set()
            return
        wait = self.limiters[row.channel].take(row.recipient)
        if wait > 0:
            self.outbox.defer(row.delivery_id, self.clock() + wait)
            return
        outcome = await channel.send(Message(**row.message))
        now = self.clock()
        attempts = row.attempts + 1
        if outcome.ok:
            if self.outbox.mark_sent(row.delivery_id, now, outcome.status_code, attempts):
                NOTIFICATIONS.labels(row.channel, "delivered").inc()
                log.info("delivered to %s via %s", row.recipient or row.route_id, row.channel,
                         extra={"alert_id": row.alert_id, "channel": row.channel,
                                "attempts": attempts, "delivery_id": row.delivery_id})
                if row.raised_at:
                    LATENCY.labels(row.channel).observe(max(0.0, now - row.raised_at))
            self.settled.set()
            return
        give_up = (not outcome.retryable or now - row.created_at >= self.cfg.retry_for_s
                   or (self.cfg.max_attempts is not None and attempts >= self.cfg.max_attempts))
        if give_up:
            self.outbox.mark_failed(row.delivery_id, attempts, outcome.reason)
            NOTIFICATIONS.labels(row.channel, "failed").inc()
            log.warning("delivery %s (%s -> %s) failed for good after %d attempt(s): %s",
                        row.delivery_id, row.channel, row.route_id, attempts, outcome.reason)
            self.settled.set()
            return
        delay = backoff_s(attempts, self.cfg.backoff_base_s, self.cfg.backoff_max_s)
        # the last attempt falls on the deadline itself, not a backoff step before it
        next_at = min(now + delay, row.created_at + self.cfg.retry_for_s)
        self.outbox.mark_retry(row.delivery_id, attempts, next_at, outcome.reason)
        NOTIFICATIONS.labels(row.channel, "retried").inc()
        log.info("delivery %s to %s failed (%s), retry in %.1fs", row.delivery_id,
                 row.channel, outcome.reason, delay)

    async def report_forever(self, stop: asyncio.Event) -> None:
        """Publish settled rows' outcome events as they settle, batched. A failed publish
        (Kafka away) leaves the rows unreported in the outbox: the next round retries."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled.wait(), 1.0)
            self.settled.clear()
            try:
                await self.report()
            except Exception:
                log.exception("publishing notification outcomes failed; retrying")
                await asyncio.sleep(1.0)

    async def report(self) -> None:
        """Publish the outcome events of settled rows not yet reported (crash-safe: ids
        derive from the delivery, so a repeat after a crash is deduplicated downstream)."""
        async with self._reporting:
            await self._report()

    async def _report(self) -> None:
        while True:
            rows = self.outbox.unreported()
            if not rows:
                return
            pending = []
            for row in rows:  # sent together, awaited together: one broker round trip
                pending.append(await self.producer.send(
                    topic_name("notifications"), key=row.alert_id.encode(),
                    value=default_codec().encode(self._outcome(row))))
            await asyncio.gather(*pending)
            self.outbox.mark_reported_all([(r.delivery_id, r.generation) for r in rows])

    def _outcome(self, row: Row) -> Event:
        common = {"producer": PRODUCER, "alert_id": row.alert_id,
                  "alert_event_id": row.alert_event_id, "channel": row.channel,
                  "destination": f"{row.route_id}:{row.recipient}" if row.recipient
                  else row.route_id, "attempts": row.attempts,
                  "correlation_id": row.alert_event_id, "causation_id": row.alert_event_id}
        if row.status == "sent":
            return NotificationDelivered.create(
                event_id=outcome_event_id("NotificationDelivered", row),
                status_code=row.status_code, **common)
        return NotificationFailed.create(
            event_id=outcome_event_id("NotificationFailed", row),
            reason=row.last_error or "failed", **common)

    def update_gauges(self) -> None:
        counts = self.outbox.counts()
        PENDING.set(counts.get("pending", 0))
        oldest = self.outbox.db.execute(
            "SELECT MIN(created_at) FROM deliveries WHERE status='pending'").fetchone()[0]
        OLDEST_PENDING.set(max(0.0, self.clock() - oldest) if oldest else 0.0)

    async def dispatch_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            started = await self.dispatch_once()
            if started:
                continue
            nxt = self.outbox.next_due_at()
            timeout = 1.0 if nxt is None else min(1.0, max(0.01, nxt - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for sends in flight (a clean stop leaves nothing half-sent)."""
        end = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < end:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for c in self.channels.values():
            await c.close()


def build_channels(cfg: NotifySettings) -> dict[str, Channel]:
    templates = Templates(cfg.templates_dir)
    fetch = snapshot_fetcher()
    return {c.name: make_channel(c, templates, fetch) for c in cfg.channel_configs()}


async def _dead_letter(producer: AIOKafkaProducer, msg: Any, reason: str) -> None:
    await producer.send_and_wait(topic_name("dlq"), key=msg.key, value=msg.value,
                                 headers=[("vigil.error", reason[:2000].encode()),
                                          ("vigil.stage", b"notifier")])
    DLQ_MESSAGES.labels("notifier").inc()


async def _catch_up_config(consumer: AIOKafkaConsumer, notifier: Notifier) -> None:
    """Read vigil.config to its end before routing anything: routes must be known."""
    tps = [TopicPartition(topic_name("config"), p)
           for p in (consumer.partitions_for_topic(topic_name("config")) or {0})]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)

    async def behind() -> bool:
        for tp in tps:
            if await consumer.position(tp) < ends[tp]:
                return True
        return False

    while await behind():
        await _poll_config(consumer, notifier, 500)


async def _poll_config(consumer: AIOKafkaConsumer, notifier: Notifier, timeout_ms: int) -> None:
    batch = await consumer.getmany(timeout_ms=timeout_ms)
    for msgs in batch.values():
        for m in msgs:
            key = (m.key or b"").decode()
            if m.value is None:
                notifier.apply_config(key, None)
                continue
            try:
                notifier.apply_config(key, default_codec().decode(m.value))
            except CodecError:
                continue  # the agents dead-letter bad config; not ours to judge


async def run(stop: asyncio.Event | None = None) -> None:
    cfg = get_notify_settings()
    s = get_settings()
    stop = stop or asyncio.Event()
    channels = build_channels(cfg)
    ops = None
    if cfg.metrics_port:
        from agents.notifier_ops import NotifierOps

        ops = NotifierOps(s.metrics_host, cfg.metrics_port).start()
    outbox = Outbox(cfg.outbox_path())
    client = f"notifier-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(
        topic_name("alerts"), topic_name("evidence"), topic_name("notifications"),
        bootstrap_servers=s.kafka_bootstrap,
        group_id=f"{s.topic_prefix}-{cfg.group}", enable_auto_commit=False,
        auto_offset_reset="earliest", client_id=client, **s.aiokafka_security())
    config = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False,
                              client_id=f"{client}-config", **s.aiokafka_security())
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all",
                                enable_idempotence=True, **s.aiokafka_security())
    await producer.start()
    await config.start()
    notifier = Notifier(cfg, producer, outbox, channels)
    if ops is not None:  # Alertmanager's ops alerts through the same channels
        from agents.notifier_ops import deliver_ops_alert

        ops.attach(asyncio.get_running_loop(),
                   lambda event_id, payload: deliver_ops_alert(notifier, event_id, payload))
    dispatcher: asyncio.Task[None] | None = None
    reporter: asyncio.Task[None] | None = None
    try:
        await config.topics()  # metadata, so the config partitions are known
        await _catch_up_config(config, notifier)
        await consumer.start()
        await notifier.report()  # outcomes a crash left unpublished
        log.info("notifier started: %d channel(s), %d route(s), outbox %s",
                 len(channels), len(notifier.routes), outbox.path)
        dispatcher = asyncio.create_task(notifier.dispatch_forever(stop))
        reporter = asyncio.create_task(notifier.report_forever(stop))
        last_gauges = 0.0
        while not stop.is_set():
            await _poll_config(config, notifier, 0)
            batch = await consumer.getmany(timeout_ms=200)
            if ops is not None:
                await ops.polled(consumer)
            for msgs in batch.values():
                for msg in msgs:
                    try:
                        event = default_codec().decode(msg.value)
                    except CodecError as exc:
                        await _dead_letter(producer, msg, str(exc))
                        continue
                    try:
                        with event_context(event):
                            if isinstance(event, RetryNotification):
                                notifier.retry(event)
                            elif isinstance(event, EvidenceCaptured):
                                notifier.evidence(event)
                            elif msg.topic == topic_name("alerts"):
                                notifier.intake(event)
                    except Exception as exc:  # one bad message must not stop delivery
                        log.exception("notification intake failed")
                        await _dead_letter(producer, msg, repr(exc))
            if batch:
                await consumer.commit()  # after the outbox transaction: at-least-once
            for task in (dispatcher, reporter):
                if task.done():
                    task.result()  # surface a crash of the dispatcher or the reporter
            if time.monotonic() - last_gauges > 1.0:
                notifier.update_gauges()
                last_gauges = time.monotonic()
    finally:
        stop.set()
        if ops is not None:
            ops.stop()
        for task in (dispatcher, reporter):
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
        await notifier.drain()
        with contextlib.suppress(Exception):
            await notifier.report()
        await notifier.close()
        outbox.close()
        await consumer.stop()
        await config.stop()
        await producer.stop()


async def _run_until_signalled() -> None:
    """SIGTERM/SIGINT: stop taking alerts, let sends in flight finish and be recorded,
    commit and close. A SIGKILL loses nothing either: the outbox holds every row."""
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

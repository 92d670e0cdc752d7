"""The topic catalog: every topic declared once with its key, events, partitions and retention.

Names carry a prefix (``VIGIL_TOPIC_PREFIX``, default ``vigil``) so that tests and audit
replays can run side by side with their own topics on one broker.

`apply_topics` makes the broker match the catalog: it creates missing topics, raises
partition counts that are too low (never lowers them: Kafka cannot) and updates changed
configs. It is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from vigil.errors import VigilError

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class Topic:
    suffix: str
    key: str
    events: tuple[str, ...]
    partitions: int
    retention_ms: int | None  # None = keep forever
    compacted: bool = False
    public: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"

    def configs(self) -> dict[str, str]:
        cfg = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms if self.retention_ms is not None else -1),
        }
        cfg.update(self.extra)
        return cfg


#: Topics that must have the same partition count so that keyed state lines up
#: (alerts table, commands and escalation ticks are all keyed by incident).
CO_PARTITIONED = ("alerts", "commands", "alert-ticks", "alert-input")

CATALOG: tuple[Topic, ...] = (
    Topic("frames", "camera_id", ("FrameCaptured",), 8, 7 * DAY_MS,
          extra={"max.message.bytes": "2097152"}),
    Topic("heartbeats", "edge_id", ("EdgeHeartbeat",), 4, 7 * DAY_MS),
    Topic("recordings", "camera_id", ("SegmentRecorded",), 4, 30 * DAY_MS),
    Topic("detections", "camera_id", ("FrameAnalyzed",), 8, 30 * DAY_MS),
    Topic("embeddings", "camera_id", ("AppearanceEmbedded",), 8, 72 * HOUR_MS),
    Topic("scene", "camera_id",
          ("ZoneEntered", "ZoneExited", "LineCrossed", "RuleTriggered", "RuleCleared",
           "TrackSummary"), 8, 90 * DAY_MS),
    # an alert's still evidence (snapshot, annotated rendering, thumbnail): object refs only
    Topic("evidence", "camera_id", ("EvidenceCaptured", "ClipRecorded"), 8, 90 * DAY_MS),
    # clips waiting for their segments: EvidenceCaptured again, header vigil.not_before
    Topic("clip-retry", "camera_id", ("EvidenceCaptured",), 8, 7 * DAY_MS, public=False),
    Topic("alerts", "incident_key",
          ("AlertRaised", "AlertRepeated", "AlertEscalated", "AlertAcknowledged",
           "AlertResolved", "AlertAssigned", "AlertCommented", "CommandRejected"), 8, None),
    Topic("commands", "incident_key",
          ("AcknowledgeAlert", "ResolveAlert", "AssignAlert", "CommentOnAlert"), 8, None),
    Topic("alert-ticks", "partition", (), 8, HOUR_MS, public=False),
    # rule hits and health events re-keyed by incident (the scene topic is keyed by camera)
    Topic("alert-input", "incident_key",
          ("RuleTriggered", "RuleCleared", "EdgeOffline", "EdgeOnline", "StreamDown",
           "StreamUp", "InferenceDegraded", "InferenceRecovered"), 8, 7 * DAY_MS,
          public=False),
    # the leader's clock for site health, co-partitioned with heartbeats (edge last-seen)
    Topic("health-ticks", "partition", (), 4, HOUR_MS, public=False),
    Topic("notifications", "alert_id", ("NotificationDelivered", "NotificationFailed",
                                            "RetryNotification"), 4,
          365 * DAY_MS),
    Topic("config", "entity id (camera/ID, zone/ID, line/ID, rule/ID, route/ID)",
          ("CameraConfigured", "ZoneConfigured", "LineConfigured", "RuleConfigured",
           "RouteConfigured", "EntityDeleted"), 1, None, compacted=True),
    Topic("health", "edge_id / camera_id / worker_id / \"retention\"",
          ("EdgeOffline", "EdgeOnline", "StreamDown", "StreamUp", "InferenceDegraded",
           "InferenceRecovered", "RetentionRun"), 4, 90 * DAY_MS),
    Topic("privacy", "subject", ("AppearanceErased",), 1, None),
    # who read personal data or changed what (api/access.py): one partition, so the read
    # model's hash chain follows one total order; kept forever, never compacted
    Topic("access", "access", ("AccessRecorded",), 1, None),
    # twice the frames cap: a 2 MiB poison frame plus its reason headers must fit
    Topic("dlq", "original key", (), 4, 30 * DAY_MS,
          extra={"max.message.bytes": "4194304"}),
)

BY_SUFFIX = {t.suffix: t for t in CATALOG}


def topic_name(suffix: str, prefix: str | None = None) -> str:
    """The full name of a catalog topic under the configured prefix."""
    if suffix not in BY_SUFFIX:
        raise VigilError(f"unknown topic {suffix!r}")
    if prefix is None:
        from vigil.settings import get_settings

        prefix = get_settings().topic_prefix
    return BY_SUFFIX[suffix].name(prefix)


def admin_client(bootstrap: str) -> AdminClient:
    """The admin client every topic operation uses (a broker that does not answer fails
    a call within 10 s instead of librdkafka's minute)."""
    from vigil.settings import get_settings

    # the configured security (TLS, SASL) with the address the caller names; librdkafka's
    # messages through Python logging (JSON like every other line)
    cfg = {**get_settings().kafka_client_config(), "bootstrap.servers": bootstrap}
    return AdminClient({**cfg, "socket.timeout.ms": 10_000},
                       logger=logging.getLogger("librdkafka"))


def apply_topics(
    bootstrap: str,
    prefix: str,
    partitions_override: int | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create or update every catalog topic; returns {topic: "created"|"updated"|"ok"}."""
    admin = admin_client(bootstrap)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise VigilError(f"Kafka at {bootstrap} did not answer a metadata request: {exc}") from exc
    result: dict[str, str] = {}
    to_create = []
    for topic in CATALOG:
        name = topic.name(prefix)
        want = topic.partitions if partitions_override is None else partitions_override
        if topic.compacted or topic.suffix == "privacy":
            want = 1
        if name not in existing:
            to_create.append(NewTopic(name, num_partitions=want, replication_factor=-1,
                                      config=topic.configs()))
            result[name] = "created"
            continue
        result[name] = "ok"
        have = len(existing[name].partitions)
        if have < want:
            admin.create_partitions([NewPartitions(name, want)])[name].result(timeout)
            result[name] = "updated"
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        current = admin.describe_configs([resource])[resource].result(timeout)
        changes = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in topic.configs().items()
            if k not in current or current[k].value != v
        ]
        if changes:
            resource = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=changes)
            admin.incremental_alter_configs([resource])[resource].result(timeout)
            result[name] = "updated"
    if to_create:
        for name, fut in admin.create_topics(to_create, request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise VigilError(f"cannot create topic {name}: {exc}") from exc
    log.debug("topics applied", extra={"topics": result})
    return result


def delete_topics(bootstrap: str, prefix: str, timeout: float = 30.0) -> int:
    """Delete every catalog topic under `prefix` and the Faust app's own topics
    (``{prefix}-worker…``: changelogs, the leader topic); returns how many were deleted.

    For benchmarks and tests that create a prefix per run: left behind, a dev broker
    gathered over a thousand such topics, and every metadata request and start-up grew
    with them."""
    admin = admin_client(bootstrap)
    existing = admin.list_topics(timeout=timeout).topics
    mine = {t.name(prefix) for t in CATALOG} & set(existing)
    mine |= {t for t in existing if t.startswith(f"{prefix}-worker")}
    if not mine:
        return 0
    deleted = 0
    for name, fut in admin.delete_topics(sorted(mine), request_timeout=timeout).items():
        try:
            fut.result(timeout)
            deleted += 1
        except KafkaException as exc:
            log.warning("cannot delete topic %s: %s", name, exc)
    return deleted

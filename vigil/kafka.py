"""Kafka clients for the processes that are not Faust (edge, projector, API, tools).

One producer configuration for the whole project: idempotent, acks=all, lz4, so a
retried send never duplicates within a producer session. Events are encoded by the codec
here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.codec import default_codec
from schemas.events import Event
from schemas.topics import topic_name
from vigil.metrics import DLQ_MESSAGES
from vigil.redact import redact
from vigil.settings import get_settings

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]

#: librdkafka's own messages go through Python logging (so they are JSON lines like the
#: rest) instead of being written raw to stderr ("%6|...|BGQUEUE|...").
RDKAFKA_LOG = logging.getLogger("librdkafka")


#: librdkafka errors that retrying cannot fix: the principal lacks an ACL or cannot log in.
AUTH_ERRORS = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
})


def auth_problem(err: KafkaError | None, topic: str | None = None) -> str | None:
    """A clear sentence when `err` is an authorization/authentication failure, else None:
    what was refused, as which principal, and where the fix lives (docs/security.md)."""
    if err is None or err.code() not in AUTH_ERRORS:
        return None
    s = get_settings()
    who = (f"principal {s.kafka_sasl_username!r}" if s.kafka_sasl_username
           else f"an unauthenticated {s.kafka_security_protocol} client")
    if err.code() in (KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION):
        return (f"Kafka refused to authenticate {who}: check KAFKA_SASL_USERNAME/"
                f"KAFKA_SASL_PASSWORD and KAFKA_SSL_CA ({redact(err.str())})")
    what = f"topic {topic}" if topic else "this operation"
    return (f"Kafka refused {what} to {who} ({err.name()}): the principal lacks an ACL "
            "for it; see docs/security.md for what each service needs")


def producer_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        **get_settings().kafka_client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        # Java's (and so Faust's/aiokafka's) partitioner: a key lands on the same partition
        # whichever client wrote it, which co-partitioned state (alerts + commands) needs.
        "partitioner": "murmur2_random",
        "linger.ms": 20,
        "batch.size": 262_144,
        # the frames topic caps values at 2 MiB; a frame that large that turns out to be
        # poison must still fit into the DLQ with its headers (the DLQ topic takes 4 MiB)
        "message.max.bytes": 4_194_304,
        "socket.timeout.ms": 10_000,
        "message.timeout.ms": 120_000,
        "logger": RDKAFKA_LOG,
    }
    cfg.update(overrides)
    return cfg


def consumer_config(group_id: str, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        **get_settings().kafka_client_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "socket.timeout.ms": 10_000,
        "logger": RDKAFKA_LOG,
    }
    cfg.update(overrides)
    return cfg


class EventProducer:
    """Encodes and sends events to catalog topics; call `flush` before exiting."""

    def __init__(self, producer: Producer | None = None, **overrides: Any):
        self.producer = producer or Producer(producer_config(**overrides))
        self.codec = default_codec()

    def send(
        self,
        topic_suffix: str,
        key: str | bytes | None,
        event: Event,
        on_delivery: DeliveryCallback | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> None:
        value = self.codec.encode(event)
        while True:
            try:
                self.producer.produce(
                    topic_name(topic_suffix), key=key, value=value,
                    on_delivery=on_delivery, headers=headers,
                )
                break
            except BufferError:  # local queue full: serve callbacks and try again
                self.producer.poll(0.1)
        self.producer.poll(0)

    def send_raw(self, topic: str, key: bytes | str | None, value: bytes | None,
                 headers: dict[str, bytes] | None = None) -> None:
        self.producer.produce(topic, key=key, value=value, headers=headers)
        self.producer.poll(0)

    def dead_letter(self, key: bytes | str | None, value: bytes | None, reason: str,
                    stage: str, source: Message | None = None) -> None:
        """Send the original bytes to the DLQ with headers naming the reason and source."""
        reason = redact(reason)  # reasons quote exceptions, which may quote a URL
        headers = {"vigil.error": reason[:2000].encode(), "vigil.stage": stage.encode()}
        if source is not None:
            headers["vigil.source_topic"] = str(source.topic()).encode()
            headers["vigil.source_partition"] = str(source.partition()).encode()
            headers["vigil.source_offset"] = str(source.offset()).encode()
        log.warning("dead-lettered", extra={"stage": stage, "reason": reason[:500]})
        self.send_raw(topic_name("dlq"), key, value, headers)
        DLQ_MESSAGES.labels(stage).inc()

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        return self.producer.flush(timeout)

"""Kafka client configuration for the processes that are not Faust (edge, projector, API,
tools).

One producer configuration for the whole project: idempotent, acks=all, lz4, so a
retried send never duplicates within a producer session. The client that encodes events
(`schemas.producer.EventProducer`) sits one layer up, with the codec it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message

from vigil.redact import redact
from vigil.settings import get_settings

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


def position(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message that is not an error.

    confluent-kafka types all three as optional because an error event has none; a data
    message always has them, so a missing one is a bug to fail on, not a case to handle."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"not a consumed message: {msg.error()!r}")
    return topic, partition, offset


def offset_of(msg: Message) -> int:
    """The offset of a consumed message that is not an error (see `position`)."""
    return position(msg)[2]


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

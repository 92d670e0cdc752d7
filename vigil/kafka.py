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

from vigil.settings import get_settings

DeliveryCallback = Callable[[KafkaError | None, Message], None]

#: librdkafka's own messages go through Python logging (so they are JSON lines like the
#: rest) instead of being written raw to stderr ("%6|...|BGQUEUE|...").
RDKAFKA_LOG = logging.getLogger("librdkafka")


def producer_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": get_settings().kafka_bootstrap,
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
        "bootstrap.servers": get_settings().kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "socket.timeout.ms": 10_000,
        "logger": RDKAFKA_LOG,
    }
    cfg.update(overrides)
    return cfg

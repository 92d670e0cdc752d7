"""The event producer: encodes events with the codec and sends them to catalog topics.

Events are encoded here and nowhere else, with the one producer configuration of
`vigil.kafka.producer_config`; poison goes to the DLQ with headers naming the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Message, Producer

from schemas.codec import default_codec
from schemas.events import Event
from schemas.topics import topic_name
from vigil.kafka import DeliveryCallback, producer_config
from vigil.metrics import DLQ_MESSAGES
from vigil.redact import redact

#: Kafka message headers as librdkafka takes them (a value may be None: a header without one).
Headers = dict[str, str | bytes | None]

log = logging.getLogger(__name__)


class EventProducer:
    """Encodes and sends events to catalog topics; call `flush` before exiting."""

    def __init__(self, producer: Producer | None = None, /, **overrides: Any):
        """`overrides` are librdkafka settings (dotted names); `producer` is positional so
        that no setting can be taken for it."""
        self.producer = producer or Producer(producer_config(**overrides))
        self.codec = default_codec()

    def send(
        self,
        topic_suffix: str,
        key: str | bytes | None,
        event: Event,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
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
                 headers: Headers | None = None) -> None:
        self.producer.produce(topic, key=key, value=value, headers=headers)
        self.producer.poll(0)

    def dead_letter(self, key: bytes | str | None, value: bytes | None, reason: str,
                    stage: str, source: Message | None = None) -> None:
        """Send the original bytes to the DLQ with headers naming the reason and source."""
        reason = redact(reason)  # reasons quote exceptions, which may quote a URL
        headers: Headers = {"vigil.error": reason[:2000].encode(), "vigil.stage": stage.encode()}
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

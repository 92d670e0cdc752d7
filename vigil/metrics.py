"""Prometheus metrics shared by several processes, defined once.

`prometheus_client` refuses to register one name twice in a registry, and the Faust
worker's DLQ helper (agents/dlq.py) and the plain-Kafka producer (vigil/kafka.py) can live
in the same process, so the counter they both increment must come from one module.
"""

from __future__ import annotations

from prometheus_client import Counter

#: Messages written to ``<prefix>.dlq``, by the ``vigil.stage`` header value (a short,
#: bounded set: inference, scene, alerts, projector, notifier, ...). The reason is not a
#: label: it is free text and would explode cardinality; it travels in the message header.
DLQ_MESSAGES = Counter(
    "vigil_dlq_messages_total", "Messages sent to the dead-letter topic, by stage", ["stage"]
)

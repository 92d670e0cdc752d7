"""Reading the secured broker (the `secure` fixture, tests/conftest.py) as its admin."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from tools.devstack.kafka_security import Security


def every_topic_bytes(bootstrap: str, sec: Security, prefix: str,
                      idle_polls: int = 8) -> bytes:
    """Every key, value and header of every topic whose name starts with `prefix` (the
    catalog's and the worker's changelogs and repartitions), read as admin."""
    c = Consumer({**sec.client_config("admin", bootstrap), "group.id": f"t-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(timeout=20)
        names = sorted(n for n in md.topics if n.startswith(prefix))
        c.assign([TopicPartition(n, p, 0) for n in names for p in md.topics[n].partitions])
        out = bytearray()
        idle, deadline = 0, time.monotonic() + 120
        while idle < idle_polls and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                idle += 1
                continue
            idle = 0
            out += (msg.key() or b"") + (msg.value() or b"")
            for k, v in msg.headers() or []:
                out += k.encode() + (v or b"")
        return bytes(out)
    finally:
        c.close()

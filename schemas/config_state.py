"""The configuration state as the compacted config topic holds it.

`vigil config apply` diffs a site file against it and the scene agent loads it at start;
both read it here, so they agree on what "current configuration" means: the latest event
per key, None for a key whose last word is a tombstone or an EntityDeleted.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from schemas.codec import CodecError, default_codec
from schemas.events import EntityDeleted, Event
from schemas.topics import topic_name
from vigil.errors import VigilError
from vigil.kafka import consumer_config


def read_config_state(timeout: float = 15.0,
                      group_prefix: str = "vigil-config-reader") -> dict[str, Event | None]:
    """Current state of the compacted config topic: {key: event, or None if deleted}.

    The consumer is assigned and commits nothing, but librdkafka still looks up its
    group's coordinator, which a secured broker allows only for groups the principal
    has an ACL for: a service passes a prefix of its own (the worker: its app id)."""
    consumer = Consumer(consumer_config(f"{group_prefix}-{uuid.uuid4().hex[:8]}",
                                        **{"enable.partition.eof": True}))
    name = topic_name("config")
    state: dict[str, Event | None] = {}
    try:
        deadline = time.monotonic() + timeout
        while True:  # a just-created topic may not have its metadata everywhere yet
            meta = consumer.list_topics(name, timeout=timeout)
            if name in meta.topics and meta.topics[name].error is None:
                break
            if time.monotonic() > deadline:
                raise VigilError(f"config topic {name} is not available "
                                 f"(run `vigil topics apply`)")
            time.sleep(0.5)
        parts = list(meta.topics[name].partitions)
        pending = set()
        for p in parts:
            low, high = watermarks(consumer, TopicPartition(name, p), timeout)
            if high > low:
                pending.add(p)
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in parts])
        codec = default_codec()
        while pending:
            msg = consumer.poll(timeout)
            if msg is None:
                raise VigilError(f"timed out reading {name}")
            err = msg.error()
            if err is not None:
                if err.code() == -191:  # _PARTITION_EOF
                    pending.discard(msg.partition())
                    continue
                raise VigilError(f"reading {name}: {err}")
            key = (msg.key() or b"").decode()
            value = msg.value()
            if value is None:
                state[key] = None
                continue
            try:
                ev = codec.decode(value)
            except CodecError:
                continue  # not ours to judge here; the agents dead-letter it
            if not isinstance(ev, EntityDeleted):
                state[key] = ev
    finally:
        consumer.close()
    return state


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """Watermarks, retried while a just-created topic has no leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise VigilError(f"cannot read offsets of {tp.topic}: {exc}") from exc
            time.sleep(0.5)

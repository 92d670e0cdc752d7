"""Finding one event by id in a camera-keyed topic, for the evidence agent.

A RuleTriggered names the FrameAnalyzed that completed its evidence (`causation_id`),
which names its FrameCaptured (`causation_id`) — but not where they are in Kafka. Both
were produced *before* the event that names them, on the camera's partition (murmur2 of
the camera id, as every Vigil producer partitions). So the search runs backwards from the
naming event's Kafka timestamp in growing windows (seconds first: in steady state the
frame is a second or two older than its rule hit), and reads only the event id of each
message (the first field of every Vigil event) until it matches; only the match is
decoded. Nothing is kept in memory between alerts, so a restarted worker finds evidence
exactly as a running one does (docs/evidence.md).

Synchronous (confluent-kafka): the agent runs it in a thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from confluent_kafka import Consumer, Message, TopicPartition

from agents.alert_state import home_partition
from schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, default_codec
from schemas.events import Event
from vigil.errors import VigilError
from vigil.kafka import consumer_config, offset_of

#: how far back from the naming event's timestamp each round searches, milliseconds
DEFAULT_WINDOWS_MS = (15_000, 120_000, 900_000, 3 * 3_600_000)


def peek_event_id(raw: bytes | None) -> str | None:
    """The event id of an encoded Vigil event without decoding the rest (it is the first
    field of every record: a zig-zag varint length, then UTF-8); None if not an event."""
    if not raw:
        return None
    if raw[:2] == SINGLE_OBJECT_MAGIC:
        pos = 10
    elif raw[:1] == CONFLUENT_MAGIC:
        pos = 5
    else:
        return None
    n = shift = 0
    while pos < len(raw):
        b = raw[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            return None
    length = (n >> 1) ^ -(n & 1)
    if length < 0 or pos + length > len(raw):
        return None
    try:
        return raw[pos:pos + length].decode()
    except UnicodeDecodeError:
        return None


class EventLookup:
    """One assigned (group-less) consumer, reused for every lookup; thread-confined by a
    lock, since librdkafka's consumer is not meant for concurrent use.

    It commits nothing, yet librdkafka looks up its group's coordinator, which a secured
    broker allows only under the principal's own group prefix: the worker passes its
    app id (tools/devstack/kafka_security.py)."""

    def __init__(self, poll_timeout_s: float = 10.0,
                 group_prefix: str = "vigil-evidence-lookup") -> None:
        self._consumer = Consumer(consumer_config(
            f"{group_prefix}-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True, "fetch.max.bytes": 8 << 20}))
        self._lock = threading.Lock()
        self._partitions: dict[str, int] = {}
        self._timeout = poll_timeout_s

    def close(self) -> None:
        self._consumer.close()

    def partition_for(self, topic: str, key: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            meta = self._consumer.list_topics(topic, timeout=self._timeout)
            t = meta.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                raise VigilError(f"topic {topic} is not available")
            n = self._partitions[topic] = len(t.partitions)
        return home_partition(key.encode(), n)

    def find(self, topic: str, key: str, event_id: str, before_ms: int,
             windows_ms: Sequence[int] = DEFAULT_WINDOWS_MS) -> tuple[Event, int] | None:
        """The event `event_id` on `key`'s partition of `topic`, produced at or before
        `before_ms` (Kafka timestamp, plus a little clock slack), with its own Kafka
        timestamp (ms); None if not there."""
        with self._lock:
            p = self.partition_for(topic, key)
            c = self._consumer
            low, high = c.get_watermark_offsets(TopicPartition(topic, p),
                                                timeout=self._timeout)
            end = self._offset_at(topic, p, before_ms + 5_000, high)
            for w in windows_ms:
                start = max(low, self._offset_at(topic, p, before_ms - w, high))
                if start < end:
                    found = self._scan(topic, p, start, end, event_id)
                    if found is not None:
                        return default_codec().decode(found[0]), found[1]
                    end = start
                if start <= low:
                    break
            return None

    def collect(self, topic: str, key: str, from_ms: int, keep: Callable[[Event], bool]
                ) -> list[Event]:
        """Every event on `key`'s partition of `topic` produced since `from_ms` (Kafka
        timestamp) up to the partition's end for which `keep` holds (small events only:
        each is decoded)."""
        with self._lock:
            p = self.partition_for(topic, key)
            c = self._consumer
            low, high = c.get_watermark_offsets(TopicPartition(topic, p),
                                                timeout=self._timeout)
            start = max(low, self._offset_at(topic, p, from_ms, high))
            out: list[Event] = []
            if start >= high:
                return out
            codec = default_codec()
            try:
                for m in self._read(topic, p, start, ""):
                    try:
                        ev = codec.decode(m.value())
                    except Exception:  # not ours to judge here: the projector DLQs it
                        ev = None
                    if ev is not None and keep(ev):
                        out.append(ev)
                    if offset_of(m) >= high - 1:
                        break
            finally:
                c.unassign()
            return out

    def _offset_at(self, topic: str, p: int, ts_ms: int, high: int) -> int:
        got = self._consumer.offsets_for_times([TopicPartition(topic, p, max(ts_ms, 0))],
                                               timeout=self._timeout)[0]
        return high if got.offset < 0 else int(got.offset)  # -1: nothing that late

    def _read(self, topic: str, p: int, start: int, where: str) -> Iterator[Message]:
        """The messages of partition `p` from offset `start` to its end (the caller stops
        sooner when it has what it wants); VigilError when nothing comes for the timeout
        or the consumer reports an error. The caller assigns nothing and unassigns."""
        c = self._consumer
        c.assign([TopicPartition(topic, p, start)])
        deadline = time.monotonic() + self._timeout
        while True:
            # short waits: `consume` returns only once it has its count or its timeout
            # is up (a partition end does not cut it short), so one long wait per
            # call cost its whole timeout whenever fewer messages were left
            msgs = c.consume(500, timeout=0.05)
            if not msgs:
                if time.monotonic() > deadline:
                    raise VigilError(f"timed out reading {topic}[{p}]{where}")
                continue
            deadline = time.monotonic() + self._timeout
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == -191:  # _PARTITION_EOF
                        return
                    raise VigilError(f"reading {topic}[{p}]: {err}")
                yield m

    def _scan(self, topic: str, p: int, start: int, end: int, event_id: str
              ) -> tuple[bytes, int] | None:
        try:
            for m in self._read(topic, p, start, f" at {start}..{end}"):
                at = offset_of(m)
                if at >= end:
                    return None
                value = m.value()
                if value is not None and peek_event_id(value) == event_id:
                    return bytes(value), int(m.timestamp()[1])
                if at >= end - 1:
                    return None
            return None
        finally:
            self._consumer.unassign()

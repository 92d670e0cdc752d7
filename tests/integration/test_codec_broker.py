"""Events survive the real broker: encode, produce, consume, decode, equal — once with
confluent-kafka and once with aiokafka (the client Faust uses)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from event_strategies import one_of_each_event
from hypothesis import HealthCheck, given, settings

from schemas.codec import Codec
from schemas.events import Event
from schemas.topics import BY_SUFFIX, CATALOG

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0
RUN = settings(max_examples=2, deadline=None, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow, HealthCheck.data_too_large])

#: Each event type goes to its public catalog topic.
HOME = {name: t.suffix for t in CATALOG if t.public for name in t.events}


def _topic(prefix: str, event: Event) -> str:
    return BY_SUFFIX[HOME[type(event).__name__]].name(prefix)


def _key(event: Event) -> bytes:
    return event.event_id.encode()


def _unique(events: tuple[Event, ...]) -> tuple[Event, ...]:
    """Hypothesis happily repeats UUIDs; the round trip is matched by event id."""
    return tuple(e.evolve(event_id=str(uuid.uuid4())) for e in events)


@RUN
@given(events=one_of_each_event())
def test_every_event_type_through_the_broker_with_confluent_kafka(
    stack: dict[str, str], topic_prefix: str, events: tuple[Event, ...]
) -> None:
    events = _unique(events)
    codec = Codec()
    producer = Producer({"bootstrap.servers": stack["KAFKA_BOOTSTRAP"], "acks": "all",
                         "enable.idempotence": True, "compression.type": "lz4"})
    for event in events:
        producer.produce(_topic(topic_prefix, event), key=_key(event), value=codec.encode(event))
    assert producer.flush(30) == 0, "not every message was delivered"

    consumer = Consumer({
        "bootstrap.servers": stack["KAFKA_BOOTSTRAP"],
        "group.id": f"{topic_prefix}-ck-{uuid.uuid4().hex[:6]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    want = {e.event_id: e for e in events}
    got: dict[str, Event] = {}
    try:
        consumer.subscribe(sorted({_topic(topic_prefix, e) for e in events}))
        deadline = time.monotonic() + TIMEOUT_S
        while not set(want) <= set(got) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            decoded = codec.decode(msg.value())
            assert msg.key() == _key(decoded)
            got[decoded.event_id] = decoded
    finally:
        consumer.close()
    missing = set(want) - set(got)
    assert not missing, f"{len(missing)} events never came back"
    for event_id, event in want.items():
        assert got[event_id] == event


async def _through_aiokafka(bootstrap: str, prefix: str,
                            events: tuple[Event, ...]) -> dict[str, Event]:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        sends = [
            await producer.send(_topic(prefix, e), key=_key(e), value=codec.encode(e))
            for e in events
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        *sorted({_topic(prefix, e) for e in events}),
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}-aio-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    want = {e.event_id for e in events}
    got: dict[str, Event] = {}
    await consumer.start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not want <= set(got) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    decoded = codec.decode(record.value)
                    assert record.key == _key(decoded)
                    got[decoded.event_id] = decoded
    finally:
        await consumer.stop()
    return got


@RUN
@given(events=one_of_each_event())
def test_every_event_type_through_the_broker_with_aiokafka(
    stack: dict[str, str], topic_prefix: str, events: tuple[Event, ...]
) -> None:
    events = _unique(events)
    got = asyncio.run(_through_aiokafka(stack["KAFKA_BOOTSTRAP"], topic_prefix, events))
    missing = {e.event_id for e in events} - set(got)
    assert not missing, f"{len(missing)} events never came back"
    for event in events:
        assert got[event.event_id] == event

"""The outbox against a fake producer: an outage mid-run loses, duplicates and reorders
nothing, and the edge reports itself degraded (keyframes only) while it lasts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError

from edge_producer.runtime import Outbox
from edge_producer.spool import Spool
from schemas.producer import EventProducer


class FlakyProducer:
    def __init__(self) -> None:
        self.up = True
        self.pending: list[tuple[bytes, Any]] = []
        self.log: list[bytes] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any = None,
                **_: Any) -> None:
        self.pending.append((value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        batch, self.pending = self.pending, []
        for value, cb in batch:
            if self.up:
                self.log.append(value)
                cb(None, None)
            else:
                cb(KafkaError(KafkaError._MSG_TIMED_OUT), None)
        time.sleep(min(timeout, 0.005))
        return len(batch)

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return 0


def _wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cond()


def test_outage_mid_run(tmp_path: Path) -> None:
    fake = FlakyProducer()
    spool = Spool(tmp_path, 10_000_000, 4096)
    outbox = Outbox(spool, EventProducer(fake), (0.05, 0.2))  # type: ignore[arg-type]
    outbox.start()
    n = 0

    def add(k: int) -> None:
        nonlocal n
        for _ in range(k):
            spool.append(b"cam", b"%08d" % n)
            n += 1

    add(30)
    _wait(lambda: len(fake.log) == 30)
    fake.up = False
    add(40)
    _wait(lambda: not outbox.kafka_up)
    assert spool.backlog >= 39
    fake.up = True
    add(10)
    _wait(lambda: spool.backlog == 0 and len(fake.log) == 80)
    assert outbox.kafka_up
    assert [int(v) for v in fake.log] == list(range(80))
    outbox.stop_event.set()
    outbox.join(5)
